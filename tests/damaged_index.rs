//! A damaged index partition file (truncated, or a bit flipped in its
//! slots) is found at start-up, the index is rebuilt from the device, and
//! the store serves every key as before, through the `redis` crate.

mod common;

use std::path::Path;

use common::{dbsize, load, Server};
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

/// The first used slot of a partition file: slots follow the 128-byte
/// header, 24 bytes each (tag, location, expiry and access bits); a used
/// one has a location.
fn used_slot(bytes: &[u8]) -> usize {
    (128..bytes.len())
        .step_by(24)
        .find(|&at| bytes[at + 8..at + 16] != [0; 8])
        .expect("a used slot")
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
        let at = used_slot(b);
        b[at] ^= 0x10;
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
        b[at + 16] ^= 0x01;
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
        let at = (128..b.len())
            .step_by(24)
            .find(|&at| b[at..at + 24] == [0; 24])
            .expect("an empty slot");
        let used = used_slot(b);
        let loc: [u8; 8] = b[used + 8..used + 16].try_into().unwrap();
        b[at + 8..at + 16].copy_from_slice(&loc);
        b[at] = 1;
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
        let len = b.len() - 24 * 10;
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
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    check_all(&srv);
    srv.stop();
}
