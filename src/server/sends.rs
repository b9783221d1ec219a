//! Replies through io_uring (`--socket-io uring`): the connections a
//! connection thread serviced in a loop turn leave their output here, and
//! it all goes to the kernel in one submission at the end of the turn,
//! instead of a `send` system call per connection. On a machine with few
//! cores each `send` to a loopback or LAN client wakes that client, and the
//! thread gives up its CPU on the way out of the call; one call per turn
//! gives it up at most once per turn.
//!
//! Each send is `MSG_DONTWAIT`: a full socket completes at once with
//! `EAGAIN` (or a short count) rather than waiting in the kernel, so the
//! submission returns with every completion posted and the output
//! buffers are handed back before anything else touches them. Reads,
//! readiness and the writable event stay with epoll (`conn_thread.rs`).

use std::io;

use io_uring::{opcode, types, IoUring};

/// Sends one submission can carry; a turn with more submits more often.
const ENTRIES: u32 = 256;

/// Why io_uring sends cannot be used on this machine, if they cannot.
pub(super) fn unavailable() -> Option<String> {
    let ring = match setup() {
        Ok(r) => r,
        Err(e) => return Some(format!("io_uring refused ({e})")),
    };
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return Some(format!("io_uring's probe refused ({e})"));
    }
    (!probe.is_supported(opcode::Send::CODE)).then(|| "io_uring has no send".into())
}

fn setup() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(ENTRIES)
        .or_else(|_| IoUring::new(ENTRIES))
}

/// A connection thread's ring for its replies.
pub(super) struct Sends {
    ring: IoUring,
}

/// A send's outcome: bytes written, or the error.
pub(super) type Sent = io::Result<usize>;

impl Sends {
    pub(super) fn new() -> io::Result<Self> {
        Ok(Sends { ring: setup()? })
    }

    /// Sends `bufs[i].1` on socket `bufs[i].0` for every `i`, in as few
    /// submissions as the ring allows; `done(i, outcome)` for each.
    ///
    /// The buffers are borrowed for the whole call, which returns only
    /// once the kernel has posted every completion.
    pub(super) fn send_all(&mut self, bufs: &[(i32, &[u8])], mut done: impl FnMut(usize, Sent)) {
        for (chunk_no, chunk) in bufs.chunks(ENTRIES as usize).enumerate() {
            let base = chunk_no * ENTRIES as usize;
            let mut sq = self.ring.submission();
            for (i, (fd, buf)) in chunk.iter().enumerate() {
                let len = buf.len().min(u32::MAX as usize) as u32;
                let e = opcode::Send::new(types::Fd(*fd), buf.as_ptr(), len)
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data((base + i) as u64);
                // SAFETY: `buf` is borrowed from the caller until this
                // call returns, and the call waits below for the
                // completion of every entry it pushed, so the kernel never
                // reads the buffer after the borrow ends. The ring has
                // ENTRIES free entries: each chunk is reaped in full
                // before the next is pushed.
                unsafe { sq.push(&e) }.expect("a chunk fits the ring");
            }
            drop(sq);
            let mut left = chunk.len();
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
                    Err(e) => panic!("io_uring sends: {e}"),
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
