//! The device under a store: a regular file or a block device opened with
//! `O_DIRECT`, or an NVMe namespace driven by SPDK; and the eventfd pollers
//! park on.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Block size used for files and for devices with smaller sectors.
pub const DEFAULT_BLOCK: u32 = 4096;

/// Where a store's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A regular file or a block device, used through the kernel.
    Path(PathBuf),
    /// An NVMe namespace reached by SPDK transport ID
    /// (`trtype:PCIe traddr:0000:01:00.0`, `trtype:TCP adrfam:IPv4 …`).
    Nvme { trid: String, nsid: u32 },
}

impl DeviceSpec {
    /// A transport ID (it starts with `trtype:`) or else a path.
    pub fn parse(s: &str, nsid: u32) -> Self {
        let t = s.trim();
        if t.len() >= 7 && t[..7].eq_ignore_ascii_case("trtype:") {
            DeviceSpec::Nvme {
                trid: t.to_owned(),
                nsid,
            }
        } else {
            DeviceSpec::Path(PathBuf::from(s))
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Nvme { trid, nsid } => write!(f, "{trid} ns {nsid}"),
        }
    }
}

#[derive(Debug)]
enum Backend {
    File(File),
    #[cfg(feature = "spdk")]
    Nvme(std::sync::Arc<super::spdk::Namespace>),
}

/// A file or block device opened for direct I/O, or an NVMe namespace.
#[derive(Debug)]
pub struct Device {
    backend: Backend,
    path: PathBuf,
    block_size: u32,
    capacity: u64,
    /// A regular file: durability needs fdatasync for its metadata too.
    pub is_file: bool,
}

