//! The RESP protocol at the edges, through raw sockets: lengths that do
//! not fit, requests trickled in small pieces, half-closed connections,
//! and what commands answer to unusual arguments.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use std::time::Duration;

use common::{encode, raw, read_all, read_line, RealRedis, Server};

/// Sends one command and reads its one-line reply.
fn line_cmd(s: &mut TcpStream, args: &[&str]) -> String {
    s.write_all(&encode_str(args)).unwrap();
    read_line(s)
}

/// The RESP encoding of a command given as text.
fn encode_str(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

#[test]
fn lengths_past_i64_are_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut good = raw(&srv);
    for n in ["9223372036854775808", "99999999999999999999"] {
        let mut s = raw(&srv);
        s.write_all(format!("*{n}\r\n").as_bytes()).unwrap();
        assert_eq!(
            read_all(s),
            "-ERR Protocol error: invalid multibulk length\r\n"
        );
        let mut s = raw(&srv);
        s.write_all(format!("*2\r\n$3\r\nGET\r\n${n}\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_all(s), "-ERR Protocol error: invalid bulk length\r\n");
        assert_eq!(line_cmd(&mut good, &["PING"]), "+PONG");
    }
    srv.stop();
}

#[test]
fn errors_echo_at_most_128_bytes_of_an_argument() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    let name = vec![b'x'; 4 << 20];
    let arg = vec![b'y'; 1 << 20];
    s.write_all(&encode(&[&name, &arg, b"z"])).unwrap();
    let x128 = "x".repeat(128);
    let y128 = "y".repeat(128);
    assert_eq!(
        read_line(&mut s),
        format!("-ERR unknown command '{x128}', with args beginning with: '{y128}' ")
    );
    // Arguments together are cut at 128 bytes too.
    let a100 = "a".repeat(100);
    assert_eq!(
        line_cmd(&mut s, &["NOSUCH", &a100, &a100, "b"]),
        format!(
            "-ERR unknown command 'NOSUCH', with args beginning with: '{a100}' '{}' ",
            "a".repeat(28)
        )
    );
    let sub = "s".repeat(1000);
    assert_eq!(
        line_cmd(&mut s, &["CLIENT", &sub]),
        format!(
            "-ERR unknown subcommand '{}'. Try CLIENT HELP.",
            "s".repeat(128)
        )
    );
    assert_eq!(line_cmd(&mut s, &["PING"]), "+PONG");
    srv.stop();
}

#[test]
fn before_auth_only_small_requests_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--requirepass", "pw"]);
    let noauth = "-NOAUTH Authentication required.";
    let mut s = raw(&srv);
    // Unknown commands and wrong arity come before NOAUTH, as in Redis.
    assert_eq!(
        line_cmd(&mut s, &["NOSUCH", "a"]),
        "-ERR unknown command 'NOSUCH', with args beginning with: 'a' "
    );
    assert_eq!(
        line_cmd(&mut s, &["GET"]),
        "-ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(line_cmd(&mut s, &["GET", "k"]), noauth);
    // At the limits: still answered.
    let ten = ["EXISTS"; 10];
    assert_eq!(line_cmd(&mut s, &ten), noauth);
    let bulk = "v".repeat(16384);
    assert_eq!(line_cmd(&mut s, &["SET", "k", &bulk]), noauth);

    // Past them: an error, and the connection is closed.
    let mut s = raw(&srv);
    s.write_all(&encode(&[&b"EXISTS"[..]; 11])).unwrap();
    assert_eq!(
        read_all(s),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut s = raw(&srv);
    let big = vec![b'v'; 16385];
    s.write_all(&encode(&[b"SET", b"k", &big])).unwrap();
    assert_eq!(
        read_all(s),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );

    // AUTH lifts them, also for a command pipelined right behind it.
    let mut s = raw(&srv);
    let big = vec![b'v'; 1 << 20];
    let mut req = encode(&[b"AUTH", b"pw"]);
    req.extend(encode(&[b"SET", b"k", &big]));
    req.extend(encode(&[&b"EXISTS"[..]; 20]));
    s.write_all(&req).unwrap();
    assert_eq!(read_line(&mut s), "+OK");
    assert_eq!(read_line(&mut s), "+OK");
    assert_eq!(read_line(&mut s), ":0");
    assert_eq!(line_cmd(&mut s, &["EXISTS", "k"]), ":1");
    srv.stop();
}

#[test]
fn ping_and_client_arity_errors_are_worded_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    assert_eq!(line_cmd(&mut s, &["PING"]), "+PONG");
    assert_eq!(
        line_cmd(&mut s, &["PING", "a", "b"]),
        "-ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(
        line_cmd(&mut s, &["CLIENT"]),
        "-ERR wrong number of arguments for 'client' command"
    );
    assert_eq!(
        line_cmd(&mut s, &["CLIENT", "nosuch"]),
        "-ERR unknown subcommand 'nosuch'. Try CLIENT HELP."
    );
    assert_eq!(
        line_cmd(&mut s, &["CLIENT", "setname"]),
        "-ERR wrong number of arguments for 'client|setname' command"
    );
    assert_eq!(
        line_cmd(&mut s, &["client", "ID", "x"]),
        "-ERR wrong number of arguments for 'client|id' command"
    );
    assert_eq!(
        line_cmd(&mut s, &["CLIENT", "REPLY"]),
        "-ERR wrong number of arguments for 'client|reply' command"
    );
    assert_eq!(line_cmd(&mut s, &["CLIENT", "SETNAME", "me"]), "+OK");
    assert_eq!(line_cmd(&mut s, &["PING", "hi"]), "$2");
    assert_eq!(read_line(&mut s), "hi");
    srv.stop();
}

#[test]
fn client_reply_off_and_skip_silence_replies_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    // One by one: nothing comes back while OFF, ON answers +OK.
    let cmds: &[&[&str]] = &[
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "a", "1"],
        &["GET", "a"],
        &["NOSUCH"],
        &["PING"],
    ];
    for c in cmds {
        s.write_all(&encode_str(c)).unwrap();
    }
    assert_eq!(line_cmd(&mut s, &["CLIENT", "REPLY", "ON"]), "+OK");
    assert_eq!(line_cmd(&mut s, &["GET", "a"]), "$1");
    assert_eq!(read_line(&mut s), "1");
    assert_eq!(
        line_cmd(&mut s, &["CLIENT", "REPLY", "MAYBE"]),
        "-ERR syntax error"
    );

    // Pipelined, with replies from the pollers and from the thread mixed:
    // only the ones not silenced come back, in order.
    let cmds: &[&[&str]] = &[
        &["SET", "c", "3"],
        &["CLIENT", "REPLY", "SKIP"],
        &["GET", "c"],
        &["ECHO", "kept"],
        &["CLIENT", "REPLY", "SKIP"],
        &["ECHO", "skipped"],
        &["CLIENT", "REPLY", "OFF"],
        &["GET", "c"],
        &["CLIENT", "REPLY", "SKIP"],
        &["ECHO", "off"],
        &["DEL", "a"],
        &["CLIENT", "REPLY", "ON"],
        &["EXISTS", "a", "c"],
        &["PING"],
    ];
    let req: Vec<u8> = cmds.iter().flat_map(|c| encode_str(c)).collect();
    s.write_all(&req).unwrap();
    for want in ["+OK", "$4", "kept", "+OK", ":1", "+PONG"] {
        assert_eq!(read_line(&mut s), want);
    }
    // Nothing else was owed: the next reply is the next command's.
    assert_eq!(line_cmd(&mut s, &["ECHO", "last"]), "$4");
    assert_eq!(read_line(&mut s), "last");
    srv.stop();
}

