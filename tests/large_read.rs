//! The readers of a value larger than a segment other than GET (issue
//! 17): GETRANGE and SUBSTR, GETEX, GETDEL, SET … GET, GETSET, DUMP and
//! MGET send it as they read its pieces, with bounded memory, and answer
//! as Redis does; a flush during a streamed read leaves it the old value.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::large::{client, python_ok, stat, value};
use common::{encode, Both, RealRedis, Server};
use redis::Commands;

/// Bytes of value one piece holds in the tests' stores (2 MiB segments,
/// 4 KiB blocks).
const CAP: usize = (2 << 20) - 4096;

/// The bulk string of `v`, as RESP.
fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

/// A raw connection that waits up to two minutes for bytes.
fn raw(srv: &Server) -> TcpStream {
    let s = common::raw(srv);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s
}

/// Reads from `s` exactly the bytes of `want`, in turn, comparing them a
/// MiB at a time (the whole reply is never held).
fn expect(s: &mut TcpStream, want: &[&[u8]], what: &str) {
    let mut buf = vec![0; 1 << 20];
    let mut at = 0u64;
    for part in want {
        for chunk in part.chunks(buf.len()) {
            let got = &mut buf[..chunk.len()];
            s.read_exact(got)
                .unwrap_or_else(|e| panic!("{what}: at {at}: {e}"));
            if got != chunk {
                let i = got.iter().zip(chunk).position(|(a, b)| a != b).unwrap();
                panic!("{what}: differs at byte {}", at + i as u64);
            }
            at += chunk.len() as u64;
        }
    }
}

/// The serialized form DUMP gives a string of more than 2^14 bytes, as
/// nvkv writes it (never compressed): its bytes before the value and the
/// payload's length.
fn dump_prefix(len: usize) -> (Vec<u8>, usize) {
    let mut pre = vec![0u8, 0x80];
    pre.extend_from_slice(&(len as u32).to_be_bytes());
    let total = pre.len() + len + 10;
    (pre, total)
}

/// Every reader of a large value, and of ranges of it across its pieces,
/// answers byte for byte as redis-server does; the writes they make
/// (GETDEL, GETEX, SET … GET, GETSET) leave the keys as Redis's.
#[test]
fn readers_of_a_large_value_answer_as_redis_does() {
    let Some(real) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let big = value(3 * CAP + 12_345, 41);
    // One expiry, as a time, for both servers: setting the keys of one
    // takes a while, so a relative one would differ between them.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 600_000;
    for con in [&mut ours, &mut theirs] {
        for k in ["big", "b1", "b2", "b3", "b4", "b5", "b6"] {
            let _: () = con.set(k, &big).unwrap();
        }
        let _: () = con.set("small", "tiny").unwrap();
        let _: () = con.pexpire_at("b6", at).unwrap();
    }
    let mut both = Both::connect(&srv, &real);
    let cap = CAP.to_string();
    let (cap_less, cap_more) = ((CAP - 1).to_string(), (CAP + 1).to_string());
    let two = (2 * CAP + 7).to_string();
    both.script(&[
        &["GETRANGE", "big", "0", "-1"],
        &["GETRANGE", "big", "0", "0"],
        &["GETRANGE", "big", &cap_less, &cap],
        &["GETRANGE", "big", &cap, &cap_more],
        &["GETRANGE", "big", &cap_less, &two],
        &["GETRANGE", "big", "-5", "-1"],
        &["GETRANGE", "big", "-100000000", "10"],
        &["GETRANGE", "big", "5000000", "100000000"],
        &["GETRANGE", "big", "10", "5"],
        &["GETRANGE", "big", "-1", "-5"],
        &["GETRANGE", "big", "100000000", "100000001"],
        &["SUBSTR", "big", "1", "4000000"],
        &["STRLEN", "big"],
        &["OBJECT", "ENCODING", "big"],
        &["OBJECT", "REFCOUNT", "big"],
        &["EXPIRETIME", "b6"],
        &["GETEX", "big"],
        &["GETEX", "big", "PX", "100000"],
        &["GETEX", "big", "PERSIST"],
        &["TTL", "big"],
        &["GETEX", "big", "EX", "0"],
        &["GETEX", "big", "FOO"],
        &["MGET", "big", "small", "missing", "big"],
        &["MGET", "missing", "big"],
        &["SET", "b1", "new", "GET"],
        &["GET", "b1"],
        &["GETSET", "b2", "set"],
        &["GET", "b2"],
        &["SET", "b3", "x", "NX", "GET"],
        &["SET", "b3", "y", "XX", "GET"],
        &["GET", "b3"],
        &["SET", "b6", "z", "KEEPTTL", "GET"],
        &["PEXPIRETIME", "b6"],
        &["GETDEL", "b4"],
        &["EXISTS", "b4"],
        &["GETDEL", "b4"],
        &["GETEX", "b5", "PXAT", "1"],
        &["EXISTS", "b5"],
    ]);
    // The key GETEX gave a TTL to, then took it from.
    let ttl: i64 = ours.ttl("big").unwrap();
    assert_eq!(ttl, -1);
    let got: Vec<u8> = ours.get("big").unwrap();
    assert!(got == big, "the value after the GETEXs differs");
    srv.stop();
}

