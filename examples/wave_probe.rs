//! Does a disk answer reads in waves?
//!
//! `--io-feed waves` exists because some disks (virtio-blk backends, seen
//! on this project's VMs) answer the reads they hold all at once, when
//! they run out of work: a read that joins reads already at the device
//! delays their completions until it is done too (docs/design.md,
//! "Feeding a disk that completes in waves"). This probe shows whether a
//! disk does. It sends a wave of N random 4 KiB O_DIRECT reads (one
//! io_uring submission each), and measures how long after its last
//! submission the wave completes: alone, and when a second wave of N is
//! sent while the first is still at the device. A disk that serves reads
//! independently finishes the first wave in about the same time either
//! way; a disk that answers in waves finishes it only with the second.
//!
//! ```sh
//! cargo run --release --example wave_probe -- /path/to/store/data.nvkv [N] [ROUNDS] [BYTES]
//! ```
//!
//! Reads fall in the first BYTES of the file (default: all of it). Read
//! that region once beforehand if the disk's host caches it, or the
//! figures measure the cache filling up.

use std::alloc::{self, Layout};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use io_uring::{opcode, types, IoUring};
use rand::Rng;

const BLOCK: usize = 4096;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: wave_probe FILE [READS_PER_WAVE (16)] [ROUNDS (20)] [BYTES (whole file)]");
    };
    let wave: usize = args.get(1).map_or(Ok(16), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    ensure!((1..=256).contains(&wave), "READS_PER_WAVE must be 1..=256");
    ensure!(rounds > 0, "ROUNDS must be at least 1");

    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {path} with O_DIRECT"))?;
    let len = file.metadata()?.len();
    let bytes: u64 = args.get(3).map_or(Ok(len), |s| s.parse())?;
    let blocks = bytes.min(len) / BLOCK as u64;
    ensure!(blocks >= 2 * wave as u64, "{path} is too small");
    let mut probe = Probe::new(file, blocks, 2 * wave)?;

    let alone: Vec<Duration> = (0..rounds)
        .map(|_| probe.round(wave, None).map(|r| r.first))
        .collect::<Result<_>>()?;
    let alone_med = median(alone);
    // The second wave leaves half-way through the first one's time.
    let gap = alone_med / 2;
    let mut joined = Vec::with_capacity(rounds);
    let mut together = 0;
    for _ in 0..rounds {
        let r = probe.round(wave, Some(gap))?;
        joined.push(r.first);
        together += usize::from(r.first_waited_for_second);
    }
    println!("{wave} reads per wave, {rounds} rounds, medians; time from a wave's last submission to its last completion:");
    println!(
        "  first wave alone:                            {:>6} us",
        alone_med.as_micros()
    );
    println!(
        "  with a second wave sent {:>5} us after it:    {:>6} us (finished only after the second wave was sent in {together} of {rounds} rounds)",
        gap.as_micros(),
        median(joined).as_micros()
    );
    Ok(())
}

/// One ring, one file, and a buffer of `slots` aligned blocks.
struct Probe {
    ring: IoUring,
    file: std::fs::File,
    blocks: u64,
    buf: *mut u8,
    layout: Layout,
    slots: usize,
}

/// What one round measured.
struct Round {
    /// From the first wave's last submission to its last completion.
    first: Duration,
    /// Whether the first wave was still incomplete when the second began.
    first_waited_for_second: bool,
}

impl Probe {
    fn new(file: std::fs::File, blocks: u64, slots: usize) -> Result<Probe> {
        let layout = Layout::from_size_align(slots * BLOCK, BLOCK)?;
        // SAFETY: the layout has a non-zero size; freed in Drop.
        let buf = unsafe { alloc::alloc(layout) };
        ensure!(!buf.is_null(), "out of memory");
        let ring = IoUring::new(2 * slots as u32).context("creating an io_uring")?;
        Ok(Probe {
            ring,
            file,
            blocks,
            buf,
            layout,
            slots,
        })
    }

    /// Sends `wave` reads, then (with `gap`) `wave` more that long after
    /// the first submission, and waits for all of them.
    fn round(&mut self, wave: usize, gap: Option<Duration>) -> Result<Round> {
        let total = if gap.is_some() { 2 * wave } else { wave };
        assert!(total <= self.slots);
        let mut rng = rand::thread_rng();
        let mut done_at = vec![None; total];
        let start = Instant::now();
        let mut sent = 0;
        let mut last_first_sent = start;
        let mut second_began = None;
        let mut got = 0;
        while got < total {
            let due = sent < wave || gap.is_some_and(|g| sent < total && start.elapsed() >= g);
            if due {
                let offset = rng.gen_range(0..self.blocks) * BLOCK as u64;
                // SAFETY: slot `sent` lies inside the buffer, which outlives
                // the read: this round waits for every completion.
                let ptr = unsafe { self.buf.add(sent * BLOCK) };
                let read = opcode::Read::new(types::Fd(self.file.as_raw_fd()), ptr, BLOCK as u32)
                    .offset(offset)
                    .build()
                    .user_data(sent as u64);
                // SAFETY: the entry's buffer stays valid until its completion.
                unsafe { self.ring.submission().push(&read) }.expect("ring has room");
                self.ring.submit()?;
                if sent < wave {
                    last_first_sent = Instant::now();
                } else if second_began.is_none() {
                    second_began = Some(Instant::now());
                }
                sent += 1;
            } else {
                // Runs completions' task work without waiting.
                self.ring.submit()?;
            }
            for cqe in self.ring.completion() {
                ensure!(
                    cqe.result() >= 0,
                    "read failed: {}",
                    std::io::Error::from_raw_os_error(-cqe.result())
                );
                done_at[cqe.user_data() as usize] = Some(Instant::now());
                got += 1;
            }
        }
        let first_done = done_at[..wave]
            .iter()
            .flatten()
            .max()
            .copied()
            .expect("all done");
        std::thread::sleep(Duration::from_millis(5));
        Ok(Round {
            first: first_done - last_first_sent,
            first_waited_for_second: second_began.is_some_and(|t| first_done > t),
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no read is in flight
        // (every round waits for all of its completions).
        unsafe { alloc::dealloc(self.buf, self.layout) };
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
