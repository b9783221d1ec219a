//! The SPDK engine: an NVMe namespace driven from user space.
//!
//! The controller is attached once per process by transport ID (PCIe on bare
//! metal, NVMe-oF/TCP or RDMA over a network) and shared; every poller gets
//! its own I/O queue pair and submits to it with the `spdk_nvme_ns_cmd_*`
//! calls, and completions are reaped with
//! `spdk_nvme_qpair_process_completions`. Over PCIe nothing on this path
//! enters the kernel: a submission is a doorbell write, a completion a read
//! of the completion queue in memory. I/O buffers are DMA memory from SPDK's
//! allocator, kept in per-poller pools they go back to when dropped; an
//! allocation SPDK cannot serve is an error, for the caller to answer.
//!
//! The environment (hugepages, or a fixed amount of ordinary memory in
//! no-huge mode) is started once per process, before the first attach, by
//! an explicit call ([`super::EnvOptions::start_for`]) that owns its
//! settings, with a core mask from the pollers' cores. A background thread
//! services the controller's admin queue (keep-alives over fabrics,
//! asynchronous events) every 100 ms.
//! Dropping the last handle on a controller detaches it.

use std::ffi::{c_void, CString};
use std::io;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spdk_sys as sys;

use super::buf::BufPool;
use super::{Completion, Engine, EnvOptions, EventFd, IoBuf, Slots, ALIGN};

/// Size of each pooled DMA buffer; larger requests get their own.
const POOL_BUF: usize = 16 * 1024;
/// Pooled buffers kept per engine, at most.
const POOL_MAX: usize = 1024;
/// Large buffers (segments, recovery reads) kept for reuse, at most.
const BIG_MAX: usize = 8;

/// How the environment's start went, once it was asked for.
static ENV: OnceLock<Result<(), String>> = OnceLock::new();

/// Starts the environment with `opts`, once per process, for the
/// namespace at `trid`: a transport ID that does not parse is refused
/// first, and a PCIe one starts it with PCI device access (`no_pci`
/// otherwise). Later calls return how the first start went.
pub(super) fn start_env_for(opts: &EnvOptions, trid: &str) -> io::Result<()> {
    let pcie = parse_trid(trid)?.trtype == sys::spdk_nvme_transport_type_SPDK_NVME_TRANSPORT_PCIE;
    let r = ENV.get_or_init(|| start(opts, !pcie));
    r.clone().map_err(io::Error::other)
}

/// The environment, when it started; an error saying why not otherwise.
fn env_started() -> io::Result<()> {
    match ENV.get() {
        Some(r) => r.clone().map_err(io::Error::other),
        None => Err(io::Error::other(
            "the SPDK environment was not started (EnvOptions::start_for) before an NVMe namespace was opened",
        )),
    }
}

