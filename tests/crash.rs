//! Crash test: writers hammer the server in sync mode, the server is killed
//! with SIGKILL at a random moment, and after the restart every key must
//! hold its last acknowledged value, or the value of the write that was in
//! flight when the server died; never anything else, never a torn value.
//! Acknowledged deletes stay deleted. Several rounds run on the same small
//! store (32 MiB in 512 KiB segments), so segments are reused and
//! compacted while the server dies, and recovering a store that was itself
//! recovered is exercised too. Each round also checks that writes kept
//! flowing and that the restarted server takes writes.
//!
//! Environment (for `scripts/crash-test.sh`):
//! - `NVKV_CRASH_ROUNDS`: rounds (default 4);
//! - `NVKV_CRASH_SEED`: seed of the run (default: from the clock; printed);
//! - `NVKV_CRASH_DIR`: store directory, kept afterwards (default: a
//!   temporary directory). It must not hold a store yet;
//! - `NVKV_BIN`: the `nvkv` binary to run (default: the one cargo built);
//! - `NVKV_CRASH_SERVE_ARGS`: more `nvkv serve` arguments, split at spaces
//!   (`--durability async --commit-interval-ms 1000` must make it fail).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use common::Server;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const THREADS: u64 = 4;
const KEYS_PER_THREAD: u64 = 200;
const HOT_KEYS: u64 = 20;
/// Writes a round acknowledges at least before its kill.
const MIN_WRITES: u64 = 20;
const MIN_LEN: usize = 10;
const MAX_LEN: usize = 8192;

/// What a key holds, as far as a writer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The value written by the writer's `version`-th operation.
    Value(u64),
    Deleted,
}

/// One writer's view of its keys.
#[derive(Debug, Default, Clone)]
struct Model {
    /// The last acknowledged operation per key (absent: never written, or
    /// absent from the store after the last recovery).
    acked: HashMap<u64, State>,
    /// The operation sent when the server died, if its reply never came.
    in_flight: Option<(u64, State)>,
}

fn key(t: u64, n: u64) -> String {
    format!("c{t}:{n}")
}

