//! Key iteration and flushing: SCAN (through the `redis` crate's
//! `scan_iter`, raw cursors, MATCH, COUNT, TYPE, and while keys are added
//! and the index grows), KEYS, RANDOMKEY, FLUSHDB and FLUSHALL (syntax and
//! errors compared byte for byte with a real redis-server where one is
//! installed; a kill -9 after a flush), and `redis-cli --scan`.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{dbsize, Both, RealRedis, Server};

/// Sets `keys` (value: the key), pipelined.
fn set_all(con: &mut redis::Connection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("SET").arg(k).arg(k).ignore();
        }
        p.query::<()>(con).expect("SET pipeline");
    }
}

/// One SCAN step: the next cursor and the keys.
fn scan_step(con: &mut redis::Connection, cursor: u64, opts: &[&str]) -> (u64, Vec<String>) {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor);
    for o in opts {
        cmd.arg(*o);
    }
    let (next, keys): (String, Vec<String>) = cmd.query(con).expect("SCAN");
    (next.parse().expect("a cursor"), keys)
}

/// Every key a full iteration with raw cursors returns, and its steps.
fn scan_all(con: &mut redis::Connection, opts: &[&str]) -> (Vec<String>, u64) {
    let (mut cursor, mut all, mut steps) = (0, Vec::new(), 0);
    loop {
        let (next, keys) = scan_step(con, cursor, opts);
        all.extend(keys);
        steps += 1;
        assert!(steps < 1_000_000, "the iteration does not end");
        if next == 0 {
            return (all, steps);
        }
        cursor = next;
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn scan_returns_every_key_with_scan_iter_and_raw_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(scan_all(&mut con, &[]).0, Vec::<String>::new());
    let keys = names("k:", 3000);
    set_all(&mut con, &keys);
    let want: HashSet<String> = keys.iter().cloned().collect();

    let it: Vec<String> = redis::Cmd::new()
        .arg("SCAN")
        .cursor_arg(0)
        .clone()
        .iter(&mut con)
        .expect("scan_iter")
        .collect();
    assert_eq!(it.iter().cloned().collect::<HashSet<_>>(), want);
    let via_crate: HashSet<String> = redis::Commands::scan::<String>(&mut con)
        .expect("scan")
        .collect();
    assert_eq!(via_crate, want);

    // Raw cursors, COUNT as a hint: each key once (nothing moves here).
    for count in ["1", "10", "1000", "100000"] {
        let (all, steps) = scan_all(&mut con, &["COUNT", count]);
        assert_eq!(all.len(), keys.len(), "COUNT {count}: each key once");
        assert_eq!(all.into_iter().collect::<HashSet<_>>(), want);
        if count == "100000" {
            // One step per partition at most.
            assert!(steps <= 256, "{steps} steps");
        }
    }
    // MATCH, with and without COUNT; TYPE.
    let (ones, _) = scan_all(&mut con, &["MATCH", "k:1*", "COUNT", "100"]);
    let want_ones: HashSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("k:1"))
        .cloned()
        .collect();
    assert_eq!(ones.into_iter().collect::<HashSet<_>>(), want_ones);
    let (exact, _) = scan_all(&mut con, &["MATCH", "k:2999"]);
    assert_eq!(exact, ["k:2999"]);
    let (strings, _) = scan_all(&mut con, &["TYPE", "STRING", "COUNT", "500"]);
    assert_eq!(strings.len(), keys.len());
    let (hashes, _) = scan_all(&mut con, &["TYPE", "hash", "COUNT", "500"]);
    assert!(hashes.is_empty());
    let (all, _) = scan_all(&mut con, &["MATCH", "*", "TYPE", "string", "COUNT", "700"]);
    assert_eq!(all.len(), keys.len());

    // Deleted and expired keys are not returned.
    let _: () = redis::cmd("DEL")
        .arg("k:0")
        .arg("k:1")
        .query(&mut con)
        .unwrap();
    for k in ["k:2", "k:3"] {
        let _: () = redis::cmd("PEXPIRE").arg(k).arg(1).query(&mut con).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (all, _) = scan_all(&mut con, &["COUNT", "1000"]);
    let got: HashSet<String> = all.into_iter().collect();
    assert_eq!(got.len(), keys.len() - 4);
    for k in ["k:0", "k:1", "k:2", "k:3"] {
        assert!(!got.contains(k), "{k} is gone");
    }
    srv.stop();
}

/// Bytes of the index files: they grow as partitions do.
fn index_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn scan_returns_every_key_present_throughout_while_the_index_grows() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let base = names("base:", 4000);
    set_all(&mut con, &base);
    // Keys deleted during the iteration: backward-shift deletions move
    // entries in the tables.
    let doomed = names("doomed:", 2000);
    set_all(&mut con, &doomed);
    let before = index_bytes(dir.path());
    let mut seen = HashSet::new();
    let (mut cursor, mut added, mut steps) = (0u64, 0usize, 0);
    loop {
        let (next, keys) = scan_step(&mut con, cursor, &["COUNT", "20"]);
        seen.extend(keys);
        steps += 1;
        // 60 new keys per step: the tables grow several times over.
        let fresh: Vec<String> = (added..added + 60).map(|i| format!("new:{i}")).collect();
        set_all(&mut con, &fresh);
        added += 60;
        if steps <= doomed.len() / 4 {
            let mut del = redis::cmd("DEL");
            for k in &doomed[(steps - 1) * 4..steps * 4] {
                del.arg(k);
            }
            let _: i64 = del.query(&mut con).unwrap();
        }
        if next == 0 {
            break;
        }
        assert!(steps < 100_000);
        cursor = next;
    }
    let after = index_bytes(dir.path());
    assert!(
        after >= 4 * before,
        "the index grew during the scan: {before} -> {after} bytes, {added} keys added"
    );
    for k in &base {
        assert!(
            seen.contains(k),
            "{k}, present throughout, was not returned"
        );
    }
    srv.stop();
}

