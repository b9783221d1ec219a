//! I/O engines: one instance per poller thread, never shared.
//!
//! An engine queues reads, writes and flushes, sends the whole batch to the
//! device in one [`Engine::submit`] (one `io_uring_enter`, one `io_submit`,
//! or one SPDK doorbell), and hands completions back from [`Engine::reap`].
//! Buffers are engine-allocated ([`Engine::alloc`], which can fail):
//! aligned for `O_DIRECT`, registered with io_uring where that helps,
//! DMA-capable for SPDK. A buffer in flight belongs to the engine and comes
//! back with its completion; dropped, it goes back to the engine's pool.

mod aio;
mod buf;
mod device;
mod faulty;
#[cfg(feature = "spdk")]
pub mod spdk;
mod uring;

use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use aio::Aio;
pub(crate) use buf::BufPool;

/// Large buffers an engine keeps idle for reuse, at most, and their bytes.
const BIG_MAX: usize = 8;
const BIG_BYTES: usize = 32 << 20;

/// A buffer of `len` bytes from `big`, an engine's pool of large ones (one
/// of `len` to `2 * len` bytes), or a new one that goes there once used,
/// of a power of two bytes so that it serves requests of varied lengths
/// (a group commit's writes) again.
fn big_buf(big: &Arc<BufPool>, len: usize) -> IoBuf {
    big.take_fitting(len, 2 * len)
        .unwrap_or_else(|| IoBuf::new(len.next_power_of_two()).pooled(big))
}

/// [`big_buf`] holding a copy of `data`: a new buffer is written once,
/// by the copy (and zeros past it), instead of zeroed and then copied into.
fn big_copy(big: &Arc<BufPool>, data: &[u8]) -> IoBuf {
    let len = data.len();
    match big.take_fitting(len, 2 * len) {
        Some(mut buf) => {
            buf.set_len(len);
            buf.copy_from_slice(data);
            buf
        }
        None => IoBuf::copy_of(data, len.next_power_of_two()).pooled(big),
    }
}

pub use buf::{IoBuf, ALIGN};
pub use device::{Device, DeviceSpec, EventFd};
pub use faulty::{FaultSpec, Faulty};
pub use uring::Uring;

/// Which engine a poller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// io_uring with registered buffers and files (the default).
    Uring,
    /// Linux AIO: io_submit / io_getevents with an eventfd.
    Aio,
    /// SPDK: an NVMe namespace on polled queue pairs, no system calls
    /// (needs a build with the `spdk` feature and a store on a namespace).
    Spdk,
}

impl EngineKind {
    /// Every engine, in the order the help lists them.
    pub const ALL: [EngineKind; 3] = [EngineKind::Uring, EngineKind::Aio, EngineKind::Spdk];

    /// The engine a device is driven by when none is asked for.
    pub fn default_for(dev: &Device) -> Self {
        if dev.is_nvme() {
            EngineKind::Spdk
        } else {
            EngineKind::Uring
        }
    }

    /// The name `--engine` takes.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Uring => "uring",
            EngineKind::Aio => "aio",
            EngineKind::Spdk => "spdk",
        }
    }

    /// One line on what the engine is, for the help.
    pub fn about(self) -> &'static str {
        match self {
            EngineKind::Uring => "io_uring with registered buffers and files (the default)",
            EngineKind::Aio => "Linux AIO: io_submit / io_getevents with an eventfd",
            EngineKind::Spdk => {
                "SPDK: an NVMe namespace on polled queue pairs, no system calls \
                 (needs a build with the `spdk` feature and a store on a namespace)"
            }
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("{s:?}: no such engine (one of {})", names.join(", "))
            })
    }
}

/// How the SPDK environment starts, for a store on an NVMe namespace: its
/// settings, and [`EnvOptions::start_for`], the call that starts it.
#[derive(Debug, Clone, Default)]
pub struct EnvOptions {
    /// Memory to reserve, in MiB (DPDK's `-m`); in no-huge mode 512 when
    /// not given.
    pub mem_mb: Option<u64>,
    /// Use ordinary pages instead of hugepages (for tests and development:
    /// only NVMe-oF transports work without hugepages).
    pub no_huge: bool,
    /// CPU cores the pollers run on, for the environment's core mask.
    pub cores: Vec<usize>,
}

