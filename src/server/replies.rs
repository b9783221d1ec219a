//! A connection's replies, in request order (pipelining). Every command
//! leaves one reply. A reply that is ready while nothing is owed before it
//! goes straight into the output buffer; otherwise it takes a slot, and
//! slots leave for the output buffer, in order, as the pollers' answers
//! fill them. A multi-key command's slot gathers one part per key and
//! combines them ([`Combine`]). A reply sent in parts (a large value's,
//! [`Reply::Part`]) is written part by part once at the front (an array's,
//! MGET's, part by part in order as they come), and
//! the poller is told what went out (`msg::Flow`), so that it reads only
//! a window ahead. A reply of 1 MiB or more given whole (a large value
//! an EXEC across pollers read whole) goes out from its own buffer,
//! uncopied, as a part does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::msg::{FlowRef, Reply, Response};
use super::stats::CommandStats;
use crate::resp::{self, Proto};

/// How the parts of a multi-key reply combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Combine {
    /// An array of the parts (MGET).
    Array,
    /// The sum of integer parts (EXISTS, DEL).
    Sum,
    /// `+OK` when every part is (MSET); else the first other reply.
    AllOk,
    /// One array of the elements of every part's array (KEYS: one part
    /// per poller).
    Concat,
    /// One of the parts that are not nil, drawn by `seed` in proportion
    /// to `weights` (one per part; RANDOMKEY: each poller's pick, weighed
    /// by its live keys); nil when all are; the first error else.
    Pick { seed: u64, weights: Box<[u64]> },
    /// LCS of the two parts' values (GET replies; `lcs.rs`).
    Lcs(super::lcs::Ask),
}

/// A reply at least this large goes into the output as its own buffer,
/// uncopied: a large value read whole (by a part of an EXEC across
/// pollers) is held once.
const OWN_BUFFER: usize = 1 << 20;

/// Whether `r` is a reply of at least [`OWN_BUFFER`] bytes.
fn owns_buffer(r: &Reply) -> bool {
    matches!(r, Reply::Encoded(b) if b.len() >= OWN_BUFFER)
}

/// Bytes the RESP form of `r` takes (for the output-buffer limit; an
/// integer is counted at its largest).
fn reply_len(r: &Reply) -> usize {
    match r {
        Reply::Encoded(b) => b.len(),
        Reply::Nil => 5,
        Reply::Int(_) => 22,
        Reply::Error(m) => m.len() + 3,
        Reply::Txn(parts) => parts.iter().map(|(_, _, r)| reply_len(r)).sum::<usize>() + 16,
        Reply::Part(b, _) => b.len(),
        Reply::Cut => 0,
    }
}

/// Files `reply` in `into`: a part of a reply sent in parts joins those
/// before it. Returns whether the reply is whole.
fn merge(into: &mut Option<Reply>, reply: Reply) -> bool {
    match (into.take(), reply) {
        // Those before it went out already: it is taken as it is.
        (Some(Reply::Part(b, _)), reply) if b.is_empty() => {
            let whole = !matches!(reply, Reply::Part(..));
            *into = Some(reply);
            whole
        }
        (Some(Reply::Part(mut b, _)), Reply::Part(more, flow)) => {
            b.extend_from_slice(&more);
            *into = Some(Reply::Part(b, flow));
            false
        }
        (Some(Reply::Part(mut b, _)), Reply::Encoded(last)) => {
            b.extend_from_slice(&last);
            *into = Some(Reply::Encoded(b));
            true
        }
        (_, reply) => {
            let whole = !matches!(reply, Reply::Part(..));
            *into = Some(reply);
            whole
        }
    }
}

/// The reply at the front sent in parts: what of it went into the output
/// buffer, and what the poller was told was taken.
#[derive(Debug)]
struct Streaming {
    flow: FlowRef,
    moved: u64,
    credited: u64,
}

