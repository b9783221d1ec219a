//! A transaction across pollers: an EXEC (or an MSET, MSETNX, RENAME,
//! RENAMENX, COPY, an MGET) whose keys are on several pollers comes as
//! one part per poller (`Op::Exec` with `cross`), each part the requests
//! for its poller's keys. The parts hold
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
//! writer can take them, and the compaction reserve stays), and as many
//! again for an undo, and keeps every key it writes as it was (`Before`:
//! absent, or its value and expiry, read from the segment buffer or the
//! device, or a large value's head with its pieces pinned). Then it
//! tells the last poller (`Prepared`), or, with no room (or its pieces
//! refused or failed, or a read of a key's value failed), drops its view
//! and tells it so (`Refused`). Once all have told: all prepared, every
//! part commits into the segments it holds (`Commit`; what is left goes
//! back) and keeps its keys held and its reply until its commit is
//! durable (its waiter's acknowledgement, `cross` set), then tells the
//! last poller whether it is (`Done`) or failed (`Failed`: the commit's
//! device write or flush failed, so `fail_commit` rolled it back, or its
//! appends stopped partway on an index error, and what it wrote is
//! durable). Once all have told: all durable, every part hands its
//! writes to the replication stream, answers its replies and lets its
//! keys go (`Release`); one failed, every part whose writes are durable
//! writes its keys' previous states back (a record of the old value, a
//! head sharing the old pieces, or a tombstone where the key was absent)
//! into the room kept for it, and once that is durable answers an empty
//! part and lets its keys go (`Undo`): the failed part's error is EXEC's
//! reply, and the store holds what it held before the EXEC. An undo
//! whose own commit fails (the device is failing) is logged at error
//! level: the writes it did not undo stay. One refused, every part drops
//! what it ran, gives its segments back and lets its keys go (`Drop`):
//! the refused part's error is EXEC's reply (the others answer an empty
//! part). Either way nothing of the transaction is in the replication
//! stream, and no client sees one part's writes without the others'
//! (their keys are held until the outcome). Pollers send the steps to
//! each other's rings directly.
//!
//! A part of a command of one request per poller (MSETNX, a move) run
//! alone may refuse the whole by what it finds (`Txn::veto`: a key there,
//! a source missing), as a part refused for room, with the command's
//! reply. A move's destination part runs only once the source's part has
//! read the value and sent it (`Cross::carry`, `Op::Carry`): the source's
//! part never waits for the destination's. So does an EXEC's with RENAMEs
//! and COPYs across pollers, all from one to one other, with all its
//! commands, once a value has come for each (the source's part runs all
//! of its own, sending them in order); there a missing source is the
//! command's reply, not a veto.
//!
//! Inside an EXEC, MSETNX, RENAMENX, and moves both ways or between
//! several pairs of pollers (`Cross::mail`) answer each command, not the
//! EXEC: every part runs once all hold their keys (`Go` to all), and a
//! command that needs something of another part waits for it inside the
//! running transaction (`Txn::awaits`), as a command waits for a device
//! read: a message between the parts (`Op::Mail`, by the EXEC and the
//! command's request id, which a move's two halves and MSETNX's parts
//! share; `cross_mail`), kept until asked for (`Crossing::mail`). A
//! move's source sends its value (`Mail::Value`; `None` when missing: the
//! command's reply is its `ERR no such key`, or COPY's `:0`, and the
//! destination writes nothing); the destination waits for it before it
//! looks its key up. RENAMENX's source then waits for the destination's
//! verdict (`Mail::Verdict`: the key was free and is written) and only
//! then deletes itself; RENAME's deletes itself at once, COPY's stays.
//! Each part of an MSETNX (its request names the others' pollers) sends
//! the others whether none of its keys is there, waits for theirs, and
//! writes all of its keys or none (`:0`). What a part owes the others for
//! a command (`Txn::owed`) goes as the command runs, before the part
//! waits there; a command answered without it (an error, a failed read)
//! sends the default (no value, a refusal). Every part runs the EXEC's
//! commands in its order, so no part waits for a later command of
//! another: the parts of one EXEC never wait for each other in a circle.
//! Two such EXECs could, through the one transaction each poller runs at
//! a time (parts that wait for nothing but a held destination's, which
//! waits outside it, cannot), each part running first on one poller and
//! second on another, when their last pollers (which tell the parts to
//! run, `Go`, in the order they hold their keys) differ: with more than
//! two pollers they pass the gate alone (`Cross::gated`); with two, every
//! such EXEC's last poller is the same, and every poller runs them in the
//! order it told them.
//! A command of the
//! whole key space in the same EXEC (which holds every other request on
//! each poller while its part runs) is not built with them: EXEC answers
//! CROSSSLOT (`command::exec`).
//!
//! Every such transaction (not a group: MGET only reads) passes the
//! server's gate (`gate.rs`): the first part takes it before it claims its
//! keys (or waits for it, `Gated`, until `Gate`), and the last poller
//! passes it on once every part's commit is durable or failed (or at an
//! abort, a `Drop` included). Transactions pass it together; a census of
//! the key space (KEYS, DBSIZE, FLUSHDB, SCAN, RANDOMKEY: `census.rs`), which holds
//! no keys, passes it alone, so it never sees a transaction between its
//! claims and its outcome. While replicas are fed (`Cross::gated`) the
//! transactions pass it alone too, one at a time, so every poller
//! commits their parts in one order; at `Release` each part goes into its outbox tagged with
//! the transaction, to be joined with the others into one `MULTI … EXEC`
//! of the stream (`repl/outbox.rs`), if the last poller found the stream
//! on as it sent `Release` (it decides for every part: a replica's first
//! feed may begin between two parts' releases). At `Undo` none does, nor do the
//! undo's writes.

use super::*;
use crate::server::gate::{Holder, HolderKind, Mode};
use crate::server::msg::{CensusStep, Cross, CrossStep, Mail, Moved};

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
    /// Ran its commands, holding the room its writes need: reads the
    /// values its writes replace from the device.
    Reading(Box<Prepared>),
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
    /// Committed: waits for its commit to be durable.
    Committing(Box<Ran>),
    /// Committed, durable or failed (or, in a group, run): its keys stay
    /// held until every part is, for `Release` or `Undo`.
    Ran(Box<Ran>),
    /// Writing its keys' previous states back: waits for them to be
    /// durable.
    Undoing(Box<Ran>),
}

