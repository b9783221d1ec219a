//! Command dispatch: what a connection thread answers itself, and what it
//! routes to the pollers that own the keys.

use super::conn::{Combine, Conn, Router};
use super::msg::{Cond, Op, Request, SetReply};
use crate::index::KeyHash;
use crate::resp;

/// Commands and their arity, Redis-style: `n` exactly n arguments
/// (command name included), `-n` at least n.
pub(super) const COMMANDS: &[(&str, i32)] = &[
    ("GET", 2),
    ("MGET", -2),
    ("EXISTS", -2),
    ("DBSIZE", 1),
    ("PING", -1),
    ("ECHO", 2),
    ("SELECT", 2),
    ("QUIT", -1),
    ("COMMAND", -1),
    ("INFO", -1),
    ("CLIENT", -2),
    ("SET", -3),
    ("MSET", -3),
    ("DEL", -2),
    ("EXPIRE", 3),
    ("PEXPIRE", 3),
    ("TTL", 2),
    ("PTTL", 2),
    ("PERSIST", 2),
    ("SETNX", 3),
    ("SETEX", 4),
    ("PSETEX", 4),
    ("GETSET", 3),
    ("GETDEL", 2),
    ("AUTH", -2),
    ("CONFIG", -2),
    ("INCR", 2),
    ("DECR", 2),
    ("INCRBY", 3),
    ("DECRBY", 3),
];

