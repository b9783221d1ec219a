//! Values larger than a segment, on the poller's side: a SET of one hands
//! the value to [`Keyspace::write_large`] and holds the key until its head
//! is durable. Every read of one's bytes is streamed ([`Stream`]): GET,
//! GETRANGE (only the pieces its range needs), GETEX, GETDEL, SET … GET,
//! DUMP, and MGET's parts. The reply's first bytes, then each piece as it
//! is read, a window ahead of what the client has read ([`Flow`]), with
//! the pieces pinned rather than the key held. A command that also writes
//! (GETDEL's delete, SET … GET's set, GETEX's expiry) pins the pieces,
//! writes, and sends nothing until its write is durable (the stream's
//! gate, [`Poller::gate_reply`]); the key is not held meanwhile. Inside
//! MULTI … EXEC the reads stream after EXEC's other replies, one after
//! the other ([`Poller::txn_stream`]); in a part of an EXEC across
//! pollers, whose reply is merged with the other parts', each is read
//! whole into its place in EXEC's reply ([`Poller::txn_read_whole`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{is_sub, Poller, Reply, Request, Waiter};
use crate::format::{LargeHead, PieceHeader, Record, RecordMeta, FLAG_LARGE};
use crate::index::Entry;
use crate::io::{Completion, Engine};
use crate::server::dump::Streamed;
use crate::server::msg::{
    ConnRef, Feed, Flow, FlowRef, GetExpiry, MoveKind, ObjectInfo, Op, SetReply,
};
use crate::server::strings as text;
use crate::store::keyspace::{LargeFeed, Tag, WriteError};

/// Piece reads one large value keeps in flight.
const PIECE_DEPTH: usize = 4;

/// Pieces a stream reads ahead of what its client has read, at most (and
/// at most half of `--max-output-buffer`, but always one).
const STREAM_WINDOW: u64 = 4;

/// Bytes of fed pieces queued or at the device, per poller, past which a
/// feed's next piece waits (at least two pieces).
const FEED_PENDING: u64 = 32 << 20;

/// A SET whose value arrives a piece at a time (`msg::Feed`): its pieces
/// are written as they come; the SET itself comes once the whole command
/// has, and is written as any SET, its head going in once the pieces are
/// durable.
pub(super) struct FedSet {
    feed: Arc<Feed>,
    pid: u32,
    /// Its piece segments, once taken.
    pieces: Option<LargeFeed>,
    /// Since when it waits for free segments, and whether that wait is
    /// counted (INFO `writes_deferred`).
    since: std::time::Instant,
    deferred: bool,
    /// The SET, waiting for the last pieces: its request, the expiry it
    /// sets, its reply, and its key's own entry when it came (followed).
    set: Option<(Request, u64, Reply, Option<u64>)>,
    /// The pieces' bytes, kept for the replication stream when replicas
    /// were fed as it began.
    kept: Option<Vec<bytes::Bytes>>,
}

/// What a streamed reply carries around the value's bytes.
enum Frame {
    /// A bulk string of them.
    Bulk,
    /// DUMP's payload (as a bulk string), its checksum computed as the
    /// bytes pass.
    Dump(Streamed),
}

/// A large value (or a range of it) sent to its client as its pieces are
/// read. The pieces are pinned ([`Keyspace::pin_pieces`]), not the key:
/// writes of the key go on meanwhile, and the client gets the value its
/// command found.
pub(super) struct Stream {
    to: ConnRef,
    id: u64,
    part: u32,
    /// The head's place, for the errors.
    offset: u64,
    /// The value's pieces and length; the head whose pieces the stream
    /// pins (the same, but for a transaction's edited value: the old head
    /// its unchanged pieces are from).
    head: Arc<LargeHead>,
    pins: Arc<LargeHead>,
    /// Pieces a transaction changed (`large_edit::LargeView`), sent from
    /// here rather than read.
    changed: BTreeMap<usize, Vec<u8>>,
    /// A transaction's read, sent after EXEC's other replies: the stream
    /// of its next read, opened once this one is sent whole.
    in_txn: bool,
    then: Option<u64>,
    flow: Arc<Flow>,
    /// The reply's bytes before the value's, sent with its first piece.
    header: Vec<u8>,
    frame: Frame,
    /// The value's bytes sent: `len` of them from `lo`.
    lo: u64,
    len: u64,
    /// The pieces: the next to read, the next to send, one past the last.
    next: usize,
    send: usize,
    end: usize,
    in_flight: usize,
    /// Pieces read, waiting for those before them, as they are to be
    /// sent (the first with the header).
    ready: BTreeMap<usize, Vec<u8>>,
    /// Bytes sent to the connection; bytes read or being read, not sent.
    sent: u64,
    ahead: u64,
    /// Nothing is read or sent until the command's write is durable.
    open: bool,
    /// The stream ends: it failed, or the client went.
    failed: Option<String>,
}

impl Stream {
    /// The bytes to send for piece `i`, whose data is `data`: those of
    /// the value the stream sends, after the reply's header if first.
    fn piece_out(&self, i: usize, data: &[u8], cap: u64) -> Vec<u8> {
        let (from, len) = self.span(i, cap);
        let first = match self.lo / cap == i as u64 {
            true => self.header.len(),
            false => 0,
        };
        // Room for the bytes after the value, if last.
        let mut out = Vec::with_capacity(first + len as usize + 12);
        if first > 0 {
            out.extend_from_slice(&self.header);
        }
        out.extend_from_slice(&data[from..from + len as usize]);
        out
    }

    /// The bytes of piece `i` the stream sends: where they start in the
    /// piece, and how many (`cap`: a piece's capacity).
    fn span(&self, i: usize, cap: u64) -> (usize, u64) {
        let base = i as u64 * cap;
        let from = base.max(self.lo);
        let to = (base + self.head.piece_len(i, cap)).min(self.lo + self.len);
        ((from - base) as usize, to - from)
    }
}

/// The read of a large value a transaction's command stands for in
/// EXEC's reply (`Txn::gated`): streamed after it, or, in a part of an
/// EXEC across pollers, read whole (the reply's bytes).
pub(super) enum Gated {
    Stream(u64),
    Whole(Vec<u8>),
}

/// A read of a part of an EXEC across pollers, whole ([`Assembly`]): the
/// pieces it pins (let go once read), the value's expiry, and DUMP's
/// checksum, computed once the value is read.
struct WholeRead {
    pins: Arc<LargeHead>,
    expire_ms: u64,
    dump: Option<Streamed>,
}

