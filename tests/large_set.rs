//! A SET of a value larger than a segment holds the value once in the
//! server: the connection's read buffer goes to the poller as it is, and
//! the pieces are copied into a few I/O buffers as they go to the device
//! (issue 17, point 5). Through the redis crate and a raw socket, the
//! replies compared with redis-server's.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::large::{client, stat, value};
use common::{status_kib, Server};
use redis::Commands;

/// Server memory at its peak, in MiB.
fn peak_mib(srv: &Server) -> u64 {
    status_kib(srv.pid(), "VmHWM") / 1024
}

#[test]
fn a_200_mib_set_holds_the_value_once_and_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "1G"]);
    let mut c = client(&srv);
    let _: () = c.set("small", "x").unwrap();
    let before = peak_mib(&srv);
    let v = value(200 << 20, 7);
    let _: () = c.set("big", &v).unwrap();
    let grew = peak_mib(&srv).saturating_sub(before);
    println!("server peak RSS grew by {grew} MiB for a 200 MiB SET");
    // The value once, the pieces in flight (16 MiB) and slack; a copy of
    // the value for the request or for the pieces would add 200 MiB.
    assert!(
        grew < 200 + 96,
        "server peak RSS grew by {grew} MiB for a 200 MiB value"
    );
    assert!(stat(&srv, "large_pieces_written") >= 100);
    let back: Vec<u8> = c.get("big").unwrap();
    assert!(back == v, "the value read back differs");
    // After a restart, from the device.
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &["--capacity", "1G"]);
    let mut c = client(&srv);
    let back: Vec<u8> = c.get("big").unwrap();
    assert!(back == v, "the value read back after a restart differs");
    let small: String = c.get("small").unwrap();
    assert_eq!(small, "x");
}

#[test]
fn a_large_set_with_options_and_pipelined_commands_after_it_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let v = value(9 << 20, 3);
    // SET big v EX 1000, then a GET and a SET in the same write: the
    // commands after the large one are read into a new buffer.
    let mut req = format!("*5\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", v.len()).into_bytes();
    req.extend_from_slice(&v);
    req.extend_from_slice(b"\r\n$2\r\nEX\r\n$4\r\n1000\r\n");
    req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
    req.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$5\r\nafter\r\n$1\r\ny\r\n");
    req.extend_from_slice(b"*2\r\n$3\r\nTTL\r\n$3\r\nbig\r\n");
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&req).unwrap();
    let mut want = b"+OK\r\n".to_vec();
    want.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
    want.extend_from_slice(&v);
    want.extend_from_slice(b"\r\n+OK\r\n:1000\r\n");
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == want, "replies differ from SET, GET, SET, TTL's");
    // Redis answers the same bytes.
    if let Some(redis) = common::RealRedis::start(&[]) {
        let mut r = std::net::TcpStream::connect(&redis.addr).unwrap();
        r.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        r.write_all(&req).unwrap();
        let mut theirs = vec![0; want.len()];
        r.read_exact(&mut theirs).unwrap();
        assert!(got == theirs, "nvkv's replies differ from redis-server's");
    }
    // MSET with two large values, both taken from the same read buffer.
    let (a, b) = (value(5 << 20, 1), value(6 << 20, 2));
    let mut c = client(&srv);
    let _: () = c.mset(&[("a", &a), ("b", &b)]).unwrap();
    let (ra, rb): (Vec<u8>, Vec<u8>) = (c.get("a").unwrap(), c.get("b").unwrap());
    assert!(ra == a && rb == b, "MSET's large values read back differ");
    let after: String = c.get("after").unwrap();
    assert_eq!(after, "y");
}
