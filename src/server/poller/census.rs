//! A census of the key space on a server with several pollers: KEYS,
//! DBSIZE, FLUSHDB and FLUSHALL (a part on every poller), a SCAN step and
//! RANDOMKEY (a part on one), each as Redis runs them, at one instant of
//! the store. Without
//! it, a poller's part would look at the store at its own moment: KEYS
//! could list one key of a transaction across pollers and not the other
//! (or, across pollers, a later write but not an earlier one), and a
//! part could count a key a transaction across pollers wrote before that
//! transaction's outcome (it may yet be undone).
//!
//! The census's first poller takes the server's gate alone (`gate.rs`),
//! so no transaction across pollers is between its first claim and its
//! outcome, and tells every poller of the census (`Go`). Each waits
//! until no transaction across pollers here is between its commit and
//! its end (released or undone: their outcome is known, only their last
//! steps are on the way), then stops: it holds every request that comes
//! (the steps of transactions across pollers too), and tells the first
//! (`Stopped`). A census of one poller runs its part there and then.
//! Once all have stopped, the store does not change, and what each
//! poller holds is the store at one instant: the first tells them to run
//! their parts (`Run`) and passes the gate on, and each runs its part
//! (a KEYS part takes its index entries in that turn, as it always does)
//! and goes on with the requests it held, in order.
//!
//! Only one census is between `Go` and `Run` at a time (it holds the gate
//! alone), so a poller stops for one census at most.
//!
//! A census's connection sends nothing more until every part has
//! answered (`conn.rs`'s `Barrier`), so what it sends after comes after the
//! census's instant on every poller.

use super::*;
use crate::server::gate::{Holder, HolderKind, Mode};
use crate::server::msg::{Census, CensusStep};

/// A census: its connection and its reply's id.
type CensusId = (ConnRef, u64);

/// Where this poller's part of a census stands.
enum Part {
    /// The part came; `Go` has not.
    Waiting(Request),
    /// `Go` came before the part.
    Told,
    /// Both came: waiting for the transactions across pollers here to
    /// end.
    Ending(Request),
    /// Stopped, waiting for `Run`.
    Stopped(Request),
}

/// The censuses this poller takes part in.
#[derive(Default)]
pub(super) struct Censuses {
    parts: HashMap<CensusId, Part>,
    /// On a census's first poller: the pollers still to stop.
    stopping: HashMap<CensusId, usize>,
    /// Stopped for a census: the requests that came since, in order.
    held: Option<VecDeque<Request>>,
}

impl<E: Engine> Poller<E> {
    /// Whether this poller is stopped for a census: the request is held
    /// (and `None` returned) if so.
    pub(super) fn census_holds(&mut self, req: Request) -> Option<Request> {
        match &mut self.census.held {
            Some(held) => {
                held.push_back(req);
                None
            }
            None => Some(req),
        }
    }

    /// A part came from its connection: the first poller takes the gate
    /// for the census.
    pub(super) fn census_arrived(&mut self, req: Request) {
        let cid = (req.from, req.id);
        let first = census_of(&req).pollers[0];
        match self.census.parts.remove(&cid) {
            Some(Part::Told) => self.census_end_wait(cid, req),
            None => {
                self.census.parts.insert(cid, Part::Waiting(req));
                if first == self.id {
                    let who = Holder {
                        poller: self.id,
                        id: cid,
                        kind: HolderKind::Census,
                    };
                    if self.shared.gate.take(Mode::Alone, who) {
                        self.census_go(cid);
                    }
                }
            }
            Some(_) => unreachable!("a census's part came twice"),
        }
    }

    /// The census holds the gate: every poller of it is told.
    fn census_go(&mut self, cid: CensusId) {
        let Some(Part::Waiting(req)) = self.census.parts.get(&cid) else {
            unreachable!("the first part of a census holds the gate")
        };
        let pollers = census_of(req).pollers.clone();
        self.census.stopping.insert(cid, pollers.len());
        for p in pollers {
            self.census_send(p, cid, CensusStep::Go);
        }
    }