/// A reply a connection owes, in request order.
#[derive(Debug)]
enum Slot {
    /// Ready, but an earlier reply is still outstanding.
    Ready(Vec<u8>),
    /// Waiting for one poller reply, to be encoded in `Proto` (the
    /// connection's protocol when the command came).
    Single(Option<Reply>, Proto),
    /// Waiting for `left` of the parts. At the front, an array's parts
    /// go out as they come, in order (a part sent in parts, a large
    /// value's, as its parts come): `emitted` of them are out, with the
    /// array's header (`None`: nothing is).
    Multi {
        combine: Combine,
        left: u32,
        parts: Vec<Option<Reply>>,
        proto: Proto,
        emitted: Option<usize>,
    },
    /// A reply awaited from the pollers that the client is not to get
    /// (`CLIENT REPLY OFF | SKIP`): kept for its place in the order.
    Silent(Box<Slot>),
    /// EXEC's reply: `inner` holds the replies of its `count` commands,
    /// those the connection thread gave at once, and slots for those the
    /// poller gives in the transaction's one reply ([`Reply::Txn`]). An
    /// EXEC across pollers gets one such reply from each of its `left`
    /// parts, merged here (a nil from one, when a watched key changed,
    /// is the only one sent; an error from one is the EXEC's reply).
    /// `single`: a command of several keys run as a transaction across
    /// pollers (MSET, MGET): its one reply, without EXEC's array.
    Exec {
        inner: Box<Replies>,
        count: usize,
        result: Option<Reply>,
        proto: Proto,
        left: u32,
        single: bool,
    },
    /// EXEC's reply when it streams large values read by its commands
    /// (their places in [`Reply::Txn`] are empty [`Reply::Part`]s): one
    /// reply sent in parts, as a GET's. `current` is as a single reply's;
    /// `rest`, the bytes of the replies after each stream, each sent with
    /// that stream's last part.
    ExecStreams {
        current: Option<Reply>,
        rest: VecDeque<Vec<u8>>,
        proto: Proto,
    },
}

/// Files the reply of one of an EXEC's parts (one per poller; see
/// [`Slot::Exec`]).
fn merge_exec(result: &mut Option<Reply>, left: &mut u32, reply: Reply) {
    *left = left.saturating_sub(1);
    match (result.as_mut(), reply) {
        // A watched key changed: no other part answers.
        (_, Reply::Nil) => {
            *result = Some(Reply::Nil);
            *left = 0;
        }
        (None, reply) => *result = Some(reply),
        (Some(Reply::Txn(all)), Reply::Txn(more)) => all.extend(more),
        // The first error is the EXEC's reply.
        (Some(Reply::Txn(_)), error) => *result = Some(error),
        (Some(_), _) => {}
    }
}

/// Whether EXEC's reply `r` has values to stream (see
/// [`Slot::ExecStreams`]).
fn streams_values(r: &Reply) -> bool {
    matches!(r, Reply::Txn(parts) if parts.iter().any(|(_, _, r)| matches!(r, Reply::Part(..))))
}

/// EXEC's reply with values to stream: its commands' replies, in `inner`
/// with those the connection gave, as bytes cut at each streamed value.
fn exec_streams(inner: &mut Replies, count: usize, proto: Proto, txn: Reply) -> Slot {
    let Reply::Txn(parts) = txn else {
        unreachable!("a transaction's reply")
    };
    let mut holes = Vec::new();
    for (id, part, reply) in parts {
        match reply {
            Reply::Part(_, flow) => holes.push((id, part, flow)),
            reply => inner.fill(id, part, reply),
        }
    }
    holes.sort_by_key(|h| (h.0, h.1));
    // An array at the front (MGET's) has its header out.
    inner.move_streamed();
    let mut first = Vec::new();
    resp::array(&mut first, count);
    first.extend_from_slice(&inner.take_output());
    let mut rest = VecDeque::with_capacity(holes.len());
    for (id, part, _) in &holes {
        inner.fill(*id, *part, Reply::Encoded(Vec::new()));
        rest.push_back(inner.take_output());
    }
    inner.count_calls();
    let flow = holes.swap_remove(0).2;
    Slot::ExecStreams {
        current: Some(Reply::Part(first, flow)),
        rest,
        proto,
    }
}

impl Slot {
    fn complete(&self) -> bool {
        match self {
            Slot::Ready(_) => true,
            Slot::Single(r, _) => r.as_ref().is_some_and(|r| !matches!(r, Reply::Part(..))),
            Slot::Multi { left, .. } => *left == 0,
            Slot::Silent(s) => s.complete(),
            Slot::Exec { result, left, .. } => *left == 0 && result.is_some(),
            Slot::ExecStreams { current, .. } => current
                .as_ref()
                .is_some_and(|r| !matches!(r, Reply::Part(..))),
        }
    }

    /// Reply bytes the slot holds already.
    fn held(&self) -> usize {
        match self {
            Slot::Ready(b) => b.len(),
            Slot::Single(r, _) => r.as_ref().map_or(0, reply_len),
            Slot::Multi { parts, .. } => parts.iter().flatten().map(reply_len).sum(),
            Slot::Silent(s) => s.held(),
            Slot::Exec { inner, result, .. } => {
                inner.pending() + result.as_ref().map_or(0, reply_len)
            }
            Slot::ExecStreams { current, rest, .. } => {
                current.as_ref().map_or(0, reply_len) + rest.iter().map(Vec::len).sum::<usize>()
            }
        }
    }

