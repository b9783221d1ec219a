//! Aligned I/O buffers, and the pools engines keep them in.
//!
//! A buffer taken from an engine's pool carries a handle to that pool and
//! goes back to it when dropped (as glommio's `UringBuffer` does), or is
//! freed when the pool is full: nobody hands buffers back by hand.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// Alignment of every I/O buffer: enough for `O_DIRECT` on 4 KiB devices.
pub const ALIGN: usize = 4096;

/// Where a buffer's memory comes from, and so how it is freed.
#[derive(Clone, Copy)]
enum Memory {
    /// The global allocator, with `Layout(cap, ALIGN)`.
    Heap,
    /// An engine's allocator, which this function frees (SPDK's DMA
    /// memory, with `spdk_free`).
    Engine(unsafe fn(NonNull<u8>)),
}

/// A buffer's memory, without a length or an owner's handle: what a pool
/// keeps at rest.
///
/// Invariant: `ptr` points to `cap` initialised bytes, aligned to
/// [`ALIGN`], that nobody else owns and that `memory` says how to free.
/// `index` is the buffer's index among those an engine registered with
/// the kernel, if any: such memory is never freed while its pool lives.
struct Raw {
    ptr: NonNull<u8>,
    cap: usize,
    index: Option<u16>,
    memory: Memory,
}

// SAFETY: a Raw uniquely owns its memory (no aliasing), like a Vec<u8>, and
// both allocators free from any thread.
unsafe impl Send for Raw {}

impl Raw {
    fn free(self) {
        match self.memory {
            // SAFETY: by the invariant, `release` frees this memory, which
            // nothing else owns; `self` is consumed, so it is freed once.
            Memory::Engine(release) => unsafe { release(self.ptr) },
            Memory::Heap => {
                let layout = Layout::from_size_align(self.cap, ALIGN).expect("buffer layout");
                // SAFETY: allocated with this very layout (`IoBuf::new`),
                // owned by nothing else, freed once.
                unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
            }
        }
    }
}

/// An engine's pool of idle buffers, shared with the buffers taken from it.
///
/// A buffer taken from the pool goes back on drop, from whichever thread
/// (the mutex is uncontended: buffers stay on their poller in practice);
/// when `max` buffers (or `max_bytes`) are idle, one more is freed
/// instead, unless it is
/// registered with the kernel (it has an index): those always go back, and
/// are freed only with the pool, once the engine that registered them (and
/// every buffer taken) is gone.
pub(crate) struct BufPool {
    idle: Mutex<Vec<Raw>>,
    max: usize,
    max_bytes: usize,
}

