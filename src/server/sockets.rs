//! Sockets through io_uring (`--socket-io uring`): a connection thread
//! reads the sockets of the connections it is about to service in a loop
//! turn in one submission, and sends the output they leave in another at
//! the end of the turn, instead of a `recv` and a `send` system call per
//! connection. Besides the calls saved, on a machine with few cores each
//! `send` to a loopback or LAN client wakes that client, and the thread
//! gives up its CPU on the way out of the call; one call per turn gives it
//! up at most once per turn. Readiness stays with epoll
//! (`conn_thread.rs`): a socket is read only when epoll said it may hold
//! input, as with a `recv` of its own.
//!
//! Every operation is `MSG_DONTWAIT`: an empty or full socket completes at
//! once with `EAGAIN` (or a short count) rather than waiting in the
//! kernel, so a submission returns with every completion posted and the
//! buffers are handed back before anything else touches them.

use std::io;

use io_uring::{opcode, types, IoUring};

/// Operations one submission can carry; a turn with more submits more often.
const ENTRIES: u32 = 256;

/// Why the sockets cannot go through io_uring on this machine, if they
/// cannot.
pub(super) fn unavailable() -> Option<String> {
    let ring = match setup() {
        Ok(r) => r,
        Err(e) => return Some(format!("io_uring refused ({e})")),
    };
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Some(format!("io_uring's probe refused ({e})"));
    }
    let missing = [("send", opcode::Send::CODE), ("recv", opcode::Recv::CODE)]
        .into_iter()
        .find(|(_, code)| !probe.is_supported(*code));
    missing.map(|(name, _)| format!("io_uring has no {name}"))
}

fn setup() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::new(ENTRIES))
}

/// A send never waits, and never raises SIGPIPE.
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// A `send`'s or `recv`'s return value as a [`Done`].
fn outcome(n: isize) -> Done {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A connection thread's ring for its sockets. A batch of one goes by the
/// plain call instead: a submission would cost that call and more.
pub(super) struct Ring {
    ring: IoUring,
}

/// A read's or a send's outcome: bytes moved, or the error.
pub(super) type Done = io::Result<usize>;

impl Ring {
    pub(super) fn new() -> io::Result<Self> {
        Ok(Ring { ring: setup()? })
    }

    /// Sends the `bufs[i].2` bytes at `bufs[i].1` on socket `bufs[i].0`
    /// for every `i`; `done(i, outcome)` for each.
    ///
    /// # Safety
    ///
    /// Each buffer must be valid for reads, and not written, until this
    /// call returns.
    pub(super) unsafe fn send_all(
        &mut self,
        bufs: &[(i32, *const u8, usize)],
        mut done: impl FnMut(usize, Done),
    ) {
        if let [(fd, ptr, len)] = *bufs {
            // SAFETY: the caller keeps the buffer valid for reads of its
            // length.
            let n = unsafe { libc::send(fd, ptr.cast(), len, SEND_FLAGS) };
            return done(0, outcome(n));
        }
        let entries = bufs.iter().map(|&(fd, ptr, len)| {
            let len = len.min(u32::MAX as usize) as u32;
            opcode::Send::new(types::Fd(fd), ptr, len)
                .flags(SEND_FLAGS)
                .build()
        });
        // SAFETY: the caller keeps every buffer valid and unwritten for
        // this whole call.
        unsafe { self.run(entries, done) }
    }

    /// Reads socket `bufs[i].0` into the `bufs[i].2` bytes at `bufs[i].1`
    /// for every `i`; `done(i, outcome)` for each.
    ///
    /// # Safety
    ///
    /// Each buffer must be valid for writes, and neither read nor written
    /// otherwise, until this call returns; no two may overlap.
    pub(super) unsafe fn recv_all(
        &mut self,
        bufs: &[(i32, *mut u8, usize)],
        mut done: impl FnMut(usize, Done),
    ) {
        if let [(fd, ptr, len)] = *bufs {
            // SAFETY: the caller keeps the buffer valid for writes of its
            // length.
            let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
            return done(0, outcome(n));
        }
        let entries = bufs.iter().map(|&(fd, ptr, len)| {
            let len = len.min(u32::MAX as usize) as u32;
            opcode::Recv::new(types::Fd(fd), ptr, len)
                .flags(libc::MSG_DONTWAIT)
                .build()
        });
        // SAFETY: the caller keeps every buffer valid and to the kernel
        // alone for this whole call.
        unsafe { self.run(entries, done) }
    }

    /// Submits `entries`, in as few submissions as the ring allows, and
    /// reaps them all; `done(i, outcome)` for the `i`th.
    ///
    /// # Safety
    ///
    /// The memory each entry points at must stay valid (and, for a read,
    /// not be accessed otherwise) until this call returns: it returns only
    /// once the kernel has posted every completion, so the kernel never
    /// touches it after that.
    unsafe fn run(
        &mut self,
        entries: impl Iterator<Item = io_uring::squeue::Entry>,
        mut done: impl FnMut(usize, Done),
    ) {
        let mut entries = entries.enumerate().peekable();
        while entries.peek().is_some() {
            let mut sq = self.ring.submission();
            let mut left = 0;
            while !sq.is_full() {
                let Some((i, e)) = entries.next() else {
                    break;
                };
                // SAFETY: the caller keeps the entry's memory valid until
                // this call returns, and the loop below reaps every entry
                // pushed before the next are.
                unsafe { sq.push(&e.user_data(i as u64)) }.expect("room checked");
                left += 1;
            }
            drop(sq);
            while left > 0 {
                match self.ring.submit_and_wait(left) {
                    Ok(_) => {}
                    // Interrupted, or short of memory for a moment: the
                    // entries not taken stay queued for the next try.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                        ) => {}
                    // The ring itself is broken (a socket's error comes in
                    // its completion): the thread cannot go on.
                    Err(e) => panic!("io_uring sockets: {e}"),
                }
                for cqe in self.ring.completion() {
                    left -= 1;
                    let res = cqe.result();
                    let out = if res >= 0 {
                        Ok(res as usize)
                    } else {
                        Err(io::Error::from_raw_os_error(-res))
                    };
                    done(cqe.user_data() as usize, out);
                }
            }
        }
    }
}
