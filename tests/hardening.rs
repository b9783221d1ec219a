//! Limits and access: --max-clients, --max-output-buffer (and the
//! backpressure below it), --timeout, --max-args, --max-query-buffer, AUTH
//! with --requirepass, protected mode, and the Unix socket. Bad input goes
//! through raw sockets, which send what a client library would not.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{encode, status_kib, wait_for, Server, BIN};
use redis::Commands;

/// A raw RESP connection.
struct Raw<S: Read + Write> {
    s: BufReader<S>,
}

impl Raw<TcpStream> {
    fn tcp(addr: std::net::SocketAddr) -> Self {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw::new(s)
    }
}

impl<S: Read + Write> Raw<S> {
    fn new(s: S) -> Self {
        Raw {
            s: BufReader::new(s),
        }
    }

    fn send(&mut self, args: &[&[u8]]) {
        self.s.get_mut().write_all(&encode(args)).expect("send");
    }

    /// Reads one reply: `+…`, `-…` and `:…` lines as they are, a bulk
    /// string as its content, nil as `(nil)`, an array as `*n`.
    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.s.read_line(&mut line).expect("read a reply");
        let line = line.trim_end().to_string();
        let Some(len) = line.strip_prefix('$') else {
            return line;
        };
        let len: i64 = len.parse().expect("bulk length");
        if len < 0 {
            return "(nil)".into();
        }
        let mut b = vec![0; len as usize + 2];
        self.s.read_exact(&mut b).expect("bulk");
        b.truncate(len as usize);
        String::from_utf8_lossy(&b).into_owned()
    }

    fn cmd(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.reply()
    }

    /// Whether the server closed the connection (EOF or reset) before the
    /// stream's read timeout; what it sent before is discarded.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64 << 10];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// The INFO field `name`, asked over `c`.
fn info_field<S: Read + Write>(c: &mut Raw<S>, name: &str) -> u64 {
    let info = c.cmd(&["INFO"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
        .trim()
        .parse()
        .expect("a number")
}

fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--capacity", "128M"];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

#[test]
fn max_clients_turns_away_the_one_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--max-clients", "3"]);
    let mut ok: Vec<_> = (0..3).map(|_| Raw::tcp(srv.addr)).collect();
    for c in &mut ok {
        assert_eq!(c.cmd(&["PING"]), "+PONG");
    }
    let mut over = Raw::tcp(srv.addr);
    assert_eq!(over.reply(), "-ERR max number of clients reached");
    assert!(over.closed(), "the client over the limit is closed");
    for c in &mut ok {
        assert_eq!(c.cmd(&["PING"]), "+PONG", "the others keep working");
    }
    assert_eq!(info_field(&mut ok[0], "rejected_connections"), 1);
    assert_eq!(info_field(&mut ok[0], "connected_clients"), 3);
    assert_eq!(info_field(&mut ok[0], "maxclients"), 3);
    // Once one leaves, a new client gets in.
    drop(ok.pop());
    wait_for("the server to see the client leave", || {
        info_field(&mut ok[0], "connected_clients") == 2
    });
    assert_eq!(Raw::tcp(srv.addr).cmd(&["PING"]), "+PONG");
    srv.stop();
}

/// Writes `requests` and never reads; returns the socket.
fn pipeline_without_reading(addr: std::net::SocketAddr, requests: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // A write error means the server stopped reading or closed the socket.
    let _ = s.write_all(requests);
    s
}

#[test]
fn a_client_that_does_not_read_is_throttled_then_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--max-output-buffer", "8M"]);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut good = srv.client();
    let _: () = good.set("big", &big).unwrap();
    let _: () = good.set("small", "s").unwrap();
    let get_big = encode(&[b"GET", b"big"]);

    // GETs of the 1 MB value, never read: the server stops taking its
    // commands while too many reply bytes are unread or owed.
    let throttled = pipeline_without_reading(srv.addr, &get_big.repeat(5000));
    let disconnected = || srv.info_field("client_output_buffer_limit_disconnections");
    let held = || srv.info_field("client_memory").parse::<u64>().unwrap();
    wait_for(
        "the client's unread replies to near its output limit",
        || held() >= 4 << 20 || disconnected() != "0",
    );
    assert_eq!(disconnected(), "0", "throttled, not disconnected");

    // Small replies first make the server expect small ones; the burst of
    // large replies that follows passes the limit: disconnected.
    let mut requests = encode(&[b"GET", b"small"]).repeat(100);
    requests.extend(get_big.repeat(1000));
    let bad = pipeline_without_reading(srv.addr, &requests);
    wait_for("the bad client disconnected", || disconnected() == "1");
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(Raw::new(bad).closed(), "the bad client's socket is closed");

    // The well-behaved client is unaffected.
    for _ in 0..20 {
        let v: Vec<u8> = good.get("big").unwrap();
        assert!(v == big, "GET big returned other bytes");
    }
    let hwm_mib = status_kib(srv.pid(), "VmHWM") / 1024;
    println!("server peak RSS: {hwm_mib} MiB");
    assert!(hwm_mib < 512, "server RSS peaked at {hwm_mib} MiB");
    assert_eq!(disconnected(), "1");
    drop(throttled);
    srv.stop();
}

