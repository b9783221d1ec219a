//! Replication between two nvkv servers on loopback: a full copy of the
//! keys a primary has, the stream of every write after it (values, TTLs,
//! DEL, FLUSHALL, EXEC), resuming after the replica restarts or is killed,
//! READONLY, REPLICAOF NO ONE, WAIT, and ROLE and INFO replication as
//! tools read them, compared in shape with a real Redis pair where
//! redis-server is installed.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{wait_for, RealRedis, Server};
use redis::Value;

/// Every key of a server with its value and absolute expiry (-1: none).
type State = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

/// A server's [`State`]; `None` while it loads a full copy.
fn state(con: &mut redis::Connection) -> Option<State> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let step = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con);
        let (next, batch): (u64, Vec<Vec<u8>>) = match step {
            Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError => return None,
            step => step.expect("SCAN"),
        };
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    for k in keys {
        let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(con).expect("GET");
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&k)
            .query(con)
            .expect("PEXPIRETIME");
        if let Some(v) = v {
            out.insert(k, (v, at));
        }
    }
    Some(out)
}

/// Waits until the replica holds exactly what the primary holds.
fn converge(primary: &Server, replica: &Server) {
    let (mut p, mut r) = (primary.client(), replica.client());
    let t0 = Instant::now();
    loop {
        let want = state(&mut p).expect("a primary does not load");
        let got = state(&mut r);
        if Some(&want) == got.as_ref() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the replica did not converge:\nprimary {want:?}\nreplica {got:?}\nreplica's log:\n{}",
            replica.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn replica_of(dir: &std::path::Path, primary: &Server, extra: &[&str]) -> Server {
    let to = format!("127.0.0.1 {}", primary.addr.port());
    let mut args = vec!["--replicaof", &to];
    args.extend(extra);
    Server::start(dir, &args)
}

fn role(con: &mut redis::Connection) -> Vec<Value> {
    match redis::cmd("ROLE").query(con).expect("ROLE") {
        Value::Array(v) => v,
        v => panic!("ROLE answered {v:?}"),
    }
}

/// The link state in a replica's ROLE.
fn link_state(con: &mut redis::Connection) -> String {
    match &role(con)[3] {
        Value::BulkString(s) => String::from_utf8_lossy(s).into_owned(),
        v => panic!("{v:?}"),
    }
}

fn info_fields(con: &mut redis::Connection) -> Vec<(String, String)> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(con)
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_replica_copies_the_keys_and_follows_every_write() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let mut p = primary.client();
    // Before the replica: the full copy carries these.
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(&mut p)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("x")
        .arg("PX")
        .arg(600_000)
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("INCRBY").arg("n").arg(41).query(&mut p).unwrap();
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    converge(&primary, &replica);

    // The stream: every kind of write.
    let mut r = replica.client();
    let _: i64 = redis::cmd("INCR").arg("n").query(&mut p).unwrap();
    let _: i64 = redis::cmd("APPEND")
        .arg("k1")
        .arg("+")
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("DEL").arg("k2").arg("k3").query(&mut p).unwrap();
    let _: i64 = redis::cmd("EXPIRE")
        .arg("k4")
        .arg(1000)
        .query(&mut p)
        .unwrap();
    let _: i64 = redis::cmd("PERSIST").arg("ttl").query(&mut p).unwrap();
    let _: () = redis::cmd("MSET")
        .arg("{t}a")
        .arg(1)
        .arg("{t}b")
        .arg(2)
        .query(&mut p)
        .unwrap();
    let _: () = redis::cmd("RENAME")
        .arg("k5")
        .arg("k5-renamed")
        .query(&mut p)
        .unwrap();
    let _: Value = redis::cmd("SET")
        .arg("gone")
        .arg("soon")
        .arg("PX")
        .arg(1)
        .query(&mut p)
        .unwrap();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{t}a")
        .cmd("INCR")
        .arg("{t}b")
        .query(&mut p)
        .unwrap();
    assert_eq!((a, b), (2, 3));
    // A transaction over keys of both pollers runs while replicas are fed
    // (its parts go into the stream as one MULTI … EXEC), and so does MSET
    // over them.
    let spread = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let _: () = redis::cmd("MULTI").query(&mut p).unwrap();
    for k in spread {
        let _: Value = redis::cmd("SET").arg(k).arg("x").query(&mut p).unwrap();
    }
    let ran: Vec<String> = redis::cmd("EXEC").query(&mut p).unwrap();
    assert_eq!(ran, ["OK"; 8]);
    converge(&primary, &replica);
    let pairs: Vec<(&str, &str)> = spread.iter().map(|&k| (k, "m")).collect();
    let _: () = redis::cmd("MSET").arg(&pairs).query(&mut p).unwrap();
    converge(&primary, &replica);
    let got: Vec<String> = redis::cmd("MGET").arg(&spread).query(&mut r).unwrap();
    assert_eq!(got, ["m"; 8]);
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg("n")
        .arg("k1")
        .arg("k2")
        .arg("{t}a")
        .arg("k5-renamed")
        .query(&mut r)
        .unwrap();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(got, [some("42"), some("v1+"), None, some("2"), some("v5")]);

    // FLUSHALL, then writes after it.
    let _: () = redis::cmd("FLUSHALL").query(&mut p).unwrap();
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("flush")
        .query(&mut p)
        .unwrap();
    converge(&primary, &replica);
    assert_eq!(common::dbsize(&mut r), 1);

    // Writes on both pollers while a second replica copies the store.
    let rd2 = tempfile::tempdir().unwrap();
    let replica2 = replica_of(rd2.path(), &primary, &[]);
    for i in 0..2000 {
        let _: () = redis::cmd("SET")
            .arg(format!("w{}", i % 300))
            .arg(i)
            .query(&mut p)
            .unwrap();
    }
    converge(&primary, &replica);
    converge(&primary, &replica2);
}

/// A replica with more pollers than its primary applies the primary's
/// transactions across its pollers (one poller's block on the primary).
#[test]
fn a_replica_with_more_pollers_applies_transactions_across_them() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut p = primary.client();
    converge(&primary, &replica);
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for round in 0..3 {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in keys {
            pipe.set(k, round).ignore();
        }
        let _: () = pipe.query(&mut p).unwrap();
    }
    converge(&primary, &replica);
    let got: Vec<i64> = redis::cmd("MGET")
        .arg(&keys)
        .query(&mut replica.client())
        .unwrap();
    assert_eq!(got, [2; 8]);
}

/// Whether keys `a` and `b` are on different pollers of `srv`.
fn apart(srv: &Server, a: &str, b: &str) -> bool {
    common::apart(srv.addr, a.as_bytes(), b.as_bytes())
}

