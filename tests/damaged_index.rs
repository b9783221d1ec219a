//! A damaged index partition file (truncated, or a bit flipped in its
//! slots) is found at start-up, the index is rebuilt from the device, and
//! the store serves every key as before, through the `redis` crate.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{dbsize, load, wait_for, Server};
use nvkv::index::KeyHash;
use nvkv::keys;
use redis::Commands;

const KEYS: u64 = 2000;
const SEED: u64 = 19;
const MIN: usize = 64;
const MAX: usize = 2000;
/// Keys written through the server after the load.
const WRITTEN: u64 = 300;

fn written_key(i: u64) -> String {
    format!("written:{i}")
}

/// A loaded store, then a session that writes more keys and stops cleanly,
/// so that the partitions were last closed by the server.
fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, MIN, MAX, SEED);
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..WRITTEN {
        let () = con.set(written_key(i), i).unwrap();
    }
    srv.stop();
    dir
}

/// Every key, loaded and written, reads back as it was, and no other.
fn check_all(srv: &Server) {
    let mut con = srv.client();
    for i in 0..KEYS {
        let got: Option<Vec<u8>> = con.get(keys::key(SEED, i)).unwrap();
        assert_eq!(got, Some(keys::value(SEED, i, MIN, MAX)), "loaded key {i}");
    }
    for i in 0..WRITTEN {
        let got: Option<u64> = con.get(written_key(i)).unwrap();
        assert_eq!(got, Some(i), "written key {i}");
    }
    assert_eq!(dbsize(&mut con), KEYS + WRITTEN);
}

/// How a partition file (index format version 5) packs its slots, read
/// from its header: slots of `size` bytes follow the 128-byte header, each
/// the expiry and access word (8 bytes), then the offset (`off` bits), the
/// length (23) and the tombstone (1), the displacement from the home slot
/// (`disp` bits) and the tag's low `rem` bits; 16 bytes end the file.
struct Packed {
    slots: u64,
    size: usize,
    off: u32,
    disp: u32,
    rem: u32,
}

fn packed(b: &[u8]) -> Packed {
    let slots = le64(b, 32);
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let (off, disp) = (le32(100), le32(104));
    let rem = 64 - (1u64 << 32).div_ceil(slots).leading_zeros();
    let size = 8 + (off + 24 + disp + rem).div_ceil(8) as usize;
    assert_eq!(b.len(), 128 + slots as usize * size + 16, "a packed table");
    Packed {
        slots,
        size,
        off,
        disp,
        rem,
    }
}

/// Slot `i`: `None` when empty, else its tag's top 32 bits, its
/// location (offset / 16, length / 16 << 40, tombstone << 63) and its word.
fn unpack(b: &[u8], p: &Packed, i: u64) -> Option<(u32, [u8; 16])> {
    let at = 128 + i as usize * p.size;
    let x = u128::from_le_bytes(b[at + 8..at + 24].try_into().unwrap());
    let bits = |from: u32, n: u32| ((x >> from) & ((1u128 << n) - 1)) as u64;
    if bits(0, p.off + 24) == 0 {
        return None;
    }
    let loc = bits(0, p.off) | bits(p.off, 23) << 40 | bits(p.off + 23, 1) << 63;
    let (disp, rem) = (bits(p.off + 24, p.disp), bits(p.off + 24 + p.disp, p.rem));
    let home = (i + p.slots - disp) % p.slots;
    let first = (home << 32).div_ceil(p.slots);
    let tag = first + (rem.wrapping_sub(first) & ((1 << p.rem) - 1));
    let mut rest = [0u8; 16];
    rest[..8].copy_from_slice(&loc.to_le_bytes());
    rest[8..].copy_from_slice(&b[at..at + 8]);
    Some((tag as u32, rest))
}

/// The first used slot of a partition file.
fn used_slot(bytes: &[u8]) -> usize {
    let p = packed(bytes);
    let i = (0..p.slots)
        .find(|&i| unpack(bytes, &p, i).is_some())
        .expect("a used slot");
    128 + i as usize * p.size
}

