//! SLOWLOG and LATENCY, as Redis 7.
//!
//! A command's time is the one INFO's commandstats has: from its parse to
//! its reply (for a command the pollers answer, the device's time
//! included, so that a slow disk shows). A command answered at once is
//! measured when its handler returns; one the pollers answer keeps a
//! snapshot of its arguments, trimmed as Redis trims them, in its
//! connection ([`Watch`]) until its reply is complete, and is logged then
//! if it took at least `slowlog-log-slower-than` µs. Snapshots reuse
//! their buffers, so that watching costs no allocation once warm.
//!
//! LATENCY's monitor (off unless `latency-monitor-threshold` is set, as in
//! Redis) records the events `command` and `fast-command` (commands Redis
//! flags `fast`) of commands that took at least the threshold, in ms.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Mutex;
use std::time::Instant;

use super::clients::ClientInfo;
use super::replies::{Replies, ReplyMark};
use super::strings;
use super::table::{self, Cmd};
use crate::resp;
use crate::store::clock::unix_ms;

/// Redis's `SLOWLOG_ENTRY_MAX_ARGC` and `SLOWLOG_ENTRY_MAX_STRING`.
const MAX_ARGC: usize = 32;
const MAX_STRING: usize = 128;
/// Snapshot buffers a connection keeps for reuse.
const SPARE: usize = 16;

/// One SLOWLOG entry.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    /// Unix time, seconds.
    time: u64,
    micros: u64,
    args: Vec<Box<[u8]>>,
    addr: String,
    name: Box<[u8]>,
}

/// A LATENCY event: when it last happened, its latest and largest time (ms).
#[derive(Debug, Clone)]
struct Event {
    name: &'static str,
    max: u64,
    /// (unix s, ms): at most one per second (its largest), the last
    /// [`EVENT_SAMPLES`], oldest first.
    samples: VecDeque<(u64, u64)>,
}

/// Samples an event keeps (Redis's `LATENCY_TS_LEN`).
const EVENT_SAMPLES: usize = 160;

impl Event {
    /// Records a latency of `ms` at `time` as Redis's `latencyAddSample`:
    /// a second's sample keeps its largest latency.
    fn add(&mut self, time: u64, ms: u64) {
        self.max = self.max.max(ms);
        match self.samples.back_mut() {
            Some((t, latest)) if *t == time => *latest = (*latest).max(ms),
            _ => {
                if self.samples.len() == EVENT_SAMPLES {
                    self.samples.pop_front();
                }
                self.samples.push_back((time, ms));
            }
        }
    }

    /// The last sample: (unix s, ms).
    fn latest(&self) -> (u64, u64) {
        self.samples.back().copied().unwrap_or_default()
    }
}

/// The server's slow log and latency events, and their settings.
#[derive(Debug)]
pub(super) struct SlowLog {
    /// Newest first.
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    /// `slowlog-log-slower-than`, µs (negative: off).
    pub slower_than: AtomicI64,
    /// `slowlog-max-len`.
    pub max_len: AtomicU64,
    /// `latency-monitor-threshold`, ms (0: off).
    pub latency_threshold: AtomicU64,
    events: Mutex<Vec<Event>>,
}

impl SlowLog {
    /// `slowlog-log-slower-than` µs, `slowlog-max-len`,
    /// `latency-monitor-threshold` ms.
    pub(super) fn new(slower_than: i64, max_len: u64, latency_threshold: u64) -> Self {
        SlowLog {
            entries: Mutex::default(),
            next_id: AtomicU64::new(0),
            slower_than: AtomicI64::new(slower_than),
            max_len: AtomicU64::new(max_len),
            latency_threshold: AtomicU64::new(latency_threshold),
            events: Mutex::default(),
        }
    }

    /// Whether commands are to be watched at all.
    fn on(&self) -> bool {
        self.slower_than.load(Relaxed) >= 0 || self.latency_threshold.load(Relaxed) > 0
    }