    /// A step from another poller of the census (or from this one).
    pub(super) fn census_step(&mut self, req: Request) {
        let Op::CensusStep(step) = req.op else {
            unreachable!()
        };
        let cid = (req.from, req.id);
        match step {
            CensusStep::Gate => self.census_go(cid),
            CensusStep::Go => match self.census.parts.remove(&cid) {
                Some(Part::Waiting(req)) => self.census_end_wait(cid, req),
                None => {
                    self.census.parts.insert(cid, Part::Told);
                }
                Some(_) => unreachable!("Go came twice"),
            },
            CensusStep::Stopped => {
                let left = self.census.stopping.get_mut(&cid).expect("a census");
                *left -= 1;
                if *left > 0 {
                    return;
                }
                self.census.stopping.remove(&cid);
                let Some(Part::Stopped(req)) = self.census.parts.get(&cid) else {
                    unreachable!("the first poller stopped")
                };
                for p in census_of(req).pollers.clone() {
                    self.census_send(p, cid, CensusStep::Run);
                }
                self.gate_pass(Mode::Alone);
            }
            CensusStep::Run => {
                let Some(Part::Stopped(req)) = self.census.parts.remove(&cid) else {
                    unreachable!("Run before Stopped")
                };
                let held = self.census.held.take().expect("stopped");
                self.census_run(req);
                for r in held {
                    self.handle(r);
                }
            }
        }
    }

    /// Both the part and `Go` are here: the part waits for the
    /// transactions across pollers here to end (see `census_pump`).
    fn census_end_wait(&mut self, cid: CensusId, req: Request) {
        self.census.parts.insert(cid, Part::Ending(req));
        self.census_pump();
    }

    /// A part waiting for the transactions across pollers here to end
    /// stops once none is between its commit and its end (a census of
    /// one poller runs instead). Called every turn; whether it did.
    pub(super) fn census_pump(&mut self) -> bool {
        let Some((&cid, _)) =
            (self.census.parts.iter()).find(|(_, p)| matches!(p, Part::Ending(_)))
        else {
            return false;
        };
        if self.cross_unended() {
            return false;
        }
        let Some(Part::Ending(req)) = self.census.parts.remove(&cid) else {
            unreachable!()
        };
        let pollers = &census_of(&req).pollers;
        if pollers.len() == 1 {
            self.census.stopping.remove(&cid);
            self.census_run(req);
            self.gate_pass(Mode::Alone);
            return true;
        }
        let first = pollers[0];
        self.census.held = Some(VecDeque::new());
        self.census.parts.insert(cid, Part::Stopped(req));
        self.census_send(first, cid, CensusStep::Stopped);
        true
    }

    /// Runs the census's part here: what it asks of the store now (a
    /// flush goes before the requests held meanwhile, which wait behind
    /// it).
    fn census_run(&mut self, mut req: Request) {
        let Op::Census(census) = std::mem::replace(&mut req.op, Op::Unwatch) else {
            unreachable!("a census")
        };
        req.op = census.op;
        // An earlier census's flush still waits here for the writes before
        // it (its commit, say): the part runs behind it, where the requests
        // held meanwhile go too, as every other poller's part ran after its
        // own flush. Run here and now, it would count or list the keys the
        // flush empties here while the other pollers have flushed.
        if !matches!(req.op, Op::Flush) && !self.flush_hold.is_empty() {
            self.flush_hold.push_back((self.cross_arriving(), req));
            return;
        }
        match req.op {
            Op::DbSize => {
                let keys = self.ks.live_keys();
                self.reply(&req, Reply::Int(keys as i64));
            }
            Op::Flush => self.handle(req),
            _ => self.start_scan(req),
        }
    }

    /// Sends `step` of census `cid` to poller `p` (this one included),
    /// in order with the steps of transactions across pollers.
    pub(super) fn census_send(&mut self, p: usize, cid: CensusId, step: CensusStep) {
        let req = cross::step_request(cid, Op::CensusStep(step));
        self.cross_send_request(p, req);
    }
}

fn census_of(req: &Request) -> &Census {
    match &req.op {
        Op::Census(c) => c,
        _ => unreachable!("a census's part"),
    }
}
