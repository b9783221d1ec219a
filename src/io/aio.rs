//! The Linux AIO engine, as in the original design: `io_setup`,
//! `io_submit` of the whole batch, completions signalled on the poller's
//! eventfd (`IOCB_FLAG_RESFD`) and collected with a non-blocking
//! `io_getevents`. The kernel ABI structs come from `linux/aio_abi.h`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::buf::BufPool;
use super::{kernel_result, Completion, Device, Engine, EventFd, IoBuf, Slots};

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_CMD_FDSYNC: u16 = 3;
const IOCB_FLAG_RESFD: u32 = 1;
/// Size of the pooled buffers; larger reads get one of their own.
const POOL_BUF: usize = 16 * 1024;

/// `struct iocb` of linux/aio_abi.h (x86_64 and other little-endian 64-bit).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of linux/aio_abi.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

type AioContext = libc::c_ulong;

pub struct Aio {
    ctx: AioContext,
    slots: Slots,
    /// Control blocks queued since the last submit. The kernel copies them
    /// during io_submit, so they need not outlive the call.
    pending: Vec<Iocb>,
    events: Vec<IoEvent>,
    fd: u32,
    wake_fd: u32,
    block_size: u32,
    capacity: u64,
    /// Buffers of `POOL_BUF` bytes, at most one per slot; they come back
    /// on drop.
    pool: Arc<BufPool>,
    /// Larger buffers (segments, pieces, recovery reads), kept for reuse:
    /// a fresh one costs the kernel's page faults and the allocator's
    /// zeroing.
    big: Arc<BufPool>,
    /// Operations io_submit refused, completed with its error.
    failed: Vec<Completion>,
}

impl Aio {
    pub fn new(dev: &Device, depth: usize, wake: &EventFd) -> io::Result<Self> {
        let mut ctx: AioContext = 0;
        // SAFETY: io_setup writes the new context id into `ctx`.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, depth as libc::c_long, &mut ctx) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Aio {
            ctx,
            slots: Slots::new(depth),
            pending: Vec::with_capacity(depth),
            events: vec![IoEvent::default(); depth],
            fd: dev.fd()? as u32,
            wake_fd: wake.fd() as u32,
            block_size: dev.block_size(),
            capacity: dev.capacity(),
            pool: BufPool::new(depth),
            big: BufPool::bounded(super::BIG_MAX, super::BIG_BYTES),
            failed: Vec::new(),
        })
    }

    fn queue(
        &mut self,
        opcode: u16,
        off: u64,
        buf: Option<IoBuf>,
        tag: u64,
    ) -> Result<(), Option<IoBuf>> {
        let slot = self.slots.take(tag, buf)?;
        let (ptr, len) = match self.slots.buf_mut(slot) {
            Some(b) => (b.as_mut_ptr() as u64, b.len() as u64),
            None => (0, 0),
        };
        self.pending.push(Iocb {
            aio_data: slot as u64,
            aio_lio_opcode: opcode,
            aio_fildes: self.fd,
            aio_buf: ptr,
            aio_nbytes: len,
            aio_offset: off as i64,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: self.wake_fd,
            ..Iocb::default()
        });
        Ok(())
    }

    /// Submits the oldest `limit` queued control blocks (all, at most);
    /// returns how many the kernel took. io_submit takes a prefix of the
    /// array: it stops at the first control block it cannot queue, and
    /// reports that one's error only when it is the first (io_submit(2)).
    /// So a refused block fails alone, with its error (for `reap`), and
    /// the rest go on; EAGAIN (no resources for now) leaves them queued
    /// for the next call. A refused block counts towards `limit`.
    fn submit_up_to(&mut self, limit: usize) -> usize {
        let (mut sent, mut handled) = (0, 0);
        while handled < limit && !self.pending.is_empty() {
            let mut ptrs: Vec<*mut Iocb> = self
                .pending
                .iter_mut()
                .take(limit - handled)
                .map(|c| c as *mut Iocb)
                .collect();
            // SAFETY: `ptrs` holds valid iocbs; each points at a buffer
            // held in `self.slots` until its completion is reaped.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    self.ctx,
                    ptrs.len() as libc::c_long,
                    ptrs.as_mut_ptr(),
                )
            };
            if r < 0 {
                let err = io::Error::last_os_error();
                if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                    break;
                }
                let refused = self.pending.remove(0);
                let c = self.slots.finish(refused.aio_data as u32, Err(err));
                self.failed.push(c);
                handled += 1;
                continue;
            }
            let n = r as usize;
            if n == 0 {
                break;
            }
            self.pending.drain(..n);
            sent += n;
            handled += n;
        }
        sent
    }
}

