//! The commands that write a key's value or its expiry, whose arguments
//! need more than a lookup to become an operation: SET and its options,
//! MSET, MSETNX, SETRANGE, GETEX, and EXPIRE with its family.

use std::sync::atomic::Ordering::Relaxed;

use super::super::conn::Conn;
use super::super::msg::{Cond, ExpireIf, GetExpiry, KeyValue, Op, Request, SetReply};
use super::super::replies::Combine;
use super::super::router::Router;
use super::super::strings;
use crate::index::KeyHash;
use crate::resp;
use crate::store::clock::unix_ms;

use super::route::{route_one, send_grouped};

/// The absolute expiry time (ms) an argument of `cmd` asks for, checked as
/// Redis does: `n` units of `unit_ms` from now, or since the epoch if
/// `absolute`. Not an integer, not positive, or past `i64` once in ms or
/// added to now: the error to reply, never a wrapped or saturated time.
pub(super) fn expire_at(
    arg: &[u8],
    unit_ms: i64,
    absolute: bool,
    cmd: &str,
) -> Result<u64, String> {
    let n = resp::parse_redis_int(arg).ok_or(strings::NOT_AN_INTEGER)?;
    let base = if absolute { 0 } else { unix_ms() as i64 };
    match (n > 0).then(|| n.checked_mul(unit_ms)?.checked_add(base)) {
        Some(Some(at)) => Ok(at as u64),
        _ => Err(strings::invalid_expire_time(cmd)),
    }
}

/// Checks key and value sizes against the limits; replies when over.
pub(super) fn within_limits(c: &mut Conn, router: &Router, key: &[u8], value: &[u8]) -> bool {
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
pub(super) fn set(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
pub(super) enum Expiry {
    /// None: a SET clears it.
    None,
    /// KEEPTTL.
    Keep,
    /// At this absolute time (ms).
    At(u64),
}

/// Routes one SET of `key` (SET and its older forms).
pub(super) fn set_with(
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
    // A value that went to the poller as it arrived (`Conn::feed`).
    let fed = c.fed.take();
    let value = match fed {
        Some(_) => bytes::Bytes::new(),
        None => c.value_bytes(value),
    };
    route_one(
        c,
        router,
        key,
        Op::Set {
            key: key.into(),
            value,
            expire_ms,
            keep_ttl,
            cond,
            reply,
            fed,
        },
    );
}

/// `MSET key value [key value ...]`: the keys of each poller are set
/// together (one commit carries them); keys on several pollers are set
/// as one transaction across them (`across_pollers`), so no client sees
/// part of an MSET; the reply is `+OK` once all are durable.
pub(super) fn mset(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    if args.len() % 2 == 0 {
        return c.reply(|o| resp::error(o, &strings::wrong_arity("mset")));
    }
    for pair in args[1..].chunks(2) {
        if !within_limits(c, router, pair[0], pair[1]) {
            return;
        }
    }
    let keys: Vec<&[u8]> = args[1..].iter().step_by(2).copied().collect();
    if !super::across_pollers(c, router, &keys, None, |c, router| {
        mset_requests(c, router, args)
    }) {
        mset_requests(c, router, args)
    }
}

/// MSET's requests, one group per poller (or, inside a transaction, one
/// request per key).
fn mset_requests(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let n = (args.len() - 1) / 2;
    let id = c.expect(n, Some(Combine::AllOk));
    let partitions = router.shared.sb.partitions;
    let reqs = (args[1..].chunks(2).enumerate()).map(|(part, pair)| {
        let hash = KeyHash::of(pair[0]);
        Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: part as u32,
            pid: hash.partition(partitions),
            hash,
            op: Op::Set {
                key: pair[0].into(),
                value: c.value_bytes(pair[1]),
                expire_ms: 0,
                keep_ttl: false,
                cond: Cond::Always,
                reply: SetReply::Ok,
                fed: None,
            },
        }
    });
    send_grouped(c, router, reqs.collect());
}

use super::super::msg::PROTO_MAX_BULK_LEN;

/// `EXPIRE | PEXPIRE | EXPIREAT | PEXPIREAT key time [NX | XX | GT | LT]`,
/// checked in Redis's order: the options, the integer, its range once in
/// ms and added to now (or not, if `absolute`). A time at or before now
/// deletes the key; the conditions are the poller's to check.
pub(super) fn expire(
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
pub(super) fn setrange(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
pub(super) fn getex(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
/// owns every key, which sets all or none of them at once. Keys on
/// several pollers make a transaction across them (`across_pollers`),
/// one request per poller for its keys: a part that finds one of its
/// keys there refuses the whole (`:0`, nothing written); otherwise the
/// first part answers `:1` and the others `+OK`, combined as MSET's.
pub(super) fn msetnx(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
    let keys: Vec<&[u8]> = args[1..].iter().step_by(2).copied().collect();
    let mut parts: Vec<(usize, Vec<KeyValue>)> = Vec::new();
    for pair in pairs {
        let poller = router.shared.poller_of(pair.pid);
        match parts.iter_mut().find(|(p, _)| *p == poller) {
            Some((_, part)) => part.push(pair),
            None => parts.push((poller, vec![pair])),
        }
    }
    // A value larger than a segment is written as a transaction writes
    // it (its pieces, then every key in one commit): MSETNX of one
    // poller, too, runs as a transaction then.
    let sb = &router.shared.sb;
    let large = (args[1..].chunks(2)).any(|p| {
        crate::format::is_large_record(
            sb.segment_size,
            sb.block_size.into(),
            p[0].len(),
            p[1].len(),
        )
    });
    if parts.len() == 1 && (!large || router.capturing()) {
        let (_, pairs) = parts.pop().expect("a part");
        let op = Op::MsetNx {
            pairs,
            wait: None,
            others: Vec::new(),
        };
        return route_one(c, router, args[1], op);
    }
    // Inside an EXEC, each part knows the others' pollers: it sends them
    // its verdict and waits for theirs (`poller/cross.rs`).
    let inside = router.capturing();
    let pollers: Vec<usize> = parts.iter().map(|(p, _)| *p).collect();
    let send = move |c: &mut Conn, router: &mut Router| {
        let id = c.expect(parts.len(), Some(Combine::AllOk));
        for (part, (poller, pairs)) in parts.into_iter().enumerate() {
            let others = match inside {
                true => (pollers.iter().copied()).filter(|&p| p != poller).collect(),
                false => Vec::new(),
            };
            let req = Request {
                tried: Vec::new(),
                from: c.me,
                touch: c.touches(),
                id,
                part: part as u32,
                pid: pairs[0].pid,
                hash: pairs[0].hash,
                op: Op::MsetNx {
                    pairs,
                    wait: None,
                    others,
                },
            };
            router.send(poller, req);
        }
    };
    if inside {
        return send(c, router);
    }
    let across = super::as_transaction(c, router, &keys, None, large, send);
    debug_assert!(across, "MSETNX across pollers");
}
