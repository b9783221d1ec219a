//! The key space's commands beyond a single value: OBJECT, MEMORY USAGE,
//! RENAME and COPY, RESTORE, SCAN, KEYS, RANDOMKEY, FLUSHDB/FLUSHALL.

use std::sync::atomic::Ordering::Relaxed;

use super::super::conn::Conn;
use super::super::msg::{KeyAt, MoveKind, ObjectInfo, RestoreAccess};
use super::super::msg::{Op, Request};
use super::super::replies::Combine;
use super::super::router::Router;
use super::super::strings;
use crate::index::KeyHash;
use crate::resp;
use crate::store::clock::unix_ms;

use super::meta::{checked_subcommand, help};
use super::route::{census_of_every_poller, census_of_partition, keyed, route_one};
use super::values::within_limits;

/// `OBJECT ENCODING | REFCOUNT | IDLETIME | FREQ key`, `OBJECT HELP`.
pub(super) fn object(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
pub(super) fn memory(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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

/// The destination of a RENAME or a COPY, within the limits on keys.
pub(super) fn destination(c: &mut Conn, router: &Router, dst: &[u8]) -> Option<KeyAt> {
    if !within_limits(c, router, dst, b"") {
        return None;
    }
    let hash = KeyHash::of(dst);
    Some(KeyAt {
        hash,
        pid: hash.partition(router.shared.sb.partitions),
        key: dst.into(),
    })
}

/// A move: one request to the poller that owns both keys, which reads
/// the value and writes it under the new name with its expiry (and, for
/// a rename, deletes the old name) in one turn. Keys on two pollers make
/// a transaction across them (`across_pollers`): the source's part reads
/// the value (a large one whole), deletes the source for a rename and
/// sends the value to the destination's part (`Cross::carry`), which
/// writes it; the source missing, or the destination there for RENAMENX
/// or COPY without REPLACE, refuses the whole, with the command's reply.
/// Both parts answer, combined as MSET's: the source's `+OK`, the
/// destination's the command's reply. Inside EXEC (a RENAME or a COPY:
/// see `command/mod.rs`'s `exec`) the two go into the transaction's
/// parts the same way, and a refusal is the command's reply alone.
fn send_move(c: &mut Conn, router: &mut Router, src: &[u8], to: KeyAt, kind: MoveKind) {
    let (from, into) = (router.poller_of_key(src), router.shared.poller_of(to.pid));
    if from == into {
        let op = Op::Move {
            key: src.into(),
            to,
            kind,
            wait: None,
        };
        return route_one(c, router, src, op);
    }
    let halves = |c: &mut Conn, router: &mut Router| {
        let id = c.expect(2, Some(Combine::AllOk));
        let hash = KeyHash::of(src);
        let source = Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: 0,
            pid: hash.partition(router.shared.sb.partitions),
            hash,
            op: Op::Move {
                key: src.into(),
                to: KeyAt {
                    hash: to.hash,
                    pid: to.pid,
                    key: to.key.clone(),
                },
                kind,
                wait: None,
            },
        };
        router.send(from, source);
        let destination = Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: 1,
            pid: to.pid,
            hash: to.hash,
            op: Op::MoveIn {
                key: to.key.clone(),
                kind,
                value: None,
                source: from,
            },
        };
        router.send(into, destination);
    };
    if router.capturing() {
        return halves(c, router);
    }
    let keys = [src, &*to.key];
    let across = super::across_pollers(c, router, &keys, Some((from, into)), halves);
    debug_assert!(across, "a move across pollers");
}

/// `RENAME | RENAMENX key newkey` (see [`send_move`]).
pub(super) fn move_key(c: &mut Conn, router: &mut Router, args: &[&[u8]], kind: MoveKind) {
    let Some(to) = destination(c, router, args[2]) else {
        return;
    };
    send_move(c, router, args[1], to, kind);
}

