//! The server's figures in one table: each one's INFO section and field,
//! its Prometheus name, help and kind, and where its value comes from.
//! INFO (`info.rs`) and `/metrics` (`metrics.rs`) both read this table,
//! so a figure added here shows in both, with the same value.

use std::sync::atomic::Ordering::Relaxed;

use super::stats::{rusage_micros, ConnStats, PollerStats, ThreadClock, LATENCY_BOUNDS_US};
use super::Shared;
use crate::store::keyspace::Counters;

/// How Prometheus reads a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Only grows (its name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// What a figure's number counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    /// Things, bytes: shown as the integer.
    Count,
    /// Microseconds of CPU time: shown as seconds, INFO with six decimals
    /// as Redis's `used_cpu_*`.
    Micros,
}

/// A figure's value as INFO shows it.
pub(super) struct Shown(pub u64, pub Unit);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Unit::Count => write!(f, "{}", self.0),
            Unit::Micros => write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000),
        }
    }
}

/// One figure of the server.
pub(super) struct Figure {
    /// INFO section (lower case) and field; `None`: only in `/metrics`.
    pub info: Option<(&'static str, &'static str)>,
    /// Prometheus name; `None`: only in INFO.
    pub metric: Option<&'static str>,
    pub help: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub value: fn(&Shared) -> u64,
}