/// mimalloc's `mi_option_purge_delay` (mimalloc.h: the option after
/// `mi_option_eager_commit_delay`, 14).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn start(o: &EnvOptions, no_pci: bool) -> Result<(), String> {
    // A busy poller makes no system call, but the allocator would: freed
    // pages go back to the kernel with madvise. Keep them (memory stays at
    // its peak, which the server's limits bound anyway).
    // SAFETY: sets a process-wide allocator option; no memory is involved.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let mut cores = o.cores.clone();
    cores.sort_unstable();
    cores.dedup();
    let mask = match cores.as_slice() {
        [] => "[0]".to_owned(),
        c => format!(
            "[{}]",
            c.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    let mem_mb = match (o.mem_mb, o.no_huge) {
        (Some(m), _) => Some(m),
        (None, true) => Some(512),
        (None, false) => None,
    };
    // The environment keeps pointers to these strings: they live forever.
    let leak = |s: &str| -> *const libc::c_char {
        Box::leak(CString::new(s).expect("no NUL").into_boxed_c_str()).as_ptr()
    };
    let mut opts = MaybeUninit::<sys::spdk_env_opts>::zeroed();
    // SAFETY: fills the whole struct, its opts_size (SPDK >= 24.09) included.
    unsafe { sys::spdk_sys_env_opts_init(opts.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut opts = unsafe { opts.assume_init() };
    opts.name = leak("nvkv");
    opts.core_mask = leak(&mask);
    opts.no_pci = no_pci;
    // A private DPDK runtime directory: several processes may run at once.
    opts.shm_id = -1;
    if let Some(m) = mem_mb {
        opts.mem_size = m as _;
    }
    if o.no_huge {
        // Without hugepages DPDK runs in legacy memory mode (which SPDK
        // must be told of) and, with no physical addresses, in IOVA-as-VA.
        opts.env_context = leak("--no-huge --legacy-mem") as *mut c_void;
        opts.iova_mode = leak("va");
    }
    // DPDK pins the thread that starts it to its main core, and threads
    // started later would inherit that: keep this thread's affinity.
    let saved = affinity();
    // SAFETY: opts is initialised, and its strings outlive the call.
    let rc = unsafe { sys::spdk_env_init(&opts) };
    if let Some(set) = saved {
        restore_affinity(&set);
    }
    if rc != 0 {
        let hint = if o.no_huge {
            "check --spdk-mem"
        } else {
            "are hugepages reserved? (hugepages/hugepages.sh reserve 1024), or use --spdk-no-huge with an NVMe-oF transport"
        };
        return Err(format!(
            "the SPDK environment failed to start (core mask {mask}, {}): {}; {hint}",
            if o.no_huge {
                "no hugepages"
            } else {
                "hugepages"
            },
            errno_str(rc)
        ));
    }
    tracing::info!(version = %version(), core_mask = %mask, no_pci, no_huge = o.no_huge, mem_mb, "SPDK environment started");
    Ok(())
}

fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (r == 0).then_some(set)
}

fn restore_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
}

fn errno_str(rc: i32) -> String {
    io::Error::from_raw_os_error(rc.abs()).to_string()
}

/// An attached NVMe controller.
struct Controller {
    ctrlr: NonNull<sys::spdk_nvme_ctrlr>,
    trid: String,
    stop: Arc<AtomicBool>,
    admin: Mutex<Option<JoinHandle<()>>>,
}

// SAFETY: SPDK serialises the controller-wide calls made through this
// pointer (queue-pair allocation, admin completions, detach) with the
// controller's own lock; per-queue calls go through queue pairs that one
// thread owns.
unsafe impl Send for Controller {}
// SAFETY: as for Send.
unsafe impl Sync for Controller {}

/// The controller pointer, sendable to the admin thread.
struct CtrlrPtr(NonNull<sys::spdk_nvme_ctrlr>);
// SAFETY: see `Controller`.
unsafe impl Send for CtrlrPtr {}

impl Controller {
    fn attach(trid_str: &str) -> io::Result<Arc<Self>> {
        let trid = parse_trid(trid_str)?;
        env_started()?;
        let mut opts = MaybeUninit::<sys::spdk_nvme_ctrlr_opts>::zeroed();
        let size = std::mem::size_of::<sys::spdk_nvme_ctrlr_opts>();
        // SAFETY: fills `size` bytes of a struct of that size.
        unsafe { sys::spdk_nvme_ctrlr_get_default_ctrlr_opts(opts.as_mut_ptr(), size) };
        // SAFETY: initialised just above.
        let opts = unsafe { opts.assume_init() };
        // SAFETY: trid and opts are valid; SPDK copies what it keeps.
        let ctrlr = unsafe { sys::spdk_nvme_connect(&trid, &opts, size) };
        let ctrlr = NonNull::new(ctrlr).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no NVMe controller answered at {trid_str:?} (is the device bound to vfio-pci/uio, or the NVMe-oF target listening?)"),
            )
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let admin = {
            let stop = Arc::clone(&stop);
            let p = CtrlrPtr(ctrlr);
            std::thread::Builder::new()
                .name("nvme-admin".into())
                .spawn(move || {
                    let p = p;
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: the controller stays attached until this
                        // thread has been joined (Drop).
                        let rc =
                            unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(p.0.as_ptr()) };
                        if rc < 0 {
                            tracing::warn!("NVMe admin queue failed: {}", errno_str(rc));
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })?
        };
        Ok(Arc::new(Controller {
            ctrlr,
            trid: trid_str.to_owned(),
            stop,
            admin: Mutex::new(Some(admin)),
        }))
    }
}

