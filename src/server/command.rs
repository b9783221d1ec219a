//! Command handlers: each turns a command's arguments into a reply the
//! connection thread gives at once, or into operations routed to the
//! pollers that own the keys. The commands, their arity and their order
//! are in `table.rs`; the texts of the replies in `strings.rs`.

use std::sync::atomic::Ordering::Relaxed;

use super::access::{self, Auth};
use super::clients::{ClientInfo, NO_EVICT, NO_TOUCH, PUBSUB};
use super::conn::{Conn, Executor, Multi};
use super::msg::{Cond, ExpireIf, GetExpiry, KeyValue, Op, Request, SetReply};
use super::msg::{KeyAt, MoveKind, ObjectInfo, RestoreAccess};
use super::replies::Combine;
use super::router::Router;
use super::strings;
use super::table::{self, Cmd, Meta};
use crate::index::KeyHash;
use crate::resp::{self, Proto};
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
    c.command_done(&router.shared.slowlog, args, mark);
}

/// Executes one parsed command, replying as if replies were on.
fn dispatch(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(name) = args.first() else {
        return; // an empty inline line
    };
    let Some((index, spec)) = table::lookup(name) else {
        c.refused_in_multi();
        if let Some(msg) = table::refused(name) {
            return c.reply(|o| resp::error(o, msg));
        }
        return c.reply(|o| resp::error(o, &strings::unknown_command(args)));
    };
    c.info.note_command(command_code(index, spec, args));
    // The reply this command leaves is timed, for INFO and /metrics.
    c.timing = Some((index, super::turn::now()));
    c.slow.started = c.timing;
    if !spec.arity_fits(args.len()) {
        return refuse(c, router, spec.cmd, &strings::wrong_arity(spec.name));
    }
    // After the unknown-command and arity checks, as in Redis.
    if !c.authed && !spec.before_auth {
        c.timing = None;
        c.refused_in_multi();
        return c.reply(|o| resp::error(o, strings::NOAUTH));
    }
    // RESP2's subscribed mode, as Redis.
    if c.proto == Proto::Resp2 && c.subs.any() {
        match spec.cmd {
            Cmd::Ping => return super::pubsub::commands::ping_subscribed(c, args),
            cmd if super::pubsub::commands::allowed_subscribed(cmd) => {}
            _ => {
                let msg = strings::subscribed_mode(&command_name(command_code(index, spec, args)));
                return refuse(c, router, spec.cmd, &msg);
            }
        }
    }
    let cmd = spec.cmd;
    if let Some(msg) = super::repl::refusal(router.shared, c, spec) {
        c.refused_in_multi();
        return c.reply(|o| resp::error(o, msg));
    }
    if let Some(m) = &mut c.multi {
        if !matches!(
            cmd,
            Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset
        ) {
            if matches!(
                cmd,
                Cmd::Scan | Cmd::Keys | Cmd::Randomkey | Cmd::Flushdb | Cmd::Flushall | Cmd::Bgsave
            ) {
                // They work on every poller's keys, a transaction on one's.
                m.aborted = true;
                return c.reply(|o| resp::error(o, strings::NOT_IN_MULTI));
            }
            if cmd == Cmd::Save {
                m.aborted = true;
                return c.reply(|o| resp::error(o, strings::NO_MULTI));
            }
            // Timed when EXEC runs it.
            c.timing = None;
            m.cmds.push(args.iter().map(|&a| a.into()).collect());
            return c.reply(|o| resp::simple(o, strings::QUEUED));
        }
    }
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
        Cmd::Select => match resp::parse_redis_int(args[1]) {
            Some(0) => c.reply(|o| resp::simple(o, strings::OK)),
            // As Redis: an integer, then an int, then a database it has.
            Some(n) if i32::try_from(n).is_ok() => c.reply(|o| resp::error(o, strings::DB_INDEX)),
            _ => c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
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
            let text = super::info::render(router.shared, &args[1..]);
            let p = c.proto;
            c.reply(|o| resp::verbatim(o, text.as_bytes(), p))
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
        // Connection and server commands.
        Cmd::Hello => hello(c, router, args),
        Cmd::Time => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            c.reply(|o| {
                resp::array(o, 2);
                resp::bulk(o, now.as_secs().to_string().as_bytes());
                resp::bulk(o, now.subsec_micros().to_string().as_bytes());
            })
        }
        Cmd::Lastsave => {
            let last = router.shared.saves.last();
            c.reply(|o| resp::int(o, last as i64))
        }
        Cmd::Save => super::admin::save(c, router),
        Cmd::Bgsave => super::admin::bgsave(c, router, args),
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
        // Key space: the per-key commands.
        Cmd::Type => keyed(c, router, &args[1..], None, |k| Op::Type { key: k.into() }),
        Cmd::Touch => keyed(c, router, &args[1..], Some(Combine::Sum), |k| Op::Touch {
            key: k.into(),
        }),
        // Deleting is not slower than unlinking: nothing is freed in place.
        Cmd::Unlink => keyed(c, router, &args[1..], Some(Combine::Sum), |k| Op::Del {
            key: k.into(),
        }),
        Cmd::Object => object(c, router, args),
        Cmd::Memory => memory(c, router, args),
        Cmd::Rename => move_key(c, router, args, MoveKind::Rename),
        Cmd::Renamenx => move_key(c, router, args, MoveKind::RenameNx),
        Cmd::Copy => copy(c, router, args),
        Cmd::Dump => keyed(c, router, &args[1..], None, |k| Op::Dump { key: k.into() }),
        Cmd::Restore => restore(c, router, args),
        // Transactions.
        Cmd::Multi => match c.multi {
            Some(_) => c.reply(|o| resp::error(o, strings::MULTI_NESTED)),
            None => {
                c.multi = Some(Multi::default());
                c.reply(|o| resp::simple(o, strings::OK))
            }
        },
        Cmd::Exec => exec(c, router),
        Cmd::Discard => match c.multi.take() {
            None => c.reply(|o| resp::error(o, strings::DISCARD_WITHOUT_MULTI)),
            Some(_) => {
                forget_watches(c, router);
                c.reply(|o| resp::simple(o, strings::OK))
            }
        },
        Cmd::Watch => {
            if c.multi.is_some() {
                return c.reply(|o| resp::error(o, strings::WATCH_IN_MULTI));
            }
            c.watching.extend(args[1..].iter().map(|&k| k.into()));
            keyed(c, router, &args[1..], Some(Combine::AllOk), |k| Op::Watch {
                key: k.into(),
            })
        }
        Cmd::Unwatch => {
            forget_watches(c, router);
            c.reply(|o| resp::simple(o, strings::OK))
        }
        // Pub/sub and server administration.
        Cmd::Publish
        | Cmd::Spublish
        | Cmd::Subscribe
        | Cmd::Psubscribe
        | Cmd::Ssubscribe
        | Cmd::Unsubscribe
        | Cmd::Punsubscribe
        | Cmd::Sunsubscribe => super::pubsub::commands::command(c, router.shared, cmd, args),
        Cmd::Pubsub => {
            if let Some(m) = checked_subcommand(c, "pubsub", args) {
                super::pubsub::commands::pubsub(c, router.shared, m.name, args)
            }
        }
        Cmd::Slowlog => {
            if let Some(m) = checked_subcommand(c, "slowlog", args) {
                c.reply(|o| super::slowlog::slowlog(&router.shared.slowlog, m.name, args, o))
            }
        }
        Cmd::Latency => {
            if let Some(m) = checked_subcommand(c, "latency", args) {
                c.reply(|o| super::slowlog::latency(&router.shared.slowlog, m.name, args, o))
            }
        }
        Cmd::Shutdown => super::admin::shutdown(c, router.shared, args),
        Cmd::Reset => {
            c.multi = None;
            forget_watches(c, router);
            super::admin::reset(c, router.shared)
        }
        // Key space: iteration and flushing.
        Cmd::Scan => scan(c, router, args),
        Cmd::Keys => keys(c, router, args[1]),
        Cmd::Randomkey => randomkey(c, router),
        Cmd::Flushdb | Cmd::Flushall => flush(c, router, args),
        Cmd::Replicaof | Cmd::Slaveof => super::repl::replicaof(c, router.shared, args),
        Cmd::Role => super::repl::role(c, router.shared),
        Cmd::Replconf => super::repl::replconf(c, args),
        Cmd::Psync => super::repl::psync(c, router.shared, args),
        Cmd::Wait => super::repl::wait(c, router, args),
    }
}

