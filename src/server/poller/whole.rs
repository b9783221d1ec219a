//! A transaction holding a command of the whole key space: KEYS, SCAN,
//! RANDOMKEY, DBSIZE, FLUSHDB or FLUSHALL inside MULTI … EXEC. As Redis
//! runs them, they see the transaction's own earlier writes, and nothing
//! of it is seen by another client until it is done.
//!
//! Such an EXEC has a part on every poller (`Op::Exec` with `whole`);
//! with several, it is a transaction across pollers that passes the
//! server's gate alone, as a census does (`census.rs`), so no other
//! transaction across pollers is between its claims and its outcome.
//! When its part starts here, the poller holds every request that comes
//! but the steps of the transaction itself (as a census stops a poller),
//! until the part is done: appended, for a transaction of one poller;
//! released or undone, for a part of one across pollers. Each poller
//! stops once every part holds its keys and stays stopped until the
//! outcome, so nothing served after one part began can reach a poller
//! whose part has not: what the parts look at together is the store at
//! one instant. Requests the poller accepted before it stopped finish
//! meanwhile, and count as before that instant.
//!
//! The commands read the transaction's view over the store: DBSIZE is
//! the poller's count of live keys, plus the keys the view created and
//! less those it deleted; KEYS, SCAN and RANDOMKEY take the store's
//! keys as always, then those the view changed are taken out and those
//! it leaves live put in (for a SCAN step, those whose place lies in the
//! step's range of cursors). FLUSHDB and FLUSHALL empty the view and mark
//! it flushed: from then on a key the view does not hold is absent, and
//! at the end the part flushes its shards (`Keyspace::flush_all`, once
//! nothing before it is under way, as any flush waits) and appends the
//! view's writes after it, so one commit carries the flush marks and the
//! writes: a crash leaves both or neither.

use super::*;
use crate::server::msg::{CURSOR_POS_BITS, TAG_GRAIN};

/// The transactions of the whole key space under way here (one runs at
/// a time, but the one before may still be writing its large values'
/// pieces, or wait for the outcome across pollers): their EXECs
/// (connection, reply id), and the requests held since the first began.
#[derive(Default)]
pub(super) struct Whole {
    owners: Vec<(ConnRef, u64)>,
    held: VecDeque<Request>,
}

impl<E: Engine> Poller<E> {
    /// Whether a transaction of the whole key space holds this poller:
    /// `req` is held (and `None` returned) if so. Their own steps pass.
    pub(super) fn whole_holds(&mut self, req: Request) -> Option<Request> {
        if self.whole.owners.is_empty() {
            return Some(req);
        }
        let xid = (req.from, req.id);
        if matches!(req.op, Op::Cross(_)) && self.whole.owners.contains(&xid) {
            return Some(req);
        }
        self.whole.held.push_back(req);
        None
    }

    /// Transaction `exec`, of the whole key space, starts here: the
    /// poller holds every other request until it is done.
    pub(super) fn whole_begin(&mut self, exec: &Request) {
        self.whole.owners.push((exec.from, exec.id));
    }

    /// Called every turn: once the transactions are done here, the
    /// requests held go on, in order. Whether they did.
    pub(super) fn whole_pump(&mut self) -> bool {
        if self.whole.owners.is_empty() {
            return false;
        }
        let owners = std::mem::take(&mut self.whole.owners);
        self.whole.owners = (owners.into_iter())
            .filter(|&xid| {
                let mine = |r: &Request| (r.from, r.id) == xid;
                self.txn.as_ref().is_some_and(|t| mine(&t.exec))
                    || self.txn_pieces.values().any(|w| mine(&w.txn.exec))
                    || self.cross.has_part(xid)
            })
            .collect();
        if !self.whole.owners.is_empty() {
            return false;
        }
        for r in std::mem::take(&mut self.whole.held) {
            self.handle(r);
        }
        true
    }

    /// Runs `sub`, a command of the running transaction, if it is one of
    /// the whole key space (else gives it back): DBSIZE and FLUSHDB
    /// answer at once, KEYS, SCAN and RANDOMKEY once their records are
    /// read (see `Poller::view_names`).
    pub(super) fn whole_sub(&mut self, sub: Request) -> Option<Request> {
        match sub.op {
            Op::DbSize => {
                let n = self.view_dbsize();
                self.txn_reply(&sub, Reply::Int(n));
            }
            Op::Flush => {
                self.view_flush();
                self.txn_reply(&sub, simple(crate::server::strings::OK));
            }
            Op::Keys { .. } | Op::Scan { .. } | Op::RandomKey { .. } => self.start_scan(sub),
            _ => return Some(sub),
        }
        None
    }

