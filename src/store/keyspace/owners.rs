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
//! offset.
//!
//! What is known is kept in a fixed table of [`CAPACITY`] records: an
//! offset has one set of two places (one cache line), and a record noted
//! in a full set takes the place of the one noted less lately. Every
//! GET asks and notes, so each must cost one memory access: a hash map
//! with an order of arrival (this table's first form) cost a poller about
//! a sixth of its time at 250,000 GETs a second, in cache misses on its
//! buckets and in hashing.

/// Records known at most, per poller: 32 bytes each.
pub(super) const CAPACITY: usize = 1 << 17;
/// Places per set.
const WAYS: usize = 2;
const SETS: usize = CAPACITY / WAYS;
/// Bytes of a set, one cache line: the offsets of its places (plus one:
/// 0 is an empty place) as little-endian u64s, then their records' key
/// digests as u128s, then the place a new record takes.
const SET: usize = 64;
const DIGESTS: usize = 8 * WAYS;
const NEXT: usize = DIGESTS + 16 * WAYS;

/// The keys of the records known, by offset, in anonymous memory whose
/// pages the kernel provides as they are first used (a server with few
/// records does not pay for the whole table). `None`: the memory was
/// refused, and nothing is known.
pub(super) struct Owners {
    sets: Option<memmap2::MmapMut>,
}

impl Default for Owners {
    fn default() -> Self {
        Owners {
            sets: memmap2::MmapMut::map_anon(SETS * SET).ok(),
        }
    }
}

/// The digest that tells keys apart (`xxh3_128` of the whole key).
pub(super) fn digest(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

/// The set of the record at `offset` (a multiple of 16; records of one
/// segment lie side by side, so the offset is mixed before it is cut).
fn set_of(offset: u64) -> usize {
    ((offset >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SETS.trailing_zeros())) as usize
}

fn at(set: &[u8], way: usize) -> u64 {
    u64::from_le_bytes(set[8 * way..8 * way + 8].try_into().expect("8 bytes"))
}

fn digest_at(set: &[u8], way: usize) -> u128 {
    let d = DIGESTS + 16 * way;
    u128::from_le_bytes(set[d..d + 16].try_into().expect("16 bytes"))
}

/// The place of `set` that knows the record at `offset`.
fn way_of(set: &[u8], offset: u64) -> Option<usize> {
    (0..WAYS).find(|&way| at(set, way) == offset + 1)
}

impl Owners {
    /// The record at `offset` holds `key`.
    pub(super) fn note(&mut self, offset: u64, key: &[u8]) {
        let Some(sets) = self.sets.as_mut() else {
            return;
        };
        let set = &mut sets[set_of(offset) * SET..][..SET];
        let way = way_of(set, offset).unwrap_or(set[NEXT] as usize);
        set[NEXT] = ((way + 1) % WAYS) as u8;
        set[8 * way..8 * way + 8].copy_from_slice(&(offset + 1).to_le_bytes());
        let d = DIGESTS + 16 * way;
        set[d..d + 16].copy_from_slice(&digest(key).to_le_bytes());
    }

    /// Whether the record at `offset` holds `key` (`Some(false)`: another
    /// key), if it is known.
    pub(super) fn holds(&self, offset: u64, key: &[u8]) -> Option<bool> {
        let set = &self.sets.as_ref()?[set_of(offset) * SET..][..SET];
        let way = way_of(set, offset)?;
        Some(digest_at(set, way) == digest(key))
    }

    /// Forgets every record (a flush: the offsets are written again).
    pub(super) fn clear(&mut self) {
        *self = Owners::default();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let sets = self.sets.as_ref().expect("memory");
        (sets.chunks(SET))
            .map(|set| (0..WAYS).filter(|&way| at(set, way) != 0).count())
            .sum()
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
    fn a_full_set_forgets_the_record_noted_less_lately() {
        let mut o = Owners::default();
        let mut same = (0..)
            .map(|i: u64| i * 16)
            .filter(|&off| set_of(off) == set_of(0));
        let (a, b, c) = (
            same.next().unwrap(),
            same.next().unwrap(),
            same.next().unwrap(),
        );
        o.note(a, b"a");
        o.note(b, b"b");
        // Noting a known record again keeps both, and makes it the later.
        o.note(a, b"a");
        assert_eq!(
            (o.holds(a, b"a"), o.holds(b, b"b")),
            (Some(true), Some(true))
        );
        o.note(c, b"c");
        assert_eq!(o.holds(b, b"b"), None);
        assert_eq!(
            (o.holds(a, b"a"), o.holds(c, b"c")),
            (Some(true), Some(true))
        );
        o.note(b, b"b");
        assert_eq!(o.holds(a, b"a"), None);
        assert_eq!(
            (o.holds(c, b"c"), o.holds(b, b"b")),
            (Some(true), Some(true))
        );
    }

    #[test]
    fn the_records_of_a_segment_spread_over_the_whole_table() {
        let mut o = Owners::default();
        // Records of 512 bytes side by side, as a segment holds them.
        for i in 0..CAPACITY as u64 {
            o.note(i * 512, &i.to_le_bytes());
        }
        assert!(o.len() > CAPACITY * 3 / 5, "{} of {CAPACITY} kept", o.len());
        let last = CAPACITY as u64 - 1;
        assert_eq!(o.holds(last * 512, &last.to_le_bytes()), Some(true));
        o.clear();
        assert_eq!(
            (o.len(), o.holds(last * 512, &last.to_le_bytes())),
            (0, None)
        );
    }
}
