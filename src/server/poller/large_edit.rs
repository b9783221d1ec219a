//! Commands that change part of a large value (larger than a segment), on
//! the poller's side. SETRANGE and APPEND write only the pieces their
//! range covers: the old value's pieces that the range covers in part are
//! read (at most two: the first and the last), each new piece is built
//! from them and the command's bytes, and [`Keyspace::write_large_edit`]
//! writes them with a new head that shares the old head's other pieces.
//! INCR and its kin answer Redis's error without reading a piece (no value
//! larger than a segment is a number). GETEX that changes a large value's
//! expiry writes a head with the new expiry sharing the pieces (as EXPIRE
//! does), then reads the value as a GET. A read-modify-write of a small
//! value whose result is larger than a segment (an APPEND that grows it, a
//! SETRANGE far out, a RESTORE of a large payload) writes it in pieces as
//! a SET of a large value does.
//!
//! Inside MULTI … EXEC, SETRANGE and APPEND of a large value stored before
//! keep the pieces they change in the transaction's view ([`LargeView`]),
//! over the old head's pieces, pinned; the transaction writes those pieces
//! and the new head when it ends, in its one commit. EXPIRE and its kin
//! give the view a new expiry, RENAME and COPY (while no replica is fed)
//! make the destination's view one of the value: at the end a head
//! sharing the pieces is written, as outside transactions.
//!
//! The key is held (later requests for it wait in `busy`) from the head's
//! read until the new head is durable, and the old head's pieces are held
//! meanwhile, so that no expiry or eviction frees one the edit reads or
//! shares. An edit never ends in the call that starts it (it ends in
//! [`Poller::retry_edits`] or a read's completion), so the read that
//! started it, which releases the key when its request is done, sees it
//! under way ([`Edits::holds`]) and leaves the key held.
//!
//! With replicas fed, an edit enters the stream once its head is durable
//! as `SETRANGE key offset bytes` (an APPEND at the old length): it sets
//! those bytes whatever the value held, so replaying it over a later state
//! of the key, as the stream allows, ends where the primary did. A RENAME
//! or COPY of a large value cannot go as the command (replayed over a
//! later state of the source, it would move that state): the moved value
//! is read whole from its pieces, both keys held meanwhile, and goes as
//! `SET destination value [PXAT ms]` (and `DEL source` for a rename), as a
//! large SET does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{is_sub, view_id, view_id_of, Poller, Reply, Request, Staged, Waiter};
use crate::format::{Enc, LargeHead, PieceHeader, Record, RecordMeta};
use crate::index::Entry;
use crate::io::{Completion, Engine};
use crate::server::msg::{GetExpiry, MoveKind, Op, PROTO_MAX_BULK_LEN};
use crate::server::strings as text;
use crate::store::keyspace::{Tag, WriteError};

/// Edits of large values under way, and the keys held by a large write
/// of a read-modify-write until its head is durable.
#[derive(Default)]
pub(super) struct Edits {
    by_id: HashMap<u64, Edit>,
    next: u64,
    /// Piece reads in flight: read slot → (edit, piece).
    reads: HashMap<u32, (u64, usize)>,
    /// Edits to go on next turn: a read found no slot, or none is needed.
    ready: Vec<u64>,
    /// Key tags whose large write waits for its head to be durable.
    writing: HashSet<u64>,
}

impl Edits {
    /// Whether no edit is under way.
    pub(super) fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether something here holds key `tag`: the read that started it
    /// must not release it.
    pub(super) fn holds(&self, tag: u64) -> bool {
        self.writing.contains(&tag) || self.by_id.values().any(|e| e.goal.holds(tag))
    }

    /// A large write holds key `tag` until its head is durable.
    pub(super) fn writing(&mut self, tag: u64) {
        self.writing.insert(tag);
    }

    /// The large write holding key `tag` is durable (or failed).
    pub(super) fn written(&mut self, tag: u64) {
        self.writing.remove(&tag);
    }
}

/// A large value's pieces being read for a change or for the stream.
struct Edit {
    /// The (old) head, whose pieces the edit holds.
    head: Arc<LargeHead>,
    /// Pieces to read; the next to issue.
    to_read: Vec<usize>,
    next: usize,
    in_flight: usize,
    failed: Option<String>,
    goal: Goal,
}

enum Goal {
    /// SETRANGE or APPEND: new pieces, then a new head.
    Change(Change),
    /// SETRANGE or APPEND inside MULTI … EXEC: the new pieces kept in the
    /// transaction's view ([`LargeView`]), written when it ends.
    Txn(Change),
    /// RENAME or COPY with replicas fed: the value whole, for the stream.
    Outgoing(Outgoing),
}

impl Goal {
    fn holds(&self, tag: u64) -> bool {
        match self {
            Goal::Change(c) => c.req.hash.tag == tag,
            // The transaction holds its keys.
            Goal::Txn(_) => false,
            Goal::Outgoing(s) => s.tags.contains(&tag),
        }
    }
}