/// The value of (thread, key, version): a readable header, then bytes from
/// a generator seeded by all three, of a length between MIN_LEN and MAX_LEN.
fn value(t: u64, n: u64, version: u64) -> Vec<u8> {
    let mut x = (t << 56) ^ (n << 32) ^ version ^ 0x5851_F42D_4C95_7F2D;
    let mut next = move || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // Mostly small values, some large.
    let r = next();
    let len = if r % 4 == 0 {
        MIN_LEN + (r >> 8) as usize % (MAX_LEN - MIN_LEN + 1)
    } else {
        MIN_LEN + (r >> 8) as usize % 1000
    };
    let mut v = format!("t{t} k{n} v{version} ").into_bytes();
    let len = len.max(v.len());
    while v.len() < len {
        v.extend_from_slice(&next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Says which value `got` is, for messages.
fn describe(t: u64, n: u64, got: &Option<Vec<u8>>) -> String {
    match got {
        None => "nil".into(),
        Some(v) => {
            let head: String = String::from_utf8_lossy(&v[..v.len().min(24)]).into();
            let exact = head
                .split(' ')
                .nth(2)
                .and_then(|s| s.strip_prefix('v'))
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&ver| value(t, n, ver) == *v);
            match exact {
                Some(ver) => format!("the intact value of version {ver}"),
                None => format!("{} bytes starting {head:?} (torn or foreign)", v.len()),
            }
        }
    }
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
    )
}

/// An INFO field, when the server has it.
fn info_opt(srv: &Server, name: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").query(&mut srv.client()).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

/// `Server::start` with the binary of `$NVKV_BIN` when set, and the
/// arguments of `$NVKV_CRASH_SERVE_ARGS` after `extra`.
fn start(dir: &Path, extra: &[&str]) -> Server {
    let more = std::env::var("NVKV_CRASH_SERVE_ARGS").unwrap_or_default();
    // Values are at most 8 KiB; the default limit of 1 MiB would not fit
    // the store's 512 KiB segments.
    let mut args: Vec<&str> = vec!["--max-value-size", "64K"];
    args.extend(extra);
    args.extend(more.split_whitespace());
    let extra = &args[..];
    let Ok(bin) = std::env::var("NVKV_BIN") else {
        return Server::start(dir, extra);
    };
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--path"])
        .arg(dir)
        .args(extra);
    common::start_command(cmd, dir)
}

/// Writes to the keys of thread `t` until the connection fails or `stop`;
/// returns the model, or a description of a wrong reply.
fn writer(
    t: u64,
    mut con: redis::Connection,
    mut model: Model,
    mut version: u64,
    seed: u64,
    go: Arc<Barrier>,
    round: Arc<Round>,
) -> Result<(Model, u64), String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    go.wait();
    while !round.stop.load(Ordering::Relaxed) {
        // Mostly a few hot keys: the other keys' records stay live in
        // segments that are otherwise dead, which only compaction frees.
        let n = if rng.gen_ratio(9, 10) {
            rng.gen_range(0..HOT_KEYS)
        } else {
            rng.gen_range(0..KEYS_PER_THREAD)
        };
        version += 1;
        let op = if rng.gen_ratio(1, 8) {
            State::Deleted
        } else {
            State::Value(version)
        };
        model.in_flight = Some((n, op));
        let reply: redis::RedisResult<redis::Value> = match op {
            State::Value(v) => redis::cmd("SET")
                .arg(key(t, n))
                .arg(value(t, n, v))
                .query(&mut con),
            State::Deleted => redis::cmd("DEL").arg(key(t, n)).query(&mut con),
        };
        let reply = match reply {
            Ok(r) => r,
            // No error code: not an error reply but the connection
            // dropping as the server died. The write may or may not have
            // landed.
            Err(e) if e.code().is_none() => break,
            Err(e) => return Err(format!("{} {op:?}: error reply {e}", key(t, n))),
        };
        let existed = matches!(model.acked.get(&n), Some(State::Value(_)));
        match (op, &reply) {
            (State::Value(_), redis::Value::Okay) => {}
            (State::Deleted, redis::Value::Int(c)) if *c == existed as i64 => {}
            _ => {
                return Err(format!(
                    "{} {op:?}: reply {reply:?} (the key existed: {existed})",
                    key(t, n)
                ))
            }
        }
        model.acked.insert(n, op);
        model.in_flight = None;
        round.acked.fetch_add(1, Ordering::Relaxed);
    }
    Ok((model, version))
}

/// What the writers of a round share: the flag that stops them, and the
/// writes acknowledged so far.
#[derive(Default)]
struct Round {
    stop: AtomicBool,
    acked: AtomicU64,
}

/// Checks every key after a restart against the models; returns the
/// problems found, and makes the models the state found (the starting
/// point of the next round).
fn verify(srv: &Server, models: &mut [Model]) -> Vec<String> {
    let mut con = srv.client();
    let mut problems = Vec::new();
    let (mut must, mut may) = (0i64, 0i64);
    for (t, m) in models.iter_mut().enumerate() {
        let t = t as u64;
        let mut mget = redis::cmd("MGET");
        for n in 0..KEYS_PER_THREAD {
            mget.arg(key(t, n));
        }
        let got: Vec<Option<Vec<u8>>> = mget.query(&mut con).expect("MGET after restart");
        let mut found = HashMap::new();
        for (n, got) in (0..KEYS_PER_THREAD).zip(got) {
            let acked = m.acked.get(&n).copied();
            let flying = m.in_flight.filter(|f| f.0 == n).map(|f| f.1);
            let value_of = |s: Option<State>| match s {
                Some(State::Value(v)) => Some(value(t, n, v)),
                _ => None,
            };
            let ok = got == value_of(acked) || flying.is_some_and(|f| got == value_of(Some(f)));
            if !ok {
                problems.push(format!(
                    "{}: found {}; last acknowledged {acked:?}, in flight {flying:?}",
                    key(t, n),
                    describe(t, n, &got)
                ));
            }
            let exists = |s: Option<State>| matches!(s, Some(State::Value(_)));
            match (exists(acked), flying.map(|f| exists(Some(f)))) {
                (true, Some(true) | None) => must += 1,
                (false, Some(false) | None) => {}
                _ => may += 1,
            }
            // What was found is now the truth.
            if let Some(v) = &got {
                let ver = if flying.is_some_and(|f| value_of(Some(f)).as_ref() == Some(v)) {
                    flying.unwrap()
                } else {
                    acked.unwrap_or(State::Deleted)
                };
                found.insert(n, ver);
            } else if acked.is_some() || flying.is_some() {
                found.insert(n, State::Deleted);
            }
        }
        m.acked = found;
        m.in_flight = None;
    }
    let n: i64 = redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE");
    if n < must || n > must + may {
        problems.push(format!("DBSIZE {n}, expected {must}..={}", must + may));
    }
    problems
}

/// The restarted server takes writes: a SET and a DEL of a key outside
/// the writers' ranges are answered within 5 s.
fn probe(srv: &Server) -> Result<(), String> {
    let mut con = srv.client();
    con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r: redis::RedisResult<redis::Value> =
        redis::cmd("SET").arg("probe").arg("x").query(&mut con);
    match r {
        Ok(redis::Value::Okay) => {}
        other => return Err(format!("SET probe x: {other:?} (expected OK within 5 s)")),
    }
    let r: redis::RedisResult<i64> = redis::cmd("DEL").arg("probe").query(&mut con);
    match r {
        Ok(1) => Ok(()),
        other => Err(format!("DEL probe: {other:?} (expected 1 within 5 s)")),
    }
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    let rounds: u32 = env("NVKV_CRASH_ROUNDS").unwrap_or(4);
    let seed: u64 = env("NVKV_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            % 1_000_000_007
    });
    let bin = std::env::var("NVKV_BIN").unwrap_or_else(|_| common::BIN.to_string());
    println!(
        "crash test: seed {seed} (NVKV_CRASH_SEED={seed} repeats the kill delays and operations), {rounds} rounds, {bin}"
    );
    let tmp;
    let dir: PathBuf = match std::env::var_os("NVKV_CRASH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().join("store")
        }
    };
    assert!(
        !dir.join("data.nvkv").exists(),
        "{} already holds a store",
        dir.display()
    );
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut models = vec![Model::default(); THREADS as usize];
    let mut versions = vec![0u64; THREADS as usize];
    let t0 = Instant::now();
    // A small store (62 segments of 512 KiB), so that segments are reused
    // and compacted in every round.
    let out = Command::new(&bin)
        .args([
            "load",
            "--keys",
            "0",
            "--capacity",
            "32M",
            "--segment-size",
            "512K",
        ])
        .arg("--path")
        .arg(&dir)
        .output()
        .expect("run nvkv load");
    assert!(
        out.status.success(),
        "nvkv load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut srv = start(&dir, &[]);
    for round in 1..=rounds {
        let started = Instant::now();
        let go = Arc::new(Barrier::new(THREADS as usize + 1));
        let shared = Arc::new(Round::default());
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let con = srv.client();
                let (model, version) = (models[t as usize].clone(), versions[t as usize]);
                let (go, shared) = (go.clone(), shared.clone());
                let seed = rng.gen();
                thread::spawn(move || writer(t, con, model, version, seed, go, shared))
            })
            .collect();
        let wait = Duration::from_millis(rng.gen_range(100..=400));
        go.wait();
        sleep(wait);
        // On a loaded machine the writers may have done little yet: the
        // kill waits for some (a stalled server still fails below).
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.acked.load(Ordering::Relaxed) < MIN_WRITES && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        let pid = srv.pid();
        // Compactions of this run so far (when the server counts them).
        let compactions =
            info_opt(&srv, "compactions").map_or(String::new(), |c| format!(", {c} compactions"));
        srv.kill();
        // A writer that somehow sees no error stops here.
        shared.stop.store(true, Ordering::Relaxed);
        let mut ops = 0;
        for (t, h) in handles.into_iter().enumerate() {
            match h.join().expect("writer panicked") {
                Ok((m, v)) => {
                    ops += v - versions[t];
                    models[t] = m;
                    versions[t] = v;
                }
                Err(e) => panic!("round {round} (seed {seed}): wrong reply before the crash: {e}"),
            }
        }
        // Options vary by round; recovery must not care.
        let engine = ["uring", "aio"][rng.gen_range(0..2)];
        let io_threads = rng.gen_range(1..=2).to_string();
        let tcp_threads = rng.gen_range(1..=2).to_string();
        let args = [
            "--engine",
            engine,
            "--io-threads",
            &io_threads,
            "--tcp-threads",
            &tcp_threads,
        ];
        srv = start(&dir, &args);
        let state = srv.info_field("index_state_at_start");
        let space = match (
            info_opt(&srv, "segments_free"),
            info_opt(&srv, "segments_total"),
        ) {
            (Some(f), Some(t)) => format!(", {f}/{t} segments free"),
            _ => String::new(),
        };
        let in_flight = models.iter().filter(|m| m.in_flight.is_some()).count();
        let problems = verify(&srv, &mut models);
        println!(
            "round {round}: killed pid {pid} after {wait:?}, {ops} writes{compactions}, {in_flight} in flight; \
             restart ({engine}, {io_threads} pollers): index {state}{space}, {}; {:.2} s",
            if problems.is_empty() {
                "all keys correct".to_string()
            } else {
                format!("{} wrong keys", problems.len())
            },
            started.elapsed().as_secs_f64()
        );
        assert_eq!(state, "rebuilt", "round {round} (seed {seed})");
        assert!(
            problems.is_empty(),
            "round {round} (seed {seed}, store {}):\n{}\nserver log:\n{}",
            dir.display(),
            problems.join("\n"),
            srv.log.lock().unwrap()
        );
        // Hundreds of writes go through in 100 ms; fewer than a few dozen
        // in 10 s means writes stalled.
        assert!(
            ops >= MIN_WRITES,
            "round {round} (seed {seed}): only {ops} writes answered in {wait:?} and up to 10 s more"
        );
        if let Err(e) = probe(&srv) {
            panic!(
                "round {round} (seed {seed}): after the restart, {e}\n{}",
                info_opt(&srv, "segments_free").map_or(String::new(), |f| format!(
                    "segments_free:{f} live_bytes:{} dead_bytes:{}",
                    info_opt(&srv, "live_bytes").unwrap_or_default(),
                    info_opt(&srv, "dead_bytes").unwrap_or_default()
                ))
            );
        }
    }
    srv.stop();
    // And a clean restart of the store that went through all of that.
    let srv = start(&dir, &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let problems = verify(&srv, &mut models);
    assert!(
        problems.is_empty(),
        "after a clean restart:\n{}",
        problems.join("\n")
    );
    srv.stop();
    println!(
        "crash test passed: {rounds} rounds in {:.1} s (seed {seed})",
        t0.elapsed().as_secs_f64()
    );
}

