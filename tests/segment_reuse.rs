//! Freed segments and crashes: a segment whose records are all superseded
//! must not bring any of them back after a crash, whatever happened to the
//! segments that superseded them.
//!
//! The danger: compaction drops a tombstone once no live segment of its
//! shard holds anything older. A freed segment that still held an old value
//! of the key, with a valid header, would be replayed by a rebuild; once the
//! tombstone's own segment is reused (its header rewritten), nothing shadows
//! that old value any more. So the server erases a segment's header before
//! the segment joins the free pool, and a rebuild erases those a crash
//! caught in between. These tests look at the data file itself, so they run
//! on stores in a file only.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{wait_for, Server};
use nvkv::format::{SegmentHeader, SegmentRecords, Superblock, SUPERBLOCK_SIZE};
use redis::{Commands, Connection};

const VALUE: usize = 10 << 10;

fn on_a_file() -> bool {
    let file = common::test_device().is_none() && common::test_spdk().is_none();
    if !file {
        eprintln!("skipped: these tests edit the data file");
    }
    file
}

/// A store of 32 segments of 128 KiB, one shard.
fn create(dir: &Path) {
    common::create_store(
        dir,
        &[
            "--capacity",
            "5M",
            "--segment-size",
            "128K",
            "--shards",
            "1",
            "--partitions",
            "4",
        ],
    );
}

fn data(dir: &Path) -> (File, Superblock) {
    let f = File::options()
        .read(true)
        .write(true)
        .open(dir.join("data.nvkv"))
        .expect("open the data file");
    let mut b = vec![0; SUPERBLOCK_SIZE];
    f.read_exact_at(&mut b, 0).expect("read the superblock");
    let sb = Superblock::decode(&b).expect("a superblock");
    (f, sb)
}

fn segment(f: &File, sb: &Superblock, seg: u32) -> Vec<u8> {
    let mut b = vec![0; sb.segment_size as usize];
    f.read_exact_at(&mut b, sb.segment_offset(seg))
        .expect("read a segment");
    b
}

fn header_valid(dir: &Path, seg: u32) -> bool {
    let (f, sb) = data(dir);
    SegmentHeader::decode(&segment(&f, &sb, seg), &sb.uuid).is_some()
}

/// The segment with a valid header that holds a record of `key` (its
/// tombstone if `tombstone`).
fn find(dir: &Path, key: &[u8], tombstone: bool) -> Option<u32> {
    let (f, sb) = data(dir);
    (0..sb.segment_count).find(|&seg| {
        let buf = segment(&f, &sb, seg);
        let Some(h) = SegmentHeader::decode(&buf, &sb.uuid) else {
            return false;
        };
        SegmentRecords::new(&sb.uuid, &buf, &h, sb.block_size)
            .any(|(_, r)| r.key == key && r.is_tombstone() == tombstone)
    })
}

fn value(tag: &str, i: u64) -> Vec<u8> {
    let mut v = format!("{tag}:{i}:").into_bytes();
    v.resize(VALUE, b'a' + (i % 26) as u8);
    v
}

/// Sets `fill:0..n` to values tagged `tag`.
fn fill(con: &mut Connection, tag: &str, n: u64) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.set(format!("fill:{i}"), value(tag, i)).ignore();
    }
    pipe.query::<()>(con).expect("fill");
}

/// SET k, then enough values that its segment (returned) closes, then DEL
/// k (its tombstone in another segment, returned), then overwrites of
/// every value, so that k's old segment holds nothing live.
fn set_delete_and_empty(srv: &Server) -> (u32, u32) {
    let mut con = srv.client();
    let _: () = con.set("k", "the old value of k").unwrap();
    fill(&mut con, "one", 24);
    let a = find(&srv.dir, b"k", false).expect("k's value on the device");
    let n: i64 = con.del("k").unwrap();
    assert_eq!(n, 1);
    fill(&mut con, "two", 24);
    fill(&mut con, "three", 24);
    let b = find(&srv.dir, b"k", true).expect("k's tombstone on the device");
    assert_ne!(a, b, "k's value and tombstone in one segment");
    let got: Option<String> = con.get("k").unwrap();
    assert_eq!(got, None);
    (a, b)
}

