//! A poller run inside a connection thread (`--inline-io`): the thread
//! owns the poller and runs its turns between its own, so a request goes
//! from the socket to the device, and its reply back to the socket, on one
//! thread, with no hand-over between threads and no wake-up in between.
//!
//! The thread sleeps in its epoll instance only. What wakes a parked
//! poller wakes it there: the poller's doorbell (an eventfd, rung by other
//! threads when they send it requests, and by the AIO engine for each
//! completion) is registered with that epoll instance; an io_uring
//! completion is task work for the thread that submitted it, and task work
//! interrupts a sleeping epoll_wait (EINTR) and runs before the thread
//! returns to user space, so the completion is waiting when the thread
//! looks.
//!
//! Once the thread has closed its connections at shutdown, the poller
//! runs on as a poller thread does, serving the requests other threads
//! still send, until the pollers stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{build, Poller, Shared};
use crate::io::{open_engine, Device, Engine, Faulty};
use crate::store::Shard;

/// A poller as its connection thread drives it.
pub(in crate::server) trait Inline {
    /// One turn of the poller; whether anything happened.
    fn turn(&mut self) -> bool;
    /// Requests wait on the poller's ring.
    fn has_requests(&self) -> bool;
    /// Device reads in flight: their completions come soon, so the thread
    /// may poll rather than sleep (as a poller thread does).
    fn reads_in_flight(&self) -> usize;
    /// Announces that the thread is about to sleep, so that other threads
    /// ring the doorbell; false when requests are already waiting (then it
    /// must not sleep).
    fn may_sleep(&self) -> bool;
    /// The longest the thread may sleep (the poller's commit deadlines).
    fn sleep_limit(&self) -> Duration;
    /// Operations are in flight on an engine that completes them only when
    /// polled (the spdk engine): the thread must poll, not sleep.
    fn must_poll(&self) -> bool;
    /// After the thread slept: the doorbell is reset, and how long it took
    /// to wake up is recorded as a poller's wake-up is.
    fn woke(&mut self);
    /// The doorbell's descriptor, for the thread's epoll instance.
    fn bell_fd(&self) -> i32;
    /// Runs the poller until the pollers stop, then shuts it down (its
    /// last commit, the index marked clean).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens poller `id`'s engine on the calling thread and builds the poller,
/// for that thread to drive.
pub(in crate::server) fn open(
    id: usize,
    shared: Arc<Shared>,
    dev: &Device,
    shards: Vec<Option<Shard>>,
    next_seq: u64,
) -> Result<Box<dyn Inline>> {
    let depth = shared.cfg.pollers.max_io_depth;
    let kind = shared.cfg.pollers.engine;
    let eng = open_engine(kind, dev, depth, &shared.pollers[id].bell)
        .map_err(|e| anyhow::anyhow!("poller {id}: opening the {kind:?} engine: {e}"))?;
    let faults = shared.cfg.pollers.inject_faults.as_ref();
    Ok(match faults.map(|spec| spec.for_poller(id)) {
        Some(spec) => boxed(build(id, shared, Faulty::new(eng, spec), shards, next_seq)),
        None => boxed(build(id, shared, eng, shards, next_seq)),
    })
}

/// The poller, its CPU time counted as its thread's (INFO shows the same
/// figure for it and for its connection thread).
fn boxed<E: Engine + 'static>(p: Poller<E>) -> Box<dyn Inline> {
    p.stats().cpu.set_current();
    Box::new(p)
}

impl<E: Engine + 'static> Inline for Poller<E> {
    fn turn(&mut self) -> bool {
        Poller::turn(self)
    }

    fn has_requests(&self) -> bool {
        !self.shared.pollers[self.id].inbox.is_empty()
    }

    fn reads_in_flight(&self) -> usize {
        self.reads.len() - self.free_tags.len()
    }

    fn may_sleep(&self) -> bool {
        let handle = &self.shared.pollers[self.id];
        handle.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        handle.inbox.is_empty() && !self.shared.pollers_stop.load(Ordering::Relaxed)
    }

    fn sleep_limit(&self) -> Duration {
        self.ks.park_timeout().unwrap_or(Duration::from_millis(100))
    }

    fn must_poll(&self) -> bool {
        let engine = self.ks.engine_ref();
        engine.in_flight() > 0 && engine.completes_by_polling()
    }

    fn woke(&mut self) {
        let handle = &self.shared.pollers[self.id];
        handle.sleeping.store(false, Ordering::SeqCst);
        handle.bell.drain();
        if let Some(us) = handle.woken_after() {
            self.stats().wakeups.record(us);
        }
    }

    fn bell_fd(&self) -> i32 {
        self.shared.pollers[self.id].bell.fd()
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.run_loop();
        self.shutdown()
    }
}
