//! A replica's full copy on the poller ([`Op::CopyStep`], which a
//! primary's feed hands the poller's ring directly, a few steps ahead,
//! each with a buffer of an earlier step to fill and a channel for its
//! answer). The first step of a copy takes the index entries of every
//! key of the poller's partitions at once (no write can come between)
//! into a session, sorted by device offset; each step then takes the
//! next 16 MiB of their records, reads them whole (key, value and expiry
//! in one read), with the live records of one segment read as one span
//! where they are dense enough and the rest one by one, as many reads at
//! a time as read slots allow, and answers with them as the commands the
//! replica applies (steps may be answered out of order: each key comes
//! once). So the copy reads the device about sequentially, once, and the
//! primary sends the commands on as they are, with no GET and
//! PEXPIRETIME per key.
//!
//! Every key present for the whole copy is in the session. A record that
//! no longer holds its key when read (the key was written again, or moved
//! by compaction, since the session began) is read again where the index
//! points then ([`super`]'s `record_read`), so a key that compaction
//! moves, into a part of the device already read or not, is never lost.
//! A record read is the key's state at some moment after the copy began:
//! the stream from the copy's start offset overwrites it. Tombstones and
//! expired records are left out.
//!
//! A value larger than a segment is in pieces under a head record: the
//! step answers its key apart, and the feed reads it with GET and
//! PEXPIRETIME (the poller's reader of pieces), as any client would.
//!
//! [`Op::CopyStep`]: super::super::super::msg::Op::CopyStep

use super::Item;
use crate::io::IoBuf;
use crate::resp;
use crate::server::msg::{CopyCut, CopyPart};

/// A step's keys, as `SET key value [PXAT ms]` commands in RESP, the
/// values of span reads left in their read buffers ([`CopyPart`]).
#[derive(Debug, Default)]
pub(super) struct Sets(CopyPart);

impl Sets {
    /// Into `buf` (its contents dropped, its memory used again), with
    /// room for `bytes`: a buffer grows with room to spare, so that the
    /// next steps' (of about as many bytes) fit it without growing it
    /// again (fresh memory costs the kernel's zeroing of its pages).
    pub(super) fn new(mut buf: Vec<u8>, bytes: usize) -> Self {
        buf.clear();
        if buf.capacity() < bytes {
            buf.reserve(bytes + bytes / 8);
        }
        Sets(CopyPart {
            bytes: buf,
            ..CopyPart::default()
        })
    }

    /// Adds a key whose value is in pieces.
    pub(super) fn push_large(&mut self, key: &[u8]) {
        self.0.large.push(key.into());
    }

    /// Adds a live key's SET: `expire_ms` absolute, 0 for none.
    pub(super) fn push(&mut self, key: &[u8], value: &[u8], expire_ms: u64) {
        let bytes = &mut self.0.bytes;
        if expire_ms > 0 {
            let at = expire_ms.to_string();
            resp::encode::command(bytes, &[b"SET", key, value, b"PXAT", at.as_bytes()]);
        } else {
            resp::encode::command(bytes, &[b"SET", key, value]);
        }
        self.0.keys += 1;
    }

    /// Adds a live key's SET whose value is `len` bytes at `start` of the
    /// read buffer [`Sets::take_read`] takes next: sent from there.
    pub(super) fn push_read(&mut self, key: &[u8], start: usize, len: usize, expire_ms: u64) {
        let bytes = &mut self.0.bytes;
        resp::encode::array(bytes, if expire_ms > 0 { 5 } else { 3 });
        resp::encode::bulk(bytes, b"SET");
        resp::encode::bulk(bytes, key);
        resp::encode::bulk_header(bytes, len);
        self.0.cuts.push(CopyCut {
            at: bytes.len() as u32,
            read: self.0.reads.len() as u32,
            start: start as u32,
            len: len as u32,
        });
        bytes.extend_from_slice(b"\r\n");
        if expire_ms > 0 {
            resp::encode::bulk(bytes, b"PXAT");
            resp::encode::bulk(bytes, expire_ms.to_string().as_bytes());
        }
        self.0.keys += 1;
    }

    /// Takes the read buffer that the values pushed by
    /// [`Sets::push_read`] since the last one lie in, if any did.
    pub(super) fn take_read(&mut self, buf: IoBuf) -> Option<IoBuf> {
        let next = self.0.reads.len() as u32;
        if self.0.cuts.last().is_some_and(|c| c.read == next) {
            self.0.reads.push(buf);
            None
        } else {
            Some(buf)
        }
    }

    /// The step's answer; `last`: the copy has no records left;
    /// `entries`: those the copy took, in its first step's.
    pub(super) fn part(self, last: bool, entries: Option<u64>) -> CopyPart {
        CopyPart {
            last,
            entries,
            ..self.0
        }
    }
}

/// Record bytes a copy step reads (more by its last record).
pub(super) const STEP_BYTES: u64 = 16 << 20;
/// A copy step reads a segment's span when it is at most this many times
/// the bytes of its records' single reads: the steps go through the
/// records in device order, so their segments' live records are read
/// sequentially.
pub(super) const SPAN_WASTE: u64 = 16;
/// The answer to a step of a copy not under way (its feed fails the
/// copy, and the replica syncs again).
pub(super) const NO_SESSION: &str = "no such full copy under way";
/// A copy not stepped for this long is dropped (its feed is gone).
const IDLE_MS: u64 = 120_000;

/// A full copy of a poller's records: the index entries of every key of
/// its partitions when the copy began, in device order, taken by the
/// steps.
#[derive(Debug)]
pub(super) struct Session {
    items: Vec<Item>,
    /// The next item to take.
    next: usize,
    used_ms: u64,
    /// Read buffers the feed sent and gave back, for the next span reads.
    spare: Vec<IoBuf>,
}

impl Session {
    pub(super) fn new(mut items: Vec<Item>, now_ms: u64) -> Self {
        items.sort_unstable_by_key(|it| it.entry.offset);
        Session {
            items,
            next: 0,
            used_ms: now_ms,
            spare: Vec::new(),
        }
    }

    /// Keeps read buffers given back for the next span reads (none once
    /// every record is taken: the last reads take the engine's).
    pub(super) fn give_back(&mut self, reads: Vec<IoBuf>) {
        if !self.done() {
            self.spare.extend(reads);
        }
    }

    /// A buffer of `len` bytes for a span read, from those given back.
    pub(super) fn read_buf(&mut self, len: usize) -> Option<IoBuf> {
        let i = self.spare.iter().position(|b| b.capacity() >= len)?;
        let mut buf = self.spare.swap_remove(i);
        buf.set_len(len);
        Some(buf)
    }

    /// Takes the next records, about `bytes` of them, into `todo`.
    pub(super) fn take(&mut self, bytes: u64, todo: &mut Vec<Item>, now_ms: u64) {
        self.used_ms = now_ms;
        let mut taken = 0;
        while taken < bytes {
            let Some(it) = self.items.get(self.next) else {
                break;
            };
            taken += u64::from(it.entry.len);
            todo.push(*it);
            self.next += 1;
        }
        if self.done() {
            self.items = Vec::new();
            self.spare = Vec::new();
        }
    }

    pub(super) fn entries(&self) -> u64 {
        self.items.len() as u64
    }

    pub(super) fn done(&self) -> bool {
        self.next >= self.items.len()
    }

    pub(super) fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.used_ms) >= IDLE_MS
    }
}