impl BufPool {
    /// An empty pool that keeps at most `max` idle buffers.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Self::bounded(max, usize::MAX)
    }

    /// An empty pool that keeps at most `max` idle buffers of at most
    /// `max_bytes` in all.
    pub(crate) fn bounded(max: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(BufPool {
            idle: Mutex::new(Vec::with_capacity(max)),
            max,
            max_bytes,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Raw>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle buffers.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.idle().len()
    }

    /// The buffer put back last, if any, with its full capacity as length.
    pub(crate) fn pop(self: &Arc<Self>) -> Option<IoBuf> {
        let raw = self.idle().pop()?;
        Some(IoBuf::from_pool(raw, self))
    }

    /// An idle buffer of `len` to `most` bytes of capacity, if any.
    pub(crate) fn take_fitting(self: &Arc<Self>, len: usize, most: usize) -> Option<IoBuf> {
        let raw = {
            let mut idle = self.idle();
            let i = idle.iter().rposition(|r| r.cap >= len && r.cap <= most)?;
            idle.swap_remove(i)
        };
        Some(IoBuf::from_pool(raw, self))
    }

    /// Takes `raw` back; hands it back when the pool is full.
    fn put(&self, raw: Raw) -> Option<Raw> {
        let mut idle = self.idle();
        let room = idle.len() < self.max
            && idle.iter().map(|r| r.cap).sum::<usize>() + raw.cap <= self.max_bytes;
        if room || raw.index.is_some() {
            idle.push(raw);
            None
        } else {
            Some(raw)
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        idle.into_iter().for_each(Raw::free);
    }
}

/// An aligned buffer for direct I/O.
///
/// Invariant: `raw` is as [`Raw`] says (the buffer owns its memory), and
/// `len <= raw.cap`. With a `pool`, the memory goes back there on drop.
pub struct IoBuf {
    raw: Raw,
    len: usize,
    pool: Option<Arc<BufPool>>,
}

impl IoBuf {
    /// A zeroed heap buffer of `cap` bytes (rounded up to the alignment),
    /// freed on drop.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self::heap(ptr, cap, cap)
    }

    /// A heap buffer of `cap` bytes (rounded up to the alignment, and at
    /// least `data`'s) holding `data`, zeros after it, with `len()` ==
    /// `data.len()`; freed on drop. Its memory is written once, not zeroed
    /// and then copied into as [`IoBuf::new`]'s would be.
    pub fn copy_of(data: &[u8], cap: usize) -> Self {
        let len = data.len();
        let cap = cap.max(len).max(1).next_multiple_of(ALIGN);
        let layout = Layout::from_size_align(cap, ALIGN).expect("buffer layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        // SAFETY: `ptr` is a fresh allocation of `cap` >= `len` bytes, so
        // it does not overlap `data`; the two writes initialise all `cap`
        // bytes, as `Raw`'s invariant asks.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), len);
            std::ptr::write_bytes(ptr.as_ptr().add(len), 0, cap - len);
        }
        Self::heap(ptr, cap, len)
    }

    /// A buffer of `len` bytes of the heap allocation of `cap` initialised
    /// bytes at `ptr` (aligned, as [`IoBuf::new`] allocates), freed on drop.
    fn heap(ptr: NonNull<u8>, cap: usize, len: usize) -> Self {
        IoBuf {
            raw: Raw {
                ptr,
                cap,
                index: None,
                memory: Memory::Heap,
            },
            len,
            pool: None,
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
            raw: Raw {
                ptr,
                cap,
                index: None,
                memory: Memory::Engine(release),
            },
            len: cap,
            pool: None,
        }
    }

    fn from_pool(raw: Raw, pool: &Arc<BufPool>) -> Self {
        IoBuf {
            len: raw.cap,
            raw,
            pool: Some(Arc::clone(pool)),
        }
    }

    /// This buffer, belonging to `pool` from now on: it goes there when
    /// dropped.
    pub(crate) fn pooled(mut self, pool: &Arc<BufPool>) -> Self {
        self.pool = Some(Arc::clone(pool));
        self
    }

    /// This buffer as the `index`-th of those an engine registered with
    /// the kernel: it must belong to a pool that outlives the registration.
    pub(crate) fn with_pool_index(mut self, index: u16) -> Self {
        self.raw.index = Some(index);
        self
    }

    /// The index of this buffer among the engine's registered buffers.
    pub fn pool_index(&self) -> Option<u16> {
        self.raw.index
    }

    /// Leaks the memory (the kernel or a device may still write into it)
    /// but lets go of the pool.
    pub(crate) fn leak(self) {
        let mut me = std::mem::ManuallyDrop::new(self);
        drop(me.pool.take());
    }

    pub fn capacity(&self) -> usize {
        self.raw.cap
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
            len <= self.raw.cap,
            "IoBuf length {len} over capacity {}",
            self.raw.cap
        );
        self.len = len;
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.raw.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.raw.ptr.as_ptr()
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: by the invariant, ptr is valid for len <= cap initialised bytes.
        unsafe { std::slice::from_raw_parts(self.raw.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for Deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.raw.ptr.as_ptr(), self.len) }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        let raw = Raw { ..self.raw };
        let left = match self.pool.take() {
            Some(pool) => pool.put(raw),
            None => Some(raw),
        };
        if let Some(raw) = left {
            raw.free();
        }
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("cap", &self.raw.cap)
            .field("index", &self.raw.index)
            .field("pooled", &self.pool.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pooled_buffer_goes_back_on_drop_and_the_surplus_is_freed() {
        let pool = BufPool::new(2);
        let bufs: Vec<IoBuf> = (0..3).map(|_| IoBuf::new(4096).pooled(&pool)).collect();
        let first = bufs[0].as_ptr();
        assert_eq!(pool.len(), 0);
        drop(bufs);
        assert_eq!(pool.len(), 2, "the third one is freed");
        let b = pool.pop().unwrap();
        assert_eq!((b.len(), pool.len()), (4096, 1));
        assert_ne!(b.as_ptr(), first, "last in, first out");
        // Sent to another thread and dropped there, it comes back all the same.
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn registered_buffers_always_go_back_and_the_pool_outlives_its_engine() {
        let pool = BufPool::new(1);
        let a = IoBuf::new(4096).pooled(&pool).with_pool_index(0);
        let b = IoBuf::new(4096).pooled(&pool).with_pool_index(1);
        drop((a, b));
        assert_eq!(pool.len(), 2, "both back, over the pool's limit");
        let b = pool.pop().unwrap();
        assert_eq!(b.pool_index(), Some(1));
        let weak = Arc::downgrade(&pool);
        drop(pool); // the engine goes
        assert!(weak.upgrade().is_some(), "the taken buffer holds the pool");
        drop(b);
        assert!(weak.upgrade().is_none(), "freed with the last buffer");
    }

    #[test]
    fn take_fitting_picks_a_buffer_within_bounds() {
        let pool = BufPool::new(4);
        for cap in [8192, 65536, 16384] {
            drop(IoBuf::new(cap).pooled(&pool));
        }
        assert!(pool.take_fitting(100_000, 200_000).is_none());
        let b = pool.take_fitting(40_000, 80_000).unwrap();
        assert_eq!(b.capacity(), 65536);
        assert_eq!(pool.take_fitting(8192, 16384).unwrap().capacity(), 16384);
        assert_eq!(pool.len(), 2, "the 16 KiB one is back, the 64 KiB one out");
        drop(b);
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn a_copy_holds_the_data_then_zeros() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8 | 1).collect();
        let b = IoBuf::copy_of(&data, 8192);
        assert_eq!((b.len(), b.capacity()), (5000, 8192));
        assert_eq!(&b[..], &data[..]);
        let mut b = b;
        b.set_len(8192);
        assert!(b[5000..].iter().all(|&x| x == 0));
        assert_eq!(
            IoBuf::copy_of(&data, 0).capacity(),
            8192,
            "at least the data's"
        );
    }

    #[test]
    fn a_leaked_buffer_lets_go_of_its_pool() {
        let pool = BufPool::new(1);
        let weak = Arc::downgrade(&pool);
        let b = IoBuf::new(4096).pooled(&pool);
        drop(pool);
        b.leak();
        assert!(weak.upgrade().is_none());
    }
}
