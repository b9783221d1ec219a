//! The store without the network, for `nvkv bench --local`: the pollers,
//! their rings and engines exactly as `serve` starts them, driven by the
//! benchmark's own threads in the place of connection threads.
//!
//! Each [`LocalConn`] takes one connection thread's mailbox: its requests
//! go to the owning poller's ring, the pollers' responses come back into
//! its queue and ring its waker when it sleeps, as they would for a
//! connection thread. What a run measures is thus the store and its
//! engine — index, device reads, commits, the rings — and none of the
//! sockets, parsing or reply encoding of the front end.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use super::msg::{Cond, ConnRef, Op, Reply, Request, SetReply};
use super::{EngineKind, PollMode, ServeArgs, Shared, SpdkArgs};
use crate::index::KeyHash;

/// `nvkv bench --local DIR` and the serve flags that shape the store's
/// side of the run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LocalArgs {
    /// Run the workload inside this process against the store at DIR
    /// (through the same pollers, rings and engines as `serve`, without
    /// sockets) instead of against a server.
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// With --local: the pollers' I/O engine, as serve's --engine.
    #[arg(long, value_parser = super::engine_parser(), requires = "local")]
    pub engine: Option<EngineKind>,
    /// With --local: I/O poller threads, as serve's --io-threads.
    #[arg(long, value_name = "N", requires = "local")]
    pub io_threads: Option<usize>,
    /// With --local: the pollers' cores, as serve's --poller-cores.
    #[arg(long, value_delimiter = ',', value_name = "LIST", requires = "local")]
    pub poller_cores: Vec<usize>,
    /// With --local: how idle pollers wait, as serve's --poll.
    #[arg(long, value_enum, requires = "local")]
    pub poll: Option<PollMode>,
    /// With --local: pin the pollers, as serve's --pin.
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL",
        requires = "local"
    )]
    pub pin: Option<bool>,
    #[command(flatten)]
    pub spdk: SpdkArgs,
}

/// serve's flags with their defaults, for the store a local run opens.
#[derive(Parser)]
struct ServeFlags {
    #[command(flatten)]
    args: ServeArgs,
}

/// A store opened in this process with its pollers running.
pub struct LocalStore {
    shared: Arc<Shared>,
    pollers: Vec<std::thread::JoinHandle<Result<()>>>,
    /// The engine, poller count and poll mode chosen, for the log.
    pub describe: String,
}

impl LocalStore {
    /// Opens the store at `a.local` and starts its pollers as `serve`
    /// would with the same flags; returns it with `threads` mailboxes,
    /// one per benchmark thread.
    pub fn open(a: &LocalArgs, threads: usize) -> Result<(LocalStore, Vec<LocalConn>)> {
        let dir = a.local.clone().context("--local names no store")?;
        let mut args = ServeFlags::try_parse_from(["serve"])?.args;
        args.path = dir;
        args.tcp_threads = Some(threads.max(1));
        args.engine = a.engine;
        args.io_threads = a.io_threads;
        args.poller_cores = a.poller_cores.clone();
        args.poll = a.poll;
        args.pin = a.pin;
        args.spdk = a.spdk.clone();
        super::check_flags(&args)?;
        let cores: Vec<usize> = (core_affinity::get_core_ids().unwrap_or_default().iter())
            .map(|c| c.id)
            .collect();
        if let Some(c) = args.poller_cores.iter().find(|c| !cores.contains(c)) {
            anyhow::bail!("--poller-cores: core {c} is not one this process may use ({cores:?})");
        }
        args.choose_threads(&cores, None);
        let (poller_cores, _) = args.placement(&cores);
        let store = crate::store::Store::open(&args.path, &args.spdk.env(poller_cores))
            .with_context(|| format!("opening the store in {}", args.path.display()))?;
        args.settle(&store.dev, store.sb.shards, &cores);
        // The benchmark's threads stand in for connection threads: the
        // pollers run in threads of their own.
        args.inline = Some((
            false,
            "bench --local: pollers in threads of their own".into(),
        ));
        let describe = format!(
            "engine {}, {} poller(s), poll {:?}, pinned {} ({})",
            args.engine().name(),
            args.poller_threads(),
            args.poll(),
            args.pinned(),
            args.poll_choice
        );
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let started = super::start(&args, store, &cores, addr)?;
        let shared = started.shared;
        let conns = (started.polls.into_iter().enumerate())
            .map(|(thread, poll)| LocalConn {
                shared: Arc::clone(&shared),
                thread,
                poll,
                events: mio::Events::with_capacity(4),
                stalled: (0..shared.pollers.len()).map(|_| VecDeque::new()).collect(),
                touched: vec![false; shared.pollers.len()],
                scratch: Vec::new(),
            })
            .collect();
        let store = LocalStore {
            shared,
            pollers: started.pollers,
            describe,
        };
        Ok((store, conns))
    }

