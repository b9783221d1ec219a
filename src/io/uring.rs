//! The io_uring engine: one ring per poller, the device registered as fixed
//! file 0, a pool of registered buffers for reads (`READ_FIXED`), and a
//! pending read on the poller's eventfd so that one `io_uring_enter` sleeps
//! until either a completion or a wake-up arrives.

use std::io;
use std::time::Duration;

use io_uring::{opcode, squeue, types, EnterFlags, IoUring};

use super::{kernel_result, Completion, Device, Engine, EventFd, IoBuf, Slots};

/// Size of each registered buffer; larger requests get a plain buffer.
const POOL_BUF: usize = 16 * 1024;
/// Registered buffers per engine, at most (the kernel limit is 16 Ki).
const POOL_MAX: usize = 1024;
const WAKE: u64 = u64::MAX;
const DEV: types::Fixed = types::Fixed(0);

pub struct Uring {
    ring: IoUring,
    slots: Slots,
    pool: Vec<IoBuf>,
    queued: usize,
    block_size: u32,
    capacity: u64,
    wake_fd: i32,
    /// A one-shot poll on the eventfd is pending in the ring.
    wake_armed: bool,
}

impl Uring {
    pub fn new(dev: &Device, depth: usize, wake: &EventFd) -> io::Result<Self> {
        let entries = (depth + 1).next_power_of_two() as u32;
        let ring = setup_ring(entries)?;
        require_features(ring.params().is_feature_ext_arg())?;
        ring.submitter().register_files(&[dev.fd()?])?;
        let pool: Vec<IoBuf> = (0..depth.min(POOL_MAX))
            .map(|i| IoBuf::new(POOL_BUF).with_pool_index(i as u16))
            .collect();
        let iovecs: Vec<libc::iovec> = pool
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut _,
                iov_len: b.capacity(),
            })
            .collect();
        // SAFETY: each iovec describes a live buffer owned by `pool`. Pool
        // buffers live in this engine (in `pool` or in `slots` while in
        // flight) until it drops, which unregisters them with the ring; one
        // handed out and dropped elsewhere stays pinned by the kernel and its
        // index is never used again, since only that IoBuf carries it.
        unsafe { ring.submitter().register_buffers(&iovecs)? };
        Ok(Uring {
            ring,
            slots: Slots::new(depth),
            pool,
            queued: 0,
            block_size: dev.block_size(),
            capacity: dev.capacity(),
            wake_fd: wake.fd(),
            wake_armed: false,
        })
    }

    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: the SQE points into a buffer held in `self.slots` until its completion is reaped. The ring has more
        // entries than `depth` + 1, and at most that many SQEs are ever
        // outstanding, so the queue cannot be full.
        unsafe { self.ring.submission().push(&sqe) }.expect("submission queue sized for depth");
        self.queued += 1;
    }

    fn queue_rw(&mut self, off: u64, buf: IoBuf, tag: u64, write: bool) -> Result<(), IoBuf> {
        let slot = self
            .slots
            .take(tag, Some(buf))
            .map_err(|b| b.expect("buffer"))?;
        let buf = self.slots.buf_mut(slot).expect("buffer in slot");
        let (ptr, len) = (buf.as_mut_ptr(), buf.len() as u32);
        let sqe = match (buf.pool_index(), write) {
            (Some(i), false) => opcode::ReadFixed::new(DEV, ptr, len, i).offset(off).build(),
            (None, false) => opcode::Read::new(DEV, ptr, len).offset(off).build(),
            (Some(i), true) => opcode::WriteFixed::new(DEV, ptr, len, i)
                .offset(off)
                .build(),
            (None, true) => opcode::Write::new(DEV, ptr, len).offset(off).build(),
        };
        self.push(sqe.user_data(slot as u64));
        Ok(())
    }
}

/// The oldest kernel the engine runs on: `wait` bounds its sleep with a
/// timeout passed to `io_uring_enter` (`IORING_FEAT_EXT_ARG`, Linux 5.11).
const MIN_KERNEL: &str = "Linux 5.11";