/// `n` pairs of keys named after `tag`, the two of each on different
/// pollers.
fn pairs_apart(srv: &Server, tag: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0.. {
        let (a, b) = (format!("{tag}x{i}"), format!("{tag}y{i}"));
        if apart(srv, &a, &b) {
            out.push((a, b));
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// Sets both keys of pair `k` to `v` in one MULTI … EXEC; false once the
/// server is gone.
fn exec_pair(con: &mut redis::Connection, pair: &(String, String), v: &str) -> bool {
    let mut pipe = redis::pipe();
    pipe.atomic().set(&pair.0, v).set(&pair.1, v);
    match pipe.query::<()>(con) {
        Ok(()) => true,
        Err(e) if e.is_io_error() || e.is_connection_dropped() => false,
        Err(e) => panic!("EXEC across pollers: {e}"),
    }
}

/// While a replica is fed, transactions across pollers run (redis-py's
/// default pipeline, and EXECs from several clients at once over shared
/// and separate keys, with no deadlock) and reach the replica whole: a
/// reader there never sees one key of an EXEC without the other, and the
/// replica ends with the primary's values.
#[test]
fn transactions_across_pollers_reach_a_replica_whole() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut p = primary.client();
    let _: () = redis::cmd("SET").arg("start").arg(1).query(&mut p).unwrap();
    converge(&primary, &replica);
    let pairs = pairs_apart(&primary, "t", 6);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (mut r, pairs, done) = (replica.client(), pairs.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            for _ in 0..200_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                for (a, b) in &pairs {
                    let got: Vec<Option<String>> =
                        redis::cmd("MGET").arg(a).arg(b).query(&mut r).unwrap();
                    assert_eq!(got[0], got[1], "the replica holds part of an EXEC");
                    seen += usize::from(got[0].is_some());
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (mut con, pairs) = (primary.client(), pairs.clone());
            std::thread::spawn(move || {
                for i in 0..150 {
                    // Threads 0 and 1 share pairs; 2 and 3 have their own.
                    let k = match t {
                        0 | 1 => i % 3,
                        2 => 3 + i % 2,
                        _ => 5,
                    };
                    assert!(exec_pair(&mut con, &pairs[k], &format!("{t}-{i}")));
                }
            })
        })
        .collect();
    let py = common::redis_py().then(|| {
        let script = r#"
import sys, redis
host, port = sys.argv[1].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port))
keys = ["py%d" % i for i in range(12)]
for i in range(60):
    p = r.pipeline()
    for k in keys:
        p.set(k, i)
    p.incr("pyn").mset({k: "m%d" % i for k in keys[::4]}).mget(keys)
    out = p.execute()
    assert out[len(keys)] == i + 1, out
print("ok")
"#;
        std::process::Command::new("python3")
            .args(["-c", script, &primary.addr.to_string()])
            .output()
            .unwrap()
    });
    for w in writers {
        w.join().unwrap();
    }
    if let Some(out) = py {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    converge(&primary, &replica);
    done.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    assert!(seen > 0, "the reader saw no EXEC's keys");
    let got: Vec<String> = redis::cmd("MGET")
        .arg(&pairs[5].0)
        .arg(&pairs[5].1)
        .query(&mut replica.client())
        .unwrap();
    assert_eq!(got[0], got[1]);
    replica.stop();
    primary.stop();
}

/// kill -9 of a primary while clients run transactions across its
/// pollers: the replica holds every EXEC whole or not at all.
#[test]
fn a_replica_holds_whole_transactions_across_pollers_when_the_primary_is_killed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut p = primary.client();
    let _: () = redis::cmd("SET").arg("start").arg(1).query(&mut p).unwrap();
    converge(&primary, &replica);
    let pairs = pairs_apart(&primary, "k", 8);
    let ran = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (mut con, pairs, ran) = (primary.client(), pairs.clone(), ran.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if !exec_pair(&mut con, &pairs[(t + i) % 8], &format!("{t}-{i}")) {
                        return;
                    }
                    ran.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_for("EXECs on the primary", || ran.load(Ordering::SeqCst) >= 300);
    primary.kill();
    for w in writers {
        w.join().unwrap();
    }
    let mut r = replica.client();
    wait_for("the replica's link to go down", || {
        link_state(&mut r) != "connected"
    });
    let mut some = 0;
    for (a, b) in &pairs {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(a).arg(b).query(&mut r).unwrap();
        assert_eq!(got[0], got[1], "the replica holds part of an EXEC");
        some += usize::from(got[0].is_some());
    }
    assert!(some > 0, "no EXEC reached the replica");
    replica.stop();
}

/// A replica attached while clients run transactions across pollers (some
/// begun before its feed, which may start the stream again) ends with the
/// primary's values, every pair whole.
#[test]
fn a_replica_attached_during_transactions_across_pollers_converges() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let pairs = pairs_apart(&primary, "j", 6);
    let (ran, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let (mut con, pairs) = (primary.client(), pairs.clone());
            let (ran, stop) = (ran.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    assert!(exec_pair(
                        &mut con,
                        &pairs[(t + i) % 6],
                        &format!("{t}-{i}")
                    ));
                    ran.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_for("EXECs before the replica", || {
        ran.load(Ordering::SeqCst) >= 100
    });
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut r = replica.client();
    wait_for("the link is up", || link_state(&mut r) == "connected");
    let at = ran.load(Ordering::SeqCst);
    wait_for("EXECs while fed", || ran.load(Ordering::SeqCst) >= at + 300);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    converge(&primary, &replica);
    for (a, b) in &pairs {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(a).arg(b).query(&mut r).unwrap();
        assert!(got[0].is_some() && got[0] == got[1], "{got:?}");
    }
    replica.stop();
    primary.stop();
}

#[test]
fn a_replica_refuses_client_writes_and_is_promoted_by_replicaof_no_one() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let replica = replica_of(rd.path(), &primary, &[]);
    let mut r = replica.client();
    wait_for("the link is up", || link_state(&mut r) == "connected");
    let mut raw = common::RawConn::connect(replica.addr);
    assert_eq!(
        raw.call(&[b"SET", b"k", b"v"]),
        b"-READONLY You can't write against a read only replica.\r\n"
    );
    // Inside MULTI the write is refused as it is queued, and EXEC aborts.
    let e = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg("k")
        .query::<Value>(&mut r)
        .unwrap_err();
    let e = e.to_string();
    assert!(e.contains("read only replica"), "{e}");
    assert_eq!(raw.call(&[b"GET", b"k"]), b"$-1\r\n");
    assert_eq!(
        raw.call(&[b"WAIT", b"1", b"0"]),
        b"-ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.\r\n"
    );
    let port = primary.addr.port().to_string();
    assert_eq!(
        raw.call(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()]),
        b"+OK Already connected to specified master\r\n"
    );
    assert_eq!(
        raw.call(&[b"REPLICAOF", b"127.0.0.1", b"70000"]),
        b"-ERR Invalid master port\r\n"
    );

    assert_eq!(raw.call(&[b"REPLICAOF", b"NO", b"ONE"]), b"+OK\r\n");
    assert_eq!(raw.call(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert!(matches!(&role(&mut r)[0], Value::BulkString(s) if s == b"master"));
    // Promoted, it keeps its own writes: the old primary's stream no
    // longer reaches it.
    let _: () = redis::cmd("SET")
        .arg("p")
        .arg("1")
        .query(&mut primary.client())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let got: Option<String> = redis::cmd("GET").arg("p").query(&mut r).unwrap();
    assert_eq!(got, None);
    replica.stop();
    primary.stop();
}

#[test]
fn a_replica_resumes_after_a_restart_and_after_a_kill() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    let replica = replica_of(rd.path(), &primary, &[]);
    for i in 0..100 {
        let _: () = redis::cmd("SET").arg(i).arg(i).query(&mut p).unwrap();
    }
    converge(&primary, &replica);
    // Its position is saved once a second.
    std::thread::sleep(Duration::from_millis(1500));
    replica.stop();
    for i in 50..150 {
        let _: () = redis::cmd("SET").arg(i).arg(-i).query(&mut p).unwrap();
    }
    let _: i64 = redis::cmd("DEL").arg(0).query(&mut p).unwrap();
    let replica = replica_of(rd.path(), &primary, &[]);
    converge(&primary, &replica);
    let log = replica.log.lock().unwrap().clone();
    assert!(
        log.contains("resuming the primary's stream") && !log.contains("full copy from"),
        "{log}"
    );

    // kill -9: it resumes from a position saved before its last writes,
    // and applying them again changes nothing.
    std::thread::sleep(Duration::from_millis(1500));
    replica.kill();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(i)
            .arg("after the kill")
            .query(&mut p)
            .unwrap();
    }
    let replica = replica_of(rd.path(), &primary, &[]);
    converge(&primary, &replica);
    replica.stop();
    primary.stop();
}

#[test]
fn a_replica_that_cannot_reach_its_primary_retries_and_says_so() {
    let rd = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let replica = Server::start(rd.path(), &["--replicaof", &format!("127.0.0.1 {port}")]);
    let mut r = replica.client();
    let fields = info_fields(&mut r);
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
    assert_eq!(get("role").as_deref(), Some("slave"));
    assert_eq!(get("master_link_status").as_deref(), Some("down"));
    assert!(["connect", "connecting"].contains(&link_state(&mut r).as_str()));
    wait_for("a retry logged", || {
        replica.log.lock().unwrap().contains("retrying in 1 s")
    });
    // A primary appears on that port: the replica syncs with it.
    let pd = tempfile::tempdir().unwrap();
    let primary = Server::start(pd.path(), &["--listen", &format!("127.0.0.1:{port}")]);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut primary.client())
        .unwrap();
    converge(&primary, &replica);
}

#[test]
fn wait_counts_the_replicas_that_acknowledged() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    // No replica: WAIT times out with 0.
    let n: i64 = redis::cmd("WAIT").arg(1).arg(100).query(&mut p).unwrap();
    assert_eq!(n, 0);
    let replica = replica_of(rd.path(), &primary, &[]);
    let mut r = replica.client();
    wait_for("the link is up", || link_state(&mut r) == "connected");
    for i in 0..20 {
        let _: () = redis::cmd("SET").arg("k").arg(i).query(&mut p).unwrap();
        // Without a timeout: answered once the replica has it.
        let n: i64 = redis::cmd("WAIT").arg(1).arg(0).query(&mut p).unwrap();
        assert_eq!(n, 1);
        let got: i64 = redis::cmd("GET").arg("k").query(&mut r).unwrap();
        assert_eq!(got, i);
    }
    let n: i64 = redis::cmd("WAIT").arg(2).arg(200).query(&mut p).unwrap();
    assert_eq!(n, 1);
    // Inside a transaction, as Redis's: at once, without a timeout too.
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ok, n): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&["k", "t"])
        .cmd("WAIT")
        .arg(&["2", "0"])
        .query(&mut p)
        .unwrap();
    assert_eq!(ok, "OK");
    assert!(n <= 1, "{n}");
    let mut raw = common::RawConn::connect(primary.addr);
    assert_eq!(
        raw.call(&[b"WAIT", b"1", b"x"]),
        b"-ERR timeout is not an integer or out of range\r\n"
    );
    assert_eq!(
        raw.call(&[b"WAIT", b"1", b"-1"]),
        b"-ERR timeout is negative\r\n"
    );
}