/// A part prepared: its transaction, as it ran, the heads of its large
/// values (their pieces durable), the room it holds, and for an undo its
/// keys as they were and the room their records need.
pub(super) struct Prepared {
    t: Txn,
    heads: HashMap<u64, LargeHead>,
    room: Option<keyspace::Room>,
    before: Vec<Before>,
    undo_room: Option<keyspace::Room>,
    /// Reads of `before`'s values still to complete, and the error of one
    /// that failed (the part is refused).
    reading: usize,
    failed: Option<Reply>,
}

/// A key a part writes, as it was before: what an undo writes back.
pub(super) struct Before {
    pid: u32,
    hash: KeyHash,
    key: Box<[u8]>,
    was: Was,
    /// The key's own index entry as the part's commit left it (its
    /// offset then, followed through compaction; `None`: the commit
    /// wrote no record of it): what an undo writes over. Short tags are
    /// shared by keys, so the tag's first entry need not be the key's.
    after: Option<u64>,
}

/// A key's state before a part wrote it.
enum Was {
    /// Absent (or expired).
    Absent,
    /// A value and its expiry.
    Value(Vec<u8>, u64, Enc),
    /// A large value's head, its pieces pinned, and its expiry.
    Large(Arc<LargeHead>, u64),
    /// Its record, at this entry, is being read from the device.
    Reading(Entry),
}

impl Before {
    /// What the record an undo writes for it takes (at most).
    fn room(&self) -> u64 {
        let value_len = match &self.was {
            Was::Absent => 0,
            Was::Value(v, ..) => v.len(),
            Was::Large(head, _) => head.encode().len(),
            Was::Reading(e) => return e.len as u64,
        };
        record_len(self.key.len(), value_len)
    }
}

/// A part committed, or a group run.
pub(super) struct Ran {
    exec: Request,
    claimed: Vec<u64>,
    before: Vec<Before>,
    undo_room: Option<keyspace::Room>,
    /// Its reply, sent when its keys go (`None`: a group, answered).
    reply: Option<Reply>,
    /// Its writes are durable: an undo writes `before` back.
    durable: bool,
    /// Its writes for the replication stream, and its last record.
    stream: Vec<u8>,
    seq: u64,
}

/// On the last poller of a transaction: the parts still to commit, the
/// pollers to release (or undo) once none is left, whether it holds the
/// gate, and whether a part's commit failed.
struct Left {
    parts: usize,
    pollers: Vec<usize>,
    /// How it passes the gate (none for a group).
    gate: Option<Mode>,
    failed: bool,
    /// A move's source part (its poller), which commits only once every
    /// other part is durable: a crash between the two commits then keeps
    /// the value under both names, never under neither. Taken when the
    /// source is told to commit (or to drop what it ran).
    source: Option<usize>,
}

/// The parts of EXECs across pollers this poller takes part in.
#[derive(Default)]
pub(super) struct Crossing {
    parts: HashMap<CrossId, CrossPart>,
    /// On the last poller of each: the parts still to commit.
    left: HashMap<CrossId, Left>,
    /// On the last poller of each (but groups): the parts still to
    /// prepare, and whether one was refused.
    preparing: HashMap<CrossId, (usize, bool)>,
    /// Steps for other pollers whose rings were full, oldest first.
    out: VecDeque<(usize, Request)>,
    /// Destination parts of moves across pollers (without `Cross::mail`):
    /// the values come so far (the source's part sends one per move, in
    /// order).
    carried: HashMap<CrossId, usize>,
    /// What other parts of EXECs sent this poller's parts (`Op::Mail`),
    /// by EXEC and command, kept until the command asks for it; gone
    /// when the part ends.
    mail: HashMap<CrossId, HashMap<u64, VecDeque<Mail>>>,
    /// Reads of keys' values for an undo, by read slot (the part, its
    /// key's place in `before`, the entry, where the read starts), and
    /// those waiting for a slot.
    reads: HashMap<u32, (CrossId, usize, Entry, u64)>,
    unread: Vec<(CrossId, usize)>,
    /// Parts committing: their keys as they were, and the room for an
    /// undo, until their commit is in.
    undo: HashMap<CrossId, (Vec<Before>, Option<keyspace::Room>)>,
    /// While replicas are fed, the last records of the parts committed
    /// whose outcome is not known (a full copy that read them waits for
    /// it, `Repl::set_undecided`).
    undecided: HashMap<CrossId, u64>,
    /// Parts here not holding their keys yet (`Dormant`, `Gated`),
    /// oldest first, and the requests of their connections that came
    /// after them, waiting in order ([`Poller::arrived`]).
    reserved: Vec<Reserved>,
    waiting: HashMap<super::ConnRef, VecDeque<(u64, Request)>>,
    /// Requests counted as they come (`Poller::handle`), and the number of
    /// the one being served.
    arrivals: u64,
    arriving: u64,
}

/// A part not holding its keys yet (`xid`: its connection and its id):
/// its connection's later requests wait.
struct Reserved {
    xid: CrossId,
    /// When the part came (`Crossing::arrivals`).
    came: u64,
}

impl Crossing {
    /// Whether this poller has a part of transaction `xid` not ended.
    pub(super) fn has_part(&self, xid: CrossId) -> bool {
        self.parts.contains_key(&xid)
    }
}

/// The part's place among the pollers of its EXEC.
fn cross_of(req: &Request) -> &Cross {
    match &req.op {
        Op::Exec { cross: Some(x), .. } => x,
        _ => unreachable!("a part of an EXEC across pollers"),
    }
}

/// The state of the key whose record is `bytes` (checked against `uuid`
/// and `key`), at `now_ms`; an error reply when the record is damaged.
fn was_of(uuid: &[u8; 16], key: &[u8], bytes: &[u8], now_ms: u64) -> Result<Was, String> {
    let rec = match decode_record(uuid, bytes) {
        Ok(rec) if rec.key == key => rec,
        Ok(_) => return Err("ERR corrupted record: key does not match the index".into()),
        Err(e) => return Err(format!("ERR corrupted record: {e}")),
    };
    if rec.is_tombstone() || rec.expired(now_ms) {
        return Ok(Was::Absent);
    }
    if rec.is_large() {
        // Its head is in the large value map while the index points at it.
        return Err("ERR a large value's head not found".into());
    }
    Ok(Was::Value(
        rec.value.to_vec(),
        rec.meta.expire_ms,
        rec.enc(),
    ))
}

/// How a transaction across pollers passes the gate: alone while
/// replicas are fed, else shared; a group (reads only) not at all.
fn gate_mode(x: &Cross) -> Option<Mode> {
    match (x.group, x.gated) {
        (true, _) => None,
        (false, true) => Some(Mode::Alone),
        (false, false) => Some(Mode::Shared),
    }
}

