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
//! poller does (view, `finish_txn`, one commit), answers its replies once
//! durable, and keeps its keys held after its writes are in the store; it
//! tells the last poller (`Done`), which, once all have, lets every part's
//! keys go (`Release`). No client sees one part's writes without the
//! others'. Pollers send the steps to each other's rings directly.
//!
//! While replicas are fed (`Cross::gated`), such transactions run one at
//! a time: the first part takes the server's gate before it claims its
//! keys (or waits for it, `Gated`, until `Gate`), and the last poller
//! passes the gate on once every part has run (or at an abort). So every
//! poller commits their parts in one order, and each part goes into its
//! outbox tagged with the transaction, to be joined with the others into
//! one `MULTI … EXEC` of the stream (`repl/outbox.rs`).

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
    /// Ran: its keys stay held until every part has run.
    Ran(Vec<u64>),
}

/// The parts of EXECs across pollers this poller takes part in.
#[derive(Default)]
pub(super) struct Crossing {
    parts: HashMap<CrossId, CrossPart>,
    /// On the last poller of each: the parts still to run, the pollers
    /// to release once none is left, and whether it holds the gate.
    left: HashMap<CrossId, (usize, Vec<usize>, bool)>,
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

    /// The part has run (its writes are in the store, or it failed): its
    /// keys stay held until every part has.
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
            tried: Vec::new(),
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