#[test]
fn min_replicas_to_write_refuses_writes_without_enough_replicas() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--min-replicas-to-write", "1"]);
    let mut raw = common::RawConn::connect(primary.addr);
    assert_eq!(
        raw.call(&[b"SET", b"k", b"v"]),
        b"-NOREPLICAS Not enough good replicas to write.\r\n"
    );
    assert_eq!(raw.call(&[b"GET", b"k"]), b"$-1\r\n");
    let replica = replica_of(rd.path(), &primary, &[]);
    let mut r = replica.client();
    wait_for("the link is up", || link_state(&mut r) == "connected");
    wait_for("writes taken", || {
        raw.call(&[b"SET", b"k", b"v"]) == b"+OK\r\n"
    });
}

/// The fields of INFO replication and the shape of ROLE, on both sides,
/// are Redis's (values differ: offsets, ids, ports).
#[test]
fn role_and_info_have_the_shape_of_a_redis_pair() {
    let Some(rp) = RealRedis::start(&["--repl-diskless-sync-delay", "0"]) else {
        return;
    };
    let rport = rp.addr.rsplit_once(':').unwrap().1.to_string();
    // A replica writes the copy it receives to its directory.
    let rdir = tempfile::tempdir().unwrap();
    let rdir = rdir.path().to_str().unwrap();
    let Some(rr) = RealRedis::start(&["--replicaof", "127.0.0.1", &rport, "--dir", rdir]) else {
        return;
    };
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let replica = replica_of(rd.path(), &primary, &[]);
    let (mut rpc, mut rrc) = (rp.client(), rr.client());
    let (mut pc, mut rc) = (primary.client(), replica.client());
    for c in [&mut rpc, &mut pc] {
        let _: () = redis::cmd("SET").arg("k").arg("v").query(c).unwrap();
    }
    wait_for("both links up", || {
        link_state(&mut rrc) == "connected" && link_state(&mut rc) == "connected"
    });
    wait_for("both replicas online and acknowledged", || {
        let online = |c: &mut redis::Connection| {
            info_fields(c)
                .iter()
                .any(|(k, v)| k == "slave0" && v.contains("state=online"))
        };
        online(&mut rpc) && online(&mut pc)
    });
    let names = |c: &mut redis::Connection| -> Vec<String> {
        info_fields(c).into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        names(&mut pc),
        names(&mut rpc),
        "a primary's INFO replication"
    );
    assert_eq!(
        names(&mut rc),
        names(&mut rrc),
        "a replica's INFO replication"
    );
    let slave0 = |c: &mut redis::Connection| -> Vec<String> {
        let (_, v) = info_fields(c)
            .into_iter()
            .find(|(k, _)| k == "slave0")
            .unwrap();
        v.split(',')
            .map(|kv| kv.split_once('=').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(slave0(&mut pc), slave0(&mut rpc));
    let shape = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|e| match e {
                Value::BulkString(s) if s == b"master" || s == b"slave" => {
                    String::from_utf8_lossy(s).into_owned()
                }
                Value::BulkString(_) => "bulk".into(),
                Value::Int(_) => "int".into(),
                Value::Array(a) => format!(
                    "array{:?}",
                    a.iter()
                        .map(|x| match x {
                            Value::Array(y) => y.len(),
                            _ => 0,
                        })
                        .collect::<Vec<_>>()
                ),
                v => format!("{v:?}"),
            })
            .collect()
    };
    assert_eq!(shape(&role(&mut pc)), shape(&role(&mut rpc)));
    assert_eq!(shape(&role(&mut rc)), shape(&role(&mut rrc)));
}

/// What Redis Sentinel sends a replica it repoints: REPLICAOF inside
/// MULTI … EXEC with CONFIG REWRITE and CLIENT KILL TYPE normal; the
/// rewritten config file keeps `replicaof` for the next start, and the
/// in-process connections are not killed.
#[test]
fn replicaof_in_a_transaction_and_config_rewrite_keep_the_role_across_a_restart() {
    let (pd, nd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut primary.client())
        .unwrap();
    let conf = nd.path().join("nvkv.toml");
    std::fs::write(&conf, "# a node\nmaxmemory_samples = 5\n").unwrap();
    let store = nd.path().join("store");
    let conf_arg = conf.to_str().unwrap();
    let node = Server::start(&store, &["--config", conf_arg]);
    let mut n = node.client();
    let port = primary.addr.port();
    let (ok, rewrite, _killed): (String, String, i64) = redis::pipe()
        .atomic()
        .cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .cmd("CONFIG")
        .arg("REWRITE")
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut n)
        .unwrap();
    assert_eq!((ok.as_str(), rewrite.as_str()), ("OK", "OK"));
    converge(&primary, &node);
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains(&format!("replicaof = \"127.0.0.1 {port}\"")),
        "{text}"
    );
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("replicaof")
        .query(&mut n)
        .unwrap();
    assert_eq!(
        config,
        ["replicaof".to_string(), format!("127.0.0.1 {port}")]
    );
    // CLIENT KILL TYPE master reaches the link; it comes back.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut n)
        .unwrap();
    assert_eq!(killed, 1);
    node.stop();

    let _: () = redis::cmd("SET")
        .arg("k2")
        .arg("v2")
        .query(&mut primary.client())
        .unwrap();
    let node = Server::start(&store, &["--config", conf_arg]);
    let mut n = node.client();
    wait_for("the link is up after the restart", || {
        link_state(&mut n) == "connected"
    });
    converge(&primary, &node);
    // Promoted and rewritten: the next start is a primary's.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut n)
        .unwrap();
    let _: () = redis::cmd("CONFIG").arg("REWRITE").query(&mut n).unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("replicaof = \"\""), "{text}");
    node.stop();
    let node = Server::start(&store, &["--config", conf_arg]);
    assert!(matches!(&role(&mut node.client())[0], Value::BulkString(s) if s == b"master"));
}

/// Waits until `con` answers `want` to GET `key`.
fn wait_value(con: &mut redis::Connection, key: &str, want: Option<&str>) {
    wait_for(&format!("{key} = {want:?}"), || {
        match redis::cmd("GET").arg(key).query::<Option<String>>(con) {
            Ok(v) => v.as_deref() == want,
            // A replica loading a full copy.
            Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError => false,
            Err(e) => panic!("GET {key}: {e}"),
        }
    });
}

#[test]
fn a_write_the_primary_rolls_back_never_reaches_the_replica() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // One poller, commits only when writes call for them (as in
    // tests/faults.rs): each SET is one commit of one device write, and the
    // 3rd write fails, rolling that SET back.
    let primary = Server::start(
        pd.path(),
        &[
            "--io-threads",
            "1",
            "--commit-interval-ms",
            "600000",
            "--inject-faults",
            "write-eio@3",
        ],
    );
    let replica = replica_of(rd.path(), &primary, &[]);
    let (mut p, mut r) = (primary.client(), replica.client());
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let mut failed = Vec::new();
    for i in 1..=4 {
        let res: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query(&mut p);
        if let Err(e) = res {
            assert!(e.to_string().contains("write not durable"), "{e}");
            failed.push(i);
        }
    }
    assert_eq!(failed, vec![3], "the 3rd SET's commit failed");
    // The stream is in order: once k4 is on the replica, k3 would be too.
    wait_value(&mut r, "k4", Some("v"));
    for i in [1, 2, 4] {
        wait_value(&mut r, &format!("k{i}"), Some("v"));
    }
    let k3: Option<String> = redis::cmd("GET").arg("k3").query(&mut r).unwrap();
    assert_eq!(
        k3, None,
        "the replica applied a write its primary rolled back"
    );
    converge(&primary, &replica);
    assert!(primary
        .log
        .lock()
        .unwrap()
        .contains("rolled-back writes left out of the replication stream"));
    replica.stop();
    primary.stop();
}

fn dbsize(con: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(con).unwrap()
}

fn stat(srv: &Server, field: &str) -> u64 {
    srv.info_field(field).parse().unwrap()
}

/// As Redis's: a replica does not expire keys by its own clock. An expired
/// key reads as missing there at once, but stays (DBSIZE counts it) until
/// its primary's DEL comes; the primary sends one for every key it expires.
/// Promoted, the replica expires keys itself.
#[test]
fn expiries_come_from_the_primary_as_del() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let replica = replica_of(rd.path(), &primary, &[]);
    let (mut p, mut r) = (primary.client(), replica.client());
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let set_px = |con: &mut redis::Connection, k: &str, ms: u64| {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("v")
            .arg("PX")
            .arg(ms)
            .query(con)
            .unwrap();
    };
    set_px(&mut p, "soon", 300);
    let _: () = redis::cmd("SET")
        .arg("stays")
        .arg("v")
        .query(&mut p)
        .unwrap();
    wait_value(&mut r, "stays", Some("v"));
    // The primary expires it (its sweep), and the replica follows its DEL.
    wait_for("the primary expired the key", || dbsize(&mut p) == 1);
    wait_for("the DEL reached the replica", || dbsize(&mut r) == 1);
    assert_eq!(
        stat(&replica, "expired_keys"),
        0,
        "the replica expired nothing itself"
    );
    assert!(stat(&primary, "expired_keys") >= 1);

    // Without its primary, the replica keeps an expired key, unseen.
    set_px(&mut p, "later", 300);
    wait_value(&mut r, "later", Some("v"));
    primary.kill();
    std::thread::sleep(Duration::from_millis(600));
    let v: Option<String> = redis::cmd("GET").arg("later").query(&mut r).unwrap();
    assert_eq!(v, None, "an expired key reads as missing on a replica");
    let exists: i64 = redis::cmd("EXISTS").arg("later").query(&mut r).unwrap();
    assert_eq!(exists, 0);
    assert_eq!(
        dbsize(&mut r),
        2,
        "the replica keeps it until its primary's DEL"
    );
    assert_eq!(stat(&replica, "expired_keys"), 0);
    // Promoted, it expires keys by its own clock.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut r)
        .unwrap();
    wait_for("the promoted server expired the key", || {
        dbsize(&mut r) == 1
    });
    replica.stop();
}

