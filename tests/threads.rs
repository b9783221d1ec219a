//! How many connection threads and pollers `serve` runs when not told:
//! chosen from the cores its affinity mask allows (here set with
//! `taskset`), said in the log and in INFO (`threads_choice`); flags given
//! always win, and say so.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_command, test_spdk, Server, BIN};

/// `nvkv serve` with `extra` flags under `taskset -c cpus`.
fn serve_on(cpus: &str, dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut cmd = Command::new("taskset");
    cmd.args([
        "-c",
        cpus,
        BIN,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sparse",
    ])
    .arg("--path")
    .arg(dir)
    .args(extra);
    start_command(cmd, dir)
}

/// The server's log line about its threads, waited for (bounded): stderr
/// is read by another thread.
fn threads_line(srv: &Server) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let log = srv.log.lock().unwrap().clone();
        if let Some(l) = log.lines().find(|l| l.contains("threads: ")) {
            return l.to_string();
        }
        assert!(Instant::now() < until, "no threads line in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// INFO through redis-cli, as an operator reads it.
fn info_cli(srv: &Server, field: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &srv.addr.port().to_string(), "INFO", "server"])
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli failed");
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{info}"))
        .trim()
        .to_string()
}

/// Whether these tests run here: they start their own servers on files
/// (not on an SPDK namespace) under `taskset`; says why not.
fn runs_here() -> bool {
    if test_spdk().is_some() {
        eprintln!("skipped: starts its own servers on files");
        return false;
    }
    taskset_works()
}

fn taskset_works() -> bool {
    let ok = Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipped: taskset -c 0 does not run here (util-linux missing, or CPU 0 not allowed)"
        );
    }
    ok
}

#[test]
fn one_core_gets_one_thread_of_each_and_serves() {
    if !runs_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = serve_on("0", dir.path(), &[]);
    assert_eq!(info_cli(&srv, "tcp_threads"), "1");
    assert_eq!(info_cli(&srv, "io_threads"), "1");
    let why = info_cli(&srv, "threads_choice");
    assert!(why.starts_with("1 cores this process may use"), "{why}");
    assert_eq!(
        srv.info_field("threads_choice"),
        why,
        "the redis crate reads the same"
    );
    let line = threads_line(&srv);
    assert!(line.contains("1 cores this process may use"), "{line}");
    // One core: the poller runs inside the connection thread, and a
    // thread awaiting a lone reply sleeps until it comes.
    assert_eq!(info_cli(&srv, "inline_io"), "yes");
    assert_eq!(info_cli(&srv, "spin_depth"), "4");
    let why = info_cli(&srv, "spin_depth_choice");
    assert!(
        why.starts_with("1 cores this process may use, none to spare"),
        "{why}"
    );
    let log = srv.log.lock().unwrap().clone();
    assert!(log.contains("awaiting replies: 1 cores"), "{log}");
    let mut con = srv.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v, "v");
    drop(con);
    srv.stop();
}

#[test]
fn flags_given_win_and_say_so() {
    if !runs_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Connection threads given: the pollers are still chosen.
    let srv = serve_on("0", dir.path(), &["--tcp-threads", "2"]);
    assert_eq!(info_cli(&srv, "tcp_threads"), "2");
    assert_eq!(info_cli(&srv, "io_threads"), "1");
    let why = info_cli(&srv, "threads_choice");
    assert!(why.starts_with("--tcp-threads as given"), "{why}");
    srv.stop();
    // Both given, more than the one core: they run as given.
    let srv = serve_on(
        "0",
        dir.path(),
        &["--tcp-threads", "3", "--io-threads", "2"],
    );
    assert_eq!(info_cli(&srv, "tcp_threads"), "3");
    assert_eq!(info_cli(&srv, "io_threads"), "2");
    let why = info_cli(&srv, "threads_choice");
    assert_eq!(why, "--tcp-threads and --io-threads as given");
    assert!(threads_line(&srv).contains("as given"));
    srv.stop();
    let srv = serve_on("0", dir.path(), &["--spin-depth", "0"]);
    assert_eq!(info_cli(&srv, "spin_depth"), "0");
    assert_eq!(info_cli(&srv, "spin_depth_choice"), "--spin-depth as given");
    srv.stop();
}

#[test]
fn every_allowed_core_counts() {
    if !runs_here() {
        return;
    }
    // All the CPUs this test may use, as the server sees them.
    let n = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let why = srv.info_field("threads_choice");
    assert!(
        why.starts_with(&format!("{n} cores this process may use")),
        "{why}"
    );
    let (conns, pollers): (usize, usize) = (
        srv.info_field("tcp_threads").parse().unwrap(),
        srv.info_field("io_threads").parse().unwrap(),
    );
    if n <= 2 {
        // A connection thread per core, each running its poller.
        assert_eq!((conns, pollers), (n, n));
        assert_eq!(srv.info_field("inline_io"), "yes");
    } else {
        // One core spare, the rest split between the two kinds, pollers
        // at most the store's 8 shards.
        assert_eq!(conns + pollers, n - 1, "{why}");
        assert!((1..=8).contains(&pollers) && pollers <= conns, "{why}");
        assert!(pollers == 8 || conns <= pollers + 1, "{why}");
    }
    srv.stop();
}
