//! Space over time: expired keys give their space back, a full store evicts
//! by `--maxmemory-policy`, and after any crash a GET returns nil or the
//! latest acknowledged value of its key, never an older or expired one.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{dbsize, wait_for, RealRedis, Server};
use rand::{Rng, SeedableRng};
use redis::{Commands, Connection, RedisResult};

/// Redis's reply to a write past `maxmemory` that nothing can be evicted for.
const OOM: &str = "-OOM command not allowed when used memory > 'maxmemory'.";

/// A store of `capacity` in segments of 256 KiB, two shards.
fn create(dir: &Path, capacity: &str) {
    common::create_store(
        dir,
        &[
            "--capacity",
            capacity,
            "--segment-size",
            "256K",
            "--shards",
            "2",
            "--partitions",
            "16",
        ],
    );
}

/// Serves the store at `dir` (values up to 150 KiB fit its segments).
fn start(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--max-value-size", "150K", "--max-key-size", "1K"];
    args.extend_from_slice(extra);
    Server::start(dir, &args)
}

fn value(tag: &str, i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}:{i}:").into_bytes();
    v.resize(len, b'.');
    v
}

fn stat(srv: &Server, name: &str) -> u64 {
    srv.info_field(name).parse().unwrap()
}

/// Sends one command over a raw socket and returns the reply's first line.
fn raw_line(addr: &str, args: &[&[u8]]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&common::encode(args)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

/// The TTL workload of the issue: a store that fills with values that
/// expire must take new ones once they have, round after round, across a
/// clean restart and a kill -9.
#[test]
fn expired_values_give_their_space_back_round_after_round() {
    let dir = tempfile::tempdir().unwrap();
    // 32 segments of 256 KiB; each round writes 4.7 MiB of values that
    // live 300 ms: two rounds never fit at once.
    create(dir.path(), "8M");
    let mut srv = start(dir.path(), &[]);
    let len = 60 << 10;
    for round in 0..6u64 {
        let mut con = srv.client();
        for i in 0..80 {
            let r: RedisResult<()> = redis::cmd("SET")
                .arg(format!("r{round}:{i}"))
                .arg(value("v", i, len))
                .arg("PX")
                .arg(300)
                .query(&mut con);
            r.unwrap_or_else(|e| panic!("round {round}, SET {i}: {e}"));
        }
        wait_for("every key of the round expired", || dbsize(&mut con) == 0);
        for i in 0..80 {
            let v: Option<Vec<u8>> = con.get(format!("r{round}:{i}")).unwrap();
            assert_eq!(v, None, "round {round}: key {i} expired");
        }
        match round {
            1 => {
                srv.stop();
                srv = start(dir.path(), &[]);
            }
            3 => {
                srv.kill();
                srv = start(dir.path(), &[]);
                assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
            }
            _ => {}
        }
    }
    assert!(stat(&srv, "expired_keys") > 0);
    // Compaction gives the expired bytes back once space runs short; the
    // store shows them as dead, not live.
    let live = stat(&srv, "live_bytes");
    assert!(live < 1 << 20, "live_bytes {live} after every key expired");
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut srv.client())
        .unwrap();
    assert!(!info.contains("db0:"), "no keys, no db0 line: {info}");
    srv.stop();
}

/// INFO keyspace: `expires=` counts the keys with a TTL and `avg_ttl=` is
/// the sweep's estimate of their TTL left, as Redis's.
#[test]
fn info_keyspace_counts_keys_with_a_ttl() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "8M");
    let srv = start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..30 {
        let _: () = con.set(format!("plain{i}"), "v").unwrap();
    }
    for i in 0..20 {
        let _: () = con.set_ex(format!("ttl{i}"), "v", 100).unwrap();
    }
    let line = || -> String {
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query(&mut srv.client())
            .unwrap();
        info.lines()
            .find(|l| l.starts_with("db0:"))
            .unwrap()
            .to_string()
    };
    wait_for("avg_ttl estimated", || !line().ends_with("avg_ttl=0"));
    let l = line();
    assert!(l.starts_with("db0:keys=50,expires=20,avg_ttl="), "{l}");
    let avg: u64 = l.rsplit('=').next().unwrap().parse().unwrap();
    assert!(
        (90_000..=100_000).contains(&avg),
        "avg_ttl {avg} ms for TTLs of 100 s"
    );
    let _: () = con.persist("ttl0").unwrap();
    let _: () = con.del("ttl1").unwrap();
    assert!(line().starts_with("db0:keys=49,expires=18,"), "{}", line());
    srv.stop();
}