impl EnvOptions {
    /// Starts what opening the device `spec` needs: for an NVMe namespace,
    /// the SPDK environment with these settings (once per process: later
    /// calls find it started; `no_pci` unless the transport is PCIe); for a
    /// file or block device, nothing. A namespace cannot be opened before.
    pub fn start_for(&self, spec: &DeviceSpec) -> io::Result<()> {
        match spec {
            DeviceSpec::Path(_) => Ok(()),
            #[cfg(feature = "spdk")]
            DeviceSpec::Nvme { trid, .. } => spdk::start_env_for(self, trid),
            // Opening the namespace says that this build has no SPDK.
            #[cfg(not(feature = "spdk"))]
            DeviceSpec::Nvme { .. } => Ok(()),
        }
    }
}

/// A finished operation.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag, given when the operation was queued.
    pub tag: u64,
    /// Bytes transferred, or the error.
    pub result: io::Result<usize>,
    /// The buffer of a read or write, returned to the caller.
    pub buf: Option<IoBuf>,
}

/// The contract every backend keeps. See the module documentation.
pub trait Engine {
    /// Alignment of offsets and lengths, in bytes.
    fn block_size(&self) -> u32;
    /// Bytes addressable on the device.
    fn capacity(&self) -> u64;
    /// An aligned buffer of at least `len` bytes, with `len()` == `len`,
    /// from the engine's pool when one fits: dropped, it goes back there.
    /// `Err` when the engine's memory is exhausted (SPDK's DMA memory):
    /// the caller fails or postpones what needed the buffer.
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf>;
    /// A buffer as [`Engine::alloc`]'s, holding a copy of `data` (a
    /// commit's blocks): the kernel engines fill a new large buffer with
    /// the copy alone, not zeros first.
    fn alloc_copy(&mut self, data: &[u8]) -> io::Result<IoBuf> {
        let mut buf = self.alloc(data.len())?;
        buf.copy_from_slice(data);
        Ok(buf)
    }
    /// Queues a read of `buf.len()` bytes at `off`. Nothing reaches the
    /// device before [`Engine::submit`]. `Err` hands the buffer back when the
    /// engine is at its depth limit.
    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf>;
    /// Queues a write of `buf.len()` bytes at `off`.
    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf>;
    /// Queues a durability barrier (fdatasync / NVMe FLUSH). Its completion
    /// means every write completed before it was queued is on stable media.
    fn flush(&mut self, tag: u64) -> bool;
    /// Sends everything queued to the device; returns how many operations.
    fn submit(&mut self) -> io::Result<usize>;
    /// Sends the oldest queued operation on its own (one system call for
    /// the kernel engines, so that the kernel does not plug it with others:
    /// the device starts on it while the kernel prepares the next); returns
    /// whether one went. Engines without that distinction submit all that
    /// is queued, as [`Engine::submit`] does.
    fn submit_one(&mut self) -> io::Result<bool> {
        self.submit().map(|n| n > 0)
    }
    /// Sends everything queued, each operation on its own
    /// ([`Engine::submit_one`]); returns how many operations.
    fn submit_each(&mut self) -> io::Result<usize> {
        let before = self.queued();
        while self.queued() > 0 && self.submit_one()? {}
        Ok(before - self.queued())
    }
    /// Moves finished operations into `out`; never blocks.
    fn reap(&mut self, out: &mut Vec<Completion>);
    /// Blocks until a completion arrives, the poller's eventfd is signalled,
    /// or `timeout` passes.
    fn wait(&mut self, timeout: Duration);
    /// Operations queued or in flight.
    fn in_flight(&self) -> usize;
    /// Operations queued since the last [`Engine::submit`] (part of
    /// `in_flight`), not yet handed to the device.
    fn queued(&self) -> usize;
    /// Completions arrive only while the engine is polled (SPDK's queue
    /// pairs): nothing wakes a thread for them, so a thread with
    /// operations in flight must not sleep.
    fn completes_by_polling(&self) -> bool {
        false
    }
}

/// An operation slot table: maps a small integer carried through the kernel
/// (io_uring `user_data`, AIO `aio_data`) to the tag and buffer of the op.
struct Slots {
    ops: Vec<Option<(u64, Option<IoBuf>)>>,
    free: Vec<u32>,
}

