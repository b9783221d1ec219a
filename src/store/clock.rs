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

/// How long the wall clock's milliseconds are derived from the monotonic
/// clock before [`WallFromMonotonic`] reads the wall clock again.
pub const WALL_RESYNC: Duration = Duration::from_millis(100);

/// Wall-clock milliseconds derived from a monotonic instant a caller read
/// anyway (a loop turn's): the wall clock itself is read again only once
/// [`WALL_RESYNC`] has passed since it last was, so that a turn costs one
/// clock read; a wall clock stepped meanwhile is seen within that.
#[derive(Debug, Clone, Copy)]
pub struct WallFromMonotonic {
    /// The wall clock's milliseconds when last read, and the instant then.
    base: Option<(u64, Instant)>,
}

impl WallFromMonotonic {
    pub const fn new() -> Self {
        WallFromMonotonic { base: None }
    }

    /// The wall clock's milliseconds at `now`.
    pub fn at(&mut self, clock: &dyn Clock, now: Instant) -> u64 {
        match self.base {
            Some((ms, then)) if now.saturating_duration_since(then) < WALL_RESYNC => {
                ms + now.saturating_duration_since(then).as_millis() as u64
            }
            _ => {
                let ms = clock.unix_ms();
                self.base = Some((ms, now));
                ms
            }
        }
    }
}

impl Default for WallFromMonotonic {
    fn default() -> Self {
        Self::new()
    }
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

    /// A manual clock that counts its wall-clock reads.
    struct Counting(ManualClock, AtomicU64);

    impl Clock for Counting {
        fn unix_ms(&self) -> u64 {
            self.1.fetch_add(1, Relaxed);
            self.0.unix_ms()
        }
        fn now(&self) -> Instant {
            self.0.now()
        }
    }

    #[test]
    fn turns_within_the_resync_interval_read_the_wall_clock_once() {
        let c = Counting(ManualClock::at(5_000), AtomicU64::new(0));
        let mut wall = WallFromMonotonic::new();
        // 1,000 turns 50 µs apart: 50 ms, one read.
        for _ in 0..1_000 {
            let now = c.now();
            assert_eq!(wall.at(&c, now), c.0.unix_ms());
            c.0.advance(Duration::from_micros(50));
        }
        assert_eq!(c.1.load(Relaxed), 1);
        // Past the interval, the wall clock is read again: a step of the
        // wall clock (here, the manual clock's base) shows then.
        c.0.advance(WALL_RESYNC);
        let now = c.now();
        assert_eq!(wall.at(&c, now), c.0.unix_ms());
        assert_eq!(c.1.load(Relaxed), 2);
    }

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
