//! The io_uring engine: one ring per poller, the device registered as fixed
//! file 0, a pool of registered buffers for reads (`READ_FIXED`), and a
//! pending read on the poller's eventfd so that one `io_uring_enter` sleeps
//! until either a completion or a wake-up arrives. Where the kernel refuses
//! to register the buffers (RLIMIT_MEMLOCK) or the file, the engine warns
//! and does without: plain buffers with `READ`/`WRITE`, the descriptor.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, EnterFlags, IoUring};

use super::buf::BufPool;
use super::{kernel_result, Completion, Device, Engine, EventFd, IoBuf, Slots};

/// Size of each registered buffer; larger requests get a plain buffer.
const POOL_BUF: usize = 16 * 1024;
/// Registered buffers per engine, at most (the kernel limit is 16 Ki).
const POOL_MAX: usize = 1024;
const WAKE: u64 = u64::MAX;
const DEV: types::Fixed = types::Fixed(0);

/// Builds `$sqe` with `$fd` standing for the device: fixed file 0, or the
/// plain descriptor `$plain` (an `Option<RawFd>`) when registering failed.
macro_rules! on_dev {
    ($plain:expr, |$fd:ident| $sqe:expr) => {
        match $plain {
            None => {
                let $fd = DEV;
                $sqe
            }
            Some(raw) => {
                let $fd = types::Fd(raw);
                $sqe
            }
        }
    };
}

pub struct Uring {
    /// Declared first, so dropped first: the ring unregisters the pool's
    /// buffers before the engine lets go of the pool.
    ring: IoUring,
    slots: Slots,
    /// Buffers of at most `POOL_BUF` bytes; they come back on drop. When
    /// registered, the pool holds every one of them, and they are freed
    /// only with it, once this engine and every buffer taken are gone.
    pool: Arc<BufPool>,
    /// Larger buffers (segments, pieces, recovery reads), kept for reuse:
    /// a fresh one costs the kernel's page faults and the allocator's
    /// zeroing.
    big: Arc<BufPool>,
    /// The pool's buffers are registered with the kernel (`READ_FIXED`).
    fixed_bufs: bool,
    /// The device, when registering it as a fixed file failed: operations
    /// name its descriptor (a duplicate this engine holds).
    plain_dev: Option<Device>,
    /// `user_data` of the entries pushed but not yet submitted, oldest
    /// first: the kernel has not seen them, nor their buffers.
    pending: VecDeque<u64>,
    block_size: u32,
    capacity: u64,
    wake_fd: i32,
    /// A one-shot poll on the eventfd is pending in the ring.
    wake_armed: bool,
    /// How long `Drop` waits for operations in flight.
    drain_limit: Duration,
    /// The error of a submission that failed for good (errno): the ring
    /// submits nothing more, and every operation fails with it.
    broken: Option<i32>,
    /// Operations failed without reaching the kernel, for `reap`.
    failed: Vec<Completion>,
}

impl Uring {
    pub fn new(dev: &Device, depth: usize, wake: &EventFd) -> io::Result<Self> {
        Self::open(dev, depth, wake, true)
    }

