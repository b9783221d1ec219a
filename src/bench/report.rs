//! Counters and latencies: per client thread while running ([`Stats`]),
//! merged into one [`Report`] at the end.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Error messages kept for the user; the rest are only counted.
pub const MAX_ERROR_SAMPLES: usize = 5;

/// Highest latency the histogram tracks, in microseconds; above saturates.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What one client thread saw.
#[derive(Debug)]
pub struct Stats {
    /// Operation latencies in microseconds.
    latency: Histogram<u64>,
    /// Completed operations (a read-modify-write counts once).
    pub ops: u64,
    /// GET replies received.
    pub reads: u64,
    /// SET replies received.
    pub writes: u64,
    /// GETs answered with nil.
    pub misses: u64,
    /// Bad replies, failed checks, dropped connections.
    pub errors: u64,
    /// The first few error messages.
    error_samples: Vec<String>,
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Result<Stats> {
        Ok(Stats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .context("creating the latency histogram")?,
            ops: 0,
            reads: 0,
            writes: 0,
            misses: 0,
            errors: 0,
            error_samples: Vec::new(),
        })
    }

    /// Counts one completed operation that took `latency`.
    pub fn complete(&mut self, latency: Duration) {
        self.ops += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros);
    }

    /// Counts an error; `describe` runs only while samples are still kept,
    /// so a flood of errors does not allocate.
    pub fn error(&mut self, describe: impl FnOnce() -> String) {
        self.errors += 1;
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            self.error_samples.push(describe());
        }
    }

    /// Adds `other`'s counts and latencies to these.
    pub fn merge(&mut self, other: Stats) -> Result<()> {
        self.latency
            .add(&other.latency)
            .context("merging latency histograms")?;
        self.ops += other.ops;
        self.reads += other.reads;
        self.writes += other.writes;
        self.misses += other.misses;
        self.errors += other.errors;
        let room = MAX_ERROR_SAMPLES.saturating_sub(self.error_samples.len());
        self.error_samples
            .extend(other.error_samples.into_iter().take(room));
        Ok(())
    }

    /// The report of a run that issued requests for `duration` over
    /// `clients` connections with `inflight` requests each.
    pub fn report(self, duration: Duration, clients: usize, inflight: usize) -> Report {
        let secs = duration.as_secs_f64();
        let quantile = |q| self.latency.value_at_quantile(q) as f64;
        Report {
            ops_per_sec: if secs > 0.0 {
                self.ops as f64 / secs
            } else {
                0.0
            },
            ops: self.ops,
            reads: self.reads,
            writes: self.writes,
            errors: self.errors,
            misses: self.misses,
            p50_us: quantile(0.5),
            p90_us: quantile(0.9),
            p99_us: quantile(0.99),
            p999_us: quantile(0.999),
            max_us: self.latency.max() as f64,
            mean_us: self.latency.mean(),
            duration_secs: secs,
            clients,
            inflight,
            error_samples: self.error_samples,
            verified: false,
            rate: None,
            percentiles: CDF_POINTS
                .iter()
                .map(|&p| (p, quantile(p / 100.0)))
                .collect(),
        }
    }
}

/// Percentiles the JSON report lists, for latency CDF plots.
const CDF_POINTS: [f64; 19] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9,
    99.95, 99.99, 100.0,
];

/// The outcome of `nvkv bench` or `nvkv insert`.
///
/// `ops` counts every answered operation, failed ones included (`errors`
/// says how many failed); a read-modify-write is one op but adds to both
/// `reads` and `writes`. Latencies are in microseconds, from sending a
/// request to having parsed its reply (both requests, for a
/// read-modify-write).
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    /// Completed operations per second of the issuing phase.
    pub ops_per_sec: f64,
    /// Completed operations.
    pub ops: u64,
    /// GET replies.
    pub reads: u64,
    /// SET replies.
    pub writes: u64,
    /// Error replies, failed checks and dropped connections.
    pub errors: u64,
    /// GETs answered with nil.
    pub misses: u64,
    /// Median latency.
    pub p50_us: f64,
    /// 90th percentile latency.
    pub p90_us: f64,
    /// 99th percentile latency.
    pub p99_us: f64,
    /// 99.9th percentile latency.
    pub p999_us: f64,
    /// Highest latency.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Length of the issuing phase, in seconds.
    pub duration_secs: f64,
    /// Connections.
    pub clients: usize,
    /// Requests outstanding per connection.
    pub inflight: usize,
    /// `--rate`: the operations per second offered (open loop; latency
    /// counts from each operation's intended send time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Latency by percentile: `[percentile, microseconds]` pairs from 1 to
    /// 100, for plotting a latency CDF.
    pub percentiles: Vec<(f64, f64)>,
    /// The first few error messages (at most five), printed to stderr by
    /// [`Report::print`]; not part of the JSON line.
    #[serde(skip)]
    pub error_samples: Vec<String>,
    /// Whether GET replies were checked against the loaded data set (not
    /// `--verify none`); not part of the JSON line.
    #[serde(skip)]
    pub verified: bool,
}