/// Parses and checks the transport ID `trid_str` (no environment needed).
fn parse_trid(trid_str: &str) -> io::Result<sys::spdk_nvme_transport_id> {
    let c = CString::new(trid_str).map_err(|_| invalid("transport ID contains a NUL"))?;
    let mut trid = sys::spdk_nvme_transport_id::default();
    // SAFETY: `trid` is a valid struct to fill and `c` a C string.
    let rc = unsafe { sys::spdk_nvme_transport_id_parse(&mut trid, c.as_ptr()) };
    if rc != 0 {
        return Err(invalid(format!(
                "transport ID {trid_str:?} does not parse ({}); expected e.g. \
                 'trtype:PCIe traddr:0000:01:00.0' or \
                 'trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1'",
                errno_str(rc)
            )));
    }
    // SAFETY: trstring is a NUL-terminated array filled by the parser.
    let available = unsafe { sys::spdk_nvme_transport_available_by_name(trid.trstring.as_ptr()) };
    if !available {
        // SAFETY: as above.
        let name = unsafe { std::ffi::CStr::from_ptr(trid.trstring.as_ptr()) };
        return Err(invalid(format!(
                "transport ID {trid_str:?}: transport {:?} is not available in this SPDK (PCIe, TCP and RDMA are its transports)",
                name.to_string_lossy()
            )));
    }
    if trid.traddr[0] == 0 {
        return Err(invalid(format!("transport ID {trid_str:?} has no traddr")));
    }
    Ok(trid)
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .admin
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        // SAFETY: every queue pair was freed (their engines hold this
        // controller alive), and the admin thread is gone.
        let rc = unsafe { sys::spdk_nvme_detach(self.ctrlr.as_ptr()) };
        if rc != 0 {
            tracing::warn!(trid = %self.trid, "detaching the NVMe controller: {}", errno_str(rc));
        }
    }
}

/// A namespace of an attached controller: what a store's device is on SPDK.
pub struct Namespace {
    ctrl: Arc<Controller>,
    ns: NonNull<sys::spdk_nvme_ns>,
    nsid: u32,
    sector: u32,
    size: u64,
    /// Synchronous I/O for start-up work: a queue pair and a bounce buffer.
    sync: Mutex<Option<SyncQueue>>,
}

// SAFETY: the namespace's getters read data fixed at attach time; commands
// go through queue pairs owned by one thread each (or the mutex-guarded
// synchronous queue).
unsafe impl Send for Namespace {}
// SAFETY: as for Send.
unsafe impl Sync for Namespace {}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("trid", &self.ctrl.trid)
            .field("nsid", &self.nsid)
            .field("sector", &self.sector)
            .field("size", &self.size)
            .finish()
    }
}