#[test]
fn a_slow_reader_is_throttled_not_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--max-output-buffer", "4M"]);
    let value = "v".repeat(1000);
    let _: () = srv.client().set("k", &value).unwrap();
    // 40 000 replies of 1 KB: 10 times the output limit, read slowly.
    const N: usize = 40_000;
    let s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let get = encode(&[b"GET", b"k"]).repeat(1000);
        for _ in 0..N / 1000 {
            w.write_all(&get).expect("the server keeps reading");
        }
    });
    let mut r = Raw::new(s);
    for i in 0..N {
        assert_eq!(r.reply(), value, "reply {i}");
        if i % 2000 == 0 {
            // Pacing, not a wait: the reader is slow on purpose.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    writer.join().unwrap();
    assert_eq!(
        srv.info_field("client_output_buffer_limit_disconnections"),
        "0"
    );
    srv.stop();
}

#[test]
fn idle_clients_are_closed_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--timeout", "1"]);
    let mut idle = Raw::tcp(srv.addr);
    let mut busy = Raw::tcp(srv.addr);
    assert_eq!(idle.cmd(&["PING"]), "+PONG");
    // The busy client asks every poll, so it is never idle for a second.
    wait_for("the idle client closed for its timeout", || {
        info_field(&mut busy, "idle_timeout_disconnections") >= 1
    });
    assert!(idle.closed(), "the idle client is closed");
    assert_eq!(busy.cmd(&["PING"]), "+PONG");
    assert_eq!(info_field(&mut busy, "idle_timeout_disconnections"), 1);
    srv.stop();
}

#[test]
fn max_args_and_max_query_buffer_are_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--max-args", "3", "--max-query-buffer", "1M"]);
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["MGET", "a", "b"]), "*2");
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(
        c.cmd(&["MGET", "a", "b", "c"]),
        "-ERR Protocol error: invalid multibulk length"
    );
    assert!(c.closed());
    let mut c = Raw::tcp(srv.addr);
    c.s.get_mut().write_all(b"MGET a b c\r\n").unwrap();
    assert_eq!(
        c.reply(),
        "-ERR Protocol error: too many arguments in inline request"
    );
    assert!(c.closed());

    // A 2 MB argument is under --max-bulk but over --max-query-buffer.
    let mut c = Raw::tcp(srv.addr);
    let head = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n";
    c.s.get_mut().write_all(head).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    for _ in 0..24 {
        if c.s.get_mut().write_all(&chunk).is_err() {
            break;
        }
    }
    assert_eq!(
        c.reply(),
        "-ERR Protocol error: request larger than --max-query-buffer"
    );
    assert!(c.closed());
    // (The client library sends CLIENT SETINFO with 4 arguments: a raw
    // client asks.)
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(
        info_field(&mut c, "client_query_buffer_limit_disconnections"),
        1
    );
    assert_eq!(info_field(&mut c, "protocol_errors"), 2);
    srv.stop();
}