/// Sums a figure of every connection thread.
fn conns(sh: &Shared, f: fn(&ConnStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    sh.conn_stats.iter().map(|c| f(c).load(Relaxed)).sum()
}

/// Sums a figure of every poller.
fn pollers(sh: &Shared, f: fn(&PollerStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    sh.poller_stats.iter().map(|p| f(p).load(Relaxed)).sum()
}

/// Sums a figure of every poller's keyspace.
fn keyspaces(sh: &Shared, f: fn(&Counters) -> &std::sync::atomic::AtomicU64) -> u64 {
    sh.poller_stats
        .iter()
        .map(|p| f(&p.store).load(Relaxed))
        .sum()
}

/// CPU time of every poller, or of every connection thread, in µs.
fn threads_cpu<T>(threads: &[crossbeam_utils::CachePadded<T>], f: fn(&T) -> &ThreadClock) -> u64 {
    threads.iter().map(|t| f(t).micros()).sum()
}

/// The busy time of each server thread, in µs: `("poller", i, µs)` and
/// `("conn", i, µs)`. INFO shows it as `<kind><i>_cpu`, `/metrics` as
/// `nvkv_thread_cpu_seconds_total{thread="<kind><i>"}`.
pub(super) fn thread_cpu(sh: &Shared) -> Vec<(&'static str, usize, u64)> {
    let pollers = (sh.poller_stats.iter().enumerate()).map(|(i, p)| ("poller", i, p.cpu.micros()));
    let conns = (sh.conn_stats.iter().enumerate()).map(|(i, c)| ("conn", i, c.cpu.micros()));
    pollers.chain(conns).collect()
}

/// The wake-up time a parked poller should stay within.
const WAKE_TARGET_US: u64 = 50;

/// Doorbell wake-ups of every poller that took more than `over_us`
/// (0: all of them).
fn wakeups(sh: &Shared, over_us: u64) -> u64 {
    let first = LATENCY_BOUNDS_US.partition_point(|&b| b <= over_us);
    (sh.poller_stats.iter())
        .map(|p| p.wakeups.counts()[first..].iter().sum::<u64>())
        .sum()
}

/// Live keys over all pollers.
pub(super) fn keys(sh: &Shared) -> u64 {
    keyspaces(sh, |c| &c.keys)
}

use Kind::{Counter, Gauge};

macro_rules! figure {
    ($section:literal . $field:literal, $metric:expr, $kind:expr, $help:literal, $value:expr) => {
        Figure {
            info: Some(($section, $field)),
            metric: $metric,
            help: $help,
            kind: $kind,
            unit: Unit::Count,
            value: $value,
        }
    };
}

/// A CPU time: a counter of microseconds, shown as seconds.
macro_rules! cpu {
    ($field:literal, $metric:literal, $help:literal, $value:expr) => {
        Figure {
            info: Some(("cpu", $field)),
            metric: Some($metric),
            help: $help,
            kind: Counter,
            unit: Unit::Micros,
            value: $value,
        }
    };
}

/// Every figure, in INFO's order within each section.
pub(super) static FIGURES: &[Figure] = &[
    figure!("clients"."connected_clients", Some("nvkv_connected_clients"), Gauge,
        "Open client connections", |sh| conns(sh, |c| &c.connections)),
    figure!("clients"."client_memory", Some("nvkv_client_memory_bytes"), Gauge,
        "Bytes client connections hold (buffers, replies owed, requests in flight)",
        |sh| sh.client_memory.load(Relaxed)),
    figure!("stats"."total_connections_received", Some("nvkv_connections_received_total"), Counter,
        "Connections accepted", |sh| conns(sh, |c| &c.accepted)),
    figure!("stats"."total_commands_processed", Some("nvkv_commands_processed_total"), Counter,
        "Commands executed", |sh| conns(sh, |c| &c.commands)),
    figure!("stats"."total_net_input_bytes", Some("nvkv_net_input_bytes_total"), Counter,
        "Bytes read from clients", |sh| conns(sh, |c| &c.net_in)),
    figure!("stats"."total_net_output_bytes", Some("nvkv_net_output_bytes_total"), Counter,
        "Bytes written to clients", |sh| conns(sh, |c| &c.net_out)),
    figure!("stats"."keyspace_hits", Some("nvkv_keyspace_hits_total"), Counter,
        "GETs that found their key", |sh| pollers(sh, |p| &p.hits)),
    figure!("stats"."keyspace_misses", Some("nvkv_keyspace_misses_total"), Counter,
        "GETs that found nothing", |sh| pollers(sh, |p| &p.misses)),
    figure!("stats"."total_error_replies", Some("nvkv_error_replies_total"), Counter,
        "Error replies sent", |sh| sh.conn_stats.iter().map(|c| c.cmds.error_replies.load(Relaxed)).sum()),
    figure!("stats"."protocol_errors", Some("nvkv_protocol_errors_total"), Counter,
        "Malformed requests", |sh| conns(sh, |c| &c.protocol_errors)),
    figure!("stats"."io_errors", Some("nvkv_io_errors_total"), Counter,
        "Device operations that failed", |sh| keyspaces(sh, |c| &c.io_errors)),
    figure!("stats"."corrupt_records", Some("nvkv_corrupt_records_total"), Counter,
        "Records that failed their checksum or key check", |sh| pollers(sh, |p| &p.corrupt_records)),
    figure!("stats"."rejected_connections", Some("nvkv_rejected_connections_total"), Counter,
        "Connections turned away by --max-clients", |sh| conns(sh, |c| &c.rejected)),
    figure!("stats"."client_query_buffer_limit_disconnections",
        Some("nvkv_query_buffer_limit_disconnections_total"), Counter,
        "Clients disconnected for a request over --max-query-buffer",
        |sh| conns(sh, |c| &c.query_limit_disconnects)),
    figure!("stats"."client_output_buffer_limit_disconnections",
        Some("nvkv_output_buffer_limit_disconnections_total"), Counter,
        "Clients disconnected for unread output over --max-output-buffer",
        |sh| conns(sh, |c| &c.output_limit_disconnects)),
    figure!("stats"."idle_timeout_disconnections", Some("nvkv_idle_timeout_disconnections_total"),
        Counter, "Clients disconnected after --timeout idle", |sh| conns(sh, |c| &c.idle_disconnects)),
    figure!("stats"."acl_access_denied_auth", Some("nvkv_auth_failures_total"), Counter,
        "AUTH with a wrong password", |sh| conns(sh, |c| &c.auth_failures)),
    figure!("stats"."protected_mode_rejections", Some("nvkv_protected_mode_rejections_total"),
        Counter, "Connections refused by protected mode",
        |sh| conns(sh, |c| &c.protected_mode_rejections)),
    figure!("stats"."evicted_clients", Some("nvkv_evicted_clients_total"), Counter,
        "Clients disconnected to keep client memory under --maxmemory-clients",
        |sh| conns(sh, |c| &c.evicted_clients)),
    figure!("stats"."size_limit_rejections", Some("nvkv_size_limit_rejections_total"), Counter,
        "Keys or values refused for their size", |sh| conns(sh, |c| &c.size_limit_rejections)),
    figure!("stats"."ring_full_waits", Some("nvkv_ring_full_waits_total"), Counter,
        "Requests that waited for room on a poller's ring", |sh| conns(sh, |c| &c.ring_full_waits)),
    figure!("stats"."expired_keys", Some("nvkv_expired_keys_total"), Counter,
        "Keys found expired (by a read, the sweep or compaction)",
        |sh| keyspaces(sh, |c| &c.expired_keys)),
    figure!("stats"."evicted_keys", Some("nvkv_evicted_keys_total"), Counter,
        "Keys evicted by --maxmemory-policy", |sh| keyspaces(sh, |c| &c.evicted_keys)),
    figure!("stats"."pubsub_channels", Some("nvkv_pubsub_channels"), Gauge,
        "Pub/sub channels with subscribers", |sh| sh.pubsub.channels(None).len() as u64),
    figure!("stats"."pubsub_patterns", Some("nvkv_pubsub_patterns"), Gauge,
        "Pub/sub patterns with subscribers", |sh| sh.pubsub.numpat() as u64),
    cpu!(
        "used_cpu_sys",
        "nvkv_cpu_system_seconds_total",
        "System CPU time of the process (getrusage RUSAGE_SELF)",
        |_| rusage_micros(false).1
    ),
    cpu!(
        "used_cpu_user",
        "nvkv_cpu_user_seconds_total",
        "User CPU time of the process (getrusage RUSAGE_SELF)",
        |_| rusage_micros(false).0
    ),
    cpu!(
        "used_cpu_sys_children",
        "nvkv_cpu_system_children_seconds_total",
        "System CPU time of ended child processes (getrusage RUSAGE_CHILDREN)",
        |_| rusage_micros(true).1
    ),
    cpu!(
        "used_cpu_user_children",
        "nvkv_cpu_user_children_seconds_total",
        "User CPU time of ended child processes (getrusage RUSAGE_CHILDREN)",
        |_| rusage_micros(true).0
    ),
    cpu!(
        "used_cpu_pollers",
        "nvkv_poller_cpu_seconds_total",
        "CPU time (user and system) of the poller threads, polling included",
        |sh| threads_cpu(&sh.poller_stats, |p| &p.cpu)
    ),
    cpu!(
        "used_cpu_conn_threads",
        "nvkv_conn_thread_cpu_seconds_total",
        "CPU time (user and system) of the connection threads, polling included",
        |sh| threads_cpu(&sh.conn_stats, |c| &c.cpu)
    ),
    figure!("nvkv"."poller_wakeups", Some("nvkv_poller_wakeups_total"), Counter,
        "Parked pollers woken by their doorbell", |sh| wakeups(sh, 0)),
    figure!("nvkv"."poller_late_wakeups", Some("nvkv_poller_late_wakeups_total"), Counter,
        "Doorbell wake-ups that took more than 50 us from the ring to the poller running",
        |sh| wakeups(sh, WAKE_TARGET_US)),
    figure!("nvkv"."segments_total", Some("nvkv_segments"), Gauge,
        "Segments of the device", |sh| sh.space.live.len() as u64),
    figure!("nvkv"."segments_free", Some("nvkv_segments_free"), Gauge,
        "Segments ready for writes", |sh| sh.space.free_segments() as u64),
    figure!("nvkv"."segment_size", None, Gauge,
        "Bytes per segment", |sh| sh.space.segment_size as u64),
    figure!("nvkv"."live_bytes", Some("nvkv_live_bytes"), Gauge,
        "Bytes the index references", |sh| sh.space.live_bytes()),
    figure!("nvkv"."dead_bytes", Some("nvkv_dead_bytes"), Gauge,
        "Bytes of used segments nothing references",
        |sh| sh.space.used_bytes().saturating_sub(sh.space.live_bytes())),
    figure!("nvkv"."expired_evicted_bytes", Some("nvkv_expired_evicted_bytes"), Gauge,
        "Bytes of expired and evicted keys compaction has not reclaimed yet",
        |sh| sh.space.gone_bytes()),
    figure!("nvkv"."user_bytes_written", Some("nvkv_user_bytes_written_total"), Counter,
        "Record bytes appended for clients", |sh| keyspaces(sh, |c| &c.user_bytes)),
    figure!("nvkv"."large_pieces_written", Some("nvkv_large_pieces_written_total"), Counter,
        "Piece segments of large values written (a SETRANGE or APPEND writes those it changes)",
        |sh| keyspaces(sh, |c| &c.piece_writes)),
    figure!("nvkv"."large_piece_bytes_written", Some("nvkv_large_piece_bytes_written_total"), Counter,
        "Bytes of piece segments of large values written, header blocks included",
        |sh| keyspaces(sh, |c| &c.piece_bytes)),
    figure!("nvkv"."compaction_bytes_moved", Some("nvkv_compaction_bytes_moved_total"), Counter,
        "Record bytes compaction moved", |sh| keyspaces(sh, |c| &c.compact_bytes)),
    figure!("nvkv"."compactions", Some("nvkv_compactions_total"), Counter,
        "Segments emptied by compaction", |sh| keyspaces(sh, |c| &c.compactions)),
    figure!("nvkv"."writes_refused_full", Some("nvkv_writes_refused_total"), Counter,
        "Writes refused because the store was full", |sh| pollers(sh, |p| &p.writes_refused)),
    figure!("nvkv"."writes_deferred", Some("nvkv_writes_deferred_total"), Counter,
        "Writes that waited for compaction to free a segment",
        |sh| pollers(sh, |p| &p.writes_deferred)),
    figure!("nvkv"."commits", Some("nvkv_commits_total"), Counter,
        "Group commits completed", |sh| keyspaces(sh, |c| &c.commits)),
    figure!("nvkv"."flushes", Some("nvkv_flushes_total"), Counter,
        "Device flushes completed", |sh| keyspaces(sh, |c| &c.flushes)),
    figure!("nvkv"."device_bytes_written", Some("nvkv_device_bytes_written_total"), Counter,
        "Log bytes written", |sh| keyspaces(sh, |c| &c.bytes_written)),
    figure!("nvkv"."device_writes", Some("nvkv_device_write_ops_total"), Counter,
        "Log writes completed on the device", |sh| keyspaces(sh, |c| &c.device_writes)),
    figure!("nvkv"."device_reads", Some("nvkv_device_read_ops_total"), Counter,
        "Reads issued to the device (GETs and compaction)", |sh| keyspaces(sh, |c| &c.device_reads)),
    figure!("nvkv"."device_bytes_read", Some("nvkv_device_read_bytes_total"), Counter,
        "Bytes read from the device", |sh| keyspaces(sh, |c| &c.device_read_bytes)),
    figure!("nvkv"."index_extra_reads", Some("nvkv_index_extra_reads_total"), Counter,
        "Device reads of records of other keys sharing a key's index tag",
        |sh| keyspaces(sh, |c| &c.index_extra_reads)),
    figure!("nvkv"."index_overwrites_unread", Some("nvkv_index_overwrites_unread_total"), Counter,
        "SETs over an existing key written before the record they replaced was read",
        |sh| keyspaces(sh, |c| &c.index_overwrites_unread)),
    figure!("nvkv"."index_known_owners", Some("nvkv_index_known_owners_total"), Counter,
        "Requests whose key's index entry was known to be its own, its record written or read lately",
        |sh| keyspaces(sh, |c| &c.index_known_owners)),
    figure!("nvkv"."records_read", Some("nvkv_device_reads_total"), Counter,
        "Records read from the device for GETs", |sh| pollers(sh, |p| &p.reads)),
    figure!("nvkv"."index_tombstones", Some("nvkv_index_tombstones"), Gauge,
        "Index entries of deleted, expired or evicted keys compaction has not dropped yet",
        |sh| keyspaces(sh, |c| &c.tombstones)),
    Figure {
        info: None,
        metric: Some("nvkv_keys"),
        help: "Live keys",
        kind: Gauge,
        unit: Unit::Count,
        value: keys,
    },
    Figure {
        info: None,
        metric: Some("nvkv_keys_with_ttl"),
        help: "Live keys with a TTL",
        kind: Gauge,
        unit: Unit::Count,
        value: |sh| keyspaces(sh, |c| &c.expires),
    },
];

/// The figures of INFO section `section`, with their values (the
/// counters of `stats` since the last CONFIG RESETSTAT).
pub(super) fn section<'a>(
    sh: &'a Shared,
    section: &'a str,
) -> impl Iterator<Item = (&'static str, Shown)> + 'a {
    let base = sh.baseline.figures();
    FIGURES
        .iter()
        .enumerate()
        .filter_map(move |(i, f)| match f.info {
            Some((s, field)) if s == section => {
                let zero = base.get(i).copied().unwrap_or(0);
                Some((field, Shown((f.value)(sh).saturating_sub(zero), f.unit)))
            }
            _ => None,
        })
}

/// Whether CONFIG RESETSTAT zeroes a figure in INFO: the counters of
/// `stats`, as Redis resets its `stat_` fields.
fn resets(f: &Figure) -> bool {
    f.kind == Counter && f.info.is_some_and(|(s, _)| s == "stats")
}

/// What CONFIG RESETSTAT zeroed: the values INFO's counters and
/// commandstats had then, which INFO subtracts (`/metrics` shows the
/// whole counts: Prometheus counters only grow).
#[derive(Debug, Default)]
pub(super) struct Baseline {
    figures: std::sync::Mutex<Vec<u64>>,
    commands: std::sync::Mutex<Vec<CommandTotals>>,
    errors: std::sync::Mutex<std::collections::BTreeMap<Box<[u8]>, u64>>,
}

impl Baseline {
    fn figures(&self) -> Vec<u64> {
        self.figures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub(super) fn commands(&self) -> Vec<CommandTotals> {
        self.commands.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn errors(&self) -> std::collections::BTreeMap<Box<[u8]>, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// CONFIG RESETSTAT: INFO's counters start again from zero.
pub(super) fn reset_stats(sh: &Shared) {
    let figures = (FIGURES.iter())
        .map(|f| if resets(f) { (f.value)(sh) } else { 0 })
        .collect();
    let commands = command_totals(sh);
    if let Ok(mut b) = sh.baseline.figures.lock() {
        *b = figures;
    }
    if let Ok(mut b) = sh.baseline.commands.lock() {
        *b = commands;
    }
    if let Ok(mut b) = sh.baseline.errors.lock() {
        *b = error_totals(sh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counters_end_in_total() {
        let mut fields = std::collections::HashSet::new();
        let mut metrics = std::collections::HashSet::new();
        for f in FIGURES {
            if let Some(i) = f.info {
                assert!(fields.insert(i), "{i:?} twice");
            }
            if let Some(m) = f.metric {
                assert!(metrics.insert(m), "{m} twice");
                assert!(m.starts_with("nvkv_"), "{m}");
                assert!(
                    m.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{m}"
                );
                assert_eq!(f.kind == Kind::Counter, m.ends_with("_total"), "{m}");
                if f.unit == Unit::Micros {
                    assert!(m.ends_with("_seconds_total"), "{m}");
                }
            }
            assert!(f.info.is_some() || f.metric.is_some());
        }
    }

    #[test]
    fn cpu_times_show_as_seconds_with_six_decimals() {
        assert_eq!(Shown(0, Unit::Micros).to_string(), "0.000000");
        assert_eq!(Shown(1_234_567, Unit::Micros).to_string(), "1.234567");
        assert_eq!(Shown(1_234_567, Unit::Count).to_string(), "1234567");
    }

    #[test]
    fn a_thread_clock_counts_the_time_its_thread_runs() {
        let clock = ThreadClock::default();
        assert_eq!(clock.micros(), 0, "no thread recorded");
        clock.set_current();
        // Spinning until the thread's clock says 5 ms, within 10 s of the
        // wall clock however busy the machine is.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while clock.micros() < 5_000 && t.elapsed() < std::time::Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = clock.micros();
        assert!(
            used >= 5_000,
            "{used} µs after {:?} of spinning",
            t.elapsed()
        );
        let (user, sys) = rusage_micros(false);
        assert!(
            user + sys >= used,
            "the process used less than one of its threads"
        );
    }
}

/// One command's (or subcommand's) calls and latency, summed over the
/// connection threads.
#[derive(Debug, Clone)]
pub(super) struct CommandTotals {
    /// As INFO shows it: `get`, `config|get`.
    pub name: &'static str,
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
    pub buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
}

impl CommandTotals {
    /// The latency under which a fraction `q` of the calls finished, as the
    /// upper bound of its bucket (the last bucket reports its lower bound).
    pub(super) fn percentile(&self, q: f64) -> u64 {
        super::stats::percentile(&self.buckets, q)
    }
}

pub(super) fn command_totals(sh: &Shared) -> Vec<CommandTotals> {
    let slots = super::table::StatSlots::get();
    (0..slots.len())
        .map(|i| {
            let mut t = CommandTotals {
                name: slots.name(i),
                calls: 0,
                usec: 0,
                rejected: 0,
                failed: 0,
                buckets: [0; LATENCY_BOUNDS_US.len() + 1],
            };
            for c in &sh.conn_stats {
                t.calls += c.cmds.calls[i].load(Relaxed);
                t.usec += c.cmds.usec[i].load(Relaxed);
                t.rejected += c.cmds.rejected[i].load(Relaxed);
                t.failed += c.cmds.failed[i].load(Relaxed);
                for (b, n) in t.buckets.iter_mut().zip(&c.cmds.buckets[i]) {
                    *b += n.load(Relaxed);
                }
            }
            t
        })
        .collect()
}

/// [`command_totals`] since the last CONFIG RESETSTAT, as INFO shows
/// them (/metrics shows the whole counts, which must only grow).
pub(super) fn commands_since_reset(sh: &Shared) -> Vec<CommandTotals> {
    let mut now = command_totals(sh);
    let base = sh.baseline.commands();
    for (t, b) in now.iter_mut().zip(&base) {
        t.calls -= b.calls.min(t.calls);
        t.usec -= b.usec.min(t.usec);
        t.rejected -= b.rejected.min(t.rejected);
        t.failed -= b.failed.min(t.failed);
        for (n, m) in t.buckets.iter_mut().zip(&b.buckets) {
            *n -= (*m).min(*n);
        }
    }
    now
}

/// Error replies by code (`ERR`, `WRONGTYPE`, …), summed over the
/// connection threads, in code order.
fn error_totals(sh: &Shared) -> std::collections::BTreeMap<Box<[u8]>, u64> {
    let mut all = std::collections::BTreeMap::new();
    for c in &sh.conn_stats {
        if let Ok(errors) = c.cmds.errors.lock() {
            for (code, n) in errors.iter() {
                *all.entry(code.clone()).or_insert(0) += n;
            }
        }
    }
    all
}

/// [`error_totals`] since the last CONFIG RESETSTAT, as INFO errorstats
/// shows them (codes with none since left out).
pub(super) fn errors_since_reset(sh: &Shared) -> Vec<(String, u64)> {
    let base = sh.baseline.errors();
    (error_totals(sh).into_iter())
        .map(|(code, n)| {
            let since = n - base.get(&code).copied().unwrap_or(0).min(n);
            (String::from_utf8_lossy(&code).into_owned(), since)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}