/// GETRANGE reads only the pieces its range covers: a few bytes across a
/// piece boundary read two pieces (and the head), not the value.
#[test]
fn getrange_reads_only_the_pieces_of_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let big = value(20 * CAP, 46);
    let _: () = c.set("big", &big).unwrap();
    for (lo, hi) in [
        (7 * CAP - 3, 7 * CAP + 3),
        (100, 200),
        (20 * CAP - 5, 20 * CAP - 1),
    ] {
        let before = stat(&srv, "device_bytes_read");
        let got: Vec<u8> = c.getrange("big", lo as isize, hi as isize).unwrap();
        assert!(got == big[lo..=hi], "GETRANGE {lo} {hi}");
        let read = stat(&srv, "device_bytes_read") - before;
        assert!(
            read <= 2 * (2 << 20) + (1 << 20),
            "GETRANGE {lo} {hi}: {read} bytes read"
        );
    }
    srv.stop();
}

/// DUMP of a large value: the payload, checked and read by redis-server's
/// RESTORE, and by nvkv's; and Redis's own DUMP of it restores here.
#[test]
fn dump_of_a_large_value_restores_in_redis_and_here() {
    let Some(real) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let big = value(4 * CAP + 99, 42);
    let _: () = ours.set("big", &big).unwrap();
    let payload: Vec<u8> = redis::cmd("DUMP").arg("big").query(&mut ours).unwrap();
    let (pre, total) = dump_prefix(big.len());
    assert_eq!(payload.len(), total);
    assert!(payload[..pre.len()] == pre[..], "the payload's header");
    assert!(payload[pre.len()..pre.len() + big.len()] == big[..]);
    assert_eq!(&payload[total - 10..total - 8], &[10, 0], "RDB version");
    let ok: String = redis::cmd("RESTORE")
        .arg("k")
        .arg(0)
        .arg(&payload)
        .query(&mut theirs)
        .unwrap();
    assert_eq!(ok, "OK");
    let got: Vec<u8> = theirs.get("k").unwrap();
    assert!(got == big, "redis-server restored another value");
    let _: () = redis::cmd("RESTORE")
        .arg("copy")
        .arg(0)
        .arg(&payload)
        .query(&mut ours)
        .unwrap();
    let got: Vec<u8> = ours.get("copy").unwrap();
    assert!(got == big, "nvkv restored another value");
    // Redis's (compressed) payload of the same value.
    let theirs_payload: Vec<u8> = redis::cmd("DUMP").arg("k").query(&mut theirs).unwrap();
    let _: () = redis::cmd("RESTORE")
        .arg("fromredis")
        .arg(0)
        .arg(&theirs_payload)
        .query(&mut ours)
        .unwrap();
    let got: Vec<u8> = ours.get("fromredis").unwrap();
    assert!(got == big, "Redis's payload restored another value");
    // A missing key.
    let none: Option<Vec<u8>> = redis::cmd("DUMP").arg("nope").query(&mut ours).unwrap();
    assert_eq!(none, None);
    srv.stop();
}