/// A transaction's read of a large value, whole: for the commands that
/// need the value whole (RENAME and COPY while replicas are fed, and
/// those of a value the transaction set whole), and for the reads of a
/// part of an EXEC across pollers ([`Poller::txn_read_whole`]); the reads
/// otherwise stream it ([`Poller::txn_stream`]), EXPIRE and its kin, and
/// RENAME and COPY otherwise, take its head ([`Poller::txn_expiry`],
/// [`Poller::txn_move_view`]).
pub(super) struct Assembly {
    req: Request,
    entry: Entry,
    /// The head record's key and fields.
    key: Vec<u8>,
    meta: RecordMeta,
    rec_len: u64,
    head: LargeHead,
    /// Pieces a transaction changed (`large_edit::LargeView`), by number:
    /// taken from here, not read.
    changed: BTreeMap<usize, Vec<u8>>,
    /// The reply: bulk header, value (or the range of it read), CRLF (a
    /// whole read's ends after the value until it is read).
    out: Vec<u8>,
    /// Where the value starts in `out`.
    at: usize,
    /// The bytes of the value read: from `lo`, `len` of them.
    lo: u64,
    len: u64,
    /// The pieces to read: the next to issue, and the last (inclusive).
    next: usize,
    last: usize,
    in_flight: usize,
    failed: Option<String>,
    /// A read of a part of an EXEC across pollers.
    whole: Option<WholeRead>,
}

impl<E: Engine> Poller<E> {
    /// SET of a value too large for a record: its pieces go out with the
    /// next commit; the reply `ok` waits for its head's commit, and the
    /// key's later requests wait with it. One that finds too few free
    /// segments waits, as small writes do, for eviction or compaction to
    /// make room, unless the store could not hold it at all.
    pub(super) fn set_large(&mut self, req: Request, expire_ms: u64, ok: Reply) {
        let Op::Set {
            key, value, fed, ..
        } = &req.op
        else {
            unreachable!("a SET")
        };
        if let Some(fed) = fed {
            let id = fed.feed.id;
            // Its head may go in a later turn: the key's own entry, as
            // this turn resolved it, is the one it replaces.
            let own = self.ks.track_own(req.pid, &req.hash);
            return self.set_fed(id, req, expire_ms, ok, own);
        }
        let w = Waiter::new(&req, ok, Some(req.hash.tag));
        match self
            .ks
            .write_large(req.pid, &req.hash, key, value.clone(), expire_ms, w)
        {
            Ok(()) => {
                self.busy.entry(req.hash.tag).or_default();
                // The read of SET … GET that led here leaves it held.
                self.edits.writing(req.hash.tag);
                if self.shared.repl.feeding() {
                    let mut out = Vec::new();
                    super::replicated(&mut out, key, value, expire_ms, false);
                    self.large_stream.insert(req.hash.tag, out);
                }
            }
            Err((_, WriteError::Full))
                if self.ks.could_hold_large(value.len()) && self.may_defer() =>
            {
                self.defer(req)
            }
            Err((w, e)) => {
                let reply = self.refusal(e);
                self.respond(w.to, w.id, w.part, reply);
            }
        }
    }

    /// The beginning of a SET whose value is still arriving: its piece
    /// segments are taken (or it waits for them, as a deferred write
    /// does), and its pieces written as they come ([`Poller::pump_feed`]).
    pub(super) fn feed_begin(&mut self, req: Request) {
        let Op::FeedBegin { feed } = req.op else {
            unreachable!("a feed")
        };
        let id = feed.id;
        let set = FedSet {
            feed,
            pid: req.pid,
            pieces: None,
            since: self.ks.now(),
            deferred: false,
            set: None,
            kept: self.shared.repl.feeding().then(Vec::new),
        };
        self.feeds.insert(id, set);
        self.pump_feed(id);
    }

    /// Since when the oldest feed waits for free segments.
    pub(super) fn feed_waiting(&self) -> Option<std::time::Instant> {
        (self.feeds.values())
            .filter(|f| f.pieces.is_none())
            .map(|f| f.since)
            .min()
    }

