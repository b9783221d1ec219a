//! SIGTERM under load: in-flight requests finish, the server exits 0, and
//! the restart maps the index without a scan, with every acknowledged write.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for, Server};

#[test]
fn sigterm_under_load_is_clean_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (url, acked) = (srv.url(), Arc::clone(&acked));
            std::thread::spawn(move || {
                let client = redis::Client::open(url).unwrap();
                let mut con = client.get_connection().unwrap();
                con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for n in 0u64.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    let (k, v) = (
                        format!("w{t}:{}", n % 300),
                        format!("{t}-{n}-{}", "x".repeat((n % 500) as usize)),
                    );
                    match redis::cmd("SET").arg(&k).arg(&v).query::<()>(&mut con) {
                        Ok(()) => {
                            acked.lock().unwrap().insert(k, v);
                        }
                        Err(_) => {
                            // The server is shutting down: this write may or
                            // may not have been applied.
                            acked.lock().unwrap().insert(format!("{k}?"), v);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    // SIGTERM once the writers are well under way.
    wait_for("200 writes acknowledged", || {
        acked.lock().unwrap().len() >= 200
    });
    srv.stop(); // SIGTERM, and asserts exit status 0
    for w in writers {
        w.join().unwrap();
    }

    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    assert_eq!(srv.info_field("recovery_bytes_read"), "0");
    let mut con = srv.client();
    let acked = acked.lock().unwrap();
    for (k, v) in acked.iter().filter(|(k, _)| !k.ends_with('?')) {
        let got: Option<String> = redis::cmd("GET").arg(k).query(&mut con).unwrap();
        let unanswered = acked.get(&format!("{k}?"));
        assert!(
            got.as_deref() == Some(v.as_str()) || got.as_ref() == unanswered,
            "{k}: got {got:?}, last acknowledged {v:?}, unanswered {unanswered:?}"
        );
    }
    srv.stop();
}

/// One SIGTERM delivered twice at once (as `timeout` does: to its child,
/// then to its process group) is one clean shutdown, not an impatient
/// second signal: exit 0 and a clean index.
#[test]
fn a_doubled_sigterm_is_still_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &[]);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut srv.client())
        .unwrap();
    let pid = srv.pid() as i32;
    // SAFETY: signals our own child process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGTERM);
    }
    let status = common::wait_bounded(&mut srv.child, Duration::from_secs(20));
    assert!(
        status.success(),
        "exit {status}\n{}",
        srv.log.lock().unwrap()
    );
    drop(srv);
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut srv.client()).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    srv.stop();
}