fn damage(dir: &Path, part: u32, f: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join(format!("index/part-{part:04}.idx"));
    let mut bytes = std::fs::read(&path).unwrap();
    f(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
}

fn rebuilt_and_logged(srv: &Server, what: &str) {
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let log = srv.log.lock().unwrap();
    assert!(log.contains(what), "no {what:?} in the log:\n{log}");
}

#[test]
fn undamaged_partitions_open_clean() {
    let dir = store();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    check_all(&srv);
    srv.stop();
}

#[test]
fn a_flipped_bit_in_a_tag_is_found_and_the_index_rebuilt() {
    let dir = store();
    // The key of this slot would be lost: no lookup finds its tag.
    damage(dir.path(), 5, |b| {
        let (at, p) = (used_slot(b), packed(b));
        // The lowest bit of the tag's remainder.
        let bit = 64 + p.off as usize + 24 + p.disp as usize;
        b[at + bit / 8] ^= 1 << (bit % 8);
    });
    let srv = Server::start(dir.path(), &[]);
    rebuilt_and_logged(
        &srv,
        "index partition 5: the checksum of its slots does not match",
    );
    check_all(&srv);
    srv.stop();
}

#[test]
fn a_flipped_bit_in_an_expiry_is_found_and_the_index_rebuilt() {
    let dir = store();
    // Expiry 0 (never) becomes 1 ms after the epoch: the key would read as
    // expired.
    damage(dir.path(), 9, |b| {
        let at = used_slot(b);
        b[at] ^= 0x01;
    });
    let srv = Server::start(dir.path(), &[]);
    rebuilt_and_logged(
        &srv,
        "index partition 9: the checksum of its slots does not match",
    );
    check_all(&srv);
    srv.stop();
}

#[test]
fn a_flipped_bit_in_an_empty_slot_is_found_and_the_index_rebuilt() {
    let dir = store();
    // An empty slot given a location inside the data would be a key that
    // does not exist, counted by DBSIZE.
    damage(dir.path(), 2, |b| {
        let p = packed(b);
        let i = (0..p.slots)
            .find(|&i| unpack(b, &p, i).is_none())
            .expect("an empty slot");
        let (at, used) = (128 + i as usize * p.size, used_slot(b));
        let slot = b[used..used + p.size].to_vec();
        b[at..at + p.size].copy_from_slice(&slot);
    });
    let srv = Server::start(dir.path(), &[]);
    rebuilt_and_logged(
        &srv,
        "index partition 2: the checksum of its slots does not match",
    );
    check_all(&srv);
    srv.stop();
}

#[test]
fn a_truncated_partition_is_found_and_the_index_rebuilt() {
    let dir = store();
    damage(dir.path(), 11, |b| {
        let len = b.len() - 200;
        b.truncate(len);
    });
    let srv = Server::start(dir.path(), &[]);
    rebuilt_and_logged(&srv, "index partition 11 unusable");
    check_all(&srv);
    srv.stop();
}

#[test]
fn a_partition_cut_to_part_of_its_header_is_found_and_the_index_rebuilt() {
    let dir = store();
    damage(dir.path(), 0, |b| b.truncate(100));
    let srv = Server::start(dir.path(), &[]);
    rebuilt_and_logged(&srv, "index partition 0 unusable");
    check_all(&srv);
    srv.stop();
}

#[test]
fn after_a_rebuild_the_next_clean_restart_maps_the_index_again() {
    let dir = store();
    damage(dir.path(), 5, |b| {
        let at = used_slot(b);
        b[at + 3] ^= 0x80;
    });
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    // The files the rebuilt tables replaced, and their build files, go.
    let others = || {
        (std::fs::read_dir(dir.path().join("index")).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !(n.starts_with("part-") && n.ends_with(".idx")))
            .collect::<Vec<_>>()
    };
    wait_for("only the index's own files", || others().is_empty());
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    check_all(&srv);
    srv.stop();
}

/// Where a tag's home slot lies in a table of `slots` slots.
fn home(tag: u64, slots: u64) -> u64 {
    ((tag as u128 * slots as u128) >> 64) as u64
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Rewrites a clean partition as index format version 2 left it: 24-byte
/// slots with whole 64-bit tags (`full`: by the top 32 bits the file
/// keeps), placed by linear probing in insertion order (here by
/// descending home, so that runs fall out of Robin Hood order), the
/// header's version 2 and its checksums recomputed. Returns how many of
/// its keys a Robin Hood probe would miss in the rewritten table.
fn as_version_2(b: &mut Vec<u8>, full: &HashMap<u32, u64>) -> usize {
    let p = packed(b);
    let slots = p.slots;
    let used: Vec<[u8; 24]> = (0..slots)
        .filter_map(|i| unpack(b, &p, i))
        .map(|(short, rest)| {
            let mut wide = [0u8; 24];
            wide[..8].copy_from_slice(&full[&short].to_le_bytes());
            wide[8..].copy_from_slice(&rest);
            wide
        })
        .collect();
    let mut used = used;
    used.sort_by_key(|s| std::cmp::Reverse(home(le64(s, 0), slots)));
    let at = |i: u64| 128 + i as usize * 24;
    b.resize(at(slots), 0);
    b[128..].fill(0);
    for s in &used {
        let mut i = home(le64(s, 0), slots);
        while b[at(i) + 8..at(i) + 16] != [0; 8] {
            i = (i + 1) % slots;
        }
        b[at(i)..at(i) + 24].copy_from_slice(s);
    }
    let crc = crc32c::crc32c(&b[128..]);
    b[92..96].copy_from_slice(&crc.to_le_bytes());
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&b[..80]), &b[84..128]);
    b[80..84].copy_from_slice(&crc.to_le_bytes());
    // A Robin Hood probe stops at the first slot closer to its home than
    // the probe is to the tag's.
    let missed = |tag: u64| {
        let (mut i, mut d) = (home(tag, slots), 0);
        loop {
            let t = le64(b, at(i));
            if b[at(i) + 8..at(i) + 16] == [0; 8] {
                return true;
            }
            if t == tag {
                return false;
            }
            if (i + slots - home(t, slots)) % slots < d {
                return true;
            }
            (i, d) = ((i + 1) % slots, d + 1);
        }
    };
    used.iter().filter(|s| missed(le64(&s[..], 0))).count()
}