    /// The feeds: pieces that came are queued, as far as the device keeps
    /// up. Returns whether any moved.
    pub(super) fn pump_feeds(&mut self) -> bool {
        if self.feeds.is_empty() {
            return false;
        }
        let ids: Vec<u64> = self.feeds.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.pump_feed(id);
        }
        any
    }

    /// Feed `id`: its segments are taken once there is room (refused as a
    /// deferred write is, after the same wait), then each piece that came
    /// is queued while few pieces wait for the device; once all are and
    /// the SET has come, the SET is written. Abandoned (its connection
    /// went, or its SET was not written), its pieces are freed. Returns
    /// whether it moved.
    fn pump_feed(&mut self, id: u64) -> bool {
        let Some(f) = self.feeds.get_mut(&id) else {
            return false;
        };
        if f.feed.abandoned() && f.set.is_none() {
            let f = self.feeds.remove(&id).expect("a feed");
            if let Some(p) = f.pieces {
                self.ks.abort_feed(p);
            }
            return true;
        }
        if f.pieces.is_none() {
            let len = f.feed.len;
            match self.ks.begin_feed(f.pid, len) {
                Ok(p) => f.pieces = Some(p),
                Err(WriteError::Full)
                    if self.ks.could_hold_large(len as usize)
                        && self.ks.now().saturating_duration_since(f.since) <= super::MAX_DEFER =>
                {
                    if !std::mem::replace(&mut f.deferred, true) {
                        self.stats().writes_deferred.fetch_add(1, Relaxed);
                    }
                    return false;
                }
                Err(e) => {
                    self.refuse_feed(id, e);
                    return true;
                }
            }
        }
        let full_piece = self.ks.piece_capacity() + self.ks.block();
        let most = (FEED_PENDING / full_piece).max(2) as usize;
        let mut any = false;
        let f = self.feeds.get_mut(&id).expect("a feed");
        let p = f.pieces.as_mut().expect("begun");
        while !p.complete() && self.ks.pieces_pending() < most {
            let Some((data, wake)) = f.feed.take() else {
                break;
            };
            if let Some(kept) = &mut f.kept {
                kept.push(data.clone());
            }
            if let Err(e) = self.ks.feed_piece(p, data) {
                // Writes since the value began took the room it had.
                self.refuse_feed(id, e);
                return true;
            }
            if wake {
                self.shared.conns[f.feed.thread as usize].ring();
            }
            any = true;
        }
        if p.complete() && f.set.is_some() {
            let (req, expire_ms, ok, own) = f.set.take().expect("a SET");
            self.set_fed(id, req, expire_ms, ok, own);
            any = true;
        }
        any
    }

    /// Refuses feed `id` for `e`: its connection drops the rest of the
    /// value, the pieces queued are freed, and its SET, if it came, gets
    /// the refusal (later, when it comes).
    fn refuse_feed(&mut self, id: u64, e: WriteError) {
        let f = self.feeds.remove(&id).expect("a feed");
        let len = f.feed.len as usize;
        let behind = matches!(e, WriteError::Full) && self.ks.could_hold_large(len);
        let msg = match self.refusal(e) {
            _ if behind => text::COMPACTION_BEHIND.to_string(),
            Reply::Error(msg) => msg,
            _ => text::STORE_FULL.to_string(),
        };
        if f.feed.refuse(msg.clone()) {
            self.shared.conns[f.feed.thread as usize].ring();
        }
        if let Some(p) = f.pieces {
            self.ks.abort_feed(p);
        }
        // A SET that came meanwhile gets the refusal.
        if let Some((req, _, _, own)) = f.set {
            if let Some(at) = own {
                self.ks.unfollow(req.pid, at);
            }
            let tag = req.hash.tag;
            self.reply(&req, Reply::Error(msg));
            self.consume_fed(req);
            self.edits.written(tag);
            self.release(tag);
        }
    }

    /// The SET of feed `id` (`req`, setting expiry `expire_ms`, replying
    /// `ok`): its head is written once every piece is queued, and the key
    /// is held from now to its acknowledgement. A feed refused is answered
    /// with its refusal.
    fn set_fed(&mut self, id: u64, req: Request, expire_ms: u64, ok: Reply, own: Option<u64>) {
        let tag = req.hash.tag;
        let Some(f) = self.feeds.get_mut(&id) else {
            if let Some(at) = own {
                self.ks.unfollow(req.pid, at);
            }
            let Op::Set { fed: Some(fed), .. } = &req.op else {
                unreachable!("a fed SET")
            };
            let msg = fed.feed.refusal().unwrap_or(text::STORE_FULL).to_string();
            self.reply(&req, Reply::Error(msg));
            return self.consume_fed(req);
        };
        self.busy.entry(tag).or_default();
        // The read of SET … GET that led here leaves it held.
        self.edits.writing(tag);
        if !f.pieces.as_ref().is_some_and(LargeFeed::complete) {
            f.set = Some((req, expire_ms, ok, own));
            return;
        }
        let f = self.feeds.remove(&id).expect("a feed");
        let pieces = f.pieces.expect("begun");
        let Op::Set { key, .. } = &req.op else {
            unreachable!("a SET")
        };
        let key = key.clone();
        let feeding = self.shared.repl.feeding();
        let w = Waiter::new(&req, ok, Some(tag));
        self.ks
            .finish_feed(pieces, &req.hash, &key, expire_ms, w, own);
        if feeding && f.kept.is_none() && !self.shared.repl.is_replica() {
            // A replica came while the value arrived: its first pieces
            // were not kept for the stream, which cannot carry the value
            // whole. The SET is written, and the replicas copy again.
            (self.shared.repl).restart_stream("a large SET arrived while a replica's feed began");
        }
        if let Some(kept) = f.kept.filter(|_| feeding) {
            let mut value = Vec::with_capacity(f.feed.len as usize);
            kept.iter().for_each(|p| value.extend_from_slice(p));
            let mut out = Vec::new();
            super::replicated(&mut out, &key, &value, expire_ms, false);
            self.large_stream.insert(tag, out);
        }
        self.consume_fed(req);
    }

    /// A fed SET's request is done with: its feed is not abandoned.
    fn consume_fed(&mut self, mut req: Request) {
        if let Op::Set { fed, .. } = &mut req.op {
            if let Some(fed) = fed.take() {
                fed.consume();
            }
        }
    }

    /// A record just read is the head of a large value: STRLEN, OBJECT
    /// and EXPIRETIME answer from it; the commands that send its bytes
    /// stream them.
    pub(super) fn large_read(&mut self, req: Request, entry: Entry, rec: &Record) {
        let Some(head) = LargeHead::decode(rec.value) else {
            return self.corrupt(&req, entry, &"large value head unreadable");
        };
        if let Op::Strlen { .. } = req.op {
            self.count_lookup(true);
            return self.reply(&req, Reply::Int(head.total_len as i64));
        }
        if let Op::Object { .. } = req.op {
            self.count_lookup(true);
        }
        match &req.op {
            // More than 44 bytes, no integer: Redis's `raw`, not shared.
            Op::Object {
                what: ObjectInfo::Refcount,
                ..
            } => return self.reply(&req, Reply::Int(1)),
            Op::Object { .. } => {
                return self.reply(&req, Reply::Encoded(b"$3\r\nraw\r\n".to_vec()))
            }
            Op::ExpireTime { .. } => return self.strings(req, Some((&[], rec.meta.expire_ms)), 0),
            Op::GetEx {
                expiry: GetExpiry::Invalid(msg),
                ..
            } => {
                let msg = msg.clone();
                return self.reply(&req, Reply::Error(msg));
            }
            _ => self.count_large_read(&req.op),
        }
        if is_sub(&req) {
            return self.txn_large_read(req, entry, rec, head);
        }
        let cap = self.ks.piece_capacity();
        let (lo, len) = match req.op {
            Op::GetRange { start, end, .. } => {
                match super::range_bounds(head.total_len, start, end) {
                    Some((first, last)) => (first, last - first + 1),
                    None => return self.reply(&req, Reply::Encoded(b"$0\r\n\r\n".to_vec())),
                }
            }
            _ => (0, head.total_len),
        };
        let (first, last) = ((lo / cap) as usize, ((lo + len - 1) / cap) as usize);
        if last >= head.pieces.len() {
            return self.corrupt(&req, entry, &"large value head inconsistent");
        }
        let (frame, total, before) = match req.op {
            Op::Dump { .. } => {
                let (st, total, before) = Streamed::start(len);
                (Frame::Dump(st), total, before)
            }
            _ => (Frame::Bulk, len, Vec::new()),
        };
        let mut header = Vec::with_capacity(before.len() + 16);
        crate::resp::bulk_header(&mut header, total as usize);
        header.extend_from_slice(&before);
        let Some(head) = self.ks.pin_pieces(entry.offset, head.value_id) else {
            // Superseded since its read (its pieces may be gone already):
            // the command runs again, on the key's new state.
            if self.ks.lookup(req.pid, &req.hash) == Some(entry) {
                return self.corrupt(&req, entry, &"large value head not held");
            }
            return self.handle_accepted(req);
        };
        let now = self.ks.now_ms();
        let write = match &req.op {
            Op::GetDel { .. } => Some(true),
            Op::GetEx {
                expiry: GetExpiry::At(at),
                ..
            } => Some(*at <= now),
            Op::GetEx {
                expiry: GetExpiry::Persist,
                ..
            }
            | Op::Set { .. } => Some(false),
            _ => None,
        };
        let id = self.next_assembly;
        self.next_assembly += 1;
        let stream = Stream {
            to: req.from,
            id: req.id,
            part: req.part,
            offset: entry.offset,
            pins: Arc::clone(&head),
            head,
            changed: BTreeMap::new(),
            in_txn: false,
            then: None,
            flow: Flow::new(self.id),
            header,
            frame,
            lo,
            len,
            next: first,
            send: first,
            end: last + 1,
            in_flight: 0,
            ready: BTreeMap::new(),
            sent: 0,
            ahead: 0,
            open: write.is_none(),
            failed: None,
        };
        self.streams.insert(id, stream);
        let Some(delete) = write else {
            self.pump_stream(id);
            return;
        };
        // The command's write; its reply, nil when it succeeds, opens the
        // gate (see `gate_reply`).
        let slot = (req.from, req.id, req.part);
        if let Some(old) = self.gates.insert(slot, id) {
            self.drop_stream(old);
        }
        match &req.op {
            _ if delete => self.delete(req, Reply::Nil),
            // A head with the new expiry, sharing the pieces.
            Op::GetEx { expiry, .. } => {
                let at = match expiry {
                    GetExpiry::At(at) => *at,
                    _ => 0,
                };
                let result = match at != 0 || rec.meta.expire_ms != 0 {
                    true => self.write_expiry(&req, rec, at),
                    false => Ok(()),
                };
                self.acknowledge_now(req, result, Reply::Nil)
            }
            _ => self.set(req, Some(entry), None),
        }
        // A write put aside for want of room runs again later, whole.
        let deferred = self.deferred.back().map(|(_, r)| (r.from, r.id, r.part));
        if deferred == Some(slot) && self.gates.get(&slot) == Some(&id) {
            self.gates.remove(&slot);
            self.drop_stream(id);
        }
    }

    /// The reply to a gated stream's write (see [`Poller::large_read`]):
    /// nil, it is durable, and the stream starts; else the reply is the
    /// command's, and the stream ends unsent.
    pub(super) fn gate_reply(&mut self, id: u64, reply: Reply) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if let Reply::Nil = reply {
            s.open = true;
            self.pump_stream(id);
            return;
        }
        let (to, rid, part) = (s.to, s.id, s.part);
        self.drop_stream(id);
        self.respond(to, rid, part, reply);
    }

    /// Ends stream `id`, not open yet: its pins go.
    pub(super) fn drop_stream(&mut self, id: u64) {
        if let Some(s) = self.streams.remove(&id) {
            debug_assert!(!s.open && s.in_flight == 0);
            self.ks.unpin_pieces(&s.pins);
        }
    }

    /// Reads of a transaction's large value (an assembly), whole: the
    /// reply, or the value for the command to go on with.
    fn assemble(&mut self, req: Request, entry: Entry, rec: &Record, head: LargeHead) {
        let (key, total_len) = (rec.key.to_vec(), head.total_len);
        let found = (key, rec.meta, rec.len);
        self.assemble_view(req, entry, found, head, total_len, BTreeMap::new());
    }

    /// Reads a large value of `total_len` bytes whole for a command of a
    /// transaction: the pieces in `changed` from there (a
    /// `large_edit::LargeView`'s), the others `head`'s. `found`: the head
    /// record's key, fields and length.
    pub(super) fn assemble_view(
        &mut self,
        req: Request,
        entry: Entry,
        found: (Vec<u8>, RecordMeta, u64),
        head: LargeHead,
        total_len: u64,
        changed: BTreeMap<usize, Vec<u8>>,
    ) {
        let cap = self.ks.piece_capacity();
        let (lo, len) = match req.op {
            Op::GetRange { start, end, .. } => match super::range_bounds(total_len, start, end) {
                Some((first, last)) => (first, last - first + 1),
                None => return self.reply(&req, Reply::Encoded(b"$0\r\n\r\n".to_vec())),
            },
            _ => (0, total_len),
        };
        let (next, last) = ((lo / cap) as usize, ((lo + len.max(1) - 1) / cap) as usize);
        if (next..=last).any(|i| i >= head.pieces.len() && !changed.contains_key(&i)) {
            return self.corrupt(&req, entry, &"large value head inconsistent");
        }
        let mut bulk_header = Vec::new();
        crate::resp::bulk_header(&mut bulk_header, len as usize);
        let Some(mut out) = self.reply_buffer(&req, &bulk_header, len, 2) else {
            return;
        };
        out.extend_from_slice(b"\r\n");
        self.start_assembly(Assembly {
            req,
            entry,
            key: found.0,
            meta: found.1,
            rec_len: found.2,
            head,
            changed,
            out,
            at: bulk_header.len(),
            lo,
            len,
            next,
            last,
            in_flight: 0,
            failed: None,
            whole: None,
        });
    }

    /// A reply's buffer: `header`, then room for `len` bytes of value
    /// (zeros, the pieces copied over them) and `after` more; `None` when
    /// the memory cannot be had (`req` is answered the error).
    fn reply_buffer(
        &mut self,
        req: &Request,
        header: &[u8],
        len: u64,
        after: usize,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let want = (header.len() + after).checked_add(len as usize);
        if want.is_none_or(|want| out.try_reserve_exact(want).is_err()) {
            let msg = text::no_memory_for_value(len);
            self.reply(req, Reply::Error(msg));
            return None;
        }
        out.extend_from_slice(header);
        out.resize(header.len() + len as usize, 0);
        Some(out)
    }

    /// Starts assembly `a`: its piece reads go out.
    fn start_assembly(&mut self, a: Assembly) {
        let id = self.next_assembly;
        self.next_assembly += 1;
        self.assemblies.insert(id, a);
        self.read_pieces(id);
    }

    /// Issues piece reads of assembly `id` up to [`PIECE_DEPTH`]; one that
    /// can have no slot, buffer or room at the engine waits for the next
    /// turn (or, with none in flight, for [`Poller::retry_assemblies`]).
    fn read_pieces(&mut self, id: u64) {
        let cap = self.ks.piece_capacity();
        loop {
            let a = self.assemblies.get_mut(&id).expect("an assembly");
            while a.next <= a.last && a.changed.contains_key(&a.next) {
                a.next += 1;
            }
            if a.failed.is_some() || a.next > a.last || a.in_flight >= PIECE_DEPTH {
                break;
            }
            let (i, seg) = (a.next, a.head.pieces[a.next]);
            let len = a.head.piece_len(i, cap);
            match self.issue_piece_read(id, i, seg, len) {
                Ok(true) => {
                    let a = self.assemblies.get_mut(&id).expect("an assembly");
                    a.next += 1;
                    a.in_flight += 1;
                }
                Ok(false) => {
                    self.stalled_assemblies.push(id);
                    return;
                }
                Err(msg) => {
                    self.assemblies.get_mut(&id).expect("an assembly").failed = Some(msg);
                    break;
                }
            }
        }
        self.finish_assembly_if_done(id);
    }

    /// Assemblies and streams that found no read slot: they try again.
    pub(super) fn retry_assemblies(&mut self) -> bool {
        let stalled = std::mem::take(&mut self.stalled_assemblies);
        let any = !stalled.is_empty();
        for id in stalled {
            if self.assemblies.contains_key(&id) {
                self.read_pieces(id);
            } else if self.streams.contains_key(&id) {
                self.pump_stream(id);
            }
        }
        any
    }

    /// A piece read of read slot `tag` completed; whether it was one.
    pub(super) fn complete_piece_read(&mut self, tag: u32, c: &mut Completion) -> bool {
        let Some((id, i)) = self.piece_reads.remove(&tag) else {
            return false;
        };
        self.free_tags.push(tag);
        if !self.assemblies.contains_key(&id) {
            self.complete_stream_read(id, i, c);
            return true;
        }
        let buf = c.buf.take().expect("a read returns its buffer");
        let cap = self.ks.piece_capacity();
        let a = &self.assemblies[&id];
        let checked = self.checked_piece(&a.head, i, c, &buf).map(|data| {
            // The part of the piece inside the bytes read.
            let base = i as u64 * cap;
            let from = base.max(a.lo);
            let to = (base + data.len() as u64).min(a.lo + a.len);
            (
                a.at + (from - a.lo) as usize,
                &data[(from - base) as usize..(to - base) as usize],
            )
        });
        let a = self.assemblies.get_mut(&id).expect("an assembly");
        a.in_flight -= 1;
        let checked = checked.map(|(at, src)| a.out[at..at + src.len()].copy_from_slice(src));
        drop(buf); // back to the engine's pool
        if let Err(msg) = checked {
            let a = self.assemblies.get_mut(&id).expect("an assembly");
            a.failed.get_or_insert(msg);
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        self.read_pieces(id);
        true
    }

    /// Once every piece read of assembly `id` is in, answers its request.
    fn finish_assembly_if_done(&mut self, id: u64) {
        let a = &self.assemblies[&id];
        let all = a.next > a.last;
        if a.in_flight > 0 || !(all || a.failed.is_some()) {
            return;
        }
        // The transaction holds the key.
        let mut a = self.assemblies.remove(&id).expect("an assembly");
        // The pieces the transaction changed, over those read.
        let cap = self.ks.piece_capacity();
        for (&i, piece) in &a.changed {
            let base = i as u64 * cap;
            let (from, to) = (
                base.max(a.lo),
                (base + piece.len() as u64).min(a.lo + a.len),
            );
            if from < to {
                let at = a.at + (from - a.lo) as usize;
                let src = &piece[(from - base) as usize..(to - base) as usize];
                a.out[at..at + src.len()].copy_from_slice(src);
            }
        }
        match a.failed {
            Some(msg) => {
                let entry = a.entry;
                self.corrupt(&a.req, entry, &msg);
                if let Some(w) = a.whole {
                    self.ks.unpin_pieces(&w.pins);
                }
            }
            None => self.assembled(a),
        }
    }

    /// The value of assembly `a` is whole: its request goes on.
    fn assembled(&mut self, mut a: Assembly) {
        if let Some(w) = a.whole.take() {
            return self.read_whole_done(a, w);
        }
        let moved = matches!(a.req.op, Op::Move { .. });
        let rec = Record {
            meta: RecordMeta {
                flags: a.meta.flags & !FLAG_LARGE,
                ..a.meta
            },
            key: &a.key,
            value: &a.out[a.at..a.at + a.len as usize],
            len: a.rec_len,
        };
        match moved {
            true => self.move_found(a.req, &rec),
            false => self.finish_record(a.req, a.entry, &rec),
        }
    }

    /// EXPIRE, PEXPIRE or PERSIST on a large value (not one that deletes
    /// it): a new head with the new expiry, sharing the pieces.
    /// Inside a transaction, the key's view takes the expiry instead (a
    /// `LargeView` of the value, its pieces pinned and unchanged), and
    /// the head is written with the transaction's other writes.
    pub(super) fn expire_large(
        &mut self,
        req: Request,
        entry: Entry,
        rec: &Record,
        at_ms: u64,
        persist: bool,
    ) {
        let at = if persist { 0 } else { at_ms };
        if is_sub(&req) {
            let Some(pins) = self.pin_stored(&req, entry, rec) else {
                return;
            };
            self.txn_expiry(&req, &pins, at);
            self.ks.unpin_pieces(&pins);
            return self.reply(&req, Reply::Int(1));
        }
        let result = self
            .ks
            .write_head(req.pid, &req.hash, rec.key, rec.value, at);
        if result.is_ok() {
            let key = rec.key;
            let seq = self.ks.next_seq() - 1;
            (self.repl_out).push(&self.shared.repl, seq, |out| {
                let at = at.to_string();
                match persist {
                    true => crate::resp::encode::command(out, &[b"PERSIST", key]),
                    false => crate::resp::encode::command(out, &[b"PEXPIREAT", key, at.as_bytes()]),
                }
            });
        }
        self.acknowledge(req, result, Reply::Int(1));
    }

    /// RENAME, RENAMENX or COPY of a large value: a head under the
    /// destination sharing the pieces (and for a rename, a tombstone for
    /// the source), in one commit.
    pub(super) fn move_large(&mut self, req: Request, rec: &Record, ok: Reply) {
        let Op::Move { kind, .. } = &req.op else {
            unreachable!()
        };
        let copy = matches!(kind, MoveKind::Copy { .. });
        let expire = rec.meta.expire_ms;
        let word = self.moved_access(&req);
        let Op::Move { key, to, .. } = &req.op else {
            unreachable!()
        };
        let mut result = self
            .ks
            .write_head(to.pid, &to.hash, &to.key, rec.value, expire);
        if result.is_ok() {
            self.ks.set_access(to.pid, &to.hash, word);
        }
        if result.is_ok() && !copy {
            result = self.ks.write(req.pid, &req.hash, key, &[], 0, true);
        }
        if result.is_ok() && self.shared.repl.feeding() {
            // The stream carries keys' states, and a large value's state
            // is its bytes: read whole, they go as a SET (large_edit.rs).
            let seq = self.ks.next_seq() - 1;
            let tags = [req.hash.tag, to.hash.tag];
            let from = (!copy).then_some(&key[..]);
            if let Err(msg) = self.send_moved(tags, from, &to.key, rec.value, expire, seq) {
                self.moved_not_replicated(&msg);
            }
        }
        self.acknowledge_now(req, result, ok)
    }
}

