//! A poller's cache of key names for SCAN: for each record read, its
//! device offset and its key. The index knows a key by its tag only, so
//! without it every key a SCAN step returns costs a random device read;
//! a fill reads the records of a window of the poller's key space in
//! spans of whole segments, sequentially, and the steps of an iteration
//! then take their keys from here.
//!
//! The cache is only a shortcut, never the truth: a step still takes its
//! entries from the index, and uses a name only when the index's entry
//! points at the very offset the name was read from and the name hashes
//! to the entry's tag. A key written again, or moved by compaction, since
//! the fill has another offset and is read from the device as before.

/// A place in a poller's key space in cursor order: partition, then tag.
pub(super) type Place = (u32, u64);

/// Key names by place, for a window `[lo, hi)` of the key space.
#[derive(Debug)]
pub(super) struct KeyNames {
    /// First place covered.
    lo: Place,
    /// First place past the window; `None`: to the end of the poller's
    /// key space.
    hi: Option<Place>,
    /// The records read, in place order once sealed (a step's keys are
    /// neighbours: looked up by a walk, not a search per key).
    at: Vec<Name>,
    /// The keys, in the order of `at` once sealed.
    bytes: Vec<u8>,
    /// Bytes this cache may hold (names and their offsets).
    cap: usize,
    /// When a step last used it (ms since the Unix epoch).
    pub(super) used_ms: u64,
    /// When its fill started.
    pub(super) filled_ms: u64,
}

/// A record read: its key's place, its offset, and where its key starts
/// in [`KeyNames::bytes`] (it ends where the next one starts).
#[derive(Debug, Clone, Copy)]
struct Name {
    tag: u64,
    offset: u64,
    pid: u32,
    start: u32,
}

/// Bytes an entry takes besides its key.
pub(super) const ENTRY_BYTES: usize = std::mem::size_of::<Name>();

impl KeyNames {
    pub(super) fn new(lo: Place, hi: Option<Place>, cap: usize, now_ms: u64) -> Self {
        KeyNames {
            lo,
            hi,
            at: Vec::new(),
            bytes: Vec::new(),
            cap,
            used_ms: now_ms,
            filled_ms: now_ms,
        }
    }

    /// Remembers that the record at `offset` holds `key`, the key of
    /// `(pid, tag)`; false, and nothing kept, when the cache is full.
    pub(super) fn insert(&mut self, (pid, tag): Place, offset: u64, key: &[u8]) -> bool {
        if self.size() + ENTRY_BYTES + key.len() > self.cap {
            return false;
        }
        let start = self.bytes.len() as u32;
        self.at.push(Name {
            tag,
            offset,
            pid,
            start,
        });
        self.bytes.extend_from_slice(key);
        true
    }

    /// Makes the names searchable (after the fill's last insert): sorts
    /// them by place, their keys with them.
    pub(super) fn seal(&mut self) {
        let mut order: Vec<(Name, usize)> = (0..self.at.len())
            .map(|i| {
                let end = self
                    .at
                    .get(i + 1)
                    .map_or(self.bytes.len(), |n| n.start as usize);
                (self.at[i], end)
            })
            .collect();
        order.sort_unstable_by_key(|(n, _)| (n.pid, n.tag));
        order.dedup_by_key(|(n, _)| (n.pid, n.tag));
        let mut at = Vec::with_capacity(order.len());
        let mut bytes = Vec::with_capacity(self.bytes.len());
        for (n, end) in order {
            at.push(Name {
                start: bytes.len() as u32,
                ..n
            });
            bytes.extend_from_slice(&self.bytes[n.start as usize..end]);
        }
        self.at = at;
        self.bytes = bytes;
    }

    /// Whether a step starting at `place` lies in the window.
    pub(super) fn covers(&self, place: Place) -> bool {
        place >= self.lo && self.hi.is_none_or(|hi| place < hi)
    }

