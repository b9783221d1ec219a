//! Device faults injected under the server (`--inject-faults`): the writer
//! gets an error reply, the index is not damaged, the server lives on.

mod common;

use common::Server;
use redis::Commands;

fn set(con: &mut redis::Connection, k: &str, v: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(k).arg(v).query(con)
}

#[test]
fn write_and_flush_errors_roll_back_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    // Each SET here is a commit of one write and one flush. Writes 3 and 5
    // fail (EIO, short write); those commits issue no flush, so the 7th
    // flush, which fails, belongs to the 9th SET.
    let srv = Server::start(
        dir.path(),
        &[
            "--io-threads",
            "1",
            "--inject-faults",
            "write-eio@3,short-write@5,flush-eio@7",
        ],
    );
    let mut con = srv.client();
    let mut failed = Vec::new();
    for i in 1..=9 {
        // Every key first holds "old", then is overwritten with "new".
        if i == 1 {
            set(&mut con, "k", "old").unwrap();
            continue;
        }
        match set(&mut con, &format!("k{i}"), "v") {
            Ok(()) => {}
            Err(e) => {
                assert!(
                    e.to_string().contains("I/O error, write not durable"),
                    "{e}"
                );
                failed.push(i);
            }
        }
    }
    assert_eq!(
        failed,
        vec![3, 5, 9],
        "the writes of the failed commits got errors"
    );
    for i in 2..=9 {
        let v: Option<String> = con.get(format!("k{i}")).unwrap();
        let want = (!failed.contains(&i)).then(|| "v".to_string());
        assert_eq!(v, want, "k{i}: a failed write must not be visible");
    }
    assert_eq!(
        con.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("old")
    );
    assert_eq!(srv.info_field("io_errors"), "3");
    // The two failed writes are not counted as written; the write of the
    // commit whose flush failed is.
    assert_eq!(srv.info_field("device_writes"), "7");
    srv.stop();

    // After a restart the acknowledged writes are there. A write answered
    // with an error has an unknown outcome once the index is rebuilt from
    // the device (its bytes may have reached the media before the failing
    // flush), but it can only be absent or hold the value it tried to set.
    for kill in [false, true] {
        let srv = Server::start(dir.path(), &[]);
        let mut con = srv.client();
        for i in 2..=9 {
            let v: Option<String> = con.get(format!("k{i}")).unwrap();
            if failed.contains(&i) {
                assert!(
                    v.is_none() || v.as_deref() == Some("v"),
                    "k{i} after restart: {v:?}"
                );
            } else {
                assert_eq!(v.as_deref(), Some("v"), "k{i} after restart");
            }
        }
        if kill {
            srv.kill();
        } else {
            let _ = redis::cmd("SET").arg("x").arg("y").query::<()>(&mut con);
            srv.kill();
        }
    }
}

#[test]
fn read_errors_are_error_replies() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    set(&mut con, "a", "1").unwrap();
    srv.stop();
    // The first device read of the poller fails; the second succeeds.
    let srv = Server::start(dir.path(), &["--inject-faults", "read-eio@1"]);
    let mut con = srv.client();
    let e = con.get::<_, Option<String>>("a").unwrap_err();
    assert!(e.to_string().contains("I/O error"), "{e}");
    assert_eq!(
        con.get::<_, Option<String>>("a").unwrap().as_deref(),
        Some("1")
    );
    srv.stop();
}