/// Keys the primary evicts go to the replica as DELs: both hold the same
/// keys.
#[test]
fn evictions_come_from_the_primary_as_del() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(
        pd.path(),
        &["--maxmemory-policy", "allkeys-random", "--maxmemory", "1M"],
    );
    let replica = replica_of(rd.path(), &primary, &[]);
    let (mut p, mut r) = (primary.client(), replica.client());
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let value = vec![b'x'; 10 << 10];
    for i in 0..300 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query(&mut p)
            .unwrap();
    }
    wait_for("the primary evicted keys", || {
        stat(&primary, "evicted_keys") > 0
    });
    converge(&primary, &replica);
    assert!(dbsize(&mut r) < 300, "the replica dropped the evicted keys");
    assert_eq!(stat(&replica, "evicted_keys"), 0);
    replica.stop();
    primary.stop();
}

/// Reads one command (an array of bulk strings) a replica sent.
fn read_command(s: &mut std::net::TcpStream) -> Vec<String> {
    let head = common::read_line(s);
    let n: usize = head
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a command: {head:?}"));
    (0..n)
        .map(|_| {
            let _len = common::read_line(s);
            common::read_line(s)
        })
        .collect()
}

/// Accepts the next connection of a replica on `listener` (within 20 s),
/// answers its handshake as a primary does, and returns the socket and
/// PSYNC's arguments.
fn accept_replica(listener: &std::net::TcpListener) -> (std::net::TcpStream, Vec<String>) {
    use std::io::Write;
    listener.set_nonblocking(true).unwrap();
    let t0 = Instant::now();
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(t0.elapsed() < Duration::from_secs(20), "no replica came");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    loop {
        let cmd = read_command(&mut s);
        match cmd[0].to_ascii_uppercase().as_str() {
            "PING" => s.write_all(b"+PONG\r\n").unwrap(),
            "REPLCONF" => s.write_all(b"+OK\r\n").unwrap(),
            "PSYNC" => return (s, cmd[1..].to_vec()),
            other => panic!("unexpected {other} in a replica's handshake"),
        }
    }
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).unwrap()
}

/// A full copy cut short, and a stream that holds what nvkv's stream
/// cannot (garbage, a command it never carries): the link drops, nothing
/// of the bad part is applied, and the replica asks for a full copy.
#[test]
fn a_truncated_or_corrupt_stream_drops_the_link_and_a_full_copy_follows() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rd = tempfile::tempdir().unwrap();
    let replica = Server::start(rd.path(), &["--replicaof", &format!("127.0.0.1 {port}")]);
    let mut r = replica.client();
    let id = "a".repeat(40);
    let set = |k: &str| common::encode(&[b"SET", k.as_bytes(), b"1"]);
    let end = common::encode(&[b"REPLCONF", b"SNAPSHOT-END"]);

    // A full copy and a stream, then a cut: the replica resumes.
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"]);
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&[set("a"), end.clone(), set("b")].concat())
        .unwrap();
    wait_value(&mut r, "b", Some("1"));
    drop(s);
    let resume = (set("b").len() + 1).to_string();
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(
        psync,
        [id.as_str(), resume.as_str()],
        "a cut stream resumes"
    );

    // A full copy cut in the middle of a command.
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&set("x")).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\ny").unwrap();
    drop(s);

    // After it, a full copy again; then a stream that goes bad.
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"], "a cut full copy is not resumed");
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&[set("c"), end.clone(), set("d")].concat())
        .unwrap();
    wait_value(&mut r, "d", Some("1"));
    assert_eq!(
        get(&mut r, "a"),
        None,
        "a full copy starts from an empty store"
    );
    s.write_all(&common::encode(&[b"EVAL", b"return 1", b"0"]))
        .unwrap();
    s.write_all(&set("e")).unwrap();

    // The replica drops the link and asks for a full copy.
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"], "a corrupt stream is not resumed");
    assert_eq!(
        get(&mut r, "e"),
        None,
        "nothing after the bad command applied"
    );
    assert_eq!(get(&mut r, "d"), Some("1".into()));
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&set("g")).unwrap();
    // Bytes that are not RESP at all.
    s.write_all(b"?!garbage\r\n").unwrap();
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"]);
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&[set("f"), end].concat()).unwrap();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    wait_value(&mut r, "f", Some("1"));
    assert_eq!(dbsize(&mut r), 1, "only the last full copy's key");
    let log = replica.log.lock().unwrap().clone();
    assert!(log.contains("not nvkv's stream"), "{log}");
    drop(s);
    replica.stop();
}

/// Takes a full copy on a raw connection, as a replica that says `capa`
/// does: the commands up to `REPLCONF SNAPSHOT-END`.
fn raw_copy(primary: &Server, capa: &[&[u8]]) -> Vec<Vec<String>> {
    use std::io::Write;
    let mut s = common::raw(primary);
    let mut hello: Vec<&[u8]> = vec![b"REPLCONF"];
    for c in capa {
        hello.extend([b"capa" as &[u8], c]);
    }
    s.write_all(&common::encode(&hello)).unwrap();
    assert_eq!(common::read_line(&mut s), "+OK");
    s.write_all(&common::encode(&[b"PSYNC", b"?", b"-1"]))
        .unwrap();
    let full = common::read_line(&mut s);
    assert!(full.starts_with("+FULLRESYNC "), "{full}");
    let mut cmds = Vec::new();
    loop {
        let cmd = read_command(&mut s);
        let end = cmd[..] == ["REPLCONF", "SNAPSHOT-END"];
        cmds.push(cmd);
        if end {
            return cmds;
        }
    }
}

/// A primary tells a replica that says `capa nvkv-copy-keys` how many
/// keys its full copy holds (`REPLCONF COPY-KEYS n`, before the first
/// key; the replica sizes its index for them), and a replica that does
/// not say so gets the copy as before, its keys only.
#[test]
fn a_full_copy_announces_its_key_count_to_a_replica_that_takes_it() {
    let pd = tempfile::tempdir().unwrap();
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut p)
            .unwrap();
    }
    let sets = |cmds: &[Vec<String>]| cmds.iter().filter(|c| c[0] == "SET").count();

    let old = raw_copy(&primary, &[b"nvkv-stream-1"]);
    assert_eq!(old[0][0], "SET", "no count without the capability");
    assert_eq!(sets(&old), 500);
    assert_eq!(old.len(), 501);

    let new = raw_copy(&primary, &[b"nvkv-stream-1", b"nvkv-copy-keys"]);
    assert_eq!(new[0], ["REPLCONF", "COPY-KEYS", "500"]);
    assert_eq!(sets(&new), 500);
    assert_eq!(new.len(), 502);

    // A replica says it, takes the count and the keys.
    let rd = tempfile::tempdir().unwrap();
    let replica = replica_of(rd.path(), &primary, &[]);
    converge(&primary, &replica);
    assert_eq!(dbsize(&mut replica.client()), 500);
    replica.stop();
    primary.stop();
}

/// A replica takes a full copy's key count from its primary; a count
/// that is not a number drops the link, and a full copy follows.
#[test]
fn a_replica_takes_the_copy_key_count_and_drops_a_bad_one() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rd = tempfile::tempdir().unwrap();
    let replica = Server::start(rd.path(), &["--replicaof", &format!("127.0.0.1 {port}")]);
    let mut r = replica.client();
    let id = "b".repeat(40);
    let set = |k: &str| common::encode(&[b"SET", k.as_bytes(), b"1"]);
    let end = common::encode(&[b"REPLCONF", b"SNAPSHOT-END"]);
    let count = |n: &[u8]| common::encode(&[b"REPLCONF", b"COPY-KEYS", n]);

    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"]);
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&[count(b"1"), set("x")].concat()).unwrap();
    s.write_all(&[count(b"abc"), set("y"), end.clone()].concat())
        .unwrap();
    let (mut s, psync) = accept_replica(&listener);
    assert_eq!(psync, ["?", "-1"], "a bad count fails the copy");
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&[count(b"2"), set("a"), set("b"), end].concat())
        .unwrap();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    wait_value(&mut r, "b", Some("1"));
    assert_eq!(dbsize(&mut r), 2, "the last full copy's keys");
    let log = replica.log.lock().unwrap().clone();
    assert!(log.contains("full copy applied keys=2"), "{log}");
    assert!(log.contains("the copy's key count is not a count"), "{log}");
    drop(s);
    replica.stop();
}