#[test]
fn auth_with_requirepass() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--requirepass", "s3cret"]);
    let mut c = Raw::tcp(srv.addr);
    for cmd in [&["GET", "k"][..], &["PING"], &["INFO"]] {
        assert_eq!(c.cmd(cmd), "-NOAUTH Authentication required.");
    }
    // Unknown commands and wrong arity are told before NOAUTH, as Redis.
    assert_eq!(
        c.cmd(&["NOSUCHCMD"]),
        "-ERR unknown command 'NOSUCHCMD', with args beginning with:"
    );
    let wrong = "-WRONGPASS invalid username-password pair or user is disabled.";
    assert_eq!(c.cmd(&["AUTH", "nope"]), wrong);
    assert_eq!(c.cmd(&["AUTH", "s3cre"]), wrong);
    assert_eq!(c.cmd(&["AUTH", "default", "nope"]), wrong);
    assert_eq!(c.cmd(&["AUTH", "bob", "s3cret"]), wrong);
    assert_eq!(c.cmd(&["AUTH", "a", "b", "c"]), "-ERR syntax error");
    assert_eq!(c.cmd(&["GET", "k"]), "-NOAUTH Authentication required.");
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), "+OK");
    assert_eq!(c.cmd(&["SET", "k", "v"]), "+OK");
    assert_eq!(c.cmd(&["GET", "k"]), "v");

    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["AUTH", "default", "s3cret"]), "+OK");
    assert_eq!(c.cmd(&["PING"]), "+PONG");
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["QUIT"]), "+OK");
    assert!(c.closed());

    // The client library's own AUTH, both forms.
    for url in [
        format!("redis://:s3cret@{}/", srv.addr),
        format!("redis://default:s3cret@{}/", srv.addr),
    ] {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let v: String = con.get("k").unwrap();
        assert_eq!(v, "v");
    }
    let bad = redis::Client::open(format!("redis://:wrong@{}/", srv.addr)).unwrap();
    assert!(bad.get_connection().is_err());
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), "+OK");
    assert_eq!(info_field(&mut c, "acl_access_denied_auth"), 5);
    srv.stop();
}

