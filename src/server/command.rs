//! Command dispatch: what a connection thread answers itself, and what it
//! routes to the pollers that own the keys.

use super::conn::{Combine, Conn, Router};
use super::msg::{Op, Request};
use super::resp;
use crate::index::KeyHash;

/// Commands and their arity, Redis-style: `n` exactly n arguments
/// (command name included), `-n` at least n.
const COMMANDS: &[(&str, i32)] = &[
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
];

/// Commands of the write path, answered with an error until it exists.
const WRITES: &[&str] = &[
    "SET", "MSET", "DEL", "EXPIRE", "PEXPIRE", "TTL", "PTTL", "PERSIST",
];

/// Executes one parsed command for connection `c`.
pub(super) fn execute(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(name) = args.first() else {
        return; // an empty inline line
    };
    let Some(&(cmd, arity)) = COMMANDS
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
    else {
        return c.reply(|o| unknown_command(o, args));
    };
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
        let msg = format!(
            "ERR wrong number of arguments for '{}' command",
            cmd.to_ascii_lowercase()
        );
        return c.reply(|o| resp::error(o, &msg));
    }
    if WRITES.contains(&cmd) {
        return c.reply(|o| {
            resp::error(
                o,
                "ERR this server is read-only: the write path is not built yet",
            )
        });
    }
    match cmd {
        "GET" => keyed(c, router, &args[1..], None, |k| Op::Get { key: k.into() }),
        "MGET" => keyed(c, router, &args[1..], Some(Combine::Array), |k| Op::Get {
            key: k.into(),
        }),
        "EXISTS" => keyed(c, router, &args[1..], Some(Combine::Sum), |_| Op::Exists),
        "PING" => match args.get(1) {
            None => c.reply(|o| resp::simple(o, "PONG")),
            Some(m) => c.reply(|o| resp::bulk(o, m)),
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
        "COMMAND" => command(c, args),
        "CLIENT" => client(c, router, args),
        _ => unreachable!("every command in COMMANDS is handled"),
    }
}

fn unknown_command(o: &mut Vec<u8>, args: &[&[u8]]) {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        args[0].escape_ascii()
    );
    for a in args[1..].iter().take(8) {
        msg.push_str(&format!("'{}' ", a.escape_ascii()));
    }
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

/// `CLIENT`: the subcommands client libraries send on connect.
fn client(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let sub = args[1].to_ascii_uppercase();
    match sub.as_slice() {
        b"SETNAME" | b"SETINFO" | b"NO-EVICT" | b"NO-TOUCH" | b"REPLY" => {
            c.reply(|o| resp::simple(o, "OK"))
        }
        b"GETNAME" => c.reply(resp::nil),
        b"ID" => {
            let id = ((router.thread as i64) << 32) | c.me.slot as i64;
            c.reply(|o| resp::int(o, id))
        }
        _ => {
            let msg = format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                args[1].escape_ascii()
            );
            c.reply(|o| resp::error(o, &msg))
        }
    }
}