// ---------------------------------------------------------------------
// Transactions: MULTI queues commands (above); EXEC runs them.

/// Refuses a command with `msg` (an error text): a transaction being
/// queued is aborted, and an EXEC refused so ends it, as Redis's
/// `rejectCommand`.
fn refuse(c: &mut Conn, router: &mut Router, cmd: Cmd, msg: &str) {
    if cmd == Cmd::Exec && c.multi.take().is_some() {
        forget_watches(c, router);
        let msg = strings::exec_abort_because(msg);
        return c.reply(|o| resp::error(o, &msg));
    }
    c.refused_in_multi();
    c.reply(|o| resp::error(o, msg))
}

/// The keys a command names, by its description's key positions.
fn keys_of<'a>(args: &[&'a [u8]]) -> Vec<&'a [u8]> {
    match described(args[0]) {
        Some(m) if m.has_keys() => m
            .key_positions(args.len())
            .iter()
            .map(|&i| args[i])
            .collect(),
        _ => Vec::new(),
    }
}

/// `EXEC`: runs the queued commands as one transaction. Their keys, and
/// the keys the connection watches, must all belong to one poller (else
/// Redis Cluster's CROSSSLOT, and nothing runs). The commands the
/// connection thread answers (PING, INFO, …) run here; the requests of
/// the others go to that poller together, which runs them at once, in
/// order, with nothing else touching their keys, and answers with all
/// their replies once every write is durable — or with nil, when a
/// watched key changed since WATCH.
fn exec(c: &mut Conn, router: &mut Router) {
    let Some(multi) = c.multi.take() else {
        return c.reply(|o| resp::error(o, strings::EXEC_WITHOUT_MULTI));
    };
    if multi.aborted {
        forget_watches(c, router);
        return c.reply(|o| resp::error(o, strings::EXECABORT));
    }
    let cmds: Vec<Vec<&[u8]>> = (multi.cmds.iter())
        .map(|cmd| cmd.iter().map(|a| &**a).collect())
        .collect();
    let mut pollers = (cmds.iter().flat_map(|args| keys_of(args)))
        .chain(c.watching.iter().map(|k| &**k))
        .map(|k| router.poller_of_key(k));
    let poller = pollers.next();
    if let Some(p) = poller {
        if pollers.any(|q| q != p) {
            forget_watches(c, router);
            return c.reply(|o| resp::error(o, strings::CROSSSLOT));
        }
    }
    let watched = !std::mem::take(&mut c.watching).is_empty();
    let timing = c.timing.take();
    let outer = c.begin_transaction();
    router.start_capture();
    for args in &cmds {
        if args[0].eq_ignore_ascii_case(b"SSUBSCRIBE") {
            // As Redis: no shard subscription from a transaction.
            c.reply(|o| resp::error(o, strings::SSUBSCRIBE_IN_MULTI));
            continue;
        }
        execute(c, router, args);
    }
    let reqs: Vec<Request> = router.take_capture().into_iter().map(|(_, r)| r).collect();
    let inner = c.end_transaction(outer);
    c.timing = timing;
    let count = cmds.len();
    let Some(poller) = poller else {
        // No key: every reply is here already.
        debug_assert!(reqs.is_empty() && inner.owed() == 0);
        let bytes = inner.unsent();
        return c.reply(|o| {
            resp::array(o, count);
            o.extend_from_slice(bytes);
        });
    };
    let id = c.expect_exec(inner, count);
    let hash = KeyHash::of(&[]);
    let req = Request {
        from: c.me,
        touch: c.touches(),
        id,
        part: 0,
        pid: reqs.first().map_or(0, |r| r.pid),
        hash,
        op: Op::Exec {
            reqs,
            watched,
            wait: None,
        },
    };
    router.send(poller, req);
}

