//! SETRANGE, APPEND, INCR… and RESTORE on values larger than a segment
//! (issue 17, points 3 and 5): an edit writes only the pieces its range
//! covers, under a new head sharing the others; compared with a real
//! redis-server where one is installed.

mod common;

use std::time::{Duration, Instant};

use common::large::{client, converge_keys, stat, value};
use common::Server;
use redis::Commands;

/// Bytes of value one piece holds in the tests' stores (2 MiB segments,
/// 4 KiB blocks).
const CAP: usize = (2 << 20) - 4096;

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(30), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a command answered, as comparable text (errors included).
fn answer(con: &mut redis::Connection, cmd: &redis::Cmd) -> String {
    match cmd.query::<redis::Value>(con) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fn setrange(key: &str, offset: usize, bytes: &[u8]) -> redis::Cmd {
    let mut c = redis::cmd("SETRANGE");
    c.arg(key).arg(offset).arg(bytes);
    c
}

fn append(key: &str, bytes: &[u8]) -> redis::Cmd {
    let mut c = redis::cmd("APPEND");
    c.arg(key).arg(bytes);
    c
}

/// SETRANGE in the middle of a piece, across a piece boundary, at the
/// end and past it; APPEND growing the value by pieces and by a few
/// bytes; a small value grown past a segment; the errors of INCR… and of
/// a SETRANGE past 512 MiB: the replies and then the whole value as
/// redis-server's, and the pieces written only those each edit changed.
#[test]
fn edits_of_large_values_answer_as_redis_does_and_write_only_their_pieces() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    // Five pieces, the last one partly filled.
    let v = value(4 * CAP + 777, 11);
    for con in [&mut ours, &mut theirs] {
        let _: () = con.set("k", &v).unwrap();
    }
    let mut len = v.len();
    // (command, pieces it writes)
    let edits: Vec<(redis::Cmd, u64)> = vec![
        (setrange("k", 2 * CAP + 100, b"middle"), 1),
        (setrange("k", 3 * CAP - 5, b"across-the-boundary"), 2),
        (setrange("k", 0, &value(CAP, 5)), 1),
        (setrange("k", CAP - 1, &value(CAP + 2, 6)), 3),
        (setrange("k", len - 3, b"at-the-end"), 1),
        (append("k", b"tail"), 1),
        (append("k", &value(3 << 20, 7)), 2),
        (setrange("k", 0, b""), 0),
        (append("k", b""), 0),
    ];
    for (i, (cmd, pieces)) in edits.iter().enumerate() {
        let before = stat(&srv, "large_pieces_written");
        let (o, t) = (answer(&mut ours, cmd), answer(&mut theirs, cmd));
        assert_eq!(o, t, "edit {i}");
        let written = stat(&srv, "large_pieces_written") - before;
        assert_eq!(written, *pieces, "edit {i}: pieces written");
        let n: usize = ours.strlen("k").unwrap();
        assert!(n >= len);
        len = n;
    }
    // Past the end, zeros between: pieces up to the new end only.
    let before = stat(&srv, "large_pieces_written");
    let far = len + CAP + 17;
    let cmd = setrange("k", far, b"far");
    assert_eq!(answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
    let written = stat(&srv, "large_pieces_written") - before;
    let (first, last) = (len / CAP, (far + 2) / CAP);
    assert_eq!(written, (last - first + 1) as u64);
    let (o, t): (Vec<u8>, Vec<u8>) = (ours.get("k").unwrap(), theirs.get("k").unwrap());
    assert!(
        o == t,
        "values differ: {} bytes against {}",
        o.len(),
        t.len()
    );
    // No number is larger than a segment: Redis's errors, and nothing
    // read but the head.
    let reads = stat(&srv, "device_bytes_read");
    for cmd in [
        redis::cmd("INCR").arg("k").clone(),
        redis::cmd("DECR").arg("k").clone(),
        redis::cmd("INCRBY").arg("k").arg(5).clone(),
        redis::cmd("DECRBY").arg("k").arg(5).clone(),
        redis::cmd("INCRBYFLOAT").arg("k").arg("1.5").clone(),
    ] {
        assert_eq!(answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
    }
    let read = stat(&srv, "device_bytes_read") - reads;
    assert!(
        read < 1 << 20,
        "{read} bytes read for INCR… of a large value"
    );
    // Past 512 MiB.
    let cmd = setrange("k", 512 << 20, b"x");
    assert_eq!(answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
    // A small value grown past a segment by APPEND, a missing one by
    // SETRANGE far out: values in pieces, read back whole.
    for cmd in [
        redis::cmd("SET").arg("s").arg("small").clone(),
        append("s", &value(3 << 20, 8)),
        append("s", b"more"),
        setrange("fresh", 3 << 20, b"end"),
        setrange("fresh", 10, b"start"),
    ] {
        assert_eq!(answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
    }
    for k in ["s", "fresh"] {
        let (o, t): (Vec<u8>, Vec<u8>) = (ours.get(k).unwrap(), theirs.get(k).unwrap());
        assert!(o == t, "{k}: {} bytes against {}", o.len(), t.len());
    }
    // The TTL stays through an edit.
    for con in [&mut ours, &mut theirs] {
        let _: () = redis::cmd("PEXPIRE")
            .arg("k")
            .arg(600_000)
            .query(con)
            .unwrap();
    }
    let cmd = setrange("k", 5, b"ttl");
    assert_eq!(answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
    let ttl: i64 = redis::cmd("PTTL").arg("k").query(&mut ours).unwrap();
    assert!(ttl > 500_000, "{ttl}");
    // GETEX changing the expiry: the value, and a new head sharing the
    // pieces (none written).
    let before = stat(&srv, "large_pieces_written");
    for (args, ttl) in [
        (&["PERSIST"][..], -1),
        (&["PX", "900000"][..], 900_000),
        (&[][..], 900_000),
    ] {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg("k").arg(args);
        let (o, t) = (answer(&mut ours, &cmd), answer(&mut theirs, &cmd));
        assert!(o == t, "GETEX k {args:?}: values differ");
        let got: i64 = redis::cmd("PTTL").arg("k").query(&mut ours).unwrap();
        assert!(
            got <= ttl && got > ttl - 60_000,
            "GETEX k {args:?}: PTTL {got}"
        );
    }
    assert_eq!(stat(&srv, "large_pieces_written"), before);
    srv.stop();
}

/// RESTORE of a payload larger than a segment makes a value in pieces,
/// read back as redis-server's DUMP had it.
#[test]
fn restore_of_a_large_payload_makes_a_large_value() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    // Bytes LZF does not shrink much, so the payload stays large.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let v: Vec<u8> = (0..(5 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _: () = theirs.set("k", &v).unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut theirs).unwrap();
    assert!(dump.len() > 4 << 20);
    let ok: String = redis::cmd("RESTORE")
        .arg("k")
        .arg(0)
        .arg(&dump)
        .query(&mut ours)
        .unwrap();
    assert_eq!(ok, "OK");
    let got: Vec<u8> = ours.get("k").unwrap();
    assert!(got == v, "restored value differs");
    // A damaged payload is refused as before.
    let mut bad = dump.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let e = redis::cmd("RESTORE")
        .arg("k2")
        .arg(0)
        .arg(&bad)
        .query::<String>(&mut ours)
        .unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    srv.stop();
}

/// The pieces an edit replaced, and all of them after DEL, an expiry or
/// FLUSHDB, come back to the free segments; an edit of a copy leaves the
/// original whole, and the pieces they share stay while either holds them.
#[test]
fn pieces_replaced_by_edits_and_deleted_come_back() {
    // One hash tag: every key in one shard, whose open segment is the
    // only one not free besides the pieces.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let _: () = c.set("{e}warm", "up").unwrap();
    let base = stat(&srv, "segments_free");
    let _: () = c.set("{e}k", value(10 * CAP, 1)).unwrap();
    let held = base - stat(&srv, "segments_free");
    assert!(held >= 10, "{held} segments for 10 pieces");
    let mut n = 0;
    let mut tick = |c: &mut redis::Connection| {
        n += 1;
        let _: () = c.set("{e}tick", n).unwrap();
    };
    for round in 0..20 {
        let at = (round * 7919 * 131) % (10 * CAP - 100);
        let _: usize = setrange("{e}k", at, &value(100, round as u8))
            .query(&mut c)
            .unwrap();
    }
    // Replaced pieces are freed: as many segments held as before.
    eventually("replaced pieces freed", || {
        tick(&mut c);
        base - stat(&srv, "segments_free") <= held + 1
    });
    let _: () = c.del("{e}k").unwrap();
    eventually("deleted pieces freed", || {
        tick(&mut c);
        stat(&srv, "segments_free") + 1 >= base
    });
    let live = stat(&srv, "live_bytes");
    assert!(live < 1 << 20, "live_bytes {live}");
    // Shared pieces: a copy edited keeps the original whole, and each
    // holds its pieces until it goes (DEL, expiry, FLUSHDB).
    let v = value(4 * CAP, 2);
    let _: () = c.set("{e}a", &v).unwrap();
    let n: i64 = redis::cmd("COPY")
        .arg("{e}a")
        .arg("{e}b")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);
    let _: usize = setrange("{e}b", CAP + 1, b"changed").query(&mut c).unwrap();
    let _: usize = append("{e}a", b"grown").query(&mut c).unwrap();
    let got: Vec<u8> = c.getrange("{e}a", 0, (4 * CAP - 1) as isize).unwrap();
    assert!(got == v, "the original changed with its copy");
    let mut w = v.clone();
    w[CAP + 1..CAP + 8].copy_from_slice(b"changed");
    let got: Vec<u8> = c.get("{e}b").unwrap();
    assert!(got == w, "the copy's edit is not there");
    let _: () = c.del("{e}a").unwrap();
    let got: Vec<u8> = c.get("{e}b").unwrap();
    assert!(got == w, "the copy lost a shared piece with the original");
    let _: () = redis::cmd("PEXPIRE")
        .arg("{e}b")
        .arg(1)
        .query(&mut c)
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let gone: Option<Vec<u8>> = c.get("{e}b").unwrap();
    assert_eq!(gone, None);
    eventually("expired pieces freed", || {
        tick(&mut c);
        stat(&srv, "segments_free") + 1 >= base
    });
    let _: () = c.set("{e}c", value(3 * CAP, 3)).unwrap();
    let _: usize = setrange("{e}c", 5, b"x").query(&mut c).unwrap();
    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    eventually("flushed pieces freed", || {
        tick(&mut c);
        stat(&srv, "segments_free") + 1 >= base
    });
    srv.stop();
}

/// The value after `n` edits of the kill test: each writes a marker of
/// its round across a piece boundary.
fn after_edits(base: &[u8], n: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for round in 0..n {
        let (at, bytes) = kill_edit(round);
        v[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    v
}

fn kill_edit(round: usize) -> (usize, Vec<u8>) {
    let boundary = (round % 5 + 1) * CAP;
    (boundary - 8, vec![round as u8 + 1; 16])
}

/// kill -9 while SETRANGEs across piece boundaries go on: after the
/// restart the value is the one after the last acknowledged edit or the
/// one in flight, never a mix of pieces of the two.
#[test]
fn after_a_kill_an_edited_value_is_old_or_new_never_a_mix() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let base = value(6 * CAP + 10, 3);
    let mut c = client(&srv);
    let _: () = c.set("k", &base).unwrap();
    let addr = srv.url();
    let writer = std::thread::spawn(move || {
        let cl = redis::Client::open(addr).unwrap();
        let mut c = cl.get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut acked = 0;
        for round in 0..2000 {
            let (at, bytes) = kill_edit(round);
            match setrange("k", at, &bytes).query::<usize>(&mut c) {
                Ok(_) => acked = round + 1,
                Err(_) => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(600));
    srv.kill();
    let acked = writer.join().unwrap();
    assert!(acked < 2000, "the kill came after every edit");
    let srv = Server::start(dir.path(), &[]);
    let mut c = client(&srv);
    let got: Vec<u8> = c.get("k").unwrap();
    assert!(
        got == after_edits(&base, acked) || got == after_edits(&base, acked + 1),
        "after {acked} acknowledged edits: neither that value nor the next"
    );
    // The pieces of the edit in flight were freed by the rebuild: every
    // segment not holding the value is free again.
    let _: () = c.del("k").unwrap();
    let big = value(150 << 20, 9);
    let _: () = c.set("after", &big).unwrap();
    let got: Vec<u8> = c.get("after").unwrap();
    assert!(got == big);
    srv.stop();
}

/// SETRANGE and APPEND of a large value reach a replica (as SETRANGE of
/// the bytes changed): its value ends as the primary's.
#[test]
fn edits_of_large_values_reach_a_replica() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--capacity", "256M"]);
    let mut p = client(&primary);
    let _: () = p.set("k", value(3 * CAP + 5, 1)).unwrap();
    let to = format!("127.0.0.1 {}", primary.addr.port());
    let replica = Server::start(rd.path(), &["--capacity", "256M", "--replicaof", &to]);
    converge_keys(&primary, &replica, &["k"]);
    for cmd in [
        setrange("k", CAP - 3, b"across"),
        append("k", &value(CAP + 9, 2)),
        setrange("k", 6 * CAP, b"far"),
        append("s", b"small"),
        append("s", &value(3 << 20, 3)),
    ] {
        let _: usize = cmd.query(&mut p).unwrap();
    }
    converge_keys(&primary, &replica, &["k", "s"]);
    replica.stop();
    primary.stop();
}

/// RENAME, RENAMENX and COPY of a 40 MiB value with a replica attached:
/// the replica ends with the primary's keys and values (the moved value
/// goes read whole, as a SET, with its expiry), and later writes of the
/// keys follow in order.
#[test]
fn moves_of_large_values_reach_a_replica() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--capacity", "512M"]);
    let mut p = client(&primary);
    let to = format!("127.0.0.1 {}", primary.addr.port());
    let replica = Server::start(rd.path(), &["--capacity", "512M", "--replicaof", &to]);
    let _: () = p.set("warm", "up").unwrap();
    converge_keys(&primary, &replica, &["warm"]);
    let v = value(40 << 20, 4);
    let _: () = p.set("a", &v).unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("a")
        .arg(600_000)
        .query(&mut p)
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("a")
        .arg("b")
        .query(&mut p)
        .unwrap();
    let n: i64 = redis::cmd("COPY").arg("b").arg("c").query(&mut p).unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("RENAMENX")
        .arg("c")
        .arg("d")
        .query(&mut p)
        .unwrap();
    assert_eq!(n, 1);
    // Writes right after the moves, of the same keys, come after them.
    let _: usize = setrange("d", 5, b"after").query(&mut p).unwrap();
    let _: () = p.set("a", "small again").unwrap();
    converge_keys(&primary, &replica, &["a", "b", "c", "d"]);
    let mut r = client(&replica);
    let got: Vec<u8> = r.get("b").unwrap();
    assert!(got == v, "the renamed value differs on the replica");
    let ttl: i64 = redis::cmd("PTTL").arg("b").query(&mut r).unwrap();
    assert!(ttl > 500_000, "{ttl}");
    let n: i64 = redis::cmd("EXISTS").arg("c").query(&mut r).unwrap();
    assert_eq!(n, 0);
    replica.stop();
    primary.stop();
}