/// `nvkv load --keys 0 --force --device FILE --path DIR`: a new, empty
/// store over `dev`, whatever an earlier store left there.
fn create_over(dev: &Path, dir: &Path) {
    let out = Command::new(common::BIN)
        .args(["load", "--keys", "0", "--force", "--capacity", "64M"])
        // One shard: both stores write their first records into the same
        // segment, with the same generation.
        .args(["--shards", "1"])
        .arg("--device")
        .arg(dev)
        .arg("--path")
        .arg(dir)
        .output()
        .expect("run nvkv load");
    assert!(
        out.status.success(),
        "nvkv load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store created over the device of an earlier one finds that store's
/// records in its segments, behind its own, with valid checksums, the same
/// segment generations and plausible sequence numbers. Recovering from a
/// crash must not replay them: a record's checksum is seeded with its
/// store's UUID.
#[test]
fn a_recreated_store_does_not_replay_the_earlier_stores_records() {
    if common::on_spdk("a_recreated_store_does_not_replay_the_earlier_stores_records") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (dev, dir) = (tmp.path().join("device.img"), tmp.path().join("store"));
    create_over(&dev, &dir);
    let srv = Server::start(&dir, &[]);
    let mut con = srv.client();
    let mut pipe = redis::pipe();
    for i in 0..400 {
        pipe.set(format!("old:{i}"), vec![b'o'; 1000]).ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    drop(con);
    srv.stop();

    create_over(&dev, &dir);
    let srv = Server::start(&dir, &[]);
    let mut con = srv.client();
    for i in 0..5 {
        let _: () = redis::cmd("SET")
            .arg(format!("new:{i}"))
            .arg("n")
            .query(&mut con)
            .unwrap();
    }
    drop(con);
    srv.kill();

    let srv = Server::start(&dir, &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let mut con = srv.client();
    let mut exists = redis::cmd("EXISTS");
    for i in 0..400 {
        exists.arg(format!("old:{i}"));
    }
    let old: i64 = exists.query(&mut con).unwrap();
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(
        (old, size),
        (0, 5),
        "keys of the earlier store came back (of 400), and DBSIZE"
    );
    drop(con);
    srv.stop();
}