/// A reply that is an array of bulk strings, compared as a sorted list
/// (KEYS has no order).
fn check_set(b: &mut Both, args: &[&str]) -> Vec<String> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let ours = sorted_bulks(&b.ours.call(&args));
    let theirs = sorted_bulks(&b.theirs.call(&args));
    assert_eq!(ours, theirs, "{args:?}");
    ours
}

fn sorted_bulks(reply: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(reply);
    assert!(text.starts_with('*'), "not an array: {text:?}");
    let mut v: Vec<String> = text
        .split("\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| c[1].to_string())
        .collect();
    v.sort();
    v
}

/// RANDOMKEY sees the writes pipelined before it, as Redis's does: on an
/// empty store, after a SET in the same pipeline, it answers that key
/// (before, nil: the key counts it weighed the pollers by were read
/// when the command came); after DELs that leave one key, on one poller
/// or two, plainly and inside MULTI … EXEC, it answers that key (before,
/// nil when the poller it chose had no key left). Replies compared byte
/// for byte with redis-server's.
#[test]
fn randomkey_sees_the_writes_pipelined_before_it() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let mut b = Both::connect(&srv, &redis);
        for round in 0..40 {
            let key = format!("k{round}");
            let set: &[&[u8]] = &[b"SET", key.as_bytes(), b"v"];
            let both = |b: &mut Both, cmds: &[&[&[u8]]]| {
                let ours = b.ours.pipeline(cmds);
                let theirs = b.theirs.pipeline(cmds);
                assert_eq!(
                    ours.escape_ascii().to_string(),
                    theirs.escape_ascii().to_string(),
                    "{pollers} poller(s), round {round}"
                );
            };
            both(&mut b, &[&[b"FLUSHALL"], set, &[b"RANDOMKEY"]]);
            let keys: Vec<String> = (0..8).map(|i| format!("r{round}:{i}")).collect();
            let mut mset: Vec<&[u8]> = vec![b"MSET"];
            let mut del: Vec<&[u8]> = vec![b"DEL"];
            for (i, k) in keys.iter().enumerate() {
                mset.extend([k.as_bytes(), b"v"]);
                if i > 0 {
                    del.push(k.as_bytes());
                }
            }
            both(&mut b, &[&[b"FLUSHALL"], &mset, &del, &[b"RANDOMKEY"]]);
            both(
                &mut b,
                &[
                    &[b"FLUSHALL"],
                    &mset,
                    &[b"MULTI"],
                    &del,
                    &[b"RANDOMKEY"],
                    &[b"EXEC"],
                ],
            );
        }
        srv.stop();
    }
}