/// A SETRANGE or APPEND of a large value under way.
struct Change {
    req: Request,
    expire_ms: u64,
    /// The new value's length, and where the command's bytes go in it.
    total_len: u64,
    at: u64,
    /// The pieces of the new value written anew.
    rewrite: std::ops::Range<usize>,
    /// The old pieces read (those the range covers in part): (piece, its
    /// bytes).
    old: Vec<(usize, Vec<u8>)>,
    /// The key's own index entry when the edit began (followed): the one
    /// its new head replaces (short tags: other keys' may come first).
    own: Option<u64>,
}

/// A moved large value on its way into the stream.
struct Outgoing {
    /// The keys held: source and destination.
    tags: [u64; 2],
    /// `SET destination value`'s bytes, the value at `at` filled as its
    /// pieces come in.
    out: Vec<u8>,
    at: usize,
    /// What follows the value (CRLF, and `PXAT ms`).
    tail: Vec<u8>,
    /// The source, for a rename's `DEL`.
    del: Option<Box<[u8]>>,
    /// The move's last record.
    seq: u64,
}

/// The bytes a SETRANGE or APPEND writes.
fn edit_bytes(op: &Op) -> &[u8] {
    match op {
        Op::SetRange { value, .. } | Op::Append { value, .. } => value,
        op => unreachable!("not an edit: {op:?}"),
    }
}

/// Whether `req`, reading a large value, changes it or computes with it
/// (handled here rather than by reading the value whole). Inside a
/// transaction, GETEX that changes the expiry is not (the transaction
/// writes the value whole).
pub(super) fn is_large_edit(req: &Request) -> bool {
    match req.op {
        Op::IncrBy { .. } | Op::IncrByFloat { .. } | Op::SetRange { .. } | Op::Append { .. } => {
            true
        }
        Op::GetEx {
            expiry: GetExpiry::Persist | GetExpiry::At(_),
            ..
        } => !is_sub(req),
        _ => false,
    }
}

/// A large value stored before a transaction that the transaction edits
/// (SETRANGE, APPEND) in pieces: its view of the key. The pieces it
/// changed are here, the others are `base`'s (pinned until the
/// transaction ends), of the same length in both; when it ends, only the
/// changed pieces are written, with a new head sharing the others
/// (`Keyspace::write_edit_pieces_only`), in its all-or-none commit.
pub(super) struct LargeView {
    pub base: Arc<LargeHead>,
    pub total_len: u64,
    /// The pieces changed, by number, each as long as that piece of a
    /// value of `total_len` bytes.
    pub changed: BTreeMap<usize, Vec<u8>>,
    /// The edits for the replication stream, as outside a transaction
    /// (`SETRANGE key offset bytes`).
    pub repl: Vec<u8>,
}

/// Where a SETRANGE or APPEND of a large value `old_len` bytes long
/// writes: its offset, the new length and the pieces written anew;
/// `None` when it writes nothing (no bytes); or the error reply.
fn edit_plan(
    op: &Op,
    old_len: u64,
    cap: u64,
    max_value: u64,
) -> Result<Option<(u64, u64, std::ops::Range<usize>)>, Reply> {
    let data = edit_bytes(op);
    let at = match op {
        Op::SetRange { offset, .. } => *offset,
        _ => old_len,
    };
    if data.is_empty() {
        return Ok(None);
    }
    let end = at + data.len() as u64;
    let total_len = old_len.max(end);
    if total_len > PROTO_MAX_BULK_LEN {
        return Err(Reply::Error(text::STRING_TOO_LONG.into()));
    }
    if total_len > max_value {
        let msg = text::value_too_large(total_len as usize, max_value);
        return Err(Reply::Error(msg));
    }
    // From the first piece the bytes (or the zeros before them) reach, to
    // the last the bytes reach.
    let first = (at.min(old_len) / cap) as usize;
    let last = ((end - 1) / cap) as usize;
    Ok(Some((at, total_len, first..last + 1)))
}