impl Slots {
    fn new(depth: usize) -> Self {
        Slots {
            ops: (0..depth).map(|_| None).collect(),
            free: (0..depth as u32).rev().collect(),
        }
    }

    fn in_use(&self) -> usize {
        self.ops.len() - self.free.len()
    }

    fn take(&mut self, tag: u64, buf: Option<IoBuf>) -> Result<u32, Option<IoBuf>> {
        match self.free.pop() {
            Some(s) => {
                self.ops[s as usize] = Some((tag, buf));
                Ok(s)
            }
            None => Err(buf),
        }
    }

    fn buf_mut(&mut self, slot: u32) -> Option<&mut IoBuf> {
        self.ops[slot as usize].as_mut()?.1.as_mut()
    }

    fn finish(&mut self, slot: u32, result: io::Result<usize>) -> Completion {
        let (tag, buf) = self.ops[slot as usize]
            .take()
            .expect("completion for a free slot");
        self.free.push(slot);
        Completion { tag, result, buf }
    }
}

/// Converts a kernel result (bytes or -errno) into an `io::Result`.
fn kernel_result(res: i64) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res as i32))
    } else {
        Ok(res as usize)
    }
}

/// Opens one engine of `kind` on `dev` for the calling poller thread.
pub fn open_engine(
    kind: EngineKind,
    dev: &Device,
    depth: usize,
    wake: &EventFd,
) -> io::Result<AnyEngine> {
    Ok(match kind {
        EngineKind::Uring => AnyEngine::Uring(Box::new(Uring::new(dev, depth, wake)?)),
        EngineKind::Aio => AnyEngine::Aio(Aio::new(dev, depth, wake)?),
        #[cfg(feature = "spdk")]
        EngineKind::Spdk => {
            let ns = dev.nvme().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: the spdk engine needs a store on an NVMe namespace (nvkv load --device 'trtype:…')",
                        dev.path().display()
                    ),
                )
            })?;
            AnyEngine::Spdk(spdk::Spdk::new(ns, dev.block_size(), depth, wake)?)
        }
        #[cfg(not(feature = "spdk"))]
        EngineKind::Spdk => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this nvkv was built without SPDK; build it with `cargo build --release --features spdk`",
            ))
        }
    })
}

/// Static dispatch over the built-in engines (no trait objects on the hot path).
/// The io_uring engine, by far the largest, is boxed (clippy's
/// `large_enum_variant`): one pointer load more per call.
pub enum AnyEngine {
    Uring(Box<Uring>),
    Aio(Aio),
    #[cfg(feature = "spdk")]
    Spdk(spdk::Spdk),
}

macro_rules! dispatch {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            AnyEngine::Uring($e) => $body,
            AnyEngine::Aio($e) => $body,
            #[cfg(feature = "spdk")]
            AnyEngine::Spdk($e) => $body,
        }
    };
}

impl Engine for AnyEngine {
    fn block_size(&self) -> u32 {
        dispatch!(self, e => e.block_size())
    }
    fn capacity(&self) -> u64 {
        dispatch!(self, e => e.capacity())
    }
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf> {
        dispatch!(self, e => e.alloc(len))
    }
    fn alloc_copy(&mut self, data: &[u8]) -> io::Result<IoBuf> {
        dispatch!(self, e => e.alloc_copy(data))
    }
    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        dispatch!(self, e => e.read(off, buf, tag))
    }
    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        dispatch!(self, e => e.write(off, buf, tag))
    }
    fn flush(&mut self, tag: u64) -> bool {
        dispatch!(self, e => e.flush(tag))
    }
    fn submit(&mut self) -> io::Result<usize> {
        dispatch!(self, e => e.submit())
    }
    fn submit_one(&mut self) -> io::Result<bool> {
        dispatch!(self, e => e.submit_one())
    }
    fn reap(&mut self, out: &mut Vec<Completion>) {
        dispatch!(self, e => e.reap(out))
    }
    fn wait(&mut self, timeout: Duration) {
        dispatch!(self, e => e.wait(timeout))
    }
    fn in_flight(&self) -> usize {
        dispatch!(self, e => e.in_flight())
    }
    fn queued(&self) -> usize {
        dispatch!(self, e => e.queued())
    }
    fn completes_by_polling(&self) -> bool {
        dispatch!(self, e => e.completes_by_polling())
    }
}

#[cfg(test)]
mod tests;