impl Namespace {
    /// Attaches the controller at `trid` and selects namespace `nsid`.
    pub fn open(trid: &str, nsid: u32) -> io::Result<Arc<Self>> {
        let ctrl = Controller::attach(trid)?;
        // SAFETY: the controller is attached.
        let ns = unsafe { sys::spdk_nvme_ctrlr_get_ns(ctrl.ctrlr.as_ptr(), nsid) };
        // SAFETY: `ns` is checked for NULL before use.
        let active = !ns.is_null() && unsafe { sys::spdk_nvme_ns_is_active(ns) };
        let Some(ns) = NonNull::new(ns).filter(|_| active) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{trid}: namespace {nsid} does not exist (active namespaces: {:?})",
                    active_namespaces(&ctrl)
                ),
            ));
        };
        // SAFETY: `ns` is an active namespace of an attached controller.
        let (sector, ext, size, pi) = unsafe {
            (
                sys::spdk_nvme_ns_get_sector_size(ns.as_ptr()),
                sys::spdk_nvme_ns_get_extended_sector_size(ns.as_ptr()),
                sys::spdk_nvme_ns_get_size(ns.as_ptr()),
                sys::spdk_nvme_ns_get_pi_type(ns.as_ptr()),
            )
        };
        if !(sector == 512 || sector == 4096) || ext != sector || pi != 0 {
            return Err(invalid(format!(
                "{trid}: namespace {nsid} has {sector}-byte blocks with {} bytes of metadata{}; \
                 nvkv needs 512- or 4096-byte blocks without metadata or protection information \
                 (reformat it, e.g. `nvme format --lbaf=N`)",
                ext - sector,
                if pi != 0 {
                    " and protection information"
                } else {
                    ""
                }
            )));
        }
        tracing::info!(%trid, nsid, sector, size, "NVMe namespace attached");
        Ok(Arc::new(Namespace {
            ctrl,
            ns,
            nsid,
            sector,
            size,
            sync: Mutex::new(None),
        }))
    }

    pub fn sector_size(&self) -> u32 {
        self.sector
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn describe(&self) -> String {
        format!("{} ns {}", self.ctrl.trid, self.nsid)
    }

    fn alloc_qpair(&self, depth: usize) -> io::Result<NonNull<sys::spdk_nvme_qpair>> {
        let ctrlr = self.ctrl.ctrlr.as_ptr();
        let mut o = MaybeUninit::<sys::spdk_nvme_io_qpair_opts>::zeroed();
        let size = std::mem::size_of::<sys::spdk_nvme_io_qpair_opts>();
        // SAFETY: fills `size` bytes of a struct of that size.
        unsafe { sys::spdk_nvme_ctrlr_get_default_io_qpair_opts(ctrlr, o.as_mut_ptr(), size) };
        // SAFETY: initialised just above.
        let mut o = unsafe { o.assume_init() };
        // The queue size stays the controller's (at most its MQES); the
        // driver queues commands beyond it in software, from this pool of
        // requests, which also covers large requests split into several.
        o.io_queue_requests = o.io_queue_requests.max(depth as u32 * 8);
        // Ring the doorbell once per batch (in process_completions).
        // SAFETY: `o` is a valid, initialised struct owned by this frame.
        unsafe { sys::spdk_sys_io_qpair_opts_set_delay_cmd_submit(&mut o, true) };
        // SAFETY: the controller is attached; opts is initialised.
        let q = unsafe { sys::spdk_nvme_ctrlr_alloc_io_qpair(ctrlr, &o, size) };
        NonNull::new(q).ok_or_else(|| {
            io::Error::other(format!(
                "{}: could not allocate an I/O queue pair (too many pollers for the controller's queues?)",
                self.describe()
            ))
        })
    }

    fn check_range(&self, off: u64, len: usize) -> io::Result<(u64, u32)> {
        let s = self.sector as u64;
        if off % s != 0 || len as u64 % s != 0 || off + len as u64 > self.size {
            return Err(invalid(format!(
                "I/O at {off}+{len} is not within the namespace in whole {s}-byte blocks"
            )));
        }
        Ok((off / s, (len as u64 / s) as u32))
    }

    /// Synchronous read, for start-up work (superblock, check).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.with_sync(|q| {
            let mut done = 0;
            while done < buf.len() {
                let n = (buf.len() - done).min(q.bounce.len());
                q.io(self, Op::Read, off + done as u64, n)?;
                buf[done..done + n].copy_from_slice(&q.bounce[..n]);
                done += n;
            }
            Ok(())
        })
    }

    /// Synchronous write, for the loader and the superblock.
    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.with_sync(|q| {
            let mut done = 0;
            while done < buf.len() {
                let n = (buf.len() - done).min(q.bounce.len());
                q.bounce[..n].copy_from_slice(&buf[done..done + n]);
                q.io(self, Op::Write, off + done as u64, n)?;
                done += n;
            }
            Ok(())
        })
    }

    /// Makes every completed write durable (NVMe FLUSH).
    pub fn sync(&self) -> io::Result<()> {
        self.with_sync(|q| q.io(self, Op::Flush, 0, 0))
    }

    fn with_sync<T>(&self, f: impl FnOnce(&mut SyncQueue) -> io::Result<T>) -> io::Result<T> {
        let mut g = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(SyncQueue {
                qpair: self.alloc_qpair(8)?,
                bounce: dma_buf(1 << 20)?,
            });
        }
        f(g.as_mut().expect("just set"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(q) = self
            .sync
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            // SAFETY: no command is outstanding on the synchronous queue
            // (each call waits for its own).
            unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(q.qpair.as_ptr()) };
        }
    }
}