    /// As [`Uring::new`]; `register: false` skips registering the file and
    /// buffers, as when the kernel refuses to (for tests).
    pub(super) fn open(
        dev: &Device,
        depth: usize,
        wake: &EventFd,
        register: bool,
    ) -> io::Result<Self> {
        let entries = (depth + 1).next_power_of_two() as u32;
        let ring = setup_ring(entries)?;
        require_features(ring.params().is_feature_ext_arg())?;
        let fd = dev.fd()?;
        let files = match register {
            true => ring.submitter().register_files(&[fd]),
            false => Err(io::Error::other("not asked to")),
        };
        let plain_dev = match files {
            Ok(()) => None,
            Err(e) => {
                if register {
                    tracing::warn!(
                        "io_uring: registering the device failed ({e}); using its file descriptor"
                    );
                }
                Some(dev.try_clone()?)
            }
        };
        let n = depth.min(POOL_MAX);
        let pool = BufPool::new(n);
        let bufs: Vec<IoBuf> = (0..n)
            .map(|i| IoBuf::new(POOL_BUF).pooled(&pool).with_pool_index(i as u16))
            .collect();
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut _,
                iov_len: b.capacity(),
            })
            .collect();
        let registered = match register {
            // SAFETY: each iovec describes a live buffer of `pool`. A pool
            // buffer always goes back to the pool when dropped (it has an
            // index), and the pool frees its buffers only when it drops:
            // after this engine, whose ring (dropped first) unregisters
            // them, and after every buffer taken from it.
            true => unsafe { ring.submitter().register_buffers(&iovecs) },
            false => Err(io::Error::other("not asked to")),
        };
        let (pool, fixed_bufs) = match registered {
            Ok(()) => {
                drop(bufs); // into the pool
                (pool, true)
            }
            Err(e) => {
                if register {
                    tracing::warn!(
                        "io_uring: registering {n} buffers of {} KiB failed ({e}; RLIMIT_MEMLOCK too low? see `ulimit -l`); reading into plain buffers instead (READ, not READ_FIXED)",
                        POOL_BUF / 1024
                    );
                }
                // The same pool, without indices: nothing is registered.
                drop(bufs);
                let plain = BufPool::new(n);
                for _ in 0..n {
                    drop(IoBuf::new(POOL_BUF).pooled(&plain));
                }
                (plain, false)
            }
        };
        Ok(Uring {
            ring,
            slots: Slots::new(depth),
            pool,
            big: BufPool::bounded(super::BIG_MAX, super::BIG_BYTES),
            fixed_bufs,
            plain_dev,
            pending: VecDeque::with_capacity(entries as usize),
            block_size: dev.block_size(),
            capacity: dev.capacity(),
            wake_fd: wake.fd(),
            wake_armed: false,
            drain_limit: Duration::from_secs(10),
            broken: None,
            failed: Vec::new(),
        })
    }

    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: the SQE points into a buffer held in `self.slots` until its completion is reaped. The ring has more
        // entries than `depth` + 1, and at most that many SQEs are ever
        // outstanding, so the queue cannot be full.
        unsafe { self.ring.submission().push(&sqe) }.expect("submission queue sized for depth");
        self.pending.push_back(sqe.get_user_data());
    }

    /// `wait` on a broken ring, which must not submit its poll on the
    /// eventfd: polls the eventfd and the ring (readable once a completion
    /// of an operation submitted before the break is posted).
    fn wait_broken(&mut self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut fds = [self.wake_fd, self.ring.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: two valid pollfds in a live array.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    }

    /// The device's descriptor, when it is not registered.
    fn plain_fd(&self) -> Option<i32> {
        self.plain_dev
            .as_ref()
            .map(|d| d.fd().expect("a file device"))
    }

    /// Notes that the kernel took the oldest `n` pending entries.
    fn submitted(&mut self, n: usize) {
        let n = n.min(self.pending.len());
        self.pending.drain(..n);
    }

    /// Waits, up to `limit`, for the operations the kernel holds, and
    /// returns how many did not complete; their buffers are leaked. Entries
    /// never submitted are dropped unsent, with their buffers.
    fn drain(&mut self, limit: Duration) -> usize {
        // The kernel never read these entries and never will: nothing
        // below submits (every enter passes to_submit = 0).
        while let Some(ud) = self.pending.pop_front() {
            if ud != WAKE {
                drop(
                    self.slots
                        .finish(ud as u32, Err(io::ErrorKind::Interrupted.into())),
                );
            }
        }
        let deadline = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            self.reap(&mut out);
            out.clear();
            let now = Instant::now();
            if self.slots.in_use() == 0 || now >= deadline {
                break;
            }
            let ts = types::Timespec::from((deadline - now).min(Duration::from_millis(100)));
            let args = types::SubmitArgs::new().timespec(&ts);
            let flags = EnterFlags::GETEVENTS | EnterFlags::EXT_ARG;
            // SAFETY: submits nothing (to_submit = 0) and waits for one
            // completion at most until the timeout; `args` is a valid
            // io_uring_getevents_arg (SubmitArgs is repr(transparent)) that
            // outlives the call, as EXT_ARG requires.
            let r = unsafe { self.ring.submitter().enter(0, 1, flags.bits(), Some(&args)) };
            if let Err(e) = r {
                if !matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let stuck = self.slots.in_use();
        for op in self.slots.ops.iter_mut() {
            // The slot stays taken (off the free list): a late completion
            // must not be mistaken for a new operation's.
            if let Some((_, Some(buf))) = op.take() {
                // The kernel may still read or write this buffer: closing
                // the ring cancels its operation asynchronously, and a
                // device may be in the middle of a DMA into it. Freed, or
                // back in the pool, it could be handed to someone else
                // first; leaked, it stays reserved for the kernel for good.
                buf.leak();
            }
        }
        stuck
    }

    /// The result of a failed `io_uring_enter` that was to submit. A full
    /// completion queue (EBUSY, EAGAIN) or a signal (EINTR) leaves the
    /// entries queued for the next try; any other error breaks the ring:
    /// what is queued fails with it, and so does every later operation, so
    /// that no requester waits for an answer that cannot come.
    fn submit_failed(&mut self, e: io::Error) -> io::Result<usize> {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        if matches!(errno, libc::EINTR | libc::EAGAIN | libc::EBUSY) {
            return Ok(0);
        }
        self.broken = Some(errno);
        // The entries stay in the submission queue, unread by the kernel:
        // from now on every enter passes to_submit = 0, so it never will
        // read them, and their buffers go back to their owners.
        while let Some(ud) = self.pending.pop_front() {
            if ud == WAKE {
                self.wake_armed = false;
            } else {
                let c = self.slots.finish(ud as u32, Err(broken_error(errno)));
                self.failed.push(c);
            }
        }
        Err(io::Error::new(
            e.kind(),
            format!("io_uring_enter failed: {e}; the ring is broken, and every operation on it fails from now on"),
        ))
    }

    /// Fails an operation at once on a broken ring; `false` if it is not.
    fn fail_if_broken(&mut self, tag: u64, buf: Option<IoBuf>) -> Result<(), Option<IoBuf>> {
        match self.broken {
            Some(errno) => {
                self.failed.push(Completion {
                    tag,
                    result: Err(broken_error(errno)),
                    buf,
                });
                Ok(())
            }
            None => Err(buf),
        }
    }

    fn queue_rw(&mut self, off: u64, buf: IoBuf, tag: u64, write: bool) -> Result<(), IoBuf> {
        let Err(buf) = self.fail_if_broken(tag, Some(buf)) else {
            return Ok(());
        };
        let buf = buf.expect("buffer");
        let slot = self
            .slots
            .take(tag, Some(buf))
            .map_err(|b| b.expect("buffer"))?;
        let buf = self.slots.buf_mut(slot).expect("buffer in slot");
        let (ptr, len) = (buf.as_mut_ptr(), buf.len() as u32);
        let index = buf.pool_index();
        let sqe = on_dev!(self.plain_fd(), |fd| match (index, write) {
            (Some(i), false) => opcode::ReadFixed::new(fd, ptr, len, i).offset(off).build(),
            (None, false) => opcode::Read::new(fd, ptr, len).offset(off).build(),
            (Some(i), true) => opcode::WriteFixed::new(fd, ptr, len, i).offset(off).build(),
            (None, true) => opcode::Write::new(fd, ptr, len).offset(off).build(),
        });
        self.push(sqe.user_data(slot as u64));
        Ok(())
    }
}

/// The error an operation of a broken ring completes with.
fn broken_error(errno: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(
        e.kind(),
        format!("io_uring ring broken by a failed submission: {e}"),
    )
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

    /// A pool buffer when `len` fits in one; otherwise, or when none is
    /// idle, a plain one (pooled when the pool's buffers are plain too).
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf> {
        let mut b = match (len <= POOL_BUF).then(|| self.pool.pop()).flatten() {
            Some(b) => b,
            None if len <= POOL_BUF && !self.fixed_bufs => IoBuf::new(POOL_BUF).pooled(&self.pool),
            None if len <= POOL_BUF => IoBuf::new(len),
            None => super::big_buf(&self.big, len),
        };
        b.set_len(len);
        Ok(b)
    }

    fn alloc_copy(&mut self, data: &[u8]) -> io::Result<IoBuf> {
        if data.len() <= POOL_BUF {
            let mut buf = self.alloc(data.len())?;
            buf.copy_from_slice(data);
            return Ok(buf);
        }
        Ok(super::big_copy(&self.big, data))
    }

    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue_rw(off, buf, tag, false)
    }

    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue_rw(off, buf, tag, true)
    }

    fn flush(&mut self, tag: u64) -> bool {
        if self.fail_if_broken(tag, None).is_ok() {
            return true;
        }
        let Ok(slot) = self.slots.take(tag, None) else {
            return false;
        };
        let sqe = on_dev!(self.plain_fd(), |fd| opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build())
        .user_data(slot as u64);
        self.push(sqe);
        true
    }

    fn submit(&mut self) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let n = match self.ring.submit() {
            Ok(n) => n,
            Err(e) => return self.submit_failed(e),
        };
        self.submitted(n);
        Ok(n)
    }

    fn submit_one(&mut self) -> io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        // io_uring plugs the block layer for a batch of more than two
        // entries and dispatches it at the end; one entry is never plugged.
        self.ring.submission().sync();
        // SAFETY: submits the oldest entry of the submission queue, whose
        // buffer `push` keeps alive until its completion; no signal mask.
        let r = unsafe { self.ring.submitter().enter::<libc::sigset_t>(1, 0, 0, None) };
        let n = match r {
            Ok(n) => n,
            Err(e) => return self.submit_failed(e).map(|n| n > 0),
        };
        self.submitted(n);
        Ok(n > 0)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.failed);
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
        if !self.failed.is_empty() {
            return;
        }
        if self.broken.is_some() {
            return self.wait_broken(timeout);
        }
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
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(n) => self.submitted(n),
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) => {
                if let Err(e) = self.submit_failed(e) {
                    tracing::error!("{e}");
                }
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.in_use() + self.failed.len()
    }

    fn queued(&self) -> usize {
        self.pending.len()
    }
}