/// Under noeviction with `--maxmemory`, writes past it get Redis's OOM
/// error (compared with redis-server's own where one is installed), DEL
/// still works, and once data is deleted writes go on.
#[test]
fn noeviction_refuses_writes_past_maxmemory_with_redis_error() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "16M");
    let srv = start(dir.path(), &["--maxmemory", "1M"]);
    let addr = srv.addr.to_string();
    let big = value("x", 0, 100 << 10);
    let mut refused = None;
    for i in 0..40u64 {
        let line = raw_line(&addr, &[b"SET", format!("k{i}").as_bytes(), &big]);
        if line != "+OK" {
            refused = Some((i, line));
            break;
        }
    }
    let (n, line) = refused.expect("writes past --maxmemory refused");
    assert_eq!(line, OOM);
    assert!(n >= 9, "refused after {n} values of 100 KiB under 1 MiB");
    // Redis's own text, where redis-server is installed.
    if let Some(redis) = RealRedis::start(&["--maxmemory", "1mb"]) {
        let mut line = String::new();
        for i in 0..200u64 {
            line = raw_line(&redis.addr, &[b"SET", format!("k{i}").as_bytes(), &big]);
            if line != "+OK" {
                break;
            }
        }
        assert_eq!(line, OOM, "redis-server's reply");
    }
    assert_eq!(srv.info_field("evicted_keys"), "0");
    let mut con = srv.client();
    assert_eq!(raw_line(&addr, &[b"DEL", b"k0", b"k1", b"k2"]), ":3");
    let _: () = con.set("after", "ok").unwrap();
    assert_eq!(con.get::<_, String>("after").unwrap(), "ok");
    srv.stop();
}

/// An unknown policy name gets Redis's text.
#[test]
fn an_unknown_policy_is_refused_with_redis_text() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nvkv"))
        .args(["serve", "--maxmemory-policy", "lru", "--path"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("argument(s) must be one of the following: volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, noeviction"),
        "{err}"
    );
    assert!(!dir.path().join("data.nvkv").exists(), "nothing created");
}

/// Writes `n` keys `{tag}{i}` of `len` bytes, each acknowledged.
fn fill(con: &mut Connection, tag: &str, n: u64, len: usize, ttl: Option<u64>) {
    for i in 0..n {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{tag}{i}")).arg(value(tag, i, len));
        if let Some(t) = ttl {
            cmd.arg("EX").arg(t);
        }
        let r: RedisResult<()> = cmd.query(con);
        r.unwrap_or_else(|e| panic!("SET {tag}{i}: {e}"));
    }
}

fn present(con: &mut Connection, tag: &str, n: u64, len: usize) -> u64 {
    (0..n)
        .filter(|&i| {
            let v: Option<Vec<u8>> = con.get(format!("{tag}{i}")).unwrap();
            if let Some(v) = &v {
                assert_eq!(v, &value(tag, i, len), "{tag}{i} has its own value");
            }
            v.is_some()
        })
        .count() as u64
}

/// LRU and LFU keep the keys that are read and evict cold ones; writes
/// never fail while there is something to evict.
#[test]
fn lru_and_lfu_keep_what_is_read_and_evict_cold_keys() {
    for policy in ["allkeys-lru", "allkeys-lfu"] {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), "16M");
        let srv = start(
            dir.path(),
            &["--maxmemory-policy", policy, "--maxmemory", "3M"],
        );
        let mut con = srv.client();
        let len = 10 << 10;
        fill(&mut con, "cold", 280, len, None);
        // LRU's clock counts seconds: the cold keys must be older.
        std::thread::sleep(Duration::from_millis(2100));
        fill(&mut con, "hot", 20, len, None);
        for _ in 0..20 {
            assert_eq!(present(&mut con, "hot", 20, len), 20);
        }
        fill(&mut con, "new", 60, len, None);
        wait_for("eviction under the limit", || {
            stat(&srv, "live_bytes") <= 3 << 20
        });
        let (hot, cold) = (
            present(&mut con, "hot", 20, len),
            present(&mut con, "cold", 280, len),
        );
        let evicted = stat(&srv, "evicted_keys");
        assert!(evicted >= 50, "{policy}: {evicted} evicted");
        assert!(hot >= 19, "{policy}: {hot} of 20 hot keys kept");
        if policy == "allkeys-lru" {
            // LFU cannot tell cold keys from new ones (both unread).
            assert!(cold <= 280 - 50, "{policy}: {cold} of 280 cold keys kept");
        }
        assert_eq!(
            dbsize(&mut con),
            hot + cold + present(&mut con, "new", 60, len)
        );
        srv.stop();
    }
}