impl<E: Engine> Poller<E> {
    /// Pins the pieces of `rec`, the head of `req`'s key stored before the
    /// running transaction, as the index has it now (compaction may have
    /// moved it); `None` when it cannot (`req` is answered the error).
    pub(super) fn pin_stored(
        &mut self,
        req: &Request,
        entry: Entry,
        rec: &Record,
    ) -> Option<Arc<LargeHead>> {
        let Some(head) = LargeHead::decode(rec.value) else {
            self.corrupt(req, entry, &"large value head unreadable");
            return None;
        };
        let live = self.ks.lookup(req.pid, &req.hash).unwrap_or(entry);
        let pins = self.ks.pin_pieces(live.offset, head.value_id);
        if pins.is_none() {
            self.corrupt(req, entry, &"large value head not held");
        }
        pins
    }

    /// A command of a transaction read the head of a large value stored
    /// before: GET, GETRANGE, GETDEL, DUMP, SET … GET and GETEX stream the
    /// value after EXEC's other replies (or, in a part of an EXEC across
    /// pollers, read it whole into EXEC's reply); the others (RENAME and
    /// COPY while replicas are fed) read it whole.
    fn txn_large_read(&mut self, req: Request, entry: Entry, rec: &Record, head: LargeHead) {
        if !streamed_in_txn(&req.op) {
            return self.assemble(req, entry, rec, head);
        }
        // The head as the index has it now (compaction may have moved it).
        let live = self.ks.lookup(req.pid, &req.hash).unwrap_or(entry);
        let Some(pins) = self.ks.pin_pieces(live.offset, head.value_id) else {
            return self.corrupt(&req, entry, &"large value head not held");
        };
        let expire_ms = rec.meta.expire_ms;
        self.txn_stream(
            req,
            entry,
            Arc::clone(&pins),
            pins,
            BTreeMap::new(),
            expire_ms,
        );
    }

