//! The connection thread reads a socket only when an event says it holds
//! input (or a read stopped at the read-ahead before draining it), and
//! takes a read shorter than its buffer as proof that the socket is
//! drained. These tests check that no request is ever left unread: bursts
//! larger than the read-ahead, commands split over many writes, requests
//! that arrive while replies are awaited, on TCP and the Unix socket.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{encode, Server};

/// A TCP connection to `addr` whose reads time out after 10 s.
fn tcp(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads from `s` until `want` bytes came (or the read times out, which
/// fails the test: a request was left unread).
fn read_exactly(s: &mut impl Read, want: usize) -> Vec<u8> {
    let mut out = vec![0; want];
    s.read_exact(&mut out)
        .unwrap_or_else(|e| panic!("reading {want} reply bytes: {e}"));
    out
}

/// A request mix: PINGs answered on the connection thread, GETs and SETs
/// that go to the pollers, so replies are both ready and awaited.
fn burst(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (mut req, mut rep) = (Vec::new(), Vec::new());
    for i in 0..n {
        match i % 3 {
            0 => {
                req.extend(encode(&[b"PING"]));
                rep.extend_from_slice(b"+PONG\r\n");
            }
            1 => {
                let k = format!("k{}", i % 97);
                req.extend(encode(&[b"SET", k.as_bytes(), b"v"]));
                rep.extend_from_slice(b"+OK\r\n");
            }
            _ => {
                req.extend(encode(&[b"GET", b"missing"]));
                rep.extend_from_slice(b"$-1\r\n");
            }
        }
    }
    (req, rep)
}

/// Sends `req` from another thread (so a large burst cannot deadlock on
/// full socket buffers) and checks that exactly `rep` comes back.
fn round_trip<S: Read + Write + Send + 'static>(
    mut s: S,
    mut writer: S,
    req: Vec<u8>,
    rep: &[u8],
) -> S {
    let t = std::thread::spawn(move || {
        writer.write_all(&req).expect("sending the burst");
        writer
    });
    let got = read_exactly(&mut s, rep.len());
    assert!(got == rep, "the replies differ from the requests' answers");
    t.join().expect("writer");
    s
}

#[test]
fn bursts_larger_than_the_read_ahead_are_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nvkv.sock");
    let srv = Server::start(
        &dir.path().join("store"),
        &["--unixsocket", sock.to_str().unwrap()],
    );
    // About 1.3 MiB of requests: five times the 256 KiB read-ahead.
    let (req, rep) = burst(60_000);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (req, rep, addr) = (req.clone(), rep.clone(), srv.addr);
        threads.push(std::thread::spawn(move || {
            let s = tcp(addr);
            let w = s.try_clone().unwrap();
            round_trip(s, w, req, &rep);
        }));
    }
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let w = s.try_clone().unwrap();
    round_trip(s, w, req, &rep);
    for t in threads {
        t.join().expect("a TCP connection lost requests");
    }
    srv.stop();
}

#[test]
fn commands_split_over_many_writes_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = common::raw(&srv);
    s.set_nodelay(true).unwrap();
    let (req, rep) = burst(30);
    // Every cut of the burst into two writes, with a pause between them
    // so that each part arrives alone.
    for cut in (1..req.len()).step_by(7) {
        s.write_all(&req[..cut]).unwrap();
        std::thread::sleep(Duration::from_micros(300));
        s.write_all(&req[cut..]).unwrap();
        assert_eq!(read_exactly(&mut s, rep.len()), rep, "cut at {cut}");
    }
    // One byte per write.
    for b in &req {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(read_exactly(&mut s, rep.len()), rep);
    srv.stop();
}

#[test]
fn requests_arriving_while_replies_are_awaited_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut conns: Vec<_> = (0..16).map(|_| common::raw(&srv)).collect();
    for c in &conns {
        c.set_nodelay(true).unwrap();
    }
    let get = encode(&[b"GET", b"missing"]);
    let set = encode(&[b"SET", b"k", b"v"]);
    // Each connection sends a GET (answered by a poller) and, before its
    // reply, a second request in its own write; then many such rounds
    // over all connections at once.
    for round in 0..300 {
        for c in &mut conns {
            c.write_all(&get).unwrap();
        }
        for c in &mut conns {
            c.write_all(if round % 2 == 0 { &set } else { &get })
                .unwrap();
        }
        for c in &mut conns {
            let second: &[u8] = if round % 2 == 0 {
                b"+OK\r\n"
            } else {
                b"$-1\r\n"
            };
            let want = [&b"$-1\r\n"[..], second].concat();
            assert_eq!(read_exactly(c, want.len()), want, "round {round}");
        }
    }
    srv.stop();
}

#[test]
fn a_burst_sent_before_the_server_reads_is_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    // Inline PINGs, answered on the connection thread: nothing is awaited
    // from a poller whose reply would bring the connection back. The
    // socket holds many times the read-ahead when it is first read, and
    // 8-byte commands end exactly where reads of 64 KiB do.
    let n = 400_000;
    let s = tcp(srv.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let rep = b"+PONG\r\n".repeat(n);
    let w = s.try_clone().unwrap();
    round_trip(s, w, b"PING  \r\n".repeat(n), &rep);
    srv.stop();
}