#[test]
fn auth_without_a_password_configured() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &[]);
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["PING"]), "+PONG");
    assert_eq!(
        c.cmd(&["AUTH", "x"]),
        "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    // Like Redis's `nopass` default user: any password, no other user.
    assert_eq!(c.cmd(&["AUTH", "default", "x"]), "+OK");
    assert_eq!(
        c.cmd(&["AUTH", "bob", "x"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    srv.stop();
}

#[test]
fn unix_socket_with_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nvkv.sock");
    let data = dir.path().join("data");
    let srv = start(
        &data,
        &[
            "--unixsocket",
            sock.to_str().unwrap(),
            "--unixsocketperm",
            "770",
        ],
    );
    let meta = std::fs::metadata(&sock).expect("the socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o770);
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c = Raw::new(s);
    c.s.get_mut().write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(c.reply(), "+PONG");
    assert_eq!(c.cmd(&["SET", "u", "over unix"]), "+OK");
    let v: String = srv.client().get("u").unwrap();
    assert_eq!(v, "over unix");
    assert_eq!(c.cmd(&["QUIT"]), "+OK");
    assert!(c.closed());
    srv.stop();
    assert!(!sock.exists(), "the socket file is removed at shutdown");

    // The default permission bits are 700.
    let srv = start(&data, &["--unixsocket", sock.to_str().unwrap()]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    srv.stop();
}

/// The address the protected-mode test gives its own network namespace
/// (TEST-NET-1, on that namespace's loopback device: nothing leaves it).
const NON_LOOPBACK: &str = "192.0.2.1";

/// Starts `nvkv serve --listen 0.0.0.0:0` in a new network namespace whose
/// loopback device also has [`NON_LOOPBACK`]; `None` when namespaces cannot
/// be made here (not root, no `unshare` or `ip`).
fn start_in_netns(dir: &Path, extra: &[&str]) -> Option<Server> {
    let probe = Command::new("unshare")
        .args(["--net", "ip", "addr", "add", "192.0.2.1/32", "dev", "lo"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let script = format!(
        "ip link set lo up && ip addr add {NON_LOOPBACK}/32 dev lo && exec \"$0\" serve --listen 0.0.0.0:0 --capacity 128M --path \"$@\""
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", &script, BIN])
        .arg(dir)
        .args(extra);
    Some(common::start_command(cmd, dir))
}

/// Runs `f` on a thread inside the network namespace of process `pid`.
fn in_netns_of<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the namespace");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&ns);
        // SAFETY: moves only this thread into the namespace; `fd` is open.
        let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("the namespace thread")
}

#[test]
fn protected_mode_turns_away_non_local_clients() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = start_in_netns(dir.path(), &[]) else {
        println!("SKIPPED: cannot make a network namespace here (needs root, unshare, ip)");
        return;
    };
    let port = srv.addr.port();
    let (outside, local) = in_netns_of(srv.pid(), move || {
        let mut c = Raw::tcp(format!("{NON_LOOPBACK}:{port}").parse().unwrap());
        let outside = (c.reply(), c.closed());
        let mut l = Raw::tcp(format!("127.0.0.1:{port}").parse().unwrap());
        (outside, l.cmd(&["PING"]))
    });
    assert!(
        outside
            .0
            .starts_with("-DENIED Redis is running in protected mode"),
        "{}",
        outside.0
    );
    assert!(outside.0.contains("--requirepass") && outside.0.contains("--protected-mode no"));
    assert!(outside.1, "the non-local client is closed");
    assert_eq!(local, "+PONG", "loopback clients are served");
    let info = in_netns_of(srv.pid(), move || {
        let mut l = Raw::tcp(format!("127.0.0.1:{port}").parse().unwrap());
        l.cmd(&["INFO", "stats"])
    });
    assert!(info.contains("protected_mode_rejections:1\r\n"), "{info}");
    srv.stop();

    // --protected-mode no lets it in; so does a password (then AUTH).
    for (extra, want) in [
        (&["--protected-mode", "no"][..], "+PONG"),
        (&["--requirepass", "pw"], "-NOAUTH Authentication required."),
    ] {
        let srv = start_in_netns(dir.path(), extra).expect("a namespace, as before");
        let port = srv.addr.port();
        let got = in_netns_of(srv.pid(), move || {
            let mut c = Raw::tcp(format!("{NON_LOOPBACK}:{port}").parse().unwrap());
            let ping = c.cmd(&["PING"]);
            let auth = c.cmd(&["AUTH", "pw"]);
            (ping, auth)
        });
        assert_eq!(got.0, want, "with {extra:?}");
        if extra[0] == "--requirepass" {
            assert_eq!(got.1, "+OK");
        }
        srv.stop();
    }
}

#[test]
fn requirepass_file_is_read_and_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("password");
    std::fs::write(&pwfile, "s3cret pass\n").unwrap();
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = dir.path().join("store");
    let srv = Server::start(&store, &["--requirepass-file", pwfile.to_str().unwrap()]);
    let mut c = Raw::tcp(srv.addr);
    assert_eq!(c.cmd(&["PING"]), "-NOAUTH Authentication required.");
    assert!(c.cmd(&["AUTH", "s3cret pass\n"]).starts_with("-WRONGPASS"));
    assert_eq!(c.cmd(&["AUTH", "s3cret pass"]), "+OK");
    assert_eq!(c.cmd(&["PING"]), "+PONG");
    srv.stop();

    // Readable by others: refused, with the reason.
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = common::run_on(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--requirepass-file",
            pwfile.to_str().unwrap(),
            "--path",
        ],
        &store,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("group or others") && err.contains("chmod 600"),
        "{err}"
    );
    // Not with --requirepass as well.
    let out = common::run_on(
        &[
            "serve",
            "--requirepass",
            "x",
            "--requirepass-file",
            pwfile.to_str().unwrap(),
            "--path",
        ],
        &store,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn client_memory_over_the_budget_evicts_the_biggest_clients() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path(), &["--maxmemory-clients", "16M"]);
    let mut good = srv.client();
    let _: () = good.set("small", "s").unwrap();
    // Eight clients each send most of a 6 MB APPEND and stop: each is
    // well under --max-query-buffer, together they hold ~40 MB of buffers.
    // (Not a SET: a SET's value larger than a segment goes to the device
    // as it arrives, and its connection holds no more than a window of it.)
    let mut head = b"*3\r\n$6\r\nAPPEND\r\n$3\r\nbig\r\n$6000000\r\n".to_vec();
    head.extend(vec![b'x'; 5_000_000]);
    let bad: Vec<TcpStream> = (0..8)
        .map(|_| pipeline_without_reading(srv.addr, &head))
        .collect();
    let evicted = || srv.info_field("evicted_clients").parse::<u64>().unwrap();
    wait_for("four clients evicted", || evicted() >= 4);
    // What is left fits the budget, and the small client never noticed.
    let held: u64 = srv.info_field("client_memory").parse().unwrap();
    assert!(held <= 16 << 20, "clients still hold {held} bytes");
    for _ in 0..100 {
        let v: String = good.get("small").unwrap();
        assert_eq!(v, "s");
    }
    let closed = bad
        .into_iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            Raw::new(s.try_clone().unwrap()).closed()
        })
        .count() as u64;
    assert_eq!(closed, evicted(), "every evicted client's socket is closed");
    let hwm_mib = status_kib(srv.pid(), "VmHWM") / 1024;
    println!("server peak RSS: {hwm_mib} MiB");
    srv.stop();
}