/// volatile-ttl evicts the keys nearest to expiry and never a key without
/// a TTL; once no key with a TTL is left, writes get Redis's OOM.
#[test]
fn volatile_ttl_evicts_the_nearest_expiry_and_then_refuses() {
    for pollers in ["1", "2"] {
        volatile_ttl_on(pollers);
    }
}

/// The test above with `pollers` pollers: with two, each evicts only
/// while its best candidate is as good as the other's.
fn volatile_ttl_on(pollers: &str) {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "16M");
    let srv = start(
        dir.path(),
        &[
            "--maxmemory-policy",
            "volatile-ttl",
            "--maxmemory",
            "2M",
            "--io-threads",
            pollers,
        ],
    );
    let mut con = srv.client();
    let len = 10 << 10;
    // 2.4 MiB of values, 0.8 MiB with a TTL, under a 2 MiB limit.
    fill(&mut con, "keep", 140, len, None);
    fill(&mut con, "soon", 40, len, Some(100));
    fill(&mut con, "late", 40, len, Some(10_000));
    fill(&mut con, "more", 20, len, None);
    wait_for("eviction under the limit", || {
        stat(&srv, "live_bytes") <= 2 << 20
    });
    assert_eq!(
        present(&mut con, "keep", 140, len),
        140,
        "keys without a TTL stay"
    );
    assert_eq!(present(&mut con, "more", 20, len), 20);
    let (late, soon) = (
        present(&mut con, "late", 40, len),
        present(&mut con, "soon", 40, len),
    );
    // Sampled, as Redis: most of what goes expires sooner.
    let evicted = (40 - soon) + (40 - late);
    assert!(evicted >= 30, "{evicted} evicted");
    assert!(
        (40 - soon) * 10 >= evicted * 8,
        "{pollers} poller(s): {soon} of 40 keys with the nearer expiry kept, {late} of 40 with the later"
    );
    // Keys without a TTL alone past the limit: nothing to evict.
    let addr = srv.addr.to_string();
    let big = value("x", 0, 100 << 10);
    let mut last = String::new();
    for i in 0..40u64 {
        last = raw_line(&addr, &[b"SET", format!("big{i}").as_bytes(), &big]);
        if last != "+OK" {
            break;
        }
    }
    assert_eq!(
        last,
        OOM,
        "{pollers} poller(s): 40 SETs of 100 KiB without a TTL taken; live_bytes {}, expires {}",
        stat(&srv, "live_bytes"),
        srv.info_field("db0"),
    );
    assert_eq!(present(&mut con, "keep", 140, len), 140);
    srv.stop();
}

/// allkeys-random and volatile-random keep live data under the limit and
/// never refuse a write while something may be evicted; volatile-lru and
/// volatile-lfu leave keys without a TTL alone.
#[test]
fn random_and_volatile_policies_bound_live_data() {
    for policy in [
        "allkeys-random",
        "volatile-random",
        "volatile-lru",
        "volatile-lfu",
    ] {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path(), "16M");
        let srv = start(
            dir.path(),
            &["--maxmemory-policy", policy, "--maxmemory", "2M"],
        );
        let mut con = srv.client();
        let len = 10 << 10;
        fill(&mut con, "keep", 50, len, None);
        fill(&mut con, "t", 400, len, Some(10_000));
        wait_for("eviction under the limit", || {
            stat(&srv, "live_bytes") <= 2 << 20
        });
        let evicted = stat(&srv, "evicted_keys");
        assert!(evicted >= 200, "{policy}: {evicted} evicted");
        if policy.starts_with("volatile") {
            assert_eq!(present(&mut con, "keep", 50, len), 50, "{policy}");
        }
        let kept = present(&mut con, "t", 400, len) + present(&mut con, "keep", 50, len);
        assert_eq!(dbsize(&mut con), kept, "{policy}");
        srv.stop();
    }
}

