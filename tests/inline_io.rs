//! Pollers inside the connection threads (`--inline-io`): the server
//! serves reads and writes, pipelined and from many connections, with one
//! or two threads each running its poller (requests for the other
//! thread's keys cross over and ring its doorbell), after idle periods in
//! which the threads sleep, and shuts down clean; INFO says what was
//! chosen, and `on` is refused where it cannot be.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Server, BIN};

/// SETs `n` keys of connection `c` and reads them back, one at a time and
/// pipelined.
fn write_and_read(srv: &Server, c: usize, n: usize) {
    let mut con = srv.client();
    for i in 0..n {
        let _: () = redis::cmd("SET")
            .arg(format!("c{c}:k{i}"))
            .arg(format!("value {i} of {c}"))
            .query(&mut con)
            .unwrap();
    }
    for i in (0..n).step_by(7) {
        let v: String = redis::cmd("GET")
            .arg(format!("c{c}:k{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, format!("value {i} of {c}"));
    }
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("GET").arg(format!("c{c}:k{i}"));
    }
    pipe.cmd("GET").arg(format!("c{c}:missing"));
    let got: Vec<Option<String>> = pipe.query(&mut con).unwrap();
    let mut want: Vec<Option<String>> = (0..n).map(|i| Some(format!("value {i} of {c}"))).collect();
    want.push(None);
    assert_eq!(got, want);
}

/// Every key of `conns` connections of `n` keys each is there.
fn all_there(srv: &Server, conns: usize, n: usize) {
    let mut con = srv.client();
    for c in 0..conns {
        let keys: Vec<String> = (0..n).map(|i| format!("c{c}:k{i}")).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
        for (i, v) in got.into_iter().enumerate() {
            assert_eq!(v, Some(format!("value {i} of {c}")), "c{c}:k{i}");
        }
    }
}

fn serve_and_restart(extra: &[&str], inline: &str, conns: usize) {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), extra);
    assert_eq!(srv.info_field("inline_io"), inline);
    std::thread::scope(|s| {
        for c in 0..conns {
            let srv = &srv;
            s.spawn(move || write_and_read(srv, c, 120));
        }
    });
    // Long enough for every thread and poller to go to sleep: requests
    // must wake them (socket events, doorbells, completions).
    std::thread::sleep(Duration::from_millis(300));
    all_there(&srv, conns, 120);
    std::thread::sleep(Duration::from_millis(300));
    let mut con = srv.client();
    let _: () = redis::cmd("SET")
        .arg("after-idle")
        .arg("1")
        .query(&mut con)
        .unwrap();
    drop(con);
    srv.stop();

    let srv = Server::start(dir.path(), extra);
    assert_eq!(srv.info_field("inline_io"), inline);
    all_there(&srv, conns, 120);
    let v: String = redis::cmd("GET")
        .arg("after-idle")
        .query(&mut srv.client())
        .unwrap();
    assert_eq!(v, "1");
    srv.stop();
}

#[test]
fn one_thread_running_its_poller_and_the_same_with_a_poller_thread() {
    let one = ["--tcp-threads", "1", "--io-threads", "1"];
    serve_and_restart(&[&one[..], &["--inline-io", "on"]].concat(), "yes", 8);
    serve_and_restart(&[&one[..], &["--inline-io", "off"]].concat(), "no", 8);
}

#[test]
fn two_threads_each_running_its_poller() {
    let extra = [
        "--inline-io",
        "on",
        "--tcp-threads",
        "2",
        "--io-threads",
        "2",
    ];
    serve_and_restart(&extra, "yes", 16);
}

#[test]
fn on_is_refused_where_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--sparse", "--path"])
        .arg(dir.path())
        .args([
            "--inline-io",
            "on",
            "--io-threads",
            "2",
            "--tcp-threads",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inline-io on: 2 pollers and 1 connection threads"),
        "{err}"
    );
}
