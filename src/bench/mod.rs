//! Load generators: `nvkv bench` and `nvkv insert`.
//!
//! `--clients` TCP connections, each keeping up to `--inflight` pipelined
//! RESP requests outstanding, run for `--duration` seconds over `--threads`
//! client threads, each a mio event loop over its share of the connections.
//! Every request goes to a key of the data set `nvkv load` wrote, drawn
//! uniformly or from YCSB's scrambled zipfian. GETs are checked against the
//! value `load` stored (regenerated from the seed, see [`crate::keys`]);
//! SETs overwrite a key with random bytes of its loaded length, so the
//! lengths stay checkable after any number of writes.
//!
//! When the time is up, no new operation starts; replies still outstanding
//! are awaited for up to two seconds. Throughput is the operations
//! completed divided by the length of the issuing phase.

mod client;
mod local;
mod memcache;
mod plan;
mod report;
mod resp;
mod zipf;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use client::{Connection, Outcome, Worker};
pub use plan::{Distribution, Protocol, Verify, Workload};
use plan::{Mix, Plan};
pub use report::Report;

/// Longest wait for one TCP connection to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Options of `nvkv bench` and `nvkv insert`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Server address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:12345")]
    pub addr: String,
    /// TCP connections.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Seconds of issuing requests.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Requests outstanding per connection (pipelining depth).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub inflight: usize,
    /// Keys of the loaded data set that requests draw from.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub keys: u64,
    /// Seed of the loaded data set.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Smallest value length the data set was loaded with.
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    pub min_size: usize,
    /// Largest value length the data set was loaded with.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub max_size: usize,
    /// Client threads; 0 means min(clients, 2).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the report as one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// YCSB workload: the mix of reads and writes.
    #[arg(long, value_enum, default_value_t = Workload::C)]
    pub workload: Workload,
    /// Fraction of operations that write, overriding the workload's mix.
    #[arg(long, value_name = "F")]
    pub write_fraction: Option<f64>,
    /// Key distribution [default: uniform; zipfian for workload d].
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Skew of the zipfian distribution, in [0, 1).
    #[arg(long, value_name = "THETA", default_value_t = 0.99)]
    pub zipf_theta: f64,
    /// How GET replies are checked [default: full if the run does not
    /// write, else len].
    #[arg(long, value_enum)]
    pub verify: Option<Verify>,
    /// Wire protocol: RESP (nvkv, Redis) or memcached's text protocol (to
    /// measure memcached the same way).
    #[arg(long, value_enum, default_value_t = Protocol::Resp)]
    pub protocol: Protocol,
    /// Offer this many operations per second over all connections, open
    /// loop: each operation has an intended send time on a fixed schedule
    /// and its latency counts from then (so a slow reply does not hide the
    /// requests that should have gone out meanwhile). `--inflight` caps the
    /// requests outstanding per connection; operations due while every
    /// connection is at the cap wait and keep their intended time.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// Write every key 0..N once, with the value `nvkv load` gives it, then
    /// stop (or stop at --duration): loads a peer (Redis, memcached) with
    /// the data set of an nvkv store, so that GETs can be checked alike.
    #[arg(long)]
    pub fill: bool,
    #[command(flatten)]
    pub local: crate::server::local::LocalArgs,
}

/// Runs the benchmark `args` describe against a server loaded by
/// `nvkv load` with the same keys, seed and sizes.
///
/// # Errors
///
/// Invalid arguments, no server accepting connections at `--addr`, or
/// (before a run that writes) none of a sample of the data set's keys on
/// the server. Failures during the run (error replies, wrong values,
/// dropped connections) are counted in the report instead; see
/// [`Report::failure`].
pub fn run_bench(args: &BenchArgs) -> Result<Report> {
    run(args, Plan::new(args, None)?)
}

/// Like [`run_bench`] with every operation a SET: overwrites random loaded
/// keys with random data of the same size.
///
/// # Errors
///
/// As [`run_bench`].
pub fn run_insert(args: &BenchArgs) -> Result<Report> {
    run(args, Plan::new(args, Some(Mix::WRITE_ONLY))?)
}

fn run(args: &BenchArgs, plan: Plan) -> Result<Report> {
    if args.local.local.is_some() {
        return local::run(args, plan);
    }
    // A write to a key of another data set adds a key instead of replacing
    // one: a wrong --seed would grow the store, and the run would look fine.
    if plan.mix.writes() && plan.fill.is_none() && plan.verify != Verify::None {
        probe(&plan)?;
    }
    let threads = thread_count(args);
    let mut shares: Vec<Vec<Connection>> = (0..threads).map(|_| Vec::new()).collect();
    for connection in connect_all(&args.addr, args.clients, args.seed)? {
        shares[connection.id % threads].push(connection);
    }
    // Each thread offers its connections' share of the rate.
    let workers = shares
        .into_iter()
        .map(|share| {
            let rate = plan
                .rate
                .map(|r| r * share.len() as f64 / args.clients as f64);
            Worker::new(&plan, share, rate)
        })
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let deadline = start + plan.duration;
    let outcomes = thread::scope(|scope| {
        let handles = workers
            .into_iter()
            .enumerate()
            .map(|(t, worker)| {
                thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(scope, move || worker.run(deadline))
                    .context("starting a client thread")
            })
            .collect::<Vec<_>>();
        handles
            .into_iter()
            .map(|handle| {
                handle?
                    .join()
                    .map_err(|_| anyhow!("a client thread panicked"))?
            })
            .collect::<Result<Vec<Outcome>>>()
    })?;

    let mut stats = report::Stats::new()?;
    let mut stopped = start;
    for outcome in outcomes {
        stats.merge(outcome.stats)?;
        stopped = stopped.max(outcome.stopped);
    }
    let mut report = stats.report(stopped - start, args.clients, args.inflight);
    report.verified = plan.verify != Verify::None;
    report.rate = plan.rate;
    Ok(report)
}