/// Writes `{a}N` keys of 10 KiB with a TTL through one connection while
/// another SETs 100 keys of 1 KiB without one (`b0`, `b1`, …, spread over
/// the store), and returns the replies to the second's SETs that were not
/// `+OK`, and how many of its keys read back.
fn write_beside_an_evicting_writer(url: &str) -> (Vec<String>, usize) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), url.to_string());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut i = 0u64;
            // Bounded: 64 MiB at most, or until the other is done.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 6400 {
                let mut p = redis::pipe();
                for _ in 0..16 {
                    p.cmd("SET")
                        .arg(format!("{{a}}{i}"))
                        .arg(value("a", i, 10 << 10));
                    p.arg("EX").arg(10_000).ignore();
                    i += 1;
                }
                let r: RedisResult<()> = p.query(&mut con);
                r.unwrap_or_else(|e| panic!("SET {{a}}{i}: {e}"));
            }
        })
    };
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut refused = Vec::new();
    for i in 0..100u64 {
        std::thread::sleep(Duration::from_millis(2));
        let r: RedisResult<String> = redis::cmd("SET")
            .arg(format!("b{i}"))
            .arg(value("b", i, 1 << 10))
            .query(&mut con);
        match r {
            Ok(ok) if ok == "OK" => {}
            other => refused.push(format!("b{i}: {other:?}")),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let kept = (0..100u64)
        .filter(|i| {
            let v: Option<Vec<u8>> = con.get(format!("b{i}")).unwrap();
            v.is_some()
        })
        .count();
    (refused, kept)
}

/// With two pollers, `--maxmemory` holds for the whole store: while one
/// connection writes keys with a TTL onto one poller past the limit, SETs
/// of keys without a TTL (which volatile-lru may not evict) on either
/// poller are all answered `+OK` and kept, as redis-server answers them,
/// and live data comes back under the limit. A poller with nothing to
/// evict used to refuse them with OOM while the other's eviction caught
/// up.
#[test]
fn two_pollers_keep_maxmemory_and_never_refuse_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "64M");
    let srv = start(
        dir.path(),
        &[
            "--maxmemory-policy",
            "volatile-lru",
            "--maxmemory",
            "2M",
            "--io-threads",
            "2",
        ],
    );
    assert_eq!(srv.info_field("io_threads"), "2");
    let (refused, kept) = write_beside_an_evicting_writer(&srv.url());
    assert_eq!(refused, Vec::<String>::new(), "nvkv refused writes");
    assert_eq!(kept, 100, "keys without a TTL stay under volatile-lru");
    assert!(stat(&srv, "evicted_keys") > 0);
    wait_for("eviction under the limit", || {
        stat(&srv, "live_bytes") <= 2 << 20
    });
    srv.stop();
    if let Some(redis) =
        RealRedis::start(&["--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru"])
    {
        let (refused, kept) = write_beside_an_evicting_writer(&format!("redis://{}", redis.addr));
        assert_eq!(refused, Vec::<String>::new(), "redis-server refused writes");
        assert_eq!(kept, 100, "redis-server");
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(
                &mut redis::Client::open(format!("redis://{}", redis.addr))
                    .unwrap()
                    .get_connection()
                    .unwrap(),
            )
            .unwrap();
        assert!(
            !info.contains("evicted_keys:0\r"),
            "redis-server evicted nothing"
        );
    }
}

/// A kill -9 while eviction, expiry and compaction run: every key reads
/// back as nil or as its latest acknowledged value (or the write in flight
/// when the server died), never an older or an expired one.
#[test]
fn a_crash_during_eviction_and_compaction_never_brings_back_old_values() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "8M");
    let srv = start(dir.path(), &["--maxmemory-policy", "allkeys-lru"]);
    let addr = srv.addr.to_string();
    // key -> (last acknowledged version, its expiry)
    let mut acked: HashMap<u64, (u64, Option<Instant>)> = HashMap::new();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut version = 0u64;
    while Instant::now() < deadline {
        version += 1;
        let key = version * 7919 % 600;
        let ttl = (version % 3 == 0).then_some(200u64);
        let mut v = format!("{key}:{version}:").into_bytes();
        v.resize(20 << 10, b'.');
        let k = format!("k{key}");
        let px = ttl.map(|t| t.to_string()).unwrap_or_default();
        let mut args: Vec<&[u8]> = vec![b"SET", k.as_bytes(), &v];
        if ttl.is_some() {
            args.extend([&b"PX"[..], px.as_bytes()]);
        }
        s.write_all(&common::encode(&args)).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), "+OK", "SET {k}");
        // The server reads its clock for PX between the send and the
        // reply: the key is gone by the reply's time plus the TTL at the
        // latest (on a loaded machine the send's time can be far earlier).
        let replied = Instant::now();
        acked.insert(
            key,
            (version, ttl.map(|t| replied + Duration::from_millis(t))),
        );
    }
    assert!(stat(&srv, "evicted_keys") + stat(&srv, "expired_keys") > 0);
    srv.kill();
    let srv = start(dir.path(), &["--maxmemory-policy", "allkeys-lru"]);
    let mut con = srv.client();
    for (key, (ver, expires)) in &acked {
        let asked = Instant::now();
        let got: Option<Vec<u8>> = con.get(format!("k{key}")).unwrap();
        let Some(got) = got else { continue };
        let text = String::from_utf8_lossy(&got[..32]).to_string();
        let mut parts = text.split(':');
        assert_eq!(parts.next(), Some(key.to_string().as_str()));
        let v: u64 = parts.next().unwrap().parse().unwrap();
        assert!(
            v >= *ver,
            "k{key}: version {v} read back, {ver} acknowledged"
        );
        if let Some(at) = expires {
            assert!(
                v > *ver || asked < *at,
                "k{key}: version {v} read back after its expiry"
            );
        }
    }
    srv.stop();
}