    /// Streams the value `head` (the bytes of pieces `changed` from
    /// there, the others read) for a read of the running transaction,
    /// after EXEC's other replies and its reads before; `pins`, pinned
    /// by the caller, are let go when the stream ends; `expire_ms`, the
    /// value's expiry. The command's write (GETDEL's, SET … GET's,
    /// GETEX's) is made now; its reply stands in EXEC's for the stream
    /// (`txn_reply`). In a part of an EXEC across pollers, the value is
    /// read whole instead ([`Poller::txn_read_whole`]).
    pub(super) fn txn_stream(
        &mut self,
        req: Request,
        entry: Entry,
        head: Arc<LargeHead>,
        pins: Arc<LargeHead>,
        changed: BTreeMap<usize, Vec<u8>>,
        expire_ms: u64,
    ) {
        let pinned = Arc::clone(&pins);
        let cap = self.ks.piece_capacity();
        let (lo, len) = match req.op {
            Op::GetRange { start, end, .. } => {
                match super::range_bounds(head.total_len, start, end) {
                    Some((first, last)) => (first, last - first + 1),
                    None => {
                        self.ks.unpin_pieces(&pins);
                        return self.reply(&req, Reply::Encoded(b"$0\r\n\r\n".to_vec()));
                    }
                }
            }
            _ => (0, head.total_len),
        };
        let (first, last) = ((lo / cap) as usize, ((lo + len - 1) / cap) as usize);
        if (first..=last).any(|i| i >= head.pieces.len()) {
            self.ks.unpin_pieces(&pins);
            return self.corrupt(&req, entry, &"large value head inconsistent");
        }
        let (frame, total, before) = match req.op {
            Op::Dump { .. } => {
                let (st, total, before) = Streamed::start(len);
                (Frame::Dump(st), total, before)
            }
            _ => (Frame::Bulk, len, Vec::new()),
        };
        let mut header = Vec::with_capacity(before.len() + 16);
        crate::resp::bulk_header(&mut header, total as usize);
        header.extend_from_slice(&before);
        let t = self.txn.as_mut().expect("a transaction runs");
        if super::cross::is_cross(&t.exec) {
            let dump = match frame {
                Frame::Dump(st) => Some(st),
                Frame::Bulk => None,
            };
            let whole = WholeRead {
                pins,
                expire_ms,
                dump,
            };
            let span = (header, lo, len, first, last);
            return self.txn_read_whole(req, entry, head, changed, span, whole);
        }
        let exec = &t.exec;
        let id = self.next_assembly;
        self.next_assembly += 1;
        let stream = Stream {
            to: exec.from,
            id: exec.id,
            part: exec.part,
            offset: entry.offset,
            head,
            pins,
            changed,
            in_txn: true,
            then: None,
            flow: Flow::new(self.id),
            header,
            frame,
            lo,
            len,
            next: first,
            send: first,
            end: last + 1,
            in_flight: 0,
            ready: BTreeMap::new(),
            sent: 0,
            ahead: 0,
            open: false,
            failed: None,
        };
        self.streams.insert(id, stream);
        t.streams.push(id);
        t.gated = Some((req.id & !super::TXN_PART, req.part, Gated::Stream(id)));
        self.txn_read_write(req, entry, &pinned, expire_ms);
    }

