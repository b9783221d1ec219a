//! Command handlers: each turns a command's arguments into a reply the
//! connection thread gives at once, or into operations routed to the
//! pollers that own the keys. The commands, their arity and their order
//! are in `table.rs`; the texts of the replies in `strings.rs`.

use super::conn::{Conn, Deferred, Executor, Multi};
use std::sync::Arc;

use super::msg::{Cond, Cross, ExpireIf, Feed, MoveKind, Op, Reply, Request, Response, SetReply};
use super::replies::{Call, Combine};
use super::router::Router;
use super::strings;
use super::table::{self, Cmd};
use crate::index::KeyHash;
use crate::resp::{self, Proto};

mod connection;
mod keyspace;
mod meta;
mod route;
mod values;

use connection::{auth, client, config, hello, hello_protocol};
use keyspace::{copy, flush, keys, memory, move_key, object, randomkey, restore, scan};
use meta::{checked_subcommand, command, command_code, command_name, described};
pub(super) use route::barrier_due;
use route::{keyed, route_one};
use values::{
    expire, expire_at, getex, mset, msetnx, set, set_with, setrange, within_limits, Expiry,
};

impl Executor for Router<'_> {
    fn holds(&self, slot: u32) -> bool {
        Router::holds(self, slot)
    }

    fn execute(&mut self, c: &mut Conn, args: &[&[u8]]) {
        execute(c, self, args)
    }

    fn feed(&mut self, c: &mut Conn, args: &[&[u8]], count: usize, len: u64) -> Option<Arc<Feed>> {
        feed(c, self, args, count, len)
    }

    fn fed(&mut self, feed: &Feed) {
        self.shared.pollers[feed.poller].ring();
    }
}