impl Drop for Uring {
    /// Waits (bounded) for the operations in flight: the kernel may still
    /// write into their buffers. Those that do not complete in time keep
    /// their buffers, leaked, rather than have them freed under a DMA.
    fn drop(&mut self) {
        let stuck = self.drain(self.drain_limit);
        if stuck > 0 {
            tracing::warn!(
                operations = stuck,
                "io_uring: operations still in flight at close after {:?}; their buffers are leaked",
                self.drain_limit
            );
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

    fn engine(dir: &std::path::Path, depth: usize) -> (Uring, EventFd) {
        let dev = Device::open(&dir.join("dev"), Some(1 << 20)).unwrap();
        let wake = EventFd::new().unwrap();
        (Uring::new(&dev, depth, &wake).unwrap(), wake)
    }

    /// Queues a read of the pipe `fd` into a buffer of the engine: it stays
    /// in flight until someone writes to the pipe.
    fn read_pipe(e: &mut Uring, fd: i32, tag: u64) {
        let slot = e.slots.take(tag, Some(IoBuf::new(4096))).unwrap();
        let buf = e.slots.buf_mut(slot).unwrap();
        let sqe = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), 4096)
            .build()
            .user_data(slot as u64);
        e.push(sqe);
    }

    fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into `fds`.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn drop_waits_bounded_and_leaks_the_buffers_still_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let (mut e, _wake) = engine(dir.path(), 4);
        let (rd, wr) = pipe();
        read_pipe(&mut e, rd, 1);
        assert_eq!(e.submit().unwrap(), 1);
        // Queued, never submitted: not the kernel's, freed unsent.
        let b = e.alloc(4096).unwrap();
        e.read(0, b, 2).unwrap();
        assert_eq!(
            e.drain(Duration::from_millis(50)),
            1,
            "the pipe read is stuck"
        );
        assert_eq!(e.queued(), 0);
        assert!(e.slots.ops.iter().all(Option::is_none), "buffers leaked");
        // Its slot stays taken: the kernel still holds the operation.
        assert_eq!(e.in_flight(), 1);

