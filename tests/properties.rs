//! Property tests: the RESP parser against an encoder, and the index
//! against a `HashMap` model.

use std::collections::HashMap;

use nvkv::index::{Checkpoint, Entry, KeyHash, Owner, Partition, MAX_EXPIRE_MS};
use nvkv::resp::{parse_command, Limits};
use proptest::prelude::*;

fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any command encoded as a multibulk array parses back to itself, and
    /// every strict prefix of it asks for more input.
    #[test]
    fn resp_round_trip(args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..8)) {
        let wire = encode(&args);
        let mut ranges = Vec::new();
        let n = parse_command(&wire, &Limits::default(), &mut ranges).unwrap();
        prop_assert_eq!(n, Some(wire.len()));
        let got: Vec<Vec<u8>> = ranges.iter().map(|r| wire[r.clone()].to_vec()).collect();
        prop_assert_eq!(got, args);
        for cut in 0..wire.len() {
            prop_assert_eq!(parse_command(&wire[..cut], &Limits::default(), &mut ranges).unwrap(), None);
        }
    }

    /// Arbitrary bytes never panic the parser, and what it consumes is
    /// within the input.
    #[test]
    fn resp_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut ranges = Vec::new();
        let limits = Limits { max_bulk: 64, max_args: 8, max_inline: 128, unauthenticated: false };
        if let Ok(Some(n)) = parse_command(&bytes, &limits, &mut ranges) {
            prop_assert!(n <= bytes.len());
            prop_assert!(ranges.iter().all(|r| r.end <= n));
        }
    }
}

#[derive(Debug, Clone)]
enum IndexOp {
    Insert(u16, u32, bool, u64),
    Remove(u16),
    Get(u16),
    /// The key expired or was evicted.
    MarkGone(u16),
    Access(u16, u32),
}

fn index_op() -> impl Strategy<Value = IndexOp> {
    prop_oneof![
        4 => (any::<u16>(), 1u32..1_000_000, any::<bool>(), any::<u64>())
            .prop_map(|(k, o, t, e)| IndexOp::Insert(k % 2000, o, t, e)),
        2 => any::<u16>().prop_map(|k| IndexOp::Remove(k % 2000)),
        1 => any::<u16>().prop_map(|k| IndexOp::Get(k % 2000)),
        1 => any::<u16>().prop_map(|k| IndexOp::MarkGone(k % 2000)),
        1 => (any::<u16>(), any::<u32>()).prop_map(|(k, w)| IndexOp::Access(k % 2000, w)),
    ]
}

/// A key's hash with its tag crowded onto one of 8 home places of the
/// table (whatever its size), the last of them at the very end so that its
/// run wraps past the end: long Robin Hood runs that meet and wrap.
fn crowded_hash(k: u16) -> KeyHash {
    let (spot, n) = ((k % 8) as u64, (k / 8) as u64);
    // Tables on their files keep a tag's top 32 bits.
    let tag = if spot == 7 {
        (u64::MAX - n) << 32
    } else {
        spot << 61 | n << 32
    };
    KeyHash { lo: 0, tag }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The index behaves as a map through growth and removals, keeps a
    /// key's access bits through replacements and growth, keeps its
    /// contents across a clean close and reopen, and keeps Robin Hood
    /// order; with `crowded`, keys share home slots in long runs, some
    /// wrapping past the end of the table.
    #[test]
    fn index_matches_a_model(ops in prop::collection::vec(index_op(), 1..3000), crowded in any::<bool>()) {
        let key = |k: u16| if crowded { crowded_hash(k) } else { KeyHash::of(&k.to_le_bytes()) };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, Owner::new([9; 16], 1 << 44), 8).unwrap();
        let mut model: HashMap<u64, Entry> = HashMap::new();
        let mut access: HashMap<u64, u32> = HashMap::new();
        for op in ops {
            match op {
                IndexOp::Insert(k, off, tomb, exp) => {
                    let h = key(k);
                    let e = Entry { offset: off as u64 * 16, len: 4096, tombstone: tomb, expire_ms: exp };
                    // Expiries past the year 2527 are kept as "far future".
                    let kept = Entry { expire_ms: exp.min(MAX_EXPIRE_MS), ..e };
                    prop_assert_eq!(p.insert(&h, e).unwrap(), model.insert(h.tag, kept));
                    access.entry(h.tag).or_insert(0);
                }
                IndexOp::Remove(k) => {
                    let h = key(k);
                    prop_assert_eq!(p.remove(&h), model.remove(&h.tag));
                    access.remove(&h.tag);
                }
                IndexOp::MarkGone(k) => {
                    let h = key(k);
                    let was = model.get(&h.tag).copied().filter(|e| !e.tombstone);
                    prop_assert_eq!(p.mark_gone(h.tag), was);
                    if let Some(e) = was {
                        let marker = Entry { tombstone: true, expire_ms: e.expire_ms.max(1), ..e };
                        prop_assert!(marker.is_marker());
                        model.insert(h.tag, marker);
                    }
                }
                IndexOp::Access(k, w) => {
                    let h = key(k);
                    p.update_access(h.tag, |_| w);
                    if let Some(a) = access.get_mut(&h.tag) {
                        *a = w & ((1 << nvkv::index::ACCESS_BITS) - 1);
                    }
                }
                IndexOp::Get(k) => {
                    let h = key(k);
                    prop_assert_eq!(p.get(&h), model.get(&h.tag).copied());
                }
            }
        }
        prop_assert_eq!(p.entries(), model.len() as u64);
        prop_assert_eq!(p.check_order(), Ok(()));
        let expiring = model.values().filter(|e| !e.tombstone && e.expire_ms != 0).count();
        prop_assert_eq!(p.expiring(), expiring as u64);
        for (tag, a) in &access {
            prop_assert_eq!(p.access(*tag), Some(*a));
        }
        p.mark_clean(Checkpoint { max_seq: 1, max_gen: 1 }).unwrap();
        drop(p);
        let (p, cp) = Partition::open(dir.path(), 0, Owner::new([9; 16], 1 << 44)).unwrap();
        prop_assert!(cp.is_some());
        let reopened: HashMap<u64, Entry> = p.iter().collect();
        prop_assert_eq!(reopened, model);
        prop_assert_eq!(p.expiring(), expiring as u64);
        prop_assert_eq!(p.check_order(), Ok(()));
    }
}