fn active_namespaces(ctrl: &Controller) -> Vec<u32> {
    let c = ctrl.ctrlr.as_ptr();
    let mut v = Vec::new();
    // SAFETY: the controller is attached; the iteration ends at 0.
    let mut id = unsafe { sys::spdk_nvme_ctrlr_get_first_active_ns(c) };
    while id != 0 && v.len() < 64 {
        v.push(id);
        // SAFETY: as above.
        id = unsafe { sys::spdk_nvme_ctrlr_get_next_active_ns(c, id) };
    }
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
}

/// One NVMe command: what, and which blocks.
#[derive(Clone, Copy, Debug)]
struct Cmd {
    op: Op,
    lba: u64,
    count: u32,
}

/// Issues one command. Returns SPDK's rc (0, or -ENOMEM when the queue is
/// full, or another negative errno).
///
/// # Safety
/// `buf` must point to DMA memory of at least `count` blocks that stays
/// valid until the command completes, and `arg` must be what `on_complete`
/// expects until then.
unsafe fn issue(
    ns: &Namespace,
    qpair: NonNull<sys::spdk_nvme_qpair>,
    Cmd { op, lba, count }: Cmd,
    buf: *mut u8,
    cb: sys::spdk_nvme_cmd_cb,
    arg: *mut c_void,
) -> i32 {
    let (n, q) = (ns.ns.as_ptr(), qpair.as_ptr());
    // SAFETY: the caller's contract; the namespace and queue pair are live.
    unsafe {
        match op {
            Op::Read => sys::spdk_nvme_ns_cmd_read(n, q, buf.cast(), lba, count, cb, arg, 0),
            Op::Write => sys::spdk_nvme_ns_cmd_write(n, q, buf.cast(), lba, count, cb, arg, 0),
            Op::Flush => sys::spdk_nvme_ns_cmd_flush(n, q, cb, arg),
        }
    }
}

/// Whether a completion reports an error (SPDK's `spdk_nvme_cpl_is_error`,
/// a macro over the status bitfield, compiled in spdk-sys's C shim).
fn cpl_is_error(cpl: &sys::spdk_nvme_cpl) -> bool {
    // SAFETY: reads the status word of a valid completion.
    unsafe { sys::spdk_sys_cpl_is_error(cpl) }
}

struct SyncQueue {
    qpair: NonNull<sys::spdk_nvme_qpair>,
    bounce: IoBuf,
}

/// Where a synchronous command's completion lands.
struct SyncDone {
    done: bool,
    ok: bool,
}

unsafe extern "C" fn on_sync_complete(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: `arg` is the SyncDone that `SyncQueue::io` waits on, and SPDK
    // passes a valid completion.
    unsafe {
        let d = &mut *(arg as *mut SyncDone);
        d.ok = !cpl_is_error(&*cpl);
        d.done = true;
    }
}