#[test]
fn keys_randomkey_and_errors_match_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let mut b = Both::connect(&srv, &redis);
    b.check_str(&["RANDOMKEY"]);
    b.check_str(&["KEYS", "*"]);
    let keys = [
        "user:1",
        "user:2",
        "user:10",
        "user:x",
        "hello",
        "hallo",
        "hxllo",
        "heeeello",
        "a*b",
        "a[b",
        "ab",
        "key with space",
        "ключ",
        "",
    ];
    for k in keys {
        b.check_str(&["SET", k, "v"]);
    }
    for i in 0..300 {
        b.check_str(&["SET", &format!("bulk:{i}"), "v"]);
    }
    for p in [
        "*",
        "user:*",
        "user:?",
        "h?llo",
        "h*llo",
        "h[ae]llo",
        "h[^e]llo",
        "h[a-b]llo",
        "a\\*b",
        "a[[]b",
        "*:1*",
        "nomatch*",
        "",
        "bulk:2??",
        "ключ",
        "[",
    ] {
        check_set(&mut b, &["KEYS", p]);
    }
    // RANDOMKEY returns a key that exists.
    for _ in 0..20 {
        let r = b.ours.call(&[b"RANDOMKEY"]);
        let text = String::from_utf8_lossy(&r).to_string();
        let key = text
            .split("\r\n")
            .nth(1)
            .expect("a bulk string")
            .to_string();
        let exists = b.ours.call(&[b"EXISTS", key.as_bytes()]);
        assert_eq!(exists, b":1\r\n", "RANDOMKEY gave {key:?}");
    }
    // Arity and syntax errors.
    for args in [
        &["KEYS"][..],
        &["KEYS", "a", "b"],
        &["RANDOMKEY", "x"],
        &["SCAN"],
        &["SCAN", "abc"],
        &["SCAN", "1x"],
        &["SCAN", "+"],
        &["SCAN", " 1"],
        &["SCAN", "18446744073709551616"],
        &["SCAN", "0", "COUNT", "0"],
        &["SCAN", "0", "COUNT", "-5"],
        &["SCAN", "0", "COUNT", "x"],
        &["SCAN", "0", "COUNT", "99999999999999999999"],
        &["SCAN", "0", "COUNT"],
        &["SCAN", "0", "MATCH"],
        &["SCAN", "0", "TYPE"],
        &["SCAN", "0", "BOGUS", "1"],
        &["SCAN", "abc", "COUNT", "0"],
        &["FLUSHDB", "FOO"],
        &["FLUSHDB", "ASYNC", "SYNC"],
        &["FLUSHALL", "now"],
        &["FLUSHALL", "SYNC", "x"],
    ] {
        b.check_str(args);
    }
    // A whole iteration with the same MATCH gives the same keys.
    let ours = {
        let mut con = srv.client();
        scan_all(&mut con, &["MATCH", "user:*"]).0
    };
    let theirs = {
        let mut con = redis.client();
        scan_all(&mut con, &["MATCH", "user:*"]).0
    };
    let (mut ours, mut theirs) = (ours, theirs);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    // FLUSHDB and FLUSHALL in every form; the store is empty after each.
    for args in [
        &["FLUSHDB"][..],
        &["FLUSHDB", "ASYNC"],
        &["FLUSHDB", "sync"],
        &["FLUSHALL"],
        &["FLUSHALL", "async"],
        &["FLUSHALL", "SYNC"],
    ] {
        b.check_str(&["SET", "k", "v"]);
        b.check_str(args);
        b.check_str(&["DBSIZE"]);
        b.check_str(&["KEYS", "*"]);
        b.check_str(&["RANDOMKEY"]);
        b.check_str(&["GET", "k"]);
    }
    b.check_str(&["INFO", "keyspace"]);
    srv.stop();
}