/// A ring of `entries` with the most useful setup flags this kernel knows.
/// COOP_TASKRUN: a completion does not interrupt the poller with an IPI to
/// post its CQE; the kernel raises IORING_SQ_TASKRUN instead (TASKRUN_FLAG,
/// both Linux 5.19), and `reap` enters the kernel only when it is set. A
/// parked poller is still woken. SINGLE_ISSUER (6.0) spares the kernel some
/// locking. Kernels without them get the ring without.
fn setup_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries)
        .or_else(|_| {
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(entries)
        })
        .or_else(|_| IoUring::new(entries))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring_setup failed: {e} (the uring engine needs {MIN_KERNEL} or later, with io_uring enabled; run with --engine aio otherwise)"
                ),
            )
        })
}

/// Refuses a ring that lacks a feature the engine relies on, with an error
/// that names the kernel needed, rather than an EINVAL at the first wait.
fn require_features(ext_arg: bool) -> io::Result<()> {
    if ext_arg {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "this kernel's io_uring lacks IORING_FEAT_EXT_ARG (timed waits): the uring engine needs {MIN_KERNEL} or later; run with --engine aio"
        ),
    ))
}

impl Engine for Uring {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn alloc(&mut self, len: usize) -> IoBuf {
        let mut b = match self.pool.pop() {
            Some(b) if len <= b.capacity() => b,
            other => {
                if let Some(b) = other {
                    self.pool.push(b);
                }
                IoBuf::new(len)
            }
        };
        b.set_len(len);
        b
    }

    fn free(&mut self, buf: IoBuf) {
        if buf.pool_index().is_some() {
            self.pool.push(buf);
        }
    }

    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue_rw(off, buf, tag, false)
    }

    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue_rw(off, buf, tag, true)
    }

    fn flush(&mut self, tag: u64) -> bool {
        let Ok(slot) = self.slots.take(tag, None) else {
            return false;
        };
        let sqe = opcode::Fsync::new(DEV)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(slot as u64);
        self.push(sqe);
        true
    }

    fn submit(&mut self) -> io::Result<usize> {
        if self.queued == 0 {
            return Ok(0);
        }
        let n = self.ring.submit()?;
        self.queued -= n.min(self.queued);
        Ok(n)
    }

    fn submit_one(&mut self) -> io::Result<bool> {
        if self.queued == 0 {
            return Ok(false);
        }
        // io_uring plugs the block layer for a batch of more than two
        // entries and dispatches it at the end; one entry is never plugged.
        self.ring.submission().sync();
        // SAFETY: submits the oldest entry of the submission queue, whose
        // buffer `push` keeps alive until its completion; no signal mask.
        let n = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(1, 0, 0, None)?
        };
        self.queued -= n.min(self.queued);
        Ok(n > 0)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        if self.ring.submission().taskrun() {
            // Completions wait as task work: an enter that submits nothing
            // runs it. Submitting here would send what the poller holds
            // for the next wave in one plugged batch, before it can feed
            // it one read at a time (`--io-feed waves`), and uncounted.
            // SAFETY: submits nothing and waits for nothing; no signal mask.
            let _ = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    0,
                    0,
                    EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
        }
        for cqe in self.ring.completion() {
            if cqe.user_data() == WAKE {
                self.wake_armed = false;
                continue;
            }
            let result = kernel_result(cqe.result() as i64);
            out.push(self.slots.finish(cqe.user_data() as u32, result));
        }
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.wake_armed {
            let sqe = opcode::PollAdd::new(types::Fd(self.wake_fd), libc::POLLIN as u32)
                .build()
                .user_data(WAKE);
            self.push(sqe);
            self.wake_armed = true;
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // ETIME on timeout and EINTR are normal ways to wake up.
        if let Ok(n) = self.ring.submitter().submit_with_args(1, &args) {
            self.queued -= n.min(self.queued);
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.in_use()
    }

    fn queued(&self) -> usize {
        self.queued
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The kernel may still write into buffers of reads in flight: wait
        // (bounded) for them before the buffers are freed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while self.slots.in_use() > 0 && std::time::Instant::now() < deadline {
            let _ = self.submit();
            self.reap(&mut out);
            out.clear();
            if self.slots.in_use() > 0 {
                let _ = self.ring.submit_and_wait(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_without_ext_arg_is_refused_naming_the_kernel_and_aio() {
        let e = require_features(false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        let msg = e.to_string();
        assert!(
            msg.contains("Linux 5.11") && msg.contains("--engine aio"),
            "{msg}"
        );
        require_features(true).unwrap();
    }

    #[test]
    fn this_kernels_ring_has_the_features_the_engine_needs() {
        let ring = setup_ring(8).unwrap();
        require_features(ring.params().is_feature_ext_arg()).unwrap();
    }
}
