//! Time as the store sees it: wall-clock milliseconds for expiry times,
//! and a monotonic instant for commit intervals and waits. The server runs
//! on the system's clocks; tests drive a [`ManualClock`] and move time on
//! without sleeping.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch (what expiry times are in).
    fn unix_ms(&self) -> u64;
    /// A monotonic instant.
    fn now(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        unix_ms()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Milliseconds since the Unix epoch, by the system's clock.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A clock that moves only when told to; clones share their time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    start_ms: u64,
    /// Microseconds since `start`.
    elapsed_us: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `unix_ms`.
    pub fn at(unix_ms: u64) -> Self {
        ManualClock {
            start: Instant::now(),
            start_ms: unix_ms,
            elapsed_us: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves time on by `d`.
    pub fn advance(&self, d: Duration) {
        self.elapsed_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

impl Clock for ManualClock {
    fn unix_ms(&self) -> u64 {
        self.start_ms + self.elapsed_us.load(Relaxed) / 1000
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_micros(self.elapsed_us.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_times_together_and_only_when_told() {
        let c = ManualClock::at(1_000);
        let (t0, ms0) = (c.now(), c.unix_ms());
        assert_eq!((c.now(), c.unix_ms()), (t0, ms0));
        let other = c.clone();
        other.advance(Duration::from_millis(1_500));
        assert_eq!(c.unix_ms(), 2_500);
        assert_eq!(c.now() - t0, Duration::from_millis(1_500));
    }
}