#[test]
fn an_index_of_version_2_is_converted_when_opened_and_never_misread() {
    let dir = store();
    let mut missed = 0;
    let parts = std::fs::read_dir(dir.path().join("index")).unwrap().count() as u32;
    // Each key's whole tag, which a table of version 2 or 3 kept, by the
    // partition and the top 32 bits a table of version 4 or 5 keeps.
    let mut full: Vec<HashMap<u32, u64>> = vec![HashMap::new(); parts as usize];
    let names = (0..KEYS).map(|i| keys::key(SEED, i));
    for key in names.chain((0..WRITTEN).map(|i| written_key(i).into_bytes())) {
        let h = KeyHash::full(&key);
        let part = h.partition(parts) as usize;
        assert!(full[part].insert((h.tag >> 32) as u32, h.tag).is_none());
    }
    for part in 0..parts {
        damage(dir.path(), part, |b| {
            missed += as_version_2(b, &full[part as usize])
        });
    }
    assert!(
        missed > 0,
        "the rewritten tables are out of Robin Hood order"
    );
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    {
        let log = srv.log.lock().unwrap();
        let what =
            "index partition of version 2 (24-byte slots): converted to version 5 (packed slots of";
        assert_eq!(log.matches(what).count(), parts as usize, "{log}");
    }
    check_all(&srv);
    srv.stop();
    // Converted once: the next start maps version 5 tables as they are.
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    assert!(!srv.log.lock().unwrap().contains("converted"));
    check_all(&srv);
    srv.stop();
}
