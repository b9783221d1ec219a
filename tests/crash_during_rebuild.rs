//! A crash while the index is being rebuilt: the next start rebuilds it
//! again and every key reads back.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{dbsize, load, Server, BIN};
use nvkv::keys;
use redis::Commands;

const KEYS: u64 = 100_000;
const SEED: u64 = 5;
const MIN: usize = 64;
const MAX: usize = 128;

/// Starts `nvkv serve` on `dir` and kills it (SIGKILL) as soon as its log
/// says the rebuild started; checks that it had not listened yet.
fn kill_during_rebuild(dir: &std::path::Path) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--path"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nvkv serve");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut started = false;
    for line in stderr.lines().map_while(Result::ok) {
        if line.contains("rebuilding it from the device") {
            started = true;
            break;
        }
    }
    assert!(started, "the server did not start a rebuild");
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().expect("wait");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).unwrap();
    assert!(
        !out.contains("listening"),
        "the rebuild ended before the kill: {out:?}"
    );
}

#[test]
fn a_crash_during_a_rebuild_leads_to_a_rebuild_again() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, MIN, MAX, SEED);
    // A crash after a write: the index is dirty.
    let srv = Server::start(dir.path(), &[]);
    let _: () = srv.client().set("extra", "x").unwrap();
    srv.kill();

    // Crash twice in the middle of the rebuild.
    for _ in 0..2 {
        kill_during_rebuild(dir.path());
    }

    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    assert_eq!(
        srv.info_field("recovery_records_scanned"),
        (KEYS + 1).to_string()
    );
    let mut con = srv.client();
    assert_eq!(dbsize(&mut con), KEYS + 1);
    for i in 0..KEYS {
        let got: Option<Vec<u8>> = con.get(keys::key(SEED, i)).unwrap();
        assert_eq!(got, Some(keys::value(SEED, i, MIN, MAX)), "key {i}");
    }
    let extra: Option<String> = con.get("extra").unwrap();
    assert_eq!(extra.as_deref(), Some("x"));
    // A clean stop after the rebuild: the next start maps the index.
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    assert_eq!(dbsize(&mut srv.client()), KEYS + 1);
    srv.stop();
}
