//! Values larger than a segment (issue 17, point 5): stored in piece
//! segments under a small head record, through real clients.

mod common;

use std::time::{Duration, Instant};

use common::large::{client, python_ok, stat, value};
use common::Server;
use redis::Commands;

/// Waits (bounded) until `f` holds: freed segments come back after two
/// commits.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn large_values_round_trip_byte_exact_through_the_redis_crate() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let small = value(3 << 20, 1);
    let big = value(100 << 20, 2);
    let _: () = c.set("three", &small).unwrap();
    let _: () = c.set("hundred", &big).unwrap();
    let got: Vec<u8> = c.get("three").unwrap();
    assert!(got == small, "3 MiB value differs");
    let got: Vec<u8> = c.get("hundred").unwrap();
    assert!(got == big, "100 MiB value differs");
    let n: usize = redis::cmd("STRLEN").arg("hundred").query(&mut c).unwrap();
    assert_eq!(n, big.len());
    // Across the boundary of the first two pieces (2 MiB segments, 4 KiB
    // blocks: pieces of 2 MiB - 4 KiB).
    let cap = (2 << 20) - 4096;
    let (from, to) = (cap - 10, cap + 10);
    let got: Vec<u8> = c.getrange("three", from as isize, to as isize).unwrap();
    assert_eq!(got, &small[from..=to]);
    // Within the last piece, from the end, empty, and all of it.
    let got: Vec<u8> = c.getrange("hundred", -5, -1).unwrap();
    assert_eq!(got, &big[big.len() - 5..]);
    let got: Vec<u8> = c.getrange("hundred", 7, 3).unwrap();
    assert!(got.is_empty());
    let got: Vec<u8> = c.getrange("hundred", 0, -1).unwrap();
    assert!(got == big);
    let got: Vec<u8> = c
        .getrange("hundred", 3 * cap as isize, 5 * cap as isize + 1)
        .unwrap();
    assert!(got == big[3 * cap..=5 * cap + 1]);
    // Overwrites, a small value over a large one and back.
    let _: () = c.set("three", "tiny").unwrap();
    let got: String = c.get("three").unwrap();
    assert_eq!(got, "tiny");
    let again = value(5 << 20, 3);
    let _: () = c.set("three", &again).unwrap();
    let got: Vec<u8> = c.get("three").unwrap();
    assert!(got == again);
    // TTL commands and RENAME keep the pieces.
    let _: () = redis::cmd("EXPIRE")
        .arg("three")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = c.ttl("three").unwrap();
    assert!((1..=100).contains(&ttl), "{ttl}");
    let _: () = redis::cmd("RENAME")
        .arg("three")
        .arg("four")
        .query(&mut c)
        .unwrap();
    let got: Vec<u8> = c.get("four").unwrap();
    assert!(got == again);
    let gone: Option<Vec<u8>> = c.get("three").unwrap();
    assert_eq!(gone, None);
    // APPEND: the new length (tests/large_edit.rs has the rest).
    let n: usize = redis::cmd("APPEND")
        .arg("four")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, again.len() + 1);
    let n: usize = redis::cmd("STRLEN").arg("four").query(&mut c).unwrap();
    assert_eq!(n, again.len() + 1);
    srv.stop();
}

/// GETRANGE, STRLEN, GETDEL and SET … GET on a value in pieces answer
/// as redis-server does with the same value.
#[test]
fn large_value_reads_answer_as_redis_does() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let v = value((9 << 20) + 77, 11);
    let cap = ((2 << 20) - 4096) as i64;
    let ranges: &[(i64, i64)] = &[
        (0, 10),
        (cap - 1, cap),
        (cap, cap),
        (-1, -1),
        (-3, 2),
        (5, -(cap * 3)),
        (-(cap * 2) - 5, -cap),
        (cap * 4, i64::MAX),
        (i64::MIN, 3),
        (10, 9),
        (-1, -5),
    ];
    for con in [&mut ours, &mut theirs] {
        let _: () = con.set("k", &v).unwrap();
    }
    for &(a, b) in ranges {
        let o: Vec<u8> = redis::cmd("GETRANGE")
            .arg("k")
            .arg(a)
            .arg(b)
            .query(&mut ours)
            .unwrap();
        let t: Vec<u8> = redis::cmd("GETRANGE")
            .arg("k")
            .arg(a)
            .arg(b)
            .query(&mut theirs)
            .unwrap();
        assert!(
            o == t,
            "GETRANGE k {a} {b}: {} bytes against {}",
            o.len(),
            t.len()
        );
    }
    let n: (usize, usize) = (
        redis::cmd("STRLEN").arg("k").query(&mut ours).unwrap(),
        redis::cmd("STRLEN").arg("k").query(&mut theirs).unwrap(),
    );
    assert_eq!(n.0, n.1);
    let w = value(3 << 20, 12);
    for con in [&mut ours, &mut theirs] {
        let old: Vec<u8> = redis::cmd("SET")
            .arg("k")
            .arg(&w)
            .arg("GET")
            .query(con)
            .unwrap();
        assert!(old == v);
        let got: Vec<u8> = redis::cmd("GETDEL").arg("k").query(con).unwrap();
        assert!(got == w);
        let none: Option<Vec<u8>> = con.get("k").unwrap();
        assert_eq!(none, None);
    }
    srv.stop();
}

