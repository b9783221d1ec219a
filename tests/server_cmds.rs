//! Server commands: SLOWLOG, LATENCY, CONFIG RESETSTAT and REWRITE,
//! SHUTDOWN, RESET, and what redis-benchmark reads at start, through the
//! `redis` crate, redis-cli and raw RESP, compared with a real
//! redis-server where Redis's replies are the point.

mod common;

use std::time::Duration;

use common::{encode, wait_bounded, RawConn, RealRedis, Server};

fn call(con: &mut RawConn, args: &[&str]) -> String {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    String::from_utf8_lossy(&con.call(&args)).into_owned()
}

/// Each command's reply from nvkv, and the same from Redis.
fn compare(srv: &Server, redis: &Option<RealRedis>, cmds: &[&[&str]]) {
    let mut ours = RawConn::connect(srv.addr);
    let mut theirs = redis.as_ref().map(|r| RawConn::connect(&r.addr));
    for c in cmds {
        let got = call(&mut ours, c);
        if let Some(t) = &mut theirs {
            let want = call(t, c);
            // HELLO's reply has the version and the client id.
            if c[0] != "HELLO" {
                assert_eq!(got, want, "{c:?}");
            }
        }
    }
}

#[test]
fn replies_and_errors_match_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let redis = RealRedis::start(&[]);
    for proto in ["2", "3"] {
        compare(
            &srv,
            &redis,
            &[
                &["HELLO", proto],
                &["SLOWLOG"],
                &["SLOWLOG", "HELP"],
                &["SLOWLOG", "help", "x"],
                &["SLOWLOG", "FOO"],
                &["SLOWLOG", "LEN", "x"],
                &["SLOWLOG", "GET", "-2"],
                &["SLOWLOG", "GET", "x"],
                &["SLOWLOG", "GET", "1", "2"],
                &["SLOWLOG", "RESET"],
                &["SLOWLOG", "RESET", "x"],
                &["SLOWLOG", "LEN"],
                &["SLOWLOG", "GET"],
                &["LATENCY"],
                &["LATENCY", "HELP"],
                &["LATENCY", "LATEST"],
                &["LATENCY", "LATEST", "x"],
                &["LATENCY", "RESET"],
                &["LATENCY", "RESET", "command", "x"],
                &["LATENCY", "FOO"],
                &["LATENCY", "HISTORY"],
                &["LATENCY", "HISTORY", "command", "x"],
                &["LATENCY", "HISTORY", "command"],
                // (One name at a time: Redis lists a pattern's matches in
                // its hash table's order.)
                &["CONFIG", "GET", "slowlog-log-slower-than"],
                &["CONFIG", "GET", "slowlog-max-len"],
                &["CONFIG", "GET", "latency-monitor-threshold"],
                &["CONFIG", "SET", "slowlog-max-len", "-1"],
                &["CONFIG", "SET", "slowlog-max-len", "x"],
                &["CONFIG", "SET", "slowlog-log-slower-than", "-2"],
                &["CONFIG", "SET", "latency-monitor-threshold", "-1"],
                &["CONFIG", "SET", "slowlog-max-len", "100"],
                &["CONFIG", "GET", "slowlog-max-len"],
                &["CONFIG", "SET", "slowlog-max-len", "128"],
                &["CONFIG", "HELP"],
                &["CONFIG", "HELP", "x"],
                &["CONFIG", "RESETSTAT", "x"],
                &["CONFIG", "REWRITE"],
                &["CONFIG", "REWRITE", "x"],
                &["CONFIG", "GET", "save"],
                &["SHUTDOWN", "FOO"],
                &["SHUTDOWN", "NOSAVE", "SAVE"],
                &["SHUTDOWN", "ABORT", "NOW"],
                &["SHUTDOWN", "ABORT"],
                &["RESET", "x"],
                &["CLIENT", "SETNAME", "someone"],
                &["RESET"],
                &["CLIENT", "GETNAME"],
                &["PING"],
                // Redis 7's descriptions of the commands (subcommands one
                // by one: Redis lists them in its hash table's order).
                &["COMMAND", "INFO", "publish", "subscribe", "psubscribe"],
                &[
                    "COMMAND",
                    "INFO",
                    "unsubscribe",
                    "punsubscribe",
                    "shutdown",
                    "reset",
                ],
                &["COMMAND", "DOCS", "publish", "subscribe", "psubscribe"],
                &[
                    "COMMAND",
                    "DOCS",
                    "unsubscribe",
                    "punsubscribe",
                    "shutdown",
                    "reset",
                ],
                &[
                    "COMMAND",
                    "INFO",
                    "pubsub|channels",
                    "pubsub|numsub",
                    "pubsub|numpat",
                ],
                &[
                    "COMMAND",
                    "DOCS",
                    "pubsub|channels",
                    "pubsub|numsub",
                    "pubsub|numpat",
                ],
                &[
                    "COMMAND",
                    "INFO",
                    "slowlog|get",
                    "slowlog|len",
                    "slowlog|reset",
                ],
                &[
                    "COMMAND",
                    "DOCS",
                    "slowlog|get",
                    "slowlog|len",
                    "slowlog|reset",
                ],
                &["COMMAND", "INFO", "latency|latest", "latency|reset"],
                &["COMMAND", "DOCS", "latency|latest", "latency|reset"],
                &[
                    "COMMAND",
                    "INFO",
                    "config|resetstat",
                    "config|rewrite",
                    "config|help",
                ],
                &[
                    "COMMAND",
                    "DOCS",
                    "config|resetstat",
                    "config|rewrite",
                    "config|help",
                ],
                &["COMMAND", "GETKEYS", "publish", "ch", "msg"],
                &["COMMAND", "INFO", "spublish", "ssubscribe", "sunsubscribe"],
                &["COMMAND", "DOCS", "spublish", "ssubscribe", "sunsubscribe"],
                &[
                    "COMMAND",
                    "INFO",
                    "pubsub|shardchannels",
                    "pubsub|shardnumsub",
                ],
                &[
                    "COMMAND",
                    "DOCS",
                    "pubsub|shardchannels",
                    "pubsub|shardnumsub",
                ],
                &["COMMAND", "INFO", "latency|history"],
                &["COMMAND", "DOCS", "latency|history"],
                &["COMMAND", "GETKEYS", "spublish", "ch", "msg"],
                &["COMMAND", "GETKEYS", "ssubscribe", "a", "b"],
            ],
        );
    }
}