/// Keys of the data set read by [`probe`].
const PROBES: u64 = 16;

/// Reads a sample of the data set's keys, spread over it, and fails unless
/// at least one is on the server and every one found has its loaded length.
fn probe(plan: &Plan) -> Result<()> {
    let addr = &plan.addr;
    let (_, mut stream) = connect_first(addr)?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let n = PROBES.min(plan.key_count);
    let indexes: Vec<u64> = (0..n).map(|i| i * plan.key_count / n).collect();
    let mut requests = Vec::new();
    for &i in &indexes {
        plan.protocol
            .encode_get(&mut requests, &crate::keys::key(plan.seed, i));
    }
    io::Write::write_all(&mut stream, &requests)
        .with_context(|| format!("sending GETs to {addr}"))?;
    let mut input = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    let mut found = 0;
    for &i in &indexes {
        loop {
            let Some((reply, used)) = plan.protocol.parse(&input)? else {
                let got = io::Read::read(&mut stream, &mut chunk)
                    .with_context(|| format!("reading from {addr}"))?;
                ensure!(got > 0, "{addr} closed the connection");
                input.extend_from_slice(&chunk[..got]);
                continue;
            };
            found += judge_probe(plan, i, reply)? as u64;
            input.drain(..used);
            break;
        }
    }
    probe_found(plan, found, n, addr)
}

/// Checks the reply to a probe's GET of key `index`: whether the key is
/// there, and an error when it has another length than the loaded one.
fn judge_probe(plan: &Plan, index: u64, reply: resp::Reply<'_>) -> Result<bool> {
    let key = || String::from_utf8_lossy(&crate::keys::key(plan.seed, index)).into_owned();
    match reply {
        resp::Reply::Bulk(value) => {
            let expected =
                crate::keys::ValueGen::new(plan.seed, index, plan.min_size, plan.max_size).len();
            ensure!(
                value.len() == expected,
                "key {}: length {}, expected {expected}: is the server loaded with this \
                 --seed, --min-size and --max-size?",
                key(),
                value.len()
            );
            Ok(true)
        }
        resp::Reply::Nil => Ok(false),
        other => bail!("GET {}: unexpected reply {other:?}", key()),
    }
}

/// Fails unless the probe found one of its `n` keys on `on`.
fn probe_found(plan: &Plan, found: u64, n: u64, on: &str) -> Result<()> {
    ensure!(
        found > 0,
        "none of {n} keys of the data set (--keys {}, --seed {}) is on {on}: \
         is the server loaded with them (`nvkv load`)?",
        plan.key_count,
        plan.seed
    );
    Ok(())
}

/// `--threads`, or min(clients, 2); never more threads than connections.
fn thread_count(args: &BenchArgs) -> usize {
    match args.threads {
        0 => args.clients.min(2),
        n => n.min(args.clients),
    }
}

/// Opens `count` connections to `addr`, failing fast if the server is not
/// there. Connection `i` gets the random sequence `seed` jumped `i` times,
/// so connections never share keys or operations.
fn connect_all(addr: &str, count: usize, seed: u64) -> Result<Vec<Connection>> {
    let (target, first) = connect_first(addr)?;
    let mut streams = vec![first];
    for id in 1..count {
        let stream = connect(target)
            .map_err(|e| anyhow!("cannot connect to {addr} (connection {id}): {e}"))?;
        streams.push(stream);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut connections = Vec::with_capacity(count);
    for (id, stream) in streams.into_iter().enumerate() {
        connections.push(Connection {
            id,
            stream: mio::net::TcpStream::from_std(stream),
            rng: rng.clone(),
        });
        rng.jump();
    }
    Ok(connections)
}

/// Connects to the first address `addr` resolves to that accepts.
fn connect_first(addr: &str) -> Result<(SocketAddr, std::net::TcpStream)> {
    let targets = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?;
    let mut last_error = None;
    for target in targets {
        match connect(target) {
            Ok(stream) => return Ok((target, stream)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => anyhow!("cannot connect to {addr}: {e}"),
        None => anyhow!("cannot connect to {addr}: it resolves to no address"),
    })
}

/// A non-blocking connection with Nagle's algorithm off.
fn connect(target: SocketAddr) -> io::Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}