/// CONFIG GET and SET of the eviction settings answer as Redis's (compared
/// with redis-server where one is installed), and a policy set at run time
/// takes effect.
#[test]
fn config_sets_the_policy_at_run_time_with_redis_replies() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "16M");
    let srv = start(dir.path(), &[]);
    let script: &[&[&str]] = &[
        &["SET", "maxmemory-policy", "lru"],
        &["SET", "maxmemory-policy", "ALLKEYS-LRU"],
        &["GET", "maxmemory-policy"],
        &["SET", "nosuch", "1"],
        &["SET", "maxmemory", "abc"],
        &["SET", "maxmemory", "10mb"],
        &["GET", "maxmemory"],
        &["SET", "maxmemory-samples", "0"],
        &["SET", "maxmemory-samples", "7"],
        &["GET", "maxmemory-samples"],
        &["SET", "maxmemory", "1mb", "maxmemory-policy", "bad"],
        &["GET", "maxmemory"],
        &["GET", "save"],
        &["GET", "nosuch"],
        &["GET"],
        &["SET", "maxmemory"],
        &["FOO"],
    ];
    let run = |con: &mut Connection| -> Vec<String> {
        script
            .iter()
            .map(|args| {
                let r: RedisResult<redis::Value> = redis::cmd("CONFIG").arg(*args).query(con);
                format!("{r:?}")
            })
            .collect()
    };
    let ours = run(&mut srv.client());
    assert!(
        ours[0].contains("argument(s) must be one of the following"),
        "{}",
        ours[0]
    );
    if let Some(redis) = RealRedis::start(&[]) {
        let mut con = redis::Client::open(format!("redis://{}/", redis.addr))
            .unwrap()
            .get_connection()
            .unwrap();
        let theirs = run(&mut con);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "CONFIG {:?}", script[i]);
        }
    }
    assert_eq!(srv.info_field("maxmemory_policy"), "allkeys-lru");
    assert_eq!(srv.info_field("maxmemory"), (10u64 << 20).to_string());
    // Under 1 MiB, writes now evict.
    let mut con = srv.client();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1mb"])
        .query(&mut con)
        .unwrap();
    fill(&mut con, "k", 300, 10 << 10, None);
    wait_for("eviction under the new limit", || {
        stat(&srv, "live_bytes") <= 1 << 20
    });
    assert!(stat(&srv, "evicted_keys") >= 150);
    srv.stop();
}

