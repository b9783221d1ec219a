//! Aligned I/O buffers.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every I/O buffer: enough for `O_DIRECT` on 4 KiB devices.
pub const ALIGN: usize = 4096;

/// An aligned heap buffer for direct I/O.
///
/// Invariant: `ptr` points to `cap` bytes owned by this value alone, and
/// `len <= cap`; they were allocated with `Layout(cap, ALIGN)` when `release`
/// is `None`, and otherwise by an engine's allocator that `release` frees
/// (SPDK's DMA memory). `pool` is the index of the buffer among those an
/// engine registered with the kernel, if any.
pub struct IoBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
    pool: Option<u16>,
    release: Option<unsafe fn(NonNull<u8>)>,
}

// SAFETY: an IoBuf uniquely owns its allocation (no aliasing), like a Vec<u8>.
unsafe impl Send for IoBuf {}

impl IoBuf {
    /// A zeroed buffer of `cap` bytes (rounded up to the alignment).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        IoBuf {
            ptr,
            cap,
            len: cap,
            pool: None,
            release: None,
        }
    }

    /// Takes ownership of `cap` bytes at `ptr` that `release` frees.
    ///
    /// # Safety
    /// `ptr` must be valid for reads and writes of `cap` initialised bytes,
    /// aligned to [`ALIGN`], owned by nobody else, and freeable by `release`
    /// from any thread.
    #[cfg_attr(not(feature = "spdk"), allow(dead_code))]
    pub(crate) unsafe fn from_raw(
        ptr: NonNull<u8>,
        cap: usize,
        release: unsafe fn(NonNull<u8>),
    ) -> Self {
        IoBuf {
            ptr,
            cap,
            len: cap,
            pool: None,
            release: Some(release),
        }
    }

    pub(crate) fn with_pool_index(mut self, index: u16) -> Self {
        self.pool = Some(index);
        self
    }

    /// The index of this buffer among the engine's registered buffers.
    pub fn pool_index(&self) -> Option<u16> {
        self.pool
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the length used by the next read or write.
    ///
    /// # Panics
    /// When `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.cap,
            "IoBuf length {len} over capacity {}",
            self.cap
        );
        self.len = len;
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: by the invariant, ptr is valid for len <= cap initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(release) = self.release {
            // SAFETY: by `from_raw`'s contract, `release` frees this buffer,
            // which nothing else owns; it is freed once.
            unsafe { release(self.ptr) };
            return;
        }
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("buffer layout");
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.cap)
            .field("pool", &self.pool)
            .finish()
    }
}