/// A replica that speaks another version of the stream is refused with
/// an error that says so, and a replica of a Redis says that it got an RDB
/// file.
#[test]
fn a_replica_of_another_stream_version_or_of_a_redis_gets_a_clear_error() {
    let pd = tempfile::tempdir().unwrap();
    let primary = Server::start(pd.path(), &[]);
    let mut s = common::raw(&primary);
    use std::io::Write;
    s.write_all(&common::encode(&[b"REPLCONF", b"capa", b"nvkv-stream-2"]))
        .unwrap();
    assert_eq!(common::read_line(&mut s), "+OK");
    s.write_all(&common::encode(&[b"PSYNC", b"?", b"-1"]))
        .unwrap();
    let err = common::read_line(&mut s);
    assert!(
        err.starts_with("-ERR this primary speaks nvkv-stream-1, the replica nvkv-stream-2"),
        "{err}"
    );
    primary.stop();

    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let rd = tempfile::tempdir().unwrap();
    let (host, port) = redis.addr.split_once(':').unwrap();
    let replica = Server::start(rd.path(), &["--replicaof", &format!("{host} {port}")]);
    wait_for("the replica's error", || {
        let log = replica.log.lock().unwrap();
        log.contains("the primary sent an RDB file: it is not an nvkv server")
            && log.contains("retrying in 1 s")
    });
    assert_ne!(link_state(&mut replica.client()), "connected");
    replica.stop();
}

/// REPLICAOF of itself, and of a host where nothing listens: Redis's
/// reply (+OK), then a link that retries and logs why.
#[test]
fn replicaof_itself_or_an_unreachable_host_answers_ok_and_retries() {
    let rd = tempfile::tempdir().unwrap();
    let srv = Server::start(rd.path(), &[]);
    let mut c = srv.client();
    let port = srv.addr.port();
    let ours: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query(&mut c)
        .unwrap();
    if let Some(redis) = RealRedis::start(&[]) {
        let (host, rport) = redis.addr.split_once(':').unwrap();
        let theirs: String = redis::cmd("REPLICAOF")
            .arg(host)
            .arg(rport)
            .query(&mut redis.client())
            .unwrap();
        assert_eq!(ours, theirs);
    }
    assert_eq!(ours, "OK");
    wait_for("the link's error logged", || {
        let log = srv.log.lock().unwrap();
        log.contains("NOMASTERLINK Can't SYNC while not connected with my master")
            && log.contains("retrying in 1 s")
    });
    assert_ne!(link_state(&mut c), "connected");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ours: String = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(closed)
        .query(&mut c)
        .unwrap();
    assert_eq!(ours, "OK");
    wait_for("the refused connection logged", || {
        let log = srv.log.lock().unwrap();
        log.contains(&format!("port={closed}")) && log.contains("Connection refused")
    });
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .unwrap();
    srv.stop();
}

/// While a full copy loads, a replica answers what needs the data set
/// with Redis's -LOADING (ROLE, INFO and the like still work); once the
/// copy is through, it serves it.
#[test]
fn a_replica_loading_a_full_copy_answers_loading() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rd = tempfile::tempdir().unwrap();
    let replica = Server::start(rd.path(), &["--replicaof", &format!("127.0.0.1 {port}")]);
    let mut r = replica.client();
    let (mut s, _) = accept_replica(&listener);
    let id = "b".repeat(40);
    s.write_all(format!("+FULLRESYNC {id} 0\r\n").as_bytes())
        .unwrap();
    s.write_all(&common::encode(&[b"SET", b"k", b"v"])).unwrap();
    wait_for("-LOADING", || {
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg("k").query(&mut r);
        matches!(&got, Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError)
    });
    let mut raw = common::raw(&replica);
    raw.write_all(&common::encode(&[b"DBSIZE"])).unwrap();
    assert_eq!(
        common::read_line(&mut raw),
        "-LOADING Redis is loading the dataset in memory"
    );
    // Commands flagged `loading` (ROLE, INFO, CONFIG, …) still work; PING
    // is not one, in Redis either.
    assert_eq!(link_state(&mut r), "sync");
    assert!(info_fields(&mut r).contains(&("master_sync_in_progress".into(), "1".into())));
    let loading = |r: &mut redis::Connection| -> String {
        let info: String = redis::cmd("INFO").arg("persistence").query(r).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("loading:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(loading(&mut r), "1");
    // So do CONFIG's and CLIENT's subcommands flagged `loading` (Sentinel
    // sends CONFIG REWRITE and CLIENT KILL in one MULTI with REPLICAOF).
    let _: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut r)
        .unwrap();
    let _: String = redis::cmd("CLIENT").arg("LIST").query(&mut r).unwrap();
    raw.write_all(&common::encode(&[b"PING"])).unwrap();
    assert_eq!(
        common::read_line(&mut raw),
        "-LOADING Redis is loading the dataset in memory"
    );
    s.write_all(&common::encode(&[b"REPLCONF", b"SNAPSHOT-END"]))
        .unwrap();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    assert_eq!(get(&mut r, "k"), Some("v".into()));
    assert_eq!(loading(&mut r), "0");
    drop(s);
    replica.stop();
}

/// PSYNC2: a replica promoted with REPLICAOF NO ONE continues its old
/// primary's stream under a new id (INFO's master_replid2 and
/// second_repl_offset, as Redis's), so the other replica of that primary
/// resumes from it instead of taking a full copy.
#[test]
fn after_a_promotion_the_other_replica_resumes_from_the_promoted_one() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let primary = Server::start(dirs[0].path(), &[]);
    let r1 = replica_of(dirs[1].path(), &primary, &[]);
    let r2 = replica_of(dirs[2].path(), &primary, &[]);
    let mut p = primary.client();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut p)
            .unwrap();
    }
    converge(&primary, &r1);
    converge(&primary, &r2);
    let field = |con: &mut redis::Connection, k: &str| {
        info_fields(con)
            .into_iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("INFO has no {k}"))
    };
    let old_id = field(&mut p, "master_replid");
    let old_end: u64 = field(&mut p, "master_repl_offset").parse().unwrap();
    drop(p);
    primary.stop();

    let (mut c1, mut c2) = (r1.client(), r2.client());
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c1)
        .unwrap();
    assert_eq!(field(&mut c1, "master_replid2"), old_id);
    assert_eq!(
        field(&mut c1, "second_repl_offset"),
        (old_end + 1).to_string()
    );
    let new_id = field(&mut c1, "master_replid");
    assert_ne!(new_id, old_id);

    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(r1.addr.port())
        .query(&mut c2)
        .unwrap();
    wait_for("r2 follows r1", || link_state(&mut c2) == "connected");
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("x")
        .query(&mut c1)
        .unwrap();
    converge(&r1, &r2);
    let log = r2.log.lock().unwrap().clone();
    assert_eq!(
        log.matches("full copy from the primary").count(),
        1,
        "only the first sync was a full copy:\n{log}"
    );
    assert!(log.contains("resuming the primary's stream"), "{log}");
    assert_eq!(field(&mut c2, "master_replid"), new_id);
    r2.stop();
    r1.stop();
}

/// Values larger than a segment (stored in pieces) reach a replica by the
/// full copy and by the stream: SET, PEXPIRE, PERSIST, DEL, and RENAME and
/// COPY of them (read whole and sent as SET: the stream carries keys'
/// states).
#[test]
fn large_values_reach_a_replica_by_copy_and_by_stream() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    let big = |n: u8, len: usize| -> Vec<u8> { (0..len).map(|i| (i as u8) ^ n).collect() };
    let set = |p: &mut redis::Connection, k: &str, v: Vec<u8>| {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(p).unwrap();
    };
    set(&mut p, "before", big(1, 5 << 20));
    let replica = replica_of(rd.path(), &primary, &[]);
    converge(&primary, &replica);
    set(&mut p, "after", big(2, 3 << 20));
    set(&mut p, "kept", big(4, 3 << 20));
    let n: i64 = redis::cmd("PEXPIRE")
        .arg("after")
        .arg(600_000)
        .query(&mut p)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("PEXPIRE")
        .arg("kept")
        .arg(600_000)
        .query(&mut p)
        .unwrap();
    assert_eq!(n, 1);
    let n: i64 = redis::cmd("PERSIST").arg("kept").query(&mut p).unwrap();
    assert_eq!(n, 1);
    set(&mut p, "dropped", big(3, 4 << 20));
    let n: i64 = redis::cmd("DEL").arg("dropped").query(&mut p).unwrap();
    assert_eq!(n, 1);
    set(&mut p, "moved", big(5, 3 << 20));
    for cmd in [["COPY", "moved", "copied"], ["RENAME", "moved", "renamed"]] {
        let _: redis::Value = redis::cmd(cmd[0])
            .arg(cmd[1])
            .arg(cmd[2])
            .query(&mut p)
            .unwrap();
    }
    converge(&primary, &replica);
    let mut r = replica.client();
    for (k, v) in [
        ("renamed", big(5, 3 << 20)),
        ("copied", big(5, 3 << 20)),
        ("before", big(1, 5 << 20)),
        ("after", big(2, 3 << 20)),
        ("kept", big(4, 3 << 20)),
    ] {
        let got: Option<Vec<u8>> = redis::cmd("GET").arg(k).query(&mut r).unwrap();
        assert_eq!(got.as_deref(), Some(&v[..]), "{k}");
    }
    let ttl: i64 = redis::cmd("PTTL").arg("after").query(&mut r).unwrap();
    assert!(ttl > 0, "{ttl}");
    let ttl: i64 = redis::cmd("PTTL").arg("kept").query(&mut r).unwrap();
    assert_eq!(ttl, -1);
    let n: i64 = redis::cmd("EXISTS")
        .arg("moved")
        .arg("dropped")
        .query(&mut r)
        .unwrap();
    assert_eq!(n, 0);
    // Values larger than the backlog (1 MiB) went by the stream, held for
    // the replica being fed: one full copy, the first.
    let copies = primary
        .log
        .lock()
        .unwrap()
        .matches("full copy to a replica")
        .count();
    assert_eq!(copies, 1, "{}", primary.log.lock().unwrap());
    replica.stop();
    primary.stop();
}

