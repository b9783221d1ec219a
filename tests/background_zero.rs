//! The zeros over a loaded data file's free part, written by the server in
//! the background: a kill -9 in the middle loses no key, the next start
//! resumes the zeroing and finishes it, and a `--sparse` store is left as
//! it is.

mod common;

use std::os::unix::io::AsRawFd;
use std::path::Path;

use common::{dbsize, test_device, test_spdk, wait_for, Server};
use nvkv::keys;
use redis::Commands;

const KEYS: u64 = 10_000;
const SEED: u64 = 11;
const MIN: usize = 64;
const MAX: usize = 128;
/// Large, so that the zeroing is still under way when the server is
/// killed (about a second of writes at this machine's 2.8 GB/s).
const CAPACITY: u64 = 3 << 30;
const SEGMENT: u64 = 2 << 20;

/// The file the store keeps while its data file is still to be zeroed.
const MARKER: &str = "zeroing";

fn on_a_file() -> bool {
    if test_device().is_some() || test_spdk().is_some() {
        eprintln!("skipped: the background zeroing is for data files only");
        return false;
    }
    true
}

/// Loads the test's keys into a store of `capacity` bytes.
fn load(dir: &Path, capacity: u64, extra: &[&str]) {
    let capacity = capacity.to_string();
    let mut args = vec!["--capacity", capacity.as_str()];
    args.extend(extra);
    common::load_with(dir, KEYS, MIN, MAX, SEED, &args);
}

/// Bytes of holes in the data file.
fn hole_bytes(dir: &Path) -> u64 {
    let f = std::fs::File::open(dir.join("data.nvkv")).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let fd = f.as_raw_fd();
    let (mut off, mut holes) = (0i64, 0u64);
    while off < len {
        // SAFETY: lseek on an open descriptor; the result is checked.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 || hole >= len {
            break;
        }
        // SAFETY: as above.
        let data = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
        let end = if data < 0 { len } else { data };
        holes += (end - hole) as u64;
        off = end;
    }
    holes
}

/// Punches a hole over `[off, off + len)` of the data file.
fn punch_hole(dir: &Path, off: u64, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("data.nvkv"))
        .unwrap();
    // SAFETY: fallocate on an open descriptor; the result is checked.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
    };
    assert_eq!(r, 0, "fallocate: {}", std::io::Error::last_os_error());
}

fn check_keys(con: &mut redis::Connection, written: u64) {
    assert_eq!(dbsize(con), KEYS + written);
    for i in 0..KEYS {
        let got: Option<Vec<u8>> = con.get(keys::key(SEED, i)).unwrap();
        assert_eq!(got, Some(keys::value(SEED, i, MIN, MAX)), "key {i}");
    }
    for i in 0..written {
        let got: Option<String> = con.get(format!("new:{i}")).unwrap();
        assert_eq!(got, Some(format!("value {i}")), "new:{i}");
    }
}

#[test]
fn a_kill_during_the_zeroing_loses_nothing_and_the_next_start_resumes_it() {
    if !on_a_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), CAPACITY, &[]);
    assert!(dir.path().join(MARKER).exists(), "load left no {MARKER}");
    let holes_after_load = hole_bytes(dir.path());
    assert!(
        holes_after_load > CAPACITY / 2,
        "the load zeroed the free part itself: {holes_after_load} bytes of holes"
    );

    // Sync writes while the zeroing runs (pipelined, so that they are
    // acknowledged before it ends): they take segments not yet zeroed,
    // none being zeroed yet. Then a crash.
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    const WRITTEN: u64 = 200;
    let mut pipe = redis::pipe();
    for i in 0..WRITTEN {
        pipe.set(format!("new:{i}"), format!("value {i}")).ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    srv.kill();
    if dir.path().join(MARKER).exists() {
        assert!(hole_bytes(dir.path()) > 0, "{MARKER} kept, no hole left");
    } else {
        // A disk fast enough to zero it all first: make the state the kill
        // leaves otherwise, holes in free segments (the end of the file is
        // free: the first writes took segments from there, a few only).
        eprintln!("the zeroing ended before the kill: holes punched back");
        punch_hole(dir.path(), CAPACITY / 2, CAPACITY / 4);
        std::fs::write(dir.path().join(MARKER), "").unwrap();
    }

    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    // The marker goes first, then the line is logged (and the server's
    // log reaches the test through a pipe): both are waited for.
    wait_for("the zeroing to end", || {
        !dir.path().join(MARKER).exists()
            && (srv.log.lock().unwrap()).contains("the free part of the data file is zeroed")
    });
    // What holes are left are in segments written in part (by the
    // commits above), not in free ones.
    let holes = hole_bytes(dir.path());
    assert!(
        holes <= 32 * SEGMENT,
        "{holes} bytes of holes left of {holes_after_load}"
    );
    let mut con = srv.client();
    check_keys(&mut con, WRITTEN);
    srv.stop();

    // A clean start after: nothing left to zero, nothing lost.
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    check_keys(&mut srv.client(), WRITTEN);
    srv.stop();
    let log = srv_log_free(dir.path());
    assert!(!log, "a finished zeroing started again");
}

/// Whether a start logs a zeroing (on a store with nothing to zero).
fn srv_log_free(dir: &Path) -> bool {
    let srv = Server::start(dir, &[]);
    let log = srv.log.lock().unwrap().clone();
    srv.stop();
    log.contains("zeroing the free part")
}

#[test]
fn a_sparse_store_is_not_zeroed() {
    if !on_a_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), 256 << 20, &["--sparse"]);
    assert!(!dir.path().join(MARKER).exists());
    let holes = hole_bytes(dir.path());
    assert!(holes > 0);
    let srv = Server::start(dir.path(), &[]);
    let _: () = srv.client().set("k", "v").unwrap();
    srv.stop();
    let log_zeroed = srv_log_free(dir.path());
    assert!(!log_zeroed, "a --sparse store was zeroed");
    assert!(hole_bytes(dir.path()) >= holes - 32 * SEGMENT);
}