impl SyncQueue {
    fn io(&mut self, ns: &Namespace, op: Op, off: u64, len: usize) -> io::Result<()> {
        let (lba, count) = if op == Op::Flush {
            (0, 0)
        } else {
            ns.check_range(off, len)?
        };
        let mut d = SyncDone {
            done: false,
            ok: false,
        };
        let arg = (&mut d as *mut SyncDone).cast();
        let buf = self.bounce.as_mut_ptr();
        // SAFETY: the bounce buffer is DMA memory of 1 MiB >= len, and `d`
        // lives on this stack frame until the loop below sees it done.
        let rc = unsafe {
            issue(
                ns,
                self.qpair,
                Cmd { op, lba, count },
                buf,
                Some(on_sync_complete),
                arg,
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // SAFETY: `d` is only written by the callback, called from inside
        // process_completions on this thread; read it through a volatile
        // load so the loop sees the update.
        while !unsafe { std::ptr::read_volatile(&d.done) } {
            // SAFETY: this thread holds the queue's mutex.
            let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), 0) };
            if rc < 0 || Instant::now() > deadline {
                // The command may still complete into `d`: the queue pair is
                // unusable and so is this frame's memory; give up loudly.
                panic!(
                    "{}: synchronous {op:?} did not complete ({})",
                    ns.describe(),
                    errno_str(rc)
                );
            }
        }
        if d.ok {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{}: {op:?} at {off} failed",
                ns.describe()
            )))
        }
    }
}

unsafe fn release_dma(p: NonNull<u8>) {
    // SAFETY: `p` came from spdk_zmalloc (see dma_buf).
    unsafe { sys::spdk_free(p.as_ptr().cast()) }
}

/// A zeroed DMA buffer of at least `len` bytes from SPDK's allocator.
fn dma_buf(len: usize) -> io::Result<IoBuf> {
    let cap = len.max(1).next_multiple_of(ALIGN);
    // SAFETY: plain allocation call; the result is checked for NULL.
    let p = unsafe {
        sys::spdk_zmalloc(
            cap,
            ALIGN,
            std::ptr::null_mut(),
            sys::SPDK_ENV_SOCKET_ID_ANY,
            sys::SPDK_MALLOC_DMA,
        )
    };
    let p = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("SPDK DMA memory exhausted allocating {cap} bytes (raise --spdk-mem or reserve more hugepages)"),
        )
    })?;
    // SAFETY: `cap` zeroed bytes, 4 KiB aligned, owned by nobody else, freed
    // by spdk_free from any thread.
    Ok(unsafe { IoBuf::from_raw(p, cap, release_dma) })
}

/// What a command's callback needs: where to report, and which slot.
struct SlotCtx {
    reaped: *mut Vec<(u32, bool)>,
    slot: u32,
}

unsafe extern "C" fn on_complete(arg: *mut c_void, cpl: *const sys::spdk_nvme_cpl) {
    // SAFETY: `arg` points into the engine's `ctx` table, alive while the
    // engine is; its `reaped` is the engine's list, touched only from this
    // thread, inside process_completions.
    unsafe {
        let c = &*(arg as *const SlotCtx);
        (*c.reaped).push((c.slot, !cpl_is_error(&*cpl)));
    }
}

/// An operation queued for the next submit.
#[derive(Clone, Copy)]
struct Pending {
    slot: u32,
    cmd: Cmd,
}

/// One poller's engine: its own queue pair on the shared namespace.
pub struct Spdk {
    ns: Arc<Namespace>,
    qpair: NonNull<sys::spdk_nvme_qpair>,
    slots: Slots,
    pending: Vec<Pending>,
    /// Filled by `on_complete`; owned here (Box::into_raw), freed in Drop.
    reaped: *mut Vec<(u32, bool)>,
    ctx: Box<[SlotCtx]>,
    /// DMA buffers of `POOL_BUF` bytes, and larger ones (segments,
    /// recovery reads); dropped, a buffer goes back to its pool.
    pool: Arc<BufPool>,
    big: Arc<BufPool>,
    block_size: u32,
    wake_fd: i32,
    failed_since: Option<Instant>,
}