/// Pipelined requests with streamed replies among them: the whole output
/// is the replies in order, byte for byte.
#[test]
fn replies_after_streamed_reads_follow_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let big = value(5 * CAP + 3, 43);
    let _: () = c.set("big", &big).unwrap();
    let _: () = c.set("big2", &big).unwrap();
    let _: () = c.set("big3", &big).unwrap();
    let _: () = c.set("small", "tiny").unwrap();
    let mut s = raw(&srv);
    let lo = CAP - 10;
    let hi = 3 * CAP + 10;
    let (lo_s, hi_s) = (lo.to_string(), hi.to_string());
    let mut req = Vec::new();
    for args in [
        &[&b"GETRANGE"[..], b"big", lo_s.as_bytes(), hi_s.as_bytes()][..],
        &[b"PING"],
        &[b"MGET", b"big", b"small", b"missing", b"big"],
        &[b"GETDEL", b"big2"],
        &[b"GET", b"big2"],
        &[b"SET", b"big3", b"new", b"GET"],
        &[b"GET", b"big3"],
        &[b"GETEX", b"big", b"PX", b"100000"],
        &[b"PTTL", b"nope"],
    ] {
        req.extend_from_slice(&encode(args));
    }
    s.write_all(&req).unwrap();
    let mut mget = b"*4\r\n".to_vec();
    mget.extend_from_slice(&bulk(&big));
    mget.extend_from_slice(&bulk(b"tiny"));
    mget.extend_from_slice(b"$-1\r\n");
    mget.extend_from_slice(&bulk(&big));
    let want: Vec<Vec<u8>> = vec![
        bulk(&big[lo..=hi]),
        b"+PONG\r\n".to_vec(),
        mget,
        bulk(&big),
        b"$-1\r\n".to_vec(),
        bulk(&big),
        bulk(b"new"),
        bulk(&big),
        b":-2\r\n".to_vec(),
    ];
    let want: Vec<&[u8]> = want.iter().map(|w| &w[..]).collect();
    expect(&mut s, &want, "the pipelined replies");
    let pttl: i64 = c.pttl("big").unwrap();
    assert!(pttl > 0 && pttl <= 100_000, "{pttl}");
    srv.stop();
}

/// A FLUSHDB while a client reads a large value slowly: the client gets
/// the old value whole, though new writes meanwhile take every segment
/// the store has free; its pieces come back once it has read them. One
/// hash tag: every key in one shard, whose open segment is the only one
/// not free besides the pieces.
#[test]
fn a_flush_during_a_streamed_read_leaves_the_reader_the_old_value() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "256M"]);
    let mut c = client(&srv);
    let _: () = c.set("{t}warm", "up").unwrap();
    let base = stat(&srv, "segments_free");
    let old = value((100 << 20) + 1, 44);
    let _: () = c.set("{t}k", &old).unwrap();
    let ranged = bulk(&old[1000..old.len() - 999]);
    let whole = bulk(&old);
    for (cmd, want) in [
        (&[&b"GET"[..], b"{t}k"][..], &whole),
        (&[b"GETRANGE", b"{t}k", b"1000", b"-1000"], &ranged),
    ] {
        let mut s = raw(&srv);
        s.write_all(&encode(cmd)).unwrap();
        // A slow start: the first MiB.
        expect(&mut s, &[&want[..1 << 20]], "the first MiB");
        let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
        // New values until the store is nearly full: without the pins,
        // they would take the reader's pieces' segments.
        let mut i = 0u8;
        let mut n = 0;
        while stat(&srv, "segments_free") > 12 {
            let _: () = c.set(format!("{{t}}new{i}"), value(12 << 20, i)).unwrap();
            i += 1;
            assert!(i < 100, "the store never filled");
        }
        expect(&mut s, &[&want[1 << 20..]], "the rest after the flush");
        // The connection goes on.
        s.write_all(&encode(&[b"GET", b"{t}new0"])).unwrap();
        expect(&mut s, &[&bulk(&value(12 << 20, 0))], "a GET after");
        drop(s);
        let last: Vec<u8> = c.get(format!("{{t}}new{}", i - 1)).unwrap();
        assert!(last == value(12 << 20, i - 1));
        // The pieces come back.
        let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
        let _: () = c.set("{t}warm", "up").unwrap();
        common::wait_for("the pieces back", || {
            n += 1;
            let _: () = c.set("{t}tick", n).unwrap();
            stat(&srv, "segments_free") + 2 >= base
        });
        let _: () = c.set("{t}k", &old).unwrap();
    }
    srv.stop();
}