/// `SLOWLOG GET`'s entries: (args, client address, client name).
type Entries = Vec<(i64, i64, i64, Vec<Vec<u8>>, String, String)>;

fn slowlog(con: &mut redis::Connection) -> Entries {
    redis::cmd("SLOWLOG").arg("GET").arg(-1).query(con).unwrap()
}

#[test]
fn slowlog_records_commands_trimmed_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let redis = RealRedis::start(&[]);
    let long = "v".repeat(200);
    let many: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    let run = |con: &mut redis::Connection| -> Vec<Vec<Vec<u8>>> {
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("slow-one")
            .query::<()>(con)
            .unwrap();
        redis::cmd("SLOWLOG").arg("RESET").query::<()>(con).unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(0)
            .query::<()>(con)
            .unwrap();
        redis::cmd("SET")
            .arg("key")
            .arg(&long)
            .query::<()>(con)
            .unwrap();
        redis::cmd("GET").arg("key").query::<String>(con).unwrap();
        redis::cmd("EXISTS").arg(&many).query::<i64>(con).unwrap();
        let addr: String = redis::cmd("CLIENT")
            .arg("INFO")
            .query::<String>(con)
            .unwrap();
        let addr = addr
            .split(' ')
            .find_map(|f| f.strip_prefix("addr="))
            .unwrap()
            .to_string();
        let entries = slowlog(con);
        // SLOWLOG GET is logged once it has answered.
        let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(con).unwrap();
        assert_eq!(len as usize, entries.len() + 1);
        // Newest first, ids descending, every entry of this client.
        assert!(entries.windows(2).all(|w| w[0].0 > w[1].0));
        for e in &entries {
            assert_eq!((e.4.as_str(), e.5.as_str()), (addr.as_str(), "slow-one"));
            assert!(e.2 >= 0 && e.1 > 1_700_000_000);
        }
        let one: Entries = redis::cmd("SLOWLOG").arg("GET").arg(1).query(con).unwrap();
        assert_eq!(one.len(), 1);
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(-1)
            .query::<()>(con)
            .unwrap();
        let before = slowlog(con).len();
        redis::cmd("GET").arg("key").query::<String>(con).unwrap();
        assert_eq!(slowlog(con).len(), before, "-1 logs nothing");
        entries.into_iter().rev().map(|e| e.3).collect()
    };
    let ours = run(&mut srv.client());
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let texts: Vec<Vec<String>> = ours
        .iter()
        .map(|a| a.iter().map(|x| s(x)).collect())
        .collect();
    assert_eq!(texts[0], ["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    assert_eq!(
        texts[1][2],
        format!("{}... (72 more bytes)", "v".repeat(128))
    );
    assert_eq!(texts[2], ["GET", "key"]);
    assert_eq!(texts[3].len(), 32);
    assert_eq!(texts[3][31], "... (10 more arguments)");
    if let Some(r) = redis {
        assert_eq!(ours, run(&mut r.client()));
    }
}

