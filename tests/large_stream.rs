//! A GET of a value larger than a segment is streamed (issue 17, point
//! 5): the bulk header, then the pieces as the client reads them, a
//! window ahead; the pieces are pinned, not the key. Through real clients
//! and raw sockets.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::large::{client, python_ok, stat, value};
use common::Server;
use redis::Commands;

/// A GET's reply as RESP: the bulk of `v`.
fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads exactly `n` bytes from `s`.
fn read_n(s: &mut std::net::TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    s.read_exact(&mut out).expect("reading the reply");
    out
}

/// Writes a few keys so that commits move on: freed segments come back
/// after two.
fn tick(c: &mut redis::Connection, n: &mut u32) {
    *n += 1;
    let _: () = c.set("tick", *n).unwrap();
}

#[test]
fn a_streamed_100_mib_get_is_byte_exact_through_the_redis_crate_and_redis_py() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let big = value(100 << 20, 21);
    let _: () = c.set("big", &big).unwrap();
    let _: () = c.set("small", "s").unwrap();
    let got: Vec<u8> = c.get("big").unwrap();
    assert!(got == big, "100 MiB value differs through the redis crate");
    // Pipelined: the replies after the streamed one come after it, in
    // order; MGET combines it with the others.
    let (a, b, d, m): (Vec<u8>, String, Vec<u8>, Vec<Vec<u8>>) = redis::pipe()
        .get("big")
        .get("small")
        .get("big")
        .cmd("MGET")
        .arg("small")
        .arg("big")
        .query(&mut c)
        .unwrap();
    assert!(a == big && d == big, "a pipelined GET differs");
    assert_eq!(b, "s");
    assert_eq!(m.len(), 2);
    assert!(m[0] == b"s" && m[1] == big, "MGET differs");
    if common::redis_py() {
        let port = srv.addr.port().to_string();
        let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=120)
n = 100 * 1024 * 1024
v = (bytes(range(251)) * (n // 251 + 1))[:n].translate(bytes(x ^ (21 * 31 % 256) for x in range(256)))
got = r.get("big")
assert got == v, (len(got), len(v))
p = r.pipeline(transaction=False)
p.get("big").get("small").ping()
big, small, pong = p.execute()
assert big == v and small == b"s" and pong is True
print("ok")
"#;
        python_ok(script, &[&port]);
    }
    srv.stop();
}

/// Raw bytes of pipelined requests with a streamed GET among them: the
/// whole output is the replies in order, byte for byte.
#[test]
fn replies_after_a_streamed_get_follow_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let big = value((20 << 20) + 3, 22);
    let _: () = c.set("big", &big).unwrap();
    let _: () = c.set("small", "tiny").unwrap();
    let mut s = common::raw(&srv);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = Vec::new();
    for args in [
        &[&b"GET"[..], b"big"][..],
        &[b"GET", b"small"],
        &[b"PING"],
        &[b"GET", b"big"],
        &[b"GET", b"missing"],
    ] {
        req.extend_from_slice(&common::encode(args));
    }
    s.write_all(&req).unwrap();
    let mut want = bulk(&big);
    want.extend_from_slice(&bulk(b"tiny"));
    want.extend_from_slice(b"+PONG\r\n");
    want.extend_from_slice(&bulk(&big));
    want.extend_from_slice(b"$-1\r\n");
    let got = read_n(&mut s, want.len());
    assert!(got == want, "the pipelined replies differ");
    srv.stop();
}

/// A client that does not read holds a window of the value, not all of
/// it; once it has gone, nothing it held stays with the server.
#[test]
fn a_client_that_stops_reading_holds_a_window_and_releases_it_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let _: () = c.set("warm", "up").unwrap();
    let base = stat(&srv, "segments_free");
    let big = value(100 << 20, 23);
    let _: () = c.set("big", &big).unwrap();
    let mut s = common::raw(&srv);
    s.write_all(&common::encode(&[b"GET", b"big"])).unwrap();
    // The beginning comes, right.
    let head = read_n(&mut s, 1 << 20);
    assert!(head == bulk(&big)[..1 << 20], "the beginning differs");
    // Then it reads no more: the server holds a window for it (pieces of
    // 2 MiB, a few ahead), not the 100 MiB.
    std::thread::sleep(Duration::from_millis(500));
    let held = stat(&srv, "client_memory");
    assert!(
        held < 32 << 20,
        "client_memory {held} for a client not reading"
    );
    // It goes mid-stream; the value goes too.
    drop(s);
    let _: () = c.del("big").unwrap();
    let mut n = 0;
    common::wait_for("client memory back to nothing", || {
        tick(&mut c, &mut n);
        stat(&srv, "client_memory") < 1 << 20
    });
    // Its pins are gone: the pieces come back.
    common::wait_for("the pieces back", || {
        tick(&mut c, &mut n);
        stat(&srv, "segments_free") + 2 >= base
    });
    let none: Option<Vec<u8>> = c.get("big").unwrap();
    assert_eq!(none, None);
    srv.stop();
}

/// While a client reads a large value slowly, others write its key and
/// other keys without waiting for it; it still gets the value its GET
/// found, whole, and the pieces come back once it has.
#[test]
fn a_slow_reader_blocks_no_writer_and_gets_the_old_value_whole() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let _: () = c.set("warm", "up").unwrap();
    let base = stat(&srv, "segments_free");
    let old = value(60 << 20, 24);
    let _: () = c.set("k", &old).unwrap();
    let mut s = common::raw(&srv);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&common::encode(&[b"GET", b"k"])).unwrap();
    // A slow start: a little at a time.
    let mut got = Vec::new();
    for _ in 0..16 {
        got.extend_from_slice(&read_n(&mut s, 16 << 10));
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile, while the reader reads nothing, another client writes
    // the key and others: none of this waits for the reader (bounded: a
    // writer held until the whole transfer would never finish).
    let addr = srv.url();
    let (done_tx, done) = mpsc::channel();
    let writer = std::thread::spawn(move || {
        let cl = redis::Client::open(addr).unwrap();
        let mut w = cl.get_connection().unwrap();
        w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let new = value(30 << 20, 25);
        let _: () = w.set("k", &new).unwrap();
        let got: Vec<u8> = w.get("k").unwrap();
        assert!(got == new, "the writer reads its own value");
        let _: () = w.set("other", "o").unwrap();
        let _: () = w.del("k").unwrap();
        let _: () = w.set("k", "small").unwrap();
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg("again")
            .arg("PX")
            .arg(100_000)
            .query(&mut w)
            .unwrap();
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("the writer waited for the slow reader");
    writer.join().unwrap();
    // The reader still gets the value as its GET found it.
    let want = bulk(&old);
    got.extend_from_slice(&read_n(&mut s, want.len() - got.len()));
    assert!(got == want, "the slow reader's value differs");
    // And the connection goes on.
    s.write_all(&common::encode(&[b"GET", b"k"])).unwrap();
    assert_eq!(read_n(&mut s, 11), b"$5\r\nagain\r\n");
    let v: String = c.get("other").unwrap();
    assert_eq!(v, "o");
    // The old value's pieces come back once the read is over.
    let mut n = 0;
    common::wait_for("the pieces back", || {
        tick(&mut c, &mut n);
        stat(&srv, "segments_free") + 2 >= base
    });
    srv.stop();
}