    /// The bytes of this complete slot as buffers to go out in order,
    /// uncopied, when it holds a reply of at least [`OWN_BUFFER`] bytes
    /// (a single reply, or one of EXEC's); else `Err(self)`, to be encoded.
    fn into_buffers(self) -> Result<Vec<Vec<u8>>, Slot> {
        match self {
            Slot::Single(Some(Reply::Encoded(b)), _) if b.len() >= OWN_BUFFER => Ok(vec![b]),
            Slot::Exec {
                mut inner,
                count,
                result: Some(Reply::Txn(parts)),
                single,
                ..
            } if parts.iter().any(|(_, _, r)| owns_buffer(r)) => {
                let mut out = Vec::new();
                if !single {
                    let mut header = Vec::new();
                    resp::array(&mut header, count);
                    out.push(header);
                }
                for (id, part, reply) in parts {
                    inner.fill(id, part, reply);
                }
                debug_assert_eq!(inner.owed(), 0, "a transaction's reply misses parts");
                inner.count_calls();
                let mut first = std::mem::take(&mut inner.wbuf);
                first.drain(..inner.wpos);
                out.push(first);
                out.extend(inner.queued.drain(..));
                Ok(out)
            }
            other => Err(other),
        }
    }

    fn encode(self, out: &mut Vec<u8>) {
        match self {
            Slot::Ready(b) => out.extend_from_slice(&b),
            Slot::Silent(_) => {}
            Slot::Exec {
                mut inner,
                count,
                result,
                proto,
                single,
                ..
            } => match result.expect("complete") {
                Reply::Txn(parts) => {
                    for (id, part, reply) in parts {
                        inner.fill(id, part, reply);
                    }
                    debug_assert_eq!(inner.owed(), 0, "a transaction's reply misses parts");
                    inner.count_calls();
                    if !single {
                        resp::array(out, count);
                    }
                    out.extend_from_slice(&inner.take_output());
                }
                // A watched key changed.
                Reply::Nil => resp::null_array(out, proto),
                other => other.encode(out, proto),
            },
            Slot::Single(r, proto)
            | Slot::ExecStreams {
                current: r, proto, ..
            } => r.expect("complete").encode(out, proto),
            Slot::Multi {
                combine: Combine::Array,
                parts,
                proto,
                emitted,
                ..
            } => {
                if emitted.is_none() {
                    resp::array(out, parts.len());
                }
                parts
                    .into_iter()
                    .skip(emitted.unwrap_or(0))
                    .for_each(|p| p.expect("complete").encode(out, proto));
            }
            Slot::Multi {
                combine: Combine::Sum,
                parts,
                proto,
                ..
            } => {
                let mut sum = 0;
                for p in parts {
                    match p.expect("complete") {
                        Reply::Int(n) => sum += n,
                        other => return other.encode(out, proto),
                    }
                }
                resp::int(out, sum);
            }
            Slot::Multi {
                combine: Combine::AllOk,
                parts,
                proto,
                ..
            } => {
                let ok = |r: &Reply| matches!(r, Reply::Encoded(b) if b == b"+OK\r\n");
                match parts.into_iter().flatten().find(|r| !ok(r)) {
                    Some(other) => other.encode(out, proto),
                    None => resp::simple(out, "OK"),
                }
            }
            Slot::Multi {
                combine: Combine::Concat,
                parts,
                proto,
                ..
            } => concat(out, parts.into_iter().flatten().collect(), proto),
            Slot::Multi {
                combine: Combine::Pick { seed, weights },
                parts,
                proto,
                ..
            } => pick(
                out,
                parts.into_iter().flatten().collect(),
                seed,
                &weights,
                proto,
            ),
            Slot::Multi {
                combine: Combine::Lcs(ask),
                parts,
                proto,
                ..
            } => {
                let parts: Vec<Reply> = parts.into_iter().flatten().collect();
                super::lcs::answer(out, &parts, ask, proto)
            }
        }
    }
}

/// The parts' arrays (`*<n>` and their elements) as one array; a part
/// that is not an array (an error) is the reply instead.
fn concat(out: &mut Vec<u8>, parts: Vec<Reply>, proto: Proto) {
    let mut n = 0;
    let mut bodies = Vec::with_capacity(parts.len());
    for p in &parts {
        let Reply::Encoded(b) = p else {
            return p.encode(out, proto);
        };
        let header = b.iter().position(|&c| c == b'\n').map(|e| e + 1);
        let count = header.and_then(|h| resp::parse_int(b.get(1..h - 2)?));
        match (b.first(), header, count) {
            (Some(b'*'), Some(h), Some(c)) => {
                n += c.max(0) as usize;
                bodies.push(&b[h..]);
            }
            _ => return p.encode(out, proto),
        }
    }
    resp::array(out, n);
    bodies.iter().for_each(|b| out.extend_from_slice(b));
}