/// Tells the pollers of the keys the connection watches to forget them
/// (UNWATCH, DISCARD, an EXEC that does not run, a connection closing).
pub(super) fn forget_watches(c: &mut Conn, router: &mut Router) {
    let mut pollers: Vec<usize> = (c.watching.iter())
        .map(|k| router.poller_of_key(k))
        .collect();
    pollers.sort_unstable();
    pollers.dedup();
    c.watching.clear();
    for poller in pollers {
        let req = Request {
            from: c.me,
            touch: c.touches(),
            id: super::msg::NO_REPLY,
            part: 0,
            hash: KeyHash::of(&[]),
            pid: 0,
            op: Op::Unwatch,
        };
        router.send(poller, req);
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
    let reqs = keys.iter().enumerate().map(|(part, key)| {
        let hash = KeyHash::of(key);
        let pid = hash.partition(partitions);
        Request {
            from: c.me,
            touch: c.touches(),
            id,
            part: part as u32,
            hash,
            pid,
            op: op(key),
        }
    });
    send_grouped(c, router, reqs.collect());
}

/// Sends the requests of one command, those for one poller together
/// ([`Op::Group`]): the command sees, or makes, one state of the keys
/// each poller holds, as in Redis.
fn send_grouped(c: &Conn, router: &mut Router, reqs: Vec<Request>) {
    if reqs.len() < 2 || router.capturing() {
        // One request; or inside EXEC, which runs them together anyway.
        for req in reqs {
            let poller = router.shared.poller_of(req.pid);
            router.send(poller, req);
        }
        return;
    }
    let mut by_poller: Vec<Vec<Request>> = (0..router.shared.pollers.len())
        .map(|_| Vec::new())
        .collect();
    for req in reqs {
        by_poller[router.shared.poller_of(req.pid)].push(req);
    }
    for (poller, mut reqs) in by_poller.into_iter().enumerate() {
        let req = match reqs.len() {
            0 => continue,
            1 => reqs.pop().expect("one"),
            _ => Request {
                from: c.me,
                touch: c.touches(),
                id: reqs[0].id,
                part: reqs[0].part,
                hash: KeyHash::of(&[]),
                pid: reqs[0].pid,
                op: Op::Group { reqs, wait: None },
            },
        };
        router.send(poller, req);
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
        b"GET" => {
            let mut reply = Vec::new();
            super::settings::get(&mut reply, router.shared, &args[2..]);
            // A map in RESP3: settings.rs writes RESP2's flat array.
            let reply = match c.proto {
                Proto::Resp2 => reply,
                Proto::Resp3 => array_as_map(reply),
            };
            c.reply(|o| o.extend_from_slice(&reply))
        }
        b"SET" if args.len() < 4 || args.len() % 2 == 1 => c.reply(|o| arity_error(o, "set")),
        b"SET" => match super::settings::set(router.shared, &args[2..]) {
            Ok(()) => c.reply(|o| resp::simple(o, strings::OK)),
            Err(e) => c.reply(|o| resp::error(o, &e)),
        },
        b"RESETSTAT" | b"REWRITE" | b"HELP" if args.len() != 2 => {
            let sub = String::from_utf8_lossy(&sub).to_ascii_lowercase();
            c.reply(|o| arity_error(o, &sub))
        }
        b"RESETSTAT" => super::admin::resetstat(c, router.shared),
        b"REWRITE" => super::admin::rewrite(c, router.shared),
        b"HELP" => c.reply(|o| resp::lines(o, super::admin::CONFIG_HELP)),
        _ => {
            let msg = strings::unknown_subcommand(args[1], "CONFIG");
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

/// `MSET key value [key value ...]`: the keys of each poller are set
/// together (atomic among them: one commit carries them; keys on
/// different pollers are not set at one instant); the reply is `+OK` once
/// all are.
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
    let partitions = router.shared.sb.partitions;
    let reqs = (args[1..].chunks(2).enumerate()).map(|(part, pair)| {
        let hash = KeyHash::of(pair[0]);
        Request {
            from: c.me,
            touch: c.touches(),
            id,
            part: part as u32,
            pid: hash.partition(partitions),
            hash,
            op: Op::Set {
                key: pair[0].into(),
                value: pair[1].into(),
                expire_ms: 0,
                keep_ttl: false,
                cond: Cond::Always,
                reply: SetReply::Ok,
            },
        }
    });
    send_grouped(c, router, reqs.collect());
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
        touch: c.touches(),
        id,
        part,
        hash,
        pid,
        op,
    };
    let poller = router.shared.poller_of(pid);
    router.send(poller, req);
}

// ---------------------------------------------------------------------
// Connection and server commands: HELLO, CLIENT, COMMAND.

/// What [`super::clients::ClientInfo::last_cmd`] holds for a command: its
/// index in the table plus one, and in the low byte its subcommand's
/// index in its description plus one.
fn command_code(index: u16, spec: &table::Spec, args: &[&[u8]]) -> u32 {
    let sub = match (spec.cmd, args.get(1)) {
        (
            Cmd::Client | Cmd::Command | Cmd::Config | Cmd::Pubsub | Cmd::Slowlog | Cmd::Latency,
            Some(sub),
        ) => table::meta_of(name_bytes(spec))
            .and_then(|top| top.subcommands.iter().position(|m| sub_is(m, sub)))
            .map_or(0, |i| i as u32 + 1),
        _ => 0,
    };
    (u32::from(index) + 1) << 8 | sub.min(255)
}

fn name_bytes(spec: &table::Spec) -> &'static [u8] {
    spec.name.as_bytes()
}

/// Whether `m` is the subcommand `sub` (any case).
fn sub_is(m: &Meta, sub: &[u8]) -> bool {
    (m.name.split_once('|')).is_some_and(|(_, s)| s.as_bytes().eq_ignore_ascii_case(sub))
}

/// The name CLIENT LIST shows for a [`command_code`] (`NULL` for none,
/// as Redis).
fn command_name(code: u32) -> String {
    let Some(spec) = (code >> 8)
        .checked_sub(1)
        .and_then(|i| table::COMMANDS.get(i as usize))
    else {
        return "NULL".into();
    };
    let sub = (code & 0xff).checked_sub(1).and_then(|i| {
        table::meta_of(spec.name.as_bytes()).and_then(|m| m.subcommands.get(i as usize))
    });
    match sub {
        Some(m) => m.name.into(),
        None => spec.name.to_ascii_lowercase(),
    }
}

/// Checks the arity of subcommand `args[1]` of `cmd` (`client`,
/// `command`) by its description; replies and returns `None` when it is
/// unknown or its arity is wrong.
fn checked_subcommand(c: &mut Conn, cmd: &str, args: &[&[u8]]) -> Option<&'static Meta> {
    let top = table::meta_of(cmd.as_bytes()).expect("described");
    let Some(m) = table::subcommand(top, args[1]) else {
        let msg = strings::unknown_subcommand(args[1], &cmd.to_ascii_uppercase());
        c.reply(|o| resp::error(o, &msg));
        return None;
    };
    let n = args.len() as i32;
    if (m.arity > 0 && n != m.arity) || n < -m.arity {
        let msg = strings::wrong_arity(m.name);
        c.reply(|o| resp::error(o, &msg));
        return None;
    }
    Some(m)
}

