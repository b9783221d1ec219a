//! Zeros over the free part of a data file, written by the server in the
//! background after it starts: an `O_DIRECT` write into a hole allocates
//! blocks, and the fdatasync of each sync commit would then commit the file
//! system's journal as well. A store whose data file still has such holes
//! carries the file [`ZERO_FILE`]; the server holds its free segments that
//! have holes back from the writers ([`Space::hold_unzeroed`]), and a
//! thread writes zeros over them in order, giving each back as it is done.
//! A writer that finds no zeroed segment takes one of those still to be
//! zeroed instead ([`Space::take_free`]): correct, only slower to commit.
//! The file's holes are the record of what is left: a restart after a
//! crash finds them again and resumes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::Space;
use crate::format::Superblock;
use crate::io::{Device, IoBuf, ALIGN};

/// Name of the file present in a store directory while the free part of
/// its data file is still to be zeroed (not for `--sparse` stores).
pub const ZERO_FILE: &str = "zeroing";

/// Bytes of each write of zeros: large, so that the kernel keeps several
/// requests of the device's largest size in flight.
const ZERO_CHUNK: usize = 16 << 20;

/// Writes zeros over the holes of a data file in `[from, end)` (until
/// `stop` is set). (fio lays out its files in full before a random-write
/// run for the same reason.)
pub(crate) fn fill_holes(
    dev: &Device,
    from: u64,
    end: u64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let zeros = IoBuf::new(ZERO_CHUNK);
    for (hole, stop_at) in holes(dev, from, end)? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        write_zeros(dev, &zeros, hole, stop_at)?;
    }
    Ok(())
}

/// The holes of a data file in `[from, end)`, as `[start, end)` ranges
/// rounded out to whole `ALIGN` blocks and cut at `end`.
fn holes(dev: &Device, from: u64, end: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let fd = dev.fd()?;
    let align = ALIGN as u64;
    let end = end / align * align;
    let mut found = Vec::new();
    let mut off = from;
    while off < end {
        // SAFETY: lseek on an open descriptor; the result is checked.
        let hole = unsafe { libc::lseek(fd, off as i64, libc::SEEK_HOLE) };
        if hole < 0 || hole as u64 >= end {
            break;
        }
        // SAFETY: as above; ENXIO (no data after the hole) ends at `end`.
        let data = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
        let stop = if data < 0 {
            end
        } else {
            (data as u64).next_multiple_of(align).min(end)
        };
        found.push((hole as u64 / align * align, stop));
        off = stop;
    }
    Ok(found)
}

/// Writes zeros over `[from, end)` (`ALIGN`ed) in writes of at most
/// `zeros.len()` bytes.
fn write_zeros(dev: &Device, zeros: &IoBuf, from: u64, end: u64) -> std::io::Result<()> {
    let mut pos = from;
    while pos < end {
        let n = ((end - pos) as usize).min(zeros.len());
        dev.write_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// Marks a new store's data file as still to be zeroed by the server.
pub(crate) fn mark_unzeroed(dir: &Path) -> std::io::Result<()> {
    std::fs::write(
        dir.join(ZERO_FILE),
        "The free part of data.nvkv still has holes: the server writes zeros over them.\n",
    )
}

/// The background zeroing of a served store.
pub struct Zeroer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Zeroer {
    /// Starts zeroing the free segments of the data file of the store in
    /// `dir` that still have holes, if it is marked so ([`ZERO_FILE`]).
    pub fn start(
        dir: &Path,
        dev: &Device,
        sb: &Superblock,
        space: &Arc<Space>,
    ) -> std::io::Result<Option<Zeroer>> {
        let marker = dir.join(ZERO_FILE);
        if !dev.is_file || !marker.exists() {
            return Ok(None);
        }
        let seg = sb.segment_size as u64;
        let mut has_holes = vec![false; sb.segment_count as usize];
        let start = sb.segment_offset(0);
        for (a, b) in holes(dev, start, sb.segment_offset(sb.segment_count))? {
            let last = (b - 1 - start) / seg;
            for no in (a - start) / seg..=last {
                has_holes[no as usize] = true;
            }
        }
        let held = space.hold_unzeroed(|no| has_holes[no as usize]);
        tracing::info!(
            segments = held,
            "zeroing the free part of the data file in the background"
        );
        let dev = dev.try_clone()?;
        let (sb, space) = (sb.clone(), Arc::clone(space));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("zeroer".into())
            .spawn(move || run(&dev, &sb, &space, &stopped, marker))?;
        Ok(Some(Zeroer {
            stop,
            thread: Some(thread),
        }))
    }
}

/// Dropped, the zeroing stops after the write under way: the thread is
/// joined, so that no zeros reach the file once the store is closed.
impl Drop for Zeroer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The zeroing thread: runs of segments in order until none is left (then
/// removes `marker`) or `stop` is set.
fn run(dev: &Device, sb: &Superblock, space: &Space, stop: &AtomicBool, marker: PathBuf) {
    let t0 = Instant::now();
    let seg = sb.segment_size as u64;
    let zeros = IoBuf::new(ZERO_CHUNK);
    let per_run = (ZERO_CHUNK as u64 / seg).max(1) as usize;
    let mut bytes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let run = space.take_unzeroed(per_run);
        let (Some(&first), Some(&last)) = (run.first(), run.last()) else {
            if let Err(e) = std::fs::remove_file(&marker) {
                tracing::warn!(error = %e, "removing {}", marker.display());
            }
            let secs = t0.elapsed().as_secs_f64();
            tracing::info!(
                mb = bytes as f64 / 1e6,
                secs,
                mb_per_sec = bytes as f64 / 1e6 / secs.max(1e-9),
                "the free part of the data file is zeroed"
            );
            return;
        };
        let (from, end) = (sb.segment_offset(first), sb.segment_offset(last) + seg);
        let result = write_zeros(dev, &zeros, from, end);
        run.iter().for_each(|&no| space.zeroed(no));
        if let Err(e) = result {
            tracing::warn!(error = %e, "zeroing the data file: stopped, its holes stay");
            return;
        }
        bytes += end - from;
    }
}