impl Report {
    /// Prints the report to stdout, as a table or as one line of JSON, and
    /// the first error messages, if any, to stderr.
    pub fn print(&self, json: bool) {
        if self.errors > 0 {
            eprint!("{}", self.render_errors());
        }
        // A closed stdout (`nvkv bench | head`) is not worth a panic.
        let _ = io_print(&self.render(json));
    }

    /// Why the run failed, if it did: errors (error replies, failed checks,
    /// dropped connections), or, when values were checked, GETs that all
    /// missed (the server does not hold this data set: a wrong `--seed` or
    /// `--keys`).
    pub fn failure(&self) -> Option<String> {
        if self.errors > 0 {
            return Some(format!(
                "{} errors (error replies, wrong values or dropped connections)",
                self.errors
            ));
        }
        if self.verified && self.reads > 0 && self.misses == self.reads {
            return Some(format!(
                "all {} GETs missed: is the server loaded with this --keys and --seed?",
                self.reads
            ));
        }
        None
    }

    /// The text [`Report::print`] writes to stdout.
    pub fn render(&self, json: bool) -> String {
        if json {
            // Serializing plain numbers cannot fail (non-finite floats
            // become `null`).
            serde_json::to_string(self).unwrap_or_default() + "\n"
        } else {
            self.render_table()
        }
    }

    fn render_table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "throughput   {:.1} ops/s ({} ops in {:.2} s, {} clients x {} in flight)",
            self.ops_per_sec, self.ops, self.duration_secs, self.clients, self.inflight
        );
        let _ = writeln!(
            out,
            "operations   reads {}  writes {}  misses {}  errors {}",
            self.reads, self.writes, self.misses, self.errors
        );
        let _ = writeln!(
            out,
            "latency us   mean {:.1}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            self.mean_us, self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
        );
        out
    }

    /// The error count and the kept messages.
    fn render_errors(&self) -> String {
        let mut out = String::new();
        let shown = self.error_samples.len();
        let _ = writeln!(
            out,
            "{} errors{}",
            self.errors,
            if shown > 0 {
                format!(", the first {shown}:")
            } else {
                String::new()
            }
        );
        for message in &self.error_samples {
            let _ = writeln!(out, "  {message}");
        }
        out
    }
}

fn io_print(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_report() {
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        for us in 1..=100 {
            a.complete(Duration::from_micros(us));
        }
        b.complete(Duration::from_secs(120)); // saturates at 60 s
        for i in 0..7 {
            b.error(|| format!("error {i}"));
        }
        a.reads = 100;
        b.misses = 1;
        a.merge(b).unwrap();
        let report = a.report(Duration::from_secs(2), 4, 2);
        assert_eq!(report.ops, 101);
        assert_eq!(report.ops_per_sec, 50.5);
        assert_eq!(report.errors, 7);
        assert_eq!(report.error_samples.len(), MAX_ERROR_SAMPLES);
        assert_eq!(report.p50_us, 51.0);
        assert!(report.max_us >= 59_000_000.0);

        let json: serde_json::Value = serde_json::from_str(&report.render(true)).unwrap();
        assert_eq!(json["ops"], 101);
        assert_eq!(json["clients"], 4);
        assert!(json.get("error_samples").is_none());
        assert!(report.render(false).contains("50.5 ops/s"));
        assert!(report.render_errors().starts_with("7 errors, the first 5:"));
        assert!(report.failure().unwrap().starts_with("7 errors"));
    }

    #[test]
    fn a_run_fails_on_errors_or_when_every_checked_get_missed() {
        let report = |errors, reads, misses, verified| {
            let mut s = Stats::new().unwrap();
            s.complete(Duration::from_micros(10));
            s.errors = errors;
            s.reads = reads;
            s.misses = misses;
            let mut r = s.report(Duration::from_secs(1), 1, 1);
            r.verified = verified;
            r
        };
        assert_eq!(report(0, 10, 9, true).failure(), None);
        assert_eq!(report(0, 0, 0, true).failure(), None, "a write-only run");
        assert_eq!(report(0, 10, 10, false).failure(), None, "--verify none");
        assert!(report(0, 10, 10, true)
            .failure()
            .unwrap()
            .contains("all 10 GETs missed"));
        assert!(report(1, 10, 0, false)
            .failure()
            .unwrap()
            .starts_with("1 errors"));
    }
}