    /// The write of a transaction's read of a large value (GETDEL's
    /// delete, GETEX's expiry, SET … GET's set; `pinned`: the value's
    /// pieces, `expire_ms`: its expiry), or none: its reply (nil when it
    /// succeeds) stands for the read's (`Txn::gated`).
    fn txn_read_write(
        &mut self,
        req: Request,
        entry: Entry,
        pinned: &Arc<LargeHead>,
        expire_ms: u64,
    ) {
        let now = self.ks.now_ms();
        match &req.op {
            Op::GetDel { .. } => self.delete(req, Reply::Nil),
            Op::GetEx {
                expiry: GetExpiry::At(at),
                ..
            } if *at <= now => self.delete(req, Reply::Nil),
            Op::GetEx {
                expiry: GetExpiry::At(at),
                ..
            } => {
                self.txn_expiry(&req, pinned, *at);
                self.reply(&req, Reply::Nil)
            }
            Op::GetEx {
                expiry: GetExpiry::Persist,
                ..
            } => {
                if expire_ms != 0 {
                    self.txn_expiry(&req, pinned, 0);
                }
                self.reply(&req, Reply::Nil)
            }
            Op::Set { .. } => self.set(req, Some(entry), None),
            _ => self.reply(&req, Reply::Nil),
        }
    }