/// RESP2's flat array of pairs `*<2n>` made a RESP3 map `%<n>` (the
/// elements are the same).
fn array_as_map(reply: Vec<u8>) -> Vec<u8> {
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

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`: the
/// protocol, authentication and name at once, answered with the server's
/// description, as Redis 7.
fn hello(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let mut proto = None;
    if let Some(v) = args.get(1) {
        match resp::parse_redis_int(v) {
            None => return c.reply(|o| resp::error(o, strings::HELLO_PROTO_NOT_INT)),
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return c.reply(|o| resp::error(o, strings::NOPROTO)),
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
                return c.reply(|o| resp::error(o, strings::CLIENT_NAME));
            }
            name = Some(args[j + 1]);
            j += 2;
        } else {
            let msg = strings::hello_syntax(args[j]);
            return c.reply(|o| resp::error(o, &msg));
        }
    }
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
        resp::bulk(o, super::info::REDIS_VERSION.as_bytes());
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
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn set_client_name(info: &ClientInfo, name: &[u8]) {
    if let Ok(mut n) = info.name.lock() {
        *n = name.into();
    }
}

/// `CLIENT`: ID, SETNAME, GETNAME, LIST, INFO, KILL, NO-EVICT, NO-TOUCH,
/// REPLY, SETINFO, with Redis's arity, replies and errors.
fn client(c: &mut Conn, router: &Router, args: &[&[u8]]) {
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
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// The server's key in the client registry.
/// One connection as CLIENT LIST and CLIENT INFO show it: Redis's fields
/// that nvkv knows, in Redis's order (those it cannot know, such as the
/// query buffer of a connection on another thread, are left out).
fn client_line(ci: &ClientInfo) -> String {
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
    if ci.has(super::clients::MASTER) {
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
fn client_type(t: &[u8]) -> Option<fn(&ClientInfo) -> bool> {
    use super::clients::{INTERNAL, MASTER};
    match t.to_ascii_lowercase().as_slice() {
        b"normal" => Some(|ci| !ci.has(PUBSUB) && !ci.has(MASTER) && !ci.has(INTERNAL)),
        b"pubsub" => Some(|ci| ci.has(PUBSUB)),
        b"master" => Some(|ci| ci.has(MASTER)),
        b"slave" | b"replica" => Some(|_| false),
        _ => None,
    }
}

/// `CLIENT LIST [TYPE type] [ID id ...]`.
fn client_list(c: &mut Conn, router: &Router, args: &[&[u8]]) {
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
fn client_kill(c: &mut Conn, router: &Router, args: &[&[u8]]) {
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

/// `COMMAND [COUNT | INFO | DOCS | LIST | GETKEYS]`, from the command
/// table's descriptions.
fn command(c: &mut Conn, args: &[&[u8]]) {
    let p = c.proto;
    if args.len() == 1 {
        let all = Meta::all();
        return c.reply(|o| {
            resp::array(o, all.len());
            all.iter().for_each(|m| m.write_info(o, p));
        });
    }
    let Some(m) = checked_subcommand(c, "command", args) else {
        return;
    };
    let named = |names: &[&[u8]]| -> Vec<Option<&'static Meta>> {
        if names.is_empty() {
            Meta::all().into_iter().map(Some).collect()
        } else {
            names.iter().map(|n| described(n)).collect()
        }
    };
    match m.name {
        "command|count" => c.reply(|o| resp::int(o, table::COMMANDS.len() as i64)),
        "command|info" => {
            let found = named(&args[2..]);
            c.reply(|o| {
                resp::array(o, found.len());
                for m in found {
                    match m {
                        Some(m) => m.write_info(o, p),
                        None => resp::null(o, p),
                    }
                }
            })
        }
        "command|docs" => {
            let found: Vec<&Meta> = named(&args[2..]).into_iter().flatten().collect();
            c.reply(|o| {
                resp::map(o, found.len(), p);
                for m in found {
                    resp::bulk(o, m.name.as_bytes());
                    m.write_docs(o, p);
                }
            })
        }
        "command|list" => {
            let names: Vec<&str> = (Meta::all().into_iter())
                .flat_map(|m| std::iter::once(m).chain(m.subcommands))
                .map(|m| m.name)
                .collect();
            let keep: Box<dyn Fn(&str) -> bool> = match args {
                [_, _] => Box::new(|_| true),
                [_, _, by, kind, what] if by.eq_ignore_ascii_case(b"FILTERBY") => {
                    match kind.to_ascii_uppercase().as_slice() {
                        b"MODULE" => Box::new(|_| false),
                        b"ACLCAT" => {
                            let cat = format!("@{}", String::from_utf8_lossy(what));
                            Box::new(move |n| {
                                described(n.as_bytes()).is_some_and(|m| {
                                    m.acl.iter().any(|a| a.eq_ignore_ascii_case(&cat))
                                })
                            })
                        }
                        b"PATTERN" => Box::new(|n| super::pattern::glob(what, n.as_bytes())),
                        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
                    }
                }
                _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
            };
            let names: Vec<&str> = names.into_iter().filter(|n| keep(n)).collect();
            c.reply(|o| {
                resp::array(o, names.len());
                names.iter().for_each(|n| resp::bulk(o, n.as_bytes()));
            })
        }
        "command|getkeys" => {
            let target = &args[2..];
            let Some(m) = described(target[0]) else {
                return c.reply(|o| resp::error(o, strings::GETKEYS_INVALID));
            };
            let n = target.len() as i32;
            if !m.has_keys() {
                return c.reply(|o| resp::error(o, strings::GETKEYS_NO_KEYS));
            }
            let arity = m.arity();
            if (arity > 0 && n != arity) || n < -arity {
                return c.reply(|o| resp::error(o, strings::GETKEYS_ARITY));
            }
            let keys = m.key_positions(target.len());
            c.reply(|o| {
                resp::array(o, keys.len());
                keys.iter().for_each(|&i| resp::bulk(o, target[i]));
            })
        }
        _ => {
            let msg = strings::unknown_subcommand(args[1], "COMMAND");
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// The description of a command nvkv has (`client|list` for a
/// subcommand), any case.
fn described(name: &[u8]) -> Option<&'static Meta> {
    let top = name.split(|&b| b == b'|').next().unwrap_or(name);
    table::lookup(top)?;
    match table::meta_of(name) {
        Some(m) => Some(m),
        None if !name.contains(&b'|') => Meta::all()
            .into_iter()
            .find(|m| m.name.as_bytes().eq_ignore_ascii_case(name)),
        None => None,
    }
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
    let op = Op::MsetNx { pairs, wait: None };
    route_one(c, router, key, op);
}

// ---------------------------------------------------------------------
// Key space: the per-key commands.

/// Redis's help reply: a header naming `cmd`, the lines, and a footer.
fn help(c: &mut Conn, cmd: &str, lines: &[&str]) {
    let header = strings::help_header(cmd);
    c.reply(|o| {
        resp::array(o, lines.len() + 3);
        resp::simple(o, &header);
        for l in lines.iter().chain(&strings::HELP_FOOTER) {
            resp::simple(o, l);
        }
    })
}

/// `OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ key`, `OBJECT HELP`.
fn object(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(m) = checked_subcommand(c, "object", args) else {
        return;
    };
    let what = match m.name {
        "object|encoding" => ObjectInfo::Encoding,
        "object|refcount" => ObjectInfo::Refcount,
        "object|idletime" => ObjectInfo::Idletime,
        "object|freq" => ObjectInfo::Freq,
        _ => return help(c, "OBJECT", strings::OBJECT_HELP),
    };
    keyed(c, router, &args[2..3], None, |k| Op::Object {
        key: k.into(),
        what,
    })
}

/// `MEMORY USAGE key [SAMPLES count]` (a string has nothing to sample:
/// the count is checked as Redis checks it, and not used), `MEMORY HELP`.
fn memory(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(m) = checked_subcommand(c, "memory", args) else {
        return;
    };
    if m.name != "memory|usage" {
        return help(c, "MEMORY", strings::MEMORY_HELP);
    }
    let mut j = 3;
    while j < args.len() {
        if !(args[j].eq_ignore_ascii_case(b"SAMPLES") && j + 1 < args.len()) {
            return c.reply(|o| resp::error(o, strings::SYNTAX));
        }
        match resp::parse_redis_int(args[j + 1]) {
            None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
            Some(n) if n < 0 => return c.reply(|o| resp::error(o, strings::SYNTAX)),
            Some(_) => {}
        }
        j += 2;
    }
    keyed(c, router, &args[2..3], None, |k| Op::MemoryUsage {
        key: k.into(),
    })
}

/// The destination of a RENAME or a COPY, if it is on the poller of the
/// source; Redis Cluster's `-CROSSSLOT` otherwise.
fn destination(c: &mut Conn, router: &Router, src: &[u8], dst: &[u8]) -> Option<KeyAt> {
    let partitions = router.shared.sb.partitions;
    let hash = KeyHash::of(dst);
    let pid = hash.partition(partitions);
    let src_pid = KeyHash::of(src).partition(partitions);
    if router.shared.poller_of(src_pid) != router.shared.poller_of(pid) {
        c.reply(|o| resp::error(o, strings::CROSSSLOT));
        return None;
    }
    if !within_limits(c, router, dst, b"") {
        return None;
    }
    Some(KeyAt {
        hash,
        pid,
        key: dst.into(),
    })
}

/// `RENAME | RENAMENX key newkey`: one request to the poller that owns
/// both keys, which reads the value and writes it under the new name with
/// its expiry, and deletes the old name, in one turn.
fn move_key(c: &mut Conn, router: &mut Router, args: &[&[u8]], kind: MoveKind) {
    let Some(to) = destination(c, router, args[1], args[2]) else {
        return;
    };
    let op = Op::Move {
        key: args[1].into(),
        to,
        kind,
        wait: None,
    };
    route_one(c, router, args[1], op);
}

/// `COPY source destination [DB 0] [REPLACE]`: as RENAME, keeping the
/// source. nvkv has one database, as Redis with `databases 1`: another
/// gets Redis's error for a database it does not have.
fn copy(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(to) = destination(c, router, args[1], args[2]) else {
        return;
    };
    let mut replace = false;
    let mut j = 3;
    while j < args.len() {
        let more = args.len() - j - 1;
        if args[j].eq_ignore_ascii_case(b"REPLACE") {
            replace = true;
        } else if args[j].eq_ignore_ascii_case(b"DB") && more >= 1 {
            match resp::parse_redis_int(args[j + 1]) {
                None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
                Some(0) => {}
                Some(n) if i32::try_from(n).is_err() => {
                    return c.reply(|o| resp::error(o, strings::INT_OUT_OF_RANGE))
                }
                Some(_) => return c.reply(|o| resp::error(o, strings::DB_INDEX)),
            }
            j += 1;
        } else {
            return c.reply(|o| resp::error(o, strings::SYNTAX));
        }
        j += 1;
    }
    if args[1] == args[2] {
        return c.reply(|o| resp::error(o, strings::SAME_OBJECT));
    }
    let op = Op::Move {
        key: args[1].into(),
        to,
        kind: MoveKind::Copy { replace },
        wait: None,
    };
    route_one(c, router, args[1], op);
}

/// `RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME s]
/// [FREQ f]`, checked in Redis's order: the options here; then, by the
/// poller, whether the key exists (`-BUSYKEY`), and only then the TTL and
/// the payload, whose errors travel with the request.
fn restore(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let (mut replace, mut absttl) = (false, false);
    let mut access = None;
    let mut j = 4;
    while j < args.len() {
        let more = args.len() - j - 1;
        let opt = args[j].to_ascii_uppercase();
        let idle = matches!(access, Some(RestoreAccess::IdleSecs(_)));
        let freq = matches!(access, Some(RestoreAccess::Freq(_)));
        match opt.as_slice() {
            b"REPLACE" => replace = true,
            b"ABSTTL" => absttl = true,
            b"IDLETIME" if more >= 1 && !freq => {
                match resp::parse_redis_int(args[j + 1]) {
                    None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
                    Some(n) if n < 0 => {
                        return c.reply(|o| resp::error(o, strings::RESTORE_BAD_IDLETIME))
                    }
                    Some(n) => access = Some(RestoreAccess::IdleSecs(n as u64)),
                }
                j += 1;
            }
            b"FREQ" if more >= 1 && !idle => {
                match resp::parse_redis_int(args[j + 1]) {
                    None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
                    Some(n) => match u8::try_from(n) {
                        Ok(f) => access = Some(RestoreAccess::Freq(f)),
                        Err(_) => return c.reply(|o| resp::error(o, strings::RESTORE_BAD_FREQ)),
                    },
                }
                j += 1;
            }
            _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
        }
        j += 1;
    }
    if !within_limits(c, router, args[1], b"") {
        return;
    }
    let limit = router.shared.cfg.conns.max_value_size;
    let checked = || -> Result<(Box<[u8]>, u64), String> {
        let ttl = resp::parse_redis_int(args[2]).ok_or(strings::NOT_AN_INTEGER)?;
        if ttl < 0 {
            return Err(strings::RESTORE_BAD_TTL.into());
        }
        let value = super::dump::decode(args[3]).map_err(|e| match e {
            super::dump::DumpError::VersionOrChecksum => strings::DUMP_VERSION_OR_CHECKSUM,
            super::dump::DumpError::BadFormat => strings::DUMP_BAD_FORMAT,
        })?;
        if value.len() as u64 > limit {
            return Err(strings::value_too_large(value.len(), limit));
        }
        let at = match ttl {
            0 => 0,
            t if absttl => t as u64,
            t => (unix_ms() as i64).saturating_add(t) as u64,
        };
        Ok((value.into(), at))
    };
    let (value, expire_ms) = match checked() {
        Ok((v, at)) => (Ok(v), at),
        Err(msg) => (Err(msg), 0),
    };
    let op = Op::Restore {
        key: args[1].into(),
        value,
        expire_ms,
        replace,
        access,
    };
    route_one(c, router, args[1], op);
}

