//! What a run does: the operation mix, the key distribution, the checks on
//! replies, resolved once from the command line and shared by every client
//! thread.

use std::time::Duration;

use anyhow::{ensure, Result};
use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::zipf::ScrambledZipfian;
use super::BenchArgs;

/// How long outstanding replies are waited for after the deadline.
const DRAIN: Duration = Duration::from_secs(2);

/// Random bytes that write payloads are cut from, beyond the largest value.
const WRITE_DATA_SLACK: usize = 1 << 20;

/// A YCSB core workload, or a mix given by `--write-fraction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Update heavy: 50% reads, 50% updates.
    A,
    /// Read mostly: 95% reads, 5% updates.
    B,
    /// Read only.
    C,
    /// 95% reads, 5% updates, zipfian keys unless `--distribution` says
    /// otherwise (YCSB D inserts new keys and reads the latest ones; here
    /// the hot set is fixed).
    D,
    /// 50% reads, 50% read-modify-writes (a GET then a SET of the same key,
    /// counted as one operation).
    F,
    /// Reads, and as many blind writes as `--write-fraction` (required)
    /// says.
    Custom,
}

/// How request keys are drawn from the loaded data set.
/// The wire protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// RESP2: nvkv, Redis.
    Resp,
    /// memcached's text protocol: memcached (with extstore), for comparison.
    Memcache,
}

impl Protocol {
    /// Appends a GET of `key` to `out`.
    pub fn encode_get(self, out: &mut Vec<u8>, key: &[u8]) {
        match self {
            Protocol::Resp => super::resp::encode_get(out, key),
            Protocol::Memcache => super::memcache::encode_get(out, key),
        }
    }

    /// Appends a SET of `key` to `value` to `out`.
    pub fn encode_set(self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        match self {
            Protocol::Resp => super::resp::encode_set(out, key, value),
            Protocol::Memcache => super::memcache::encode_set(out, key, value),
        }
    }

    /// The first complete reply in `buf` and its length, as RESP replies.
    pub fn parse(
        self,
        buf: &[u8],
    ) -> Result<Option<(super::resp::Reply<'_>, usize)>, super::resp::ProtocolError> {
        match self {
            Protocol::Resp => super::resp::parse(buf),
            Protocol::Memcache => super::memcache::parse(buf),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled zipfian, skewed by `--zipf-theta`.
    Zipfian,
}

/// How much of a GET reply is checked against the loaded data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Verify {
    /// Length and every byte.
    Full,
    /// Length only: what survives overwrites by `insert` or write mixes.
    Len,
    /// Nothing.
    None,
}

/// The kinds of operations a run issues, and in which proportion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Probability that an operation writes.
    pub write_fraction: f64,
    /// Whether writes are read-modify-writes (GET then SET) or blind SETs.
    pub read_modify_write: bool,
}

impl Mix {
    /// Blind SETs only: the mix of `nvkv insert`.
    pub const WRITE_ONLY: Mix = Mix {
        write_fraction: 1.0,
        read_modify_write: false,
    };

    fn of(workload: Workload) -> Mix {
        let (write_fraction, read_modify_write) = match workload {
            Workload::A => (0.5, false),
            Workload::B | Workload::D => (0.05, false),
            Workload::C | Workload::Custom => (0.0, false),
            Workload::F => (0.5, true),
        };
        Mix {
            write_fraction,
            read_modify_write,
        }
    }

    pub fn writes(&self) -> bool {
        self.write_fraction > 0.0
    }
}

/// Draws key indexes in `[0, n)`.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Uniform over `n` keys.
    Uniform(u64),
    /// Scrambled zipfian.
    Zipfian(ScrambledZipfian),
}

impl KeyChooser {
    /// The index of the next request's key.
    pub fn next<R: Rng>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform(n) => rng.gen_range(0..*n),
            KeyChooser::Zipfian(zipf) => zipf.next(rng),
        }
    }
}