/// Under an evicting policy without `--maxmemory`, a store far from full
/// evicts nothing: a few small keys beside one value larger than a
/// segment (its pieces fill segments of their own) all stay, as in
/// Redis without `maxmemory`.
#[test]
fn a_large_value_beside_few_small_keys_evicts_nothing() {
    for policy in ["allkeys-lru", "allkeys-lfu"] {
        let dir = tempfile::tempdir().unwrap();
        common::create_store(dir.path(), &["--capacity", "256M"]);
        let srv = Server::start(dir.path(), &["--maxmemory-policy", policy]);
        let mut c = srv.client();
        for i in 0..3 {
            let _: () = c.set(format!("small{i}"), "v").unwrap();
        }
        // 12 MiB: six 2 MiB segments of pieces, a twentieth of the store.
        let big: Vec<u8> = (0..12 << 20).map(|i| (i % 251) as u8).collect();
        let _: () = c.set("big", &big).unwrap();
        for i in 0..3 {
            let _: () = c.set(format!("after{i}"), "w").unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(stat(&srv, "evicted_keys"), 0, "{policy}");
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
        assert_eq!(n, 7, "{policy}");
        let got: Vec<u8> = c.get("big").unwrap();
        assert!(got == big, "{policy}: the large value read back");
        srv.stop();
    }
}

/// The encoding mark of a value (OBJECT ENCODING and REFCOUNT, Redis's
/// answers by the command that made it) moves with its record when
/// compaction moves it, and is read again after a kill -9: the answers
/// stay redis-server's for the same commands.
#[test]
fn object_encoding_stays_through_compaction_and_a_crash() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "8M");
    let srv = start(dir.path(), &[]);
    let made: &[&[&str]] = &[
        &["SET", "a", "5"],
        &["APPEND", "a", "6"],
        &["INCRBYFLOAT", "b", "1"],
        &["SET", "s", "7"],
        &["COPY", "s", "c"],
        &["SET", "e", "hello"],
        &["APPEND", "e", ""],
        &["SETRANGE", "f", "0", "12"],
        &["SET", "g", "12"],
    ];
    let mut theirs = redis.client();
    for con in [&mut srv.client(), &mut theirs] {
        for cmd in made {
            let _: redis::Value = redis::cmd(cmd[0]).arg(&cmd[1..]).query(con).unwrap();
        }
    }
    let answers = |con: &mut Connection| -> Vec<redis::Value> {
        let mut out = Vec::new();
        for key in ["a", "b", "c", "e", "f", "g", "s"] {
            for sub in ["ENCODING", "REFCOUNT"] {
                out.push(redis::cmd("OBJECT").arg(sub).arg(key).query(con).unwrap());
            }
        }
        out
    };
    let expected = answers(&mut theirs);
    assert_eq!(answers(&mut srv.client()), expected, "as written");
    // 4.7 MiB of values kept live in an 8 MiB store, then 12 MiB of
    // overwrites in random order: segments hold live and dead values,
    // and compaction moves the live records of those it empties — the
    // first segment's, the keys above among them, once its values died.
    let mut con = srv.client();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    for i in 0..(80 + 200) {
        let key = if i < 80 { i } else { rng.gen_range(0..80) };
        let _: () = con
            .set(format!("fill{key}"), value("f", i, 60 << 10))
            .unwrap();
    }
    let wa: f64 = srv.info_field("write_amplification").parse().unwrap();
    assert!(
        wa > 1.0,
        "compaction moved records: write amplification {wa}"
    );
    assert_eq!(answers(&mut con), expected, "after compaction");
    srv.kill();
    let srv = start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    assert_eq!(answers(&mut srv.client()), expected, "after a kill -9");
    srv.stop();
}

/// A clean start counts each segment's referenced bytes while it checks
/// the index tables (`Space::from_walked`): the space a store shows after
/// a clean restart is what it showed before it, with values, overwrites,
/// deletions, expired keys and a value larger than a segment in it.
#[test]
fn a_clean_restart_counts_the_space_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "16M");
    let srv = start(dir.path(), &["--max-value-size", "1M"]);
    let mut con = srv.client();
    for i in 0..200u64 {
        let _: () = con.set(format!("k{i}"), value("v", i, 900)).unwrap();
    }
    for i in 0..100u64 {
        let _: () = con.set(format!("k{i}"), value("w", i, 1500)).unwrap();
    }
    for i in 100..150u64 {
        let _: () = con.del(format!("k{i}")).unwrap();
    }
    for i in 150..170u64 {
        let _: () = redis::cmd("PEXPIRE")
            .arg(format!("k{i}"))
            .arg(50)
            .query(&mut con)
            .unwrap();
    }
    let _: () = con.set("big", value("b", 0, 600 << 10)).unwrap();
    wait_for("the expired keys gone", || dbsize(&mut con) == 131);
    let fields = [
        "live_bytes",
        "dead_bytes",
        "segments_free",
        "expired_evicted_bytes",
    ];
    let space = |srv: &Server| -> Vec<String> { fields.map(|f| srv.info_field(f)).to_vec() };
    let before = space(&srv);
    srv.stop();
    let srv = start(dir.path(), &["--max-value-size", "1M"]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    assert_eq!(space(&srv), before, "{fields:?} after a clean restart");
    let big: Vec<u8> = srv.client().get("big").unwrap();
    assert_eq!(big, value("b", 0, 600 << 10));
    srv.stop();
}