impl<E: Engine> Poller<E> {
    /// `req` (see [`is_large_edit`]) found its key's record, `rec` (of
    /// `bytes`), to be the head of a large value.
    pub(super) fn edit_large(&mut self, req: Request, entry: Entry, rec: &Record) {
        if let Op::GetEx { .. } = req.op {
            // A head with the new expiry, then the value (poller/large.rs).
            return self.large_read(req, entry, rec);
        }
        match req.op {
            Op::IncrBy { .. } => {
                return self.reply(&req, Reply::Error(text::NOT_AN_INTEGER.into()));
            }
            Op::IncrByFloat { .. } => {
                return self.reply(&req, Reply::Error(text::NOT_A_FLOAT.into()));
            }
            _ => {}
        }
        if is_sub(&req) {
            return self.txn_edit_stored(req, entry, rec);
        }
        // The head as the index has it now (compaction may have moved it
        // since it was read; an expiry or eviction removed it).
        let live = self.ks.lookup(req.pid, &req.hash);
        let Some(live) = live else {
            return self.strings(req, None, 0);
        };
        let Some(head) = self.ks.large_head(live.offset) else {
            return self.corrupt(&req, entry, &"large value head unknown");
        };
        let cap = self.ks.piece_capacity();
        let old_len = head.total_len;
        let data = edit_bytes(&req.op);
        let at = match req.op {
            Op::SetRange { offset, .. } => offset,
            _ => old_len,
        };
        if data.is_empty() {
            return self.reply(&req, Reply::Int(old_len as i64));
        }
        let end = at + data.len() as u64;
        let total_len = old_len.max(end);
        let max_value = self.shared.cfg.conns.max_value_size;
        if total_len > PROTO_MAX_BULK_LEN {
            return self.reply(&req, Reply::Error(text::STRING_TOO_LONG.into()));
        }
        if total_len > max_value {
            let msg = text::value_too_large(total_len as usize, max_value);
            return self.reply(&req, Reply::Error(msg));
        }
        if self.refused_over_maxmemory(&req) {
            return;
        }
        // The new pieces: from the first that the bytes written (or the
        // zeros before them) reach, to the last the bytes reach.
        let first = (at.min(old_len) / cap) as usize;
        let last = ((end - 1) / cap) as usize;
        let rewrite = first..last + 1;
        if !self.ks.room_for_pieces(rewrite.len()) {
            let reply = self.refusal(WriteError::Full);
            return self.reply(&req, reply);
        }
        // An old piece whose bytes the command does not all overwrite is
        // read.
        let to_read = rewrite
            .clone()
            .filter(|&i| i < head.pieces.len())
            .filter(|&i| {
                let (lo, hi) = (i as u64 * cap, ((i as u64 + 1) * cap).min(old_len));
                lo < at || hi > end
            })
            .collect();
        self.busy.entry(req.hash.tag).or_default();
        // The pieces are read over later turns: the key's own entry, as
        // this turn resolved it, is kept.
        let own = self.ks.track_own(req.pid, &req.hash);
        let goal = Goal::Change(Change {
            expire_ms: rec.meta.expire_ms,
            req,
            total_len,
            at,
            rewrite,
            old: Vec::new(),
            own,
        });
        self.start_edit(head, to_read, goal);
    }

    /// Writes a head for `req`'s key sharing `rec`'s pieces, with expiry
    /// `at` (0: none), and puts it in the stream as PEXPIREAT or PERSIST.
    pub(super) fn write_expiry(
        &mut self,
        req: &Request,
        rec: &Record,
        at: u64,
    ) -> Result<(), WriteError> {
        self.ks
            .write_head(req.pid, &req.hash, rec.key, rec.value, at)?;
        let (key, seq) = (rec.key, self.ks.next_seq() - 1);
        (self.repl_out).push(&self.shared.repl, seq, |out| {
            if at == 0 {
                crate::resp::encode::command(out, &[b"PERSIST", key]);
            } else {
                let at = at.to_string();
                crate::resp::encode::command(out, &[b"PEXPIREAT", key, at.as_bytes()]);
            }
        });
        Ok(())
    }

    /// Starts reading pieces `to_read` of `head` for `goal`, holding the
    /// pieces meanwhile; it goes on in a later call (a completion, or
    /// [`Poller::retry_edits`]), never in this one.
    fn start_edit(&mut self, head: Arc<LargeHead>, to_read: Vec<usize>, goal: Goal) {
        self.ks.hold_pieces(&head);
        let id = self.edits.next;
        self.edits.next += 1;
        let edit = Edit {
            head,
            to_read,
            next: 0,
            in_flight: 0,
            failed: None,
            goal,
        };
        self.edits.by_id.insert(id, edit);
        self.read_old_pieces(id);
        if self.edits.by_id[&id].in_flight == 0 {
            // Nothing to read (or no slot): it goes on next turn.
            self.edits.ready.push(id);
        }
    }

    /// RENAME or COPY of a large value, written (its last record `seq`)
    /// while replicas are fed: the value is read whole and goes into the
    /// stream as `SET to value [PXAT ms]` (and `DEL from` for a rename);
    /// the keys (`tags`) stay held until then.
    pub(super) fn send_moved(
        &mut self,
        tags: [u64; 2],
        from: Option<&[u8]>,
        to: &[u8],
        head: &[u8],
        expire_ms: u64,
        seq: u64,
    ) -> Result<(), String> {
        let head = LargeHead::decode(head).ok_or("large value head unreadable")?;
        let len = head.total_len as usize;
        let mut out = Vec::new();
        let argc = if expire_ms == 0 { 3 } else { 5 };
        let value_header = format!("*{argc}\r\n$3\r\nSET\r\n${}\r\n", to.len());
        out.try_reserve_exact(value_header.len() + to.len() + 32 + len + 2)
            .map_err(|_| text::no_memory_for_value(len as u64))?;
        out.extend_from_slice(value_header.as_bytes());
        out.extend_from_slice(to);
        out.extend_from_slice(format!("\r\n${len}\r\n").as_bytes());
        let at = out.len();
        out.resize(at + len, 0);
        let mut tail = b"\r\n".to_vec();
        if expire_ms != 0 {
            let ms = expire_ms.to_string();
            tail.extend_from_slice(format!("$4\r\nPXAT\r\n${}\r\n{ms}\r\n", ms.len()).as_bytes());
        }
        let to_read = (0..head.pieces.len()).collect();
        let goal = Goal::Outgoing(Outgoing {
            tags,
            out,
            at,
            tail,
            del: from.map(Box::from),
            seq,
        });
        self.start_edit(Arc::new(head), to_read, goal);
        Ok(())
    }