#[test]
fn a_100_mib_value_round_trips_through_redis_py() {
    if !common::redis_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let port = srv.addr.port().to_string();
    let script = r#"
import hashlib, sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=120)
v = bytes(range(256)) * (100 * 1024 * 1024 // 256) + b"tail"
assert r.set("big", v) is True
got = r.get("big")
assert got == v, (len(got), len(v))
assert r.strlen("big") == len(v)
assert r.getrange("big", len(v) - 4, -1) == b"tail"
assert r.delete("big") == 1
assert r.get("big") is None
print("ok")
"#;
    python_ok(script, &[&port]);
    srv.stop();
}

#[test]
fn overwrite_delete_and_expiry_give_the_pieces_back() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let _: () = c.set("warm", "up").unwrap();
    let base = stat(&srv, "segments_free");
    let v = value(40 << 20, 4);
    // About 20 piece segments each time.
    for round in 0..3 {
        let _: () = c.set("k", &v).unwrap();
        let free = stat(&srv, "segments_free");
        assert!(free + 19 <= base, "round {round}: {free} free of {base}");
        let live = stat(&srv, "live_bytes");
        assert!(live >= 40 << 20, "live_bytes {live} with a 40 MiB value");
        match round {
            0 => {
                let _: () = c.set("k", "small").unwrap();
            }
            1 => {
                let _: () = c.del("k").unwrap();
            }
            _ => {
                let _: () = redis::cmd("PEXPIRE")
                    .arg("k")
                    .arg(50)
                    .query(&mut c)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
                let gone: Option<Vec<u8>> = c.get("k").unwrap();
                assert_eq!(gone, None);
            }
        }
        // A few writes move commits on: freed segments come back after two.
        let mut n = 0;
        eventually(&format!("round {round}: segments back"), || {
            n += 1;
            let _: () = c.set("tick", n).unwrap();
            stat(&srv, "segments_free") + 2 >= base
        });
        let live = stat(&srv, "live_bytes");
        assert!(live < 1 << 20, "round {round}: live_bytes {live}");
    }
    srv.stop();
}

#[test]
fn a_value_larger_than_the_store_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "64M"]);
    let mut c = client(&srv);
    let keep = value(10 << 20, 5);
    let _: () = c.set("keep", &keep).unwrap();
    let _: () = c.set("small", "s").unwrap();
    let e = c.set::<_, _, ()>("huge", value(100 << 20, 6)).unwrap_err();
    assert!(e.to_string().starts_with("OOM"), "{e}");
    let got: Vec<u8> = c.get("keep").unwrap();
    assert!(got == keep);
    let got: String = c.get("small").unwrap();
    assert_eq!(got, "s");
    let none: Option<Vec<u8>> = c.get("huge").unwrap();
    assert_eq!(none, None);
    srv.stop();
}

#[test]
fn large_values_survive_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let a = value(7 << 20, 7);
    let _: () = c.set("a", &a).unwrap();
    let _: () = redis::cmd("COPY").arg("a").arg("b").query(&mut c).unwrap();
    let _: () = c.set("gone", value(3 << 20, 8)).unwrap();
    let _: () = c.del("gone").unwrap();
    let free = stat(&srv, "segments_free");
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let log = srv.log.lock().unwrap().clone();
    assert!(!log.contains("rebuilding"), "a clean open rebuilt:\n{log}");
    let mut c = client(&srv);
    for k in ["a", "b"] {
        let got: Vec<u8> = c.get(k).unwrap();
        assert!(got == a, "{k}");
    }
    // The pieces of the live values are not free; no others are lost.
    let after = stat(&srv, "segments_free");
    assert!(after + 2 >= free && after <= free + 2, "{after} vs {free}");
    // The copy shares the pieces: deleting one keeps the other whole.
    let _: () = c.del("a").unwrap();
    let got: Vec<u8> = c.get("b").unwrap();
    assert!(got == a);
    srv.stop();
}

#[test]
fn after_a_kill_each_key_is_nil_or_its_last_acknowledged_value() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let addr = srv.url();
    // A writer sets large values in turn while the server is killed.
    let writer = std::thread::spawn(move || {
        let cl = redis::Client::open(addr).unwrap();
        let mut c = cl.get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut acked: Vec<Option<u8>> = vec![None; 4];
        for round in 0..64u32 {
            let k = (round % 4) as usize;
            let seed = round as u8;
            let len = (3 << 20) + (round as usize * 7919) % (3 << 20);
            match c.set::<_, _, ()>(format!("k{k}"), value(len, seed)) {
                Ok(()) => acked[k] = Some(seed),
                Err(_) => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(700));
    srv.kill();
    let acked = writer.join().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut c = client(&srv);
    for (k, seed) in acked.iter().enumerate() {
        let got: Option<Vec<u8>> = c.get(format!("k{k}")).unwrap();
        match (got, seed) {
            (None, _) => {}
            (Some(v), Some(seed)) => {
                // The last acknowledged value, or the one in flight.
                let mine = value(v.len(), *seed);
                let next = value(v.len(), seed.wrapping_add(4));
                assert!(v == mine || v == next, "k{k}: neither acked nor in flight");
            }
            (Some(v), None) => {
                assert!(
                    v == value(v.len(), k as u8),
                    "k{k}: not the value in flight"
                );
            }
        }
    }
    // Orphan pieces came back: a new large value fits where they were.
    let big = value(200 << 20, 9);
    let _: () = c.set("after", &big).unwrap();
    let got: Vec<u8> = c.get("after").unwrap();
    assert!(got == big);
    srv.kill();
    // And after a kill once everything is acknowledged.
    let srv = Server::start(dir.path(), &[]);
    let mut c = client(&srv);
    let got: Vec<u8> = c.get("after").unwrap();
    assert!(got == big);
    srv.stop();
}