/// One of `parts` that is not nil, drawn by `seed` in proportion to its
/// weight (a weight of 0 counts as 1: the part has a key now); nil when
/// every part is; the first error when one is.
fn pick(out: &mut Vec<u8>, parts: Vec<Reply>, seed: u64, weights: &[u64], proto: Proto) {
    if let Some(e) = parts.iter().find(|p| matches!(p, Reply::Error(_))) {
        return e.encode(out, proto);
    }
    let weight = |i: usize| weights.get(i).copied().unwrap_or(0).max(1);
    let answered: Vec<usize> = (0..parts.len())
        .filter(|&i| !matches!(parts[i], Reply::Nil))
        .collect();
    let total: u64 = answered.iter().map(|&i| weight(i)).sum();
    if total == 0 {
        return resp::null(out, proto);
    }
    let mut at = seed % total;
    let i = (answered.iter())
        .find(|&&i| {
            let inside = at < weight(i);
            at = at.saturating_sub(weight(i));
            inside
        })
        .unwrap_or(&answered[0]);
    parts[*i].encode(out, proto)
}

/// Where a connection's replies stood before a command (see
/// [`Replies::drop_last`]).
pub(super) struct ReplyMark {
    wbuf: usize,
    queued: usize,
    slots: usize,
}

/// The command a reply answers, for its statistics: its slot (a command
/// or a subcommand, `table::StatSlots`), when it was parsed (for its
/// latency), and whether it was refused before it ran (Redis's
/// `rejected_calls`: wrong arity, NOAUTH, …).
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub stat: u16,
    pub at: Instant,
    pub rejected: bool,
}

/// The call a reply answers, if it is one that counts.
pub(super) type Timing = Option<Call>;

/// What a reply counts in the statistics: its call's slot, latency in µs
/// and refusal, and its error code when it is an error.
type Counted = (Option<(u16, u64, bool)>, Option<Box<[u8]>>);

/// The code an error reply counts under in INFO errorstats, as Redis
/// finds it: the word after the `-`, when a space ends it within the
/// reply's first 32 bytes, else `ERR`; `None` for a reply that is not an
/// error.
fn error_code(reply: &[u8]) -> Option<&[u8]> {
    if reply.first() != Some(&b'-') {
        return None;
    }
    let head = &reply[..reply.len().min(32)];
    Some(match head.iter().position(|&b| b == b' ') {
        Some(end) => &head[1..end],
        None => b"ERR",
    })
}

/// A connection's output: the bytes to write, and the replies owed.
#[derive(Debug)]
pub(super) struct Replies {
    /// Bytes ready to be written; `wpos` of them are written already.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes to write after `wbuf`, in order: the parts of a reply sent
    /// in parts that came while `wbuf` held unsent bytes (each written
    /// from its own buffer, uncopied), and what followed them. Empty
    /// whenever `wbuf` is all written.
    queued: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    slots: VecDeque<Slot>,
    /// Id of `slots[0]`; ids are given to replies in request order.
    first_id: u64,
    /// Reply bytes waiting in `slots` behind an earlier reply.
    held: usize,
    /// Moving average of this connection's reply sizes, to foresee the
    /// bytes of the replies still owed.
    reply_avg: usize,
    /// Per owed reply (aligned with `slots`), its command and when it was
    /// parsed.
    timings: VecDeque<Timing>,
    cmd_stats: Arc<CommandStats>,
    /// A transaction's replies ([`Replies::for_transaction`]): the calls
    /// and latencies of its commands, kept until EXEC's outcome counts
    /// them ([`Replies::count_calls`]) or drops them (EXEC answered nil
    /// or an error: nothing ran, and Redis counts no call).
    calls_held: Option<Vec<Counted>>,
    /// The reply at the front, while it is sent in parts.
    streaming: Option<Streaming>,
    /// Pollers to ring: they wait for bytes taken.
    wake: Vec<usize>,
    /// A reply sent in parts broke off: the connection is to close.
    broken: bool,
}