/// The size of key `i`'s value in the copy test: 1 byte to 1 MiB, and a
/// few of 3 MiB (larger than the tests' 2 MiB segments: in pieces).
fn copy_size(i: usize) -> usize {
    if i % 500 == 7 {
        return 3 << 20;
    }
    match i % 50 {
        0 => 1 << 20,
        n if n % 4 == 0 => 1,
        n if n % 4 == 1 => 1000,
        n if n % 4 == 2 => 4096,
        _ => 70_000,
    }
}

/// A full copy read by the pollers in steps (values and expiries with the
/// keys): keys with and without a TTL, values from 1 byte to 3 MiB (in pieces), keys
/// that expire before the copy, while a writer overwrites, deletes and
/// re-expires keys. Once the link is up and the writer stopped, the
/// replica holds exactly the primary's keys, values and absolute expiries.
#[test]
fn a_full_copy_of_every_size_with_ttls_while_a_writer_runs_converges() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let mut p = primary.client();
    let keys = 1500;
    for i in 0..keys {
        let v = vec![b'a' + (i % 26) as u8; copy_size(i)];
        let mut set = redis::cmd("SET");
        set.arg(format!("c{i}")).arg(v);
        if i % 3 == 0 {
            set.arg("PX").arg(600_000 + i);
        }
        let _: () = set.query(&mut p).unwrap();
    }
    for i in 0..50 {
        // Expired before the copy reads them: never sent.
        let _: () = redis::cmd("SET")
            .arg(format!("gone{i}"))
            .arg("x")
            .arg("PX")
            .arg(1)
            .query(&mut p)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let mut w = primary.client();
        std::thread::spawn(move || {
            let mut n = 0usize;
            // Bounded: stops when told, or after this many writes.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                let i = (n * 7919) % keys;
                match n % 4 {
                    0 => {
                        let v = vec![b'A' + (n % 26) as u8; copy_size(n)];
                        let _: () = redis::cmd("SET")
                            .arg(format!("c{i}"))
                            .arg(v)
                            .query(&mut w)
                            .unwrap();
                    }
                    1 => {
                        let _: i64 = redis::cmd("DEL")
                            .arg(format!("c{i}"))
                            .query(&mut w)
                            .unwrap();
                    }
                    2 => {
                        let _: i64 = redis::cmd("PEXPIRE")
                            .arg(format!("c{i}"))
                            .arg(900_000 + n)
                            .query(&mut w)
                            .unwrap();
                    }
                    _ => {
                        let _: () = redis::cmd("SET")
                            .arg(format!("new{n}"))
                            .arg(n)
                            .arg("PX")
                            .arg(700_000)
                            .query(&mut w)
                            .unwrap();
                    }
                }
                n += 1;
            }
            n
        })
    };
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut r = replica.client();
    // Bounded (a hang fails), generously: debug builds on a loaded machine
    // copy slowly while the writer runs.
    let t0 = Instant::now();
    while link_state(&mut r) != "connected" {
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "the copy did not end; primary's log:\n{}\nreplica's log:\n{}",
            primary.log.lock().unwrap(),
            replica.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    converge(&primary, &replica);
    // Keys the primary has expired but not reaped yet count in its DBSIZE
    // until it does (and sends their DEL).
    wait_for("the same DBSIZE", || dbsize(&mut r) == dbsize(&mut p));
    let none: Option<Vec<u8>> = redis::cmd("GET").arg("gone0").query(&mut r).unwrap();
    assert_eq!(none, None);
    assert!(primary.log.lock().unwrap().contains("full copy sent"));
    // The copy's SCAN option is the primary's own: a client's is refused
    // as Redis refuses an unknown SCAN option.
    let refused: redis::RedisResult<Value> =
        redis::cmd("SCAN").arg(0).arg("REPLCOPY").query(&mut p);
    assert_eq!(refused.unwrap_err().detail(), Some("syntax error"));
    replica.stop();
    primary.stop();
}

/// A replica killed -9 in the middle of a full copy comes back, does a
/// full copy again (what it had applied of the first is dropped, not
/// resumed from) and ends with exactly the primary's keys.
#[test]
fn a_replica_killed_during_a_full_copy_copies_again_in_full() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    // Enough to take the copy a while: 20,000 keys of 4 KiB.
    let value = vec![b'v'; 4096];
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.cmd("SET").arg(format!("k{i}")).arg(&value).ignore();
        }
        let _: () = pipe.query(&mut p).unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("EX")
        .arg(1000)
        .query(&mut p)
        .unwrap();
    let replica = replica_of(rd.path(), &primary, &[]);
    wait_for("the replica's full copy begins", || {
        replica
            .log
            .lock()
            .unwrap()
            .contains("full copy from the primary")
    });
    let log = replica.log.clone();
    replica.kill();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !log.lock().unwrap().contains("full copy applied"),
        "the copy ended before the kill: nothing tested"
    );
    // Meanwhile the primary changes some keys.
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("after the kill")
            .query(&mut p)
            .unwrap();
    }
    let _: i64 = redis::cmd("DEL").arg("k100").query(&mut p).unwrap();
    let replica = replica_of(rd.path(), &primary, &[]);
    let mut r = replica.client();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let log = replica.log.lock().unwrap().clone();
    assert!(
        log.contains("full copy from the primary")
            && !log.contains("resuming the primary's stream"),
        "{log}"
    );
    converge(&primary, &replica);
    assert_eq!(dbsize(&mut r), dbsize(&mut p));
    replica.stop();
    primary.stop();
}

/// Where `needle` is in the first 64 MiB of `path`.
fn find_in_file(path: &std::path::Path, needle: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 64 << 20];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    let first = needle[0];
    (0..got.saturating_sub(needle.len()))
        .filter(|&i| buf[i] == first)
        .find(|&i| &buf[i..i + needle.len()] == needle)
        .map(|i| i as u64)
}

/// A key that expires on the primary, whose record fails its check when
/// read back for its name, can have no DEL in the stream: the primary
/// starts its stream again under a new id, its replica syncs again in
/// full, and ends without the key (Redis never loses such a DEL).
#[test]
fn a_gone_key_whose_record_fails_its_check_makes_the_replica_copy_again() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = "gone-key-whose-name-is-lost-7f3a9c";
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    let _: () = redis::cmd("SET")
        .arg("stays")
        .arg("v")
        .query(&mut p)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(name)
        .arg("v")
        .arg("PX")
        .arg(10_000)
        .query(&mut p)
        .unwrap();
    primary.stop();
    // Restarted, the primary has the key's record on the device only (in
    // no segment buffer): its name takes a device read when it expires.
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    let replica = replica_of(rd.path(), &primary, &[]);
    let mut r = replica.client();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    assert_eq!(dbsize(&mut r), 2);
    let first_id = info_fields(&mut p)
        .into_iter()
        .find(|(k, _)| k == "master_replid")
        .unwrap()
        .1;
    // The record's key is damaged on the device: its check fails.
    let data = pd.path().join("data.nvkv");
    let at = find_in_file(&data, name.as_bytes()).expect("the key's record in the data file");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(b"G").unwrap();
        f.sync_all().unwrap();
    }
    wait_for("the primary expired the key", || dbsize(&mut p) == 1);
    wait_for("the replica without it", || {
        redis::cmd("DBSIZE").query::<i64>(&mut r).ok() == Some(1)
    });
    let plog = primary.log.lock().unwrap().clone();
    assert!(
        plog.contains("could not be read") && plog.contains("the replicas sync again in full"),
        "{plog}"
    );
    // Its link may still read "connected" before it sees the stream end:
    // the second copy's log line says it synced again.
    wait_for("the replica's second full copy", || {
        let rlog = replica.log.lock().unwrap();
        rlog.matches("full copy applied").count() >= 2
    });
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let rlog = replica.log.lock().unwrap().clone();
    assert_eq!(rlog.matches("full copy applied").count(), 2, "{rlog}");
    let second_id = info_fields(&mut p)
        .into_iter()
        .find(|(k, _)| k == "master_replid")
        .unwrap()
        .1;
    assert_ne!(first_id, second_id, "the stream goes on under a new id");
    converge(&primary, &replica);
    replica.stop();
    primary.stop();
}