/// Everything a client thread needs to know about the run.
#[derive(Debug)]
pub struct Plan {
    /// The server, as given on the command line.
    pub addr: String,
    /// Data set seed: keys and loaded values derive from it.
    pub seed: u64,
    /// Smallest loaded value length.
    pub min_size: usize,
    /// Largest loaded value length.
    pub max_size: usize,
    /// Requests outstanding per connection.
    pub inflight: usize,
    /// Reads versus writes.
    pub mix: Mix,
    /// Which keys requests go to.
    pub keys: KeyChooser,
    /// Checks on GET replies.
    pub verify: Verify,
    /// Length of the issuing phase.
    pub duration: Duration,
    /// Longest wait for outstanding replies after the issuing phase.
    pub drain: Duration,
    /// Random bytes that SET payloads are sliced from (empty without writes).
    pub write_data: Vec<u8>,
    pub protocol: Protocol,
    /// `--fill`: the next key to write with its loaded value (every key
    /// once, in order, shared by all connections), instead of random keys.
    pub fill: Option<std::sync::atomic::AtomicU64>,
    /// Number of keys of the data set.
    pub key_count: u64,
    /// `--rate`: operations per second over all connections (open loop).
    pub rate: Option<f64>,
}

impl Plan {
    /// Checks `args` and resolves the workload's defaults; `mix` overrides
    /// the workload's mix (for `insert`).
    pub fn new(args: &BenchArgs, mix: Option<Mix>) -> Result<Plan> {
        validate(args)?;
        let mix = if args.fill {
            Mix::WRITE_ONLY
        } else {
            mix.unwrap_or_else(|| workload_mix(args))
        };
        let distribution = args.distribution.unwrap_or(match args.workload {
            Workload::D => Distribution::Zipfian,
            _ => Distribution::Uniform,
        });
        let keys = match distribution {
            Distribution::Uniform => KeyChooser::Uniform(args.keys),
            Distribution::Zipfian => {
                KeyChooser::Zipfian(ScrambledZipfian::new(args.keys, args.zipf_theta))
            }
        };
        let verify = args.verify.unwrap_or(if mix.writes() {
            Verify::Len
        } else {
            Verify::Full
        });
        Ok(Plan {
            addr: args.addr.clone(),
            seed: args.seed,
            min_size: args.min_size,
            max_size: args.max_size,
            inflight: args.inflight,
            mix,
            keys,
            verify,
            duration: Duration::from_secs_f64(args.duration),
            drain: DRAIN,
            protocol: args.protocol,
            fill: args.fill.then(|| std::sync::atomic::AtomicU64::new(0)),
            key_count: args.keys,
            rate: args.rate,
            write_data: if mix.writes() {
                random_bytes(args.seed, args.max_size + WRITE_DATA_SLACK)
            } else {
                Vec::new()
            },
        })
    }
}

/// The workload's mix, with `--write-fraction` applied.
fn workload_mix(args: &BenchArgs) -> Mix {
    let mut mix = Mix::of(args.workload);
    if let Some(fraction) = args.write_fraction {
        mix.write_fraction = fraction;
    }
    mix
}

fn validate(args: &BenchArgs) -> Result<()> {
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.inflight > 0, "--inflight must be at least 1");
    ensure!(args.keys > 0, "--keys must be at least 1");
    if let Some(rate) = args.rate {
        ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of operations per second"
        );
        ensure!(!args.fill, "--rate and --fill do not go together");
    }
    ensure!(
        args.duration.is_finite() && args.duration > 0.0,
        "--duration must be a positive number of seconds"
    );
    ensure!(
        args.min_size <= args.max_size,
        "--min-size ({}) exceeds --max-size ({})",
        args.min_size,
        args.max_size
    );
    ensure!(
        (0.0..1.0).contains(&args.zipf_theta),
        "--zipf-theta must be in [0, 1)"
    );
    if let Some(fraction) = args.write_fraction {
        ensure!(
            (0.0..=1.0).contains(&fraction),
            "--write-fraction must be in [0, 1]"
        );
    }
    ensure!(
        args.workload != Workload::Custom || args.write_fraction.is_some(),
        "--workload custom needs --write-fraction"
    );
    Ok(())
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7772_6974_6573); // "writes"
    let mut bytes = vec![0; len];
    rng.fill_bytes(&mut bytes);
    bytes
}