impl Device {
    /// Opens `path` with `O_DIRECT`. With `create_len`, a missing regular
    /// file is created and sized (sparse) to that many bytes.
    pub fn open(path: &Path, create_len: Option<u64>) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create_len.is_some())
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let meta = file.metadata()?;
        let (block_size, capacity, is_file) = if meta.file_type().is_block_device() {
            let (bs, cap) = block_device_geometry(file.as_raw_fd())?;
            (bs.max(DEFAULT_BLOCK), cap, false)
        } else if meta.is_file() {
            if let Some(len) = create_len {
                if meta.len() < len {
                    file.set_len(len)?;
                }
            }
            (DEFAULT_BLOCK, file.metadata()?.len(), true)
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file or block device", path.display()),
            ));
        };
        Ok(Device {
            backend: Backend::File(file),
            path: path.to_owned(),
            block_size,
            capacity,
            is_file,
        })
    }

    /// Opens the device `spec` names; `create_len` as for [`Device::open`].
    pub fn open_spec(spec: &DeviceSpec, create_len: Option<u64>) -> io::Result<Self> {
        match spec {
            DeviceSpec::Path(p) => Device::open(p, create_len),
            #[cfg(feature = "spdk")]
            DeviceSpec::Nvme { trid, nsid } => {
                let ns = super::spdk::Namespace::open(trid, *nsid)?;
                Ok(Device {
                    path: PathBuf::from(ns.describe()),
                    block_size: ns.sector_size().max(DEFAULT_BLOCK),
                    capacity: ns.size(),
                    is_file: false,
                    backend: Backend::Nvme(ns),
                })
            }
            #[cfg(not(feature = "spdk"))]
            DeviceSpec::Nvme { trid, .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{trid}: this nvkv was built without SPDK; build it with `cargo build --release --features spdk`"),
            )),
        }
    }

    /// A second handle on the same device (for another thread).
    pub fn try_clone(&self) -> io::Result<Self> {
        let backend = match &self.backend {
            Backend::File(f) => Backend::File(f.try_clone()?),
            #[cfg(feature = "spdk")]
            Backend::Nvme(ns) => Backend::Nvme(std::sync::Arc::clone(ns)),
        };
        Ok(Device {
            backend,
            path: self.path.clone(),
            block_size: self.block_size,
            capacity: self.capacity,
            is_file: self.is_file,
        })
    }

    /// The SPDK namespace under this device, if it is one.
    #[cfg(feature = "spdk")]
    pub fn nvme(&self) -> Option<&std::sync::Arc<super::spdk::Namespace>> {
        match &self.backend {
            Backend::Nvme(ns) => Some(ns),
            Backend::File(_) => None,
        }
    }

    /// Whether the device is an NVMe namespace driven by SPDK.
    pub fn is_nvme(&self) -> bool {
        !matches!(self.backend, Backend::File(_))
    }

    /// The kernel driver bound to the disk under the file or block device,
    /// from sysfs (`virtio_blk` for a virtio disk), when sysfs names one:
    /// not for SPDK namespaces, device-mapper, network or memory file
    /// systems, nor for disks whose driver sits on a parent device (NVMe).
    pub fn disk_driver(&self) -> Option<String> {
        // Refutable only with the spdk feature.
        #[allow(clippy::infallible_destructuring_match)]
        let f = match &self.backend {
            Backend::File(f) => f,
            #[cfg(feature = "spdk")]
            Backend::Nvme(_) => return None,
        };
        let meta = f.metadata().ok()?;
        let dev = if meta.file_type().is_block_device() {
            meta.rdev()
        } else {
            meta.dev()
        };
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let mut disk = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        if disk.join("partition").exists() {
            disk.pop();
        }
        let driver = std::fs::read_link(disk.join("device/driver")).ok()?;
        Some(driver.file_name()?.to_string_lossy().into_owned())
    }

    /// The file or block device's name, or the namespace's transport ID.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The descriptor the kernel engines use.
    pub fn fd(&self) -> io::Result<RawFd> {
        match &self.backend {
            Backend::File(f) => Ok(f.as_raw_fd()),
            #[cfg(feature = "spdk")]
            Backend::Nvme(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: an SPDK namespace needs --engine spdk",
                    self.path.display()
                ),
            )),
        }
    }

    /// Synchronous aligned read, for start-up work (superblock, recovery).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        match &self.backend {
            Backend::File(f) => std::os::unix::fs::FileExt::read_exact_at(f, buf, off),
            #[cfg(feature = "spdk")]
            Backend::Nvme(ns) => ns.read_at(buf, off),
        }
    }

    /// Synchronous aligned write, for the loader and the superblock.
    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        match &self.backend {
            Backend::File(f) => std::os::unix::fs::FileExt::write_all_at(f, buf, off),
            #[cfg(feature = "spdk")]
            Backend::Nvme(ns) => ns.write_at(buf, off),
        }
    }

    /// Makes completed writes durable (fdatasync, or NVMe FLUSH).
    pub fn sync(&self) -> io::Result<()> {
        match &self.backend {
            Backend::File(f) => f.sync_data(),
            #[cfg(feature = "spdk")]
            Backend::Nvme(ns) => ns.sync(),
        }
    }
}

fn block_device_geometry(fd: RawFd) -> io::Result<(u32, u64)> {
    const BLKSSZGET: libc::c_ulong = 0x1268;
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut bs: libc::c_int = 0;
    let mut cap: u64 = 0;
    // SAFETY: both ioctls write one integer of the type passed to them.
    let r = unsafe { libc::ioctl(fd, BLKSSZGET, &mut bs) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut cap) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((bs as u32, cap))
}

/// A non-blocking eventfd: the doorbell a parked thread sleeps on.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Adds one to the counter, waking a thread blocked on it.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN)
        // already means a pending wake-up, so the result can be ignored.
        let _ = unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter; returns its value (0 when nothing was pending).
    pub fn drain(&self) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN leaves it at 0.
        let _ = unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
        v
    }

    /// Blocks until the counter is non-zero or `timeout_ms` passes.
    pub fn poll(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let _ = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }
}
