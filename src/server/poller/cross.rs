//! A transaction across pollers: an EXEC (or an MSET, an MGET) whose keys
//! are on several pollers comes as one part per poller (`Op::Exec` with
//! `cross`), each part the requests for its poller's keys. The parts hold
//! their keys in the order of their pollers, lowest first, each once the
//! one before holds its own (`CrossStep::Claim`), so two such
//! transactions never wait for each other in a circle. A part holding
//! its keys checks the keys its connection watches here: one changed,
//! the part answers nil (the EXEC's only reply) and every other part lets
//! its keys go without running (`Abort`). The last, once all hold their
//! keys, lets them all run (`Go`): each runs as a transaction of this
//! poller does (view, `finish_txn`, its large values' pieces durable) up
//! to its commit, which it prepares: it takes the free segments its
//! writes may need out of the free list (`Keyspace::hold_room`: no other
//! writer can take them, and the compaction reserve stays) and tells the
//! last poller (`Prepared`), or, with no room (or its pieces refused or
//! failed), drops its view and tells it so (`Refused`). Once all have
//! told: all prepared, every part commits into the segments it holds
//! (`Commit`; what is left goes back), answers its replies once durable,
//! and keeps its keys held after its writes are in the store; it tells
//! the last poller (`Done`), which, once all have, lets every part's keys
//! go (`Release`). One refused, every part drops what it ran, gives its
//! segments back and lets its keys go (`Drop`): the refused part's error
//! is EXEC's reply (the others answer an empty part), and nothing of the
//! transaction is in the store or the replication stream. No client sees
//! one part's writes without the others'. A part whose commit fails
//! after being prepared (a device error, the index) still leaves the
//! others' writes, as a crash between the parts' commits does: see
//! docs/design.md. Pollers send the steps to each other's rings directly.
//!
//! While replicas are fed (`Cross::gated`), such transactions run one at
//! a time: the first part takes the server's gate before it claims its
//! keys (or waits for it, `Gated`, until `Gate`), and the last poller
//! passes the gate on once every part has committed (or at an abort, a
//! `Drop` included). So every poller commits their parts in one order,
//! and each part goes into its outbox tagged with the transaction, to be
//! joined with the others into one `MULTI … EXEC` of the stream
//! (`repl/outbox.rs`).

use super::*;
use crate::server::msg::{Cross, CrossStep};

/// An EXEC across pollers: its connection and its reply's id.
pub(super) type CrossId = (ConnRef, u64);

/// Where this poller's part of an EXEC across pollers stands.
pub(super) enum CrossPart {
    /// The part came; the poller before does not hold its keys yet. The
    /// keys its connection watched here when it came.
    Dormant {
        req: Request,
        watches: Option<Vec<Watched>>,
    },
    /// The poller before holds its keys, and the part has not come yet.
    Claimable,
    /// Aborted before the part came: it is dropped when it comes.
    Aborted,
    /// The first part, waiting for the gate (another transaction across
    /// pollers holds it).
    Gated {
        req: Request,
        watches: Option<Vec<Watched>>,
    },
    /// Waiting for its keys.
    Claiming { watches: Option<Vec<Watched>> },
    /// Holding its keys, waiting to run.
    Held(Request),
    /// Ran its commands, holding the room its writes need (`None`: it
    /// writes nothing): waits for `Commit` or `Drop`.
    Prepared(Box<Prepared>),
    /// Ran its commands and was refused: waits for `Drop` to answer
    /// `reply` and let its keys go.
    Refused {
        exec: Request,
        claimed: Vec<u64>,
        reply: Reply,
    },
    /// Committed: its keys stay held until every part has.
    Ran(Vec<u64>),
}

/// A part prepared: its transaction, as it ran, the heads of its large
/// values (their pieces durable), and the room it holds.
pub(super) struct Prepared {
    t: Txn,
    heads: HashMap<u64, LargeHead>,
    room: Option<keyspace::Room>,
}

/// The parts of EXECs across pollers this poller takes part in.
#[derive(Default)]
pub(super) struct Crossing {
    parts: HashMap<CrossId, CrossPart>,
    /// On the last poller of each: the parts still to run, the pollers
    /// to release once none is left, and whether it holds the gate.
    left: HashMap<CrossId, (usize, Vec<usize>, bool)>,
    /// On the last poller of each (but groups): the parts still to
    /// prepare, and whether one was refused.
    preparing: HashMap<CrossId, (usize, bool)>,
    /// Steps for other pollers whose rings were full, oldest first.
    out: VecDeque<(usize, Request)>,
}

