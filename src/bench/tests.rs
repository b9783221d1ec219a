//! End-to-end tests of the load generator against a small in-process RESP
//! server, and (ignored by default) against a real Redis.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use clap::Parser;

use super::*;
use crate::keys;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

const KEYS: u64 = 200;
const MIN: usize = 10;
const MAX: usize = 100;

/// Short-run arguments for the data set the fake server holds.
fn args(addr: SocketAddr) -> BenchArgs {
    let mut args = Cli::parse_from(["bench"]).bench;
    args.addr = addr.to_string();
    args.duration = 0.3;
    args.clients = 4;
    args.inflight = 4;
    args.keys = KEYS;
    args.seed = 9;
    args.min_size = MIN;
    args.max_size = MAX;
    args
}

/// How the fake server misbehaves.
#[derive(Default, Clone, Copy)]
struct Faults {
    /// Flip a byte of every stored value.
    corrupt: bool,
    /// Answer SET with an error.
    refuse_writes: bool,
    /// Close the first connection after this many commands.
    close_first_after: Option<usize>,
}

type Store = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

/// A thread-per-connection RESP server knowing GET and SET, loaded with the
/// test data set.
struct FakeServer {
    addr: SocketAddr,
    store: Store,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start(faults: Faults) -> FakeServer {
        let mut map = HashMap::new();
        for i in 0..KEYS {
            let mut value = keys::value(9, i, MIN, MAX);
            if faults.corrupt {
                value[0] ^= 1;
            }
            map.insert(keys::key(9, i), value);
        }
        let store = Arc::new(Mutex::new(map));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_store, accept_stop) = (store.clone(), stop.clone());
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                if accept_stop.load(Ordering::Relaxed) {
                    return;
                }
                let mut faults = faults;
                if n > 0 {
                    faults.close_first_after = None;
                }
                let store = accept_store.clone();
                thread::spawn(move || serve(stream.unwrap(), &store, faults));
            }
        });
        FakeServer { addr, store, stop }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, store: &Store, faults: Faults) {
    let mut input = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    let mut served = 0;
    loop {
        let Ok(n @ 1..) = stream.read(&mut chunk) else {
            return;
        };
        input.extend_from_slice(&chunk[..n]);
        let mut output = Vec::new();
        while let Some((command, used)) = parse_command(&input) {
            input.drain(..used);
            if Some(served) == faults.close_first_after {
                return;
            }
            served += 1;
            answer(&command, store, faults, &mut output);
        }
        if stream.write_all(&output).is_err() {
            return;
        }
    }
}

fn answer(command: &[Vec<u8>], store: &Store, faults: Faults, out: &mut Vec<u8>) {
    let mut store = store.lock().unwrap();
    match command {
        [name, key] if name == b"GET" => match store.get(key) {
            Some(value) => {
                out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"$-1\r\n"),
        },
        [name, ..] if name == b"SET" && faults.refuse_writes => {
            out.extend_from_slice(b"-OOM command not allowed\r\n")
        }
        [name, key, value] if name == b"SET" => {
            store.insert(key.clone(), value.clone());
            out.extend_from_slice(b"+OK\r\n");
        }
        _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
    }
}

/// A complete command (an array of bulk strings) at the start of `buf`.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buf: &[u8], pos: usize, tag: u8) -> Option<(usize, usize)> {
        assert_eq!(*buf.get(pos)?, tag);
        let end = pos + buf[pos..].windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&buf[pos + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    let (count, mut pos) = line(buf, 0, b'*')?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, start) = line(buf, pos, b'$')?;
        if buf.len() < start + len + 2 {
            return None;
        }
        parts.push(buf[start..start + len].to_vec());
        pos = start + len + 2;
    }
    Some((parts, pos))
}

#[test]
fn defaults_match_the_documentation() {
    let args = Cli::parse_from(["bench"]).bench;
    assert_eq!(args.addr, "127.0.0.1:12345");
    assert_eq!((args.clients, args.inflight, args.keys), (10, 1, 1000));
    assert_eq!(
        (args.min_size, args.max_size, args.threads),
        (1024, 4096, 0)
    );
    assert_eq!(args.duration, 10.0);
    assert_eq!(args.workload, Workload::C);
    assert_eq!(args.zipf_theta, 0.99);

    let plan = Plan::new(&args, None).unwrap();
    assert_eq!(plan.verify, Verify::Full);
    assert!(matches!(plan.keys, plan::KeyChooser::Uniform(1000)));

    let d = Cli::parse_from(["bench", "--workload", "d"]).bench;
    let plan = Plan::new(&d, None).unwrap();
    assert_eq!(plan.verify, Verify::Len);
    assert!(matches!(plan.keys, plan::KeyChooser::Zipfian(_)));

    let custom = Cli::parse_from(["bench", "--workload", "custom"]).bench;
    assert!(Plan::new(&custom, None).is_err());
}