    /// Whether a command of `micros` goes into the log or the events.
    fn slow(&self, micros: u64) -> bool {
        let limit = self.slower_than.load(Relaxed);
        let threshold = self.latency_threshold.load(Relaxed);
        (limit >= 0 && micros >= limit as u64) || (threshold > 0 && micros / 1000 >= threshold)
    }

    /// A command `cmd` (its index in the table) took `micros`: logs it if
    /// it is slow enough, with `args` as [`Trimmed`] holds them.
    fn observe(&self, cmd: u16, args: &Trimmed, micros: u64, who: &ClientInfo) {
        let limit = self.slower_than.load(Relaxed);
        if limit >= 0 && micros >= limit as u64 {
            let entry = Entry {
                id: self.next_id.fetch_add(1, Relaxed),
                time: unix_ms() / 1000,
                micros,
                args: args.iter().map(Box::from).collect(),
                addr: who.addr.clone(),
                name: who.name(),
            };
            let max = self.max_len.load(Relaxed) as usize;
            let mut log = lock(&self.entries);
            log.push_front(entry);
            log.truncate(max);
        }
        let threshold = self.latency_threshold.load(Relaxed);
        let ms = micros / 1000;
        if threshold > 0 && ms >= threshold {
            let spec = &table::COMMANDS[cmd as usize];
            let fast =
                table::meta_of(spec.name.as_bytes()).is_some_and(|m| m.flags.contains(&"fast"));
            let name = if fast { "fast-command" } else { "command" };
            let time = unix_ms() / 1000;
            let mut events = lock(&self.events);
            let at = match events.iter().position(|e| e.name == name) {
                Some(at) => at,
                None => {
                    events.push(Event {
                        name,
                        max: 0,
                        samples: VecDeque::new(),
                    });
                    events.len() - 1
                }
            };
            events[at].add(time, ms);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A command's arguments trimmed as Redis logs them: at most 32 (the last
/// saying how many more there were), each at most 128 bytes (followed by
/// how many more there were), in one buffer of length-prefixed pieces.
#[derive(Debug, Default)]
struct Trimmed(Vec<u8>);

impl Trimmed {
    fn fill(&mut self, args: &[&[u8]]) {
        self.0.clear();
        let kept = if args.len() > MAX_ARGC {
            MAX_ARGC - 1
        } else {
            args.len()
        };
        for a in &args[..kept] {
            if a.len() > MAX_STRING {
                let more = format!("... ({} more bytes)", a.len() - MAX_STRING);
                self.piece(&[&a[..MAX_STRING], more.as_bytes()]);
            } else {
                self.piece(&[a]);
            }
        }
        if kept < args.len() {
            let more = format!("... ({} more arguments)", args.len() - kept);
            self.piece(&[more.as_bytes()]);
        }
    }

    fn piece(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.0.extend_from_slice(&(len as u32).to_le_bytes());
        parts.iter().for_each(|p| self.0.extend_from_slice(p));
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (arg, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
            rest = tail;
            Some(arg)
        })
    }
}

/// A connection's commands awaiting their replies, watched for the slow
/// log.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The command being executed (its index in the command table) and
    /// when it was parsed.
    pub started: Option<(u16, Instant)>,
    /// Reply id, command, parse time and arguments, oldest first.
    awaited: VecDeque<(u64, u16, Instant, Trimmed)>,
    spare: Vec<Trimmed>,
}

impl Watch {
    /// After a command executed: measures it if it was answered at once
    /// (`out` holds no reply awaited since `mark`), or watches it until its
    /// reply is complete.
    pub(super) fn command_done(
        &mut self,
        log: &SlowLog,
        args: &[&[u8]],
        out: &Replies,
        mark: &ReplyMark,
        who: &ClientInfo,
    ) {
        let Some((cmd, t0)) = self.started.take() else {
            return;
        };
        // AUTH and HELLO carry passwords: Redis leaves them out too.
        if !log.on() || matches!(table::COMMANDS[cmd as usize].cmd, Cmd::Auth | Cmd::Hello) {
            return;
        }
        match out.awaits_since(mark) {
            Some(id) => {
                let mut trimmed = self.spare.pop().unwrap_or_default();
                trimmed.fill(args);
                self.awaited.push_back((id, cmd, t0, trimmed));
            }
            None => {
                // Answered: its arguments are copied only if it was slow.
                let micros = t0.elapsed().as_micros() as u64;
                if log.slow(micros) {
                    let mut trimmed = Trimmed::default();
                    trimmed.fill(args);
                    log.observe(cmd, &trimmed, micros, who);
                }
            }
        }
    }