/// The part's place among the pollers of its EXEC.
fn cross_of(req: &Request) -> &Cross {
    match &req.op {
        Op::Exec { cross: Some(x), .. } => x,
        _ => unreachable!("a part of an EXEC across pollers"),
    }
}

/// Whether `req` is a part of an EXEC across pollers.
pub(super) fn is_cross(req: &Request) -> bool {
    matches!(req.op, Op::Exec { cross: Some(_), .. })
}

impl<E: Engine> Poller<E> {
    /// A part came from its connection: the first part claims its keys at
    /// once, the others once the poller before holds its own. The keys
    /// its connection watches here are the part's to check (later WATCHes
    /// are for the connection's next transaction).
    pub(super) fn cross_arrived(&mut self, req: Request) {
        let xid = (req.from, req.id);
        if let Some(CrossPart::Claiming { .. }) = self.cross.parts.get(&xid) {
            // Back from the queue of a key it waited for.
            return self.exec_when_free(req);
        }
        let watches = match cross_of(&req).single {
            true => None,
            false => self.watches.remove(&req.from),
        };
        match self.cross.parts.remove(&xid) {
            Some(CrossPart::Aborted) => {}
            Some(CrossPart::Claimable) => self.cross_claim(req, watches),
            None if req.part == 0 && cross_of(&req).gated => {
                match self.shared.repl.gate_take(self.id, xid) {
                    true => self.cross_claim(req, watches),
                    false => {
                        let gated = CrossPart::Gated { req, watches };
                        self.cross.parts.insert(xid, gated);
                    }
                }
            }
            None if req.part == 0 => self.cross_claim(req, watches),
            None => {
                let dormant = CrossPart::Dormant { req, watches };
                self.cross.parts.insert(xid, dormant);
            }
            Some(_) => unreachable!("a part came twice"),
        }
    }

    fn cross_claim(&mut self, req: Request, watches: Option<Vec<Watched>>) {
        let xid = (req.from, req.id);
        (self.cross.parts).insert(xid, CrossPart::Claiming { watches });
        self.exec_when_free(req);
    }

    /// The part holds its keys: if no key its connection watches here
    /// changed, the next poller claims its part's, or, on the last, every
    /// part runs.
    pub(super) fn cross_held(&mut self, req: Request) {
        let xid = (req.from, req.id);
        let Some(CrossPart::Claiming { watches }) = self.cross.parts.remove(&xid) else {
            unreachable!("a part claiming its keys")
        };
        let x = cross_of(&req);
        let (pollers, at, gated) = (x.pollers.clone(), req.part as usize, x.gated);
        let changed = watches.is_some_and(|w| self.changed(&w));
        if changed {
            let tags = claim_tags(&req.op);
            self.reply(&req, Reply::Nil);
            for tag in tags {
                self.release(tag);
            }
            for (i, &p) in pollers.iter().enumerate() {
                if i != at {
                    self.cross_send(p, xid, CrossStep::Abort);
                }
            }
            if gated {
                self.gate_pass();
            }
            return;
        }
        if at + 1 < pollers.len() {
            self.cross.parts.insert(xid, CrossPart::Held(req));
            return self.cross_send(pollers[at + 1], xid, CrossStep::Claim);
        }
        for &p in &pollers[..at] {
            self.cross_send(p, xid, CrossStep::Go);
        }
        if !x.group {
            self.cross.preparing.insert(xid, (pollers.len(), false));
        }
        self.cross.left.insert(xid, (pollers.len(), pollers, gated));
        self.cross_run(req);
    }

    /// Every part holds its keys: this one runs, as a transaction (once
    /// the one running here is done), or as a group (at once).
    fn cross_run(&mut self, mut req: Request) {
        if !cross_of(&req).group {
            return self.txns_waiting.push_back(req);
        }
        let claimed = claim_tags(&req.op);
        let Op::Exec { reqs, .. } = &mut req.op else {
            unreachable!()
        };
        for r in std::mem::take(reqs) {
            self.handle_now(r);
        }
        self.cross_ran(&req, claimed);
    }