#[test]
fn flushdb_is_fast_to_answer_and_empties_the_counters() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    set_all(&mut con, &names("x:", 5000));
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("ttl:{i}"))
            .arg("v")
            .arg("EX")
            .arg(1000)
            .query(&mut con)
            .unwrap();
    }
    let writes_before: u64 = srv.info_field("device_writes").parse().unwrap();
    let ok: String = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(dbsize(&mut con), 0);
    assert_eq!(srv.info_field("live_bytes"), "0");
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(!info.contains("db0:"), "{info}");
    // No write per key: a flush mark per shard and the commit's blocks.
    let writes: u64 = srv.info_field("device_writes").parse().unwrap();
    assert!(
        writes - writes_before < 100,
        "{} writes",
        writes - writes_before
    );
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(keys.is_empty());
    // The store works on: the flushed segments come back as free space.
    set_all(&mut con, &names("y:", 1000));
    assert_eq!(dbsize(&mut con), 1000);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(dbsize(&mut con), 1000);
    let v: Option<String> = redis::cmd("GET").arg("x:1").query(&mut con).unwrap();
    assert_eq!(v, None);
    srv.stop();
}

#[test]
fn flushed_keys_never_return_after_a_kill_9_and_later_writes_stay() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let old = names("old:", 20_000);
    set_all(&mut con, &old);
    // Overwritten and deleted keys too: no older version may come back.
    set_all(&mut con, &old[..5000]);
    let _: i64 = redis::cmd("DEL")
        .arg(&old[5000..5100])
        .query(&mut con)
        .unwrap();

    // A writer keeps writing while the flush runs.
    let url = srv.url();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200_000 {
                let k = format!("live:{n}");
                // A SET sent after the flush's +OK came back runs after
                // the flush: it must survive once acknowledged.
                let sent = std::time::Instant::now();
                let _: () = redis::cmd("SET").arg(&k).arg(n).query(&mut con).unwrap();
                acked.lock().unwrap().push((sent, k));
                n += 1;
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let ok: String = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    let flushed_at = std::time::Instant::now();
    assert_eq!(ok, "OK");
    let _: () = redis::cmd("SET")
        .arg("after")
        .arg("1")
        .query(&mut con)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    srv.kill();

    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    let keys: HashSet<String> = keys.into_iter().collect();
    assert!(keys.contains("after"), "a key set after the flush was lost");
    let stray: Vec<&String> = keys.iter().filter(|k| k.starts_with("old:")).collect();
    assert!(
        stray.is_empty(),
        "flushed keys came back: {:?}",
        &stray[..stray.len().min(5)]
    );
    let acked = acked.lock().unwrap();
    let lost: Vec<&String> = (acked.iter())
        .filter(|(t, k)| *t > flushed_at && !keys.contains(k))
        .map(|(_, k)| k)
        .collect();
    assert!(
        lost.is_empty(),
        "writes acknowledged after the flush lost: {lost:?}"
    );
    assert!(
        acked.iter().any(|(t, _)| *t > flushed_at),
        "the writer wrote after the flush"
    );
    assert_eq!(dbsize(&mut con), keys.len() as u64);
    // A second flush, then a clean restart and a crash: still empty.
    let _: String = redis::cmd("FLUSHALL").arg("ASYNC").query(&mut con).unwrap();
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(dbsize(&mut srv.client()), 0);
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(dbsize(&mut srv.client()), 0);
    srv.stop();
}

#[test]
fn flushdb_with_async_durability() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--durability", "async"]);
    let mut con = srv.client();
    set_all(&mut con, &names("a:", 3000));
    let ok: String = redis::cmd("FLUSHDB").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(dbsize(&mut con), 0);
    // The flush was durable when it answered: a crash now brings nothing
    // back.
    srv.kill();
    let srv = Server::start(dir.path(), &["--durability", "async"]);
    assert_eq!(dbsize(&mut srv.client()), 0);
    srv.stop();
}

#[test]
fn redis_cli_scan_lists_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let keys = names("cli:", 1500);
    set_all(&mut con, &keys);
    let port = srv.addr.port().to_string();
    let run = |extra: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port, "--scan"])
            .args(extra)
            .output()
    };
    let Ok(out) = run(&[]) else {
        eprintln!("skipped: no redis-cli installed");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: HashSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(got, keys.iter().cloned().collect());
    let out = run(&["--pattern", "cli:1?"]).unwrap();
    let mut got: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let want: Vec<String> = (10..20).map(|i| format!("cli:{i}")).collect();
    assert_eq!(got, want);
    srv.stop();
}