    /// The keys of `wanted`, sorted by place: for each `(place, offset)`,
    /// the key read at `offset` for `place`, if the cache holds it, in one
    /// walk.
    pub(super) fn lookup(
        &self,
        wanted: impl IntoIterator<Item = (Place, u64)>,
    ) -> impl Iterator<Item = Option<&[u8]>> {
        let mut i = None;
        wanted.into_iter().map(move |(place, offset)| {
            let at = &self.at;
            let mut k = match i {
                // A long way on: a search; a short one: a walk.
                Some(k) if at.get(k + 64).is_none_or(|n: &Name| (n.pid, n.tag) > place) => k,
                _ => at.partition_point(|n| (n.pid, n.tag) < place),
            };
            while k < at.len() && (at[k].pid, at[k].tag) < place {
                k += 1;
            }
            i = Some(k);
            let n = at
                .get(k)
                .filter(|n| (n.pid, n.tag) == place && n.offset == offset)?;
            let end = at.get(k + 1).map_or(self.bytes.len(), |m| m.start as usize);
            Some(&self.bytes[n.start as usize..end])
        })
    }

    /// Names held.
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }

    /// Bytes of the names held.
    pub(super) fn key_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Bytes held (names and their offsets).
    pub(super) fn size(&self) -> usize {
        self.at.len() * ENTRY_BYTES + self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(n: &KeyNames, place: Place, offset: u64) -> Option<Vec<u8>> {
        n.lookup([(place, offset)])
            .next()
            .unwrap()
            .map(|k| k.to_vec())
    }

    #[test]
    fn names_are_found_by_place_and_offset() {
        let mut n = KeyNames::new((0, 0), None, 1 << 20, 0);
        assert!(n.insert((1, 5), 4096, b"bb"));
        assert!(n.insert((0, 9), 16, b"a"));
        assert!(n.insert((1, 2), 32, b"ccc"));
        assert!(n.insert((1, 1), 48, b""));
        n.seal();
        assert_eq!(get(&n, (0, 9), 16).as_deref(), Some(&b"a"[..]));
        assert_eq!(get(&n, (1, 5), 4096).as_deref(), Some(&b"bb"[..]));
        assert_eq!(get(&n, (1, 2), 32).as_deref(), Some(&b"ccc"[..]));
        assert_eq!(get(&n, (1, 1), 48).as_deref(), Some(&b""[..]));
        // The key written again or moved since: another offset.
        assert_eq!(get(&n, (0, 9), 32), None);
        assert_eq!(get(&n, (0, 8), 16), None);
        let all: Vec<_> = n
            .lookup([
                ((0, 1), 0),
                ((0, 9), 16),
                ((1, 2), 32),
                ((1, 3), 0),
                ((1, 5), 4096),
                ((2, 0), 0),
            ])
            .map(|k| k.map(<[u8]>::to_vec))
            .collect();
        let want: Vec<Option<Vec<u8>>> = vec![
            None,
            Some(b"a".to_vec()),
            Some(b"ccc".to_vec()),
            None,
            Some(b"bb".to_vec()),
            None,
        ];
        assert_eq!(all, want);
        assert_eq!(n.len(), 4);
    }

    #[test]
    fn a_long_walk_finds_every_name() {
        let mut n = KeyNames::new((0, 0), None, 1 << 20, 0);
        for i in (0..1000u64).rev() {
            n.insert((0, i * 3), i * 16, format!("k{i}").as_bytes());
        }
        n.seal();
        let wanted: Vec<(Place, u64)> = (0..1000u64)
            .step_by(7)
            .map(|i| ((0, i * 3), i * 16))
            .collect();
        let got: Vec<_> = n.lookup(wanted.clone()).collect();
        for (((_, off), k), i) in wanted.iter().zip(got).zip((0..1000u64).step_by(7)) {
            assert_eq!(k, Some(format!("k{i}").as_bytes()), "offset {off}");
        }
    }

    #[test]
    fn the_cap_bounds_the_bytes_held() {
        let cap = 3 * (ENTRY_BYTES + 4);
        let mut n = KeyNames::new((0, 0), None, cap, 0);
        for i in 0..10u64 {
            n.insert((0, i), i * 16, format!("k{i:03}").as_bytes());
        }
        assert_eq!(n.len(), 3);
        assert!(n.size() <= cap);
    }

    #[test]
    fn the_window_is_half_open() {
        let n = KeyNames::new((1, 100), Some((2, 50)), 1024, 0);
        assert!(!n.covers((1, 99)));
        assert!(n.covers((1, 100)));
        assert!(n.covers((1, u64::MAX)));
        assert!(n.covers((2, 49)));
        assert!(!n.covers((2, 50)));
        assert!(KeyNames::new((0, 0), None, 1024, 0).covers((7, 7)));
    }
}