impl Replies {
    /// No reply owed yet; until replies show their size, each is foreseen
    /// at `reply_avg` bytes.
    pub(super) fn new(reply_avg: usize, cmd_stats: Arc<CommandStats>) -> Self {
        Replies {
            wbuf: Vec::new(),
            wpos: 0,
            queued: VecDeque::new(),
            queued_bytes: 0,
            slots: VecDeque::new(),
            first_id: 0,
            held: 0,
            reply_avg,
            timings: VecDeque::new(),
            cmd_stats,
            calls_held: None,
            streaming: None,
            wake: Vec::new(),
            broken: false,
        }
    }

    /// The id the next reply gets.
    pub(super) fn next_id(&self) -> u64 {
        self.first_id + self.slots.len() as u64
    }

    /// Id of the oldest reply still owed (every reply before it is in the
    /// output buffer or written).
    pub(super) fn first_owed(&self) -> u64 {
        self.first_id
    }

    /// Replies owed: awaited from the pollers, or ready behind one that is.
    pub(super) fn owed(&self) -> usize {
        self.slots.len()
    }

    /// Emits a reply that is ready now.
    pub(super) fn ready(&mut self, timing: Timing, f: impl FnOnce(&mut Vec<u8>)) {
        if self.slots.is_empty() {
            let code = self.emit_coded(f);
            self.first_id += 1;
            self.observe(timing, code);
        } else {
            let mut b = Vec::new();
            f(&mut b);
            self.held += b.len();
            self.slots.push_back(Slot::Ready(b));
            self.timings.push_back(timing);
        }
    }

    /// Reserves the place of a reply that pollers will fill: `parts` parts
    /// combined by `combine` (`None` for a single reply), encoded in
    /// `proto`. Returns its id.
    pub(super) fn expect(
        &mut self,
        timing: Timing,
        parts: usize,
        combine: Option<Combine>,
        proto: Proto,
    ) -> u64 {
        let id = self.next_id();
        self.timings.push_back(timing);
        self.slots.push_back(match combine {
            None => Slot::Single(None, proto),
            Some(combine) => Slot::Multi {
                combine,
                left: parts as u32,
                parts: vec![None; parts],
                proto,
                emitted: None,
            },
        });
        id
    }

    /// Where the replies stand now.
    pub(super) fn mark(&self) -> ReplyMark {
        ReplyMark {
            wbuf: self.wbuf.len(),
            queued: self.queued.len(),
            slots: self.slots.len(),
        }
    }

    /// The id of the reply left since `mark` if it awaits the pollers
    /// (not one ready and held behind another).
    pub(super) fn awaits_since(&self, mark: &ReplyMark) -> Option<u64> {
        let awaited = self.slots.len() > mark.slots
            && !matches!(self.slots.back(), Some(Slot::Ready(_)) | None);
        awaited.then(|| self.next_id() - 1)
    }

    /// Drops the reply left since `mark` (one command's), keeping the
    /// order of the others: a ready one goes, an awaited one keeps its
    /// place but will not be sent.
    pub(super) fn drop_last(&mut self, mark: ReplyMark) {
        if self.slots.len() > mark.slots {
            match self.slots.pop_back().expect("a slot was added") {
                Slot::Ready(b) => {
                    self.held -= b.len();
                    self.timings.pop_back();
                }
                awaited => self.slots.push_back(Slot::Silent(Box::new(awaited))),
            }
        } else {
            // Nothing is written while a command executes: what is past
            // the mark is this command's reply.
            while self.queued.len() > mark.queued {
                let b = self.queued.pop_back().expect("queued");
                self.queued_bytes -= b.len();
            }
            self.wbuf.truncate(mark.wbuf);
        }
    }

    /// Reserves the place of EXEC's reply: `inner` holds its commands'
    /// replies, `parts` the number of pollers that answer (see
    /// [`Slot::Exec`]). Returns its id.
    pub(super) fn expect_exec(
        &mut self,
        timing: Timing,
        inner: Replies,
        count: usize,
        proto: Proto,
        parts: u32,
        single: bool,
    ) -> u64 {
        let id = self.next_id();
        self.timings.push_back(timing);
        self.slots.push_back(Slot::Exec {
            inner: Box::new(inner),
            count,
            result: None,
            proto,
            left: parts,
            single,
        });
        id
    }

    /// A new, empty set of replies with this one's statistics, for the
    /// commands of a transaction.
    pub(super) fn for_transaction(&self) -> Replies {
        Replies {
            calls_held: Some(Vec::new()),
            ..Replies::new(self.reply_avg, Arc::clone(&self.cmd_stats))
        }
    }