impl Spdk {
    pub fn new(
        ns: &Arc<Namespace>,
        block_size: u32,
        depth: usize,
        wake: &EventFd,
    ) -> io::Result<Self> {
        let qpair = ns.alloc_qpair(depth)?;
        let reaped = Box::into_raw(Box::new(Vec::with_capacity(depth)));
        let ctx = (0..depth as u32)
            .map(|slot| SlotCtx { reaped, slot })
            .collect();
        // Built before the pool is filled: should DMA memory run out, its
        // Drop frees the queue pair.
        let e = Spdk {
            ns: Arc::clone(ns),
            qpair,
            slots: Slots::new(depth),
            pending: Vec::with_capacity(depth),
            reaped,
            ctx,
            pool: BufPool::new(POOL_MAX),
            big: BufPool::new(BIG_MAX),
            block_size,
            wake_fd: wake.fd(),
            failed_since: None,
        };
        for _ in 0..depth.min(POOL_MAX) {
            drop(dma_buf(POOL_BUF)?.pooled(&e.pool)); // into the pool
        }
        Ok(e)
    }

    fn queue(
        &mut self,
        op: Op,
        off: u64,
        buf: Option<IoBuf>,
        tag: u64,
    ) -> Result<(), Option<IoBuf>> {
        let len = buf.as_ref().map_or(0, |b| b.len());
        let range = if op == Op::Flush {
            Ok((0, 0))
        } else {
            self.ns.check_range(off, len)
        };
        let slot = self.slots.take(tag, buf)?;
        match range {
            Ok((lba, count)) => self.pending.push(Pending {
                slot,
                cmd: Cmd { op, lba, count },
            }),
            Err(e) => {
                tracing::error!("{e}");
                // SAFETY: reaped is this engine's list; no callback runs now.
                unsafe { (*self.reaped).push((slot, false)) };
            }
        }
        Ok(())
    }

    fn process(&mut self) {
        // SAFETY: this thread owns the queue pair.
        let rc = unsafe { sys::spdk_nvme_qpair_process_completions(self.qpair.as_ptr(), 0) };
        if rc < 0 {
            let first = self
                .failed_since
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if first {
                tracing::error!(device = %self.ns.describe(), "I/O queue pair failed: {}; reconnecting", errno_str(rc));
                self.failed_since = Some(Instant::now());
            }
            // SAFETY: as above; outstanding commands are completed with an
            // abort status by the driver, through on_complete.
            unsafe { sys::spdk_nvme_ctrlr_reconnect_io_qpair(self.qpair.as_ptr()) };
        }
    }
}

impl Engine for Spdk {
    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn capacity(&self) -> u64 {
        self.ns.size
    }