    /// Issues the reads of edit `id`'s old pieces, as far as read slots
    /// allow (the rest waits for [`Poller::retry_edits`]).
    fn read_old_pieces(&mut self, id: u64) {
        let block = self.ks.block();
        let cap = self.ks.piece_capacity();
        loop {
            let e = self.edits.by_id.get_mut(&id).expect("an edit");
            if e.failed.is_some() || e.next >= e.to_read.len() {
                return;
            }
            let i = e.to_read[e.next];
            let seg = e.head.pieces[i];
            let len = block + e.head.piece_len(i, cap).next_multiple_of(block);
            let Some(tag) = self.free_tags.pop() else {
                return;
            };
            let off = self.shared.sb.segment_offset(seg);
            let eng = self.ks.engine();
            let buf = match eng.alloc(len as usize) {
                Ok(buf) => buf,
                Err(err) => {
                    self.free_tags.push(tag);
                    let e = self.edits.by_id.get_mut(&id).expect("an edit");
                    e.failed = Some(format!("{}: {err}", text::NO_IO_BUFFER));
                    return;
                }
            };
            if eng.read(off, buf, Tag::Read(tag).encode()).is_err() {
                self.free_tags.push(tag);
                return;
            }
            self.ks.count_read(len);
            self.edits.reads.insert(tag, (id, i));
            let e = self.edits.by_id.get_mut(&id).expect("an edit");
            e.next += 1;
            e.in_flight += 1;
        }
    }

    /// Edits that wait for a read slot, or for their turn to write: they
    /// go on. Whether there were any.
    pub(super) fn retry_edits(&mut self) -> bool {
        let ready = std::mem::take(&mut self.edits.ready);
        let any = !ready.is_empty();
        for id in ready {
            if !self.edits.by_id.contains_key(&id) {
                continue;
            }
            self.read_old_pieces(id);
            self.finish_edit_if_done(id);
        }
        any
    }

    /// A read of read slot `tag` completed; whether it was an edit's.
    pub(super) fn complete_edit_read(&mut self, tag: u32, c: &mut Completion) -> bool {
        let Some((id, i)) = self.edits.reads.remove(&tag) else {
            return false;
        };
        self.free_tags.push(tag);
        let buf = c.buf.take().expect("a read returns its buffer");
        let block = self.ks.block() as usize;
        let cap = self.ks.piece_capacity();
        let uuid = self.shared.sb.uuid;
        let e = self.edits.by_id.get_mut(&id).expect("an edit");
        e.in_flight -= 1;
        let want = e.head.piece_len(i, cap) as usize;
        let checked = match &c.result {
            Ok(n) if *n == buf.len() => match PieceHeader::decode(&buf[..block], &uuid) {
                Some(h)
                    if h.value_id == e.head.value_id
                        && h.piece == i as u32
                        && h.len as usize == want =>
                {
                    let data = &buf[block..block + want];
                    if PieceHeader::data_crc(&uuid, data) == h.data_crc {
                        match &mut e.goal {
                            Goal::Change(ch) | Goal::Txn(ch) => ch.old.push((i, data.to_vec())),
                            Goal::Outgoing(s) => {
                                let at = s.at + i * cap as usize;
                                s.out[at..at + want].copy_from_slice(data);
                            }
                        }
                        Ok(())
                    } else {
                        Err(format!("piece {i} of the value fails its checksum"))
                    }
                }
                _ => Err(format!("piece {i} of the value is missing")),
            },
            Ok(n) => Err(format!("short read of {n} of {} bytes", buf.len())),
            Err(err) => Err(format!("I/O error reading a piece: {err}")),
        };
        drop(buf); // back to the engine's pool
        if let Err(msg) = checked {
            e.failed.get_or_insert(msg);
            self.ks.counters().io_errors.fetch_add(1, Relaxed);
        }
        self.read_old_pieces(id);
        self.finish_edit_if_done(id);
        true
    }

