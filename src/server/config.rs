//! What the server runs with: plain values, every default resolved, built
//! once at start from `serve`'s flags (the command line after `--config`'s
//! entries, see `src/config.rs`) and the machine. Start-up reads
//! `ServeArgs`; the threads read this.

use std::time::Duration;

use super::conn::ConnLimits;
use super::{Durability, IoFeed, PollMode, ServeArgs};
use crate::io::{EngineKind, FaultSpec};
use crate::store::keyspace;

pub(super) struct ServeConfig {
    pub pollers: PollerConfig,
    pub conns: ConnConfig,
    pub durability: Durability,
    /// The write path's settings, for each poller's keyspace.
    pub write: keyspace::Config,
}

/// How the pollers run.
pub(super) struct PollerConfig {
    pub count: usize,
    pub max_io_depth: usize,
    pub engine: EngineKind,
    pub poll: PollMode,
    pub pinned: bool,
    /// Why the pollers and connection threads are as many as they are.
    pub threads_choice: String,
    /// Why the poll mode and pinning are what they are.
    pub poll_choice: String,
    /// The pollers run inside the connection threads (`--inline-io`), and why.
    pub inline: bool,
    pub inline_choice: String,
    /// How long an idle adaptive poller polls before it sleeps, and one
    /// with reads in flight.
    pub spin: Duration,
    pub loaded_spin: Duration,
    pub io_feed: IoFeed,
    /// With `--io-feed waves`: the longest a read waits for the wave ahead.
    pub wave_hold: Option<Duration>,
    pub inject_faults: Option<FaultSpec>,
}

/// How the connection threads run.
pub(super) struct ConnConfig {
    pub threads: usize,
    pub limits: ConnLimits,
    /// `--max-clients`, and what CONFIG SET maxclients made it.
    pub max_clients: std::sync::atomic::AtomicUsize,
    pub max_key_size: u64,
    pub max_value_size: u64,
    pub maxmemory_clients: u64,
    /// `--timeout` in seconds (0: never), and what CONFIG SET timeout
    /// made it.
    pub timeout: std::sync::atomic::AtomicU64,
    /// `--requirepass`, and what CONFIG SET requirepass made it (`None`:
    /// none, set again with an empty value).
    pub requirepass: std::sync::RwLock<Option<String>>,
    /// The password came from `--requirepass-file`: CONFIG REWRITE leaves
    /// it there, out of the config file.
    pub password_file: bool,
    pub protected_mode: bool,
    /// How long a thread awaiting replies polls before it sleeps.
    pub loaded_spin: Duration,
    /// Replies awaited below which a thread sleeps at once
    /// (`--spin-depth`), and why.
    pub spin_depth: u64,
    pub spin_depth_choice: String,
    /// Sockets are read and written through io_uring (`--socket-io`), and why.
    pub uring_sockets: bool,
    pub socket_io_choice: String,
}

impl ConnConfig {
    /// The password clients must give, if any.
    pub fn password(&self) -> Option<String> {
        self.requirepass.read().ok().and_then(|p| p.clone())
    }

    /// Whether clients must give a password.
    pub fn needs_password(&self) -> bool {
        self.requirepass.read().is_ok_and(|p| p.is_some())
    }

    /// The idle time after which a client is closed (`None`: never).
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        let s = self.timeout.load(std::sync::atomic::Ordering::Relaxed);
        (s > 0).then(|| std::time::Duration::from_secs(s))
    }
}

impl ServeConfig {
    /// From `args`, settled (engine, poll mode, pinning and feed chosen)
    /// and with the password read.
    pub(super) fn new(args: &ServeArgs) -> Self {
        let poll = args.poll();
        let loaded_spin = match poll {
            PollMode::Busy => Duration::MAX,
            PollMode::Adaptive => Duration::from_micros(args.loaded_spin_us),
        };
        ServeConfig {
            pollers: PollerConfig {
                count: args.poller_threads(),
                max_io_depth: args.max_io_depth,
                engine: args.engine(),
                poll,
                pinned: args.pinned(),
                threads_choice: (args.threads.as_ref())
                    .map(|t| t.why.clone())
                    .unwrap_or_default(),
                poll_choice: args.poll_choice.clone(),
                inline: args.inline(),
                inline_choice: args
                    .inline
                    .as_ref()
                    .map(|i| i.1.clone())
                    .unwrap_or_default(),
                spin: Duration::from_micros(args.spin_us),
                loaded_spin: Duration::from_micros(args.loaded_spin_us),
                io_feed: args.io_feed,
                wave_hold: (args.io_feed == IoFeed::Waves)
                    .then(|| Duration::from_micros(args.wave_hold_us)),
                inject_faults: args.inject_faults.clone(),
            },
            conns: ConnConfig {
                threads: args.conn_threads(),
                limits: ConnLimits::new(
                    args.max_bulk,
                    args.max_args,
                    args.max_output_buffer,
                    args.max_pipeline,
                    args.max_query_buffer,
                ),
                max_clients: args.max_clients.into(),
                max_key_size: args.max_key_size,
                max_value_size: args.max_value_size,
                maxmemory_clients: args.maxmemory_clients,
                timeout: args.timeout.into(),
                // Empty, as Redis's: no password.
                requirepass: args.requirepass.clone().filter(|p| !p.is_empty()).into(),
                password_file: args.requirepass_file.is_some(),
                protected_mode: args.protected_mode,
                loaded_spin,
                spin_depth: args.spin.as_ref().map_or(0, |s| s.0),
                spin_depth_choice: (args.spin.as_ref())
                    .map(|s| s.1.clone())
                    .unwrap_or_default(),
                uring_sockets: args.uring_sockets(),
                socket_io_choice: (args.socket.as_ref())
                    .map(|s| s.1.clone())
                    .unwrap_or_default(),
            },
            durability: args.durability,
            write: keyspace::Config {
                sync: args.durability == Durability::Sync,
                commit_interval: Duration::from_millis(args.commit_interval_ms),
                compact_below: args.compact_below,
                pollers: args.poller_threads(),
            },
        }
    }
}
