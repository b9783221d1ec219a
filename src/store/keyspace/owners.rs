//! Whose records the poller knows: the key (its 128-bit digest) of each
//! record it wrote or read lately, by offset.
//!
//! An index slot keeps 32 bits of a key's tag, which do not prove the key
//! (`index`): a SET, a DEL or an EXISTS that finds an entry of its key's
//! tag reads its record to learn whose it is — one device read that a
//! key's own entry does not need. A record the poller wrote, or read for
//! a request of its key, is known: the key of the record at an offset
//! does not change while an entry points there (records are never written
//! over in place, and a segment is reused only after its entries are
//! gone), and every record the poller writes replaces what it knew of its
//! offset. What is known is kept for the last [`CAPACITY`] records, the
//! oldest forgotten first, so that a key written or read lately is
//! written over, deleted or tested with no read of its record.

use std::collections::{HashMap, VecDeque};

/// Records known at most, per poller: about 40 bytes each.
pub(super) const CAPACITY: usize = 1 << 17;

/// The keys of the records known, by offset, and the order they came in.
#[derive(Default)]
pub(super) struct Owners {
    keys: HashMap<u64, u128>,
    order: VecDeque<u64>,
}

/// The digest that tells keys apart (`xxh3_128` of the whole key).
pub(super) fn digest(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

impl Owners {
    /// The record at `offset` holds `key`.
    pub(super) fn note(&mut self, offset: u64, key: &[u8]) {
        if self.keys.insert(offset, digest(key)).is_none() {
            self.order.push_back(offset);
        }
        while self.keys.len() > CAPACITY {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.keys.remove(&old);
        }
    }

    /// Whether the record at `offset` holds `key` (`Some(false)`: another
    /// key), if it is known.
    pub(super) fn holds(&self, offset: u64, key: &[u8]) -> Option<bool> {
        self.keys.get(&offset).map(|d| *d == digest(key))
    }

    /// Forgets every record (a flush: the offsets are written again).
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.order.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_again_at_its_offset_is_the_new_key_s() {
        let mut o = Owners::default();
        o.note(4096, b"a");
        assert_eq!(o.holds(4096, b"a"), Some(true));
        assert_eq!(o.holds(4096, b"b"), Some(false));
        assert_eq!(o.holds(8192, b"a"), None);
        o.note(4096, b"b");
        assert_eq!(o.holds(4096, b"b"), Some(true));
        assert_eq!(o.holds(4096, b"a"), Some(false));
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn the_oldest_records_are_forgotten_first() {
        let mut o = Owners::default();
        for i in 0..CAPACITY as u64 + 10 {
            o.note(i * 512, &i.to_le_bytes());
        }
        assert_eq!(o.len(), CAPACITY);
        assert_eq!(o.holds(0, &0u64.to_le_bytes()), None);
        assert_eq!(o.holds(9 * 512, &9u64.to_le_bytes()), None);
        let last = CAPACITY as u64 + 9;
        assert_eq!(o.holds(last * 512, &last.to_le_bytes()), Some(true));
        assert_eq!(o.holds(10 * 512, &10u64.to_le_bytes()), Some(true));
    }
}
