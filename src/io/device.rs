//! The device under a store: a regular file or a block device opened with
//! `O_DIRECT`, and the eventfd pollers park on.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Block size used for files and for devices with smaller sectors.
pub const DEFAULT_BLOCK: u32 = 4096;

/// A file or block device opened for direct I/O.
#[derive(Debug)]
pub struct Device {
    file: File,
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
            file,
            path: path.to_owned(),
            block_size,
            capacity,
            is_file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Synchronous aligned read, for start-up work (superblock, recovery).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, off)
    }

    /// Synchronous aligned write, for the loader and the superblock.
    pub fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, off)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
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