impl Engine for Aio {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A pooled buffer when `len` fits in one; a larger read gets a
    /// buffer of its own, and the pool keeps its buffers.
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf> {
        let mut b = match (len <= POOL_BUF).then(|| self.pool.pop()).flatten() {
            Some(b) => b,
            None if len <= POOL_BUF => IoBuf::new(POOL_BUF).pooled(&self.pool),
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
        self.queue(IOCB_CMD_PREAD, off, Some(buf), tag)
            .map_err(|b| b.expect("buffer"))
    }

    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue(IOCB_CMD_PWRITE, off, Some(buf), tag)
            .map_err(|b| b.expect("buffer"))
    }

    fn flush(&mut self, tag: u64) -> bool {
        self.queue(IOCB_CMD_FDSYNC, 0, None, tag).is_ok()
    }

    fn submit(&mut self) -> io::Result<usize> {
        Ok(self.submit_up_to(usize::MAX))
    }

    /// `true` also when the oldest block was refused (it fails alone).
    fn submit_one(&mut self) -> io::Result<bool> {
        let before = self.pending.len();
        self.submit_up_to(1);
        Ok(self.pending.len() < before)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        out.append(&mut self.failed);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: `events` has room for `len` events; a zero timeout never blocks.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_getevents,
                    self.ctx,
                    0 as libc::c_long,
                    self.events.len() as libc::c_long,
                    self.events.as_mut_ptr(),
                    &zero,
                )
            };
            if r <= 0 {
                return;
            }
            for ev in &self.events[..r as usize] {
                out.push(self.slots.finish(ev.data as u32, kernel_result(ev.res)));
            }
            if (r as usize) < self.events.len() {
                return;
            }
        }
    }

    fn wait(&mut self, timeout: Duration) {
        if !self.failed.is_empty() {
            return;
        }
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: self.wake_fd as i32,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let _ = unsafe { libc::poll(&mut pfd, 1, ms) };
    }

    fn queued(&self) -> usize {
        self.pending.len()
    }

    fn in_flight(&self) -> usize {
        self.slots.in_use() + self.failed.len()
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // Wait (bounded) for the kernel to finish with our buffers before
        // they are freed.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.slots.in_use() > self.pending.len() && std::time::Instant::now() < deadline {
            let mut out = Vec::new();
            self.reap(&mut out);
            if out.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // SAFETY: the context was created by io_setup and is destroyed once.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_larger_than_the_pooled_buffers_leaves_the_pool_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dev = Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
        let wake = EventFd::new().unwrap();
        let mut e = Aio::new(&dev, 8, &wake).unwrap();
        let small: Vec<IoBuf> = (0..3).map(|_| e.alloc(4096).unwrap()).collect();
        drop(small);
        assert_eq!(e.pool.len(), 3);
        let big = e.alloc(64 * 1024).unwrap();
        assert_eq!(
            (big.len(), e.pool.len()),
            (64 * 1024, 3),
            "no pooled buffer lost"
        );
        // A large buffer dropped does not join the pool of small ones.
        drop(big);
        assert_eq!(e.pool.len(), 3);
        let b = e.alloc(16 * 1024).unwrap();
        assert_eq!((b.capacity(), e.pool.len()), (POOL_BUF, 2));
    }

    #[test]
    fn abi_sizes() {
        assert_eq!(std::mem::size_of::<super::Iocb>(), 64);
        assert_eq!(std::mem::size_of::<super::IoEvent>(), 32);
    }
}
