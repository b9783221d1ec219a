//! Command handlers: each turns a command's arguments into a reply the
//! connection thread gives at once, or into operations routed to the
//! pollers that own the keys. The commands, their arity and their order
//! are in `table.rs`; the texts of the replies in `strings.rs`.

use std::sync::atomic::Ordering::Relaxed;

use super::access::{self, Auth};
use super::conn::{Conn, Executor};
use super::msg::{Cond, ExpireIf, GetExpiry, KeyValue, Op, Request, SetReply};
use super::replies::Combine;
use super::router::Router;
use super::strings;
use super::table::{self, Cmd, CLIENT_SUBCOMMANDS};
use crate::index::KeyHash;
use crate::resp;
use crate::store::clock::unix_ms;

impl Executor for Router<'_> {
    fn holds(&self, slot: u32) -> bool {
        Router::holds(self, slot)
    }

    fn execute(&mut self, c: &mut Conn, args: &[&[u8]]) {
        execute(c, self, args)
    }
}

/// Executes one parsed command for connection `c`; its reply is dropped
/// under `CLIENT REPLY OFF | SKIP`.
pub(super) fn execute(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let mark = c.reply_mark();
    dispatch(c, router, args);
    c.command_done(mark);
}

/// Executes one parsed command, replying as if replies were on.
fn dispatch(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(name) = args.first() else {
        return; // an empty inline line
    };
    let Some((index, spec)) = table::lookup(name) else {
        return c.reply(|o| resp::error(o, &strings::unknown_command(args)));
    };
    // The reply this command leaves is timed, for INFO and /metrics.
    c.timing = Some((index, std::time::Instant::now()));
    if !spec.arity_fits(args.len()) {
        return c.reply(|o| resp::error(o, &strings::wrong_arity(spec.name)));
    }
    // After the unknown-command and arity checks, as in Redis.
    if !c.authed && !spec.before_auth {
        c.timing = None;
        return c.reply(|o| resp::error(o, strings::NOAUTH));
    }
    let cmd = spec.cmd;
    match cmd {
        Cmd::Get => keyed(c, router, &args[1..], None, |k| Op::Get { key: k.into() }),
        Cmd::Mget => keyed(c, router, &args[1..], Some(Combine::Array), |k| Op::Get {
            key: k.into(),
        }),
        Cmd::Exists => keyed(c, router, &args[1..], Some(Combine::Sum), |_| Op::Exists),
        Cmd::Ping => match args {
            [_] => c.reply(|o| resp::simple(o, strings::PONG)),
            [_, m] => c.reply(|o| resp::bulk(o, m)),
            _ => c.reply(|o| resp::error(o, &strings::wrong_arity(spec.name))),
        },
        Cmd::Echo => c.reply(|o| resp::bulk(o, args[1])),
        Cmd::Select => match args[1] {
            b"0" => c.reply(|o| resp::simple(o, strings::OK)),
            _ => c.reply(|o| resp::error(o, strings::DB_INDEX)),
        },
        Cmd::Quit => {
            c.reply(|o| resp::simple(o, strings::OK));
            c.closing = true;
        }
        Cmd::Dbsize => {
            let keys = super::counters::keys(router.shared);
            c.reply(|o| resp::int(o, keys as i64))
        }
        Cmd::Info => {
            let text = super::info::render(router.shared, args.get(1).copied());
            c.reply(|o| resp::bulk(o, text.as_bytes()))
        }
        Cmd::Set => set(c, router, args),
        Cmd::Setnx => set_with(
            c,
            router,
            args[1],
            args[2],
            Cond::Nx,
            Expiry::None,
            SetReply::Int,
        ),
        Cmd::Setex | Cmd::Psetex => {
            let unit = if cmd == Cmd::Setex { 1000 } else { 1 };
            match expire_at(args[2], unit, false, spec.name) {
                Ok(at) => set_with(
                    c,
                    router,
                    args[1],
                    args[3],
                    Cond::Always,
                    Expiry::At(at),
                    SetReply::Ok,
                ),
                Err(msg) => c.reply(|o| resp::error(o, &msg)),
            }
        }
        Cmd::Getset => set_with(
            c,
            router,
            args[1],
            args[2],
            Cond::Always,
            Expiry::None,
            SetReply::Old,
        ),
        Cmd::Getdel => keyed(c, router, &args[1..], None, |k| Op::GetDel {
            key: k.into(),
        }),
        Cmd::Mset => mset(c, router, args),
        Cmd::Del => keyed(c, router, &args[1..], Some(Combine::Sum), |k| Op::Del {
            key: k.into(),
        }),
        Cmd::Ttl | Cmd::Pttl => {
            let ms = cmd == Cmd::Pttl;
            keyed(c, router, &args[1..], None, |k| Op::Ttl {
                key: k.into(),
                ms,
            })
        }
        Cmd::Expire => expire(c, router, args, 1000, false, spec.name),
        Cmd::Pexpire => expire(c, router, args, 1, false, spec.name),
        Cmd::Persist => keyed(c, router, &args[1..], None, |k| Op::Expire {
            key: k.into(),
            at_ms: 0,
            persist: true,
            cond: ExpireIf::default(),
        }),
        Cmd::Command => command(c, args),
        Cmd::Client => client(c, router, args),
        Cmd::Auth => auth(c, router, args),
        Cmd::Config => config(c, router, args),
        Cmd::Incr | Cmd::Decr => {
            let by = if cmd == Cmd::Incr { 1 } else { -1 };
            keyed(c, router, &args[1..2], None, |k| Op::IncrBy {
                key: k.into(),
                by,
            })
        }
        Cmd::Incrby | Cmd::Decrby => match resp::parse_redis_int(args[2]) {
            None => c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
            // DECRBY -9223372036854775808 cannot negate.
            Some(n) => match if cmd == Cmd::Incrby {
                Some(n)
            } else {
                n.checked_neg()
            } {
                Some(by) => keyed(c, router, &args[1..2], None, |k| Op::IncrBy {
                    key: k.into(),
                    by,
                }),
                None => c.reply(|o| resp::error(o, strings::DECREMENT_OVERFLOW)),
            },
        },
        // Strings and TTLs.
        Cmd::Incrbyfloat => route_one(
            c,
            router,
            args[1],
            Op::IncrByFloat {
                key: args[1].into(),
                by: args[2].into(),
            },
        ),
        Cmd::Append => {
            if within_limits(c, router, args[1], args[2]) {
                let op = Op::Append {
                    key: args[1].into(),
                    value: args[2].into(),
                };
                route_one(c, router, args[1], op)
            }
        }
        Cmd::Strlen => keyed(c, router, &args[1..], None, |k| Op::Strlen {
            key: k.into(),
        }),
        Cmd::Getrange | Cmd::Substr => {
            match (
                resp::parse_redis_int(args[2]),
                resp::parse_redis_int(args[3]),
            ) {
                (Some(start), Some(end)) => keyed(c, router, &args[1..2], None, |k| Op::GetRange {
                    key: k.into(),
                    start,
                    end,
                }),
                _ => c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
            }
        }
        Cmd::Setrange => setrange(c, router, args),
        Cmd::Getex => getex(c, router, args),
        Cmd::Msetnx => msetnx(c, router, args),
        Cmd::Expireat => expire(c, router, args, 1000, true, spec.name),
        Cmd::Pexpireat => expire(c, router, args, 1, true, spec.name),
        Cmd::Expiretime | Cmd::Pexpiretime => {
            let ms = cmd == Cmd::Pexpiretime;
            keyed(c, router, &args[1..], None, |k| Op::ExpireTime {
                key: k.into(),
                ms,
            })
        }
    }
}