#[test]
fn slowlog_max_len_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--slowlog-log-slower-than", "0", "--slowlog-max-len", "3"],
    );
    let mut con = srv.client();
    for i in 0..10 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    let entries = slowlog(&mut con);
    let keys: Vec<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.3[1]).into_owned())
        .collect();
    assert_eq!(keys, ["k9", "k8", "k7"]);
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query::<()>(&mut con)
        .unwrap();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut con).unwrap();
    // SLOWLOG RESET itself comes after the reset.
    assert!(len <= 1, "{len}");
}

#[test]
fn latency_is_empty_unless_the_monitor_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..100 {
        redis::cmd("SET")
            .arg(i)
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    let latest: Vec<(String, i64, i64, i64)> =
        redis::cmd("LATENCY").arg("LATEST").query(&mut con).unwrap();
    assert!(latest.is_empty());
    let threshold: (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("latency-monitor-threshold")
        .query(&mut con)
        .unwrap();
    assert_eq!(threshold.1, "0");
}

#[test]
fn config_resetstat_zeroes_the_stats_info_shows() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(i)
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
        redis::cmd("GET").arg(i).query::<String>(&mut con).unwrap();
    }
    let field = |con: &mut redis::Connection, section: &str, name: &str| -> String {
        let info: String = redis::cmd("INFO").arg(section).query(con).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        field(&mut con, "stats", "total_commands_processed")
            .parse::<u64>()
            .unwrap()
            >= 100
    );
    assert_eq!(field(&mut con, "stats", "keyspace_hits"), "50");
    assert!(field(&mut con, "commandstats", "cmdstat_set").starts_with("calls=50,"));
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(&mut con)
        .unwrap();
    let processed: u64 = field(&mut con, "stats", "total_commands_processed")
        .parse()
        .unwrap();
    assert!(processed <= 2, "{processed}");
    assert_eq!(field(&mut con, "stats", "keyspace_hits"), "0");
    assert_eq!(field(&mut con, "commandstats", "cmdstat_set"), "");
    redis::cmd("GET").arg(1).query::<String>(&mut con).unwrap();
    assert_eq!(field(&mut con, "stats", "keyspace_hits"), "1");
    assert!(field(&mut con, "commandstats", "cmdstat_get").starts_with("calls=1,"));
    // Keys are data, not stats.
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(keys, 50);
}

#[test]
fn config_rewrite_writes_the_file_serve_read() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nvkv.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &conf,
        "# my server\nmaxmemory_policy = \"noeviction\" # changed at run time\nio_threads = 1\n",
    )
    .unwrap();
    let conf_arg = conf.to_str().unwrap();
    let srv = Server::start(&data, &["--config", conf_arg]);
    let mut con = srv.client();
    for (k, v) in [
        ("maxmemory-policy", "allkeys-lru"),
        ("slowlog-max-len", "64"),
        ("maxmemory", "1000000"),
    ] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query::<()>(&mut con)
            .unwrap();
    }
    redis::cmd("CONFIG")
        .arg("REWRITE")
        .query::<()>(&mut con)
        .unwrap();
    let text = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(
        text,
        "# my server\nmaxmemory_policy = \"allkeys-lru\" # changed at run time\nio_threads = 1\n\
         # Generated by CONFIG REWRITE\nmaxmemory = \"1000000\"\nslowlog_max_len = 64\n"
    );
    srv.stop();
    // The next start reads the values back.
    let srv = Server::start(&data, &["--config", conf_arg]);
    let mut con = srv.client();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .arg("slowlog-max-len")
        .arg("maxmemory")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        got,
        [
            "maxmemory",
            "1000000",
            "maxmemory-policy",
            "allkeys-lru",
            "slowlog-max-len",
            "64"
        ]
    );
}

