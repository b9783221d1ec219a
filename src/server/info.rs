//! INFO: Redis's section layout (server, clients, persistence, stats,
//! keyspace) plus an `nvkv` section with per-poller statistics. As Redis 7:
//! several sections at once, each once and in the fixed order, `default`
//! (what plain INFO shows), `all` and `everything` (every section but the
//! per-segment detail, which comes only by name), sections separated by a
//! blank line.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::counters::{self, keys};
use super::Shared;
use crate::store::IndexState;

/// The Redis version nvkv answers as (INFO's `redis_version`, HELLO's
/// `version`): the release whose commands and replies it follows.
pub(super) const REDIS_VERSION: &str = "7.0.0";

/// The sections plain INFO (and `INFO default`) shows.
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
    "nvkv",
];

/// Whether INFO with the section names `asked` shows section `name`.
fn wants(asked: &[&[u8]], name: &str) -> bool {
    let default = asked.is_empty();
    default && DEFAULT.contains(&name)
        || asked.iter().any(|a| {
            a.eq_ignore_ascii_case(name.as_bytes())
                || (a.eq_ignore_ascii_case(b"default") && DEFAULT.contains(&name))
                || ((a.eq_ignore_ascii_case(b"all") || a.eq_ignore_ascii_case(b"everything"))
                    && name != "segments")
        })
}