    /// The part ran its commands (its large values' pieces durable): it
    /// takes the room its writes need out of the free list, so that no
    /// other writer can take it before it commits, and tells the last
    /// poller; with no room, it is refused (nothing of it written).
    pub(super) fn cross_prepare(&mut self, t: Txn, heads: HashMap<u64, LargeHead>) {
        let room = match t.view.is_empty() {
            true => None,
            false => {
                let (bytes, shards) = self.txn_room(&t, &heads);
                let Some(room) = self.ks.hold_room(bytes, shards) else {
                    self.stats().writes_refused.fetch_add(1, Relaxed);
                    for head in heads.into_values() {
                        self.ks.release_pieces(&head);
                    }
                    let reply = Reply::Error(crate::server::strings::STORE_FULL.into());
                    return self.end_txn(t, reply);
                };
                Some(room)
            }
        };
        let xid = (t.exec.from, t.exec.id);
        let last = *cross_of(&t.exec).pollers.last().expect("pollers");
        let prepared = Prepared { t, heads, room };
        (self.cross.parts).insert(xid, CrossPart::Prepared(Box::new(prepared)));
        self.cross_send(last, xid, CrossStep::Prepared);
    }

    /// The part ran its commands and is refused with `reply` (its view
    /// already dropped): it keeps its keys until every part has prepared.
    pub(super) fn cross_refused(&mut self, exec: Request, claimed: Vec<u64>, reply: Reply) {
        let xid = (exec.from, exec.id);
        let last = *cross_of(&exec).pollers.last().expect("pollers");
        let refused = CrossPart::Refused {
            exec,
            claimed,
            reply,
        };
        self.cross.parts.insert(xid, refused);
        self.cross_send(last, xid, CrossStep::Refused);
    }

    /// Another part was refused: this one drops what it ran (its large
    /// values' pieces, its views' pins, its room), answers an empty part
    /// (the refused one's error is EXEC's reply), and lets its keys go.
    /// Nothing of it goes into the replication stream.
    fn cross_drop(&mut self, p: Prepared) {
        let Prepared { mut t, heads, room } = p;
        for head in heads.into_values() {
            self.ks.release_pieces(&head);
        }
        for view in Self::take_views(&mut t).into_values() {
            self.ks.unpin_pieces(&view.base);
        }
        if let Some(room) = room {
            self.ks.give_back_room(room);
        }
        self.reply(&t.exec, Reply::Txn(Vec::new()));
        for tag in t.claimed {
            self.release(tag);
        }
    }

    /// The last poller: one more part prepared (or was refused). Once
    /// all have, every part commits, or, one refused, every part drops
    /// what it ran and the transaction is over (the gate passes on).
    fn cross_prepared(&mut self, xid: CrossId, refused: bool) {
        let (left, any) = self.cross.preparing.get_mut(&xid).expect("a transaction");
        *left -= 1;
        *any |= refused;
        if *left > 0 {
            return;
        }
        let (_, refused) = self.cross.preparing.remove(&xid).expect("a transaction");
        if !refused {
            let pollers = self.cross.left[&xid].1.clone();
            for p in pollers {
                self.cross_send(p, xid, CrossStep::Commit);
            }
            return;
        }
        let (_, pollers, gated) = self.cross.left.remove(&xid).expect("a transaction");
        for p in pollers {
            self.cross_send(p, xid, CrossStep::Drop);
        }
        if gated {
            self.gate_pass();
        }
    }

    /// The part has committed (its writes are in the store, or its commit
    /// failed), or, in a group, run: its keys stay held until every part
    /// has.
    pub(super) fn cross_ran(&mut self, exec: &Request, claimed: Vec<u64>) {
        let xid = (exec.from, exec.id);
        let last = *cross_of(exec).pollers.last().expect("pollers");
        self.cross.parts.insert(xid, CrossPart::Ran(claimed));
        self.cross_send(last, xid, CrossStep::Done);
    }