    /// Once every old piece of edit `id` is read, writes the new pieces
    /// and head; the reply waits for the head to be durable.
    fn finish_edit_if_done(&mut self, id: u64) {
        let e = &self.edits.by_id[&id];
        if e.in_flight > 0 {
            return;
        }
        if e.failed.is_none() && e.next < e.to_read.len() {
            // Waits for a read slot.
            return self.edits.ready.push(id);
        }
        let e = self.edits.by_id.remove(&id).expect("an edit");
        match e.goal {
            Goal::Change(ch) => self.finish_change(Arc::clone(&e.head), e.failed, ch),
            Goal::Txn(ch) => self.finish_txn_change(e.failed, ch),
            Goal::Outgoing(s) => self.finish_send(e.failed, s),
        }
        // A change's job holds the pieces it shares by now.
        self.ks.release_pieces(&e.head);
    }

    /// A moved value read whole (or not): into the stream, and its keys
    /// released.
    fn finish_send(&mut self, failed: Option<String>, s: Outgoing) {
        let tags = s.tags;
        match failed {
            Some(msg) => self.moved_not_replicated(&msg),
            None => {
                let Outgoing {
                    mut out,
                    tail,
                    del,
                    seq,
                    ..
                } = s;
                out.extend_from_slice(&tail);
                let repl = &self.shared.repl;
                self.repl_out.push(repl, seq, |o| *o = out);
                if let Some(from) = del {
                    self.repl_out.push(repl, seq, |o| {
                        crate::resp::encode::command(o, &[b"DEL", &from])
                    });
                }
            }
        }
        self.release_move(tags);
    }

    /// A moved large value could not be read back for the stream (`msg`
    /// says why): no SET can tell the replicas its state, so the stream
    /// starts again under a new id and they copy in full, as for a key
    /// that went whose name could not be read ([`Repl::restart_stream`]).
    ///
    /// [`Repl::restart_stream`]: crate::server::repl::Repl::restart_stream
    pub(super) fn moved_not_replicated(&mut self, msg: &str) {
        tracing::error!(
            poller = self.id,
            "a moved large value could not be read back: {msg}"
        );
        let repl = &self.shared.repl;
        if repl.feeding() && !repl.is_replica() {
            repl.restart_stream("a moved large value could not be read back for the stream");
        }
    }

    /// The old pieces of a change are read: its new pieces and head are
    /// written.
    fn finish_change(&mut self, head: Arc<LargeHead>, failed: Option<String>, e: Change) {
        let tag = e.req.hash.tag;
        if let Some(msg) = &failed {
            if let Some(at) = e.own {
                self.ks.unfollow(e.req.pid, at);
            }
            let reply = Reply::Error(format!("ERR {msg}"));
            self.reply(&e.req, reply);
            return self.release(tag);
        }
        let cap = self.ks.piece_capacity();
        let data = edit_bytes(&e.req.op);
        let (at, end) = (e.at, e.at + data.len() as u64);
        let fill = |i: usize, out: &mut [u8]| {
            match e.old.iter().find(|(j, _)| *j == i) {
                Some((_, old)) => {
                    out[..old.len()].copy_from_slice(old);
                    out[old.len()..].fill(0);
                }
                None => out.fill(0),
            }
            let base = i as u64 * cap;
            let (from, to) = (base.max(at), (base + out.len() as u64).min(end));
            if from < to {
                let src = &data[(from - at) as usize..(to - at) as usize];
                out[(from - base) as usize..(to - base) as usize].copy_from_slice(src);
            }
        };
        let key = e.req.op.key().expect("keyed op");
        let w = Waiter::new(&e.req, Reply::Int(e.total_len as i64), Some(tag));
        let written = self.ks.write_large_edit(
            e.req.pid,
            &e.req.hash,
            key,
            head,
            e.total_len,
            e.rewrite.clone(),
            fill,
            e.expire_ms,
            w,
            e.own,
        );
        match written {
            Ok(()) => {
                self.edits.writing.insert(tag);
                if self.shared.repl.feeding() {
                    let at = at.to_string();
                    let mut out = Vec::new();
                    let args: [&[u8]; 4] = [b"SETRANGE", key, at.as_bytes(), data];
                    crate::resp::encode::command(&mut out, &args);
                    self.large_stream.insert(tag, out);
                }
            }
            Err((w, err)) => {
                let reply = self.refusal(err);
                self.respond(w.to, w.id, w.part, reply);
                self.release(tag);
            }
        }
    }

    /// A read-modify-write (APPEND, SETRANGE, RESTORE) whose new value,
    /// `value`, is too large for a record: written in pieces as a large
    /// SET is; `ok` answers once its head is durable, and the key is held
    /// until then.
    pub(super) fn write_large_value(
        &mut self,
        req: &Request,
        value: bytes::Bytes,
        expire: u64,
        ok: Reply,
    ) {
        let key = req.op.key().expect("keyed op");
        let tag = req.hash.tag;
        let w = Waiter::new(req, ok, Some(tag));
        match self
            .ks
            .write_large(req.pid, &req.hash, key, value.clone(), expire, w)
        {
            Ok(()) => {
                self.busy.entry(tag).or_default();
                self.edits.writing.insert(tag);
                if self.shared.repl.feeding() {
                    let mut out = Vec::new();
                    super::replicated(&mut out, key, &value, expire, false);
                    self.large_stream.insert(tag, out);
                }
            }
            Err((w, e)) => {
                let reply = self.refusal(e);
                self.respond(w.to, w.id, w.part, reply);
            }
        }
    }
}

