//! Routing a command's requests to the pollers that own its keys: one
//! key's request, a group of keys on one poller, one request to every
//! poller.

use super::super::conn::Conn;
use super::super::msg::{Census, Op, Request};
use super::super::replies::Combine;
use super::super::router::Router;
use crate::index::KeyHash;

/// Routes one request per key to the owning pollers. With `combine`, the
/// replies are gathered into one (MGET, EXISTS).
pub(super) fn keyed(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    combine: Option<Combine>,
    op: impl Fn(&[u8]) -> Op,
) {
    let partitions = router.shared.sb.partitions;
    let placed = keys.iter().map(|key| place(key, partitions));
    keyed_placed(c, router, keys, placed, combine, op)
}

/// A key's hash and partition, out of `partitions`.
fn place(key: &[u8], partitions: u32) -> (KeyHash, u32) {
    let hash = KeyHash::of(key);
    (hash, hash.partition(partitions))
}

/// Each key's hash and partition.
pub(super) fn placed(router: &Router, keys: &[&[u8]]) -> Vec<(KeyHash, u32)> {
    let partitions = router.shared.sb.partitions;
    keys.iter().map(|key| place(key, partitions)).collect()
}

/// [`keyed`], the keys' hashes and partitions known (`placed`, one per
/// key, in order).
pub(super) fn keyed_placed(
    c: &mut Conn,
    router: &mut Router,
    keys: &[&[u8]],
    placed: impl IntoIterator<Item = (KeyHash, u32)>,
    combine: Option<Combine>,
    op: impl Fn(&[u8]) -> Op,
) {
    let id = c.expect(keys.len(), combine);
    let reqs = (keys.iter().zip(placed))
        .enumerate()
        .map(|(part, (key, (hash, pid)))| Request {
            tried: Vec::new(),
            from: c.me,
            touch: c.touches(),
            id,
            part: part as u32,
            hash,
            pid,
            op: op(key),
        });
    if keys.len() == 1 {
        // One key (GET, SET …): its request goes out as it is made,
        // without a vector (as `send_grouped` sends one request).
        for req in reqs {
            let poller = router.shared.poller_of(req.pid);
            router.send(poller, req);
        }
        return;
    }
    send_grouped(c, router, reqs.collect());
}

/// Sends the requests of one command, those for one poller together
/// ([`Op::Group`]): the command sees, or makes, one state of the keys
/// each poller holds, as in Redis.
pub(super) fn send_grouped(c: &Conn, router: &mut Router, reqs: Vec<Request>) {
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
                tried: Vec::new(),
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

pub(super) fn route_one(c: &mut Conn, router: &mut Router, key: &[u8], op: Op) {
    let id = c.expect(1, None);
    send(c, router, id, 0, key, op);
}

pub(super) fn send(c: &Conn, router: &mut Router, id: u64, part: u32, key: &[u8], op: Op) {
    let hash = KeyHash::of(key);
    let pid = hash.partition(router.shared.sb.partitions);
    let req = Request {
        tried: Vec::new(),
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

/// A census of the key space (`poller/census.rs`) in partition `pid`, by
/// the poller that owns it: a SCAN step, RANDOMKEY. With one poller, a
/// plain request (no transaction spans pollers), and inside EXEC (the
/// transaction holds every poller: `poller/whole.rs`). Outside EXEC it
/// goes in its connection's order (`send_census`).
pub(super) fn census_of_partition(c: &mut Conn, router: &mut Router, pid: u32, op: Op) {
    if router.capturing() {
        return to_partition(c, router, pid, op);
    }
    let op = match router.shared.pollers.len() {
        1 => op,
        _ => Op::Census(Box::new(Census {
            op,
            pollers: vec![router.shared.poller_of(pid)],
        })),
    };
    let id = c.expect(1, None);
    let req = partition_request(c, router, id, pid, op);
    send_census(c, router, id, vec![req]);
}

/// A census of the key space (`poller/census.rs`) by every poller, the
/// replies combined by `combine`: KEYS, DBSIZE, FLUSHDB.
pub(super) fn census_of_every_poller(
    c: &mut Conn,
    router: &mut Router,
    combine: Combine,
    op: impl Fn() -> Op,
) {
    let n = router.shared.pollers.len();
    if router.capturing() {
        return to_every_poller(c, router, combine, op);
    }
    let pollers: Vec<usize> = (0..n).collect();
    let id = c.expect(n, Some(combine));
    let reqs = router.to_every_poller(c.me, c.touches(), id, || match n {
        1 => op(),
        _ => Op::Census(Box::new(Census {
            op: op(),
            pollers: pollers.clone(),
        })),
    });
    send_census(c, router, id, reqs);
}

/// Census `reqs` goes once what its connection sent before is done (a
/// key count or a listing sees the writes sent before it, which a
/// commit publishes), and its connection parses nothing more until it
/// is answered (`conn.rs`'s `Barrier`).
pub(super) fn send_census(c: &mut Conn, router: &mut Router, id: u64, reqs: Vec<(usize, Request)>) {
    for (p, req) in c.barrier(id, reqs) {
        router.send(p, req);
    }
}

/// Sends the requests waiting at connection `c`'s barrier, if they can
/// go now (a reply came).
pub(in crate::server) fn barrier_due(c: &mut Conn, router: &mut Router) {
    for (p, req) in c.barrier_due() {
        router.send(p, req);
    }
}

/// One request, of no key, for partition `pid` (to the poller that owns
/// it).
fn to_partition(c: &mut Conn, router: &mut Router, pid: u32, op: Op) {
    let id = c.expect(1, None);
    let (poller, req) = partition_request(c, router, id, pid, op);
    router.send(poller, req);
}

/// Reply `id`'s request of `op` for partition `pid`, with its poller.
fn partition_request(c: &Conn, router: &Router, id: u64, pid: u32, op: Op) -> (usize, Request) {
    let req = Request {
        tried: Vec::new(),
        from: c.me,
        touch: c.touches(),
        id,
        part: 0,
        hash: KeyHash { lo: 0, tag: 0 },
        pid,
        op,
    };
    (router.shared.poller_of(pid), req)
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