#[test]
fn read_only_run_checks_every_byte() {
    let server = FakeServer::start(Faults::default());
    let report = run_bench(&args(server.addr)).unwrap();
    assert!(report.ops > 100, "{report:?}");
    assert_eq!(report.reads, report.ops);
    assert_eq!((report.writes, report.misses, report.errors), (0, 0, 0));
    assert!(report.duration_secs >= 0.3 && report.duration_secs < 0.5);
    assert!(report.p50_us > 0.0 && report.p50_us <= report.max_us);
    assert_eq!((report.clients, report.inflight), (4, 4));
}

#[test]
fn a_rate_offers_no_more_than_it_says_and_every_reply_is_checked() {
    let server = FakeServer::start(Faults::default());
    let mut args = args(server.addr);
    // 400 operations a second for 0.3 s: about 120 are due, over 4
    // connections (100 a second each, the first due at once) and 2
    // threads; a reply is never awaited for long by this server. At most
    // the rate over the run's measured length, plus each connection's
    // first.
    args.rate = Some(400.0);
    let report = run_bench(&args).unwrap();
    let most = 400.0 * report.duration_secs + report.clients as f64;
    assert!(report.ops > 0 && report.ops as f64 <= most, "{report:?}");
    assert_eq!(report.reads, report.ops);
    assert_eq!((report.misses, report.errors), (0, 0));
    assert_eq!(report.rate, Some(400.0));
    assert!(report.render(true).contains("\"rate\":400.0"));
    // Not in the JSON of a closed-loop run.
    args.rate = None;
    assert!(!run_bench(&args).unwrap().render(true).contains("\"rate\""));
    for bad in ["0", "-5", "inf"] {
        let r = Cli::parse_from(["bench", &format!("--rate={bad}")]).bench;
        assert!(Plan::new(&r, None).is_err(), "--rate {bad}");
    }
    let fill = Cli::parse_from(["bench", "--rate", "10", "--fill"]).bench;
    assert!(Plan::new(&fill, None).is_err());
}

#[test]
fn wrong_sizes_are_errors() {
    let server = FakeServer::start(Faults::default());
    let mut args = args(server.addr);
    args.min_size = 2 * MIN;
    args.max_size = 2 * MAX;
    let report = run_bench(&args).unwrap();
    assert!(report.errors > report.ops / 2, "{report:?}");
    assert!(report.error_samples[0].contains(", expected "));
}

#[test]
fn corrupt_contents_are_errors_unless_only_lengths_are_checked() {
    let server = FakeServer::start(Faults {
        corrupt: true,
        ..Faults::default()
    });
    let mut args = args(server.addr);
    let report = run_bench(&args).unwrap();
    assert_eq!(report.errors, report.ops);
    assert!(report.error_samples[0].ends_with("contents differ"));

    args.verify = Some(Verify::Len);
    assert_eq!(run_bench(&args).unwrap().errors, 0);
}

#[test]
fn keys_beyond_the_data_set_are_misses() {
    let server = FakeServer::start(Faults::default());
    let mut args = args(server.addr);
    args.keys = 2 * KEYS;
    let report = run_bench(&args).unwrap();
    assert_eq!(report.errors, 0);
    assert!(report.misses > report.ops / 4, "{report:?}");
}

#[test]
fn writes_keep_the_loaded_lengths() {
    let server = FakeServer::start(Faults::default());
    let mut args = args(server.addr);
    args.workload = Workload::A;
    args.distribution = Some(Distribution::Zipfian);
    let report = run_bench(&args).unwrap();
    assert_eq!(report.errors, 0);
    assert_eq!(report.reads + report.writes, report.ops);
    assert!(report.writes > report.ops / 4 && report.reads > report.ops / 4);

    let report = run_insert(&args).unwrap();
    assert_eq!(report.errors, 0);
    assert_eq!(report.writes, report.ops);

    let store = server.store.lock().unwrap();
    let overwritten = (0..KEYS)
        .filter(|&i| store[&keys::key(9, i)] != keys::value(9, i, MIN, MAX))
        .count();
    assert!(overwritten > 0);
    for i in 0..KEYS {
        let expected = keys::ValueGen::new(9, i, MIN, MAX).len();
        assert_eq!(store[&keys::key(9, i)].len(), expected);
    }
}