#[test]
fn expire_times_are_checked_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    let max = i64::MAX.to_string();
    let not_int = "-ERR value is not an integer or out of range";
    let invalid = |cmd: &str| format!("-ERR invalid expire time in '{cmd}' command");
    for opt in ["EX", "PX", "EXAT", "PXAT"] {
        for n in ["0", "-1", &i64::MIN.to_string()] {
            assert_eq!(line_cmd(&mut s, &["SET", "k", "v", opt, n]), invalid("set"));
        }
        for n in ["x", "1.5", "9223372036854775808", ""] {
            assert_eq!(line_cmd(&mut s, &["SET", "k", "v", opt, n]), not_int);
        }
    }
    // Past i64 once in ms, or once added to now.
    for (opt, n) in [
        ("EX", max.as_str()),
        ("PX", &max),
        ("EXAT", &max),
        ("EX", "9223372036854775"),
    ] {
        assert_eq!(line_cmd(&mut s, &["SET", "k", "v", opt, n]), invalid("set"));
    }
    for (cmd, n) in [
        ("SETEX", "0"),
        ("SETEX", "-1"),
        ("SETEX", &max),
        ("PSETEX", &max),
    ] {
        let name = cmd.to_ascii_lowercase();
        assert_eq!(line_cmd(&mut s, &[cmd, "k", n, "v"]), invalid(&name));
    }
    assert_eq!(line_cmd(&mut s, &["SETEX", "k", "ten", "v"]), not_int);
    assert_eq!(
        line_cmd(&mut s, &["PSETEX", "k", "99999999999999999999", "v"]),
        not_int
    );
    // None of those set the key.
    assert_eq!(line_cmd(&mut s, &["EXISTS", "k"]), ":0");

    // The largest time that fits is kept as it is.
    assert_eq!(line_cmd(&mut s, &["SET", "k", "v", "PXAT", &max]), "+OK");
    let pttl: i64 = line_cmd(&mut s, &["PTTL", "k"])[1..].parse().unwrap();
    assert!(pttl > i64::MAX / 2, "{pttl}");
    assert_eq!(line_cmd(&mut s, &["SETEX", "k2", "100", "v"]), "+OK");
    assert_eq!(line_cmd(&mut s, &["TTL", "k2"]), ":100");
    srv.stop();
}

