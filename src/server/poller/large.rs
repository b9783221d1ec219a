//! Values larger than a segment, on the poller's side: a SET of one hands
//! the value to [`Keyspace::write_large`] and holds the key until its head
//! is durable; a read of one reads the head (as any record), then its
//! pieces, a few at a time, into one buffer laid out as the GET reply (the
//! RESP bulk header, the value, CRLF), so that a GET sends it as is.
//! GETRANGE reads only the pieces its range needs, into its reply the
//! same way. Other commands reading the value see it in that buffer.
//!
//! The key is held (later requests for it wait in `busy`) from the head's
//! read to the end of the pieces', so that no overwrite frees a piece
//! under the read.

use std::sync::atomic::Ordering::Relaxed;

use super::{is_sub, Poller, Reply, Request, Waiter};
use crate::format::{decode_record, LargeHead, PieceHeader, Record, RecordMeta, FLAG_LARGE};
use crate::index::Entry;
use crate::io::{Completion, Engine};
use crate::server::msg::{MoveKind, Op};
use crate::server::strings as text;
use crate::store::keyspace::Tag;

/// Piece reads one large value keeps in flight.
const PIECE_DEPTH: usize = 4;

/// A large value being read.
pub(super) struct Assembly {
    req: Request,
    entry: Entry,
    /// The head record's bytes.
    record: Vec<u8>,
    head: LargeHead,
    /// The reply: bulk header, value (or the range of it read), CRLF.
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
}

impl<E: Engine> Poller<E> {
    /// SET of a value too large for a record: its pieces go out with the
    /// next commit; the reply `ok` waits for its head's commit, and the
    /// key's later requests wait with it.
    pub(super) fn set_large(&mut self, req: &Request, value: &[u8], expire_ms: u64, ok: Reply) {
        let key = req.op.key().expect("keyed op");
        let w = Waiter::new(req, ok, Some(req.hash.tag));
        match self
            .ks
            .write_large(req.pid, &req.hash, key, value, expire_ms, w)
        {
            Ok(()) => {
                self.busy.entry(req.hash.tag).or_default();
                if self.shared.repl.feeding() {
                    let mut out = Vec::new();
                    super::replicated(&mut out, key, value, expire_ms, false);
                    self.large_stream.insert(req.hash.tag, out);
                }
            }
            Err((w, e)) => {
                let reply = self.refusal(e);
                self.respond(w.to, w.id, w.part, reply);
            }
        }
    }

    /// A record just read is the head of a large value: STRLEN answers
    /// from it; other commands get the value, read from its pieces.
    pub(super) fn large_read(&mut self, req: Request, entry: Entry, bytes: &[u8], rec: &Record) {
        let Some(head) = LargeHead::decode(rec.value) else {
            return self.corrupt(&req, entry, &"large value head unreadable");
        };
        if let Op::Strlen { .. } = req.op {
            return self.reply(&req, Reply::Int(head.total_len as i64));
        }
        if is_sub(&req) {
            let msg = text::large_value_unsupported(head.total_len);
            return self.reply(&req, Reply::Error(msg));
        }
        let cap = self.ks.piece_capacity();
        let (lo, len) = match req.op {
            Op::GetRange { start, end, .. } => {
                self.stats().hits.fetch_add(1, Relaxed);
                match super::range_bounds(head.total_len, start, end) {
                    Some((first, last)) => (first, last - first + 1),
                    None => return self.reply(&req, Reply::Encoded(b"$0\r\n\r\n".to_vec())),
                }
            }
            _ => (0, head.total_len),
        };
        let (next, last) = ((lo / cap) as usize, ((lo + len.max(1) - 1) / cap) as usize);
        if last >= head.pieces.len() {
            return self.corrupt(&req, entry, &"large value head inconsistent");
        }
        let mut bulk_header = Vec::new();
        crate::resp::bulk_header(&mut bulk_header, len as usize);
        let at = bulk_header.len();
        let mut out = Vec::new();
        if out.try_reserve_exact(at + len as usize + 2).is_err() {
            let msg = text::no_memory_for_value(len);
            return self.reply(&req, Reply::Error(msg));
        }
        out.extend_from_slice(&bulk_header);
        out.resize(at + len as usize, 0);
        out.extend_from_slice(b"\r\n");
        self.busy.entry(req.hash.tag).or_default();
        let id = self.next_assembly;
        self.next_assembly += 1;
        self.assemblies.insert(
            id,
            Assembly {
                req,
                entry,
                record: bytes.to_vec(),
                head,
                out,
                at,
                lo,
                len,
                next,
                last,
                in_flight: 0,
                failed: None,
            },
        );
        self.read_pieces(id);
    }

    /// Whether a large value of key tag `tag` is being read.
    pub(super) fn assembling(&self, tag: u64) -> bool {
        self.assemblies.values().any(|a| a.req.hash.tag == tag)
    }

