//! The connection threads' clock: read once at the top of each loop turn
//! (`conn_thread.rs`), and used by everything the turn does — command
//! latencies, activity for `--timeout`, lingering closes, the spin — so a
//! turn costs one clock read however many connections it serves.

use std::cell::Cell;
use std::time::Instant;

thread_local! {
    /// The time at the top of this connection thread's loop turn.
    static TURN_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Reads the clock for a new loop turn of this connection thread and
/// returns it.
pub(super) fn start() -> Instant {
    let now = Instant::now();
    TURN_NOW.set(Some(now));
    now
}

/// This thread runs loop turns no more (its inline poller's shutdown
/// goes on after the loop): [`now`] reads the clock again.
pub(super) fn end() {
    TURN_NOW.set(None);
}

/// The time of the current loop turn of this connection thread (read once
/// per turn); on any other thread, or after [`end`], the clock.
pub(super) fn now() -> Instant {
    TURN_NOW.get().unwrap_or_else(Instant::now)
}
