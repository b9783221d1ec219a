//! Requests with large values: the defaults take any bulk up to Redis's
//! `proto-max-bulk-len` (512 MiB), a value over `--max-value-size` gets a
//! readable error on a connection that stays open, and a bulk over the
//! limit gets Redis's protocol error, readable by a client still sending
//! the rest of it (the server reads and drops that rest before it closes).

mod common;

use std::io::{Read, Write};

use common::{encode, raw, read_line, RealRedis, Server};

/// Writes `total` bytes of `x` to `s` in 1 MiB writes; stops at the first
/// failed write.
fn send_filler(s: &mut std::net::TcpStream, total: usize) -> std::io::Result<()> {
    let chunk = vec![b'x'; 1 << 20];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    Ok(())
}

/// A 10 MiB SET on a store with default settings is stored (values up to
/// 512 MiB go in pieces: tests/large_values.rs); over `--max-value-size`
/// it is read whole and answered with an error, and the connection goes
/// on. Before, the 8 MiB bulk limit closed it with a reset.
#[test]
fn a_10_mib_value_gets_a_readable_reply() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let value = vec![b'v'; 10 << 20];
    let () = redis::cmd("SET")
        .arg("k")
        .arg(&value)
        .query(&mut con)
        .unwrap();
    let got: Vec<u8> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert!(got == value);
    srv.stop();
    let srv = Server::start(dir.path(), &["--max-value-size", "1M"]);
    let mut con = srv.client();
    let limit: u64 = 1 << 20;
    let err = redis::cmd("SET")
        .arg("k")
        .arg(&value)
        .query::<()>(&mut con)
        .unwrap_err();
    assert_eq!(
        err.detail(),
        Some(
            format!(
                "value of {} bytes is over the limit of {limit} (--max-value-size)",
                value.len()
            )
            .as_str()
        ),
        "{err:?}"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    srv.stop();
}

/// A bulk longer than `--max-bulk`: Redis's protocol error, which a client
/// still sending the rest of the value reads, then the end of the stream.
/// (redis-server answers the same line but closes at once, so a client
/// still sending mostly sees `Connection reset by peer`.)
#[test]
fn a_bulk_over_the_limit_is_a_readable_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-bulk", "1M"]);
    let mut s = raw(&srv);
    let len = 8 << 20;
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").as_bytes())
        .unwrap();
    send_filler(&mut s, len + 2).expect("the server reads the whole request");
    assert_eq!(
        read_line(&mut s),
        "-ERR Protocol error: invalid bulk length"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the end of the stream, no reset");
    assert!(rest.is_empty(), "{rest:?}");
    srv.stop();
}

/// Over the default limit (512 MiB, Redis's `proto-max-bulk-len`): the
/// error line is Redis's; a bulk of exactly 512 MiB is not refused by the
/// parser (it is read, then refused for `--max-value-size`).
#[test]
fn the_default_bulk_limit_is_redis_s() {
    let dir = tempfile::tempdir().unwrap();
    // The bulk limit alone: no 512 MiB value is stored.
    let srv = Server::start(dir.path(), &["--max-value-size", "1M"]);
    let over = (512 << 20) + 1;
    let head = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${over}\r\n");
    let mut s = raw(&srv);
    s.write_all(head.as_bytes()).unwrap();
    send_filler(&mut s, 4 << 20).expect("the server reads what follows the error");
    let ours = read_line(&mut s);
    assert_eq!(ours, "-ERR Protocol error: invalid bulk length");
    if let Some(real) = RealRedis::start(&[]) {
        let mut r = std::net::TcpStream::connect(&real.addr).unwrap();
        r.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        r.write_all(head.as_bytes()).unwrap();
        assert_eq!(read_line(&mut r), ours);
    }
    // At the limit: the parser waits for the bytes.
    let mut s = raw(&srv);
    let at = 512 << 20;
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${at}\r\n").as_bytes())
        .unwrap();
    send_filler(&mut s, at).unwrap();
    s.write_all(b"\r\n").unwrap();
    s.write_all(&encode(&[b"PING"])).unwrap();
    assert_eq!(
        read_line(&mut s),
        format!("-ERR value of {at} bytes is over the limit of 1048576 (--max-value-size)")
    );
    assert_eq!(read_line(&mut s), "+PONG");
    srv.stop();
}

/// redis-py: the value over `--max-bulk` raises the server's error, not a
/// connection reset.
#[test]
fn redis_py_reads_the_protocol_error() {
    if !common::redis_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-bulk", "1M"]);
    let script = r#"
import sys, redis
host, port = sys.argv[1].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port))
try:
    r.set("k", b"x" * (16 << 20))
    sys.exit("no error")
except redis.ResponseError as e:
    assert str(e) == "Protocol error: invalid bulk length", str(e)
assert r.ping()
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &srv.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    srv.stop();
}

/// A large argument is buffered in its size, known from its bulk header:
/// a 300 MiB value holds about 300 MiB of client memory (INFO's
/// `client_memory`) while it comes in. (Grown by doubling, the buffer held
/// 512 MiB, and a client sending it slowly was evicted by a
/// `--maxmemory-clients` of 400M.)
#[test]
fn a_large_argument_is_buffered_in_its_size() {
    let dir = tempfile::tempdir().unwrap();
    // The buffering alone: the 300 MiB value is not stored.
    let srv = Server::start(dir.path(), &["--max-value-size", "1M"]);
    let len: usize = 300 << 20;
    let mut s = raw(&srv);
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${len}\r\n").as_bytes())
        .unwrap();
    send_filler(&mut s, len - (10 << 20)).unwrap();
    let mut info = srv.client();
    let mut held = 0;
    common::wait_for("the server to read 290 MiB", || {
        let text: String = redis::cmd("INFO").arg("clients").query(&mut info).unwrap();
        held = text
            .lines()
            .find_map(|l| l.strip_prefix("client_memory:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap();
        held >= (len - (10 << 20)) as u64
    });
    assert!(held <= len as u64 + (2 << 20), "{held} bytes held");
    send_filler(&mut s, 10 << 20).unwrap();
    s.write_all(b"\r\n").unwrap();
    s.write_all(&encode(&[b"PING"])).unwrap();
    assert_eq!(
        read_line(&mut s),
        format!("-ERR value of {len} bytes is over the limit of 1048576 (--max-value-size)")
    );
    assert_eq!(read_line(&mut s), "+PONG");
    srv.stop();
}
