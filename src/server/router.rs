//! The router from a connection thread to the pollers: requests go to the
//! ring of the poller that owns their key, and wait here while that ring is
//! full.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use super::msg::{ConnRef, Op, Request};
use super::Shared;
use crate::index::KeyHash;

/// Sends requests to pollers, holding them when a ring is full.
///
/// Flow control is per connection and per poller: a request for a poller
/// whose ring is full waits in that poller's queue here (behind the others
/// held for it, so each poller still sees a connection's requests in
/// order), and only its connection stops parsing until it has gone out.
/// The other connections go on, and requests for the other pollers are
/// not held up.
pub(super) struct Router<'a> {
    pub(super) shared: &'a Shared,
    pub(super) thread: usize,
    /// Per poller, the requests its full ring could not take yet.
    stalled: Vec<VecDeque<Request>>,
    /// Requests held in `stalled`, in all.
    held: usize,
    /// Per connection slot, its requests held in `stalled`.
    held_by: Vec<u32>,
    /// Connections whose last held request went out: they parse again.
    released: Vec<u32>,
    touched: Vec<bool>,
    /// Requests sent to pollers and replies received, to know when to spin.
    sent: u64,
    answered: u64,
    /// While EXEC runs its queued commands: their requests, with their
    /// pollers, gathered here to go out as one transaction.
    capture: Option<Vec<(usize, Request)>>,
}

impl<'a> Router<'a> {
    /// The router of connection thread `thread`, with nothing held.
    pub(super) fn new(shared: &'a Shared, thread: usize) -> Self {
        Router {
            shared,
            thread,
            stalled: (0..shared.pollers.len()).map(|_| VecDeque::new()).collect(),
            held: 0,
            held_by: Vec::new(),
            released: Vec::new(),
            touched: vec![false; shared.pollers.len()],
            sent: 0,
            answered: 0,
            capture: None,
        }
    }

    /// The poller that owns `key`.
    pub(super) fn poller_of_key(&self, key: &[u8]) -> usize {
        let pid = KeyHash::of(key).partition(self.shared.sb.partitions);
        self.shared.poller_of(pid)
    }

    /// Sends one request of `op` to every poller, from `from`, all to be
    /// answered as reply `id`.
    pub(super) fn send_to_every_poller(
        &mut self,
        from: ConnRef,
        touch: bool,
        id: u64,
        op: impl Fn() -> Op,
    ) {
        for (p, req) in self.to_every_poller(from, touch, id, op) {
            self.send(p, req);
        }
    }

    /// One request of `op` for every poller, from `from`, all to be
    /// answered as reply `id`, with their pollers.
    pub(super) fn to_every_poller(
        &self,
        from: ConnRef,
        touch: bool,
        id: u64,
        op: impl Fn() -> Op,
    ) -> Vec<(usize, Request)> {
        // Shard `p` is poller `p`'s (a poller owns shards p, p + pollers,
        // …), and partition `p` is shard `p`'s.
        (0..self.shared.pollers.len())
            .map(|p| {
                let req = Request {
                    tried: Vec::new(),
                    from,
                    touch,
                    id,
                    part: p as u32,
                    hash: KeyHash { lo: 0, tag: 0 },
                    pid: p as u32,
                    op: op(),
                };
                (p, req)
            })
            .collect()
    }

    /// From now on, requests are gathered rather than sent (EXEC).
    pub(super) fn start_capture(&mut self) {
        self.capture = Some(Vec::new());
    }

    /// Whether requests are being gathered for EXEC.
    pub(super) fn capturing(&self) -> bool {
        self.capture.is_some()
    }

    /// Whether requests were gathered since [`Router::start_capture`].
    pub(super) fn captured_any(&self) -> bool {
        self.capture.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// The requests gathered since [`Router::start_capture`]; they are
    /// sent again from now on.
    pub(super) fn take_capture(&mut self) -> Vec<(usize, Request)> {
        self.capture.take().unwrap_or_default()
    }

    /// Sends `req` to `poller` even while requests are gathered for EXEC
    /// (BGSAVE's, which answers at once).
    pub(super) fn send_now(&mut self, poller: usize, req: Request) {
        let capture = self.capture.take();
        self.send(poller, req);
        self.capture = capture;
    }

    /// Sends `req` to `poller`, or holds it while the poller's ring is full.
    pub(super) fn send(&mut self, poller: usize, mut req: Request) {
        if let Some(reqs) = &mut self.capture {
            req.id |= super::msg::TXN_PART;
            reqs.push((poller, req));
            return;
        }
        self.touched[poller] = true;
        // A request that gets no reply is not awaited.
        self.sent += u64::from(req.id != super::msg::NO_REPLY);
        let req = if self.stalled[poller].is_empty() {
            match self.shared.pollers[poller].inbox.push(req) {
                Ok(()) => return,
                Err(req) => req,
            }
        } else {
            req
        };
        let slot = req.from.slot as usize;
        if self.held_by.len() <= slot {
            self.held_by.resize(slot + 1, 0);
        }
        self.held_by[slot] += 1;
        self.held += 1;
        self.shared.conn_stats[self.thread]
            .ring_full_waits
            .fetch_add(1, Relaxed);
        self.stalled[poller].push_back(req);
    }

    /// Whether connection `slot` has requests waiting for a full ring.
    pub(super) fn holds(&self, slot: u32) -> bool {
        self.held_by.get(slot as usize).is_some_and(|&n| n > 0)
    }

    /// Hands the pollers what their rings can take now.
    pub(super) fn retry(&mut self) {
        if self.held == 0 {
            return;
        }
        for (p, q) in self.stalled.iter_mut().enumerate() {
            while let Some(req) = q.pop_front() {
                let slot = req.from.slot as usize;
                if let Err(req) = self.shared.pollers[p].inbox.push(req) {
                    q.push_front(req);
                    break;
                }
                self.touched[p] = true;
                self.held -= 1;
                self.held_by[slot] -= 1;
                if self.held_by[slot] == 0 {
                    self.released.push(slot as u32);
                }
            }
        }
    }

    /// Wakes the pollers that were sent requests since the last call.
    pub(super) fn ring(&mut self) {
        for (p, t) in self.touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                self.shared.pollers[p].ring();
            }
        }
    }

    /// A reply will come back from another thread than a poller's (WAIT's,
    /// from replication), counted as a request sent.
    pub(super) fn awaits_elsewhere(&mut self) {
        self.sent += 1;
    }

    /// A poller's reply came back.
    pub(super) fn answered(&mut self) {
        self.answered += 1;
    }

    /// Replies awaited from the pollers (requests held for a full ring
    /// included).
    pub(super) fn outstanding(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }

    /// Whether requests wait for room in a full ring.
    pub(super) fn holds_any(&self) -> bool {
        self.held > 0
    }

    /// The connections whose last held request has gone out since the last
    /// call: they may parse again.
    pub(super) fn take_released(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.released)
    }
}