    /// A step from another poller (or from this one).
    pub(super) fn cross_step(&mut self, req: Request) {
        let Op::Cross(step) = req.op else {
            unreachable!()
        };
        let xid = (req.from, req.id);
        let part = self.cross.parts.remove(&xid);
        match (step, part) {
            (CrossStep::Claim, Some(CrossPart::Dormant { req, watches })) => {
                self.cross_claim(req, watches)
            }
            (CrossStep::Gate, Some(CrossPart::Gated { req, watches })) => {
                self.cross_claim(req, watches)
            }
            (CrossStep::Claim, None) => {
                self.cross.parts.insert(xid, CrossPart::Claimable);
            }
            (CrossStep::Go, Some(CrossPart::Held(req))) => self.cross_run(req),
            (CrossStep::Abort, Some(CrossPart::Held(req))) => {
                for tag in claim_tags(&req.op) {
                    self.release(tag);
                }
            }
            (CrossStep::Abort, Some(CrossPart::Dormant { .. })) => {}
            (CrossStep::Prepared | CrossStep::Refused, part) => {
                // This poller's own part, if it has one here, waits on.
                if let Some(part) = part {
                    self.cross.parts.insert(xid, part);
                }
                self.cross_prepared(xid, step == CrossStep::Refused);
            }
            (CrossStep::Commit, Some(CrossPart::Prepared(p))) => {
                let Prepared { t, heads, room } = *p;
                self.commit_txn_into(t, heads, room);
            }
            (CrossStep::Drop, Some(CrossPart::Prepared(p))) => self.cross_drop(*p),
            (
                CrossStep::Drop,
                Some(CrossPart::Refused {
                    exec,
                    claimed,
                    reply,
                }),
            ) => {
                self.reply(&exec, reply);
                for tag in claimed {
                    self.release(tag);
                }
            }
            (CrossStep::Abort, None) => {
                self.cross.parts.insert(xid, CrossPart::Aborted);
            }
            (CrossStep::Done, part) => {
                if let Some(part) = part {
                    self.cross.parts.insert(xid, part);
                }
                let (left, ..) = self.cross.left.get_mut(&xid).expect("a transaction");
                *left -= 1;
                if *left == 0 {
                    let (_, pollers, gated) = self.cross.left.remove(&xid).expect("a transaction");
                    for p in pollers {
                        self.cross_send(p, xid, CrossStep::Release);
                    }
                    if gated {
                        self.gate_pass();
                    }
                }
            }
            (CrossStep::Release, Some(CrossPart::Ran(claimed))) => {
                for tag in claimed {
                    self.release(tag);
                }
            }
            (step, _) => unreachable!("step {step:?} out of order"),
        }
    }

    /// The transaction holding the gate is done with it: the next
    /// waiting (its first part) claims its keys.
    fn gate_pass(&mut self) {
        if let Some((p, xid)) = self.shared.repl.gate_pass() {
            self.cross_send(p, xid, CrossStep::Gate);
        }
    }

    /// Part of transaction `exec` has run: its writes, encoded in
    /// `stream` (none when it wrote nothing or failed), go into the
    /// replication stream, to be joined with the other parts' (a gated
    /// transaction); one begun before a replica's feed (not gated) goes
    /// as a block of its own, and the stream starts again (the replicas
    /// copy in full), as a replica must not see one part without the
    /// others.
    pub(super) fn cross_stream(&mut self, exec: &Request, stream: Vec<u8>) {
        let repl = &self.shared.repl;
        if !repl.feeding() || repl.is_replica() {
            return;
        }
        let x = cross_of(exec);
        let seq = self.ks.next_seq().saturating_sub(1);
        if x.gated {
            let part = crate::server::repl::Part {
                txn: (exec.from, exec.id),
                index: exec.part as usize,
                parts: x.pollers.len(),
            };
            return self.repl_out.push_part(repl, seq, part, stream);
        }
        if stream.is_empty() {
            return;
        }
        self.repl_out.push(repl, seq, |out| {
            resp::encode::command(out, &[b"MULTI"]);
            out.extend_from_slice(&stream);
            resp::encode::command(out, &[b"EXEC"]);
        });
        repl.restart_stream("a transaction across pollers begun before a replica's feed wrote");
    }

    /// Sends `step` of EXEC `xid` to poller `p` (this one included).
    fn cross_send(&mut self, p: usize, xid: CrossId, step: CrossStep) {
        let req = Request {
            from: xid.0,
            id: xid.1,
            part: 0,
            hash: KeyHash { lo: 0, tag: 0 },
            pid: 0,
            op: Op::Cross(step),
            touch: false,
        };
        self.cross.out.push_back((p, req));
        self.cross_flush();
    }

    /// Hands the other pollers' rings the steps they can take now; returns
    /// whether it handed any.
    pub(super) fn cross_flush(&mut self) -> bool {
        let mut any = false;
        while let Some((p, req)) = self.cross.out.pop_front() {
            if let Err(req) = self.shared.pollers[p].inbox.push(req) {
                self.cross.out.push_front((p, req));
                break;
            }
            self.shared.pollers[p].ring();
            any = true;
        }
        any
    }

    /// Whether a key of `watched` changed since WATCH (see
    /// `watched_changed`).
    pub(super) fn changed(&mut self, watched: &[Watched]) -> bool {
        let now_ms = self.ks.now_ms();
        watched.iter().any(|w| {
            let e = self.ks.entry(w.pid, &w.hash);
            e != w.seen || (w.live && !e.is_some_and(|e| e.live(now_ms)))
        })
    }
}