// ---------------------------------------------------------------------
// Key space: iteration and flushing.

/// SCAN's cursor as Redis reads it (`strtoul`): an optional sign, then
/// decimal digits; `-n` wraps round as in C; nothing at all is 0.
fn parse_cursor(b: &[u8]) -> Option<u64> {
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        // strtoul read nothing: Redis takes an empty cursor as 0, a lone
        // sign is left unread and refused.
        return b.is_empty().then_some(0);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { n.wrapping_neg() } else { n })
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`: one step in
/// the partition the cursor names. A cursor is the partition (bits 40 and
/// up) and a position in its tag space (`poller/scan.rs`, docs/design.md);
/// the step goes to the poller that owns the partition.
fn scan(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    use super::poller::{CURSOR_POS_BITS, TAG_GRAIN};
    let Some(cursor) = parse_cursor(args[1]) else {
        return c.reply(|o| resp::error(o, strings::INVALID_CURSOR));
    };
    let (mut pattern, mut count, mut no_keys) = (None, 10usize, false);
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let value = args.get(i + 1);
        match (opt.as_slice(), value) {
            (b"COUNT", Some(v)) => match resp::parse_redis_int(v) {
                None => return c.reply(|o| resp::error(o, strings::NOT_AN_INTEGER)),
                Some(n) if n < 1 => return c.reply(|o| resp::error(o, strings::SYNTAX)),
                Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
            },
            (b"MATCH", Some(v)) => pattern = Some(Box::<[u8]>::from(*v)),
            // Only strings exist: any other type matches no key (Redis
            // 7.0 does not check the name).
            (b"TYPE", Some(v)) => no_keys = !v.eq_ignore_ascii_case(b"string"),
            _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
        }
        i += 2;
    }
    let pid = cursor >> CURSOR_POS_BITS;
    if pid >= u64::from(router.shared.sb.partitions) {
        // No such partition: the iteration is over.
        return c.reply(|o| {
            resp::array(o, 2);
            resp::bulk(o, b"0");
            resp::array(o, 0);
        });
    }
    let pid = pid as u32;
    let from = (cursor & ((1 << CURSOR_POS_BITS) - 1)) << TAG_GRAIN;
    let id = c.expect(1, None);
    let req = Request {
        from: c.me,
        touch: c.touches(),
        id,
        part: 0,
        hash: KeyHash { lo: 0, tag: 0 },
        pid,
        op: Op::Scan {
            from,
            count,
            pattern,
            no_keys,
        },
    };
    let poller = router.shared.poller_of(pid);
    router.send(poller, req);
}

/// `KEYS pattern`: every poller sends its matching keys, combined into one
/// array.
fn keys(c: &mut Conn, router: &mut Router, pattern: &[u8]) {
    to_every_poller(c, router, Combine::Concat, || Op::Keys {
        pattern: pattern.into(),
    });
}

/// One request to every poller, the replies combined by `combine`.
pub(super) fn to_every_poller(
    c: &mut Conn,
    router: &mut Router,
    combine: Combine,
    op: impl Fn() -> Op,
) {
    let id = c.expect(router.shared.pollers.len(), Some(combine));
    router.send_to_every_poller(c.me, c.touches(), id, op);
}

/// `RANDOMKEY`: a poller picked in proportion to its live keys picks one
/// of its keys; nil at once when the store has none.
fn randomkey(c: &mut Conn, router: &mut Router) {
    let seed = random_seed();
    let counts: Vec<u64> = (router.shared.poller_stats.iter())
        .map(|s| s.store.keys.load(Relaxed))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        let proto = c.proto;
        return c.reply(|o| resp::null(o, proto));
    }
    let mut pick = seed % total;
    let poller = counts
        .iter()
        .position(|&n| {
            if pick < n {
                return true;
            }
            pick -= n;
            false
        })
        .unwrap_or(0);
    let id = c.expect(1, None);
    let req = Request {
        from: c.me,
        touch: c.touches(),
        id,
        part: 0,
        hash: KeyHash { lo: 0, tag: 0 },
        pid: poller as u32,
        op: Op::RandomKey {
            seed: seed.rotate_left(29),
        },
    };
    router.send(poller, req);
}

/// A seed for RANDOMKEY: the clock and a per-process counter, hashed.
fn random_seed() -> u64 {
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DRAWS.fetch_add(1, Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    xxhash_rust::xxh3::xxh3_64(&[t.to_le_bytes(), n.to_le_bytes()].concat())
}

/// `FLUSHDB | FLUSHALL [ASYNC | SYNC]` (one database: the same): every
/// poller flushes its shards; `+OK` once all the flushes are durable. Both
/// modes answer when the flush is done, which takes no longer than
/// clearing the index.
fn flush(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    match args {
        [_] => {}
        [_, mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
    }
    // Into the replication stream first: a poller's writes between this
    // and its flush are wiped by the flush, and left out of the stream.
    router.shared.repl.flush_sent();
    to_every_poller(c, router, Combine::AllOk, || Op::Flush);
}