/// Commands a client may send before it has authenticated.
const NO_AUTH_NEEDED: &[&str] = &["AUTH", "QUIT"];

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
    let Some(index) = COMMANDS
        .iter()
        .position(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    else {
        return c.reply(|o| unknown_command(o, args));
    };
    let (cmd, arity) = COMMANDS[index];
    // The reply this command leaves is timed, for INFO and /metrics.
    c.timing = Some((index as u16, std::time::Instant::now()));
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        let msg = format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.to_ascii_lowercase()
        );
        return c.reply(|o| resp::error(o, &msg));
    }
    // After the unknown-command and arity checks, as in Redis.
    if !c.authed && !NO_AUTH_NEEDED.contains(&cmd) {
        c.timing = None;
        return c.reply(|o| resp::error(o, super::access::NOAUTH));
    }
    match cmd {
        "GET" => keyed(c, router, &args[1..], None, |k| Op::Get { key: k.into() }),
        "MGET" => keyed(c, router, &args[1..], Some(Combine::Array), |k| Op::Get {
            key: k.into(),
        }),
        "EXISTS" => keyed(c, router, &args[1..], Some(Combine::Sum), |_| Op::Exists),
        "PING" => match args {
            [_] => c.reply(|o| resp::simple(o, "PONG")),
            [_, m] => c.reply(|o| resp::bulk(o, m)),
            _ => c.reply(|o| resp::error(o, "ERR wrong number of arguments for 'ping' command")),
        },
        "ECHO" => c.reply(|o| resp::bulk(o, args[1])),
        "SELECT" => match args[1] {
            b"0" => c.reply(|o| resp::simple(o, "OK")),
            _ => c.reply(|o| resp::error(o, "ERR DB index is out of range")),
        },
        "QUIT" => {
            c.reply(|o| resp::simple(o, "OK"));
            c.closing = true;
        }
        "DBSIZE" => {
            let keys = super::info::keys(router.shared);
            c.reply(|o| resp::int(o, keys as i64))
        }
        "INFO" => {
            let text = super::info::render(router.shared, args.get(1).copied());
            c.reply(|o| resp::bulk(o, text.as_bytes()))
        }
        "SET" => set(c, router, args),
        "SETNX" => set_with(
            c,
            router,
            args[1],
            args[2],
            Cond::Nx,
            Expiry::None,
            SetReply::Int,
        ),
        "SETEX" | "PSETEX" => {
            let unit = if cmd == "SETEX" { 1000 } else { 1 };
            match expire_at(args[2], unit, false, cmd) {
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
        "GETSET" => set_with(
            c,
            router,
            args[1],
            args[2],
            Cond::Always,
            Expiry::None,
            SetReply::Old,
        ),
        "GETDEL" => keyed(c, router, &args[1..], None, |k| Op::GetDel {
            key: k.into(),
        }),
        "MSET" => mset(c, router, args),
        "DEL" => keyed(c, router, &args[1..], Some(Combine::Sum), |k| Op::Del {
            key: k.into(),
        }),
        "TTL" | "PTTL" => {
            let ms = cmd == "PTTL";
            keyed(c, router, &args[1..], None, |k| Op::Ttl {
                key: k.into(),
                ms,
            })
        }
        "EXPIRE" | "PEXPIRE" => expire(c, router, args, cmd == "PEXPIRE"),
        "PERSIST" => keyed(c, router, &args[1..], None, |k| Op::Expire {
            key: k.into(),
            at_ms: 0,
            persist: true,
        }),
        "COMMAND" => command(c, args),
        "CLIENT" => client(c, router, args),
        "AUTH" => super::access::auth(c, router.shared, router.thread, args),
        "CONFIG" => config(c, router, args),
        "INCR" | "DECR" => {
            let by = if cmd == "INCR" { 1 } else { -1 };
            keyed(c, router, &args[1..2], None, |k| Op::IncrBy {
                key: k.into(),
                by,
            })
        }
        "INCRBY" | "DECRBY" => match resp::parse_redis_int(args[2]) {
            None => c.reply(|o| resp::error(o, "ERR value is not an integer or out of range")),
            // DECRBY -9223372036854775808 cannot negate.
            Some(n) => match if cmd == "INCRBY" {
                Some(n)
            } else {
                n.checked_neg()
            } {
                Some(by) => keyed(c, router, &args[1..2], None, |k| Op::IncrBy {
                    key: k.into(),
                    by,
                }),
                None => c.reply(|o| resp::error(o, "ERR decrement would overflow")),
            },
        },
        _ => unreachable!("every command in COMMANDS is handled"),
    }
}

/// Bytes of a client's argument an error message echoes at most, as Redis
/// (a 100 MB command name does not come back in a 100 MB error).
const ECHO_MAX: usize = 128;

/// At most [`ECHO_MAX`] bytes of `b`, escaped for an error line.
fn echo(b: &[u8]) -> String {
    b[..b.len().min(ECHO_MAX)].escape_ascii().to_string()
}

/// `ERR unknown command`: the name and the first arguments, at most
/// [`ECHO_MAX`] bytes of each (and of the arguments together), as Redis.
fn unknown_command(o: &mut Vec<u8>, args: &[&[u8]]) {
    let mut echoed = 0;
    let mut rest = String::new();
    for a in &args[1..] {
        if echoed >= ECHO_MAX {
            break;
        }
        let take = a.len().min(ECHO_MAX - echoed);
        echoed += take;
        rest.push_str(&format!("'{}' ", echo(&a[..take])));
    }
    let msg = format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        echo(args[0])
    );
    resp::error(o, &msg);
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
            c.reply(|o| resp::int(o, COMMANDS.len() as i64))
        }
        _ => c.reply(|o| resp::array(o, 0)),
    }
}

