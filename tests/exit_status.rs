//! Commands that fail say so: a refused `serve` exits non-zero before it
//! touches the store (no store created, a clean one left clean), and
//! `bench` / `insert` exit non-zero when the values they check are wrong or
//! not there.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use common::{dbsize, load, refused_start, Server, BIN};

/// A port some other process holds, for as long as the listener lives.
fn busy_port() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Starts that must be refused, each with a piece of what it must say.
fn refusals(listen: &str, metrics: &str) -> Vec<(Vec<String>, String)> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (
            v(&["--listen", listen]),
            format!("listening on {listen}: Address already in use"),
        ),
        (
            v(&["--listen", "127.0.0.1:0", "--metrics-listen", metrics]),
            format!("metrics on {metrics}: Address already in use"),
        ),
        (
            v(&["--listen", "127.0.0.1:0", "--io-threads", "99"]),
            "--io-threads must be between 1 and the store's".into(),
        ),
        (
            v(&["--listen", "127.0.0.1:0", "--max-key-size", "70000"]),
            "--max-key-size is at most 65535 bytes".into(),
        ),
        (
            v(&["--listen", "127.0.0.1:0", "--tcp-threads", "0"]),
            "--tcp-threads and --max-io-depth must be at least 1".into(),
        ),
    ]
}

#[test]
fn a_refused_start_creates_no_store() {
    if common::on_spdk("a_refused_start_creates_no_store") {
        return;
    }
    let (_held, addr) = busy_port();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (args, says) in refusals(&addr, &addr) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for path in [&fresh, &empty] {
            let err = refused_start(path, &[&args[..], &["--sparse"]].concat());
            assert!(err.contains(&says), "{args:?}: {err}");
            assert!(
                !path.join("data.nvkv").exists(),
                "{args:?} created a store in {}",
                path.display()
            );
        }
        assert!(!fresh.exists(), "{args:?} created {}", fresh.display());
    }
}

#[test]
fn a_refused_start_leaves_a_clean_store_clean() {
    let (_held, addr) = busy_port();
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut srv.client())
        .unwrap();
    srv.stop();
    for (args, says) in refusals(&addr, &addr) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = refused_start(dir.path(), &args);
        assert!(err.contains(&says), "{args:?}: {err}");
    }
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut srv.client()).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    srv.stop();
}

#[test]
fn a_path_naming_a_regular_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = refused_start(&file, &["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains(&format!(
            "--path {}: is a regular file, not a directory",
            file.display()
        )),
        "{err}"
    );
    assert!(!err.contains("File exists"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

const KEYS: u64 = 300;
const SEED: u64 = 3;

/// Runs `nvkv CMD` briefly against `srv` for the data set `seed` with
/// values of `min..=max` bytes.
fn run(cmd: &str, srv: &Server, seed: u64, max: usize) -> Output {
    Command::new(BIN)
        .arg(cmd)
        .args(["--addr", &srv.addr.to_string(), "--keys", &KEYS.to_string()])
        .args(["--seed", &seed.to_string(), "--min-size", "10"])
        .args(["--max-size", &max.to_string()])
        .args(["--duration", "0.3", "--clients", "2"])
        .output()
        .expect("run nvkv")
}

fn loaded(dir: &Path) -> Server {
    load(dir, KEYS, 10, 100, SEED);
    Server::start(dir, &[])
}

#[test]
fn bench_fails_when_the_values_it_checks_are_wrong_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = loaded(dir.path());
    let ok = run("bench", &srv, SEED, 100);
    assert!(ok.status.success(), "{ok:?}");

    let wrong_seed = run("bench", &srv, SEED + 1, 100);
    assert!(!wrong_seed.status.success(), "{wrong_seed:?}");
    let err = String::from_utf8_lossy(&wrong_seed.stderr);
    assert!(err.contains("GETs missed"), "{err}");
    // The report is printed all the same.
    assert!(String::from_utf8_lossy(&wrong_seed.stdout).contains("misses"));

    // Values of other lengths than those loaded: failed checks.
    let wrong_sizes = run("bench", &srv, SEED, 200);
    assert!(!wrong_sizes.status.success(), "{wrong_sizes:?}");
    let err = String::from_utf8_lossy(&wrong_sizes.stderr);
    assert!(err.contains("errors"), "{err}");
    srv.stop();
}

#[test]
fn insert_fails_for_a_data_set_the_server_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let srv = loaded(dir.path());
    let wrong_seed = run("insert", &srv, SEED + 1, 100);
    assert!(!wrong_seed.status.success(), "{wrong_seed:?}");
    let err = String::from_utf8_lossy(&wrong_seed.stderr);
    assert!(err.contains("none of 16 keys of the data set"), "{err}");
    assert_eq!(
        dbsize(&mut srv.client()),
        KEYS,
        "a refused insert wrote nothing"
    );

    let wrong_sizes = run("insert", &srv, SEED, 200);
    assert!(!wrong_sizes.status.success(), "{wrong_sizes:?}");
    let err = String::from_utf8_lossy(&wrong_sizes.stderr);
    assert!(err.contains("expected"), "{err}");

    let ok = run("insert", &srv, SEED, 100);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(
        dbsize(&mut srv.client()),
        KEYS,
        "insert overwrites loaded keys only"
    );
    srv.stop();
}