#[test]
fn a_dropped_tombstone_never_lets_a_freed_segment_bring_the_key_back() {
    if !on_a_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    let (a, b) = set_delete_and_empty(&srv);
    // k's old segment is erased once what emptied it is durable, before it
    // is free.
    wait_for("k's old segment erased", || !header_valid(dir.path(), a));

    // Fill the store until compaction must run: k's tombstone is then
    // alone in its segment, and every other live segment is newer, so
    // compaction drops it.
    let mut con = srv.client();
    let total: u64 = srv.info_field("segments_total").parse().unwrap();
    let mut stat = 0u64;
    while srv.info_field("segments_free").parse::<u64>().unwrap() * 4 > total {
        let mut pipe = redis::pipe();
        for _ in 0..4 {
            pipe.set(format!("static:{stat}"), value("static", stat))
                .ignore();
            stat += 1;
        }
        pipe.query::<()>(&mut con).expect("static values");
        assert!(stat < 1000, "the store never filled");
    }
    wait_for("the tombstone's segment compacted and free", || {
        let segs: String = redis::cmd("INFO")
            .arg("segments")
            .query(&mut srv.client())
            .unwrap();
        srv.info_field("compactions").parse::<u64>().unwrap() >= 1
            && !segs.contains(&format!("seg{b}:"))
    });
    wait_for("the tombstone's segment erased", || {
        !header_valid(dir.path(), b)
    });
    let got: Option<String> = con.get("k").unwrap();
    assert_eq!(got, None);
    drop(con);
    srv.kill();

    // The tombstone's segment is reused: a new header replaces the old one
    // (here, zeroes; the old records no longer count either way).
    let (f, sb) = data(dir.path());
    f.write_all_at(&[0; 4096], sb.segment_offset(b)).unwrap();
    // On the disk before the server writes the file with O_DIRECT: dirty
    // pages written back meanwhile collide with its writes (the kernel's
    // "page cache invalidation failure", an EIO at its next flush).
    f.sync_all().unwrap();
    drop(f);

    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let mut con = srv.client();
    let got: Option<String> = con.get("k").unwrap();
    assert_eq!(got, None, "a deleted key came back after a crash");
    for i in 0..stat {
        let got: Option<Vec<u8>> = con.get(format!("static:{i}")).unwrap();
        assert_eq!(got, Some(value("static", i)), "static:{i}");
    }
    for i in 0..24 {
        let got: Option<Vec<u8>> = con.get(format!("fill:{i}")).unwrap();
        assert_eq!(got, Some(value("three", i)), "fill:{i}");
    }
    srv.stop();
}

#[test]
fn a_rebuild_erases_the_segments_a_crash_left_unerased() {
    if !on_a_file() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    let mut con = srv.client();
    let _: () = con.set("k", "the old value of k").unwrap();
    fill(&mut con, "one", 24);
    let a = find(dir.path(), b"k", false).expect("k's value on the device");
    let (f, sb) = data(dir.path());
    let before = segment(&f, &sb, a);
    drop(con);
    srv.stop();

    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    let mut con = srv.client();
    let n: i64 = con.del("k").unwrap();
    assert_eq!(n, 1);
    fill(&mut con, "two", 24);
    wait_for("k's old segment erased", || !header_valid(dir.path(), a));
    drop(con);
    srv.kill();

    // The crash came before the erasure reached the device.
    f.write_all_at(&before, sb.segment_offset(a)).unwrap();
    // On the disk before the server writes the file with O_DIRECT (see
    // above).
    f.sync_all().unwrap();
    assert!(header_valid(dir.path(), a));

    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let erased: u64 = srv.info_field("recovery_segments_erased").parse().unwrap();
    assert!(erased >= 1, "recovery_segments_erased:{erased}");
    assert!(
        !header_valid(dir.path(), a),
        "the dead segment kept its header"
    );
    let mut con = srv.client();
    let got: Option<String> = con.get("k").unwrap();
    assert_eq!(got, None);
    for i in 0..24 {
        let got: Option<Vec<u8>> = con.get(format!("fill:{i}")).unwrap();
        assert_eq!(got, Some(value("two", i)), "fill:{i}");
    }
    drop(con);
    srv.stop();
    // A clean restart erases nothing more and keeps it all.
    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let got: Option<String> = srv.client().get("k").unwrap();
    assert_eq!(got, None);
    srv.stop();
}

