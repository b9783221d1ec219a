//! The connection's and the server's own commands: AUTH, HELLO, CLIENT
//! (LIST, KILL, SETNAME, REPLY, …) and CONFIG.

use std::sync::atomic::Ordering::Relaxed;

use super::super::access::{self, Auth};
use super::super::clients::{ClientInfo, NO_EVICT, NO_TOUCH, PUBSUB};
use super::super::conn::Conn;
use super::super::router::Router;
use super::super::strings;
use crate::resp::{self, Proto};

use super::meta::{checked_subcommand, command_name};

/// `CONFIG GET | SET`, with Redis's arity and errors.
pub(super) fn config(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    let arity_error = |o: &mut Vec<u8>, sub: &str| {
        resp::error(o, &strings::wrong_arity(&format!("config|{sub}")))
    };
    match sub.as_slice() {
        b"GET" if args.len() < 3 => {
            c.rejected();
            c.reply(|o| arity_error(o, "get"))
        }
        b"GET" => {
            let mut reply = Vec::new();
            super::super::settings::get(&mut reply, router.shared, &args[2..]);
            // A map in RESP3: settings.rs writes RESP2's flat array.
            let reply = match c.proto {
                Proto::Resp2 => reply,
                Proto::Resp3 => array_as_map(reply),
            };
            c.reply(|o| o.extend_from_slice(&reply))
        }
        // Below `config|set`'s arity refused before it runs; an odd count
        // of names and values refused by it, as Redis counts them.
        b"SET" if args.len() < 4 || args.len() % 2 == 1 => {
            if args.len() < 4 {
                c.rejected();
            }
            c.reply(|o| arity_error(o, "set"))
        }
        b"SET" => match super::super::settings::set(router.shared, &args[2..]) {
            Ok(()) => c.reply(|o| resp::simple(o, strings::OK)),
            Err(e) => c.reply(|o| resp::error(o, &e)),
        },
        b"RESETSTAT" | b"REWRITE" | b"HELP" if args.len() != 2 => {
            c.rejected();
            let sub = String::from_utf8_lossy(&sub).to_ascii_lowercase();
            c.reply(|o| arity_error(o, &sub))
        }
        b"RESETSTAT" => super::super::admin::resetstat(c, router.shared),
        b"REWRITE" => super::super::admin::rewrite(c, router.shared),
        b"HELP" => c.reply(|o| resp::lines(o, super::super::admin::CONFIG_HELP)),
        _ => {
            let msg = strings::unknown_subcommand(args[1], "CONFIG");
            c.not_a_call();
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// `CLIENT REPLY ON | OFF | SKIP`, as Redis: OFF silences every reply
/// until ON (which answers `+OK`), SKIP the next command's; OFF and SKIP
/// have no reply themselves.
pub(super) fn client_reply(c: &mut Conn, mode: &[u8]) {
    match mode.to_ascii_uppercase().as_slice() {
        b"ON" => {
            c.reply_off = false;
            c.reply_skip = false;
            c.reply(|o| resp::simple(o, strings::OK))
        }
        b"OFF" => c.reply_off = true,
        b"SKIP" => c.reply_skip_next = !c.reply_off,
        _ => c.reply(|o| resp::error(o, strings::SYNTAX)),
    }
}

/// `AUTH password` or `AUTH default password` (the ACL form, with the only
/// user nvkv has).
pub(super) fn auth(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let (user, attempt) = match args {
        [_, pass] => (None, *pass),
        [_, user, pass] => (Some(*user), *pass),
        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
    };
    match access::authenticate(router.shared, user, attempt) {
        Auth::Granted => {
            c.authed = true;
            c.reply(|o| resp::simple(o, strings::OK));
        }
        Auth::NoPassword => c.reply(|o| resp::error(o, strings::NO_PASSWORD)),
        Auth::Refused => {
            router.shared.conn_stats[router.thread]
                .auth_failures
                .fetch_add(1, Relaxed);
            c.reply(|o| resp::error(o, strings::WRONGPASS));
        }
    }
}

/// RESP2's flat array of pairs `*<2n>` made a RESP3 map `%<n>` (the
/// elements are the same).
pub(super) fn array_as_map(reply: Vec<u8>) -> Vec<u8> {
    let Some(end) = reply.iter().position(|&b| b == b'\r') else {
        return reply;
    };
    let Some(n) = reply.get(1..end).and_then(resp::parse_int) else {
        return reply;
    };
    let mut out = Vec::with_capacity(reply.len());
    resp::map(&mut out, n.max(0) as usize / 2, Proto::Resp3);
    out.extend_from_slice(&reply[end + 2..]);
    out
}

/// HELLO's arguments: the protocol asked for, the credentials and the
/// name given.
struct HelloArgs<'a> {
    proto: Option<Proto>,
    auth: Option<(&'a [u8], &'a [u8])>,
    name: Option<&'a [u8]>,
}

/// HELLO's arguments read as Redis reads them, or the error they get.
fn hello_args<'a>(args: &[&'a [u8]]) -> Result<HelloArgs<'a>, String> {
    let mut proto = None;
    if let Some(v) = args.get(1) {
        match resp::parse_redis_int(v) {
            None => return Err(strings::HELLO_PROTO_NOT_INT.into()),
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return Err(strings::NOPROTO.into()),
        }
    }
    let (mut auth, mut name) = (None, None);
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        if args[j].eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            auth = Some((args[j + 1], args[j + 2]));
            j += 3;
        } else if args[j].eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            if !valid_client_name(args[j + 1]) {
                return Err(strings::CLIENT_NAME.into());
            }
            name = Some(args[j + 1]);
            j += 2;
        } else {
            return Err(strings::hello_syntax(args[j]));
        }
    }
    Ok(HelloArgs { proto, auth, name })
}