#[test]
fn shutdown_stops_cleanly_and_a_restart_has_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    let mut con = srv.client();
    for i in 0..500 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    // Another client connected: it too sees the connection close.
    let mut other = srv.client();
    // The client gets no reply: the connection closes, as with Redis.
    let r = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query::<String>(&mut con);
    assert!(r.is_err(), "{r:?}");
    let status = wait_bounded(&mut srv.child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    assert!(redis::cmd("PING").query::<String>(&mut other).is_err());
    drop(srv);

    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let mut con = srv.client();
    let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(keys, 500);
    let v: String = redis::cmd("GET").arg("k499").query(&mut con).unwrap();
    assert_eq!(v, "499");
    // redis-cli's SHUTDOWN: it prints nothing and succeeds, as with Redis.
    let mut srv = srv;
    let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-p", &srv.addr.port().to_string(), "SHUTDOWN"])
        .output()
    else {
        eprintln!("skipped redis-cli: not installed");
        return;
    };
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(wait_bounded(&mut srv.child, Duration::from_secs(20)).success());
}

#[test]
fn redis_benchmark_reads_the_config_it_wants() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let Ok(out) = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &srv.addr.port().to_string(),
            "-t",
            "get",
            "-n",
            "1000",
            "-q",
        ])
        .output()
    else {
        eprintln!("skipped: no redis-benchmark installed");
        return;
    };
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("Could not fetch server CONFIG"), "{all}");
    assert!(all.contains("GET:"), "{all}");
}

#[test]
fn reset_leaves_subscribed_mode_and_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = Vec::new();
    for c in [
        &["HELLO", "3"][..],
        &["SUBSCRIBE", "a"],
        &["RESET"],
        &["GET", "nokey"],
    ] {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
        req.extend(encode(&args));
    }
    s.write_all(&req).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"+RESET\r\n$-1\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let mut con = srv.client();
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 0);
}

/// A reply's text, from a raw connection (errors and simple strings alike).
fn raw(con: &mut RawConn, args: &[&str]) -> String {
    call(con, args).trim_end().to_owned()
}

#[test]
fn save_and_bgsave_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let redis = RealRedis::start(&[]);
    // One at a time (Redis's BGSAVE forks; a second while it runs is an
    // error there), each on a fresh connection's MULTI where it matters.
    compare(
        &srv,
        &redis,
        &[
            &["SAVE"],
            &["SAVE", "x"],
            &["BGSAVE", "x"],
            &["BGSAVE", "SCHEDULE", "x"],
        ],
    );
    // Inside MULTI: refused when queued, and EXEC aborts.
    let in_multi = |con: &mut redis::Connection| {
        let () = redis::cmd("MULTI").query(con).unwrap();
        let queued = redis::cmd("SAVE").query::<()>(con).unwrap_err();
        let exec = redis::cmd("EXEC").query::<()>(con).unwrap_err();
        (queued.to_string(), exec.to_string())
    };
    let ours = in_multi(&mut srv.client());
    assert!(
        ours.0.contains("not allowed inside a transaction"),
        "{ours:?}"
    );
    assert!(ours.1.contains("Transaction discarded"), "{ours:?}");
    if let Some(r) = &redis {
        let theirs = in_multi(
            &mut redis::Client::open(format!("redis://{}", r.addr))
                .unwrap()
                .get_connection()
                .unwrap(),
        );
        assert_eq!(ours, theirs);
    }
    let mut ours = RawConn::connect(srv.addr);
    assert_eq!(raw(&mut ours, &["BGSAVE"]), "+Background saving started");
    if let Some(r) = &redis {
        let mut theirs = RawConn::connect(&r.addr);
        assert_eq!(raw(&mut theirs, &["BGSAVE"]), "+Background saving started");
    }
    // INFO persistence reports the saves; LASTSAVE follows them.
    let mut c = srv.client();
    let done = (0..1000).any(|_| {
        let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
        let done = info.contains("rdb_bgsave_in_progress:0\r\n")
            && info.contains("rdb_last_bgsave_status:ok\r\n");
        if !done {
            std::thread::sleep(Duration::from_millis(10));
        }
        done
    });
    assert!(done, "the BGSAVE completes");
    let before: u64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let () = redis::cmd("SAVE").query(&mut c).unwrap();
    let after: u64 = redis::cmd("LASTSAVE").query(&mut c).unwrap();
    assert!(
        after > before,
        "LASTSAVE moves with a SAVE: {before} -> {after}"
    );
    let info: String = redis::cmd("INFO").arg("persistence").query(&mut c).unwrap();
    assert!(
        info.contains(&format!("rdb_last_save_time:{after}\r\n")),
        "{info}"
    );
    srv.stop();
}