/// A SET whose header and key have arrived (`args`, of `count`
/// arguments), its value of `len` bytes not yet: when the value is larger
/// than a segment and the SET would be routed as it is, its feed, whose
/// poller takes the piece segments now and writes each piece as it comes
/// (`Op::FeedBegin`). Not inside MULTI, nor while replicas are fed (the
/// replication stream takes a SET's value whole).
fn feed(
    c: &mut Conn,
    router: &mut Router,
    args: &[&[u8]],
    count: usize,
    len: u64,
) -> Option<Arc<Feed>> {
    let [name, key] = args else {
        return None;
    };
    let sh = router.shared;
    let limits = &sh.cfg.conns;
    let plain = c.authed && c.multi.is_none() && !c.closing && !c.subs.any();
    if !name.eq_ignore_ascii_case(b"SET") || count < 3 || !plain {
        return None;
    }
    let large = len > u64::from(sh.sb.segment_size);
    let allowed = key.len() as u64 <= limits.max_key_size && len <= limits.max_value_size;
    if !large || !allowed || sh.repl.feeding() {
        return None;
    }
    let (_, spec) = table::lookup(name)?;
    if super::repl::refusal(sh, c, spec, &[name, key, b""]).is_some() {
        return None;
    }
    let piece = crate::format::piece_capacity(sh.sb.segment_size, u64::from(sh.sb.block_size));
    let hash = KeyHash::of(key);
    let poller = sh.poller_of(hash.partition(sh.sb.partitions));
    let feed = Feed::new(len, piece as usize, router.thread as u16, poller);
    let op = Op::FeedBegin {
        feed: Arc::clone(&feed),
    };
    route::send(c, router, super::msg::NO_REPLY, 0, key, op);
    Some(feed)
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
    let code = command_code(index, spec, args);
    c.info.note_command(code);
    // The reply this command leaves is timed, for INFO and /metrics, under
    // its subcommand's name when it has one (`config|get`), as Redis.
    let now = super::turn::now();
    c.timing = Some(Call {
        stat: table::StatSlots::get().of(index, code & 0xff),
        at: now,
        rejected: false,
    });
    c.slow.started = Some((index, now));
    if !spec.arity_fits(args.len()) {
        return refuse(c, router, spec.cmd, &strings::wrong_arity(spec.name));
    }
    // After the unknown-command and arity checks, as in Redis.
    if !c.authed && !spec.before_auth {
        c.rejected();
        c.refused_in_multi();
        return c.reply(|o| resp::error(o, strings::NOAUTH));
    }
    // RESP2's subscribed mode, as Redis: inside EXEC (after a SUBSCRIBE
    // there) only PING answers as subscribed; the rest runs.
    if c.proto == Proto::Resp2 && c.subs.any() {
        match spec.cmd {
            Cmd::Ping => return super::pubsub::commands::ping_subscribed(c, args),
            cmd if super::pubsub::commands::allowed_subscribed(cmd) => {}
            _ if router.capturing() => {}
            _ => {
                let msg = strings::subscribed_mode(&command_name(command_code(index, spec, args)));
                return refuse(c, router, spec.cmd, &msg);
            }
        }
    }
    let cmd = spec.cmd;
    if let Some(msg) = super::repl::refusal(router.shared, c, spec, args) {
        c.rejected();
        c.refused_in_multi();
        return c.reply(|o| resp::error(o, msg));
    }
    if let Some(m) = &mut c.multi {
        if !matches!(
            cmd,
            Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset
        ) {
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
        Cmd::Lcs => {
            let limit = router.shared.cfg.conns.max_value_size;
            match super::lcs::parse(&args[3..], limit) {
                Ok(ask) => {
                    let get = |k: &[u8]| Op::Get { key: k.into() };
                    let keys = &args[1..3];
                    if !group_across_pollers(c, router, keys, Combine::Lcs(ask), get) {
                        keyed(c, router, keys, Some(Combine::Lcs(ask)), get)
                    }
                }
                Err(e) => c.reply(|o| resp::error(o, e)),
            }
        }
        Cmd::Mget => {
            let get = |k: &[u8]| Op::Get { key: k.into() };
            if !group_across_pollers(c, router, &args[1..], Combine::Array, get) {
                keyed(c, router, &args[1..], Some(Combine::Array), get)
            }
        }
        Cmd::Exists => counted(c, router, &args[1..], false, |k| Op::Exists {
            key: k.into(),
        }),
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
        Cmd::Dbsize => keyspace::dbsize(c, router),
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
        Cmd::Del => counted(c, router, &args[1..], true, |k| Op::Del { key: k.into() }),
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
        Cmd::Touch => counted(c, router, &args[1..], false, |k| Op::Touch {
            key: k.into(),
        }),
        // Deleting is not slower than unlinking: nothing is freed in place.
        Cmd::Unlink => counted(c, router, &args[1..], true, |k| Op::Del { key: k.into() }),
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
            c.barrier_after_next();
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

/// Refuses a command with `msg` (an error text): a transaction being
/// queued is aborted, and an EXEC refused so ends it, as Redis's
/// `rejectCommand`.
fn refuse(c: &mut Conn, router: &mut Router, cmd: Cmd, msg: &str) {
    c.rejected();
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

/// `EXEC`: runs the queued commands as one transaction. The requests of
/// the commands of keys go to the pollers of their keys together, one
/// part per poller, which run them at once, in order, with nothing else
/// touching their keys, and answer with all their replies once every
/// write is durable — or with nil, when a watched key changed since
/// WATCH. The commands the connection thread answers (CLIENT, CONFIG,
/// PUBLISH, PING, INFO, …: [`connection_level`]) from the first with
/// effects on keep their places in EXEC's reply but run only once every
/// part has run, in order (see [`verdict`]): none of them runs when EXEC
/// answers nil or an error, as in Redis, and the connection parses
/// nothing more until then. Keys on several pollers make one transaction
/// across them (see [`send_parts`]), MSETNX, RENAME, RENAMENX and COPY
/// of keys of several pollers among them too, in any directions: RENAMEs
/// and COPYs all from one poller to one other as alone (the
/// destination's part waits for the values from the source's before it
/// runs: `Cross::carry`), the rest with parts that send each other a
/// move's value and their verdicts as they run (`Cross::mail`,
/// `poller/cross.rs`; with more than two pollers such a transaction
/// passes the gate alone).
/// With a command of the whole key space in the same transaction they
/// get Redis Cluster's CROSSSLOT (not built: each part of that command
/// holds every other request on its poller while it runs).
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
    // A command of the whole key space makes every poller take part, each
    // holding every other request while its part runs (`poller/whole.rs`).
    let whole = cmds.iter().any(|a| whole_key_space(a[0]));
    let one_request = |args: &[&[u8]]| {
        [&b"RENAME"[..], b"RENAMENX", b"COPY", b"MSETNX"]
            .iter()
            .any(|n| args[0].eq_ignore_ascii_case(n))
    };
    let spans = |args: &[&[u8]]| {
        let keys = keys_of(args);
        let first = keys.first().map(|k| router.poller_of_key(k));
        keys.iter().any(|k| Some(router.poller_of_key(k)) != first)
    };
    // MSETNX, RENAME, RENAMENX and COPY of keys of several pollers run.
    // RENAMEs and COPYs all from one poller to one other run as alone:
    // the destination's part waits, before it runs, for the values the
    // source's sends (`Cross::carry`). Otherwise (MSETNX, RENAMENX, moves
    // both ways or between several pairs) the parts send each other what
    // their commands need (a value, a verdict) as they run (`Cross::mail`,
    // `poller/cross.rs`). With a command of the whole key space (which
    // holds every other request on each poller while its part runs) they
    // would wait for each other: refused.
    let verdicts =
        |n: &[u8]| n.eq_ignore_ascii_case(b"MSETNX") || n.eq_ignore_ascii_case(b"RENAMENX");
    let mut ways = Vec::new();
    let mut talks = false;
    for args in cmds.iter().filter(|a| one_request(a) && spans(a)) {
        talks |= verdicts(args[0]);
        let keys = keys_of(args);
        ways.push((router.poller_of_key(keys[0]), router.poller_of_key(keys[1])));
    }
    talks |= ways.windows(2).any(|w| w[0] != w[1]);
    if whole && !ways.is_empty() {
        forget_watches(c, router);
        return c.reply(|o| resp::error(o, strings::CROSSSLOT));
    }
    // The pollers of the watched keys, and (below) those the queued
    // commands' requests go to, take part.
    let mut pollers: Vec<usize> = (c.watching.iter())
        .map(|k| router.poller_of_key(k))
        .collect();
    if whole {
        pollers.extend(0..router.shared.pollers.len());
    }
    let watched = !std::mem::take(&mut c.watching).is_empty();
    let timing = c.timing.take();
    let outer = c.begin_transaction();
    router.start_capture();
    // The requests made after a connection-level command are made as it
    // will have them (`foresee`), and its place is kept.
    let proto = c.proto;
    let mut deferred = Vec::new();
    for args in &cmds {
        if args[0].eq_ignore_ascii_case(b"SSUBSCRIBE") {
            // As Redis: no shard subscription from a transaction.
            c.reply(|o| resp::error(o, strings::SSUBSCRIBE_IN_MULTI));
            continue;
        }
        if let Some(effects) = connection_level(args) {
            // INFO after commands of keys reports what they did (its
            // keyspace, hits and misses, commandstats), as in Redis, where
            // they ran before it: it runs after the pollers' parts.
            let reports = args[0].eq_ignore_ascii_case(b"INFO") && router.captured_any();
            if effects || reports || !deferred.is_empty() {
                foresee(c, router, args);
                let place = c.expect(1, None);
                deferred.push((place, args.iter().map(|&a| a.into()).collect()));
                continue;
            }
        }
        execute(c, router, args);
    }
    let reqs = router.take_capture();
    let mut inner = c.end_transaction(outer);
    (c.proto, c.touch_as) = (proto, None);
    c.timing = timing;
    let count = cmds.len();
    pollers.extend(reqs.iter().map(|(p, _)| *p));
    pollers.sort_unstable();
    pollers.dedup();
    if pollers.is_empty() {
        // No key: nothing to wait for.
        debug_assert!(reqs.is_empty());
        for (id, part, reply) in run_deferred(c, router, deferred) {
            inner.fill(id, part, reply);
        }
        debug_assert_eq!(inner.owed(), 0);
        inner.count_calls();
        let bytes = inner.take_output();
        return c.reply(|o| {
            resp::array(o, count);
            o.extend_from_slice(&bytes);
        });
    }
    let how = Parts {
        watched,
        single: false,
        whole,
        talks,
    };
    // Moves across pollers all one way: the source's part commits last
    // (`Cross::carry`).
    let ways: Vec<(usize, usize)> = (reqs.iter())
        .filter_map(|(p, r)| match &r.op {
            Op::Move { to, .. } => {
                let into = router.shared.poller_of(to.pid);
                (into != *p).then_some((*p, into))
            }
            _ => None,
        })
        .collect();
    let carry = match ways.windows(2).all(|w| w[0] == w[1]) {
        true => ways.first().copied(),
        false => None,
    };
    let (exec, left) = send_parts(c, router, inner, count, pollers, reqs, how, carry);
    if !deferred.is_empty() {
        c.deferred = Some(Deferred {
            exec,
            left,
            cmds: deferred,
        });
    }
}

/// Whether command `args` is one the connection thread answers alone,
/// its effects or what it reads not the keys' (CLIENT, CONFIG, PUBLISH,
/// PING, INFO, …), and if so whether it has effects (`Some(true)`: CLIENT
/// SETNAME, CONFIG SET, PUBLISH, …) or only reads (`Some(false)`: PING,
/// CONFIG GET, CLIENT GETNAME, …). Inside an EXEC whose requests go to
/// the pollers, the first with effects (or an INFO after commands of
/// keys, which reports what they did) and every such command after it
/// run once the pollers have run theirs (see [`exec`]); those before it
/// run at once, as they change nothing (their replies go when EXEC
/// answers nil). WAIT answers at once inside EXEC, as Redis's.
fn connection_level(args: &[&[u8]]) -> Option<bool> {
    let (_, spec) = table::lookup(args[0])?;
    // The subcommands that only read.
    let reads = |names: &[&[u8]]| {
        let sub = args.get(1);
        sub.is_some_and(|s| names.iter().any(|n| s.eq_ignore_ascii_case(n)))
    };
    let effects = match spec.cmd {
        Cmd::Ping
        | Cmd::Echo
        | Cmd::Select
        | Cmd::Info
        | Cmd::Command
        | Cmd::Time
        | Cmd::Lastsave
        | Cmd::Pubsub
        | Cmd::Role
        | Cmd::Wait => false,
        Cmd::Config => !reads(&[b"GET", b"HELP"]),
        Cmd::Client => !reads(&[b"GETNAME", b"ID", b"INFO", b"LIST", b"HELP"]),
        Cmd::Slowlog => !reads(&[b"GET", b"LEN", b"HELP"]),
        Cmd::Latency => !reads(&[b"LATEST", b"HISTORY", b"DOCTOR", b"GRAPH", b"HELP"]),
        Cmd::Auth
        | Cmd::Hello
        | Cmd::Bgsave
        | Cmd::Publish
        | Cmd::Spublish
        | Cmd::Subscribe
        | Cmd::Psubscribe
        | Cmd::Unsubscribe
        | Cmd::Punsubscribe
        | Cmd::Sunsubscribe
        | Cmd::Shutdown
        | Cmd::Replicaof
        | Cmd::Slaveof
        | Cmd::Replconf => true,
        _ => return None,
    };
    Some(effects)
}

/// What a connection-level command of an EXEC (`args`), which runs after
/// the pollers' part, changes of the requests after it, applied while EXEC
/// makes them: the protocol their replies take (HELLO), and whether they
/// touch their keys (CLIENT NO-TOUCH). Undone once they are made; the
/// command itself does it for good when it runs.
fn foresee(c: &mut Conn, router: &Router, args: &[&[u8]]) {
    let is = |a: &[u8], name: &[u8]| a.eq_ignore_ascii_case(name);
    match args {
        [hello, ..] if is(hello, b"HELLO") => {
            if let Some(p) = hello_protocol(c, router, args) {
                c.proto = p;
            }
        }
        [client, sub, on] if is(client, b"CLIENT") && is(sub, b"NO-TOUCH") => {
            if is(on, b"ON") {
                c.touch_as = Some(false);
            } else if is(on, b"OFF") {
                c.touch_as = Some(true);
            }
        }
        _ => {}
    }
}

/// Runs an EXEC's connection-level commands (`cmds`, each with its place
/// among EXEC's replies), in order, as EXEC runs its commands; returns
/// their replies, for their places.
fn run_deferred(
    c: &mut Conn,
    router: &mut Router,
    cmds: Vec<(u64, Vec<Box<[u8]>>)>,
) -> Vec<(u64, u32, Reply)> {
    if cmds.is_empty() {
        return Vec::new();
    }
    let (timing, started) = (c.timing.take(), c.slow.started.take());
    let outer = c.begin_transaction();
    // As inside EXEC (BGSAVE answers that it is scheduled).
    router.start_capture();
    let mut replies = Vec::with_capacity(cmds.len());
    for (place, args) in cmds {
        let args: Vec<&[u8]> = args.iter().map(|a| &**a).collect();
        execute(c, router, &args);
        replies.push((place, 0, Reply::Encoded(c.take_ready())));
    }
    let reqs = router.take_capture();
    debug_assert!(reqs.is_empty(), "a connection-level command made requests");
    // They run only when EXEC ran its commands: their calls count.
    c.end_transaction(outer).count_calls();
    (c.timing, c.slow.started) = (timing, started);
    replies
}

/// Takes a poller's answer `r` for connection `c` before it is filed:
/// when it is from an EXEC whose connection-level commands wait
/// (`Conn::deferred`), and the last of its parts to answer, every part
/// having run, they run now, and their replies join it; when EXEC answers
/// nil (a watched key changed) or an error, they never run.
pub(super) fn verdict(c: &mut Conn, router: &mut Router, r: &mut Response) {
    let Some(d) = c.deferred.as_mut().filter(|d| d.exec == r.id) else {
        return;
    };
    if !matches!(r.reply, Reply::Txn(_)) {
        c.deferred = None;
        return;
    }
    d.left -= 1;
    if d.left > 0 {
        return;
    }
    let cmds = c.deferred.take().map(|d| d.cmds).unwrap_or_default();
    let replies = run_deferred(c, router, cmds);
    if let Reply::Txn(parts) = &mut r.reply {
        parts.extend(replies);
    }
}

/// Whether command `name` works on the whole key space: inside EXEC it
/// makes every poller take part (see `poller/whole.rs`).
fn whole_key_space(name: &[u8]) -> bool {
    [
        &b"KEYS"[..],
        b"SCAN",
        b"RANDOMKEY",
        b"DBSIZE",
        b"FLUSHDB",
        b"FLUSHALL",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// How a transaction's parts run (see [`send_parts`]).
#[derive(Clone, Copy)]
struct Parts {
    /// The connection watches keys.
    watched: bool,
    /// The reply of one command (MSET, MSETNX, a move), not EXEC's array.
    single: bool,
    /// It holds a command of the whole key space.
    whole: bool,
    /// An EXEC whose parts send each other what their commands need
    /// (`Cross::mail`): with more than two pollers, it passes the gate
    /// alone.
    talks: bool,
}

/// Runs a command of several keys (MSET, MSETNX, RENAME, RENAMENX, COPY,
/// DEL, UNLINK) whose keys are on several pollers as a transaction across
/// them ([`send_parts`]), so that no client sees part of it, as in Redis
/// (`carry`: a move's source's poller and destination's). Returns
/// whether it did (not inside EXEC).
pub(super) fn across_pollers(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    carry: Option<(usize, usize)>,
    run: impl FnOnce(&mut Conn, &mut Router),
) -> bool {
    as_transaction(c, router, keys, carry, false, run)
}

/// [`across_pollers`], and with `always` on one poller too (an MSETNX of
/// a value larger than a segment: a transaction writes its pieces first,
/// then every key in one commit).
pub(super) fn as_transaction(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    carry: Option<(usize, usize)>,
    always: bool,
    run: impl FnOnce(&mut Conn, &mut Router),
) -> bool {
    if router.capturing() {
        return false;
    }
    let mut pollers: Vec<usize> = keys.iter().map(|k| router.poller_of_key(k)).collect();
    pollers.sort_unstable();
    pollers.dedup();
    if pollers.len() < 2 && !always {
        return false;
    }
    let timing = c.timing.take();
    let outer = c.begin_transaction();
    router.start_capture();
    run(c, router);
    let reqs = router.take_capture();
    let inner = c.end_transaction(outer);
    c.timing = timing;
    let how = Parts {
        watched: false,
        single: true,
        whole: false,
        talks: false,
    };
    send_parts(c, router, inner, 1, pollers, reqs, how, carry);
    true
}

/// DEL, UNLINK (`writes`), EXISTS and TOUCH: one request per key, the
/// replies summed. Keys on several pollers make one command across them,
/// as in Redis: DEL and UNLINK a transaction across them (as MSET), EXISTS
/// and TOUCH a group held across them (as MGET), so that no client sees
/// one poller's part without the others' and the count is of one
/// instant. Keys on one poller go as before, each key hashed once.
fn counted(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    writes: bool,
    op: impl Fn(&[u8]) -> Op,
) {
    let sum = Some(Combine::Sum);
    if keys.len() < 2 || router.shared.pollers.len() < 2 || router.capturing() {
        return keyed(c, router, keys, sum, op);
    }
    let placed = route::placed(router, keys);
    let first = router.shared.poller_of(placed[0].1);
    if placed.iter().all(|p| router.shared.poller_of(p.1) == first) {
        return route::keyed_placed(c, router, keys, placed, sum, op);
    }
    let across = match writes {
        true => across_pollers(c, router, keys, None, |c, router| {
            keyed(c, router, keys, sum, &op)
        }),
        false => group_across_pollers(c, router, keys, Combine::Sum, &op),
    };
    debug_assert!(across, "keys of several pollers");
}

/// Runs a command that reads keys of several pollers (MGET, EXISTS,
/// TOUCH) as a group held across them: its parts hold their keys poller
/// by poller as a transaction's do ([`send_parts`]), so that it sees no
/// part of a transaction, then each part's requests run together, as a
/// group's, and answer the command's reply themselves. Returns whether it
/// did.
fn group_across_pollers(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    combine: Combine,
    op: impl Fn(&[u8]) -> Op,
) -> bool {
    let mut pollers: Vec<usize> = keys.iter().map(|k| router.poller_of_key(k)).collect();
    pollers.sort_unstable();
    pollers.dedup();
    if pollers.len() < 2 || router.capturing() {
        return false;
    }
    let id = c.expect(keys.len(), Some(combine));
    let partitions = router.shared.sb.partitions;
    let mut parts: Vec<Vec<Request>> = pollers.iter().map(|_| Vec::new()).collect();
    for (part, key) in keys.iter().enumerate() {
        let hash = KeyHash::of(key);
        let pid = hash.partition(partitions);
        let poller = router.shared.poller_of(pid);
        let i = pollers.iter().position(|&p| p == poller).expect("a poller");
        parts[i].push(Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: part as u32,
            hash,
            pid,
            op: op(key),
        });
    }
    let cross = Box::new(Cross {
        pollers: pollers.clone(),
        single: true,
        group: true,
        gated: false,
        carry: None,
        mail: false,
    });
    for (i, (poller, reqs)) in pollers.iter().zip(parts).enumerate() {
        let req = Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: i as u32,
            pid: reqs[0].pid,
            hash: KeyHash::of(&[]),
            op: Op::Exec {
                reqs,
                watched: false,
                watch_tags: Vec::new(),
                wait: None,
                cross: Some(cross.clone()),
                whole: false,
            },
        };
        router.send(*poller, req);
    }
    true
}

/// Sends a transaction's requests (`reqs`, with their pollers), one
/// `Op::Exec` per poller of `pollers` (lowest first), and reserves its
/// reply. With several pollers each part knows the others (`Cross`): the
/// first holds its keys and checks the keys the connection watches
/// there, then tells the next to do the same, and so on; the last, once
/// all hold their keys, lets them all run, and once all have run (their
/// writes in the store), lets their keys go. `how`: whether the
/// connection watches keys, whether the reply is one command's (MSET,
/// MSETNX, a move), not EXEC's array, and whether a command of the
/// whole key space is among them (such a transaction across pollers
/// passes the gate alone). `carry`: a move's source's poller and
/// destination's (see `Cross::carry`). Returns the id of the reply and
/// the number of parts.
#[allow(clippy::too_many_arguments)]
fn send_parts(
    c: &mut Conn,
    router: &mut Router,
    inner: super::replies::Replies,
    count: usize,
    mut pollers: Vec<usize>,
    reqs: Vec<(usize, Request)>,
    how: Parts,
    carry: Option<(usize, usize)>,
) -> (u64, u32) {
    let Parts {
        watched,
        single,
        whole,
        talks,
    } = how;
    for (p, _) in &reqs {
        if !pollers.contains(p) {
            pollers.push(*p);
        }
    }
    pollers.sort_unstable();
    if watched {
        // What it watches is taken by its parts as they come: the next
        // EXEC's parts must not come first (`conn.rs`'s `Barrier`).
        c.barrier_after_next();
    }
    let id = c.expect_exec(inner, count, pollers.len() as u32, single);
    // Parts that wait for each other's messages while they run (`talks`)
    // are told to run by their last poller: with two pollers in all,
    // every such transaction's is the same, so every poller runs them in
    // the order it told them, and none waits for another in a circle;
    // with more, two with different last pollers could: they pass the
    // gate alone.
    let alone = router.shared.pollers.len() > 2;
    let mut parts: Vec<Vec<Request>> = pollers.iter().map(|_| Vec::new()).collect();
    for (p, req) in reqs {
        let i = pollers
            .iter()
            .position(|&q| q == p)
            .expect("a poller of the transaction");
        parts[i].push(req);
    }
    let cross = (pollers.len() > 1).then(|| {
        Box::new(Cross {
            pollers: pollers.clone(),
            single,
            group: false,
            gated: whole || router.shared.repl.feeding() || (talks && alone),
            mail: talks,
            carry: carry.map(|(from, to)| {
                let at = |p| pollers.iter().position(|&q| q == p).expect("a poller") as u32;
                (at(from), at(to))
            }),
        })
    });
    let mut sent: Vec<(usize, Request)> = Vec::with_capacity(pollers.len());
    for (i, (poller, reqs)) in pollers.iter().zip(parts).enumerate() {
        let req = Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: i as u32,
            pid: reqs.first().map_or(0, |r| r.pid),
            hash: KeyHash::of(&[]),
            op: Op::Exec {
                reqs,
                watched,
                watch_tags: Vec::new(),
                wait: None,
                cross: cross.clone(),
                whole,
            },
        };
        sent.push((*poller, req));
    }
    if whole {
        // Of the whole key space: in its connection's order as a census
        // is (on one poller too, where it waits for its keys before it
        // holds the poller).
        route::send_census(c, router, id, sent);
    } else {
        for (poller, req) in sent {
            router.send(poller, req);
        }
    }
    (id, pollers.len() as u32)
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
            tried: Vec::new(),
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