/// A replica ignores its own maxmemory by default (Redis's
/// `replica-ignore-maxmemory yes`): with a maxmemory below its primary's
/// data it keeps every key, and evicts by its own policy only once told
/// not to ignore it. CONFIG GET and SET of the setting and of its alias
/// `slave-ignore-maxmemory` answer as Redis 7's.
#[test]
fn a_replica_ignores_its_maxmemory_by_default() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let replica = replica_of(
        rd.path(),
        &primary,
        &["--maxmemory-policy", "allkeys-random", "--maxmemory", "1M"],
    );
    let (mut p, mut r) = (primary.client(), replica.client());
    wait_for("the replica online", || link_state(&mut r) == "connected");
    let value = vec![b'x'; 10 << 10];
    let set = |p: &mut redis::Connection, i: usize| {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(&value)
            .query(p)
            .unwrap();
    };
    for i in 0..300 {
        set(&mut p, i);
    }
    converge(&primary, &replica);
    assert_eq!(dbsize(&mut r), 300, "3 MB of keys under a maxmemory of 1M");
    assert_eq!(stat(&replica, "evicted_keys"), 0);
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("replica-ignore-maxmemory")
        .query(&mut r)
        .unwrap();
    assert_eq!(got, ["replica-ignore-maxmemory", "yes"]);

    // Told to follow its maxmemory, it evicts as the primary's writes come.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slave-ignore-maxmemory")
        .arg("no")
        .query(&mut r)
        .unwrap();
    for i in 300..400 {
        set(&mut p, i);
    }
    wait_for("the replica evicted keys", || {
        stat(&replica, "evicted_keys") > 0
    });
    assert!(dbsize(&mut r) < dbsize(&mut p));
    assert!(replica
        .log
        .lock()
        .unwrap()
        .contains("a replica evicted keys by its own policy"));
    replica.stop();

    // The setting's CONFIG replies, beside Redis's.
    let Some(redis) = RealRedis::start(&[]) else {
        return primary.stop();
    };
    let mut rc = redis::Client::open(format!("redis://{}/", redis.addr))
        .unwrap()
        .get_connection()
        .unwrap();
    let steps: &[&[&str]] = &[
        &["CONFIG", "GET", "replica-ignore-maxmemory"],
        &["CONFIG", "GET", "slave-ignore-maxmemory"],
        &["CONFIG", "GET", "*ignore-maxmemory*"],
        &["CONFIG", "GET", "slave-ignore-maxmem*"],
        &["CONFIG", "SET", "slave-ignore-maxmemory", "no"],
        &["CONFIG", "GET", "replica-ignore-maxmemory"],
        &["CONFIG", "SET", "replica-ignore-maxmemory", "YES"],
        &["CONFIG", "GET", "slave-ignore-maxmemory"],
        &["CONFIG", "SET", "replica-ignore-maxmemory", "maybe"],
        &["CONFIG", "GET", "replica-ignore-maxmemory"],
    ];
    for step in steps {
        let ask = |con: &mut redis::Connection| {
            let mut cmd = redis::cmd(step[0]);
            for a in &step[1..] {
                cmd.arg(*a);
            }
            // Redis lists settings in its dictionary's order: compared
            // as sets of pairs.
            match cmd.query::<Value>(con).map_err(|e| e.to_string()) {
                Ok(Value::Array(a)) => {
                    let mut pairs: Vec<String> = a.chunks(2).map(|p| format!("{p:?}")).collect();
                    pairs.sort();
                    Ok(pairs)
                }
                other => other.map(|v| vec![format!("{v:?}")]),
            }
        };
        assert_eq!(ask(&mut p), ask(&mut rc), "{step:?}");
    }
    primary.stop();
}

/// A replica whose store is smaller than its primary's data (a device of
/// 8 MiB in segments of 256 KiB): its store fills although it ignores its
/// maxmemory.
fn small_replica(dir: &std::path::Path, primary: &Server, policy: &str) -> Server {
    common::create_store(
        dir,
        &[
            "--capacity",
            "8M",
            "--segment-size",
            "256K",
            "--shards",
            "2",
            "--partitions",
            "16",
        ],
    );
    replica_of(
        dir,
        primary,
        &[
            "--max-value-size",
            "150K",
            "--max-key-size",
            "1K",
            "--maxmemory-policy",
            policy,
        ],
    )
}

/// The primary writes `n` keys `{tag}{i}` of 10 KiB from `from` on.
fn fill(p: &mut redis::Connection, tag: &str, from: usize, n: usize) {
    let value = vec![b'x'; 10 << 10];
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("{tag}{i}"))
                .arg(&value)
                .ignore();
        }
        let _: () = pipe.query(p).unwrap();
    }
}

/// A full copy larger than the replica's device: the copy's records wait
/// for eviction to make room, as a client's writes do, and the copy goes
/// through with every key it did not evict.
#[test]
fn a_full_copy_onto_a_full_replica_device_evicts_by_its_policy() {
    let pd = tempfile::tempdir().unwrap();
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();
    // 16 MB of keys into 8 MiB.
    fill(&mut p, "k", 0, 1600);
    let rd = tempfile::tempdir().unwrap();
    let replica = small_replica(rd.path(), &primary, "allkeys-lru");
    let mut r = replica.client();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    wait_for("the replica holds every key it did not evict", || {
        dbsize(&mut r) + stat(&replica, "evicted_keys") as i64 == 1600
    });
    assert!(stat(&replica, "evicted_keys") > 0, "nothing evicted");
    assert!(dbsize(&mut r) > 0);
    let log = replica.log.lock().unwrap().clone();
    assert!(log.contains("full copy applied"), "{log}");
    assert!(!log.contains("of the full copy failed"), "{log}");
    // The stream after the copy lands too.
    fill(&mut p, "after", 0, 10);
    wait_for("the replica applied the stream", || {
        caught_up(&primary, &replica)
    });
    let last: Option<Vec<u8>> = redis::cmd("GET").arg("after9").query(&mut r).unwrap();
    assert_eq!(last, Some(vec![b'x'; 10 << 10]));
    replica.stop();
    primary.stop();
}

/// Whether the replica has applied the primary's stream up to the
/// primary's offset, with its link up.
fn caught_up(p: &Server, r: &Server) -> bool {
    r.info_field("master_link_status") == "up"
        && r.info_field("master_repl_offset") == p.info_field("master_repl_offset")
}

/// A replica whose device is truly full (its primary holds more than it
/// can), under `replica-ignore-maxmemory yes`: with an evicting policy it
/// evicts by it, says so in its log and in INFO, and goes on following
/// the stream; under noeviction the writes that find no room fail there,
/// each logged, and the ones after a DEL that made room land again.
/// Either way it keeps serving with its link up.
#[test]
fn a_replica_with_a_full_device_evicts_by_its_policy_or_logs_each_refused_write() {
    let pd = tempfile::tempdir().unwrap();
    let primary = Server::start(pd.path(), &[]);
    let mut p = primary.client();

    // An evicting policy: 16 MB of keys into 8 MiB.
    let rd = tempfile::tempdir().unwrap();
    let replica = small_replica(rd.path(), &primary, "allkeys-lru");
    let mut r = replica.client();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    fill(&mut p, "k", 0, 1600);
    wait_for("the replica applied the stream", || {
        caught_up(&primary, &replica)
    });
    assert_eq!(dbsize(&mut p), 1600);
    assert_eq!(stat(&primary, "evicted_keys"), 0);
    let evicted = stat(&replica, "evicted_keys");
    assert!(evicted > 0, "the full replica evicted nothing");
    assert_eq!(
        dbsize(&mut r),
        1600 - evicted as i64,
        "the replica holds every key it did not evict"
    );
    assert_eq!(link_state(&mut r), "connected");
    let _: () = redis::cmd("PING").query(&mut r).unwrap();
    // The last writes read back as the primary wrote them, or nil where
    // the replica evicted them (its LRU clock counts seconds, so keys
    // written within one are equally old to it and any may go).
    let mut present = 0;
    for i in 1550..1600 {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut r)
            .unwrap();
        if let Some(v) = v {
            assert!(v == vec![b'x'; 10 << 10], "k{i} differs from the primary's");
            present += 1;
        }
    }
    assert!(
        present > 0,
        "none of the last fifty writes is on the replica"
    );
    assert!(primary.info_field("slave0").contains("state=online"));
    let log = replica.log.lock().unwrap().clone();
    assert!(
        log.contains("a replica evicted keys by its own policy"),
        "{log}"
    );
    assert!(!log.contains("applying the primary's stream"), "{log}");
    replica.stop();
    let _: () = redis::cmd("FLUSHALL").query(&mut p).unwrap();

    // noeviction: the writes that find no room fail on the replica.
    let rd = tempfile::tempdir().unwrap();
    let replica = small_replica(rd.path(), &primary, "noeviction");
    let mut r = replica.client();
    wait_for("the replica online", || link_state(&mut r) == "connected");
    fill(&mut p, "k", 0, 1600);
    wait_for("the replica applied the stream", || {
        caught_up(&primary, &replica)
    });
    let held = dbsize(&mut r);
    assert!(held < 1600, "{held} keys of 10 KiB in 8 MiB");
    assert!(held > 0);
    assert_eq!(stat(&replica, "evicted_keys"), 0);
    assert_eq!(link_state(&mut r), "connected");
    let log = replica.log.lock().unwrap().clone();
    assert!(
        log.contains("applying the primary's stream: OOM"),
        "each refused write is logged:\n{log}"
    );
    // The primary's DELs make room: its next writes land again.
    let mut pipe = redis::pipe();
    for i in 0..1600 {
        pipe.cmd("DEL").arg(format!("k{i}")).ignore();
    }
    let _: () = pipe.query(&mut p).unwrap();
    wait_for("the DELs reached the replica", || dbsize(&mut r) == 0);
    fill(&mut p, "again", 0, 100);
    wait_for("the replica applied the stream", || {
        caught_up(&primary, &replica)
    });
    converge(&primary, &replica);
    replica.stop();
    primary.stop();
}