/// KEYS takes the index's entries at one instant and reads their records
/// after: a key deleted right after that instant (the DEL behind KEYS on
/// the same connection), whose segment is emptied, erased and reused by
/// later writes before its record is read, is still listed, as Redis's
/// atomic KEYS lists it. The device's reads complete late
/// (`--inject-faults read-late@1+`), so a small store's writes reuse
/// segments while KEYS still reads; with one poller and with two (the
/// DEL, pipelined behind KEYS, runs after KEYS's instant on every
/// poller).
#[test]
fn keys_lists_what_it_took_though_the_segments_are_reused() {
    use std::io::{Read, Write};
    const KEYS: usize = 6000;
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        common::create_store(
            dir.path(),
            &[
                "--capacity",
                "16M",
                "--segment-size",
                "128K",
                "--shards",
                "2",
                "--partitions",
                "4",
            ],
        );
        let srv = Server::start(
            dir.path(),
            &["--io-threads", pollers, "--inject-faults", "read-late@1+"],
        );
        let mut con = srv.client();
        // One hash tag: the keys' DEL runs on one poller (a DEL across
        // pollers holds room for the old values, more than this small
        // store has).
        let names: Vec<String> = (0..KEYS).map(|i| format!("{{k}}:{i}")).collect();
        for chunk in names.chunks(500) {
            let mut mset = redis::cmd("MSET");
            for k in chunk {
                mset.arg(k).arg(vec![b'v'; 1000]);
            }
            let _: () = mset.query(&mut con).unwrap();
        }
        // One pipeline: KEYS, then every key deleted, then 12 MiB of
        // writes over a few keys, which empty segments and take them again.
        let mut req = common::encode(&[b"KEYS", b"*"]);
        let mut del: Vec<&[u8]> = vec![b"DEL"];
        del.extend(names.iter().map(|k| k.as_bytes()));
        req.extend(common::encode(&del));
        let churn = vec![b'c'; 4000];
        for i in 0..3000 {
            let k = format!("{{k}}churn:{}", i % 8);
            req.extend(common::encode(&[b"SET", k.as_bytes(), &churn]));
        }
        req.extend(common::encode(&[b"ECHO", b"all-read"]));
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&req).unwrap());
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !got.ends_with(b"$8\r\nall-read\r\n") {
            let n = s.read(&mut buf).expect("the replies");
            assert!(n > 0, "the server closed the connection");
            got.extend_from_slice(&buf[..n]);
        }
        writer.join().unwrap();
        // The KEYS array first.
        let line = |at: usize| {
            let end = at + got[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            (
                std::str::from_utf8(&got[at..end]).unwrap().to_string(),
                end + 2,
            )
        };
        let (head, mut at) = line(0);
        let n: usize = head.strip_prefix('*').expect("an array").parse().unwrap();
        let mut listed = Vec::with_capacity(n);
        for _ in 0..n {
            let (len, next) = line(at);
            let len: usize = len[1..].parse().unwrap();
            listed.push(String::from_utf8(got[next..next + len].to_vec()).unwrap());
            at = next + len + 2;
        }
        let rest = String::from_utf8_lossy(&got[at..]);
        let errors: Vec<(usize, &str)> = (rest.lines().enumerate())
            .filter(|l| l.1.starts_with('-'))
            .collect();
        assert!(
            errors.is_empty(),
            "{pollers} pollers: error replies: {errors:?}"
        );
        listed.sort_unstable();
        let mut want = names.clone();
        want.sort_unstable();
        assert_eq!(
            listed.len(),
            want.len(),
            "KEYS left keys out ({pollers} pollers)"
        );
        assert!(listed == want, "KEYS listed other keys ({pollers} pollers)");
        srv.stop();
    }
}
