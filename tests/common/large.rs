//! What the tests of values larger than a segment share.

use std::process::Command;
use std::time::Duration;

use super::Server;

/// A value of `len` bytes that differs at every position modulo a prime,
/// so that a piece out of place or misaligned shows.
pub fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// The INFO field `name`, a number.
pub fn stat(srv: &Server, name: &str) -> u64 {
    srv.info_field(name).parse().unwrap()
}

/// A client that waits up to two minutes for a reply or a write (values of
/// hundreds of MiB).
pub fn client(srv: &Server) -> redis::Connection {
    let con = srv.client();
    con.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    con.set_write_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    con
}

/// Runs a redis-py `script` (`python3 -c script args…`), which must exit
/// 0 and print `ok`.
pub fn python_ok(script: &str, args: &[&str]) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