#[test]
fn read_modify_write_is_one_op() {
    let server = FakeServer::start(Faults::default());
    let mut args = args(server.addr);
    args.workload = Workload::F;
    let report = run_bench(&args).unwrap();
    assert_eq!(report.errors, 0);
    assert_eq!(report.reads, report.ops);
    assert!(report.writes > report.ops / 4 && report.writes < report.ops);
}

#[test]
fn error_replies_are_counted_with_their_message() {
    let server = FakeServer::start(Faults {
        refuse_writes: true,
        ..Faults::default()
    });
    let report = run_insert(&args(server.addr)).unwrap();
    assert!(report.ops > 0);
    assert_eq!(report.errors, report.ops);
    assert!(report.error_samples[0].contains("-OOM command not allowed"));
}

#[test]
fn a_dropped_connection_stops_only_itself() {
    let server = FakeServer::start(Faults {
        close_first_after: Some(50),
        ..Faults::default()
    });
    let report = run_bench(&args(server.addr)).unwrap();
    assert_eq!(report.errors, 1, "{report:?}");
    // A close with requests unread may reach the client as a reset.
    assert!(report.error_samples[0].starts_with("connection 0 to "));
    assert!(report.ops > 200);
}

#[test]
fn no_server_is_an_error_naming_the_address() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = run_bench(&args(addr)).unwrap_err();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

/// Against a real Redis:
/// `redis-server --port 6399 --save '' --appendonly no --daemonize yes`,
/// then `cargo test --release -- --ignored --nocapture against_redis`
/// (`NVKV_BENCH_REDIS` overrides the address).
#[test]
#[ignore = "needs a Redis server"]
fn against_redis() {
    let addr = std::env::var("NVKV_BENCH_REDIS").unwrap_or_else(|_| "127.0.0.1:6399".into());
    let mut base = Cli::parse_from(["bench"]).bench;
    base.addr = addr.clone();
    base.keys = 10_000;
    base.seed = 3;
    base.duration = 3.0;
    load_redis(&addr, &base);

    let run = |name: &str, args: &BenchArgs, insert: bool| {
        let report = if insert {
            run_insert(args)
        } else {
            run_bench(args)
        }
        .unwrap();
        println!("--- {name}");
        report.print(false);
        report
    };
    let mut args = base.clone();
    let read_only = run("read only, verify full, 10 x 1", &args, false);
    assert_eq!((read_only.errors, read_only.misses), (0, 0));
    args.inflight = 8;
    let pipelined = run("read only, verify full, 10 x 8", &args, false);
    assert_eq!(pipelined.errors, 0);

    let mut wrong = base.clone();
    wrong.max_size = 8192;
    assert!(run("wrong --max-size", &wrong, false).errors > 0);

    let mut zipf = base.clone();
    zipf.distribution = Some(Distribution::Zipfian);
    assert_eq!(run("zipfian reads", &zipf, false).errors, 0);

    let mut a = base.clone();
    a.workload = Workload::A;
    let mixed = run("workload a", &a, false);
    assert_eq!(mixed.errors, 0);
    assert!(mixed.writes > 0);

    let mut f = base.clone();
    f.workload = Workload::F;
    assert_eq!(run("workload f", &f, false).errors, 0);
    assert_eq!(run("insert", &base, true).errors, 0);

    let mut json = base.clone();
    json.verify = Some(Verify::Len);
    json.duration = 1.0;
    run("read only, verify len", &json, false).print(true);
}

/// Stores the data set `args` describes, with pipelined SETs.
fn load_redis(addr: &str, args: &BenchArgs) {
    let mut stream = TcpStream::connect(addr).expect("Redis is not running");
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    for batch in (0..args.keys).collect::<Vec<_>>().chunks(500) {
        let mut out = Vec::new();
        for &i in batch {
            let value = keys::value(args.seed, i, args.min_size, args.max_size);
            resp::encode_set(&mut out, &keys::key(args.seed, i), &value);
        }
        stream.write_all(&out).unwrap();
        for _ in batch {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
            assert_eq!(line, "+OK\r\n");
        }
    }
}