/// Routes one request per key to the owning pollers. With `combine`, the
/// replies are gathered into one (MGET, EXISTS).
fn keyed(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    combine: Option<Combine>,
    op: impl Fn(&[u8]) -> Op,
) {
    let id = c.expect(keys.len(), combine);
    let partitions = router.shared.sb.partitions;
    for (part, key) in keys.iter().enumerate() {
        let hash = KeyHash::of(key);
        let pid = hash.partition(partitions);
        let req = Request {
            from: c.me,
            id,
            part: part as u32,
            hash,
            pid,
            op: op(key),
        };
        let poller = router.shared.poller_of(pid);
        router.send(poller, req);
    }
}

/// `COMMAND`: enough for redis-cli and client libraries to start.
fn command(c: &mut Conn, args: &[&[u8]]) {
    match args.get(1) {
        Some(sub) if sub.eq_ignore_ascii_case(b"COUNT") => {
            c.reply(|o| resp::int(o, table::COMMANDS.len() as i64))
        }
        _ => c.reply(|o| resp::array(o, 0)),
    }
}

/// `CONFIG GET | SET`, with Redis's arity and errors.
fn config(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    let arity_error = |o: &mut Vec<u8>, sub: &str| {
        resp::error(o, &strings::wrong_arity(&format!("config|{sub}")))
    };
    match sub.as_slice() {
        b"GET" if args.len() < 3 => c.reply(|o| arity_error(o, "get")),
        b"GET" => c.reply(|o| super::settings::get(o, router.shared, &args[2..])),
        b"SET" if args.len() < 4 || args.len() % 2 == 1 => c.reply(|o| arity_error(o, "set")),
        b"SET" => match super::settings::set(router.shared, &args[2..]) {
            Ok(()) => c.reply(|o| resp::simple(o, strings::OK)),
            Err(e) => c.reply(|o| resp::error(o, &e)),
        },
        _ => {
            let msg = strings::unknown_subcommand(args[1], "CONFIG");
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// `CLIENT`: the subcommands client libraries send on connect.
fn client(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    let wrong_arity = CLIENT_SUBCOMMANDS
        .iter()
        .any(|&(n, arity)| n.as_bytes() == sub.as_slice() && args.len() != arity);
    if wrong_arity {
        let msg = strings::wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub)));
        return c.reply(|o| resp::error(o, &msg));
    }
    match sub.as_slice() {
        b"REPLY" => client_reply(c, args[2]),
        b"SETNAME" | b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" => {
            c.reply(|o| resp::simple(o, strings::OK))
        }
        b"GETNAME" => c.reply(resp::nil),
        b"ID" => {
            let id = ((router.thread as i64) << 32) | c.me.slot as i64;
            c.reply(|o| resp::int(o, id))
        }
        _ => {
            let msg = strings::unknown_subcommand(args[1], "CLIENT");
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// `CLIENT REPLY ON | OFF | SKIP`, as Redis: OFF silences every reply
/// until ON (which answers `+OK`), SKIP the next command's; OFF and SKIP
/// have no reply themselves.
fn client_reply(c: &mut Conn, mode: &[u8]) {
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
fn auth(c: &mut Conn, router: &Router, args: &[&[u8]]) {
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

/// The absolute expiry time (ms) an argument of `cmd` asks for, checked as
/// Redis does: `n` units of `unit_ms` from now, or since the epoch if
/// `absolute`. Not an integer, not positive, or past `i64` once in ms or
/// added to now: the error to reply, never a wrapped or saturated time.
fn expire_at(arg: &[u8], unit_ms: i64, absolute: bool, cmd: &str) -> Result<u64, String> {
    let n = resp::parse_redis_int(arg).ok_or(strings::NOT_AN_INTEGER)?;
    let base = if absolute { 0 } else { unix_ms() as i64 };
    match (n > 0).then(|| n.checked_mul(unit_ms)?.checked_add(base)) {
        Some(Some(at)) => Ok(at as u64),
        _ => Err(strings::invalid_expire_time(cmd)),
    }
}

/// Checks key and value sizes against the limits; replies when over.
fn within_limits(c: &mut Conn, router: &Router, key: &[u8], value: &[u8]) -> bool {
    let a = &router.shared.cfg.conns;
    let over = key.len() as u64 > a.max_key_size || value.len() as u64 > a.max_value_size;
    if over {
        router.shared.conn_stats[router.thread]
            .size_limit_rejections
            .fetch_add(1, Relaxed);
    }
    if key.len() as u64 > a.max_key_size {
        let msg = strings::key_too_large(key.len(), a.max_key_size);
        c.reply(|o| resp::error(o, &msg));
        return false;
    }
    if value.len() as u64 > a.max_value_size {
        let msg = strings::value_too_large(value.len(), a.max_value_size);
        c.reply(|o| resp::error(o, &msg));
        return false;
    }
    true
}

/// `SET key value [NX | XX] [EX s | PX ms | EXAT s | PXAT ms]`
fn set(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let (key, value) = (args[1], args[2]);
    let mut cond = Cond::Always;
    let mut expiry = Expiry::None;
    let mut reply = SetReply::Ok;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"NX" if cond == Cond::Always => cond = Cond::Nx,
            b"XX" if cond == Cond::Always => cond = Cond::Xx,
            b"GET" => reply = SetReply::Old,
            b"KEEPTTL" if expiry == Expiry::None => expiry = Expiry::Keep,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expiry == Expiry::None && i + 1 < args.len() => {
                let (unit, absolute) = match opt.as_slice() {
                    b"EX" => (1000, false),
                    b"PX" => (1, false),
                    b"EXAT" => (1000, true),
                    _ => (1, true),
                };
                match expire_at(args[i + 1], unit, absolute, "SET") {
                    Ok(at) => expiry = Expiry::At(at),
                    Err(msg) => return c.reply(|o| resp::error(o, &msg)),
                }
                i += 1;
            }
            _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
        }
        i += 1;
    }
    set_with(c, router, key, value, cond, expiry, reply);
}

/// How a SET treats the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// None: a SET clears it.
    None,
    /// KEEPTTL.
    Keep,
    /// At this absolute time (ms).
    At(u64),
}

/// Routes one SET of `key` (SET and its older forms).
fn set_with(
    c: &mut Conn,
    router: &mut Router,
    key: &[u8],
    value: &[u8],
    cond: Cond,
    expiry: Expiry,
    reply: SetReply,
) {
    if !within_limits(c, router, key, value) {
        return;
    }
    let (expire_ms, keep_ttl) = match expiry {
        Expiry::None => (0, false),
        Expiry::Keep => (0, true),
        Expiry::At(at) => (at, false),
    };
    route_one(
        c,
        router,
        key,
        Op::Set {
            key: key.into(),
            value: value.into(),
            expire_ms,
            keep_ttl,
            cond,
            reply,
        },
    );
}

/// `MSET key value [key value ...]`: each key is set on its own poller
/// (not atomic across keys); the reply is `+OK` once all are.
fn mset(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    if args.len() % 2 == 0 {
        return c.reply(|o| resp::error(o, &strings::wrong_arity("mset")));
    }
    for pair in args[1..].chunks(2) {
        if !within_limits(c, router, pair[0], pair[1]) {
            return;
        }
    }
    let n = (args.len() - 1) / 2;
    let id = c.expect(n, Some(Combine::AllOk));
    for (part, pair) in args[1..].chunks(2).enumerate() {
        let op = Op::Set {
            key: pair[0].into(),
            value: pair[1].into(),
            expire_ms: 0,
            keep_ttl: false,
            cond: Cond::Always,
            reply: SetReply::Ok,
        };
        send(c, router, id, part as u32, pair[0], op);
    }
}

fn route_one(c: &mut Conn, router: &mut Router, key: &[u8], op: Op) {
    let id = c.expect(1, None);
    send(c, router, id, 0, key, op);
}

fn send(c: &Conn, router: &mut Router, id: u64, part: u32, key: &[u8], op: Op) {
    let hash = KeyHash::of(key);
    let pid = hash.partition(router.shared.sb.partitions);
    let req = Request {
        from: c.me,
        id,
        part,
        hash,
        pid,
        op,
    };
    let poller = router.shared.poller_of(pid);
    router.send(poller, req);
}

// Strings and TTLs.

/// Redis's `proto-max-bulk-len`: APPEND and SETRANGE refuse a longer
/// string with Redis's error (nvkv's `--max-value-size`, lower, with its
/// own).
const PROTO_MAX_BULK_LEN: u64 = 512 * 1024 * 1024;

/// `EXPIRE | PEXPIRE | EXPIREAT | PEXPIREAT key time [NX | XX | GT | LT]`,
/// checked in Redis's order: the options, the integer, its range once in
/// ms and added to now (or not, if `absolute`). A time at or before now
/// deletes the key; the conditions are the poller's to check.
fn expire(
    c: &mut Conn,
    router: &mut Router,
    args: &[&[u8]],
    unit_ms: i64,
    absolute: bool,
    name: &str,
) {
    let mut cond = ExpireIf::default();
    for opt in &args[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => {
                let msg = strings::unsupported_option(opt);
                return c.reply(|o| resp::error(o, &msg));
            }
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return c.reply(|o| resp::error(o, strings::EXPIRE_NX_AND_OTHERS));
    }
    if cond.gt && cond.lt {
        return c.reply(|o| resp::error(o, strings::EXPIRE_GT_AND_LT));
    }
    let Some(n) = resp::parse_redis_int(args[2]) else {
        return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER));
    };
    // Negative times are allowed (they delete the key); only overflow
    // is refused.
    let base = if absolute { 0 } else { unix_ms() as i64 };
    let Some(at_ms) = n.checked_mul(unit_ms).and_then(|t| t.checked_add(base)) else {
        let msg = strings::invalid_expire_time(name);
        return c.reply(|o| resp::error(o, &msg));
    };
    // Any time at or before now deletes the key, and compares with an
    // existing expiry (always positive) as the real time would.
    let op = Op::Expire {
        key: args[1].into(),
        at_ms: at_ms.max(1) as u64,
        persist: false,
        cond,
    };
    route_one(c, router, args[1], op);
}