    /// The running transaction emptied its view with a flush.
    pub(super) fn txn_flushed(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| t.flushed)
    }

    /// DBSIZE as the running transaction has left this poller's keys.
    fn view_dbsize(&mut self) -> i64 {
        let t = self.txn.as_ref().expect("a transaction runs");
        let now = self.ks.now_ms();
        let (mut n, flushed) = match t.flushed {
            true => (0, true),
            false => (self.ks.live_keys() as i64, false),
        };
        let staged: Vec<_> = (t.view.values())
            .map(|s| (s.pid, s.hash, s.own, staged_live(s, now)))
            .collect();
        for (pid, hash, own, live) in staged {
            let was = !flushed && self.ks.own_live(pid, &hash, own).is_some();
            n += i64::from(live) - i64::from(was);
        }
        n
    }

    /// FLUSHDB inside the running transaction: its view goes (pins of
    /// large values let go), and every key it does not write again is
    /// absent from now on; the flush itself is done at its commit.
    fn view_flush(&mut self) {
        let t = self.txn.as_mut().expect("a transaction runs");
        t.flushed = true;
        t.order.clear();
        let view = std::mem::take(&mut t.view);
        for s in view.into_values() {
            if let Some(l) = s.large {
                self.ks.unpin_pieces(&l.base);
            }
            if let Some(at) = s.own {
                self.ks.unfollow(s.pid, at);
            }
        }
    }

    /// The keys a KEYS, SCAN step or RANDOMKEY of the running transaction
    /// found in the store (`keys`), as the transaction has left them:
    /// the keys its view holds are taken out, and those it leaves live
    /// put in when they match `pattern`, for a SCAN step when their
    /// place lies in `range` (cursor positions, `[from, to)`; `to` 0:
    /// to the end). RANDOMKEY keeps one.
    pub(super) fn view_names(
        &self,
        keys: &mut Vec<Box<[u8]>>,
        pattern: Option<&[u8]>,
        range: Option<(u64, u64)>,
        random: bool,
    ) {
        let t = self.txn.as_ref().expect("a transaction runs");
        if t.flushed {
            keys.clear();
        }
        keys.retain(|k| !t.view.contains_key(&view_id(k)));
        let now = self.ks.now_ms();
        for id in &t.order {
            let s = &t.view[id];
            let place = u64::from(s.pid) << CURSOR_POS_BITS | s.hash.tag >> TAG_GRAIN;
            let within = range.is_none_or(|(from, to)| place >= from && (to == 0 || place < to));
            let matches = pattern.is_none_or(|p| crate::server::pattern::glob_exact(p, &s.key));
            if staged_live(s, now) && within && matches {
                keys.push(s.key.clone());
            }
        }
        if random {
            keys.truncate(1);
        }
    }

    /// The offsets of the index entries of the keys the running
    /// transaction's view holds, when `req` is one of its steps (empty
    /// else): a RANDOMKEY inside it picks among the other keys, and the
    /// view adds those it leaves live.
    pub(super) fn view_entries(&self, req: &Request) -> HashSet<u64> {
        match &self.txn {
            Some(t) if is_sub(req) => t.view.values().filter_map(|s| s.own).collect(),
            _ => HashSet::new(),
        }
    }

    /// Whether a flush may run now for the running transaction: as for
    /// any flush, nothing before it under way (no write waits for a
    /// commit or for room, no read-modify-write, move or edit of a large
    /// value reads, no large value is being fed). Keys held by requests
    /// that have not run (transactions waiting their turn, commands
    /// waiting for their keys or for other pollers) do not count: they
    /// come after the transaction, and may wait for it.
    pub(super) fn whole_quiet(&self) -> bool {
        self.ks.quiet_for_flush()
            && self.requeued.is_empty()
            && self.deferred.is_empty()
            && self.loads.is_empty()
            && self.edits.is_empty()
            && self.feeds.is_empty()
            && (self.reads.iter().flatten()).all(|r| is_sub(&r.req))
    }

    /// The flush of a transaction that flushed its view, at its commit,
    /// before its writes: they get sequence numbers above its marks and
    /// go in the same commit. The error to answer if the store cannot.
    pub(super) fn whole_flush(&mut self, exec: &Request) -> Result<(), Reply> {
        let w = Waiter {
            id: NO_REPLY,
            ..Waiter::new(exec, Reply::Nil, None)
        };
        // The commit's acknowledgement publishes the key count after the
        // writes (`Keyspace::acknowledge_durable`).
        self.flush_touches_watches();
        if let Err((_, e)) = self.ks.flush_unpublished(w) {
            return Err(Reply::Error(crate::server::strings::flush_refused(&e)));
        }
        self.watches_flushed();
        self.repl_out.wiped(&self.shared.repl);
        Ok(())
    }
}

/// Whether the key a transaction staged is there, unexpired, at `now`.
fn staged_live(s: &Staged, now: u64) -> bool {
    s.now
        .as_ref()
        .is_some_and(|(_, exp)| *exp == 0 || *exp > now)
}