/// Renders INFO with the section names `asked` (none: the default ones).
pub(super) fn render(sh: &Shared, asked: &[&[u8]]) -> String {
    let mut s = String::new();
    let section = asked;
    let table = |s: &mut String, name: &str| {
        for (field, v) in counters::section(sh, name) {
            let _ = write!(s, "{field}:{v}\r\n");
        }
    };
    if wants(section, "server") {
        let _ = write!(
            s,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nnvkv_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nengine:{:?}\r\nio_feed:{}\r\nio_threads:{}\r\ntcp_threads:{}\r\nthreads_choice:{}\r\npoll:{}\r\npinned:{}\r\npoll_choice:{}\r\ninline_io:{}\r\ninline_io_choice:{}\r\nsocket_io:{}\r\nsocket_io_choice:{}\r\nspin_depth:{}\r\nspin_depth_choice:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            super::repl::run_id(),
            sh.addr.port(),
            sh.started.elapsed().as_secs(),
            sh.cfg.pollers.engine,
            sh.cfg.pollers.io_feed.name(),
            sh.cfg.pollers.count,
            sh.cfg.conns.threads,
            sh.cfg.pollers.threads_choice,
            match sh.cfg.pollers.poll {
                super::PollMode::Busy => "busy",
                super::PollMode::Adaptive => "adaptive",
            },
            if sh.cfg.pollers.pinned { "yes" } else { "no" },
            sh.cfg.pollers.poll_choice,
            if sh.cfg.pollers.inline { "yes" } else { "no" },
            sh.cfg.pollers.inline_choice,
            if sh.cfg.conns.uring_sockets { "uring" } else { "epoll" },
            sh.cfg.conns.socket_io_choice,
            sh.cfg.conns.spin_depth,
            sh.cfg.conns.spin_depth_choice,
        );
    }
    if wants(section, "clients") {
        s.push_str("# Clients\r\n");
        table(&mut s, "clients");
        let _ = write!(
            s,
            "maxclients:{}\r\nmaxmemory_clients:{}\r\n\r\n",
            sh.cfg.conns.max_clients.load(Relaxed),
            sh.cfg.conns.maxmemory_clients,
        );
    }
    if wants(section, "memory") {
        let rss = rss_bytes();
        let _ = write!(
            s,
            "# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\nused_memory_human:{:.2}M\r\nmaxmemory:{}\r\nmaxmemory_policy:{}\r\nmaxmemory_samples:{}\r\n\r\n",
            rss as f64 / 1048576.0,
            sh.eviction.maxmemory(),
            sh.eviction.policy(),
            sh.eviction.samples.load(Relaxed),
        );
    }
    if wants(section, "persistence") {
        let r = &sh.open_report;
        let state = match r.state {
            IndexState::Clean => "clean",
            IndexState::Rebuilt => "rebuilt",
        };
        let _ = write!(
            s,
            "# Persistence\r\nloading:{}\r\n{}index_state_at_start:{state}\r\nrecovery_secs:{:.3}\r\nrecovery_bytes_read:{}\r\nrecovery_segments_scanned:{}\r\nrecovery_records_scanned:{}\r\nrecovery_segments_erased:{}\r\n\r\n",
            u8::from(sh.repl.loading()),
            sh.saves.info(),
            r.secs,
            r.bytes_scanned,
            r.segments_scanned,
            r.records_scanned,
            r.segments_erased
        );
    }
    if wants(section, "stats") {
        s.push_str("# Stats\r\n");
        table(&mut s, "stats");
        s.push_str("\r\n");
    }
    if wants(section, "replication") {
        super::repl::info(sh, &mut s);
    }
    if wants(section, "cpu") {
        // Redis's fields, then the busy time of the server's threads.
        s.push_str("# CPU\r\n");
        table(&mut s, "cpu");
        for (kind, i, us) in counters::thread_cpu(sh) {
            let _ = write!(
                s,
                "{kind}{i}_cpu:{}\r\n",
                counters::Shown(us, counters::Unit::Micros)
            );
        }
        s.push_str("\r\n");
    }
    // As Redis: none loaded (nvkv has no modules).
    if wants(section, "modules") {
        s.push_str("# Modules\r\n\r\n");
    }
    // Like Redis: in `INFO all` / `INFO commandstats`, not in plain INFO.
    if wants(section, "commandstats") {
        s.push_str("# Commandstats\r\n");
        for c in counters::commands_since_reset(sh)
            .iter()
            .filter(|c| c.calls > 0 || c.rejected > 0 || c.failed > 0)
        {
            let _ = write!(
                s,
                "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls={},failed_calls={}\r\n",
                c.name,
                c.calls,
                c.usec,
                c.usec as f64 / c.calls.max(1) as f64,
                c.rejected,
                c.failed
            );
        }
        s.push_str("\r\n");
    }
    // Error replies by code, as Redis 7: in plain INFO too.
    if wants(section, "errorstats") {
        s.push_str("# Errorstats\r\n");
        for (code, n) in counters::errors_since_reset(sh) {
            let _ = write!(s, "errorstat_{code}:count={n}\r\n");
        }
        s.push_str("\r\n");
    }
    if wants(section, "latencystats") {
        s.push_str("# Latencystats\r\n");
        for c in counters::commands_since_reset(sh)
            .iter()
            .filter(|c| c.calls > 0)
        {
            let _ = write!(
                s,
                "latency_percentiles_usec_{}:p50={},p99={},p99.9={}\r\n",
                c.name.to_ascii_lowercase(),
                c.percentile(0.5),
                c.percentile(0.99),
                c.percentile(0.999)
            );
        }
        s.push_str("\r\n");
    }
    // As Redis without cluster mode: tools read `cluster_enabled` to
    // tell a cluster node (nvkv spreads keys over pollers, not nodes).
    if wants(section, "cluster") {
        s.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if wants(section, "keyspace") {
        // As Redis: the keys with a TTL, and the sweep's estimate of their
        // mean TTL left (each poller's, weighted by its keys with a TTL).
        let expires = sh
            .poller_stats
            .iter()
            .map(|p| p.store.expires.load(Relaxed))
            .sum::<u64>();
        let weighted: u128 = sh
            .poller_stats
            .iter()
            .map(|p| {
                p.store.expires.load(Relaxed) as u128 * p.store.avg_ttl_ms.load(Relaxed) as u128
            })
            .sum();
        let avg_ttl = if expires == 0 {
            0
        } else {
            (weighted / expires as u128) as u64
        };
        s.push_str("# Keyspace\r\n");
        let keys = keys(sh);
        if keys > 0 {
            let _ = write!(s, "db0:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n");
        }
        s.push_str("\r\n");
    }
    if wants(section, "nvkv") {
        let rates = sh
            .sampler
            .rates
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let sum = |f: fn(&crate::store::keyspace::Counters) -> u64| -> u64 {
            sh.poller_stats.iter().map(|p| f(&p.store)).sum()
        };
        let user = sum(|c| c.user_bytes.load(Relaxed));
        let moved = sum(|c| c.compact_bytes.load(Relaxed));
        let wa = if user == 0 {
            0.0
        } else {
            (user + moved) as f64 / user as f64
        };
        s.push_str("# Nvkv\r\n");
        table(&mut s, "nvkv");
        let _ = write!(
            s,
            "write_amplification:{wa:.2}\r\ndurability:{:?}\r\npollers:{}\r\n",
            sh.cfg.durability,
            sh.poller_stats.len()
        );
        for (i, p) in sh.poller_stats.iter().enumerate() {
            let r = rates.get(i).copied().unwrap_or_default();
            let wakes = p.wakeups.counts();
            let _ = write!(
                s,
                "poller{i}:loops_per_sec={:.0},submits_per_sec={:.0},reads_per_sec={:.0},mean_batch={:.2},max_batch={},in_flight={},parks={},wakeups={},wake_p50_us={},wake_p99_us={},reads={},io_errors={}\r\n",
                r.loops_per_sec,
                r.submits_per_sec,
                r.reads_per_sec,
                r.mean_batch,
                r.max_batch,
                p.in_flight.load(Relaxed),
                p.parks.load(Relaxed),
                wakes.iter().sum::<u64>(),
                super::stats::percentile(&wakes, 0.5),
                super::stats::percentile(&wakes, 0.99),
                p.reads.load(Relaxed),
                p.store.io_errors.load(Relaxed),
            );
        }
        s.push_str("\r\n");
    }
    if wants(section, "segments") {
        // Per-segment detail, only on request: shard and live bytes.
        let sp = &sh.space;
        s.push_str("# Segments\r\n");
        for g in 0..sp.live.len() {
            let shard = sp.shard[g].load(Relaxed);
            if shard != crate::store::NO_SHARD {
                let _ = write!(
                    s,
                    "seg{g}:shard={shard},live={},min_seq={}\r\n",
                    sp.live[g].load(Relaxed),
                    sp.min_seq[g].load(Relaxed)
                );
            }
        }
        s.push_str("\r\n");
    }
    // A blank line between sections, none after the last, as Redis.
    if s.ends_with("\r\n\r\n") {
        s.truncate(s.len() - 2);
    }
    s
}

/// Resident set size of the process (the mmapped index pages in use count).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
