//! `--metrics-listen ADDR`: Prometheus text format at `/metrics`.
//!
//! Each scrape builds a registry from the table of figures in
//! `counters.rs` (the one INFO reads) and encodes it with the `prometheus` crate's
//! `TextEncoder`. A small thread answers HTTP/1.0 requests; it stops with
//! the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, GaugeVec, IntCounter, IntGauge, Opts, Registry, TextEncoder};

use super::counters::{thread_cpu, Kind, Unit, FIGURES};
use super::stats::LATENCY_BOUNDS_US;
use super::Shared;

/// Serves scrapes on `listener` (bound before the store was opened) until
/// the server stops.
pub(super) fn start(
    shared: &Arc<Shared>,
    listener: TcpListener,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let sh = Arc::clone(shared);
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !sh.stopping.load(Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = answer(&sh, stream) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok((local, handle))
}

fn answer(sh: &Shared, mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut req = [0u8; 1024];
    let n = stream.read(&mut req)?;
    let line = String::from_utf8_lossy(&req[..n]);
    let (status, ctype, body) = if line.starts_with("GET /metrics") {
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        let mut families = gather(sh)?.gather();
        // A family without samples (no command run yet, on a fresh server)
        // is left out: the encoder refuses one, and the scrape would fail.
        families.extend(
            command_families(sh)
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        match encoder.encode(&families, &mut body) {
            Ok(()) => ("200 OK", encoder.format_type().to_string(), body),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain".to_string(),
                format!("encoding the metrics failed: {e}\n").into_bytes(),
            ),
        }
    } else {
        (
            "404 Not Found",
            "text/plain".to_string(),
            b"try /metrics\n".to_vec(),
        )
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    Ok(())
}

/// A registry holding the server's current figures: every figure of the
/// table in `counters.rs` that has a Prometheus name, and the per-poller
/// rates.
fn gather(sh: &Shared) -> prometheus::Result<Registry> {
    let r = Registry::new();
    for f in FIGURES {
        let Some(name) = f.metric else { continue };
        let v = (f.value)(sh);
        match (f.kind, f.unit) {
            (Kind::Counter, Unit::Micros) => {
                let c = prometheus::Counter::new(name, f.help)?;
                c.inc_by(v as f64 / 1e6);
                r.register(Box::new(c))?;
            }
            (Kind::Gauge, Unit::Micros) => {
                let g = prometheus::Gauge::new(name, f.help)?;
                g.set(v as f64 / 1e6);
                r.register(Box::new(g))?;
            }
            (Kind::Counter, Unit::Count) => {
                let c = IntCounter::new(name, f.help)?;
                c.inc_by(v);
                r.register(Box::new(c))?;
            }
            (Kind::Gauge, Unit::Count) => {
                let g = IntGauge::new(name, f.help)?;
                g.set(v as i64);
                r.register(Box::new(g))?;
            }
        }
    }
    pollers(&r, sh)?;
    let cpu = prometheus::CounterVec::new(
        Opts::new(
            "nvkv_thread_cpu_seconds_total",
            "CPU time (user and system) of each poller and connection thread",
        ),
        &["thread"],
    )?;
    for (kind, i, us) in thread_cpu(sh) {
        cpu.with_label_values(&[&format!("{kind}{i}")])
            .inc_by(us as f64 / 1e6);
    }
    r.register(Box::new(cpu))?;
    Ok(r)
}

/// Per-poller gauges, labelled `poller`.
fn pollers(r: &Registry, sh: &Shared) -> prometheus::Result<()> {
    let rates = sh
        .sampler
        .rates
        .lock()
        .map(|x| x.clone())
        .unwrap_or_default();
    let vec = |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["poller"]);
    let loops = vec("nvkv_poller_loops_per_second", "Loop turns per second")?;
    let submits = vec(
        "nvkv_poller_submissions_per_second",
        "Submissions per second",
    )?;
    let reads = vec("nvkv_poller_reads_per_second", "Device reads per second")?;
    let batch = vec("nvkv_poller_mean_batch", "Mean operations per submission")?;
    let max_batch = vec(
        "nvkv_poller_max_batch",
        "Largest submission in the last second",
    )?;
    let depth = vec("nvkv_poller_in_flight", "Device operations in flight")?;
    for (i, p) in sh.poller_stats.iter().enumerate() {
        let l = i.to_string();
        let rt = rates.get(i).copied().unwrap_or_default();
        let set = |g: &GaugeVec, v: f64| g.with_label_values(&[&l]).set(v);
        set(&loops, rt.loops_per_sec);
        set(&submits, rt.submits_per_sec);
        set(&reads, rt.reads_per_sec);
        set(&batch, rt.mean_batch);
        set(&max_batch, rt.max_batch as f64);
        set(&depth, p.in_flight.load(Relaxed) as f64);
    }
    for g in [loops, submits, reads, batch, max_batch, depth] {
        r.register(Box::new(g))?;
    }
    Ok(())
}

/// Calls by command (`nvkv_commands_total`) and their latency from parsed
/// request to reply (`nvkv_command_duration_seconds`, a histogram), both
/// labelled `command` (a subcommand as `config|get`), from the connection
/// threads' buckets; calls refused before they ran and calls that
/// answered an error (`nvkv_commands_rejected_total`,
/// `nvkv_commands_failed_total`), as INFO commandstats.
fn command_families(sh: &Shared) -> Vec<MetricFamily> {
    let mut rejected = family(
        "nvkv_commands_rejected_total",
        "Commands refused before they ran (wrong arity, NOAUTH, ...), by command",
        MetricType::COUNTER,
    );
    let mut failed = family(
        "nvkv_commands_failed_total",
        "Commands that ran and answered an error, by command",
        MetricType::COUNTER,
    );
    let mut calls = family(
        "nvkv_commands_total",
        "Commands executed, by command",
        MetricType::COUNTER,
    );
    let mut latency = family(
        "nvkv_command_duration_seconds",
        "Time from a parsed request to its reply, by command",
        MetricType::HISTOGRAM,
    );
    let totals = super::counters::command_totals(sh);
    for t in &totals {
        let mut label = LabelPair::default();
        label.set_name("command".into());
        label.set_value(t.name.into());
        for (family, n) in [(&mut rejected, t.rejected), (&mut failed, t.failed)] {
            if n > 0 {
                let mut c = Counter::default();
                c.set_value(n as f64);
                let mut m = Metric::default();
                m.set_label(vec![label.clone()]);
                m.set_counter(c);
                family.mut_metric().push(m);
            }
        }
    }
    for t in totals.iter().filter(|t| t.calls > 0) {
        let mut label = LabelPair::default();
        label.set_name("command".into());
        label.set_value(t.name.into());

        let mut c = Counter::default();
        c.set_value(t.calls as f64);
        let mut m = Metric::default();
        m.set_label(vec![label.clone()]);
        m.set_counter(c);
        calls.mut_metric().push(m);

        let mut h = Histogram::default();
        h.set_sample_count(t.calls);
        h.set_sample_sum(t.usec as f64 / 1e6);
        let mut cumulative = 0;
        let buckets = LATENCY_BOUNDS_US
            .iter()
            .zip(&t.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut b = Bucket::default();
                b.set_upper_bound(*bound as f64 / 1e6);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        h.set_bucket(buckets);
        let mut m = Metric::default();
        m.set_label(vec![label]);
        m.set_histogram(h);
        latency.mut_metric().push(m);
    }
    vec![calls, latency, rejected, failed]
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f
}