    /// Issues piece reads of assembly `id` up to [`PIECE_DEPTH`]; one that
    /// can have no slot, buffer or room at the engine waits for the next
    /// turn (or, with none in flight, for [`Poller::retry_assemblies`]).
    fn read_pieces(&mut self, id: u64) {
        let block = self.ks.block();
        let cap = self.ks.piece_capacity();
        loop {
            let a = self.assemblies.get_mut(&id).expect("an assembly");
            if a.failed.is_some() || a.next > a.last || a.in_flight >= PIECE_DEPTH {
                break;
            }
            let i = a.next;
            let seg = a.head.pieces[i];
            let len = block + a.head.piece_len(i, cap).next_multiple_of(block);
            let Some(tag) = self.free_tags.pop() else {
                self.stalled_assemblies.push(id);
                return;
            };
            let off = self.shared.sb.segment_offset(seg);
            let eng = self.ks.engine();
            let buf = match eng.alloc(len as usize) {
                Ok(buf) => buf,
                Err(e) => {
                    self.free_tags.push(tag);
                    let a = self.assemblies.get_mut(&id).expect("an assembly");
                    a.failed = Some(format!("{}: {e}", text::NO_IO_BUFFER));
                    break;
                }
            };
            if eng.read(off, buf, Tag::Read(tag).encode()).is_err() {
                self.free_tags.push(tag);
                self.stalled_assemblies.push(id);
                return;
            }
            self.ks.count_read(len);
            self.piece_reads.insert(tag, (id, i));
            let a = self.assemblies.get_mut(&id).expect("an assembly");
            a.next += 1;
            a.in_flight += 1;
        }
        self.finish_assembly_if_done(id);
    }

    /// Assemblies that found no read slot: they try again.
    pub(super) fn retry_assemblies(&mut self) -> bool {
        let stalled = std::mem::take(&mut self.stalled_assemblies);
        let any = !stalled.is_empty();
        for id in stalled {
            if self.assemblies.contains_key(&id) {
                self.read_pieces(id);
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
        let buf = c.buf.take().expect("a read returns its buffer");
        let block = self.ks.block() as usize;
        let cap = self.ks.piece_capacity();
        let uuid = self.shared.sb.uuid;
        let a = self.assemblies.get_mut(&id).expect("an assembly");
        a.in_flight -= 1;
        let want = a.head.piece_len(i, cap) as usize;
        let checked = match &c.result {
            Ok(n) if *n == buf.len() => match PieceHeader::decode(&buf[..block], &uuid) {
                Some(h)
                    if h.value_id == a.head.value_id
                        && h.piece == i as u32
                        && h.len as usize == want =>
                {
                    let data = &buf[block..block + want];
                    if PieceHeader::data_crc(&uuid, data) == h.data_crc {
                        // The part of the piece inside the bytes read.
                        let base = i as u64 * cap;
                        let from = base.max(a.lo);
                        let to = (base + want as u64).min(a.lo + a.len);
                        let at = a.at + (from - a.lo) as usize;
                        let src = &data[(from - base) as usize..(to - base) as usize];
                        a.out[at..at + src.len()].copy_from_slice(src);
                        Ok(())
                    } else {
                        Err(format!("piece {i} of the value fails its checksum"))
                    }
                }
                _ => Err(format!("piece {i} of the value is missing")),
            },
            Ok(n) => Err(format!("short read of {n} of {} bytes", buf.len())),
            Err(e) => Err(format!("I/O error reading a piece: {e}")),
        };
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
        let a = self.assemblies.remove(&id).expect("an assembly");
        let tag = a.req.hash.tag;
        match a.failed {
            Some(msg) => {
                let entry = a.entry;
                self.corrupt(&a.req, entry, &msg);
            }
            None => self.assembled(a),
        }
        self.release(tag);
    }

    /// The value of assembly `a` is whole: its request goes on.
    fn assembled(&mut self, a: Assembly) {
        match a.req.op {
            Op::Get { .. } => {
                let st = self.stats();
                st.reads.fetch_add(1, Relaxed);
                st.hits.fetch_add(1, Relaxed);
                return self.reply(&a.req, Reply::Encoded(a.out));
            }
            Op::GetRange { .. } => return self.reply(&a.req, Reply::Encoded(a.out)),
            _ => {}
        }
        let rec = decode_record(&self.shared.sb.uuid, &a.record).expect("decoded before");
        let value = &a.out[a.at..a.at + a.len as usize];
        let rec = Record {
            meta: RecordMeta {
                flags: rec.meta.flags & !FLAG_LARGE,
                ..rec.meta
            },
            value,
            ..rec
        };
        self.finish_record(a.req, a.entry, &rec);
    }

    /// EXPIRE, PEXPIRE or PERSIST on a large value (not one that deletes
    /// it): a new head with the new expiry, sharing the pieces.
    pub(super) fn expire_large(&mut self, req: Request, rec: &Record, at_ms: u64, persist: bool) {
        if is_sub(&req) {
            let len = LargeHead::decode(rec.value).map_or(0, |h| h.total_len);
            let msg = text::large_value_unsupported(len);
            return self.reply(&req, Reply::Error(msg));
        }
        let at = if persist { 0 } else { at_ms };
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
        let Op::Move { key, to, kind, .. } = &req.op else {
            unreachable!()
        };
        if is_sub(&req) {
            let len = LargeHead::decode(rec.value).map_or(0, |h| h.total_len);
            let msg = text::large_value_unsupported(len);
            return self.reply(&req, Reply::Error(msg));
        }
        let copy = matches!(kind, MoveKind::Copy { .. });
        let expire = rec.meta.expire_ms;
        let mut result = self
            .ks
            .write_head(to.pid, &to.hash, &to.key, rec.value, expire);
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
                tracing::error!(
                    poller = self.id,
                    "a moved large value not replicated: {msg}"
                );
            }
        }
        self.acknowledge_now(req, result, ok)
    }
}
