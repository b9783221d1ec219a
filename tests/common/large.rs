//! What the tests of values larger than a segment share.

use std::process::Command;
use std::time::Duration;

use redis::Commands;

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

/// Waits until `get` on the replica returns what it returns on the
/// primary for every key of `keys`.
pub fn converge_keys(primary: &Server, replica: &Server, keys: &[&str]) {
    let (mut p, mut r) = (client(primary), client(replica));
    let t0 = std::time::Instant::now();
    loop {
        let same = keys.iter().all(|k| {
            let want: Option<Vec<u8>> = p.get(*k).unwrap();
            let got: redis::RedisResult<Option<Vec<u8>>> = r.get(*k);
            matches!(got, Ok(got) if got == want)
        });
        if same {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the replica did not converge; its log:\n{}",
            replica.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