        // Drop itself returns, bounded, with the read still stuck.
        e.drain_limit = Duration::from_millis(50);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(e);
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("Drop returns while an operation never completes");
        for fd in [rd, wr] {
            // SAFETY: closes descriptors this test opened.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    fn a_failed_submission_breaks_the_ring_and_fails_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let (mut e, _wake) = engine(dir.path(), 4);
        if !e.ring.params().is_setup_single_issuer() {
            eprintln!(
                "skipped: no IORING_SETUP_SINGLE_ISSUER (Linux 6.0) to make a submission fail"
            );
            return;
        }
        let b = e.alloc(4096).unwrap();
        e.read(0, b, 1).unwrap();
        assert!(e.flush(2));
        // A single-issuer ring refuses submissions from another thread
        // (EEXIST), for good: a persistent submission error.
        std::thread::spawn(move || {
            let err = e.submit().unwrap_err();
            assert!(err.to_string().contains("broken"), "{err}");
            assert_eq!((e.queued(), e.in_flight()), (0, 2));
            let mut out = Vec::new();
            e.reap(&mut out);
            let mut tags: Vec<u64> = out.iter().map(|c| c.tag).collect();
            tags.sort();
            assert_eq!(tags, [1, 2]);
            assert!(out.iter().all(|c| c.result.is_err()), "{out:?}");
            assert!(
                out[0].buf.is_some() || out[1].buf.is_some(),
                "the read's buffer is back"
            );

            // Later operations fail too, at once, with their buffers.
            out.clear();
            let b = e.alloc(4096).unwrap();
            e.write(0, b, 3).unwrap();
            assert_eq!(e.submit().unwrap(), 0);
            e.wait(Duration::from_secs(5));
            e.reap(&mut out);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].tag, 3);
            let msg = out[0].result.as_ref().unwrap_err().to_string();
            assert!(msg.contains("broken"), "{msg}");
            assert!(out[0].buf.is_some());
            assert_eq!(e.in_flight(), 0);
        })
        .join()
        .unwrap();
    }
}