#[test]
fn save_makes_async_writes_durable_before_their_commit_is_due() {
    let dir = tempfile::tempdir().unwrap();
    // Commits only every 10 minutes: an acknowledged SET is in memory.
    let async_mode = ["--durability", "async", "--commit-interval-ms", "600000"];
    let srv = Server::start(dir.path(), &async_mode);
    let mut c = srv.client();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("saved")
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SAVE").query(&mut c).unwrap();
    srv.kill();
    let srv = Server::start(dir.path(), &async_mode);
    let mut c = srv.client();
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(got.as_deref(), Some("saved"), "SAVE made the SET durable");
    srv.stop();
}

/// The `cmdstat_` lines of INFO commandstats by name, without their
/// times (`calls=…,rejected_calls=…,failed_calls=…`), less those of the
/// commands the test itself sends to read and reset them; the
/// `errorstat_` lines; and `total_error_replies`.
fn command_and_error_stats(con: &mut RawConn) -> (Vec<String>, Vec<String>, String) {
    let info = call(con, &["INFO", "everything"]);
    let mut cmds: Vec<String> = (info.lines())
        .filter(|l| l.starts_with("cmdstat_"))
        .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_config|resetstat:"))
        .map(|l| {
            let (name, rest) = l.split_once(':').unwrap();
            let counts: Vec<&str> = (rest.split(','))
                .filter(|f| !f.starts_with("usec"))
                .collect();
            format!("{name}:{}", counts.join(","))
        })
        .collect();
    cmds.sort();
    let mut errors: Vec<String> = (info.lines())
        .filter(|l| l.starts_with("errorstat_"))
        .map(str::to_string)
        .collect();
    errors.sort();
    let total = (info.lines())
        .find(|l| l.starts_with("total_error_replies:"))
        .unwrap_or("none")
        .to_string();
    (cmds, errors, total)
}