/// Each streamed reader of a 256 MiB value, on a server started with the
/// value on its device, keeps the server's peak RSS under 128 MiB; the
/// replies are right.
#[test]
fn streamed_readers_of_256_mib_keep_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--capacity", "1G"];
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let big = value(256 << 20, 45);
    let _: () = c.set("big", &big).unwrap();
    // Copies share the pieces.
    for k in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        let _: i64 = redis::cmd("COPY").arg("big").arg(k).query(&mut c).unwrap();
    }
    drop(c);
    srv.stop();
    let header = format!("${}\r\n", big.len()).into_bytes();
    let whole: [&[u8]; 3] = [&header, &big, b"\r\n"];
    let (pre, total) = dump_prefix(big.len());
    let dump_header = format!("${total}\r\n").into_bytes();
    for cmd in [
        &[&b"GETRANGE"[..], b"c1", b"0", b"-1"][..],
        &[b"GETDEL", b"c2"],
        &[b"DUMP", b"c3"],
        &[b"GETEX", b"c4", b"PX", b"1000000"],
        &[b"SET", b"c5", b"new", b"GET"],
        &[b"MGET", b"c6", b"c6"],
    ] {
        let srv = Server::start(dir.path(), &args);
        let mut s = raw(&srv);
        s.write_all(&encode(cmd)).unwrap();
        let what = String::from_utf8_lossy(cmd[0]).to_string();
        match cmd[0] {
            b"DUMP" => {
                expect(&mut s, &[&dump_header, &pre, &big], &what);
                let mut tail = [0u8; 12];
                s.read_exact(&mut tail).unwrap();
                assert_eq!(&tail[..2], &[10, 0]);
                assert_eq!(&tail[10..], b"\r\n");
            }
            b"MGET" => {
                expect(&mut s, &[b"*2\r\n"], &what);
                expect(&mut s, &whole, &what);
                expect(&mut s, &whole, &what);
            }
            _ => expect(&mut s, &whole, &what),
        }
        let hwm_mib = common::status_kib(srv.pid(), "VmHWM") / 1024;
        assert!(hwm_mib < 128, "{what}: peak RSS {hwm_mib} MiB");
        drop(s);
        srv.stop();
    }
}

/// The readers through redis-py, with a 40 MiB value.
#[test]
fn large_readers_through_redis_py() {
    if !common::redis_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let port = srv.addr.port().to_string();
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=120)
n = 40 * 1024 * 1024 + 7
v = bytes((i * 7 + 3) % 256 for i in range(256)) * (n // 256 + 1)
v = v[:n]
for k in ("a", "b", "c", "d", "e"):
    r.set(k, v)
r.set("s", "small")
assert r.getrange("a", 0, -1) == v
assert r.getrange("a", 3_000_000, 9_000_000) == v[3_000_000:9_000_001]
assert r.substr("a", -10, -1) == v[-10:]
assert r.getex("a") == v and r.ttl("a") == -1
assert r.getex("a", ex=1000) == v and 900 < r.ttl("a") <= 1000
assert r.getex("a", persist=True) == v and r.ttl("a") == -1
assert r.mget("a", "s", "missing", "b") == [v, b"small", None, v]
assert r.set("b", "x", get=True) == v and r.get("b") == b"x"
assert r.getset("c", "y") == v and r.get("c") == b"y"
assert r.getdel("d") == v and r.exists("d") == 0
d = r.dump("e")
r.restore("e2", 0, d)
assert r.get("e2") == v
p = r.pipeline(transaction=False)
p.getrange("a", 1, -2).ping().mget("a", "s").getdel("e")
got = p.execute()
assert got == [v[1:-1], True, [v, b"small"], v]
print("ok")
"#;
    python_ok(script, &[&port]);
    srv.stop();
}