/// `CONFIG GET | SET`, with Redis's arity and errors.
fn config(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    let arity_error = |o: &mut Vec<u8>, sub: &str| {
        let msg = format!("ERR wrong number of arguments for 'config|{sub}' command");
        resp::error(o, &msg)
    };
    match sub.as_slice() {
        b"GET" if args.len() < 3 => c.reply(|o| arity_error(o, "get")),
        b"GET" => c.reply(|o| super::settings::get(o, router.shared, &args[2..])),
        b"SET" if args.len() < 4 || args.len() % 2 == 1 => c.reply(|o| arity_error(o, "set")),
        b"SET" => match super::settings::set(router.shared, &args[2..]) {
            Ok(()) => c.reply(|o| resp::simple(o, "OK")),
            Err(e) => c.reply(|o| resp::error(o, &e)),
        },
        _ => {
            let msg = format!(
                "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                echo(args[1])
            );
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// The CLIENT subcommands and their arity (`CLIENT` and the subcommand
/// included), as Redis's.
const CLIENT_SUBCOMMANDS: &[(&str, usize)] = &[
    ("SETNAME", 3),
    ("SETINFO", 4),
    ("NO-EVICT", 3),
    ("NO-TOUCH", 3),
    ("REPLY", 3),
    ("GETNAME", 2),
    ("ID", 2),
];

/// `CLIENT`: the subcommands client libraries send on connect.
fn client(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    let wrong_arity = CLIENT_SUBCOMMANDS
        .iter()
        .any(|&(n, arity)| n.as_bytes() == sub.as_slice() && args.len() != arity);
    if wrong_arity {
        let msg = format!(
            "ERR wrong number of arguments for 'client|{}' command",
            String::from_utf8_lossy(&sub).to_ascii_lowercase()
        );
        return c.reply(|o| resp::error(o, &msg));
    }
    match sub.as_slice() {
        b"REPLY" => client_reply(c, args[2]),
        b"SETNAME" | b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" => c.reply(|o| resp::simple(o, "OK")),
        b"GETNAME" => c.reply(resp::nil),
        b"ID" => {
            let id = ((router.thread as i64) << 32) | c.me.slot as i64;
            c.reply(|o| resp::int(o, id))
        }
        _ => {
            let msg = format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                echo(args[1])
            );
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
            c.reply(|o| resp::simple(o, "OK"))
        }
        b"OFF" => c.reply_off = true,
        b"SKIP" => c.reply_skip_next = !c.reply_off,
        _ => c.reply(|o| resp::error(o, "ERR syntax error")),
    }
}

fn now_ms() -> u64 {
    super::poller::now_ms()
}

/// The absolute expiry time (ms) an argument of `cmd` asks for, checked as
/// Redis does: `n` units of `unit_ms` from now, or since the epoch if
/// `absolute`. Not an integer, not positive, or past `i64` once in ms or
/// added to now: the error to reply, never a wrapped or saturated time.
fn expire_at(arg: &[u8], unit_ms: i64, absolute: bool, cmd: &str) -> Result<u64, String> {
    let n = resp::parse_redis_int(arg).ok_or("ERR value is not an integer or out of range")?;
    let base = if absolute { 0 } else { now_ms() as i64 };
    match (n > 0).then(|| n.checked_mul(unit_ms)?.checked_add(base)) {
        Some(Some(at)) => Ok(at as u64),
        _ => Err(format!(
            "ERR invalid expire time in '{}' command",
            cmd.to_ascii_lowercase()
        )),
    }
}

/// Checks key and value sizes against the limits; replies when over.
fn within_limits(c: &mut Conn, router: &Router, key: &[u8], value: &[u8]) -> bool {
    let a = &router.shared.args;
    let over = key.len() as u64 > a.max_key_size || value.len() as u64 > a.max_value_size;
    if over {
        router.shared.conn_stats[router.thread]
            .size_limit_rejections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    if key.len() as u64 > a.max_key_size {
        let msg = format!(
            "ERR key of {} bytes is over the limit of {} (--max-key-size)",
            key.len(),
            a.max_key_size
        );
        c.reply(|o| resp::error(o, &msg));
        return false;
    }
    if value.len() as u64 > a.max_value_size {
        let msg = format!(
            "ERR value of {} bytes is over the limit of {} (--max-value-size)",
            value.len(),
            a.max_value_size
        );
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
            _ => return c.reply(|o| resp::error(o, "ERR syntax error")),
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
        return c.reply(|o| resp::error(o, "ERR wrong number of arguments for 'mset' command"));
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

/// `EXPIRE key seconds` / `PEXPIRE key ms`.
fn expire(c: &mut Conn, router: &mut Router, args: &[&[u8]], ms: bool) {
    let Some(n) = resp::parse_redis_int(args[2]) else {
        return c.reply(|o| resp::error(o, "ERR value is not an integer or out of range"));
    };
    let at_ms = (if ms { Some(n) } else { n.checked_mul(1000) })
        .and_then(|d| (now_ms() as i64).checked_add(d));
    let Some(at_ms) = at_ms else {
        let name = if ms { "pexpire" } else { "expire" };
        let msg = format!("ERR invalid expire time in '{name}' command");
        return c.reply(|o| resp::error(o, &msg));
    };
    let at_ms = at_ms.max(1) as u64;
    route_one(
        c,
        router,
        args[1],
        Op::Expire {
            key: args[1].into(),
            at_ms,
            persist: false,
        },
    );
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