/// INFO commandstats, errorstats and `total_error_replies` count as Redis
/// 7's: a subcommand under its own name (`cmdstat_config|get`); a command
/// refused before it runs (wrong arity, of a command or a subcommand) in
/// `rejected_calls`, not in `calls`; one that ran and answered an error
/// in `failed_calls`; an unknown command or subcommand only as an error;
/// the commands of an EXEC that a changed watched key aborted not at all,
/// those of an EXEC that ran each in its own line (its errors included);
/// every error reply under its code. The same commands go to nvkv and to
/// redis-server, and the figures are compared after CONFIG RESETSTAT.
#[test]
fn command_and_error_statistics_count_as_redis() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let script: &[&[&str]] = &[
        &["SET", "a", "1"],
        &["GET", "a"],
        &["INCR", "a"],
        &["SET", "s", "x"],
        &["INCR", "s"],
        &["INCRBYFLOAT", "s", "1"],
        &["GET"],
        &["GET", "a", "b"],
        &["CONFIG", "GET"],
        &["CONFIG", "GET", "maxmemory"],
        &["CONFIG", "FOO"],
        &["CONFIG", "SET", "a"],
        &["CONFIG", "SET", "a", "b", "c"],
        &["CONFIG", "RESETSTAT", "x"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "n1"],
        &["CLIENT", "NOPE"],
        &["CLIENT", "SETNAME"],
        &["OBJECT", "ENCODING", "a"],
        &["OBJECT", "FREQ", "a"],
        &["OBJECT", "BAD", "a"],
        &["MEMORY", "USAGE", "a"],
        &["COMMAND", "COUNT"],
        &["COMMAND", "NOPE"],
        &["PING"],
        &["PING", "a", "b"],
        &["NOSUCH"],
        &["SET", "k", "v", "XX", "NX"],
        &["EXPIRE", "a", "10", "NX", "XX"],
        &["MSET", "a"],
        &["MSET", "a", "1", "b"],
        &["SELECT", "0"],
        &["SELECT", "16"],
        &["SELECT", "x"],
        &["SLOWLOG", "LEN"],
        &["SLOWLOG", "GET", "x"],
        &["PUBSUB", "NUMPAT"],
        &["LATENCY", "LATEST"],
        &["ECHO"],
        &["GETRANGE", "a", "x", "1"],
        &["EXEC"],
        &["DISCARD"],
        &["WATCH"],
    ];
    let run = |addr: &str| {
        let mut con = RawConn::connect(addr);
        let mut other = RawConn::connect(addr);
        call(&mut con, &["FLUSHALL"]);
        call(&mut con, &["CONFIG", "RESETSTAT"]);
        for c in script {
            call(&mut con, c);
        }
        let pipeline = |con: &mut RawConn, cmds: &[&[&str]]| {
            let cmds: Vec<Vec<&[u8]>> = (cmds.iter())
                .map(|c| c.iter().map(|a| a.as_bytes()).collect())
                .collect();
            let cmds: Vec<&[&[u8]]> = cmds.iter().map(|c| &c[..]).collect();
            String::from_utf8_lossy(&con.pipeline(&cmds)).into_owned()
        };
        // Queued with an arity error: EXEC aborts.
        let aborted = pipeline(
            &mut con,
            &[&["MULTI"], &["GET"], &["SET", "x", "1"], &["EXEC"]],
        );
        assert!(
            aborted.ends_with("-EXECABORT Transaction discarded because of previous errors.\r\n")
        );
        // Runs, with an error inside.
        pipeline(
            &mut con,
            &[
                &["MULTI"],
                &["INCR", "s"],
                &["SET", "y", "1"],
                &["CLIENT", "SETNAME", "n2"],
                &["PING"],
                &["EXEC"],
            ],
        );
        // A watched key changes: EXEC answers nil and runs nothing.
        call(&mut con, &["SET", "w", "1"]);
        call(&mut con, &["WATCH", "w"]);
        call(&mut other, &["SET", "w", "2"]);
        let nil = pipeline(
            &mut con,
            &[
                &["MULTI"],
                &["PING"],
                &["INCR", "w"],
                &["GET", "w"],
                &["EXEC"],
            ],
        );
        assert!(nil.ends_with("*-1\r\n"), "{nil}");
        command_and_error_stats(&mut con)
    };
    let ours = run(&srv.addr.to_string());
    let theirs = run(&redis.addr);
    assert_eq!(ours.0, theirs.0, "commandstats");
    assert_eq!(ours.1, theirs.1, "errorstats");
    assert_eq!(ours.2, theirs.2);
    // Errors counted: the figures can fail.
    assert!(
        ours.1
            .iter()
            .any(|l| l.starts_with("errorstat_EXECABORT:count=1")),
        "{:?}",
        ours.1
    );
    srv.stop();
}

/// The first line of the reply a new, unauthenticated connection gets to
/// `args`.
fn unauthenticated(addr: std::net::SocketAddr, args: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    std::io::Write::write_all(&mut s, &encode(&args)).unwrap();
    common::read_line(&mut s)
}