/// The protocol HELLO (`args`) will switch connection `c` to, if it does:
/// for the commands queued after it in a transaction, made before it runs.
pub(super) fn hello_protocol(c: &Conn, router: &Router, args: &[&[u8]]) -> Option<Proto> {
    let h = hello_args(args).ok()?;
    let authed = match h.auth {
        Some((user, pass)) => access::authenticate(router.shared, Some(user), pass),
        None if c.authed => Auth::Granted,
        None => Auth::Refused,
    };
    matches!(authed, Auth::Granted).then_some(h.proto).flatten()
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: the
/// protocol, authentication and name at once, answered with the server's
/// description, as Redis 7.
pub(super) fn hello(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let HelloArgs { proto, auth, name } = match hello_args(args) {
        Ok(h) => h,
        Err(msg) => return c.reply(|o| resp::error(o, &msg)),
    };
    if let Some((user, pass)) = auth {
        match access::authenticate(router.shared, Some(user), pass) {
            Auth::Granted => c.authed = true,
            Auth::NoPassword | Auth::Refused => {
                router.shared.conn_stats[router.thread]
                    .auth_failures
                    .fetch_add(1, Relaxed);
                return c.reply(|o| resp::error(o, strings::WRONGPASS));
            }
        }
    }
    if !c.authed {
        return c.reply(|o| resp::error(o, strings::HELLO_NOAUTH));
    }
    if let Some(n) = name {
        set_client_name(&c.info, n);
    }
    if let Some(p) = proto {
        c.proto = p;
        c.info.resp.store(p.version() as u8, Relaxed);
    }
    let (p, id) = (c.proto, c.info.id);
    c.reply(|o| {
        resp::map(o, 7, p);
        resp::bulk(o, b"server");
        resp::bulk(o, b"redis");
        resp::bulk(o, b"version");
        resp::bulk(o, super::super::info::REDIS_VERSION.as_bytes());
        resp::bulk(o, b"proto");
        resp::int(o, p.version());
        resp::bulk(o, b"id");
        resp::int(o, id as i64);
        resp::bulk(o, b"mode");
        resp::bulk(o, b"standalone");
        resp::bulk(o, b"role");
        resp::bulk(o, b"master");
        resp::bulk(o, b"modules");
        resp::array(o, 0);
    })
}

/// Redis's rule for client names: printable ASCII without spaces (an
/// empty name clears it).
pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub(super) fn set_client_name(info: &ClientInfo, name: &[u8]) {
    if let Ok(mut n) = info.name.lock() {
        *n = name.into();
    }
}

/// `CLIENT`: ID, SETNAME, GETNAME, LIST, INFO, KILL, NO-EVICT, NO-TOUCH,
/// REPLY, SETINFO, with Redis's arity, replies and errors.
pub(super) fn client(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let Some(m) = checked_subcommand(c, "client", args) else {
        return;
    };
    let p = c.proto;
    match m.name {
        "client|reply" => client_reply(c, args[2]),
        "client|id" => {
            let id = c.info.id as i64;
            c.reply(|o| resp::int(o, id))
        }
        "client|setname" => {
            if !valid_client_name(args[2]) {
                return c.reply(|o| resp::error(o, strings::CLIENT_NAME));
            }
            set_client_name(&c.info, args[2]);
            c.reply(|o| resp::simple(o, strings::OK))
        }
        "client|getname" => {
            let name = c.info.name();
            c.reply(|o| match name.is_empty() {
                true => resp::null(o, p),
                false => resp::bulk(o, &name),
            })
        }
        "client|setinfo" => {
            let attr = args[2].to_ascii_uppercase();
            if attr != b"LIB-NAME" && attr != b"LIB-VER" {
                let msg = strings::unrecognized_option(args[2]);
                return c.reply(|o| resp::error(o, &msg));
            }
            c.reply(|o| resp::simple(o, strings::OK))
        }
        "client|no-evict" | "client|no-touch" => {
            let flag = if m.name == "client|no-evict" {
                NO_EVICT
            } else {
                NO_TOUCH
            };
            match args[2].to_ascii_uppercase().as_slice() {
                b"ON" => c.info.set_flag(flag, true),
                b"OFF" => c.info.set_flag(flag, false),
                _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
            }
            c.reply(|o| resp::simple(o, strings::OK))
        }
        "client|info" => {
            let line = client_line(&c.info);
            c.reply(|o| resp::verbatim(o, line.as_bytes(), p))
        }
        "client|list" => client_list(c, router, args),
        "client|kill" => client_kill(c, router, args),
        _ => {
            let msg = strings::unknown_subcommand(args[1], "CLIENT");
            c.not_a_call();
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// The server's key in the client registry.
/// One connection as CLIENT LIST and CLIENT INFO show it: Redis's fields
/// that nvkv knows, in Redis's order (those it cannot know, such as the
/// query buffer of a connection on another thread, are left out).
pub(super) fn client_line(ci: &ClientInfo) -> String {
    let age = ci.created.elapsed();
    let idle = age.saturating_sub(std::time::Duration::from_millis(ci.last_ms.load(Relaxed)));
    let mut flags = String::new();
    if ci.has(PUBSUB) {
        flags.push('P');
    }
    if ci.has(NO_EVICT) {
        flags.push('e');
    }
    if ci.has(NO_TOUCH) {
        flags.push('T');
    }
    if ci.has(super::super::clients::MASTER) {
        flags.push('M');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 tot-mem={} cmd={} user=default resp={}\n",
        ci.id,
        ci.addr,
        ci.laddr,
        ci.fd,
        String::from_utf8_lossy(&ci.name()),
        age.as_secs(),
        idle.as_secs(),
        ci.mem.load(Relaxed),
        command_name(ci.last_cmd.load(Relaxed)),
        ci.resp.load(Relaxed),
    )
}

/// Whether `t` is a client type Redis knows, and which of nvkv's clients
/// are of it (normal ones, subscribers, a replica's link to its primary;
/// replication's other in-process connections are of none).
pub(super) fn client_type(t: &[u8]) -> Option<fn(&ClientInfo) -> bool> {
    use super::super::clients::{INTERNAL, MASTER};
    match t.to_ascii_lowercase().as_slice() {
        b"normal" => Some(|ci| !ci.has(PUBSUB) && !ci.has(MASTER) && !ci.has(INTERNAL)),
        b"pubsub" => Some(|ci| ci.has(PUBSUB)),
        b"master" => Some(|ci| ci.has(MASTER)),
        b"slave" | b"replica" => Some(|_| false),
        _ => None,
    }
}

/// `CLIENT LIST [TYPE type] [ID id ...]`.
pub(super) fn client_list(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let all = router.shared.clients.all();
    let chosen: Vec<&ClientInfo> = match args {
        [_, _] => all.iter().map(|a| &**a).collect(),
        [_, _, opt, t] if opt.eq_ignore_ascii_case(b"TYPE") => match client_type(t) {
            Some(of_type) => all.iter().map(|a| &**a).filter(|a| of_type(a)).collect(),
            None => {
                let msg = strings::unknown_client_type(t);
                return c.reply(|o| resp::error(o, &msg));
            }
        },
        [_, _, opt, ids @ ..] if opt.eq_ignore_ascii_case(b"ID") && !ids.is_empty() => {
            let mut chosen = Vec::new();
            for id in ids {
                match resp::parse_redis_int(id).filter(|&n| n > 0) {
                    Some(n) => chosen.extend(all.iter().filter(|a| a.id == n as u64).map(|a| &**a)),
                    None => return c.reply(|o| resp::error(o, strings::INVALID_CLIENT_ID)),
                }
            }
            chosen
        }
        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
    };
    let text: String = chosen.into_iter().map(client_line).collect();
    let p = c.proto;
    c.reply(|o| resp::verbatim(o, text.as_bytes(), p))
}

/// `CLIENT KILL addr` (the old form: `+OK`, or an error when no client
/// has that address) or `CLIENT KILL <filter value> ...` with the filters
/// ID, ADDR, LADDR, TYPE, USER, SKIPME (the number of clients killed).
/// The connection that sends it is closed after its reply; others at once.
pub(super) fn client_kill(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let old_form = args.len() == 3;
    let (mut id, mut addr, mut laddr, mut skipme) = (None, None, None, !old_form);
    let mut of_type: fn(&ClientInfo) -> bool = |_| true;
    if old_form {
        addr = Some(args[2]);
    } else {
        let mut i = 2;
        while i < args.len() {
            let (opt, val) = (args[i].to_ascii_uppercase(), args.get(i + 1).copied());
            let Some(val) = val else {
                return c.reply(|o| resp::error(o, strings::SYNTAX));
            };
            match opt.as_slice() {
                b"ID" => match resp::parse_redis_int(val).filter(|&n| n > 0) {
                    Some(n) => id = Some(n as u64),
                    None => return c.reply(|o| resp::error(o, strings::CLIENT_ID_POSITIVE)),
                },
                b"TYPE" => match client_type(val) {
                    Some(f) => of_type = f,
                    None => {
                        let msg = strings::unknown_client_type(val);
                        return c.reply(|o| resp::error(o, &msg));
                    }
                },
                b"ADDR" => addr = Some(val),
                b"LADDR" => laddr = Some(val),
                b"USER" if val == b"default" => {}
                b"USER" => {
                    let msg = strings::no_such_user(val);
                    return c.reply(|o| resp::error(o, &msg));
                }
                b"SKIPME" => match val.to_ascii_lowercase().as_slice() {
                    b"yes" => skipme = true,
                    b"no" => skipme = false,
                    _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
                },
                _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
            }
            i += 2;
        }
    }
    let mut killed = 0;
    let me = c.info.id;
    for ci in router.shared.clients.all() {
        let chosen = of_type(&ci)
            && id.is_none_or(|id| ci.id == id)
            && addr.is_none_or(|a| ci.addr.as_bytes() == a)
            && laddr.is_none_or(|a| ci.laddr.as_bytes() == a)
            && !(skipme && ci.id == me);
        if !chosen {
            continue;
        }
        killed += 1;
        if ci.id == me {
            c.closing = true;
        } else {
            router.shared.clients.kill(&ci);
            router.shared.conns[ci.thread].ring();
        }
    }
    match (old_form, killed) {
        (true, 0) => c.reply(|o| resp::error(o, strings::NO_SUCH_CLIENT)),
        (true, _) => c.reply(|o| resp::simple(o, strings::OK)),
        (false, n) => c.reply(|o| resp::int(o, n)),
    }
}
