//! `nvkv bench --local DIR`: the same workload, run inside this process
//! against the store at DIR through the pollers, rings and engines `serve`
//! uses, with no sockets: it measures the store and its engine alone.
//!
//! Each benchmark thread takes the place of a connection thread: its
//! connections (`--clients`, each keeping `--inflight` operations
//! outstanding, or paced by `--rate`) send GETs and SETs to the owning
//! poller's ring, and the replies come back to the thread's mailbox. While
//! it awaits replies a thread polls its mailbox (yielding the CPU between
//! looks) for as long as serve's connection threads would, then sleeps
//! until a poller rings it. Latency is from the operation's start (or the
//! time it was due, with `--rate`) to its reply.

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::client::{Driver, Pending};
use super::plan::{Plan, Verify};
use super::report::{Report, Stats};
use super::{resp, BenchArgs};
use crate::server::local::{LocalConn, LocalStore};

/// How long a thread keeps polling its mailbox without a reply before it
/// sleeps (serve's `--loaded-spin-us` default).
const SPIN: Duration = Duration::from_millis(2);

/// One connection's operations.
struct Conn {
    rng: Xoshiro256PlusPlus,
    /// Operations sent, by id.
    pending: VecDeque<(u64, Pending)>,
}

/// Runs `plan` against the store `args.local` names.
pub(super) fn run(args: &BenchArgs, plan: Plan) -> Result<Report> {
    let threads = super::thread_count(args);
    let (store, mailboxes) = LocalStore::open(&args.local, threads)?;
    tracing::info!("bench --local: {}", store.describe);
    let (store, mut mailboxes) = (store, mailboxes);
    if plan.mix.writes() && plan.fill.is_none() && plan.verify != Verify::None {
        if let Err(e) = probe(&plan, &mut mailboxes[0]) {
            let _ = store.close();
            return Err(e);
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let mut shares: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for id in 0..args.clients {
        shares[id % threads].push(Conn {
            rng: rng.clone(),
            pending: VecDeque::with_capacity(plan.inflight),
        });
        rng.jump();
    }
    let start = Instant::now();
    let deadline = start + plan.duration;
    let plan = &plan;
    let outcomes = thread::scope(|scope| {
        let handles = (shares.into_iter().zip(mailboxes))
            .enumerate()
            .map(|(t, (conns, mailbox))| {
                let rate = plan
                    .rate
                    .map(|r| r * conns.len() as f64 / args.clients as f64);
                thread::Builder::new()
                    .name(format!("bench-{t}"))
                    .spawn_scoped(scope, move || {
                        Worker::new(plan, conns, mailbox, rate)?.run(start, deadline)
                    })
                    .context("starting a benchmark thread")
            })
            .collect::<Vec<_>>();
        handles
            .into_iter()
            .map(|h| {
                h?.join()
                    .map_err(|_| anyhow!("a benchmark thread panicked"))?
            })
            .collect::<Result<Vec<(Stats, Instant)>>>()
    });
    // The store closes whatever the run did: its index must be marked
    // clean for the next run to map it.
    let closed = store.close();
    let outcomes = outcomes?;
    closed.context("closing the store")?;
    let mut stats = Stats::new()?;
    let mut stopped = start;
    for (s, t) in outcomes {
        stats.merge(s)?;
        stopped = stopped.max(t);
    }
    let mut report = stats.report(stopped - start, args.clients, args.inflight);
    report.verified = plan.verify != Verify::None;
    report.rate = plan.rate;
    Ok(report)
}

/// One benchmark thread.
struct Worker<'p> {
    driver: Driver<'p>,
    conns: Vec<Conn>,
    mailbox: LocalConn,
    /// Operations per second this thread offers (`--rate`), with the
    /// number issued so far.
    rate: Option<(f64, u64)>,
    /// The connection that gets the next paced operation.
    next_conn: usize,
    next_id: u64,
    /// Operations to send once the replies in hand are handled.
    follow_ups: Vec<(usize, Pending)>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<'p> Worker<'p> {
    fn new(
        plan: &'p Plan,
        conns: Vec<Conn>,
        mailbox: LocalConn,
        rate: Option<f64>,
    ) -> Result<Worker<'p>> {
        Ok(Worker {
            driver: Driver::new(plan)?,
            conns,
            mailbox,
            rate: rate.map(|r| (r, 0)),
            next_conn: 0,
            next_id: 0,
            follow_ups: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
        })
    }

    /// Sends `op` for connection `c`.
    fn send(&mut self, c: usize, op: Pending) {
        let conn = &mut self.conns[c];
        let writes = self
            .driver
            .request(&op, &mut conn.rng, &mut self.key, &mut self.value);
        let id = self.next_id;
        self.next_id += 1;
        if writes {
            self.mailbox.set(c as u32, id, &self.key, &self.value);
        } else {
            self.mailbox.get(c as u32, id, &self.key);
        }
        conn.pending.push_back((id, op));
    }

    /// Tops every connection up to `inflight` operations.
    fn top_up(&mut self) {
        let inflight = self.driver.plan.inflight;
        let now = Instant::now();
        for c in 0..self.conns.len() {
            while self.conns[c].pending.len() < inflight {
                let Some(op) = self.driver.next_op(&mut self.conns[c].rng, now) else {
                    break;
                };
                self.send(c, op);
            }
        }
    }

    /// With `--rate`: issues every operation due by `now` to connections
    /// with room; returns when the next one is due.
    fn pace(&mut self, start: Instant, now: Instant) -> Option<Instant> {
        let (rate, _) = self.rate?;
        let inflight = self.driver.plan.inflight;
        let n = self.conns.len();
        loop {
            let issued = self.rate.as_ref().map_or(0, |r| r.1);
            let due = start + Duration::from_secs_f64(issued as f64 / rate);
            if due > now {
                return Some(due);
            }
            let conns = &self.conns;
            let room = |&i: &usize| conns[i].pending.len() < inflight;
            // None: replies will make room.
            let c = (0..n).map(|i| (self.next_conn + i) % n).find(room)?;
            self.next_conn = (c + 1) % n;
            if let Some(r) = self.rate.as_mut() {
                r.1 += 1;
            }
            if let Some(op) = self.driver.next_op(&mut self.conns[c].rng, due) {
                self.send(c, op);
            }
        }
    }

    /// Handles the replies that have come back; returns how many.
    fn receive(&mut self) -> Result<usize> {
        let Worker {
            driver,
            conns,
            mailbox,
            follow_ups,
            ..
        } = self;
        let now = Instant::now();
        let mut failed = None;
        let got = mailbox.responses(|c, id, bytes| {
            let pending = &mut conns[c as usize].pending;
            let Some(at) = pending.iter().position(|(i, _)| *i == id) else {
                failed.get_or_insert_with(|| anyhow!("a reply to no operation"));
                return;
            };
            let (_, op) = pending.remove(at).expect("found");
            match resp::parse(bytes) {
                Ok(Some((reply, _))) => {
                    if let Some(next) = driver.complete(op, reply, now) {
                        follow_ups.push((c as usize, next));
                    }
                }
                _ => {
                    failed.get_or_insert_with(|| anyhow!("a reply that does not parse"));
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        // The SET of a read-modify-write follows its GET's reply.
        for (c, op) in std::mem::take(&mut self.follow_ups) {
            self.send(c, op);
        }
        Ok(got)
    }

    fn outstanding(&self) -> bool {
        self.conns.iter().any(|c| !c.pending.is_empty())
    }

    /// Issues operations until `deadline`, then awaits the outstanding
    /// ones for at most the plan's drain time.
    fn run(mut self, start: Instant, deadline: Instant) -> Result<(Stats, Instant)> {
        let drain_deadline = deadline + self.driver.plan.drain;
        let mut stopped = None;
        let mut idle_since = Instant::now();
        let mut contended = false;
        loop {
            let now = Instant::now();
            let issuing = now < deadline;
            if !issuing {
                stopped.get_or_insert(now);
                if !self.outstanding() || now >= drain_deadline {
                    break;
                }
            }
            if self.driver.exhausted() && !self.outstanding() {
                break;
            }
            let mut next_due = None;
            if issuing {
                match self.rate {
                    Some(_) => next_due = self.pace(start, now),
                    None => self.top_up(),
                }
            }
            self.mailbox.ring();
            let got = self.receive()?;
            if got > 0 {
                idle_since = Instant::now();
                continue;
            }
            let until = next_due.unwrap_or(if issuing { deadline } else { drain_deadline });
            let waiting = self.outstanding() || self.mailbox.holds_any();
            if waiting && now.duration_since(idle_since) < SPIN && !contended {
                // A yield that comes back late gave the CPU to threads that
                // needed it (the pollers): sleep until they answer instead
                // of polling on, as connection threads do.
                let t = Instant::now();
                std::thread::yield_now();
                contended = t.elapsed() >= crate::server::CONTENDED_YIELD;
            } else {
                self.mailbox.wait(until.saturating_duration_since(now));
                idle_since = Instant::now();
                contended = false;
            }
        }
        Ok((self.driver.stats, stopped.unwrap_or_else(Instant::now)))
    }
}

/// Keys of the data set [`probe`] reads.
const PROBES: u64 = super::PROBES;

/// Before a run that writes: a sample of the data set's keys is read
/// through `mailbox`, and at least one must be in the store, each found
/// with its loaded length (a write to a key of another data set would add
/// a key, and the run would look fine).
fn probe(plan: &Plan, mailbox: &mut LocalConn) -> Result<()> {
    let n = PROBES.min(plan.key_count);
    let mut key = Vec::new();
    for i in 0..n {
        key.clear();
        crate::keys::write_key(plan.seed, i * plan.key_count / n, &mut key);
        mailbox.get(0, i, &key);
    }
    mailbox.ring();
    let mut replies: Vec<Option<Vec<u8>>> = vec![None; n as usize];
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < n as usize {
        got += mailbox.responses(|_, id, bytes| replies[id as usize] = Some(bytes.to_vec()));
        if Instant::now() >= give_up {
            anyhow::bail!("the store did not answer {n} GETs within 10 s");
        }
        mailbox.wait(Duration::from_millis(10));
    }
    let mut found = 0;
    for (i, bytes) in replies.iter().enumerate() {
        let bytes = bytes.as_deref().expect("every reply came");
        let (reply, _) = resp::parse(bytes)?.context("a partial reply")?;
        found += super::judge_probe(plan, i as u64 * plan.key_count / n, reply)? as u64;
    }
    super::probe_found(plan, found, n, "the store")
}