/// A primary whose small store fills with transactions across its two
/// pollers (each setting a counter's keys on both, and adding 1.5 MiB
/// values on one), while a replica is fed: a transaction one of whose
/// parts is refused for room puts nothing in the stream, so the replica,
/// as the primary, holds every counter's keys equal, at the value of the
/// last transaction acknowledged.
#[test]
fn a_transaction_refused_for_room_reaches_no_replica() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    common::create_store(pd.path(), &["--capacity", "64M"]);
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    let mut p = primary.client();
    let _: () = redis::cmd("SET").arg("start").arg(1).query(&mut p).unwrap();
    converge(&primary, &replica);
    let b = (1..64)
        .map(|i| format!("t{i}"))
        .find(|t| apart(&primary, "{t0}x", &format!("{{{t}}}x")))
        .expect("two tags on two pollers");
    let (ka, kb) = ("{t0}c".to_string(), format!("{{{b}}}c"));
    let value = vec![b'v'; 3 << 19];
    let (mut applied, mut refused, mut in_a_row) = (None, 0, 0);
    for i in 0..300u64 {
        let fills: Vec<String> = (0..1 + i % 3).map(|j| format!("{{{b}}}f{i}-{j}")).collect();
        let result: redis::RedisResult<()> = if i % 2 == 0 {
            // MULTI … EXEC by hand: the crate's pipeline hides EXEC's error.
            let _: () = redis::cmd("MULTI").query(&mut p).unwrap();
            let sets = [
                (&ka, i.to_string().into_bytes()),
                (&kb, i.to_string().into_bytes()),
            ];
            let fill = fills.iter().map(|f| (f, value.clone()));
            for (k, v) in sets.into_iter().chain(fill) {
                let q: String = redis::cmd("SET").arg(k).arg(v).query(&mut p).unwrap();
                assert_eq!(q, "QUEUED");
            }
            redis::cmd("EXEC").query::<Value>(&mut p).map(drop)
        } else {
            let mut mset = redis::cmd("MSET");
            mset.arg(&ka).arg(i).arg(&kb).arg(i);
            for f in &fills {
                mset.arg(f).arg(&value);
            }
            mset.query(&mut p)
        };
        match result {
            Ok(()) => {
                applied = Some(i.to_string());
                in_a_row = 0;
            }
            Err(e) => {
                assert_eq!(e.code(), Some("OOM"), "transaction {i}: {e}");
                refused += 1;
                in_a_row += 1;
                if in_a_row == 10 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "the store never filled");
    converge(&primary, &replica);
    for srv in [&primary, &replica] {
        let mut con = srv.client();
        assert_eq!(get(&mut con, &ka), applied);
        assert_eq!(get(&mut con, &kb), applied);
    }
    replica.stop();
    primary.stop();
}

/// A large SET arrives a piece at a time; a replica attaches while it
/// does, so the pieces sent before were not kept for the stream. The SET
/// is still written and acknowledged (as Redis would), and the replica,
/// copying in full again, gets it.
#[test]
fn a_large_set_arriving_while_a_replica_attaches_is_written_and_reaches_it() {
    use std::io::{Read, Write};
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &[]);
    let v: Vec<u8> = (0..24usize << 20).map(|i| (i % 251) as u8).collect();
    let mut s = std::net::TcpStream::connect(primary.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let header = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", v.len());
    s.write_all(header.as_bytes()).unwrap();
    s.write_all(&v[..v.len() / 2]).unwrap();
    // Pieces of it are on the device before the replica comes.
    wait_for("pieces written before the replica attaches", || {
        stat(&primary, "large_piece_bytes_written") >= v.len() as u64 / 4
    });
    let replica = replica_of(rd.path(), &primary, &[]);
    wait_for("the replica online", || {
        stat(&primary, "connected_slaves") == 1 && link_state(&mut replica.client()) == "connected"
    });
    s.write_all(&v[v.len() / 2..]).unwrap();
    s.write_all(b"\r\n").unwrap();
    let mut got = [0u8; 5];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"+OK\r\n", "the SET's reply");
    let back: Option<Vec<u8>> = redis::cmd("GET")
        .arg("big")
        .query(&mut primary.client())
        .unwrap();
    assert!(
        back.as_deref() == Some(&v[..]),
        "the primary's value differs"
    );
    converge(&primary, &replica);
    let copies = primary
        .log
        .lock()
        .unwrap()
        .matches("full copy to a replica")
        .count();
    assert_eq!(copies, 2, "{}", primary.log.lock().unwrap());
    replica.stop();
    primary.stop();
}

/// A primary with two pollers whose poller 1 fails every device write,
/// and a replica fed meanwhile: transactions across both pollers (EXEC
/// and MSET) fail on poller 1, their part on poller 0 is undone, and
/// nothing of them (nor of the undo) reaches the replica: a reader there
/// never sees the two counters differ, and once a later write has come,
/// the replica holds what the primary holds, every key as before.
#[test]
fn a_transaction_whose_commit_fails_on_one_poller_reaches_no_replica() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--io-threads", "2"]);
    let mut p = primary.client();
    let b = (1..64)
        .map(|i| format!("t{i}"))
        .find(|t| apart(&primary, "{t0}x", &format!("{{{t}}}x")))
        .expect("two tags on two pollers");
    let tags = ["t0".to_string(), b];
    let keys = |name: &str| {
        tags.iter()
            .map(|t| format!("{{{t}}}{name}"))
            .collect::<Vec<_>>()
    };
    for (k, old) in keys("c").into_iter().zip(["0", "0"]) {
        let _: () = redis::cmd("SET").arg(k).arg(old).query(&mut p).unwrap();
    }
    for k in keys("old") {
        let _: () = redis::cmd("SET").arg(k).arg("old").query(&mut p).unwrap();
    }
    drop(p);
    primary.stop();
    let primary = Server::start(
        pd.path(),
        &["--io-threads", "2", "--inject-faults", "write-eio@1+:1"],
    );
    let replica = replica_of(rd.path(), &primary, &["--io-threads", "2"]);
    converge(&primary, &replica);
    let mut p = primary.client();
    let set = |p: &mut redis::Connection, k: &str| -> bool {
        redis::cmd("SET").arg(k).arg(1).query::<()>(p).is_ok()
    };
    let good = tags
        .iter()
        .find(|t| set(&mut p, &format!("{{{t}}}probe")))
        .expect("a poller whose writes succeed")
        .clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, counters) = (Arc::clone(&stop), keys("c"));
        let mut r = replica.client();
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&counters).query(&mut r).unwrap();
                assert_eq!(v[0], v[1], "the replica holds part of a transaction");
                assert_eq!(
                    v[0].as_deref(),
                    Some("0"),
                    "the replica holds a failed transaction"
                );
                seen += 1;
            }
            seen
        })
    };
    let (counters, olds) = (keys("c"), keys("old"));
    for i in 1..=20u64 {
        let result: redis::RedisResult<()> = if i % 2 == 0 {
            let _: () = redis::cmd("MULTI").query(&mut p).unwrap();
            for k in &counters {
                let q: String = redis::cmd("SET").arg(k).arg(i).query(&mut p).unwrap();
                assert_eq!(q, "QUEUED");
            }
            for k in &olds {
                let q: String = redis::cmd("DEL").arg(k).query(&mut p).unwrap();
                assert_eq!(q, "QUEUED");
            }
            redis::cmd("EXEC").query::<Value>(&mut p).map(drop)
        } else {
            let mut mset = redis::cmd("MSET");
            for k in counters.iter().chain(&olds) {
                mset.arg(k).arg(i);
            }
            mset.query(&mut p)
        };
        let e = result.expect_err("a transaction whose commit fails on one poller");
        assert!(e.to_string().contains("I/O error"), "transaction {i}: {e}");
    }
    // A later write on the poller that works: once it is on the replica,
    // so would the transactions' parts there be.
    let marker = format!("{{{good}}}marker");
    assert!(set(&mut p, &marker));
    wait_value(&mut replica.client(), &marker, Some("1"));
    converge(&primary, &replica);
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    for srv in [&primary, &replica] {
        let mut con = srv.client();
        for k in &counters {
            assert_eq!(get(&mut con, k).as_deref(), Some("0"), "{k}");
        }
        for k in &olds {
            assert_eq!(get(&mut con, k).as_deref(), Some("old"), "{k}");
        }
    }
    replica.stop();
    primary.kill();
}