/// `SETRANGE key offset value`: Redis's checks of the offset and of the
/// length it would make; a write of nothing changes nothing.
fn setrange(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let (key, value) = (args[1], args[3]);
    let Some(offset) = resp::parse_redis_int(args[2]) else {
        return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER));
    };
    if offset < 0 {
        return c.reply(|o| resp::error(o, strings::OFFSET_OUT_OF_RANGE));
    }
    let offset = offset as u64;
    if !value.is_empty() {
        let len = offset.saturating_add(value.len() as u64);
        if len > PROTO_MAX_BULK_LEN {
            return c.reply(|o| resp::error(o, strings::STRING_TOO_LONG));
        }
        let limit = router.shared.cfg.conns.max_value_size;
        if len > limit {
            let msg = strings::value_too_large(len as usize, limit);
            return c.reply(|o| resp::error(o, &msg));
        }
    }
    if !within_limits(c, router, key, b"") {
        return;
    }
    let op = Op::SetRange {
        key: key.into(),
        offset,
        value: value.into(),
    };
    route_one(c, router, key, op);
}

/// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`: the options
/// as Redis parses them (an option may repeat; the last time counts).
/// Redis checks the time only once it has found the key, so a bad time
/// travels to the poller as the error to give if the key exists.
fn getex(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let mut persist = false;
    // The option's unit and whether it is absolute, and its argument.
    let mut time: Option<(&[u8], i64, bool, &[u8])> = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let next = args.get(i + 1).copied();
        let other_time = |kind: &[u8]| time.is_some_and(|(k, ..)| k != kind);
        match (opt.as_slice(), next) {
            (b"PERSIST", _) if time.is_none() => persist = true,
            (b"EX", Some(t)) if !persist && !other_time(b"EX") => {
                time = Some((b"EX", 1000, false, t));
                i += 1;
            }
            (b"PX", Some(t)) if !persist && !other_time(b"PX") => {
                time = Some((b"PX", 1, false, t));
                i += 1;
            }
            (b"EXAT", Some(t)) if !persist && !other_time(b"EXAT") => {
                time = Some((b"EXAT", 1000, true, t));
                i += 1;
            }
            (b"PXAT", Some(t)) if !persist && !other_time(b"PXAT") => {
                time = Some((b"PXAT", 1, true, t));
                i += 1;
            }
            _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
        }
        i += 1;
    }
    let expiry = match time {
        Some((_, unit, absolute, t)) => match expire_at(t, unit, absolute, "getex") {
            Ok(at) => GetExpiry::At(at),
            Err(msg) => GetExpiry::Invalid(msg),
        },
        None if persist => GetExpiry::Persist,
        None => GetExpiry::Keep,
    };
    let op = Op::GetEx {
        key: args[1].into(),
        expiry,
    };
    route_one(c, router, args[1], op);
}

/// `MSETNX key value [key value ...]`: one request to the poller that
/// owns every key, which sets all or none of them at once; keys on
/// different pollers get Redis Cluster's `-CROSSSLOT`.
fn msetnx(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    if args.len() % 2 == 0 {
        return c.reply(|o| resp::error(o, &strings::wrong_arity("msetnx")));
    }
    for pair in args[1..].chunks(2) {
        if !within_limits(c, router, pair[0], pair[1]) {
            return;
        }
    }
    let partitions = router.shared.sb.partitions;
    let pairs: Vec<KeyValue> = (args[1..].chunks(2))
        .map(|pair| {
            let hash = KeyHash::of(pair[0]);
            KeyValue {
                pid: hash.partition(partitions),
                hash,
                key: pair[0].into(),
                value: pair[1].into(),
            }
        })
        .collect();
    let poller = router.shared.poller_of(pairs[0].pid);
    if pairs
        .iter()
        .any(|p| router.shared.poller_of(p.pid) != poller)
    {
        return c.reply(|o| resp::error(o, strings::CROSSSLOT));
    }
    let key = args[1];
    let op = Op::MsetNx {
        pairs,
        claimed: Vec::new(),
    };
    route_one(c, router, key, op);
}