    /// Stops the pollers after their last commit and closes the store
    /// cleanly, as a server's shutdown does. Call once every [`LocalConn`]
    /// has its replies.
    pub fn close(self) -> Result<()> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        super::stop(&self.shared, self.pollers)
    }
}

/// One benchmark thread's link to the pollers: a connection thread's
/// mailbox, and requests held while a poller's ring is full.
pub struct LocalConn {
    shared: Arc<Shared>,
    thread: usize,
    poll: mio::Poll,
    events: mio::Events,
    /// Per poller, requests its full ring could not take yet.
    stalled: Vec<VecDeque<Request>>,
    /// Pollers sent requests since the last [`LocalConn::ring`].
    touched: Vec<bool>,
    /// A reply's RESP bytes.
    scratch: Vec<u8>,
}

impl LocalConn {
    /// Sends `GET key` for connection `conn`; its reply comes back with `id`.
    pub fn get(&mut self, conn: u32, id: u64, key: &[u8]) {
        self.send(conn, id, key, |key| Op::Get { key });
    }

    /// Sends `SET key value` for connection `conn`.
    pub fn set(&mut self, conn: u32, id: u64, key: &[u8], value: &[u8]) {
        let value = bytes::Bytes::copy_from_slice(value);
        self.send(conn, id, key, move |key| Op::Set {
            key,
            value,
            expire_ms: 0,
            keep_ttl: false,
            cond: Cond::Always,
            reply: SetReply::Ok,
            fed: None,
        });
    }

    fn send(&mut self, conn: u32, id: u64, key: &[u8], op: impl FnOnce(Box<[u8]>) -> Op) {
        let hash = KeyHash::of(key);
        let pid = hash.partition(self.shared.sb.partitions);
        let poller = self.shared.poller_of(pid);
        let req = Request {
            tried: Vec::new(),
            from: ConnRef {
                thread: self.thread as u16,
                slot: conn,
                gen: 0,
            },
            id,
            part: 0,
            hash,
            pid,
            op: op(key.into()),
            touch: true,
        };
        self.touched[poller] = true;
        if self.stalled[poller].is_empty() {
            if let Err(req) = self.shared.pollers[poller].inbox.push(req) {
                self.stalled[poller].push_back(req);
            }
        } else {
            self.stalled[poller].push_back(req);
        }
    }

    /// Hands the pollers what their rings can take now and wakes the ones
    /// sent requests.
    pub fn ring(&mut self) {
        for (p, q) in self.stalled.iter_mut().enumerate() {
            while let Some(req) = q.pop_front() {
                if let Err(req) = self.shared.pollers[p].inbox.push(req) {
                    q.push_front(req);
                    break;
                }
            }
        }
        for (p, t) in self.touched.iter_mut().enumerate() {
            if std::mem::take(t) {
                self.shared.pollers[p].ring();
            }
        }
    }

    /// Calls `f(conn, id, reply)` for every response that has come back,
    /// the reply in RESP2 as a connection would send it. Returns how many.
    pub fn responses(&mut self, mut f: impl FnMut(u32, u64, &[u8])) -> usize {
        let mut n = 0;
        let h = &self.shared.conns[self.thread];
        while let Some(r) = h.responses.pop() {
            self.scratch.clear();
            match &r.reply {
                Reply::Txn(_) => {}
                reply => reply.encode(&mut self.scratch, crate::resp::Proto::Resp2),
            }
            f(r.to.slot, r.id, &self.scratch);
            n += 1;
        }
        n
    }

    /// Sleeps until a poller answers or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        let h = &self.shared.conns[self.thread];
        h.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if h.responses.is_empty() {
            let _ = self.poll.poll(&mut self.events, Some(timeout));
        }
        h.sleeping.store(false, Ordering::SeqCst);
    }

    /// Whether requests wait for room in a full ring.
    pub fn holds_any(&self) -> bool {
        self.stalled.iter().any(|q| !q.is_empty())
    }
}
