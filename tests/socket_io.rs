//! How the connection threads read and write their sockets
//! (`--socket-io`): INFO says what was chosen and why; with io_uring (one
//! submission for a loop turn's reads, one for its replies) and with a
//! call for each, many connections at once, pipelines, and replies larger
//! than a socket's buffer read by a client that waits before reading get
//! Redis's bytes.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{encode, refused_start, RealRedis, Server};

/// Whether this kernel lets processes use io_uring (0 in
/// `kernel.io_uring_disabled`, or a kernel without the setting).
fn uring_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map_or(true, |s| s.trim() == "0")
}

/// Sends `cmds` in one write, then `ECHO` of a marker, and returns the
/// bytes before the marker's reply; waits `pause` before reading, so that
/// large replies fill the socket meanwhile.
fn pipeline(addr: &str, cmds: &[Vec<&[u8]>], pause: Duration) -> Vec<u8> {
    let marker: &[u8] = b"end-of-the-pipeline-0123";
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    for c in cmds {
        out.extend_from_slice(&encode(c));
    }
    out.extend_from_slice(&encode(&[b"ECHO", marker]));
    s.write_all(&out).unwrap();
    std::thread::sleep(pause);
    let tail = [format!("${}\r\n", marker.len()).as_bytes(), marker, b"\r\n"].concat();
    let mut got = Vec::new();
    let mut buf = vec![0; 1 << 16];
    while !got.ends_with(&tail) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before the marker came back");
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - tail.len());
    got
}

/// Connection `c`'s script: writes, reads of what it wrote and of missing
/// keys, errors, and three GETs of `big`.
fn script(c: usize) -> Vec<Vec<Vec<u8>>> {
    let mut cmds: Vec<Vec<Vec<u8>>> = Vec::new();
    let k = |i: usize| format!("c{c}:k{i}").into_bytes();
    for i in 0..40 {
        let v = format!("value {i} of connection {c}").repeat(i % 5 + 1);
        cmds.push(vec![b"SET".to_vec(), k(i), v.into_bytes()]);
    }
    for i in 0..50 {
        cmds.push(vec![b"GET".to_vec(), k(i)]);
    }
    cmds.push(vec![b"INCR".to_vec(), k(0)]);
    cmds.push(vec![b"NOSUCHCOMMAND".to_vec()]);
    cmds.push(vec![b"STRLEN".to_vec(), b"big".to_vec()]);
    for _ in 0..3 {
        cmds.push(vec![b"GET".to_vec(), b"big".to_vec()]);
    }
    cmds.push(vec![b"DEL".to_vec(), k(1), k(2), k(99)]);
    cmds
}

/// 16 connections at once run [`script`] against the server on `ours`
/// and against Redis; each gets the same bytes as from Redis.
fn same_as_redis(ours: &Server, theirs: &RealRedis) {
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
    for addr in [ours.addr.to_string(), theirs.addr.clone()] {
        let set: Vec<&[u8]> = vec![b"SET", b"big", &big];
        pipeline(&addr, &[set], Duration::ZERO);
    }
    let ours = ours.addr.to_string();
    std::thread::scope(|s| {
        for c in 0..16 {
            let (ours, theirs) = (&ours, &theirs.addr);
            s.spawn(move || {
                let cmds = script(c);
                let cmds: Vec<Vec<&[u8]>> = (cmds.iter())
                    .map(|c| c.iter().map(Vec::as_slice).collect())
                    .collect();
                // Every other connection waits before it reads: its
                // replies fill the socket, and the rest go out as the
                // client reads.
                let pause = Duration::from_millis(if c % 2 == 0 { 300 } else { 0 });
                let got = pipeline(ours, &cmds, pause);
                let want = pipeline(theirs, &cmds, Duration::ZERO);
                assert_eq!(got.len(), want.len(), "connection {c}: reply length");
                assert!(got == want, "connection {c}: replies differ from Redis's");
            });
        }
    });
}

#[test]
fn info_says_how_sockets_are_read_and_written() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let choice = srv.info_field("socket_io_choice");
    if uring_allowed() {
        assert_eq!(srv.info_field("socket_io"), "uring", "{choice}");
    } else {
        assert_eq!(srv.info_field("socket_io"), "epoll");
        eprintln!("io_uring is disabled on this machine: {choice}");
    }
    assert!(!choice.is_empty());
    srv.stop();

    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--socket-io", "epoll"]);
    assert_eq!(srv.info_field("socket_io"), "epoll");
    assert_eq!(srv.info_field("socket_io_choice"), "--socket-io epoll");
    srv.stop();
}

#[test]
fn uring_refused_where_io_uring_is_not_allowed() {
    if uring_allowed() {
        eprintln!("skipped: io_uring is allowed here (kernel.io_uring_disabled is 0)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let err = refused_start(dir.path(), &["--socket-io", "uring"]);
    assert!(err.contains("--socket-io uring"), "{err}");
}

#[test]
fn replies_through_io_uring_are_redis_bytes() {
    if !uring_allowed() {
        eprintln!("skipped: io_uring is disabled on this machine");
        return;
    }
    let Some(theirs) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--socket-io", "uring"]);
    assert_eq!(srv.info_field("socket_io"), "uring");
    same_as_redis(&srv, &theirs);
    srv.stop();
}

#[test]
fn replies_with_a_send_each_are_redis_bytes() {
    let Some(theirs) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--socket-io", "epoll"]);
    same_as_redis(&srv, &theirs);
    srv.stop();
}