#[test]
fn with_one_poller_a_small_store_is_scanned_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "1"]);
    let mut con = srv.client();
    assert_eq!(scan_step(&mut con, 0, &[]), (0, Vec::new()));
    set_all(&mut con, &names("s:", 5));
    let (next, mut keys) = scan_step(&mut con, 0, &[]);
    keys.sort();
    assert_eq!((next, keys), (0, names("s:", 5)));
    // With COUNT 2 the steps stop early, and every key comes once.
    let (all, steps) = scan_all(&mut con, &["COUNT", "2"]);
    assert_eq!(all.len(), 5);
    assert!(steps >= 2, "{steps}");
    srv.stop();
}

/// Sets `keys` to values of `len` bytes that name the key and `round`.
fn set_sized(con: &mut redis::Connection, keys: &[String], round: usize, len: usize) {
    let mut p = redis::pipe();
    for k in keys {
        let mut v = format!("{k}/{round}/").into_bytes();
        v.resize(len, b'.');
        p.cmd("SET").arg(k).arg(v).ignore();
    }
    p.query::<()>(con).expect("SET pipeline");
}

#[test]
fn scan_returns_every_key_present_throughout_while_keys_change_and_compaction_moves_them() {
    // A small store: the overwrites below keep compaction moving records
    // while the iterations run (with their key names cached by the
    // poller, each name good only while its record stays where it was).
    let dir = tempfile::tempdir().unwrap();
    common::create_store(
        dir.path(),
        &[
            "--capacity",
            "5M",
            "--segment-size",
            "128K",
            "--shards",
            "1",
            "--partitions",
            "4",
        ],
    );
    let srv = Server::start(dir.path(), &["--max-value-size", "16K"]);
    let mut con = srv.client();
    let stay = names("stay:", 2000);
    for round in 0..4 {
        for chunk in stay.chunks(250) {
            set_sized(&mut con, chunk, round, 600);
        }
    }
    let compactions = || -> u64 { srv.info_field("compactions").parse().unwrap() };
    let mut round = 4;
    let mut added = 0usize;
    let mut deleted = 0usize;
    for count in ["100", "1000"] {
        let before = compactions();
        let mut seen = HashSet::new();
        let (mut cursor, mut steps) = (0u64, 0usize);
        loop {
            let (next, keys) = scan_step(&mut con, cursor, &["COUNT", count]);
            seen.extend(keys);
            steps += 1;
            // Between steps: a tenth of the lasting keys written again,
            // keys added, and earlier ones deleted.
            let at = (steps * 200) % stay.len();
            set_sized(&mut con, &stay[at..at + 200], round, 600);
            round += 1;
            let fresh: Vec<String> = (added..added + 40).map(|i| format!("new:{i}")).collect();
            set_sized(&mut con, &fresh, round, 300);
            added += 40;
            let mut del = redis::cmd("DEL");
            for i in deleted..deleted + 20 {
                del.arg(format!("new:{i}"));
            }
            let _: i64 = del.query(&mut con).unwrap();
            deleted += 20;
            if next == 0 {
                break;
            }
            assert!(steps < 10_000, "the iteration does not end");
            cursor = next;
        }
        for k in &stay {
            assert!(
                seen.contains(k),
                "COUNT {count}: {k}, present throughout, was not returned"
            );
        }
        // Every key returned exists or existed during the iteration.
        for k in &seen {
            assert!(k.starts_with("stay:") || k.starts_with("new:"), "{k}");
        }
        let after = compactions();
        assert!(
            after > before,
            "COUNT {count}: compaction moved nothing during the iteration ({steps} steps)"
        );
    }
    // The keys at rest: one iteration returns each once.
    let (all, _) = scan_all(&mut con, &["COUNT", "100"]);
    let mut want: Vec<String> = stay.clone();
    want.extend((deleted..added).map(|i| format!("new:{i}")));
    want.sort();
    let mut got = all;
    got.sort();
    assert_eq!(got, want);
    srv.stop();
}