/// `COPY source destination [DB 0] [REPLACE]`: as RENAME, keeping the
/// source. nvkv has one database, as Redis with `databases 1`: another
/// gets Redis's error for a database it does not have.
pub(super) fn copy(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    let Some(to) = destination(c, router, args[2]) else {
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
    send_move(c, router, args[1], to, MoveKind::Copy { replace });
}

/// `RESTORE key ttl serialized-value [REPLACE] [ABSTTL] [IDLETIME s]
/// [FREQ f]`, checked in Redis's order: the options here; then, by the
/// poller, whether the key exists (`-BUSYKEY`), and only then the TTL and
/// the payload, whose errors travel with the request.
pub(super) fn restore(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
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
        let value = super::super::dump::decode(args[3]).map_err(|e| match e {
            super::super::dump::DumpError::VersionOrChecksum => strings::DUMP_VERSION_OR_CHECKSUM,
            super::super::dump::DumpError::BadFormat => strings::DUMP_BAD_FORMAT,
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

/// SCAN's cursor as Redis reads it (`strtoul`): an optional sign, then
/// decimal digits; `-n` wraps round as in C; nothing at all is 0.
pub(super) fn parse_cursor(b: &[u8]) -> Option<u64> {
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
pub(super) fn scan(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    use super::super::msg::{CURSOR_POS_BITS, TAG_GRAIN};
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
    let op = Op::Scan {
        from,
        count,
        pattern,
        no_keys,
    };
    census_of_partition(c, router, pid, op);
}

/// `KEYS pattern`: every poller sends its matching keys, combined into one
/// array.
pub(super) fn keys(c: &mut Conn, router: &mut Router, pattern: &[u8]) {
    census_of_every_poller(c, router, Combine::Concat, || Op::Keys {
        pattern: pattern.into(),
    });
}

/// `DBSIZE`: the live keys of every poller, counted once the writes its
/// connection sent before are done. With several, a census: the sum is
/// the store's at one instant. Inside EXEC, each poller's part counts its
/// keys as the transaction has left them (`poller/whole.rs`).
pub(super) fn dbsize(c: &mut Conn, router: &mut Router) {
    census_of_every_poller(c, router, Combine::Sum, || Op::DbSize);
}

/// `RANDOMKEY`: every poller picks one of its keys, once the writes its
/// connection sent before are done, and one of the picks is the reply,
/// drawn in proportion to the pollers' live keys; nil when none has a
/// key. A poller counted empty when the command came may have keys by
/// the time it runs (the writes before it), and one counted full may
/// have none left: only a poller that answers nil is passed by.
pub(super) fn randomkey(c: &mut Conn, router: &mut Router) {
    let seed = random_seed();
    let weights = (router.shared.poller_stats.iter())
        .map(|s| s.store.keys.load(Relaxed))
        .collect();
    let combine = Combine::Pick { seed, weights };
    census_of_every_poller(c, router, combine, || Op::RandomKey {
        seed: seed.rotate_left(29),
    });
}

/// A seed for RANDOMKEY: the clock and a per-process counter, hashed.
pub(super) fn random_seed() -> u64 {
    static DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = DRAWS.fetch_add(1, Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    xxhash_rust::xxh3::xxh3_64(&[t.to_le_bytes(), n.to_le_bytes()].concat())
}

/// `FLUSHDB | FLUSHALL [ASYNC | SYNC]` (one database: the same): every
/// poller flushes its shards, at one instant of the store (a census, with
/// several pollers: no client sees one poller flushed and another not);
/// `+OK` once all the flushes are durable. Both modes answer when the
/// flush is done, which takes no longer than clearing the index.
pub(super) fn flush(c: &mut Conn, router: &mut Router, args: &[&[u8]]) {
    match args {
        [_] => {}
        [_, mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
    }
    // Into the replication stream first: a poller's writes between this
    // and its flush are wiped by the flush, and left out of the stream.
    router.shared.repl.flush_sent();
    census_of_every_poller(c, router, Combine::AllOk, || Op::Flush);
}