    /// Reads the value `head` whole (the bytes of pieces `changed` from
    /// there, the others read) for a read of a part of an EXEC across
    /// pollers, whose reply is merged with the other parts' and so cannot
    /// stream: once read, the command's write is made
    /// ([`Poller::txn_read_write`]) and the value goes into its place in
    /// EXEC's reply. `span`: the reply's bytes before the value, and the
    /// value's bytes read (from, how many) and pieces (first, last).
    /// The transaction waits meanwhile, its keys held.
    fn txn_read_whole(
        &mut self,
        req: Request,
        entry: Entry,
        head: Arc<LargeHead>,
        changed: BTreeMap<usize, Vec<u8>>,
        span: (Vec<u8>, u64, u64, usize, usize),
        whole: WholeRead,
    ) {
        let (header, lo, len, next, last) = span;
        // Room for DUMP's last bytes and the CRLF.
        let Some(out) = self.reply_buffer(&req, &header, len, 12) else {
            self.ks.unpin_pieces(&whole.pins);
            return;
        };
        self.start_assembly(Assembly {
            req,
            entry,
            // Not a record: the reply is the value's.
            key: Vec::new(),
            meta: RecordMeta {
                gen: 0,
                seq: 0,
                expire_ms: whole.expire_ms,
                flags: 0,
            },
            rec_len: 0,
            head: (*head).clone(),
            changed,
            out,
            at: header.len(),
            lo,
            len,
            next,
            last,
            in_flight: 0,
            failed: None,
            whole: Some(whole),
        });
    }

    /// A whole read (`a`, `w`) is read: the command's write, then the
    /// reply, in place of the write's nil.
    fn read_whole_done(&mut self, a: Assembly, w: WholeRead) {
        let mut out = a.out;
        if let Some(mut st) = w.dump {
            st.update(&out[a.at..a.at + a.len as usize]);
            out.extend_from_slice(&st.finish());
        }
        out.extend_from_slice(b"\r\n");
        let t = self.txn.as_mut().expect("a transaction runs");
        let (id, part) = (a.req.id & !super::TXN_PART, a.req.part);
        t.gated = Some((id, part, Gated::Whole(out)));
        self.txn_read_write(a.req, a.entry, &w.pins, w.expire_ms);
        self.ks.unpin_pieces(&w.pins);
    }

    /// The reply of a transaction's command standing for a large value's
    /// read `read` (its write's: nil, or an error): the read's place in
    /// EXEC's reply, or the error, and the read ends unsent.
    pub(super) fn gated_reply(&mut self, read: Gated, reply: Reply) -> Reply {
        match (read, reply) {
            (Gated::Stream(id), e @ Reply::Error(_)) => {
                let t = self.txn.as_mut().expect("a transaction runs");
                t.streams.retain(|&s| s != id);
                self.drop_stream(id);
                e
            }
            (Gated::Stream(id), _) => {
                let flow = Arc::clone(&self.streams[&id].flow);
                Reply::Part(Vec::new(), FlowRef(flow))
            }
            (Gated::Whole(_), e @ Reply::Error(_)) => e,
            (Gated::Whole(out), _) => Reply::Encoded(out),
        }
    }

    /// Streams `ids` of one transaction, each opened once the one before
    /// it is sent whole: returns the first.
    pub(super) fn chain_streams(&mut self, ids: &[u64]) -> u64 {
        for w in ids.windows(2) {
            self.streams.get_mut(&w[0]).expect("a stream").then = Some(w[1]);
        }
        ids[0]
    }

    /// EXEC's reply went out: its streams (from `first`) start if it ran,
    /// else they end unsent.
    pub(super) fn exec_answered(&mut self, first: u64, ran: bool) {
        match ran {
            true => self.open_stream(first),
            false => self.drop_chain(first),
        }
    }

    /// Stream `id`, waiting for its turn, starts.
    fn open_stream(&mut self, id: u64) {
        self.streams.get_mut(&id).expect("a stream").open = true;
        self.pump_stream(id);
    }

    /// Streams from `id` on, not opened, end unsent: their pins go.
    fn drop_chain(&mut self, id: u64) {
        let mut next = Some(id);
        while let Some(id) = next {
            let s = self.streams.remove(&id).expect("a stream");
            self.ks.unpin_pieces(&s.pins);
            next = s.then;
        }
    }
}

/// Whether a transaction's command streams the large value it reads
/// (see [`Poller::txn_large_read`]).
pub(super) fn streamed_in_txn(op: &Op) -> bool {
    matches!(
        op,
        Op::Get { .. }
            | Op::GetRange { .. }
            | Op::GetDel { .. }
            | Op::Dump { .. }
            | Op::Set { .. }
            | Op::GetEx {
                expiry: GetExpiry::Keep | GetExpiry::Persist | GetExpiry::At(_),
                ..
            }
    )
}

impl<E: Engine> Poller<E> {
    /// Counts a read of a large value's bytes in INFO's `keyspace_hits`
    /// (and GET's in the reads), once, where the read starts: whether it
    /// is then streamed or, inside a transaction, read whole.
    pub(super) fn count_large_read(&self, op: &Op) {
        let st = self.stats();
        match op {
            Op::Get { .. } | Op::GetDel { .. } => {
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
            }
            Op::GetEx { .. }
            | Op::GetRange { .. }
            | Op::Dump { .. }
            | Op::Set {
                reply: SetReply::Old,
                ..
            } => {
                st.hits.fetch_add(1, Relaxed);
            }
            _ => {}
        }
    }

    /// Bytes a stream may have read ahead of its client.
    fn stream_window(&self) -> u64 {
        let cap = self.ks.piece_capacity();
        let mut window = STREAM_WINDOW * cap;
        let limit = self.shared.cfg.conns.limits.output_limit() as u64;
        if limit > 0 {
            window = window.min(limit / 2);
        }
        window.max(cap)
    }

    /// Reads the next pieces of stream `id` as far as its window and
    /// [`PIECE_DEPTH`] allow (at least one when nothing is ahead of the
    /// client); ends the stream when it is done, failed or its client has
    /// gone. Returns whether it issued a read.
    fn pump_stream(&mut self, id: u64) -> bool {
        let cap = self.ks.piece_capacity();
        let window = self.stream_window();
        let mut issued = false;
        loop {
            let s = self.streams.get_mut(&id).expect("a stream");
            // The connection holds a reference while it has the reply.
            if s.sent > 0 && s.failed.is_none() && Arc::strong_count(&s.flow) == 1 {
                s.failed = Some(String::new());
            }
            if !s.open || s.failed.is_some() || s.next == s.end || s.in_flight >= PIECE_DEPTH {
                break;
            }
            let (_, len) = s.span(s.next, cap);
            // Ahead of the client by the window at most: it has taken
            // all but `window` of what is sent or read once this is.
            let want = (s.sent + s.ahead + len).saturating_sub(window);
            if want > 0 && !s.flow.wait_for(want) {
                break;
            }
            if let Some(data) = s.changed.get(&s.next) {
                // Changed by the transaction: at hand.
                let (i, out) = (s.next, s.piece_out(s.next, data, cap));
                s.ready.insert(i, out);
                s.next += 1;
                s.ahead += len;
                issued = true;
                self.send_ready(id);
                continue;
            }
            let (i, seg) = (s.next, s.head.pieces[s.next]);
            let piece_len = s.head.piece_len(i, cap);
            match self.issue_piece_read(id, i, seg, piece_len) {
                Ok(true) => {
                    let s = self.streams.get_mut(&id).expect("a stream");
                    s.next += 1;
                    s.in_flight += 1;
                    s.ahead += len;
                    issued = true;
                }
                Ok(false) => {
                    self.stalled_assemblies.push(id);
                    break;
                }
                Err(msg) => {
                    self.streams.get_mut(&id).expect("a stream").failed = Some(msg);
                    break;
                }
            }
        }
        self.end_stream_if_done(id);
        issued
    }