/// CONFIG SET maxclients, timeout and requirepass, as Redis: the same
/// checks and errors (compared byte for byte with redis-server's), and
/// each takes effect at once — a client over the new limit is turned
/// away, an idle one is closed after the new timeout, a new client must
/// AUTH with the new password while one already connected keeps going,
/// an empty password lets new clients in again — and CONFIG REWRITE
/// writes them into the file the next start reads.
#[test]
fn config_set_of_maxclients_timeout_and_requirepass_acts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nvkv.toml");
    std::fs::write(&conf, "io_threads = 1\n").unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&conf, private).unwrap();
    let conf_arg = conf.to_str().unwrap();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--config", conf_arg]);
    let mut admin = RawConn::connect(srv.addr);
    if let Some(redis) = RealRedis::start(&[]) {
        let mut theirs = RawConn::connect(redis.addr.as_str());
        for c in [
            &["CONFIG", "SET", "maxclients", "abc"][..],
            &["CONFIG", "SET", "maxclients", "0"],
            &["CONFIG", "SET", "maxclients", "4294967296"],
            &["CONFIG", "SET", "timeout", "-1"],
            &["CONFIG", "SET", "timeout", "abc"],
            &["CONFIG", "SET", "timeout", "2147483648"],
            &["CONFIG", "GET", "requirepass"],
            &["CONFIG", "SET", "timeout", "7"],
            &["CONFIG", "GET", "timeout"],
            &["CONFIG", "SET", "maxclients", "77"],
            &["CONFIG", "GET", "maxclients"],
            &["CONFIG", "SET", "requirepass", "s3"],
            &["CONFIG", "GET", "requirepass"],
            &["CONFIG", "SET", "requirepass", ""],
            &["CONFIG", "GET", "requirepass"],
        ] {
            assert_eq!(call(&mut admin, c), call(&mut theirs, c), "{c:?}");
        }
    }
    // maxclients: the admin and one more; a third is turned away.
    call(&mut admin, &["CONFIG", "SET", "maxclients", "2"]);
    let mut second = RawConn::connect(srv.addr);
    assert_eq!(call(&mut second, &["PING"]), "+PONG\r\n");
    let mut third = std::net::TcpStream::connect(srv.addr).unwrap();
    assert_eq!(
        common::read_line(&mut third),
        "-ERR max number of clients reached"
    );
    drop(second);
    call(&mut admin, &["CONFIG", "SET", "maxclients", "100"]);
    // requirepass: a new client must AUTH; the admin keeps going.
    call(&mut admin, &["CONFIG", "SET", "requirepass", "s3"]);
    assert_eq!(
        unauthenticated(srv.addr, &["GET", "k"]),
        "-NOAUTH Authentication required."
    );
    let mut new = RawConn::connect(srv.addr);
    assert_eq!(call(&mut new, &["AUTH", "s3"]), "+OK\r\n");
    assert_eq!(call(&mut new, &["GET", "k"]), "$-1\r\n");
    assert_eq!(call(&mut admin, &["PING"]), "+PONG\r\n");
    // timeout: an idle client is closed within the next sweeps.
    call(&mut admin, &["CONFIG", "SET", "timeout", "1"]);
    let mut idle = std::net::TcpStream::connect(srv.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut idle, &mut buf).unwrap_or(usize::MAX);
    assert_eq!(n, 0, "the idle client was closed");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    // The others were idle too.
    let mut new = RawConn::connect(srv.addr);
    assert_eq!(call(&mut new, &["AUTH", "s3"]), "+OK\r\n");
    call(&mut new, &["CONFIG", "SET", "timeout", "0"]);
    call(&mut new, &["CONFIG", "SET", "maxclients", "50"]);
    call(&mut new, &["CONFIG", "SET", "timeout", "30"]);
    assert_eq!(call(&mut new, &["CONFIG", "REWRITE"]), "+OK\r\n");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert_eq!(
        text,
        "io_threads = 1\n# Generated by CONFIG REWRITE\nmax_clients = 50\ntimeout = 30\nrequirepass = \"s3\"\n"
    );
    // The file holds the password now: it stays readable by its owner only.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&conf).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    srv.stop();
    // The next start reads them back.
    let srv = Server::start(&data, &["--config", conf_arg]);
    assert_eq!(
        unauthenticated(srv.addr, &["PING"]),
        "-NOAUTH Authentication required."
    );
    let mut con = RawConn::connect(srv.addr);
    call(&mut con, &["AUTH", "s3"]);
    assert_eq!(
        call(&mut con, &["CONFIG", "GET", "maxclients"]),
        "*2\r\n$10\r\nmaxclients\r\n$2\r\n50\r\n"
    );
    assert_eq!(
        call(&mut con, &["CONFIG", "GET", "timeout"]),
        "*2\r\n$7\r\ntimeout\r\n$2\r\n30\r\n"
    );
    srv.stop();
}