    /// A pooled DMA buffer, or a new one; `Err` when SPDK's DMA memory is
    /// exhausted.
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf> {
        let mut b = if len <= POOL_BUF {
            match self.pool.pop() {
                Some(b) => b,
                None => dma_buf(POOL_BUF)?.pooled(&self.pool),
            }
        } else {
            match self.big.take_fitting(len, 2 * len) {
                Some(b) => b,
                None => dma_buf(len)?.pooled(&self.big),
            }
        };
        b.set_len(len);
        Ok(b)
    }

    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue(Op::Read, off, Some(buf), tag)
            .map_err(|b| b.expect("buffer"))
    }

    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.queue(Op::Write, off, Some(buf), tag)
            .map_err(|b| b.expect("buffer"))
    }

    fn flush(&mut self, tag: u64) -> bool {
        self.queue(Op::Flush, 0, None, tag).is_ok()
    }

    fn submit(&mut self) -> io::Result<usize> {
        let mut sent = 0;
        let mut i = 0;
        while i < self.pending.len() {
            let Pending { slot, cmd } = self.pending[i];
            let op = cmd.op;
            let buf = self
                .slots
                .buf_mut(slot)
                .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr());
            let arg = (&self.ctx[slot as usize] as *const SlotCtx)
                .cast_mut()
                .cast();
            // SAFETY: the buffer is DMA memory (engine-allocated) held in the
            // slot until its completion, and ctx lives as long as the engine.
            let rc = unsafe { issue(&self.ns, self.qpair, cmd, buf, Some(on_complete), arg) };
            if rc == -libc::ENOMEM {
                // The queue is full: the rest goes out on the next submit.
                break;
            }
            if rc != 0 {
                tracing::error!(device = %self.ns.describe(), "{op:?} not submitted: {}", errno_str(rc));
                // SAFETY: reaped is this engine's list; no callback runs now.
                unsafe { (*self.reaped).push((slot, false)) };
            } else {
                sent += 1;
            }
            i += 1;
        }
        self.pending.drain(..i);
        if sent > 0 {
            // Rings the doorbell for the whole batch (delay_cmd_submit).
            self.process();
        }
        Ok(sent)
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        // SAFETY: no callback runs outside process_completions.
        if unsafe { (*self.reaped).is_empty() } && self.slots.in_use() > self.pending.len() {
            self.process();
        }
        // SAFETY: as above; the list is swapped out, so the loop does not
        // hold a reference into it.
        let done = unsafe { std::mem::take(&mut *self.reaped) };
        for &(slot, ok) in &done {
            let result = if ok {
                Ok(self.slots.buf_mut(slot).map_or(0, |b| b.len()))
            } else {
                Err(io::Error::from_raw_os_error(libc::EIO))
            };
            out.push(self.slots.finish(slot, result));
        }
        let mut done = done;
        done.clear();
        // SAFETY: as above; gives the allocation back for reuse.
        unsafe {
            if (*self.reaped).is_empty() {
                *self.reaped = done;
            }
        }
    }

    fn wait(&mut self, timeout: Duration) {
        if self.slots.in_use() == 0 {
            // Nothing to complete: sleep on the poller's doorbell.
            let mut pfd = libc::pollfd {
                fd: self.wake_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            return;
        }
        // Completions arrive in memory, not through the kernel: poll.
        let deadline = Instant::now() + timeout;
        // SAFETY: no callback runs outside process_completions.
        while unsafe { (*self.reaped).is_empty() } && Instant::now() < deadline {
            self.process();
            // An adaptive poller waits politely: others may need this core.
            std::thread::yield_now();
        }
    }

    fn in_flight(&self) -> usize {
        self.slots.in_use()
    }

    fn queued(&self) -> usize {
        self.pending.len()
    }

    fn completes_by_polling(&self) -> bool {
        true
    }
}

impl Drop for Spdk {
    fn drop(&mut self) {
        // Commands in flight still own buffers and callback contexts: let
        // them finish (bounded) before the queue pair and memory go.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sink = Vec::new();
        while self.slots.in_use() > self.pending.len() && Instant::now() < deadline {
            self.reap(&mut sink);
            sink.clear();
        }
        // SAFETY: this thread owns the queue pair; nothing is outstanding
        // (or the controller is gone, and SPDK aborts what is left).
        unsafe { sys::spdk_nvme_ctrlr_free_io_qpair(self.qpair.as_ptr()) };
        // SAFETY: allocated in `new` by Box::into_raw, freed once, after the
        // last callback that could touch it.
        drop(unsafe { Box::from_raw(self.reaped) });
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// SPDK's version (as its headers give it), for logs and INFO.
pub fn version() -> String {
    format!(
        "{}.{:02}.{}",
        sys::SPDK_VERSION_MAJOR,
        sys::SPDK_VERSION_MINOR,
        sys::SPDK_VERSION_PATCH
    )
}