impl<E: Engine> Poller<E> {
    /// Whether `req`'s key is, in the running transaction, a large value
    /// edited in pieces ([`LargeView`]).
    pub(super) fn staged_large(&self, req: &Request) -> bool {
        let t = self.txn.as_ref().expect("a transaction runs");
        is_sub(req) && (t.view.get(&view_id_of(req))).is_some_and(|s: &Staged| s.large.is_some())
    }

    /// SETRANGE or APPEND inside a transaction of a large value stored
    /// before (`rec`, its head at `entry`): the key's view becomes a
    /// [`LargeView`] of it, and the edit changes only the pieces it
    /// reaches.
    fn txn_edit_stored(&mut self, req: Request, entry: Entry, rec: &Record) {
        let Some(head) = LargeHead::decode(rec.value) else {
            return self.corrupt(&req, entry, &"large value head unreadable");
        };
        let cap = self.ks.piece_capacity();
        let max_value = self.shared.cfg.conns.max_value_size;
        let plan = match edit_plan(&req.op, head.total_len, cap, max_value) {
            Ok(Some(plan)) => plan,
            Ok(None) => return self.reply(&req, Reply::Int(head.total_len as i64)),
            Err(reply) => return self.reply(&req, reply),
        };
        if self.refused_over_maxmemory(&req) {
            return;
        }
        // The head as the index has it now (compaction may have moved it;
        // an expiry or eviction removed it).
        let Some(live) = self.ks.lookup(req.pid, &req.hash) else {
            return self.strings(req, None, 0);
        };
        let Some(base) = self.ks.pin_pieces(live.offset, head.value_id) else {
            return self.corrupt(&req, entry, &"large value head unknown");
        };
        let id = view_id_of(&req);
        let own = self.stage_own(id, req.pid, &req.hash);
        let t = self.txn.as_mut().expect("a transaction runs");
        let key = req.op.key().expect("keyed op");
        t.order.push(id);
        let view = LargeView {
            base,
            total_len: head.total_len,
            changed: BTreeMap::new(),
            repl: Vec::new(),
        };
        let staged = Staged {
            pid: req.pid,
            hash: req.hash,
            key: key.into(),
            now: Some((Vec::new(), rec.meta.expire_ms)),
            enc: Enc::Value,
            held: false,
            large: Some(Box::new(view)),
            own,
            access: None,
            deleted: false,
        };
        t.view.insert(id, staged);
        self.txn_edit(req, plan);
    }