/// A step between pollers (`op`) of the transaction or census `id`.
pub(super) fn step_request(id: (ConnRef, u64), op: Op) -> Request {
    Request {
        tried: Vec::new(),
        from: id.0,
        id: id.1,
        part: 0,
        hash: KeyHash { lo: 0, tag: 0 },
        pid: 0,
        op,
        touch: false,
    }
}

/// Whether `req` is a part of an EXEC across pollers.
pub(super) fn is_cross(req: &Request) -> bool {
    matches!(req.op, Op::Exec { cross: Some(_), .. })
}

/// The `Cross` of `req`, a part of a command of several keys run across
/// pollers (MSET, MSETNX, a move; not MGET, which runs as groups), if it
/// is one.
pub(super) fn single_of(req: &Request) -> Option<&Cross> {
    match &req.op {
        Op::Exec { cross: Some(x), .. } if x.single && !x.group => Some(x),
        _ => None,
    }
}

/// Whether `req` is a part of an EXEC across pollers whose parts send
/// each other what their commands need (`Cross::mail`).
pub(super) fn mails(req: &Request) -> bool {
    matches!(&req.op, Op::Exec { cross: Some(x), .. } if x.mail)
}

/// The poller of the destination's part, when `t` is the source's part
/// of a move across pollers (alone, or inside an EXEC without
/// `Cross::mail`) that has not sent the value yet.
pub(super) fn carries_to(t: &Txn) -> Option<usize> {
    let Op::Exec { cross: Some(x), .. } = &t.exec.op else {
        return None;
    };
    let (from, to) = x.carry?;
    (t.exec.part == from && t.to_carry > 0).then(|| x.pollers[to as usize])
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
            None if req.part == 0 && gate_mode(cross_of(&req)).is_some() => {
                self.reserve(&req);
                let mode = gate_mode(cross_of(&req)).expect("not a group");
                let who = Holder {
                    poller: self.id,
                    id: xid,
                    kind: HolderKind::Txn,
                };
                match self.shared.gate.take(mode, who) {
                    true => self.cross_claim(req, watches),
                    false => {
                        let gated = CrossPart::Gated { req, watches };
                        self.cross.parts.insert(xid, gated);
                    }
                }
            }
            None if req.part == 0 => self.cross_claim(req, watches),
            None => {
                self.reserve(&req);
                let dormant = CrossPart::Dormant { req, watches };
                self.cross.parts.insert(xid, dormant);
            }
            Some(_) => unreachable!("a part came twice"),
        }
    }

    fn cross_claim(&mut self, mut req: Request, watches: Option<Vec<Watched>>) {
        let xid = (req.from, req.id);
        if let Op::Exec { watch_tags, .. } = &mut req.op {
            *watch_tags = watch_tags_of(watches.as_ref());
        }
        (self.cross.parts).insert(xid, CrossPart::Claiming { watches });
        self.exec_when_free(req);
        self.unreserve(xid);
    }

    /// Part `req` waits before claiming its keys: the requests of its
    /// connection that come after it wait for the claim (in
    /// [`Poller::arrived`]), as they would behind a part holding its keys
    /// (a GET pipelined after an MSET across pollers reads the MSET's
    /// value, a SET after an MGET is not what the MGET read).
    fn reserve(&mut self, req: &Request) {
        self.cross.reserved.push(Reserved {
            xid: (req.from, req.id),
            came: self.cross.arriving,
        });
    }

    /// A request that came: numbered, then kept (`None`) while its
    /// connection has a part here that came before it and does not hold
    /// its keys yet, or requests waiting for one; else handed back.
    pub(super) fn arrived(&mut self, req: Request) -> Option<Request> {
        self.cross.arrivals += 1;
        self.cross.arriving = self.cross.arrivals;
        if self.cross.reserved.is_empty() && self.cross.waiting.is_empty() {
            // Nothing waits here: the way of almost every request.
            return Some(req);
        }
        let came = self.cross.arrivals;
        self.wait_or_go(came, req)
    }

    /// Request `req`, number `came`, is kept (`None`) if its connection
    /// has requests waiting here (whatever it is: an UNWATCH must not
    /// overtake the WATCH it undoes), or, when it has keys, a part here
    /// that came before it and does not hold its keys yet; else handed
    /// back. The steps between pollers go on. (A command of the whole key
    /// space finds nothing of its connection waiting: it is sent once
    /// every reply before its own is in, `conn.rs`'s `Barrier`.)
    pub(super) fn wait_or_go(&mut self, came: u64, req: Request) -> Option<Request> {
        if self.cross.reserved.is_empty() && self.cross.waiting.is_empty() {
            return Some(req);
        }
        let keyed = match &req.op {
            Op::Exec { .. } | Op::Group { .. } | Op::MsetNx { .. } | Op::Move { .. } => true,
            Op::Cross(_) | Op::Carry(_) | Op::Mail { .. } | Op::Fence { .. } => return Some(req),
            op => op.key().is_some(),
        };
        let from = req.from;
        let waits = self.cross.waiting.contains_key(&from)
            || keyed && (self.cross.reserved.iter()).any(|r| r.xid.0 == from && r.came < came);
        if !waits {
            return Some(req);
        }
        // In number order: one replayed behind a flush may be older than
        // those already waiting.
        let q = self.cross.waiting.entry(from).or_default();
        q.insert(q.partition_point(|(c, _)| *c < came), (came, req));
        None
    }

    /// The number of the request being served (`Poller::arrived`).
    pub(super) fn cross_arriving(&self) -> u64 {
        self.cross.arriving
    }

    /// Serves `req`, number `came`, held meanwhile (behind a flush), with
    /// `then` unless it must wait for a part of its connection
    /// (`wait_or_go`).
    pub(super) fn cross_replay(&mut self, came: u64, req: Request, then: fn(&mut Self, Request)) {
        let arriving = std::mem::replace(&mut self.cross.arriving, came);
        if let Some(req) = self.wait_or_go(came, req) {
            then(self, req);
        }
        self.cross.arriving = arriving;
    }

    /// Part `xid` claimed its keys (or was aborted before): the requests
    /// of its connection that waited for it go on, in order, behind its
    /// claim, up to one that came after another part not holding its keys.
    fn unreserve(&mut self, xid: CrossId) {
        let Some(i) = self.cross.reserved.iter().position(|r| r.xid == xid) else {
            return;
        };
        let from = self.cross.reserved.remove(i).xid.0;
        let arriving = self.cross.arriving;
        while let Some(q) = self.cross.waiting.get_mut(&from) {
            let Some(&(came, _)) = q.front() else {
                self.cross.waiting.remove(&from);
                break;
            };
            let reserved = &self.cross.reserved;
            if reserved.iter().any(|r| r.xid.0 == from && r.came < came) {
                break;
            }
            let (came, req) = q.pop_front().expect("a request");
            if q.is_empty() {
                self.cross.waiting.remove(&from);
            }
            self.cross.arriving = came;
            self.handle_arrived(req);
        }
        self.cross.arriving = arriving;
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
        let (pollers, at, gate) = (x.pollers.clone(), req.part as usize, gate_mode(x));
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
            if let Some(mode) = gate {
                self.gate_pass(mode);
            }
            return;
        }
        if at + 1 < pollers.len() {
            self.cross.parts.insert(xid, CrossPart::Held(req));
            return self.cross_send(pollers[at + 1], xid, CrossStep::Claim);
        }
        // A move's destination part runs once the source's has sent it
        // the values (`cross_carried`); with `mail`, every part runs, its
        // commands waiting for what the others send them.
        let waits = x.carry.filter(|_| !x.mail).map(|(_, to)| to as usize);
        for (i, &p) in pollers[..at].iter().enumerate() {
            if Some(i) != waits {
                self.cross_send(p, xid, CrossStep::Go);
            }
        }
        if !x.group {
            self.cross.preparing.insert(xid, (pollers.len(), false));
        }
        let left = Left {
            parts: pollers.len(),
            source: x.carry.map(|(from, _)| pollers[from as usize]),
            pollers,
            gate,
            failed: false,
        };
        self.cross.left.insert(xid, left);
        if waits == Some(at) {
            self.cross.parts.insert(xid, CrossPart::Held(req));
            return;
        }
        self.cross_run(req);
    }

    /// The source's part of move `xid` read its value (`value`; `None`:
    /// none to move): it goes to the destination's part, poller `p`.
    pub(super) fn cross_carry(&mut self, p: usize, xid: CrossId, value: Option<Moved>) {
        let req = Request {
            tried: Vec::new(),
            from: xid.0,
            id: xid.1,
            part: 0,
            hash: KeyHash { lo: 0, tag: 0 },
            pid: 0,
            op: Op::Carry(value),
            touch: false,
        };
        self.cross.out.push_back((p, req));
        self.cross_flush();
    }

    /// The destination's part of a move across pollers, holding its key,
    /// gets the source's value: once it has one for each of its moves
    /// (an EXEC's, in their order), it runs, writing them.
    pub(super) fn cross_carried(&mut self, req: Request) {
        let Op::Carry(value) = req.op else {
            unreachable!()
        };
        let xid = (req.from, req.id);
        let Some(CrossPart::Held(mut part)) = self.cross.parts.remove(&xid) else {
            unreachable!("a move's destination part holding its key")
        };
        let came = self.cross.carried.remove(&xid).unwrap_or(0);
        let Op::Exec { reqs, .. } = &mut part.op else {
            unreachable!()
        };
        let mut moves = reqs.iter_mut().filter_map(|r| match &mut r.op {
            Op::MoveIn { value, .. } => Some(value),
            _ => None,
        });
        if let Some(v) = moves.nth(came) {
            *v = value;
        }
        if moves.next().is_some() {
            self.cross.carried.insert(xid, came + 1);
            self.cross.parts.insert(xid, CrossPart::Held(part));
            return;
        }
        self.cross_run(part);
    }

    /// What part `r` of an EXEC across pollers (a request of this
    /// poller's part) owes other parts, sent as it runs: a move's source
    /// its value, RENAMENX's destination its verdict, each part of an
    /// MSETNX its own; with the pollers it goes to, and what goes when
    /// the command is answered without it (no value, a refusal).
    pub(super) fn owes(&self, r: &Request) -> Option<(u64, Vec<usize>, Mail)> {
        match &r.op {
            Op::Move { to, .. } => {
                let into = self.shared.poller_of(to.pid);
                (into != self.id).then(|| (r.id, vec![into], Mail::Value(None)))
            }
            Op::MoveIn {
                kind: MoveKind::RenameNx,
                source,
                ..
            } => Some((r.id, vec![*source], Mail::Verdict(false))),
            Op::MsetNx { others, .. } if !others.is_empty() => {
                Some((r.id, others.clone(), Mail::Verdict(false)))
            }
            _ => None,
        }
    }

    /// The running transaction's command `id` sends the other parts what
    /// it owes them (`mail`; `None`: what goes when it was answered
    /// without it), if it owes them still.
    pub(super) fn settle(&mut self, id: u64, mail: Option<Mail>) {
        let Some(t) = self.txn.as_mut() else {
            return;
        };
        let Some(at) = t.owed.iter().position(|o| o.0 == id) else {
            return;
        };
        let (sub, pollers, default) = t.owed.swap_remove(at);
        let xid = (t.exec.from, t.exec.id);
        let mail = mail.unwrap_or(default);
        for p in pollers {
            let op = Op::Mail {
                sub,
                mail: mail.clone(),
            };
            self.cross_send_request(p, step_request(xid, op));
        }
    }

    /// The running transaction's command `id` owes nothing any more (a
    /// RENAMENX's destination given no value: its source waits for no
    /// verdict).
    pub(super) fn forgive(&mut self, id: u64) {
        if let Some(t) = self.txn.as_mut() {
            t.owed.retain(|o| o.0 != id);
        }
    }

    /// Whether `sub`, about to run in the running transaction, is a
    /// move's destination in an EXEC across pollers whose value has not
    /// come yet into it: it waits for it before it looks its key up.
    pub(super) fn awaits_value(&self, sub: &Request) -> bool {
        let Some(t) = self.txn.as_ref() else {
            return false;
        };
        matches!(sub.op, Op::MoveIn { .. }) && mails(&t.exec) && !t.delivered.contains(&sub.id)
    }

    /// Command `req` of the running transaction waits for what other
    /// parts send it (`own`: a RENAMENX's source's entry); it goes on at
    /// once if that came already.
    pub(super) fn await_mail(&mut self, req: Request, own: Option<Option<u64>>) {
        let t = self.txn.as_mut().expect("a transaction runs");
        debug_assert!(t.awaits.is_none(), "one command waits at a time");
        t.awaits = Some((req, own));
        self.resume_awaiting();
    }

    /// A message from another part of an EXEC across pollers: kept for
    /// its command, which goes on if it waits for it.
    pub(super) fn cross_mail(&mut self, req: Request) {
        let Op::Mail { sub, mail } = req.op else {
            unreachable!()
        };
        let xid = (req.from, req.id);
        let mailbox = self.cross.mail.entry(xid).or_default();
        mailbox.entry(sub).or_default().push_back(mail);
        self.resume_awaiting();
        self.ks.clear_new();
    }

    /// The running transaction's command waiting for other parts goes on
    /// once everything it waits for has come: a move's destination runs
    /// with the value; RENAMENX's source deletes itself if the
    /// destination was written; MSETNX's part writes its keys if no part
    /// found one of its keys there (else answers `:0`).
    fn resume_awaiting(&mut self) {
        let Some(t) = self.txn.as_ref() else {
            return;
        };
        let Some((req, _)) = &t.awaits else {
            return;
        };
        let xid = (t.exec.from, t.exec.id);
        let sub = req.id;
        let need = match &req.op {
            Op::MsetNx { others, .. } => others.len(),
            _ => 1,
        };
        let Some(mailbox) = self.cross.mail.get_mut(&xid) else {
            return;
        };
        if mailbox.get(&sub).map_or(0, VecDeque::len) < need {
            return;
        }
        let mails = mailbox.remove(&sub).unwrap_or_default();
        if mailbox.is_empty() {
            self.cross.mail.remove(&xid);
        }
        let t = self.txn.as_mut().expect("a transaction runs");
        let (mut req, own) = t.awaits.take().expect("a command waits");
        let yes = |m: &Mail| matches!(m, Mail::Verdict(true));
        match &mut req.op {
            Op::MoveIn { value, .. } => {
                if let Some(Mail::Value(v)) = mails.into_iter().next() {
                    *value = v;
                }
                t.delivered.push(sub);
                self.handle_now(req);
            }
            Op::Move { key, .. } => {
                let key = key.clone();
                let at = own.map(|o| o.and_then(|at| self.ks.unfollow(req.pid, at)));
                let ok = simple(crate::server::strings::OK);
                if !mails.front().is_some_and(yes) {
                    // Not written there: the source stays.
                    return self.reply(&req, ok);
                }
                if let Some(at) = at {
                    self.ks.act_on(req.pid, &req.hash, at);
                }
                let written = self.write(&req, req.pid, &req.hash, &key, &[], 0, true);
                self.acknowledge_now(req, written, ok);
            }
            Op::MsetNx { .. } => match mails.iter().all(yes) {
                true => self.msetnx_write(req),
                false => self.reply(&req, Reply::Int(0)),
            },
            op => unreachable!("no command waits for mail: {op:?}"),
        }
    }

    /// Every part holds its keys: this one runs, as a transaction (once
    /// the one running here is done), or as a group (at once).
    fn cross_run(&mut self, mut req: Request) {
        if !cross_of(&req).group {
            return self.txns_waiting.push_back(req);
        }
        let mut claimed = claim_tags(&req.op);
        let Op::Exec { reqs, .. } = &mut req.op else {
            unreachable!()
        };
        // A key whose read holds it is released by that read: the part
        // lets the others go when every part is done.
        let held = self.run_held(std::mem::take(reqs));
        claimed.retain(|t| !held.contains(t));
        self.cross_ran(req, claimed);
    }

    /// The part ran its commands (its large values' pieces durable): it
    /// takes the room its writes need, and as much for an undo, out of
    /// the free list, so that no other writer can take it before it
    /// commits, keeps the keys it writes as they are (reading values from
    /// the device), and tells the last poller; with no room, or a read
    /// failed, it is refused (nothing of it written).
    pub(super) fn cross_prepare(&mut self, t: Txn, heads: HashMap<u64, LargeHead>) {
        let xid = (t.exec.from, t.exec.id);
        let mut p = Prepared {
            t,
            heads,
            room: None,
            before: Vec::new(),
            undo_room: None,
            reading: 0,
            failed: None,
        };
        // A part of one command that only deletes (DEL, UNLINK, a
        // rename's source, which commits last: `Left::source`) keeps no
        // undo: neither reads of the values it deletes nor room to write
        // them back, so a DEL across pollers costs no more than its
        // tombstones. Should another part's commit fail, its deletions
        // stay (the command answers that part's error).
        let deletes_only = single_of(&p.t.exec).is_some()
            && (p.t.view.values()).all(|s| s.now.is_none() && s.large.is_none());
        if !p.t.view.is_empty() {
            if !deletes_only {
                p.before = self.befores(&p.t, &mut p.failed);
            }
            let (bytes, shards) = self.txn_room(&p.t, &p.heads);
            let undo_bytes = p.before.iter().map(Before::room).sum();
            p.room = self.ks.hold_room(bytes, shards);
            if !deletes_only {
                p.undo_room = (p.room.as_ref()).and_then(|_| self.ks.hold_room(undo_bytes, shards));
            }
            if p.room.is_none() || (!deletes_only && p.undo_room.is_none()) {
                self.stats().writes_refused.fetch_add(1, Relaxed);
                let full = Reply::Error(crate::server::strings::STORE_FULL.into());
                p.failed.get_or_insert(full);
            }
        }
        if p.failed.is_none() {
            for (i, b) in p.before.iter().enumerate() {
                if matches!(b.was, Was::Reading(_)) {
                    p.reading += 1;
                    self.cross.unread.push((xid, i));
                }
            }
        }
        if p.reading == 0 {
            return self.cross_ready(xid, p);
        }
        self.cross
            .parts
            .insert(xid, CrossPart::Reading(Box::new(p)));
        self.retry_before_reads();
    }

    /// The keys transaction `t` writes, as they are in the store: a read
    /// of a value from the device is left to do (`Was::Reading`). A
    /// record found damaged sets `failed`.
    fn befores(&mut self, t: &Txn, failed: &mut Option<Reply>) -> Vec<Before> {
        let mut out = Vec::with_capacity(t.order.len());
        for tag in &t.order {
            let s = &t.view[tag];
            let was = match self.ks.own_live(s.pid, &s.hash, s.own) {
                None => Was::Absent,
                Some(e) => {
                    let head = (self.ks.large_head(e.offset))
                        .and_then(|h| self.ks.pin_pieces(e.offset, h.value_id));
                    match (head, self.ks.buffered(e)) {
                        (Some(head), _) => Was::Large(head, e.expire_ms),
                        (None, Some(bytes)) => {
                            let uuid = &self.shared.sb.uuid;
                            match was_of(uuid, &s.key, bytes, self.ks.now_ms()) {
                                Ok(was) => was,
                                Err(msg) => {
                                    failed.get_or_insert(Reply::Error(msg));
                                    Was::Absent
                                }
                            }
                        }
                        (None, None) => Was::Reading(e),
                    }
                }
            };
            out.push(Before {
                pid: s.pid,
                hash: s.hash,
                key: s.key.clone(),
                was,
                after: None,
            });
        }
        out
    }

    /// Starts the reads of keys' values a prepare waits for, as read slots
    /// allow; returns whether it started any.
    pub(super) fn retry_before_reads(&mut self) -> bool {
        let mut any = false;
        while let Some(&(xid, i)) = self.cross.unread.last() {
            let Some(CrossPart::Reading(p)) = self.cross.parts.get(&xid) else {
                unreachable!("a part reading its keys")
            };
            let Was::Reading(e) = p.before[i].was else {
                unreachable!("a key to read")
            };
            match self.read_record(e) {
                Ok((slot, start)) => {
                    self.cross.unread.pop();
                    self.cross.reads.insert(slot, (xid, i, e, start));
                    any = true;
                }
                Err(NotRead::NoBuffer(err)) => {
                    self.cross.unread.pop();
                    self.ks.counters().io_errors.fetch_add(1, Relaxed);
                    let msg = format!("{}: {err}", crate::server::strings::NO_IO_BUFFER);
                    self.before_read(xid, i, Err(msg));
                    any = true;
                }
                Err(NotRead::NoSlot | NotRead::Full) => break,
            }
        }
        any
    }

    /// A read of read slot `slot` completed; whether it was one of a key's
    /// value for an undo.
    pub(super) fn complete_before_read(&mut self, slot: u32, c: &mut Completion) -> bool {
        let Some((xid, i, e, start)) = self.cross.reads.remove(&slot) else {
            return false;
        };
        self.free_tags.push(slot);
        let buf = c.buf.take().expect("a read returns its buffer");
        let bytes = match &c.result {
            Ok(n) if *n == buf.len() => {
                let at = (e.offset - start) as usize;
                Ok(&buf[at..at + e.len as usize])
            }
            Ok(n) => Err(format!(
                "ERR I/O error: short read of {n} of {} bytes at offset {start}",
                buf.len(),
            )),
            Err(err) => Err(format!("ERR I/O error reading offset {start}: {err}")),
        };
        if bytes.is_err() {
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        let Some(CrossPart::Reading(p)) = self.cross.parts.get(&xid) else {
            unreachable!("a part reading its keys")
        };
        let now_ms = self.ks.now_ms();
        let was = bytes.and_then(|b| was_of(&self.shared.sb.uuid, &p.before[i].key, b, now_ms));
        self.before_read(xid, i, was);
        true
    }

    /// The read of the value of key `i` of part `xid` is done: once all
    /// are, the part is prepared, or refused when one failed.
    fn before_read(&mut self, xid: CrossId, i: usize, was: Result<Was, String>) {
        let Some(CrossPart::Reading(p)) = self.cross.parts.get_mut(&xid) else {
            unreachable!("a part reading its keys")
        };
        match was {
            Ok(was) => p.before[i].was = was,
            Err(msg) => {
                p.failed.get_or_insert(Reply::Error(msg));
            }
        }
        p.reading -= 1;
        if p.reading > 0 {
            return;
        }
        let Some(CrossPart::Reading(p)) = self.cross.parts.remove(&xid) else {
            unreachable!()
        };
        self.cross_ready(xid, *p);
    }

    /// The part has its room and its keys as they were: it is prepared,
    /// or, something failed, refused.
    fn cross_ready(&mut self, xid: CrossId, mut p: Prepared) {
        if let Some(reply) = p.failed.take() {
            let Prepared {
                t,
                heads,
                room,
                before,
                undo_room,
                ..
            } = p;
            for head in heads.into_values() {
                self.ks.release_pieces(&head);
            }
            if let Some(room) = room {
                self.ks.give_back_room(room);
            }
            self.drop_before(before, undo_room);
            return self.end_txn(t, reply);
        }
        let last = *cross_of(&p.t.exec).pollers.last().expect("pollers");
        (self.cross.parts).insert(xid, CrossPart::Prepared(Box::new(p)));
        self.cross_send(last, xid, CrossStep::Prepared);
    }

    /// The keys as they were are no longer needed: pins and room go.
    fn drop_before(&mut self, before: Vec<Before>, undo_room: Option<keyspace::Room>) {
        for b in before {
            if let Some(at) = b.after {
                self.ks.unfollow(b.pid, at);
            }
            if let Was::Large(head, _) = b.was {
                self.ks.unpin_pieces(&head);
            }
        }
        if let Some(room) = undo_room {
            self.ks.give_back_room(room);
        }
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
        let Prepared {
            mut t,
            heads,
            room,
            before,
            undo_room,
            ..
        } = p;
        self.cross.mail.remove(&(t.exec.from, t.exec.id));
        self.drop_before(before, undo_room);
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
            // A move's source (which deletes the key, for a rename) waits
            // until the destination's write is durable.
            let left = &self.cross.left[&xid];
            let (pollers, source) = (left.pollers.clone(), left.source);
            for p in pollers.into_iter().filter(|&p| Some(p) != source) {
                self.cross_send(p, xid, CrossStep::Commit);
            }
            return;
        }
        let left = self.cross.left.remove(&xid).expect("a transaction");
        for p in left.pollers {
            self.cross_send(p, xid, CrossStep::Drop);
        }
        if let Some(mode) = left.gate {
            self.gate_pass(mode);
        }
    }

    /// A group ran: its keys stay held until every part has.
    pub(super) fn cross_ran(&mut self, exec: Request, claimed: Vec<u64>) {
        let ran = Ran {
            exec,
            claimed,
            before: Vec::new(),
            undo_room: None,
            reply: None,
            durable: false,
            stream: Vec::new(),
            seq: 0,
        };
        self.cross_done(Box::new(ran), None, false);
    }

    /// The part has committed: with `reply` (`None`: it waits for its
    /// commit to be durable, `Committing`), and its writes for the stream.
    pub(super) fn cross_committed(
        &mut self,
        exec: Request,
        claimed: Vec<u64>,
        reply: Option<Reply>,
        stream: Vec<u8>,
    ) {
        let xid = (exec.from, exec.id);
        let (before, undo_room) = self.cross.undo.remove(&xid).unwrap_or_default();
        let ran = Box::new(Ran {
            exec,
            claimed,
            before,
            undo_room,
            reply: None,
            durable: false,
            stream,
            seq: self.ks.next_seq().saturating_sub(1),
        });
        match reply {
            None => {
                if self.shared.repl.feeding() {
                    self.cross.undecided.insert(xid, ran.seq);
                    self.publish_undecided();
                }
                self.cross.parts.insert(xid, CrossPart::Committing(ran));
            }
            Some(reply) => self.cross_done(ran, Some(reply), false),
        }
    }

    /// The part `xid`'s outcome is known (and, undone, its undo is
    /// appended): a full copy no longer waits for it.
    fn decided(&mut self, xid: CrossId) {
        if self.cross.undecided.remove(&xid).is_some() {
            self.publish_undecided();
        }
    }

    fn publish_undecided(&self) {
        let lowest = self.cross.undecided.values().min().copied();
        self.shared.repl.set_undecided(self.id, lowest);
    }

    /// The commit of a part, or its undo, is durable or failed (its
    /// waiter's acknowledgement, with the reply it waited with).
    pub(super) fn cross_durable(
        &mut self,
        xid: CrossId,
        reply: Reply,
        result: Result<(), CommitFailed>,
    ) {
        match self.cross.parts.remove(&xid) {
            Some(CrossPart::Committing(ran)) => match result {
                Ok(()) => self.cross_done(ran, Some(reply), true),
                Err(e) => {
                    let reply = Reply::Error(crate::server::strings::write_failed(&e));
                    self.cross_done(ran, Some(reply), false)
                }
            },
            Some(CrossPart::Undoing(ran)) => {
                if let Err(e) = result {
                    tracing::error!(
                        poller = self.id,
                        "undoing a transaction across pollers failed, the device is failing: \
                         its writes here may stay: {e}"
                    );
                }
                self.cross_end(*ran);
            }
            _ => unreachable!("a part committing or undoing"),
        }
    }

    /// The part is done (`reply`; `durable`: its writes are): it tells the
    /// last poller whether it failed, and keeps its keys until every part
    /// is done.
    fn cross_done(&mut self, mut ran: Box<Ran>, reply: Option<Reply>, durable: bool) {
        let xid = (ran.exec.from, ran.exec.id);
        let last = *cross_of(&ran.exec).pollers.last().expect("pollers");
        let step = match reply {
            Some(Reply::Error(_)) => CrossStep::Failed,
            _ => CrossStep::Done,
        };
        ran.reply = reply;
        ran.durable = durable;
        self.cross.parts.insert(xid, CrossPart::Ran(ran));
        self.cross_send(last, xid, step);
    }

    /// Every part is durable: this one's writes go into the replication
    /// stream (with the other parts') when the last poller said so
    /// (`to_stream`), it answers, and its keys go free.
    fn cross_release(&mut self, ran: Ran, to_stream: bool) {
        let Ran {
            exec,
            claimed,
            before,
            undo_room,
            reply,
            stream,
            seq,
            ..
        } = ran;
        self.decided((exec.from, exec.id));
        self.cross.mail.remove(&(exec.from, exec.id));
        self.drop_before(before, undo_room);
        if let Some(reply) = reply {
            // The stream first: a WAIT after EXEC's reply finds it there.
            if to_stream {
                self.cross_stream(&exec, seq, stream);
            }
            self.stream_durable();
            self.reply(&exec, reply);
        }
        for tag in claimed {
            self.release(tag);
        }
    }

    /// A part's commit failed: this one, if its writes are durable,
    /// writes its keys back as they were (into the room it kept), and
    /// lets its keys go once that is durable. Nothing of it goes into the
    /// replication stream.
    fn cross_undo(&mut self, xid: CrossId, mut ran: Ran) {
        if !ran.durable {
            self.decided(xid);
            return self.cross_end(ran);
        }
        // A full copy that read the part is wrong (before the copy may
        // see it decided).
        self.shared.repl.undone();
        if let Some(room) = ran.undo_room.take() {
            self.ks.commit_into(room);
        }
        let mut wrote = false;
        for b in &mut ran.before {
            // A key the commit wrote no record of is as it was. Else its
            // own entry, as the commit left it, is the one its write
            // replaces (short tags: not the tag's first, maybe).
            let Some(at) = b.after.take() else {
                continue;
            };
            let after = self.ks.unfollow(b.pid, at);
            let live = self.ks.own_live(b.pid, &b.hash, after).is_some();
            if !self.ks.act_on(b.pid, &b.hash, after) {
                self.ks.act_on(b.pid, &b.hash, None);
            }
            let result = match &b.was {
                Was::Absent if !live => continue,
                Was::Absent => self.ks.write(b.pid, &b.hash, &b.key, &[], 0, true),
                Was::Value(v, exp, enc) => {
                    (self.ks).write_marked(b.pid, &b.hash, &b.key, v, *exp, false, *enc)
                }
                Was::Large(head, exp) => {
                    let head = head.encode();
                    (self.ks).write_head(b.pid, &b.hash, &b.key, &head, *exp)
                }
                Was::Reading(_) => unreachable!("read when prepared"),
            };
            wrote = true;
            if let Err(e) = result {
                tracing::error!(
                    poller = self.id,
                    "undoing a transaction across pollers: a write failed: {e}"
                );
            }
        }
        self.ks.clear_new();
        self.ks.end_room();
        self.decided(xid);
        if !wrote {
            return self.cross_end(ran);
        }
        let w = Waiter {
            cross: true,
            ..Waiter::new(&ran.exec, Reply::Nil, None)
        };
        self.ks.acknowledge_durable(w);
        self.cross
            .parts
            .insert(xid, CrossPart::Undoing(Box::new(ran)));
    }

    /// The transaction failed and this part is undone: it answers its
    /// error, or an empty part (the failed one's error is EXEC's reply),
    /// and lets its keys go.
    fn cross_end(&mut self, ran: Ran) {
        let Ran {
            exec,
            claimed,
            before,
            undo_room,
            reply,
            ..
        } = ran;
        self.cross.mail.remove(&(exec.from, exec.id));
        self.drop_before(before, undo_room);
        match reply {
            Some(e @ Reply::Error(_)) => self.reply(&exec, e),
            Some(_) => self.reply(&exec, Reply::Txn(Vec::new())),
            None => {}
        }
        for tag in claimed {
            self.release(tag);
        }
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
            (CrossStep::Abort, Some(CrossPart::Dormant { .. })) => self.unreserve(xid),
            (CrossStep::Prepared | CrossStep::Refused, part) => {
                // This poller's own part, if it has one here, waits on.
                if let Some(part) = part {
                    self.cross.parts.insert(xid, part);
                }
                self.cross_prepared(xid, step == CrossStep::Refused);
            }
            (CrossStep::Commit, Some(CrossPart::Prepared(p))) => {
                let Prepared {
                    t,
                    heads,
                    room,
                    before,
                    undo_room,
                    ..
                } = *p;
                self.cross.undo.insert(xid, (before, undo_room));
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
                self.cross.mail.remove(&xid);
                self.reply(&exec, reply);
                for tag in claimed {
                    self.release(tag);
                }
            }
            (CrossStep::Abort, None) => {
                self.cross.parts.insert(xid, CrossPart::Aborted);
            }
            (CrossStep::Done | CrossStep::Failed, part) => {
                if let Some(part) = part {
                    self.cross.parts.insert(xid, part);
                }
                let left = self.cross.left.get_mut(&xid).expect("a transaction");
                left.parts -= 1;
                left.failed |= step == CrossStep::Failed;
                if let (1, Some(source)) = (left.parts, left.source) {
                    // Every part but a move's source is durable (it
                    // commits now) or one failed (it drops what it ran,
                    // having written nothing, and the others undo).
                    if !left.failed {
                        left.source = None;
                        return self.cross_send(source, xid, CrossStep::Commit);
                    }
                    left.parts = 0;
                    left.pollers.retain(|&p| p != source);
                    self.cross_send(source, xid, CrossStep::Drop);
                }
                if self.cross.left[&xid].parts == 0 {
                    let left = self.cross.left.remove(&xid).expect("a transaction");
                    // Whether the transaction goes into the replication
                    // stream is decided here, once for every part: a
                    // replica's feed may start between two parts'
                    // releases, and a part in the stream without the
                    // others would hold its outbox back for good.
                    let step = match left.failed {
                        true => CrossStep::Undo,
                        false => CrossStep::Release {
                            stream: self.shared.repl.streams_now(),
                        },
                    };
                    for p in left.pollers {
                        self.cross_send(p, xid, step);
                    }
                    if let Some(mode) = left.gate {
                        self.gate_pass(mode);
                    }
                }
            }
            (CrossStep::Release { stream }, Some(CrossPart::Ran(ran))) => {
                self.cross_release(*ran, stream)
            }
            (CrossStep::Undo, Some(CrossPart::Ran(ran))) => self.cross_undo(xid, *ran),
            (step, _) => unreachable!("step {step:?} out of order"),
        }
    }

    /// A transaction or a census that held the gate in `mode` is done
    /// with it: those waiting that hold it now are told (a transaction's
    /// first part claims its keys, a census begins).
    pub(super) fn gate_pass(&mut self, mode: Mode) {
        for who in self.shared.gate.pass(mode) {
            match who.kind {
                HolderKind::Txn => self.cross_send(who.poller, who.id, CrossStep::Gate),
                HolderKind::Census => self.census_send(who.poller, who.id, CensusStep::Gate),
            }
        }
    }

    /// Part of transaction `exec` is durable, and so are the others, and
    /// the last poller decided that the transaction goes into the
    /// replication stream: its writes, encoded in `stream` (none when it
    /// wrote nothing, or committed before the feed began), its last
    /// record `seq`, go into it, to be joined with the other parts' (a
    /// gated transaction); one begun before a replica's feed (not gated)
    /// goes as a block of its own, and the stream starts again (the
    /// replicas copy in full), as a replica must not see one part without
    /// the others.
    fn cross_stream(&mut self, exec: &Request, seq: u64, stream: Vec<u8>) {
        let repl = &self.shared.repl;
        if repl.is_replica() {
            return;
        }
        let x = cross_of(exec);
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
        self.cross_send_request(p, step_request(xid, Op::Cross(step)));
    }

    /// Sends a step to poller `p`'s ring, after the steps this poller
    /// sent before (the rest wait for room in order).
    pub(super) fn cross_send_request(&mut self, p: usize, req: Request) {
        self.cross.out.push_back((p, req));
        self.cross_flush();
    }

    /// Whether a transaction across pollers (not a group: it only reads)
    /// has committed a part here and not ended yet: released, or undone.
    pub(super) fn cross_unended(&self) -> bool {
        self.cross.parts.values().any(|p| match p {
            CrossPart::Committing(r) | CrossPart::Ran(r) | CrossPart::Undoing(r) => {
                !cross_of(&r.exec).group
            }
            _ => false,
        })
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

    /// The part of transaction `exec` just wrote `key`'s record: the
    /// entry the write left (the first of its tag's, see
    /// `Keyspace::act_on`) is the key's own, followed until the outcome,
    /// for an undo.
    pub(super) fn cross_wrote(&mut self, exec: &Request, pid: u32, hash: &KeyHash, key: &[u8]) {
        let xid = (exec.from, exec.id);
        let Some((before, _)) = self.cross.undo.get_mut(&xid) else {
            return;
        };
        let Some(b) = before.iter_mut().find(|b| b.pid == pid && *b.key == *key) else {
            return;
        };
        let own = self.ks.own_entry(pid, hash);
        if let Some(at) = own {
            self.ks.follow(pid, at);
        }
        b.after = own;
    }

    /// Whether a key of `watched` changed since WATCH (see
    /// `watched_changed`).
    pub(super) fn changed(&mut self, watched: &[Watched]) -> bool {
        if watched.iter().any(|w| w.flushed) {
            return true;
        }
        watched.iter().any(|w| self.changed_by_record(w))
    }

    /// Whether watched key `w` changed: its own entry
    /// is not as it was, or, when it had none, an entry of its tag that
    /// is new holds the key (its record in a segment buffer, or the key
    /// kept when it was written, `Keyspace::written_key`, tells; one
    /// neither tells counts as a change).
    fn changed_by_record(&self, w: &Watched) -> bool {
        let now_ms = self.ks.now_ms();
        if let Some(seen) = w.seen {
            let e =
                (self.ks.candidates(w.pid, &w.hash).into_iter()).find(|e| e.offset == seen.offset);
            return e != Some(seen) || (w.live && !e.is_some_and(|e| e.live(now_ms)));
        }
        let uuid = &self.shared.sb.uuid;
        (self.ks.candidates(w.pid, &w.hash).into_iter())
            .filter(|e| !w.others.contains(&e.offset))
            .any(|e| match self.ks.buffered(e) {
                Some(b) => decode_record(uuid, b).map_or(true, |r| r.key == &w.key[..]),
                None => (self.ks.written_key(w.pid, e.offset)).is_none_or(|k| k == view_id(&w.key)),
            })
    }
}