    /// After a poller's reply reached the connection, whose oldest reply
    /// still owed is `first_owed`: logs the watched commands whose replies
    /// are now complete.
    pub(super) fn replies_done(&mut self, log: &SlowLog, first_owed: u64, who: &ClientInfo) {
        while self.awaited.front().is_some_and(|w| w.0 < first_owed) {
            let (_, cmd, t0, trimmed) = self.awaited.pop_front().expect("front");
            // The turn's clock: the reply came in this turn, whose clock
            // was read as it began, so each reply reads none of its own.
            let took = super::turn::now().saturating_duration_since(t0);
            log.observe(cmd, &trimmed, took.as_micros() as u64, who);
            if self.spare.len() < SPARE {
                self.spare.push(trimmed);
            }
        }
    }

    /// Whether commands are watched until their replies complete.
    pub(super) fn awaits(&self) -> bool {
        !self.awaited.is_empty()
    }
}

const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

const LATENCY_HELP: &[&str] = &[
    "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DOCTOR",
    "    Return a human readable latency analysis report.",
    "GRAPH <event>",
    "    Return an ASCII latency graph for the <event> class.",
    "HISTORY <event>",
    "    Return time-latency samples for the <event> class.",
    "LATEST",
    "    Return the latest latency samples for all events.",
    "RESET [<event> ...]",
    "    Reset latency data of one or more <event> classes.",
    "    (default: reset all data for all event classes)",
    "HISTOGRAM [COMMAND ...]",
    "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
    "    If no commands are specified then all histograms are replied.",
    "HELP",
    "    Prints this help.",
];

/// `SLOWLOG GET [count] | LEN | RESET | HELP`.
pub(super) fn slowlog(log: &SlowLog, sub: &'static str, args: &[&[u8]], o: &mut Vec<u8>) {
    match sub {
        "slowlog|get" => {
            let count = match args.get(2) {
                None => 10,
                // Redis gives the same error for a count that is not
                // an integer.
                Some(n) => match resp::parse_redis_int(n) {
                    Some(-1) => usize::MAX,
                    Some(n) if n >= 0 => n as usize,
                    _ => return resp::error(o, strings::SLOWLOG_COUNT),
                },
            };
            if args.len() > 3 {
                let msg = strings::subcommand_syntax(args[1], "SLOWLOG");
                return resp::error(o, &msg);
            }
            let entries: Vec<Entry> = lock(&log.entries).iter().take(count).cloned().collect();
            resp::array(o, entries.len());
            for e in &entries {
                resp::array(o, 6);
                resp::int(o, e.id as i64);
                resp::int(o, e.time as i64);
                resp::int(o, e.micros as i64);
                resp::array(o, e.args.len());
                e.args.iter().for_each(|a| resp::bulk(o, a));
                resp::bulk(o, e.addr.as_bytes());
                resp::bulk(o, &e.name);
            }
        }
        "slowlog|len" => {
            let n = lock(&log.entries).len();
            resp::int(o, n as i64)
        }
        "slowlog|reset" => {
            lock(&log.entries).clear();
            resp::simple(o, strings::OK)
        }
        _ => resp::lines(o, SLOWLOG_HELP),
    }
}

/// `LATENCY LATEST | RESET [event ...] | HELP`.
pub(super) fn latency(log: &SlowLog, sub: &'static str, args: &[&[u8]], o: &mut Vec<u8>) {
    match sub {
        "latency|latest" => {
            let events = lock(&log.events).clone();
            resp::array(o, events.len());
            for e in &events {
                let (time, latest) = e.latest();
                resp::array(o, 4);
                resp::bulk(o, e.name.as_bytes());
                resp::int(o, time as i64);
                resp::int(o, latest as i64);
                resp::int(o, e.max as i64);
            }
        }
        "latency|history" => {
            let samples: Vec<(u64, u64)> = (lock(&log.events).iter())
                .find(|e| e.name.as_bytes() == args[2])
                .map_or_else(Vec::new, |e| e.samples.iter().copied().collect());
            resp::array(o, samples.len());
            for (time, ms) in samples {
                resp::array(o, 2);
                resp::int(o, time as i64);
                resp::int(o, ms as i64);
            }
        }
        "latency|reset" => {
            let mut events = lock(&log.events);
            let before = events.len();
            if args.len() == 2 {
                events.clear();
            } else {
                events.retain(|e| !args[2..].iter().any(|a| a == &e.name.as_bytes()));
            }
            let n = before - events.len();
            drop(events);
            resp::int(o, n as i64)
        }
        _ => resp::lines(o, LATENCY_HELP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_events_only_past_the_threshold() {
        let clients = super::super::clients::Clients::default();
        let who = clients.register(0, "127.0.0.1:1".into(), "127.0.0.1:2".into(), 7);
        let log = SlowLog::new(-1, 128, 0);
        let (get, _) = table::lookup(b"GET").unwrap();
        let (info, _) = table::lookup(b"INFO").unwrap();
        let mut args = Trimmed::default();
        args.fill(&[b"GET", b"k"]);
        log.observe(get, &args, 50_000, &who);
        assert!(lock(&log.events).is_empty(), "the monitor is off");
        log.latency_threshold.store(10, Relaxed);
        log.observe(get, &args, 9_999, &who);
        assert!(lock(&log.events).is_empty());
        log.observe(get, &args, 30_000, &who);
        log.observe(get, &args, 12_000, &who);
        log.observe(info, &args, 15_000, &who);
        let events = lock(&log.events).clone();
        let summary: Vec<_> = events.iter().map(|e| (e.name, e.max)).collect();
        assert_eq!(summary, [("fast-command", 30), ("command", 15)]);
        assert!(lock(&log.entries).is_empty(), "the slow log is off");
    }

    #[test]
    fn an_event_keeps_a_sample_per_second_as_redis() {
        let mut e = Event {
            name: "command",
            max: 0,
            samples: VecDeque::new(),
        };
        e.add(100, 20);
        e.add(100, 10);
        assert_eq!((e.latest(), e.max), ((100, 20), 20));
        e.add(100, 30);
        e.add(101, 5);
        assert_eq!(e.samples, [(100, 30), (101, 5)]);
        assert_eq!((e.latest(), e.max), ((101, 5), 30));
        for t in 0..EVENT_SAMPLES as u64 {
            e.add(200 + t, t);
        }
        assert_eq!(e.samples.len(), EVENT_SAMPLES);
        assert_eq!(e.samples.front(), Some(&(200, 0)));
        assert_eq!(e.max, 159);
    }

    #[test]
    fn arguments_are_trimmed_as_redis_trims_them() {
        let long = vec![b'x'; 130];
        let mut args: Vec<&[u8]> = vec![b"SET", &long];
        let mut t = Trimmed::default();
        t.fill(&args);
        let got: Vec<&[u8]> = t.iter().collect();
        assert_eq!(got[0], b"SET");
        assert_eq!(got[1].len(), 128 + b"... (2 more bytes)".len());
        assert!(got[1].ends_with(b"x... (2 more bytes)"));
        args.resize(40, b"k");
        t.fill(&args);
        let got: Vec<&[u8]> = t.iter().collect();
        assert_eq!(got.len(), 32);
        assert_eq!(got[31], b"... (9 more arguments)");
        t.fill(&args[..32]);
        assert_eq!(t.iter().count(), 32);
        assert_eq!(t.iter().last(), Some(&b"k"[..]));
    }
}