    /// Counts a reply that went out: its call (`timing`) and its error
    /// code (`code`), now, or once EXEC ran for a transaction's.
    fn observe(&mut self, timing: Timing, code: Option<Box<[u8]>>) {
        if timing.is_none() && code.is_none() {
            return;
        }
        let call = timing.map(|t| {
            let us = super::turn::now()
                .saturating_duration_since(t.at)
                .as_micros() as u64;
            (t.stat, us, t.rejected)
        });
        match &mut self.calls_held {
            Some(held) => held.push((call, code)),
            None => self.cmd_stats.count(call, code.as_deref()),
        }
    }

    /// A transaction's commands ran (EXEC answered their replies): their
    /// calls and errors count.
    pub(super) fn count_calls(&mut self) {
        for (call, code) in self
            .calls_held
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            self.cmd_stats.count(call, code.as_deref());
        }
    }

    /// Files a poller's answer in its slot, and moves the replies that are
    /// complete at the front into the output buffer.
    pub(super) fn deliver(&mut self, r: Response) {
        self.fill(r.id, r.part, r.reply);
    }

    /// Files reply `part` of reply `id`.
    pub(super) fn fill(&mut self, id: u64, part: u32, reply: Reply) {
        let Some(slot) = id
            .checked_sub(self.first_id)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            tracing::error!(id, "reply for an unknown request");
            return;
        };
        let len = reply_len(&reply);
        self.held += len;
        self.reply_avg = (self.reply_avg * 3 + len) / 4;
        self.broken |= matches!(reply, Reply::Cut);
        let flow = match &reply {
            Reply::Part(_, f) => Some(f.clone()),
            _ => None,
        };
        let (slot, silent) = match slot {
            Slot::Silent(inner) => (&mut **inner, true),
            other => (other, false),
        };
        // The bytes of a reply sent in parts that are kept whole anyway
        // (not sent: dropped, or combined with other parts) are taken at
        // once; those of a single reply or of an array's part as they are
        // written.
        let mut kept = silent;
        match slot {
            Slot::Single(s, _) => {
                merge(s, reply);
                if silent {
                    if let Some(Reply::Part(b, _)) = s {
                        self.held -= b.len();
                        *b = Vec::new();
                    }
                }
            }
            Slot::Multi {
                left,
                parts,
                combine,
                ..
            } => {
                kept |= *combine != Combine::Array;
                if merge(&mut parts[part as usize], reply) {
                    *left -= 1;
                }
            }
            Slot::Exec {
                inner,
                count,
                proto,
                left: 1,
                ..
            } if streams_values(&reply) => {
                let streams = exec_streams(inner, *count, *proto, reply);
                self.held = self.held.saturating_sub(len) + streams.held();
                *slot = streams;
            }
            Slot::Exec { result, left, .. } => merge_exec(result, left, reply),
            Slot::ExecStreams { current, rest, .. } => {
                // A stream's last part: the replies after it follow.
                let reply = match (reply, &*current) {
                    (Reply::Encoded(mut last), Some(Reply::Part(_, flow))) if !rest.is_empty() => {
                        last.extend_from_slice(&rest.pop_front().expect("bytes"));
                        match rest.is_empty() {
                            true => Reply::Encoded(last),
                            false => Reply::Part(last, flow.clone()),
                        }
                    }
                    (reply, _) => reply,
                };
                merge(current, reply);
                if silent {
                    if let Some(Reply::Part(b, _)) = current {
                        self.held -= b.len();
                        *b = Vec::new();
                    }
                }
            }
            Slot::Ready(_) | Slot::Silent(_) => {
                tracing::error!("reply for a request answered already")
            }
        }
        if let (Some(f), true) = (flow, kept) {
            if f.0.take(len as u64) {
                self.wake.push(f.0.poller);
            }
        }
        while self.slots.front().is_some_and(Slot::complete) {
            let s = self.slots.pop_front().expect("front");
            self.held = self.held.saturating_sub(s.held());
            let code = match s.into_buffers() {
                Ok(buffers) => {
                    buffers.into_iter().for_each(|b| self.push_owned(b));
                    None
                }
                Err(s) => self.emit_coded(|out| s.encode(out)),
            };
            self.streaming = None;
            self.first_id += 1;
            let timing = self.timings.pop_front().flatten();
            self.observe(timing, code);
        }
        self.move_streamed();
    }

    /// The reply at the front, sent in parts: its bytes go into the
    /// output buffer as they come. An array at the front: its parts as
    /// they come, in order, and those sent in parts so.
    fn move_streamed(&mut self) {
        match self.slots.front_mut() {
            Some(
                Slot::Single(Some(Reply::Part(b, flow)), _)
                | Slot::ExecStreams {
                    current: Some(Reply::Part(b, flow)),
                    ..
                },
            ) => {
                let (b, flow) = (std::mem::take(b), flow.clone());
                self.move_part(b, flow);
            }
            Some(Slot::Multi {
                combine: Combine::Array,
                ..
            }) => self.move_array_parts(),
            _ => {}
        }
    }

    /// The array at the front: its header and its parts that are in, up to
    /// the first that is not whole (its bytes so far, if sent in parts).
    fn move_array_parts(&mut self) {
        loop {
            let Some(Slot::Multi {
                parts,
                proto,
                emitted,
                ..
            }) = self.slots.front_mut()
            else {
                return;
            };
            let proto = *proto;
            let Some(k) = *emitted else {
                let n = parts.len();
                *emitted = Some(0);
                self.emit(|out| resp::array(out, n));
                continue;
            };
            match parts.get_mut(k) {
                Some(Some(Reply::Part(b, flow))) => {
                    let (b, flow) = (std::mem::take(b), flow.clone());
                    return self.move_part(b, flow);
                }
                Some(p @ Some(_)) => {
                    let p = p.take().expect("a part");
                    *emitted = Some(k + 1);
                    self.held -= reply_len(&p);
                    // A part sent in parts ended with this.
                    self.streaming = None;
                    self.emit(|out| p.encode(out, proto));
                }
                _ => return,
            }
        }
    }

    /// Bytes `b` of the reply sent in parts at the front (under `flow`)
    /// go out.
    fn move_part(&mut self, b: Vec<u8>, flow: FlowRef) {
        if (self.streaming.as_ref()).is_some_and(|s| !Arc::ptr_eq(&s.flow.0, &flow.0)) {
            // The next value of an EXEC's reply (`Slot::ExecStreams`):
            // its own stream.
            self.streaming = None;
        }
        let s = self.streaming.get_or_insert(Streaming {
            flow,
            moved: 0,
            credited: 0,
        });
        let n = b.len();
        if n == 0 {
            return;
        }
        s.moved += n as u64;
        self.held -= n;
        self.push_owned(b);
    }

    /// Bytes `b` go out after those before them, uncopied: as the buffer
    /// when nothing is unsent, else queued.
    fn push_owned(&mut self, b: Vec<u8>) {
        if b.is_empty() {
            return;
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf = b;
            self.wpos = 0;
        } else {
            self.queued_bytes += b.len();
            self.queued.push_back(b);
        }
    }

    /// Writes new output with `f`: into the output buffer, or after the
    /// parts queued behind it (or after the buffer when it is large and
    /// nearly full, a reply taken uncopied: growing it would copy it).
    /// [`Replies::emit`] of one reply; its error code if it is an error.
    fn emit_coded(&mut self, f: impl FnOnce(&mut Vec<u8>)) -> Option<Box<[u8]>> {
        let mut code = None;
        self.emit(|out| {
            let at = out.len();
            f(out);
            code = error_code(&out[at..]).map(Box::from);
        });
        code
    }

    fn emit(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let full = self.wpos < self.wbuf.len()
            && self.wbuf.len() >= OWN_BUFFER
            && self.wbuf.capacity() - self.wbuf.len() < OWN_BUFFER / 16;
        if self.queued.is_empty() && !full {
            return f(&mut self.wbuf);
        }
        let mut b = Vec::new();
        f(&mut b);
        if !b.is_empty() {
            self.queued_bytes += b.len();
            self.queued.push_back(b);
        }
    }

    /// Tells the poller of the reply at the front sent in parts how many
    /// of its bytes went out (all those in the output buffer but the
    /// unsent: nothing else enters it while the reply is at the front).
    fn credit(&mut self) {
        let Some(s) = &mut self.streaming else {
            return;
        };
        let unsent = (self.wbuf.len() - self.wpos + self.queued_bytes) as u64;
        let taken = s.moved - unsent.min(s.moved);
        if taken > s.credited {
            if s.flow.0.take(taken - s.credited) {
                self.wake.push(s.flow.0.poller);
            }
            s.credited = taken;
        }
    }

    /// The pollers to ring: they wait for bytes now taken.
    pub(super) fn take_wakes(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.wake)
    }

    /// Whether a reply sent in parts broke off: the connection closes.
    pub(super) fn broken(&self) -> bool {
        self.broken
    }

    /// Reply bytes the client has not read: unsent, and waiting in slots.
    pub(super) fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos + self.queued_bytes + self.held
    }

    /// Bytes the replies still owed are foreseen to take, at this
    /// connection's average reply size.
    pub(super) fn foreseen(&self) -> usize {
        self.slots.len().saturating_mul(self.reply_avg)
    }

    /// Memory the output holds: its buffer and the replies in slots.
    pub(super) fn footprint(&self) -> usize {
        self.wbuf.capacity() + self.queued_bytes + self.held
    }

    /// The bytes not yet written, taken out (a transaction's replies
    /// going into EXEC's).
    pub(super) fn take_output(&mut self) -> Vec<u8> {
        let mut out = self.wbuf.split_off(self.wpos);
        self.wbuf.clear();
        self.wpos = 0;
        for q in self.queued.drain(..) {
            out.extend_from_slice(&q);
        }
        self.queued_bytes = 0;
        out
    }

    /// The bytes still to be written.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.wbuf[self.wpos..]
    }

    /// `n` more bytes were written.
    pub(super) fn sent(&mut self, n: usize) {
        self.wpos += n;
        if self.wpos == self.wbuf.len() {
            if let Some(next) = self.queued.pop_front() {
                self.queued_bytes -= next.len();
                self.wbuf = next;
                self.wpos = 0;
            }
        }
        self.credit();
    }

    /// Everything was written: the buffer starts over (and gives a large
    /// allocation back).
    pub(super) fn all_sent(&mut self) {
        self.wpos = 0;
        if self.wbuf.capacity() > 4 << 20 {
            self.wbuf = Vec::new();
        } else {
            self.wbuf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bulk reply of `len` bytes of `byte`, in a buffer of its size
    /// (as a poller's whole read is).
    fn bulk(len: usize, byte: u8) -> Vec<u8> {
        let header = format!("${len}\r\n");
        let mut b = Vec::with_capacity(header.len() + len + 2);
        b.extend_from_slice(header.as_bytes());
        b.resize(header.len() + len, byte);
        b.extend_from_slice(b"\r\n");
        b
    }

    /// Every byte still to be written, in order.
    fn all_unsent(r: &Replies) -> Vec<u8> {
        let mut out = r.unsent().to_vec();
        r.queued.iter().for_each(|q| out.extend_from_slice(q));
        out
    }

    /// EXEC's reply from two pollers' parts, one a value read whole: its
    /// bytes in order, after an earlier reply still unsent, with the
    /// value's buffer uncopied; later replies follow it.
    #[test]
    fn a_large_value_in_execs_reply_goes_out_uncopied() {
        let mut out = Replies::new(16, Arc::new(CommandStats::new(1)));
        out.ready(None, |o| o.extend_from_slice(b"+OK\r\n"));
        let mut inner = out.for_transaction();
        let ids: Vec<u64> = (0..3)
            .map(|_| inner.expect(None, 1, None, Proto::Resp2))
            .collect();
        let exec = out.expect_exec(None, inner, 3, Proto::Resp2, 2, false);
        let after = out.expect(None, 1, None, Proto::Resp2);
        let big = bulk(OWN_BUFFER + 5, b'v');
        let (at, want_big) = (big.as_ptr(), big.clone());
        out.fill(exec, 0, Reply::Txn(vec![(ids[1], 0, Reply::Int(7))]));
        let parts = vec![
            (ids[0], 0, Reply::Encoded(big)),
            (ids[2], 0, Reply::Encoded(b"+PONG\r\n".to_vec())),
        ];
        out.fill(exec, 0, Reply::Txn(parts));
        out.fill(after, 0, Reply::Int(1));
        assert_eq!(out.owed(), 0);
        assert!(out.queued.iter().any(|q| q.as_ptr() == at), "copied");
        let mut want = b"+OK\r\n*3\r\n".to_vec();
        want.extend_from_slice(&want_big);
        want.extend_from_slice(b":7\r\n+PONG\r\n:1\r\n");
        assert!(all_unsent(&out) == want);
    }

    /// A large reply taken as the output buffer, nothing unsent before
    /// it: the replies after it go behind it, the buffer not grown.
    #[test]
    fn replies_after_a_large_one_taken_as_the_buffer_keep_their_order() {
        let mut out = Replies::new(16, Arc::new(CommandStats::new(1)));
        let first = out.expect(None, 1, None, Proto::Resp2);
        let big = bulk(OWN_BUFFER, b'w');
        let (at, mut want) = (big.as_ptr(), big.clone());
        out.fill(first, 0, Reply::Encoded(big));
        assert_eq!(out.unsent().as_ptr(), at);
        out.ready(None, |o| o.extend_from_slice(b"+PONG\r\n"));
        assert_eq!(out.unsent().as_ptr(), at);
        want.extend_from_slice(b"+PONG\r\n");
        assert!(all_unsent(&out) == want);
    }
}
