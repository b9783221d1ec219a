//! The index against a `HashMap` model (as redb fuzzes its tree), then
//! reopened from disk; and arbitrary bytes opened as a partition file.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use nvkv::index::{Checkpoint, Entry, KeyHash, Owner, Partition};

/// The tables' owner: a store whose offsets take the slots' whole 40 bits.
fn owner() -> Owner {
    Owner::new([1; 16], 1 << 44)
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("index")).unwrap();
    if data.first() == Some(&0xFF) {
        // Arbitrary bytes as a partition file: opening must not panic, and
        // a table that opens must be readable.
        std::fs::write(nvkv::index::partition_path(dir.path(), 0), &data[1..]).unwrap();
        if let Ok((p, _)) = Partition::open(dir.path(), 0, owner()) {
            let _ = p.iter().count();
            let _ = p.get(&KeyHash::of(b"k"));
        }
        return;
    }
    let mut p = Partition::create(dir.path(), 0, owner(), 4).unwrap();
    let mut model: HashMap<u64, Entry> = HashMap::new();
    for op in data.chunks(4) {
        let key = [op[0], *op.get(1).unwrap_or(&0)];
        let kind = op.get(2).copied().unwrap_or(0);
        let h = if kind & 0x80 != 0 {
            // Tags crowded onto few home slots (the top bits pick one of
            // 8 places, the first and last among them), and runs that
            // wrap past the end of the table.
            let top = [0u64, 1, 2, 31, 32, 61, 62, 63][(op[0] % 8) as usize];
            KeyHash {
                lo: 0,
                tag: top << 58 | ((key[1] % 16) as u64) << 32,
            }
        } else {
            KeyHash::of(&key)
        };
        match kind % 3 {
            0 | 1 => {
                let n = *op.get(3).unwrap_or(&1) as u64;
                let e = Entry {
                    offset: (n + 1) * 16,
                    len: 16 * (n as u32 + 1),
                    tombstone: n % 5 == 0,
                    expire_ms: n,
                };
                assert_eq!(p.insert(&h, e).unwrap(), model.insert(h.tag, e));
            }
            _ => assert_eq!(p.remove(&h), model.remove(&h.tag)),
        }
        assert_eq!(p.get(&h), model.get(&h.tag).copied());
    }
    p.check_order().unwrap();
    assert_eq!(p.entries(), model.len() as u64);
    p.mark_clean(Checkpoint {
        max_seq: 1,
        max_gen: 1,
    })
    .unwrap();
    drop(p);
    let (p, cp) = Partition::open(dir.path(), 0, owner()).unwrap();
    assert!(cp.is_some());
    p.check_order().unwrap();
    let reopened: HashMap<u64, Entry> = p.iter().collect();
    assert_eq!(reopened, model);
});
