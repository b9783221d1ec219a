//! Keys that leave without a client's write: expired (found by a read, the
//! sweep or compaction) or evicted. A primary sends its replicas a DEL for
//! each, so while replication asks for them ([`Keyspace::report_gone`])
//! they are reported by name, in the order they went. The index knows a
//! key by its hash only: the name of a record not in a segment buffer
//! takes one device read. A record that fails its check then has no name
//! to give: [`Keyspace::take_gone`] counts it, and the replicas sync again
//! in full.
//!
//! Each report carries the sequence number the next record would have
//! taken when the key went (`mark`): it goes after every record numbered
//! below, before every one numbered from there on. It also carries the
//! sequence number of the record that went (`seq`): if that record is
//! rolled back, so is its going.

use std::collections::VecDeque;

use super::{Keyspace, Tag};
use crate::format::decode_record;
use crate::index::Entry;
use crate::io::{Completion, Engine};

/// A key that went, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneKey {
    /// Records numbered below this went before it, the others after.
    pub mark: u64,
    /// The sequence number of its record.
    pub seq: u64,
    pub key: Vec<u8>,
}

/// Device reads of gone records in flight at most.
const MAX_READS: usize = 8;

#[derive(Debug, Default)]
pub(super) struct GoneKeys {
    /// Replication asks for the reports.
    on: bool,
    /// A replica's store does not expire keys by its own clock: expired
    /// keys read as missing, and go when the primary's DEL comes.
    pub(super) hold_expired: bool,
    queue: VecDeque<Gone>,
    reads: usize,
    next_id: u32,
}

#[derive(Debug)]
struct Gone {
    mark: u64,
    entry: Entry,
    state: State,
}

#[derive(Debug)]
enum State {
    Unread,
    Reading(u32),
    Named(Vec<u8>, u64),
    /// Its record could not be read back: no name to report (the
    /// replicas sync again in full, see [`Keyspace::take_gone`]).
    Lost,
}

impl GoneKeys {
    pub(super) fn on(&self) -> bool {
        self.on
    }
}

impl<E: Engine, W> Keyspace<E, W> {
    /// Whether keys that go are reported ([`Keyspace::take_gone`]).
    pub fn report_gone(&mut self, on: bool) {
        self.gone.on = on;
    }

    /// Whether expired keys stay until deleted (a replica's store): they
    /// read as missing, but neither reads nor the sweep remove them.
    pub fn hold_expired(&mut self, hold: bool) {
        self.gone.hold_expired = hold;
    }

    /// DEL of a key that reads as missing: an expired key held (see
    /// [`Keyspace::hold_expired`]) goes now.
    pub fn forget_expired(&mut self, pid: u32, hash: &crate::index::KeyHash) {
        if !self.gone.hold_expired {
            return;
        }
        if let super::Lookup::Expired(old) = self.shard(pid).lookup(pid, hash, self.now_ms) {
            if let Some(e) = (self.shard_mut(pid).part_mut(pid)).mark_gone_at(hash.tag, old.offset)
            {
                self.mark_gone_bytes(e);
                self.update_key_count();
            }
        }
    }

    /// The record of `e` went (expired or evicted).
    pub(super) fn went(&mut self, e: Entry) {
        if !self.gone.on {
            return;
        }
        let mark = self.log.next_seq;
        let state = match self
            .log
            .buffered(e)
            .map(|b| decode_record(&self.sb.uuid, b))
        {
            Some(Ok(rec)) => State::Named(rec.key.to_vec(), rec.meta.seq),
            Some(Err(_)) => State::Lost,
            None => State::Unread,
        };
        self.gone.queue.push_back(Gone {
            mark,
            entry: e,
            state,
        });
    }

    /// A key went whose record is at hand (compaction's).
    pub(super) fn went_named(&mut self, e: Entry, key: &[u8], seq: u64) {
        if self.gone.on {
            let mark = self.log.next_seq;
            self.gone.queue.push_back(Gone {
                mark,
                entry: e,
                state: State::Named(key.to_vec(), seq),
            });
        }
    }

    /// Reads the records of gone keys not yet named, as engine slots and
    /// buffers allow.
    pub(super) fn read_gone(&mut self) {
        let block = self.block;
        for g in self.gone.queue.iter_mut() {
            if self.gone.reads >= MAX_READS {
                return;
            }
            if !matches!(g.state, State::Unread) {
                continue;
            }
            let start = crate::format::align_down(g.entry.offset, block);
            let end = crate::format::align_up(g.entry.offset + g.entry.len as u64, block);
            let Ok(buf) = self.eng.alloc((end - start) as usize) else {
                return;
            };
            let id = self.gone.next_id;
            if self
                .eng
                .read(start, buf, Tag::GoneRead(id).encode())
                .is_err()
            {
                return;
            }
            self.gone.next_id = id.wrapping_add(1);
            self.gone.reads += 1;
            g.state = State::Reading(id);
        }
    }

    /// A read of a gone record completed.
    pub(super) fn gone_read_done(&mut self, c: Completion) {
        let Some(Tag::GoneRead(id)) = Tag::decode(c.tag) else {
            return;
        };
        self.gone.reads -= 1;
        let block = self.block;
        let Some(g) =
            (self.gone.queue.iter_mut()).find(|g| matches!(g.state, State::Reading(i) if i == id))
        else {
            return;
        };
        let buf = c.buf.expect("a read returns its buffer");
        let at = (g.entry.offset - crate::format::align_down(g.entry.offset, block)) as usize;
        let named = match c.result {
            Ok(n) if n == buf.len() => buf
                .get(at..at + g.entry.len as usize)
                .and_then(|b| decode_record(&self.sb.uuid, b).ok())
                .map(|rec| (rec.key.to_vec(), rec.meta.seq)),
            _ => None,
        };
        g.state = match named {
            Some((key, seq)) => State::Named(key, seq),
            None => {
                tracing::warn!(
                    offset = g.entry.offset,
                    "the name of a key that expired or was evicted could not be read: \
                     no DEL can be sent for it"
                );
                State::Lost
            }
        };
    }

    /// The keys that went, named, in the order they went, up to the first
    /// whose name is still being read; returns how many of those taken had
    /// no name to give (their records failed their checks): a replica
    /// cannot be told of them by a DEL.
    pub fn take_gone(&mut self, out: &mut Vec<GoneKey>) -> u64 {
        let mut unnamed = 0;
        while let Some(g) = self.gone.queue.front() {
            match &g.state {
                State::Unread | State::Reading(_) => return unnamed,
                State::Lost => unnamed += 1,
                State::Named(key, seq) => out.push(GoneKey {
                    mark: g.mark,
                    seq: *seq,
                    key: key.clone(),
                }),
            }
            self.gone.queue.pop_front();
        }
        unnamed
    }

    /// The mark of the first key that went whose name is not known yet:
    /// records numbered from there on wait for it.
    pub fn gone_unnamed(&self) -> Option<u64> {
        self.gone.queue.front().map(|g| g.mark)
    }
}
