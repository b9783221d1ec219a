//! Device faults injected under the server (`--inject-faults`): the writer
//! gets an error reply, the index is not damaged, the server lives on.

mod common;

use common::Server;
use redis::Commands;

fn set(con: &mut redis::Connection, k: &str, v: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(k).arg(v).query(con)
}

/// One poller, faults as `spec` says, and commits only when writes call for
/// them (the interval never passes), so that the operations counted are
/// those the test expects.
fn with_faults(dir: &std::path::Path, spec: &str) -> Server {
    Server::start(
        dir,
        &[
            "--io-threads",
            "1",
            "--commit-interval-ms",
            "600000",
            "--inject-faults",
            spec,
        ],
    )
}

#[test]
fn write_and_flush_errors_roll_back_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    // Each SET here is a commit of one write and one flush. Writes 3 and 4
    // fail (EIO, short write); those commits issue no flush, so the 7th
    // flush, which fails, belongs to the 9th SET. A failed commit abandons
    // its segments; a later commit erases the header of each left empty
    // (the 3rd and 4th SETs' keys', each alone in its shard's segment):
    // the 4th SET's commit carries write 5, erasing the 3rd's segment, and,
    // as that commit failed, the 5th SET's carries both erasures (writes 7
    // and 8). No erasure-only commit runs in between: they wait for the
    // commit interval.
    let srv = with_faults(dir.path(), "write-eio@3,short-write@4,flush-eio@7");
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
        vec![3, 4, 9],
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
    // The two failed writes are not counted as written; the erasures and
    // the write of the commit whose flush failed are: 12 - 2.
    assert_eq!(srv.info_field("device_writes"), "10");
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

#[test]
fn a_failed_erasure_fails_no_write_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    // Write 3 (the 3rd SET) fails: its key's segment, abandoned and empty,
    // is erased by the next commit, whose writes are the 4th SET's (4) and
    // that erasure (5, which fails too). The 4th SET still succeeds; the
    // erasure is retried with the 5th SET (writes 6 and 7).
    let srv = with_faults(dir.path(), "write-eio@3,write-eio@5");
    let mut con = srv.client();
    let results: Vec<bool> = (1..=5)
        .map(|i| set(&mut con, &format!("k{i}"), "v").is_ok())
        .collect();
    assert_eq!(results, [true, true, false, true, true]);
    assert_eq!(srv.info_field("io_errors"), "2");
    assert_eq!(srv.info_field("device_writes"), "5");
    assert!(srv
        .log
        .lock()
        .unwrap()
        .contains("erasing an emptied segment failed"));
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for (i, ok) in (1..=5).zip(results) {
        let v: Option<String> = con.get(format!("k{i}")).unwrap();
        assert_eq!(v.is_some(), ok, "k{i}");
    }
    srv.stop();
}

/// A buffer allocation that fails (as when SPDK's DMA memory runs out) is
/// an error reply, not a dead poller: a GET that gets no buffer for its
/// read is answered with an error and the next one works; a SET whose
/// commit gets none fails as a failed write does, and nothing of it is
/// acknowledged or found later, before or after a crash.
#[test]
fn a_failed_buffer_allocation_is_an_error_reply_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    set(&mut con, "a", "1").unwrap();
    srv.stop();
    // Allocation 1 is the first GET's read buffer, 2 the second's; 3 is
    // the buffer of the first SET's commit; 4 the second SET's.
    let srv = with_faults(dir.path(), "alloc-fail@1,alloc-fail@3");
    let mut con = srv.client();
    let e = con.get::<_, Option<String>>("a").unwrap_err();
    assert!(e.to_string().contains("out of I/O buffer memory"), "{e}");
    assert_eq!(
        con.get::<_, Option<String>>("a").unwrap().as_deref(),
        Some("1")
    );
    let e = set(&mut con, "b", "2").unwrap_err();
    assert!(e.to_string().contains("write not durable"), "{e}");
    assert!(e.to_string().contains("no I/O buffer"), "{e}");
    set(&mut con, "c", "3").unwrap();
    assert_eq!(con.get::<_, Option<String>>("b").unwrap(), None);
    assert_eq!(
        con.get::<_, Option<String>>("c").unwrap().as_deref(),
        Some("3")
    );
    assert_eq!(srv.info_field("io_errors"), "2");
    srv.kill();

    // Rebuilt from the device after the crash: what was acknowledged, and
    // nothing of the write that failed.
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for (k, want) in [("a", Some("1")), ("b", None), ("c", Some("3"))] {
        let v: Option<String> = con.get(k).unwrap();
        assert_eq!(v.as_deref(), want, "{k} after a crash");
    }
    srv.stop();
}

/// A rename whose two keys lie in different shards of its poller writes
/// two logs: whichever of their writes fails, the rename answers the
/// error and the value is still there (under its old name, or under both
/// names while the source's tombstone failed), also after a restart;
/// never under neither. The source is deleted only once the destination's
/// write is durable.
#[test]
fn a_rename_across_shards_whose_write_fails_keeps_the_value() {
    let shard =
        |k: &str| nvkv::store::shard_of(nvkv::index::KeyHash::of(k.as_bytes()).partition(256), 8);
    let src = "rn:src";
    let dst = (0..64)
        .map(|i| format!("rn:dst{i}"))
        .find(|d| shard(d) != shard(src))
        .expect("a key in another shard");
    // Write 1 is the SET's; the rename's are writes 2 and 3.
    for fault in ["write-eio@2", "write-eio@3"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = with_faults(dir.path(), fault);
        let mut con = srv.client();
        set(&mut con, src, "value").unwrap();
        let e = redis::cmd("RENAME")
            .arg(src)
            .arg(&dst)
            .query::<()>(&mut con)
            .unwrap_err();
        assert!(e.to_string().contains("I/O error"), "{fault}: {e}");
        let pair = |con: &mut redis::Connection| -> (Option<String>, Option<String>) {
            (con.get(src).unwrap(), con.get(&dst).unwrap())
        };
        let (a, b) = pair(&mut con);
        assert_eq!(a.as_deref(), Some("value"), "{fault}: the source ({b:?})");
        assert!(
            b.is_none() || b.as_deref() == Some("value"),
            "{fault}: {b:?}"
        );
        // After a kill -9 the failed write's outcome is unknown (its bytes
        // may have reached the media), but the value is under one name.
        srv.kill();
        let srv = Server::start(dir.path(), &[]);
        let mut con = srv.client();
        let (a, b) = pair(&mut con);
        let value = Some("value");
        assert!(
            [&a, &b]
                .iter()
                .all(|v| v.is_none() || v.as_deref() == value)
                && (a.as_deref() == value || b.as_deref() == value),
            "{fault}, after a restart: {a:?} {b:?}"
        );
        srv.stop();
    }
}