    /// The streams: those waiting for their client read on once it has.
    /// Returns whether any issued a read.
    pub(super) fn pump_streams(&mut self) -> bool {
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        let mut any = false;
        for id in ids {
            if self.streams.contains_key(&id) {
                any |= self.pump_stream(id);
            }
        }
        any
    }

    /// Issues the read of piece `i` (segment `seg`, `len` bytes of value)
    /// for stream `id`: whether it went out (not: no read slot
    /// or no room at the engine, try again later), or why it cannot.
    fn issue_piece_read(&mut self, id: u64, i: usize, seg: u32, len: u64) -> Result<bool, String> {
        let block = self.ks.block();
        let len = block + len.next_multiple_of(block);
        let Some(tag) = self.free_tags.pop() else {
            return Ok(false);
        };
        let off = self.shared.sb.segment_offset(seg);
        let eng = self.ks.engine();
        let buf = match eng.alloc(len as usize) {
            Ok(buf) => buf,
            Err(e) => {
                self.free_tags.push(tag);
                return Err(format!("{}: {e}", text::NO_IO_BUFFER));
            }
        };
        if eng.read(off, buf, Tag::Read(tag).encode()).is_err() {
            self.free_tags.push(tag);
            return Ok(false);
        }
        self.ks.count_read(len);
        self.piece_reads.insert(tag, (id, i));
        Ok(true)
    }

    /// Checks piece `i` of a value read into `buf` (`c`'s result): its
    /// header is the one `head` expects, its data its checksum. Returns
    /// the data.
    fn checked_piece<'b>(
        &self,
        head: &LargeHead,
        i: usize,
        c: &Completion,
        buf: &'b [u8],
    ) -> Result<&'b [u8], String> {
        let block = self.ks.block() as usize;
        let uuid = self.shared.sb.uuid;
        let want = head.piece_len(i, self.ks.piece_capacity()) as usize;
        match &c.result {
            Ok(n) if *n == buf.len() => match PieceHeader::decode(&buf[..block], &uuid) {
                Some(h)
                    if h.value_id == head.value_id
                        && h.piece == i as u32
                        && h.len as usize == want =>
                {
                    let data = &buf[block..block + want];
                    if PieceHeader::data_crc(&uuid, data) == h.data_crc {
                        Ok(data)
                    } else {
                        Err(format!("piece {i} of the value fails its checksum"))
                    }
                }
                _ => Err(format!("piece {i} of the value is missing")),
            },
            Ok(n) => Err(format!("short read of {n} of {} bytes", buf.len())),
            Err(e) => Err(format!("I/O error reading a piece: {e}")),
        }
    }

    /// Piece `i` of stream `id` was read (`c`): it is sent once those
    /// before it are.
    fn complete_stream_read(&mut self, id: u64, i: usize, c: &mut Completion) {
        let buf = c.buf.take().expect("a read returns its buffer");
        let cap = self.ks.piece_capacity();
        let s = &self.streams[&id];
        let checked =
            (self.checked_piece(&s.head, i, c, &buf)).map(|data| s.piece_out(i, data, cap));
        drop(buf); // back to the engine's pool
        let s = self.streams.get_mut(&id).expect("a stream");
        s.in_flight -= 1;
        match checked {
            Ok(out) => {
                s.ready.insert(i, out);
            }
            Err(msg) => {
                s.failed.get_or_insert(msg);
                self.ks.counters().io_errors.fetch_add(1, Relaxed);
            }
        }
        self.send_ready(id);
        self.pump_stream(id);
    }

    /// Sends the pieces of stream `id` that are next in order (the last
    /// with the bytes after the value).
    fn send_ready(&mut self, id: u64) {
        let cap = self.ks.piece_capacity();
        loop {
            let s = self.streams.get_mut(&id).expect("a stream");
            if s.failed.is_some() {
                return;
            }
            let Some(mut out) = s.ready.remove(&s.send) else {
                return;
            };
            let first = s.lo / cap == s.send as u64;
            let last = s.send + 1 == s.end;
            if let Frame::Dump(st) = &mut s.frame {
                let skip = if first { s.header.len() } else { 0 };
                st.update(&out[skip..]);
            }
            if last {
                if let Frame::Dump(st) = std::mem::replace(&mut s.frame, Frame::Bulk) {
                    out.extend_from_slice(&st.finish());
                }
                out.extend_from_slice(b"\r\n");
            }
            s.ahead -= s.span(s.send, cap).1;
            s.sent += out.len() as u64;
            s.send += 1;
            let reply = match last {
                true => Reply::Encoded(out),
                false => Reply::Part(out, FlowRef(Arc::clone(&s.flow))),
            };
            let (to, rid, part) = (s.to, s.id, s.part);
            self.respond(to, rid, part, reply);
        }
    }

    /// Ends stream `id` once it is sent whole, or failed (or its client
    /// went) with no read in flight: its pins go.
    fn end_stream_if_done(&mut self, id: u64) {
        let s = &self.streams[&id];
        let done = s.send == s.end;
        if s.in_flight > 0 || !(done || s.failed.is_some()) {
            return;
        }
        let s = self.streams.remove(&id).expect("a stream");
        self.ks.unpin_pieces(&s.pins);
        // A transaction's next read follows, if this one was sent whole.
        match s.then {
            Some(next) if done => self.open_stream(next),
            Some(next) => self.drop_chain(next),
            None => {}
        }
        match s.failed {
            // Sent whole, or the client went.
            None => {}
            Some(msg) if msg.is_empty() => {}
            Some(msg) => {
                self.stats().corrupt_records.fetch_add(1, Relaxed);
                tracing::error!(offset = s.offset, "corrupted record: {msg}");
                let reply = match s.sent {
                    // EXEC's reply is out before it: nothing can finish it.
                    _ if s.in_txn => Reply::Cut,
                    0 => Reply::Error(format!(
                        "ERR corrupted record at offset {}: {msg}",
                        s.offset
                    )),
                    // Its beginning went out: nothing can finish the reply.
                    _ => Reply::Cut,
                };
                self.respond(s.to, s.id, s.part, reply);
            }
        }
    }
}