#[test]
fn half_closed_clients_get_every_reply() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let value = vec![b'v'; 1000];
    let n = 3000;
    let mut req = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        req.extend(encode(&[b"SET", key.as_bytes(), &value]));
        req.extend(encode(&[b"GET", key.as_bytes()]));
        req.extend(encode(&[b"PING"]));
    }
    // An incomplete command at the end is dropped, not waited for.
    req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    let s = raw(&srv);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            s.write_all(&req).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let got = read_all(s);
    writer.join().unwrap();
    let one = format!("+OK\r\n$1000\r\n{}\r\n+PONG\r\n", "v".repeat(1000));
    assert_eq!(
        got.len(),
        one.len() * n,
        "all {n} triples of replies, then close"
    );
    assert!(got
        .as_bytes()
        .chunks(one.len())
        .all(|c| c == one.as_bytes()));
    srv.stop();
}

#[test]
fn a_command_sent_with_the_close_is_answered_and_the_connection_ends() {
    // The end of the client's stream is reported by an event that may
    // come while input is still unread (a pipeline longer than one read):
    // the server answers everything, then closes, rather than waiting for
    // a later event that never comes. Redis 7 does the same.
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    closes_after_answering(&srv.addr.to_string(), "nvkv");
    let n: i64 = redis::cmd("DBSIZE").query(&mut srv.client()).unwrap();
    assert_eq!(n, 100);
    srv.stop();
    if let Some(real) = RealRedis::start(&[]) {
        closes_after_answering(&real.addr, "redis-server");
    }
}

/// Small commands, and pipelines longer than a server reads at once (it
/// reads the rest once it has answered the first part), each sent with
/// the client's close: every reply comes, then the end.
fn closes_after_answering(addr: &str, who: &str) {
    for i in 0..100 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let pings = if i % 2 == 0 { 1 } else { 40_000 };
        let mut req = encode(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
        (0..pings).for_each(|_| req.extend(encode(&[b"PING"])));
        s.write_all(&req).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let t0 = std::time::Instant::now();
        let got = read_all(s);
        let want = format!("+OK\r\n{}", "+PONG\r\n".repeat(pings));
        assert!(
            got == want,
            "{who}, round {i}: {} bytes of {}",
            got.len(),
            want.len()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "{who}, round {i}: the connection stayed open {:?} after its replies",
            t0.elapsed()
        );
    }
}

#[test]
fn requests_trickled_in_small_pieces_parse_whole() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    s.set_nodelay(true).unwrap();
    let value: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let mut req = encode(&[b"SET", b"big", &value]);
    // Many arguments too, each piece ending mid-header or mid-argument.
    let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
    let mut exists: Vec<&[u8]> = vec![b"EXISTS"];
    exists.extend(keys.iter().map(|k| k.as_bytes()));
    exists.push(b"big");
    req.extend(encode(&exists));
    for piece in req.chunks(64) {
        s.write_all(piece).unwrap();
    }
    assert_eq!(read_line(&mut s), "+OK");
    assert_eq!(read_line(&mut s), ":1");
    s.write_all(&encode(&[b"GET", b"big"])).unwrap();
    assert_eq!(read_line(&mut s), format!("${}", value.len()));
    let mut got = vec![0u8; value.len() + 2];
    s.read_exact(&mut got).unwrap();
    assert!(got[..value.len()] == value[..] && got.ends_with(b"\r\n"));
    srv.stop();
}