/// Runs `nvkv CMD --local DIR` briefly for the data set `seed`.
fn run_local(cmd: &str, dir: &Path, seed: u64) -> Output {
    Command::new(BIN)
        .arg(cmd)
        .arg("--local")
        .arg(dir)
        .args(["--keys", &KEYS.to_string(), "--seed", &seed.to_string()])
        .args(["--min-size", "10", "--max-size", "100"])
        .args(["--duration", "0.3", "--clients", "4", "--json"])
        .output()
        .expect("run nvkv")
}

/// A JSON report's integer field.
fn field(out: &Output, name: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    v[name].as_u64().unwrap_or_else(|| panic!("{name} in {v}"))
}

#[test]
fn bench_local_runs_the_workload_in_process_and_leaves_the_store_clean() {
    if common::on_spdk("bench_local_runs_the_workload_in_process_and_leaves_the_store_clean") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, 10, 100, SEED);
    let reads = run_local("bench", dir.path(), SEED);
    assert!(reads.status.success(), "{reads:?}");
    assert!(field(&reads, "reads") > 0, "{reads:?}");
    assert_eq!(field(&reads, "misses"), 0, "every loaded key is found");
    assert_eq!(
        field(&reads, "errors"),
        0,
        "every value has its loaded bytes"
    );

    let writes = run_local("insert", dir.path(), SEED);
    assert!(writes.status.success(), "{writes:?}");
    assert!(field(&writes, "writes") > 0, "{writes:?}");
    assert_eq!(field(&writes, "errors"), 0);

    // A data set the store does not hold: refused before writing.
    let wrong = run_local("insert", dir.path(), SEED + 1);
    assert!(!wrong.status.success(), "{wrong:?}");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("none of 16 keys of the data set"), "{err}");

    // Each run closed the store cleanly: a server maps its index without
    // reading the device, and finds the keys the runs left (the inserts
    // replaced values, added none).
    let srv = Server::start(dir.path(), &[]);
    let mut c = srv.client();
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(info.contains("index_state_at_start:clean"), "{info}");
    assert_eq!(dbsize(&mut c), KEYS);
    let v: Vec<u8> = redis::cmd("GET")
        .arg(nvkv::keys::key(SEED, 7))
        .query(&mut c)
        .unwrap();
    assert_eq!(
        v.len(),
        nvkv::keys::ValueGen::new(SEED, 7, 10, 100).len(),
        "an inserted value keeps its loaded length"
    );
    srv.stop();
}