    /// A command of the running transaction on a key it edited in pieces
    /// ([`LargeView`], found at `entry`): SETRANGE and APPEND edit it
    /// again, STRLEN, TTL, EXPIRETIME and INCR… answer from the view,
    /// EXPIRE and its kin change its expiry, RENAME and COPY move it to
    /// their destination (while no replica is fed); the reads stream it,
    /// and the others read the value whole (its pieces, the changed ones
    /// from the view).
    pub(super) fn txn_large(&mut self, req: Request, entry: Entry) {
        let t = self.txn.as_ref().expect("a transaction runs");
        let s = &t.view[&view_id_of(&req)];
        let l = s.large.as_ref().expect("a large view");
        let (total_len, expire_ms) = (l.total_len, s.now.as_ref().map_or(0, |n| n.1));
        match req.op {
            Op::SetRange { .. } | Op::Append { .. } => {
                let cap = self.ks.piece_capacity();
                let max_value = self.shared.cfg.conns.max_value_size;
                match edit_plan(&req.op, total_len, cap, max_value) {
                    Ok(Some(plan)) if !self.refused_over_maxmemory(&req) => {
                        self.txn_edit(req, plan)
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => self.reply(&req, Reply::Int(total_len as i64)),
                    Err(reply) => self.reply(&req, reply),
                }
            }
            Op::Strlen { .. } => {
                self.count_lookup(true);
                self.reply(&req, Reply::Int(total_len as i64))
            }
            Op::ExpireTime { .. } => self.strings(req, Some((&[], expire_ms)), 0),
            Op::IncrBy { .. } => self.reply(&req, Reply::Error(text::NOT_AN_INTEGER.into())),
            Op::IncrByFloat { .. } => self.reply(&req, Reply::Error(text::NOT_A_FLOAT.into())),
            Op::Ttl { .. } => {
                let key = s.key.clone();
                let rec = Record {
                    meta: RecordMeta {
                        gen: 0,
                        seq: 0,
                        expire_ms,
                        flags: 0,
                    },
                    key: &key,
                    value: &[],
                    len: 0,
                };
                self.finish_record(req, entry, &rec)
            }
            Op::Expire { at_ms, persist, .. } => {
                let base = Arc::clone(&l.base);
                if (persist && expire_ms == 0) || super::expire_refused(&req.op, expire_ms, at_ms) {
                    return self.reply(&req, Reply::Int(0));
                }
                if !persist && at_ms <= self.ks.now_ms() {
                    return self.delete(req, Reply::Int(1));
                }
                self.txn_expiry(&req, &base, if persist { 0 } else { at_ms });
                self.reply(&req, Reply::Int(1))
            }
            Op::Move { ref kind, .. } if !self.shared.repl.feeding() => {
                let copy = matches!(kind, MoveKind::Copy { .. });
                let Some(ok) = self.move_allowed(&req) else {
                    return;
                };
                let t = self.txn.as_mut().expect("a transaction runs");
                let s = t.view.get_mut(&view_id_of(&req)).expect("a staged key");
                let view = match copy {
                    // A second view of the value, its pieces pinned once
                    // more.
                    true => {
                        let l = s.large.as_ref().expect("a large view");
                        let view = LargeView {
                            base: Arc::clone(&l.base),
                            total_len: l.total_len,
                            changed: l.changed.clone(),
                            repl: Vec::new(),
                        };
                        self.ks.hold_pieces(&view.base);
                        view
                    }
                    false => *s.large.take().expect("a large view"),
                };
                self.txn_move_view(req, view, expire_ms, ok);
            }
            ref op if super::large::streamed_in_txn(op) => {
                self.count_large_read(op);
                // Streamed after EXEC's other replies: the changed pieces
                // from the view, the others read.
                let count = total_len.div_ceil(self.ks.piece_capacity()) as usize;
                let mut pieces = l.base.pieces.clone();
                pieces.resize(count, 0);
                let head = LargeHead {
                    total_len,
                    value_id: l.base.value_id,
                    pieces,
                };
                let (pins, changed) = (Arc::clone(&l.base), l.changed.clone());
                self.ks.hold_pieces(&pins);
                let head = Arc::new(head);
                self.txn_stream(req, entry, head, pins, changed, expire_ms);
            }
            _ => {
                self.count_large_read(&req.op);
                let (key, base) = (s.key.to_vec(), (*l.base).clone());
                let changed = l.changed.clone();
                let meta = RecordMeta {
                    gen: 0,
                    seq: 0,
                    expire_ms,
                    flags: 0,
                };
                self.assemble_view(req, entry, (key, meta, 0), base, total_len, changed);
            }
        }
    }

    /// RENAME, RENAMENX or COPY inside a transaction of a large value
    /// stored before (`rec`, its head at `entry`): the destination's view
    /// becomes a [`LargeView`] of it, its pieces pinned and unchanged
    /// ([`Poller::txn_move_view`]); the value is not read.
    pub(super) fn txn_move_stored(&mut self, req: Request, entry: Entry, rec: &Record) {
        let Some(ok) = self.move_allowed(&req) else {
            return;
        };
        let Some(base) = self.pin_stored(&req, entry, rec) else {
            return;
        };
        let view = LargeView {
            total_len: base.total_len,
            base,
            changed: BTreeMap::new(),
            repl: Vec::new(),
        };
        self.txn_move_view(req, view, rec.meta.expire_ms, ok);
    }

    /// Move `req` inside a transaction of a large value, `view` (its pins
    /// now the destination's) with expiry `expire_ms`: the destination's
    /// view becomes it, a rename's source a tombstone, and `ok` is the
    /// reply. When the transaction ends, the destination's head is
    /// written, sharing the pieces (and its changed pieces, written
    /// first), as a move does outside transactions.
    fn txn_move_view(&mut self, req: Request, view: LargeView, expire_ms: u64, ok: Reply) {
        let Op::Move { key, to, kind, .. } = &req.op else {
            unreachable!("a move")
        };
        let id = view_id(&to.key);
        let own = self.stage_own(id, to.pid, &to.hash);
        let t = self.txn.as_mut().expect("a transaction runs");
        let own = match t.view.get(&id) {
            Some(s) => s.own,
            None => own,
        };
        let staged = Staged {
            pid: to.pid,
            hash: to.hash,
            key: to.key.clone(),
            now: Some((Vec::new(), expire_ms)),
            enc: Enc::Value,
            held: false,
            large: Some(Box::new(view)),
            own,
            access: None,
            deleted: false,
        };
        match t.view.insert(id, staged) {
            // The destination's own view is replaced: its pins go.
            Some(old) => {
                if let Some(l) = old.large {
                    self.ks.unpin_pieces(&l.base);
                }
            }
            None => t.order.push(id),
        }
        let mut result = Ok(());
        if !matches!(kind, MoveKind::Copy { .. }) {
            result = self.write(&req, req.pid, &req.hash, key, &[], 0, true);
        }
        self.acknowledge_now(req, result, ok)
    }

    /// Edits the transaction's [`LargeView`] of `req`'s key (`plan`: see
    /// [`edit_plan`]): the old pieces it covers in part, and not changed
    /// before, are read first.
    fn txn_edit(&mut self, req: Request, plan: (u64, u64, std::ops::Range<usize>)) {
        let (at, total_len, rewrite) = plan;
        let cap = self.ks.piece_capacity();
        let end = at + edit_bytes(&req.op).len() as u64;
        let t = self.txn.as_ref().expect("a transaction runs");
        let l = (t.view[&view_id_of(&req)].large.as_ref()).expect("a large view");
        let old_len = l.total_len;
        let to_read: Vec<usize> = rewrite
            .clone()
            .filter(|&i| i < l.base.pieces.len() && !l.changed.contains_key(&i))
            .filter(|&i| {
                let (lo, hi) = (i as u64 * cap, ((i as u64 + 1) * cap).min(old_len));
                lo < at || hi > end
            })
            .collect();
        let base = Arc::clone(&l.base);
        let change = Change {
            req,
            expire_ms: 0,
            total_len,
            at,
            rewrite,
            old: Vec::new(),
            own: None,
        };
        if to_read.is_empty() {
            return self.finish_txn_change(None, change);
        }
        self.start_edit(base, to_read, Goal::Txn(change));
    }

    /// The old pieces of an edit inside a transaction are read (or
    /// `failed`): its new pieces go into the key's [`LargeView`].
    fn finish_txn_change(&mut self, failed: Option<String>, ch: Change) {
        if let Some(msg) = failed {
            return self.reply(&ch.req, Reply::Error(format!("ERR {msg}")));
        }
        let cap = self.ks.piece_capacity();
        let data = edit_bytes(&ch.req.op);
        let (at, end) = (ch.at, ch.at + data.len() as u64);
        let feeding = self.shared.repl.feeding();
        let t = self.txn.as_mut().expect("a transaction runs");
        let s = t.view.get_mut(&view_id_of(&ch.req)).expect("a staged key");
        let l = s.large.as_mut().expect("a large view");
        let mut old = ch.old;
        for i in ch.rewrite.clone() {
            let base = i as u64 * cap;
            let len = (ch.total_len - base).min(cap) as usize;
            let mut piece = match l.changed.remove(&i) {
                Some(p) => p,
                None => match old.iter().position(|(j, _)| *j == i) {
                    Some(k) => old.swap_remove(k).1,
                    None => Vec::new(),
                },
            };
            piece.resize(len, 0);
            let (from, to) = (base.max(at), (base + len as u64).min(end));
            if from < to {
                let src = &data[(from - at) as usize..(to - at) as usize];
                piece[(from - base) as usize..(to - base) as usize].copy_from_slice(src);
            }
            l.changed.insert(i, piece);
        }
        l.total_len = ch.total_len;
        if feeding {
            let at = at.to_string();
            let args: [&[u8]; 4] = [b"SETRANGE", &s.key, at.as_bytes(), data];
            crate::resp::encode::command(&mut l.repl, &args);
        }
        self.reply(&ch.req, Reply::Int(ch.total_len as i64));
    }

    /// The transaction's [`LargeView`]s (it ended), by key tag, their old
    /// heads still pinned.
    pub(super) fn take_views(t: &mut super::Txn) -> HashMap<u64, Box<LargeView>> {
        let views = t.view.iter_mut();
        (views.filter_map(|(&tag, s)| Some((tag, s.large.take()?)))).collect()
    }

    /// GETEX with an expiry inside a transaction, of a large value stored
    /// before (its head at `entry`, pinned as `pins`) or of the key's
    /// [`LargeView`]: the view takes the expiry `at` (0: none), its
    /// pieces unchanged; at the end a head sharing them is written.
    pub(super) fn txn_expiry(&mut self, req: &Request, pins: &Arc<LargeHead>, at: u64) {
        let feeding = self.shared.repl.feeding();
        let key = req.op.key().expect("keyed op");
        let id = view_id(key);
        let own = self.stage_own(id, req.pid, &req.hash);
        let t = self.txn.as_mut().expect("a transaction runs");
        let s = t.view.entry(id).or_insert_with(|| Staged {
            pid: req.pid,
            hash: req.hash,
            key: key.into(),
            now: Some((Vec::new(), 0)),
            enc: Enc::Value,
            held: false,
            large: None,
            own,
            access: None,
            deleted: false,
        });
        if s.large.is_none() {
            // The value stored before: pinned once more, for the view.
            self.ks.hold_pieces(pins);
            t.order.push(id);
            s.large = Some(Box::new(LargeView {
                base: Arc::clone(pins),
                total_len: pins.total_len,
                changed: BTreeMap::new(),
                repl: Vec::new(),
            }));
        }
        let l = s.large.as_mut().expect("a large view");
        s.now = Some((Vec::new(), at));
        if feeding {
            let at = at.to_string();
            match at.as_str() {
                "0" => crate::resp::encode::command(&mut l.repl, &[b"PERSIST", key]),
                _ => crate::resp::encode::command(&mut l.repl, &[b"PEXPIREAT", key, at.as_bytes()]),
            }
        }
    }
}
