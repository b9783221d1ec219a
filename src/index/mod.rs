//! The mmapped hash index: key digest → place of the record on the device.
//!
//! The index is split into partitions by key hash, one file each
//! (`index/part-NNNN.idx`), so a poller owns whole partitions and a resize
//! touches one small table at a time. A partition is an open-addressing table
//! with linear probing in Robin Hood order (each run of occupied slots
//! sorted by home slot, so a probe for a missing key stops at the first
//! entry closer to its home than the probe is) and backward-shift deletion.
//! A slot (version 5, `Layout::Packed`) is packed into as few bytes as
//! its fields take, their widths in the table's header:
//!
//! ```text
//! word u64 = expire_ms (44 bits) | access (20 bits)
//! then offset/16 (the store's offset bits: 29 for a store of 8 GiB)
//!    | length/16 (23 bits) | tombstone (1 bit)
//!    | displacement (7 bits, more in a table that needs them)
//!    | remainder (about 32 less the bits of the slot count)
//! ```
//!
//! The home slot of a key is `fastrange(tag, slots)`: a slot keeps how far
//! it lies past its home (its *displacement*) and the low bits of its tag
//! (its *remainder*: the tags of one home lie in a range shorter than
//! those bits span), from which the whole tag comes back. A table of 4,500
//! slots (1 M keys in 256 partitions) keeps 20 bits of remainder, one of
//! 450,000 (100 M keys) 14: 18-byte slots in stores of up to 8 GiB at 1 M
//! keys, and of up to 64 GiB at 100 M.
//!
//! `expire_ms` is the key's exact expiry (0 = never; an expiry past the
//! year 2500 is kept as "far future", the record holds the exact one), so
//! EXISTS, DBSIZE and SET NX / XX decide without a device read. `access`
//! is what eviction knows of the key's use (an LRU clock or an LFU
//! counter, see `store::evict`); the table keeps it through replacements
//! and never interprets it.
//!
//! A tombstone entry whose expiry is not 0 is a *marker*: the key expired
//! or was evicted, and the entry still points at its last value's record,
//! which shadows older versions of the key on the device until compaction
//! drops it or replaces it with a small tombstone record. Real tombstones
//! (DEL) always have expiry 0.
//!
//! The key itself is not stored: a lookup matches the tag (the top 32 bits
//! of the high half of the key's XXH3-128 digest) inside the partition
//! chosen by the low half, and the record read from the device is checked
//! against the key. A tag is shared by several keys now and then (a lookup
//! in a partition of 2^20 keys meets another key's entry under its tag
//! about once in 2^12): its entries are the tag's candidates, and the caller
//! tells them apart by the keys in their records (see
//! [`Partition::promote`], [`Partition::insert_new`]); the test switch
//! `NVKV_TEST_TAG_BITS` keeps fewer bits, so that tests meet that case
//! everywhere. A rebuild and a load tell keys apart by their whole 64-bit
//! tags, in *wide* tables of 24-byte slots built in memory, and shorten
//! them as they write the tables out ([`write_out`]); a file of version 4
//! or older (20-byte or 24-byte slots) is converted when opened.
//! At the default maximum load factor of 0.9 (Robin Hood order keeps probes
//! short there: a table of version 2, linear probing in insertion order,
//! stopped at 0.8) a full table of 18-byte slots costs 20 bytes per key;
//! a table that has just grown (by a quarter, [`grown`]) 25.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;
use thiserror::Error;

/// Bytes of the header at the start of each partition file.
pub const HEADER: usize = 128;
/// Bytes per slot of a table of version 4 (read only to be converted):
/// the tag's top 32 bits, then the record's place and the expiry and
/// access word.
const NARROW_SLOT: usize = 20;
/// Bytes per slot of a *wide* table, whose tags keep all 64 bits: a table
/// being built in memory by a rebuild or a load (which tell keys apart by
/// their whole tags before [`write_out`] shortens them), and a file of
/// version 3 or older.
const WIDE_SLOT: usize = 24;
/// Bits of a key's digest a table on its file keeps as the key's tag.
pub const TAG_BITS: u32 = 32;
/// Default maximum load factor before a partition grows.
pub const MAX_LOAD: f64 = 0.9;
const MAGIC: &[u8; 8] = b"NVKVIDX1";
/// Version 2 keeps the count of keys with a TTL in the header (at 84) and
/// the access bits in the expiry word; version 3 keeps the slots of a run
/// in Robin Hood order (sorted by home slot); version 4 keeps 32-bit tags
/// in 20-byte slots; version 5 packs them ([`Layout::Packed`]). A clean
/// table of an older version is converted when opened (its entries placed
/// again, with their tags shortened, in a new file); a wide table
/// ([`WIDE_SLOT`]) in use is written as version 3.
const VERSION: u32 = 5;
const NARROW_VERSION: u32 = 4;
const WIDE_VERSION: u32 = 3;
const CRC_AT: usize = 80;
const EXPIRING_AT: usize = 84;
/// A clean table's CRC32C of its slots (at 92), valid when the word at 96
/// holds [`SLOTS_CRC_SET`]. Both lie in the part of the header that its
/// own checksum covers and that builds before them left zero, so a table
/// closed by such a build opens as before, unchecked.
const SLOTS_CRC_AT: usize = 92;
const SLOTS_CRC_FLAG_AT: usize = 96;
const SLOTS_CRC_SET: u32 = 1;
/// Version 5: the bits a packed slot gives a record's offset (the
/// store's, [`Owner::offset_bits`]).
const OFFSET_BITS_AT: usize = 100;
/// Bits of a packed slot that say how far it lies past its home slot, in
/// a new table: an insert that would move an entry farther packs the
/// table again with more (keys crowding one home: tags are 32 bits, and
/// keys can be chosen to share one).
const DISP_BITS: u32 = 7;
/// Version 5: the bits of a packed slot's displacement.
const DISP_BITS_AT: usize = 104;
/// Bytes past a packed table's last slot, so that every slot reads as
/// one 16-byte load.
const TAIL: usize = 16;

/// Bits of the expiry in a slot's third word; the rest is the access word.
const EXPIRE_BITS: u32 = 44;
const EXPIRE_MASK: u64 = (1 << EXPIRE_BITS) - 1;
/// Bits of the access word kept per key.
pub const ACCESS_BITS: u32 = 64 - EXPIRE_BITS;

const OFF_BITS: u32 = 40;
const LEN_BITS: u32 = 23;
const TOMBSTONE_BIT: u64 = 1 << 63;

/// Errors opening an index partition.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: &'static str },
}

/// The digest of a key: `lo` picks the partition, `tag` is stored in the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash {
    pub lo: u64,
    pub tag: u64,
}

impl KeyHash {
    /// The key's hash. Its partition follows Redis Cluster's hash-tag
    /// rule: when the key holds `{…}` with something between the braces
    /// (the first `{` and the first `}` after it), only that part decides
    /// the partition, so that related keys can be kept together; the
    /// index still tells them apart by the whole key's hash.
    pub fn of(key: &[u8]) -> Self {
        let h = xxhash_rust::xxh3::xxh3_128(key);
        let lo = match hash_tag(key) {
            Some(tag) => xxhash_rust::xxh3::xxh3_64(tag),
            None => h as u64,
        };
        KeyHash {
            lo,
            tag: (h >> 64) as u64 & tag_mask(),
        }
    }

    /// The key's hash with the whole 64-bit tag, whatever [`tag_mask`]
    /// keeps: what a rebuild or a load tells keys apart by before the
    /// tables are written out with their short tags ([`write_out`]).
    pub fn full(key: &[u8]) -> Self {
        let h = xxhash_rust::xxh3::xxh3_128(key);
        KeyHash {
            tag: (h >> 64) as u64,
            ..Self::of(key)
        }
    }

    /// The partition, out of `n`, that owns this key.
    pub fn partition(&self, n: u32) -> u32 {
        fastrange(self.lo, n as u64) as u32
    }
}

/// The bits of a key's digest kept as its tag: the top [`TAG_BITS`], or
/// under the test switch `NVKV_TEST_TAG_BITS=N` (1 to 32) only the top
/// `N`, so that tests meet tag collisions everywhere. A tag is not the
/// key's whole digest: a match is resolved by the key stored in the
/// record (the partition's *candidates*, see [`Partition::promote`] and
/// [`Partition::insert_new`]).
pub fn tag_mask() -> u64 {
    static MASK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MASK.get_or_init(|| {
        let bits = match std::env::var("NVKV_TEST_TAG_BITS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            Some(bits @ 1..=TAG_BITS) => bits,
            _ => TAG_BITS,
        };
        !0u64 << (64 - bits)
    })
}

/// The hash tag of `key`, as Redis Cluster finds it: the bytes between
/// the first `{` and the first `}` after it, when there are some.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// The store a table belongs to: its uuid (a table of another store is
/// refused) and the bits a packed slot gives a record's offset, in
/// 16-byte units: as many as the store's capacity needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uuid: [u8; 16],
    pub offset_bits: u32,
}

impl Owner {
    /// The owner of the tables of a store of `capacity` bytes.
    pub fn new(uuid: [u8; 16], capacity: u64) -> Self {
        let units = capacity.div_ceil(16).max(2);
        Owner {
            uuid,
            offset_bits: (64 - (units - 1).leading_zeros()).min(OFF_BITS),
        }
    }
}

/// How a table lays out its slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// [`WIDE_SLOT`] bytes: the whole 64-bit tag, the record's place
    /// (`loc`, as [`Entry::pack`] packs it) and the expiry and access
    /// word. Tables built in memory, and files of version 3 or older.
    Wide,
    /// [`NARROW_SLOT`] bytes: the tag's top 32 bits, `loc` and the word.
    /// Files of version 4, read to be converted.
    Narrow,
    /// Version 5: the word, then `offset/16 | length/16 << o | tombstone
    /// << o + 23 | displacement << o + 24 | remainder << o + 24 + d` in as
    /// few bytes as hold them, `o` the store's offset bits and `d` the
    /// displacement's ([`DISP_BITS`], or more). The tag is not kept
    /// whole: its home slot is `fastrange(tag, slots)`, so a slot keeps
    /// how far it lies past its home and the tag's *remainder*, its low
    /// `rem_bits` (about 32 less the bits of the slot count: the tags of
    /// one home span fewer values than they do). From both the whole
    /// 32-bit tag comes back exactly ([`tag_of`]), so a table grows as
    /// before.
    Packed {
        off_bits: u32,
        rem_bits: u32,
        disp_bits: u32,
    },
}

impl Layout {
    /// The packed layout of a table of `slots` slots.
    fn packed(slots: u64, off_bits: u32) -> Self {
        Self::packed_with(slots, off_bits, DISP_BITS)
    }

    /// The packed layout of a table of `slots` slots whose entries may lie
    /// up to `2^disp_bits - 1` past their homes.
    fn packed_with(slots: u64, off_bits: u32, disp_bits: u32) -> Self {
        // The remainders of one home are below ceil(2^32 / slots).
        let span = (1u64 << TAG_BITS).div_ceil(slots.max(1));
        Layout::Packed {
            off_bits,
            rem_bits: 64 - span.leading_zeros(),
            disp_bits,
        }
    }

    /// The same layout with `more` bits of displacement.
    fn wider(self, more: u32) -> Self {
        match self {
            Layout::Packed {
                off_bits,
                rem_bits,
                disp_bits,
            } => Layout::Packed {
                off_bits,
                rem_bits,
                disp_bits: disp_bits + more,
            },
            other => other,
        }
    }

    /// Bytes of a slot.
    fn bytes(self) -> usize {
        match self {
            Layout::Wide => WIDE_SLOT,
            Layout::Narrow => NARROW_SLOT,
            Layout::Packed {
                off_bits,
                rem_bits,
                disp_bits,
            } => 8 + (off_bits + LEN_BITS + 1 + disp_bits + rem_bits).div_ceil(8) as usize,
        }
    }

    /// Bytes of the file (or memory) past the last slot.
    fn tail(self) -> usize {
        match self {
            Layout::Packed { .. } => TAIL,
            _ => 0,
        }
    }

    /// A packed slot's displacement and remainder, from its packed fields.
    fn place_of(self, x: u128) -> (u64, u64) {
        let Layout::Packed {
            off_bits,
            rem_bits,
            disp_bits,
        } = self
        else {
            unreachable!("a packed layout")
        };
        let x = x >> (off_bits + LEN_BITS + 1);
        let disp = x as u64 & ((1 << disp_bits) - 1);
        (disp, (x >> disp_bits) as u64 & ((1 << rem_bits) - 1))
    }

    /// Where the expiry and access word lies in a slot.
    fn word_at(self) -> usize {
        match self {
            Layout::Wide => 16,
            Layout::Narrow => 12,
            Layout::Packed { .. } => 0,
        }
    }
}

/// The packed fields of an entry with tag `tag` (its top 32 bits) and
/// place `loc` at slot `i` of a table of `slots` laid out as `layout`
/// (packed), whose home lies less than `2^disp_bits` before it.
fn pack(layout: Layout, slots: u64, i: u64, tag: u64, loc: u64) -> u128 {
    let Layout::Packed {
        off_bits,
        rem_bits,
        disp_bits,
    } = layout
    else {
        unreachable!("a packed layout")
    };
    debug_assert!(
        tag << TAG_BITS == 0,
        "a packed slot keeps a tag's top 32 bits"
    );
    let home = fastrange(tag, slots);
    let disp = if i >= home {
        i - home
    } else {
        i + slots - home
    };
    assert!(
        disp >> disp_bits == 0,
        "a packed slot lies too far from its home"
    );
    let rem = (tag >> (64 - TAG_BITS)) & ((1 << rem_bits) - 1);
    let off = loc & ((1 << OFF_BITS) - 1);
    debug_assert!(off < 1 << off_bits, "an offset past the store's capacity");
    let len = (loc >> OFF_BITS) & ((1 << LEN_BITS) - 1);
    off as u128
        | (len as u128) << off_bits
        | ((loc >> 63) as u128) << (off_bits + LEN_BITS)
        | (disp as u128) << (off_bits + LEN_BITS + 1)
        | (rem as u128) << (off_bits + LEN_BITS + 1 + disp_bits)
}

/// The 32-bit tag whose home is `home` in a table of `slots` and whose
/// low `rem_bits` are `rem`: the tags of one home lie in a range shorter
/// than `2^rem_bits` that starts at the first of them (`fastrange`
/// inverted), so one of them has those low bits. (A packed slot keeps
/// the low bits rather than the distance from that first tag, so that
/// neither a lookup nor a write divides.)
fn tag_of(home: u64, slots: u64, rem: u64, rem_bits: u32) -> u64 {
    // One 64-bit division (a scan makes one per slot): `home << 32` fits
    // while the table has at most 2^32 slots, 70 GiB of them.
    let first = match slots <= 1 << TAG_BITS {
        true => (home << TAG_BITS).div_ceil(slots),
        false => ((home as u128) << TAG_BITS).div_ceil(slots as u128) as u64,
    };
    first + (rem.wrapping_sub(first) & ((1 << rem_bits) - 1))
}

/// Maps a uniform 64-bit value onto `[0, n)` without division.
fn fastrange(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

/// Where a record lives on the device, and what the index knows about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Device offset of the record (a multiple of 16).
    pub offset: u64,
    /// Padded record length (a multiple of 16).
    pub len: u32,
    /// The record deletes the key (kept so compaction knows it is still needed).
    pub tombstone: bool,
    /// Expiry in ms since the Unix epoch, 0 = never.
    pub expire_ms: u64,
}

impl Entry {
    /// Largest offset a slot can hold.
    pub const MAX_OFFSET: u64 = ((1 << OFF_BITS) - 1) * 16;

    fn pack(&self) -> u64 {
        debug_assert!(self.offset % 16 == 0 && self.offset <= Self::MAX_OFFSET);
        debug_assert!(self.len % 16 == 0 && (self.len as u64 / 16) < (1 << LEN_BITS));
        let t = if self.tombstone { TOMBSTONE_BIT } else { 0 };
        (self.offset / 16) | ((self.len as u64 / 16) << OFF_BITS) | t
    }

    fn unpack(loc: u64, expire_ms: u64) -> Self {
        Entry {
            offset: (loc & ((1 << OFF_BITS) - 1)) * 16,
            len: (((loc >> OFF_BITS) & ((1 << LEN_BITS) - 1)) * 16) as u32,
            tombstone: loc & TOMBSTONE_BIT != 0,
            expire_ms,
        }
    }

    /// Whether the key is alive (not deleted, not expired) at `now_ms`.
    pub fn live(&self, now_ms: u64) -> bool {
        !self.tombstone && (self.expire_ms == 0 || self.expire_ms > now_ms)
    }

    /// A live entry whose expiry has passed.
    pub fn expired(&self, now_ms: u64) -> bool {
        !self.tombstone && self.expire_ms != 0 && self.expire_ms <= now_ms
    }

    /// The key expired or was evicted: the entry points at its last value's
    /// record, which is dead but still shadows older versions on the device.
    pub fn is_marker(&self) -> bool {
        self.tombstone && self.expire_ms != 0
    }

    /// A live key with a TTL (counted in INFO keyspace `expires=`).
    fn expiring(&self) -> bool {
        !self.tombstone && self.expire_ms != 0
    }
}

/// The largest expiry a slot keeps exactly (in the year 2527); later ones
/// are kept as this.
pub const MAX_EXPIRE_MS: u64 = EXPIRE_MASK;

/// The expiry as a slot keeps it: exact up to the year 2527, "far future"
/// beyond (the record keeps the exact value).
fn clamp_expiry(ms: u64) -> u64 {
    ms.min(EXPIRE_MASK)
}

/// What a partition header remembers across a clean shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Highest record sequence number the partition's shard had written.
    pub max_seq: u64,
    /// Highest segment generation opened by the store.
    pub max_gen: u64,
}

/// One mmapped partition table. Single-threaded: owned by one poller.
pub struct Partition {
    path: PathBuf,
    id: u32,
    owner: Owner,
    map: MmapMut,
    slots: u64,
    entries: u64,
    tombstones: u64,
    /// Live entries with an expiry (markers excluded).
    expiring: u64,
    max_load: f64,
    /// Whether a live entry may carry an expiry. False only when a whole
    /// sweep found none and none came since: the sweep then skips the
    /// table, which on a store without TTLs is every table.
    may_expire: bool,
    /// The table is being built in anonymous memory (a rebuild or a load):
    /// its file is written once, whole, by [`write_out`].
    in_memory: bool,
    /// The sweep pass under way started at slot 0 and has seen no live
    /// expiring entry, and none was inserted (or moved) since it started.
    pass_clean: bool,
    /// How the slots are laid out.
    layout: Layout,
    /// An entry may lie `2^DISP_BITS` or more past its home slot (a wide
    /// table, which cannot then be packed where it is).
    far: bool,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("path", &self.path)
            .field("slots", &self.slots)
            .field("entries", &self.entries)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Has the CPU bring the cache line of `byte` in ([`Partition::prefetch`]).
#[inline]
fn prefetch_line(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing into the program and never faults
    // (the address is a live reference's besides).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((byte as *const u8).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}

/// The slots of a table of `slots` that passed its load factor, grown by
/// a quarter: just grown, it is 0.72 full (0.9 / 1.25), and costs at most
/// 25 bytes per key in 18-byte slots (27.8 in 20-byte ones, where a
/// doubled table cost 44.4); its keys are placed again about four times as
/// often as by doubling, a table at a time (a partition is 1/256 of the
/// index).
fn grown(slots: u64) -> u64 {
    slots + slots / 4
}

/// Slots of a table sized for `expected` keys at the maximum load factor.
pub fn slots_for(expected: u64) -> u64 {
    ((expected as f64 / MAX_LOAD).ceil() as u64 + 1).max(64)
}

/// Bytes of a table of `slots` slots laid out as `layout`, header and tail
/// included (`None` past `u64`).
fn table_bytes(slots: u64, layout: Layout) -> Option<u64> {
    slots
        .checked_mul(layout.bytes() as u64)?
        .checked_add((HEADER + layout.tail()) as u64)
}

fn too_large(path: &Path) -> IndexError {
    IndexError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "index table too large"),
    }
}

/// Path of partition `id` under the store directory.
pub fn partition_path(dir: &Path, id: u32) -> PathBuf {
    dir.join("index").join(format!("part-{id:04}.idx"))
}

fn map_file(file: &File, path: &Path) -> Result<MmapMut, IndexError> {
    // SAFETY: index files are private to the store; the store directory is
    // locked (flock) by the one process that opens it, so nobody else
    // modifies or truncates the file while it is mapped.
    unsafe { MmapMut::map_mut(file) }.map_err(io_err(path))
}

/// Sizes `file` to `len` bytes with its blocks reserved: a full file system
/// shows here as an error, rather than as SIGBUS when a page of the mapping
/// is first written. A file system without preallocation gets a sparse file.
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(len) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "index file too large",
        ));
    };
    // SAFETY: preallocates blocks of a descriptor we own; no memory is shared.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, off) } {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl Partition {
    /// Creates an empty, dirty partition with room for `expected` keys.
    pub fn create(dir: &Path, id: u32, owner: Owner, expected: u64) -> Result<Self, IndexError> {
        let slots = slots_for(expected);
        let layout = Layout::packed(slots, owner.offset_bits);
        Self::create_at(&partition_path(dir, id), id, owner, slots, layout)
    }

    /// Bytes of a slot of this table.
    pub fn slot_size(&self) -> usize {
        self.layout.bytes()
    }

    /// The layout of this table's successor of `slots` slots: wide as
    /// this one, or packed (with this one's displacement bits, if packed).
    fn layout_for(&self, slots: u64) -> Layout {
        match self.layout {
            Layout::Wide => Layout::Wide,
            Layout::Packed { disp_bits, .. } => {
                Layout::packed_with(slots, self.owner.offset_bits, disp_bits)
            }
            Layout::Narrow => Layout::packed(slots, self.owner.offset_bits),
        }
    }

    /// An empty table in anonymous memory to rebuild this one into, as
    /// large as this one (its size when it was last used: the best guess
    /// of what the rebuild will put in it, short of reading the data).
    pub fn rebuild_in_memory(&self) -> Result<Self, IndexError> {
        Self::anon_at(
            &self.path,
            self.id,
            self.owner,
            self.slots.max(64),
            Layout::Wide,
        )
    }

    /// Creates an empty table of `slots` slots at `path`.
    fn create_at(
        path: &Path,
        id: u32,
        owner: Owner,
        slots: u64,
        layout: Layout,
    ) -> Result<Self, IndexError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err(path))?;
        let len = table_bytes(slots, layout).ok_or_else(|| too_large(path))?;
        allocate(&file, len).map_err(io_err(path))?;
        let map = map_file(&file, path)?;
        Ok(Self::empty(path, id, owner, map, slots, false, layout))
    }

    /// An empty, dirty table of `slots` slots over `map` (its file's, or
    /// anonymous memory: `in_memory`), laid out as `layout`.
    fn empty(
        path: &Path,
        id: u32,
        owner: Owner,
        map: MmapMut,
        slots: u64,
        in_memory: bool,
        layout: Layout,
    ) -> Self {
        let mut p = Partition {
            path: path.to_owned(),
            id,
            owner,
            map,
            slots,
            entries: 0,
            tombstones: 0,
            expiring: 0,
            max_load: MAX_LOAD,
            may_expire: false,
            pass_clean: false,
            in_memory,
            layout,
            far: false,
        };
        p.write_header(false, Checkpoint::default());
        p
    }

    /// Creates an empty wide table of `slots` slots (at least 64) in
    /// anonymous memory, for a rebuild or a load: its inserts fault in
    /// anonymous pages instead of write-faulting pages of a shared file
    /// mapping through the file system, and nothing is written back to the
    /// disk while it fills. [`write_out`] writes it to its file, with its
    /// tags shortened, sequentially, once; until then the file on disk is
    /// left as it was.
    pub fn create_in_memory(
        dir: &Path,
        id: u32,
        owner: Owner,
        slots: u64,
    ) -> Result<Self, IndexError> {
        Self::anon_at(
            &partition_path(dir, id),
            id,
            owner,
            slots.max(64),
            Layout::Wide,
        )
    }

    fn anon_at(
        path: &Path,
        id: u32,
        owner: Owner,
        slots: u64,
        layout: Layout,
    ) -> Result<Self, IndexError> {
        let len = table_bytes(slots, layout)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or_else(|| too_large(path))?;
        let map = MmapMut::map_anon(len).map_err(io_err(path))?;
        // Fewer TLB misses for the random inserts; only a hint.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Self::empty(path, id, owner, map, slots, true, layout))
    }

    /// Opens an existing partition. Returns the table and, when it was
    /// closed cleanly, the checkpoint it was closed at; a dirty table's
    /// contents must be rebuilt by the caller.
    pub fn open(
        dir: &Path,
        id: u32,
        owner: Owner,
    ) -> Result<(Self, Option<Checkpoint>), IndexError> {
        let path = partition_path(dir, id);
        let corrupt = |what| IndexError::Corrupt {
            path: path.clone(),
            what,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        if size < HEADER as u64 {
            return Err(corrupt("truncated header"));
        }
        let map = map_file(&file, &path)?;
        let h = &map[..HEADER];
        if &h[0..8] != MAGIC {
            return Err(corrupt("not an index partition (bad magic)"));
        }
        let version = le32(h, 8);
        if !(1..=VERSION).contains(&version) {
            return Err(corrupt("unsupported index version"));
        }
        if header_crc(h, version) != le32(h, CRC_AT) {
            return Err(corrupt("header checksum mismatch"));
        }
        if le32(h, 12) != id || h[16..32] != owner.uuid {
            return Err(corrupt("belongs to another store or partition"));
        }
        let slots = le64(h, 32);
        let layout = match version {
            VERSION if le32(h, OFFSET_BITS_AT) != owner.offset_bits => {
                return Err(corrupt("offset bits differ from the store's"));
            }
            VERSION => match le32(h, DISP_BITS_AT) {
                d @ 1..=32 if slots >= 64 => Layout::packed_with(slots, owner.offset_bits, d),
                _ => return Err(corrupt("bad displacement bits or slot count")),
            },
            NARROW_VERSION => Layout::Narrow,
            _ => Layout::Wide,
        };
        if slots == 0 || table_bytes(slots, layout) != Some(size) {
            return Err(corrupt("file size does not match its slot count"));
        }
        let clean = le32(h, 48) == 1;
        let checkpoint = Checkpoint {
            max_seq: le64(h, 56),
            max_gen: le64(h, 64),
        };
        let (entries, tombstones) = (le64(h, 40), le64(h, 72));
        let expiring = if version == 1 {
            0
        } else {
            le64(h, EXPIRING_AT)
        };
        if clean && (entries > slots || tombstones > entries || expiring > entries) {
            return Err(corrupt("more entries than slots"));
        }
        let mut p = Partition {
            path,
            id,
            owner,
            map,
            slots,
            entries,
            tombstones,
            expiring,
            max_load: MAX_LOAD,
            // Unknown until the first sweep has seen the whole table.
            may_expire: true,
            pass_clean: false,
            in_memory: false,
            layout,
            // Checked where it matters: a wide file is converted by
            // placing its entries again.
            far: false,
        };
        if !clean {
            // Its slots are stale: the caller rebuilds the index (into
            // new tables, see `create_in_memory`) or clears this one.
            // Left as they are, they are not written over page by page.
            p.entries = 0;
            p.tombstones = 0;
            p.expiring = 0;
            return Ok((p, None));
        }
        if version == 1 {
            p.convert_v1();
        }
        if version < VERSION {
            // The entries are placed again, their tags shortened (and the
            // runs linear probing left in insertion order, which a Robin
            // Hood probe would stop short in, put in order). Slots that
            // fail their checksum are left for the caller to find (the
            // index is then rebuilt from the device).
            if !p.slots_intact() {
                return Ok((p, Some(checkpoint)));
            }
            tracing::info!(
                partition = id,
                "index partition of version {version} ({}-byte slots): converted to version {VERSION} (packed slots of {} bytes)",
                layout.bytes(),
                Layout::packed(slots, owner.offset_bits).bytes()
            );
            let mut q = p.copy_to(p.slots)?;
            q.mark_clean(checkpoint).map_err(io_err(&q.path))?;
            return Ok((q, Some(checkpoint)));
        }
        // The start reads the whole table at once (its checksum, the
        // bounds of its entries): the kernel is asked for all of it now,
        // so that the reads of every table are at the disk together rather
        // than faulted in one readahead window at a time. A hint: nothing
        // waits for it.
        let _ = p.map.advise(memmap2::Advice::WillNeed);
        Ok((p, Some(checkpoint)))
    }

    /// Brings a clean version 1 table to version 2: counts the keys with a
    /// TTL, and keeps expiries the access bits would overlap as "far future".
    fn convert_v1(&mut self) {
        tracing::info!(
            partition = self.id,
            "index partition of version 1: converted to version 2"
        );
        self.expiring = 0;
        for i in 0..self.slots {
            if self.loc_at(i) == 0 {
                continue;
            }
            let a = self.at(i) + self.layout.word_at();
            let raw = le64(&self.map, a);
            let exp = clamp_expiry(raw);
            self.map[a..a + 8].copy_from_slice(&exp.to_le_bytes());
            self.expiring += self.entry_at(i).expiring() as u64;
        }
    }

    fn write_header(&mut self, clean: bool, cp: Checkpoint) {
        self.write_header_with(clean, cp, None);
    }

    /// Writes the header; `slots_crc` is the slots' checksum of a clean table.
    fn write_header_with(&mut self, clean: bool, cp: Checkpoint, slots_crc: Option<u32>) {
        let h = &mut self.map[..HEADER];
        h.fill(0);
        h[0..8].copy_from_slice(MAGIC);
        let version = match self.layout {
            Layout::Wide => WIDE_VERSION,
            Layout::Narrow => NARROW_VERSION,
            Layout::Packed {
                off_bits,
                disp_bits,
                ..
            } => {
                h[OFFSET_BITS_AT..OFFSET_BITS_AT + 4].copy_from_slice(&off_bits.to_le_bytes());
                h[DISP_BITS_AT..DISP_BITS_AT + 4].copy_from_slice(&disp_bits.to_le_bytes());
                VERSION
            }
        };
        h[8..12].copy_from_slice(&version.to_le_bytes());
        h[12..16].copy_from_slice(&self.id.to_le_bytes());
        h[16..32].copy_from_slice(&self.owner.uuid);
        h[32..40].copy_from_slice(&self.slots.to_le_bytes());
        h[40..48].copy_from_slice(&self.entries.to_le_bytes());
        h[48..52].copy_from_slice(&(clean as u32).to_le_bytes());
        h[56..64].copy_from_slice(&cp.max_seq.to_le_bytes());
        h[64..72].copy_from_slice(&cp.max_gen.to_le_bytes());
        h[72..80].copy_from_slice(&self.tombstones.to_le_bytes());
        h[EXPIRING_AT..EXPIRING_AT + 8].copy_from_slice(&self.expiring.to_le_bytes());
        if let Some(crc) = slots_crc {
            h[SLOTS_CRC_AT..SLOTS_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
            h[SLOTS_CRC_FLAG_AT..SLOTS_CRC_FLAG_AT + 4]
                .copy_from_slice(&SLOTS_CRC_SET.to_le_bytes());
        }
        let crc = header_crc(h, version);
        h[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Marks the table dirty on disk before the first change of a session.
    pub fn mark_dirty(&mut self) -> io::Result<()> {
        self.write_dirty();
        self.flush_header()
    }

    /// Writes the header of a table in use (dirty) into the mapping; it is
    /// on disk after [`Partition::flush_header`].
    pub fn write_dirty(&mut self) {
        debug_assert!(!self.in_memory, "a table in memory has no file to mark");
        self.write_header(false, Checkpoint::default());
    }

    /// Flushes the whole table, then marks it clean with `cp` and the
    /// checksum of its slots.
    pub fn mark_clean(&mut self, cp: Checkpoint) -> io::Result<()> {
        self.flush_slots()?;
        self.write_clean(cp);
        self.flush_header()
    }

    /// Writes the whole mapping (slots and header) to disk.
    pub fn flush_slots(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Writes the header of a closed table (clean, with `cp` and the
    /// checksum of its slots) into the mapping: only once its slots are on
    /// disk ([`Partition::flush_slots`]); it is on disk after
    /// [`Partition::flush_header`].
    pub fn write_clean(&mut self, cp: Checkpoint) {
        debug_assert!(!self.in_memory, "a table in memory is written by write_out");
        let crc = self.slots_crc();
        self.write_header_with(true, cp, Some(crc));
    }

    /// Writes the header's page to disk.
    pub fn flush_header(&self) -> io::Result<()> {
        self.map.flush_range(0, HEADER)
    }

    /// CRC32C of the slots.
    fn slots_crc(&self) -> u32 {
        crc32c::crc32c(&self.map[HEADER..self.bytes() as usize])
    }

    /// Whether the slots of a table opened clean are as they were closed:
    /// their checksum matches the one in the header (a table closed by a
    /// build that kept none passes). A flipped bit in a tag would lose a
    /// key without a trace, which no bounds check of the entries sees.
    pub fn slots_intact(&self) -> bool {
        let h = &self.map[..HEADER];
        le32(h, SLOTS_CRC_FLAG_AT) != SLOTS_CRC_SET || le32(h, SLOTS_CRC_AT) == self.slots_crc()
    }

    /// Empties the table (for a rebuild).
    pub fn clear(&mut self) {
        self.map[HEADER..].fill(0);
        self.entries = 0;
        self.tombstones = 0;
        self.expiring = 0;
        self.may_expire = false;
        self.pass_clean = false;
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Slots in use, tombstones included.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Keys that are not deleted (expired keys count until they are reaped).
    pub fn live_keys(&self) -> u64 {
        self.entries - self.tombstones
    }

    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Live keys with a TTL (expired ones count until they are reaped).
    pub fn expiring(&self) -> u64 {
        self.expiring
    }

    /// Bytes of the table file.
    pub fn bytes(&self) -> u64 {
        table_bytes(self.slots, self.layout).expect("a table's size fits")
    }

    fn at(&self, i: u64) -> usize {
        HEADER + i as usize * self.slot_size()
    }

    /// Makes every page of a table built in memory writable at once
    /// (`MADV_POPULATE_WRITE`) before its first insert: left to the
    /// inserts, a page's first lookup maps the zero page and its first
    /// insert copies it, and each copy flushes the TLB of every CPU the
    /// process runs on (a quarter of a rebuild's samples on 2 CPUs, most
    /// in the interrupts between them). An older kernel refuses it, and
    /// the pages fault in as before.
    pub fn populate(&self) {
        #[cfg(target_os = "linux")]
        if self.in_memory {
            let _ = self.map.advise(memmap2::Advice::PopulateWrite);
        }
    }

    /// The packed fields of slot `i` (a packed table's): its record's
    /// place, displacement and remainder, in the low bits.
    fn packed_at(&self, i: u64) -> u128 {
        let a = self.at(i) + 8;
        u128::from_le_bytes(self.map[a..a + 16].try_into().expect("16 bytes"))
    }

    /// The tag of slot `i` (a narrow or packed slot keeps its top 32 bits).
    fn tag_at(&self, i: u64) -> u64 {
        match self.layout {
            Layout::Wide => le64(&self.map, self.at(i)),
            Layout::Narrow => (le32(&self.map, self.at(i)) as u64) << 32,
            Layout::Packed { rem_bits, .. } => {
                let (disp, rem) = self.layout.place_of(self.packed_at(i));
                // Below the slot count in any table written whole.
                let disp = disp.min(self.slots - 1);
                let home = if i >= disp {
                    i - disp
                } else {
                    i + self.slots - disp
                };
                tag_of(home, self.slots, rem, rem_bits) << (64 - TAG_BITS)
            }
        }
    }

    /// The record's place of slot `i`, as [`Entry::pack`] packs it (0: the
    /// slot is empty).
    fn loc_at(&self, i: u64) -> u64 {
        match self.layout {
            Layout::Wide => le64(&self.map, self.at(i) + 8),
            Layout::Narrow => le64(&self.map, self.at(i) + 4),
            Layout::Packed { off_bits, .. } => {
                let x = self.packed_at(i) as u64;
                let off = x & ((1 << off_bits) - 1);
                let len = (x >> off_bits) & ((1 << LEN_BITS) - 1);
                let tomb = (x >> (off_bits + LEN_BITS)) & 1;
                off | len << OFF_BITS | tomb << 63
            }
        }
    }

    /// How far slot `i` (occupied) lies past its home slot.
    fn disp_at(&self, i: u64) -> u64 {
        match self.layout {
            Layout::Packed { .. } => self.layout.place_of(self.packed_at(i)).0,
            _ => self.dist(i, self.tag_at(i)),
        }
    }

    /// The farthest an entry may lie past its home slot.
    fn max_disp(&self) -> u64 {
        match self.layout {
            Layout::Packed { disp_bits, .. } => (1 << disp_bits) - 1,
            _ => u64::MAX,
        }
    }

    /// What a probe compares, at `tag`'s home, for `tag`: a packed slot's
    /// remainder, or the tag.
    fn probe_key(&self, tag: u64) -> u64 {
        match self.layout {
            Layout::Packed { rem_bits, .. } => (tag >> (64 - TAG_BITS)) & ((1 << rem_bits) - 1),
            _ => tag,
        }
    }

    /// Slot `i` for a probe: `None` when empty, else how far it lies past
    /// its home and its [`Self::probe_key`].
    fn probe_at(&self, i: u64) -> Option<(u64, u64)> {
        match self.layout {
            Layout::Packed { off_bits, .. } => {
                let x = self.packed_at(i);
                if x & ((1u128 << (off_bits + LEN_BITS + 1)) - 1) == 0 {
                    return None;
                }
                Some(self.layout.place_of(x))
            }
            _ => match self.loc_at(i) {
                0 => None,
                _ => {
                    let t = self.tag_at(i);
                    Some((self.dist(i, t), t))
                }
            },
        }
    }

    /// The third word of a slot: expiry and access bits.
    fn word_at(&self, i: u64) -> u64 {
        le64(&self.map, self.at(i) + self.layout.word_at())
    }

    fn expire_at(&self, i: u64) -> u64 {
        self.word_at(i) & EXPIRE_MASK
    }

    fn entry_at(&self, i: u64) -> Entry {
        Entry::unpack(self.loc_at(i), self.expire_at(i))
    }

    /// Writes slot `i` (`loc` 0: empties it). A packed slot must lie no
    /// farther past the home of `tag` than [`Self::max_disp`].
    fn set(&mut self, i: u64, tag: u64, loc: u64, word: u64) {
        let a = self.at(i);
        let bytes = self.layout.bytes();
        match self.layout {
            Layout::Wide => {
                let slot = &mut self.map[a..a + bytes];
                slot[..8].copy_from_slice(&tag.to_le_bytes());
                slot[8..16].copy_from_slice(&loc.to_le_bytes());
                slot[16..24].copy_from_slice(&word.to_le_bytes());
            }
            Layout::Narrow => unreachable!("a version 4 table is only read"),
            Layout::Packed { .. } if loc == 0 => self.map[a..a + bytes].fill(0),
            Layout::Packed { .. } => {
                let x = pack(self.layout, self.slots, i, tag, loc);
                let slot = &mut self.map[a..a + bytes];
                slot[..8].copy_from_slice(&word.to_le_bytes());
                slot[8..].copy_from_slice(&x.to_le_bytes()[..bytes - 8]);
            }
        }
    }

    fn set_word(&mut self, i: u64, word: u64) {
        let a = self.at(i) + self.layout.word_at();
        self.map[a..a + 8].copy_from_slice(&word.to_le_bytes());
    }

    /// The slot where a probe for `tag` starts. A wide table places its
    /// entries by their short tags' homes (the bits [`tag_mask`] keeps),
    /// so that shortening the tags moves none of them
    /// ([`Partition::shorten_in_place`]).
    fn home(&self, tag: u64) -> u64 {
        let tag = match self.layout {
            Layout::Wide => tag & tag_mask(),
            _ => tag,
        };
        fastrange(tag, self.slots)
    }

    fn next(&self, i: u64) -> u64 {
        if i + 1 == self.slots {
            0
        } else {
            i + 1
        }
    }

    /// How far slot `i` lies past the home slot of `tag` (wrapping).
    fn dist(&self, i: u64, tag: u64) -> u64 {
        let h = self.home(tag);
        if i >= h {
            i - h
        } else {
            i + self.slots - h
        }
    }

    /// The slot holding `tag`, or the slot where it would go (an empty
    /// one, or the first one of a key whose home lies after `tag`'s).
    /// Robin Hood order keeps each run of occupied slots sorted by home
    /// slot, so a probe stops at the first entry closer to its home than
    /// the probe is to `tag`'s: a miss costs about as much as a hit.
    fn find(&self, tag: u64) -> (u64, bool) {
        let mut i = self.home(tag);
        let want = self.probe_key(tag);
        let mut d = 0;
        loop {
            let Some((disp, key)) = self.probe_at(i) else {
                return (i, false);
            };
            if d > self.slots {
                // Only in a table damaged since it was checked.
                return (i, false);
            }
            if disp == d && key == want {
                return (i, true);
            }
            if disp < d {
                return (i, false);
            }
            i = self.next(i);
            d += 1;
        }
    }

    /// Puts a new entry at slot `i` (as [`Self::find`] returned it),
    /// moving the entries from `i` to the next empty slot one slot on.
    /// Changes nothing and returns false when that would move an entry
    /// (or put the new one) past [`Self::max_disp`]: the table must be
    /// packed again with more bits of displacement.
    #[must_use]
    fn place(&mut self, i: u64, tag: u64, loc: u64, word: u64) -> bool {
        let max = self.max_disp();
        if max != u64::MAX && self.dist(i, tag) > max {
            return false;
        }
        let mut end = i;
        while self.loc_at(end) != 0 {
            if max != u64::MAX && self.disp_at(end) >= max {
                return false;
            }
            end = self.next(end);
        }
        // The entries from `i` on lie by home at or after `tag`'s: none
        // lies farther from its home than `end` from `tag`'s.
        self.far |= self.dist(end, tag) >> DISP_BITS != 0;
        let mut j = end;
        while j != i {
            let from = if j == 0 { self.slots - 1 } else { j - 1 };
            // An entry moved from the last slot to the first may pass
            // behind the sweep's cursor.
            self.pass_clean &= !(j == 0 && self.word_at(from) & EXPIRE_MASK != 0);
            self.move_slot(from, j);
            j = from;
        }
        self.set(i, tag, loc, word);
        true
    }

    /// Moves the entry of slot `from` to slot `to`, the next slot or the
    /// one before: its displacement one more, or one less.
    fn move_slot(&mut self, from: u64, to: u64) {
        let (a, b, n) = (self.at(from), self.at(to), self.layout.bytes());
        match self.layout {
            Layout::Packed { off_bits, .. } => {
                let one = 1u128 << (off_bits + LEN_BITS + 1);
                let x = self.packed_at(from);
                let x = if to == self.next(from) {
                    x + one
                } else {
                    x - one
                };
                self.map.copy_within(a..a + 8, b);
                self.map[b + 8..b + n].copy_from_slice(&x.to_le_bytes()[..n - 8]);
            }
            _ => self.map.copy_within(a..a + n, b),
        }
    }

    /// Asks the CPU to bring the cache line of `h`'s home slot in, where
    /// a probe for it starts: a caller about to insert many keys (a full
    /// copy's batch) names them a few keys ahead, so that their probes do
    /// not wait for memory one after another. A hint only: it changes
    /// nothing, and costs nothing where the CPU has no such instruction.
    pub fn prefetch(&self, h: &KeyHash) {
        let at = self.at(self.home(h.tag));
        prefetch_line(&self.map[at]);
    }

    pub fn get(&self, h: &KeyHash) -> Option<Entry> {
        self.get_tag(h.tag)
    }

    /// The entry of the key with tag `tag`.
    pub fn get_tag(&self, tag: u64) -> Option<Entry> {
        match self.find(tag) {
            (i, true) => Some(self.entry_at(i)),
            _ => None,
        }
    }

    /// Inserts or replaces the entry of `h`; returns the previous one.
    /// The entry replaced is the first of the tag's candidates (a tag is
    /// short): the caller made it the key's
    /// own ([`Self::promote`]) or knows the key is new ([`Self::insert_new`]).
    pub fn insert(&mut self, h: &KeyHash, e: Entry) -> Result<Option<Entry>, IndexError> {
        self.insert_with(h, e, true)
    }

    /// Inserts an entry for a key that has none, beside the entries of
    /// other keys with the same tag, first among them (so that what follows
    /// in the same turn, by tag, finds it).
    pub fn insert_new(&mut self, h: &KeyHash, e: Entry) -> Result<Option<Entry>, IndexError> {
        self.insert_with(h, e, false)
    }

    fn insert_with(
        &mut self,
        h: &KeyHash,
        e: Entry,
        replace: bool,
    ) -> Result<Option<Entry>, IndexError> {
        let (i, found) = self.find(h.tag);
        // Placed at the first candidate's slot, the new entry is in Robin
        // Hood order: the entries it pushes on share its home or lie
        // after it.
        let found = found && replace;
        if !found && self.entries + 1 >= self.slots {
            // A table that could not grow past its load factor (its file
            // system full, its directory gone) is full: a new key would
            // leave no empty slot, and a probe would never end.
            self.grow()?;
            return self.insert_with(h, e, replace);
        }
        let old = found.then(|| self.entry_at(i));
        if found {
            // The access bits stay with the key through a replacement.
            let access = self.word_at(i) & !EXPIRE_MASK;
            self.set(i, h.tag, e.pack(), clamp_expiry(e.expire_ms) | access);
        } else if !self.place(i, h.tag, e.pack(), clamp_expiry(e.expire_ms)) {
            // Packed again as large, its slots saying farther.
            self.relayout(self.slots, self.wider(self.layout))?;
            return self.insert_with(h, e, replace);
        }
        if e.expire_ms != 0 && !e.tombstone {
            self.may_expire = true;
            self.pass_clean = false;
        }
        self.expiring =
            self.expiring + e.expiring() as u64 - old.is_some_and(|o| o.expiring()) as u64;
        match old {
            Some(o) => {
                self.tombstones = self.tombstones + e.tombstone as u64 - o.tombstone as u64;
            }
            None => {
                self.entries += 1;
                self.tombstones += e.tombstone as u64;
                if self.entries as f64 > self.slots as f64 * self.max_load {
                    self.grow()?;
                }
            }
        }
        Ok(old)
    }

    /// The slots holding `tag`, in probe order: the tag's candidates
    /// (with short tags, the entries of every key sharing it).
    fn candidates(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        let mut i = self.home(tag);
        let want = self.probe_key(tag);
        let mut d = 0;
        std::iter::from_fn(move || loop {
            if d > self.slots {
                return None;
            }
            let (disp, key) = self.probe_at(i)?;
            let hit = disp == d && key == want;
            if !hit && disp < d {
                return None;
            }
            let at = i;
            i = self.next(i);
            d += 1;
            if hit {
                return Some(at);
            }
        })
    }

    /// The entries of `tag`, in probe order.
    pub fn candidate_entries(&self, tag: u64) -> impl Iterator<Item = Entry> + '_ {
        self.candidates(tag).map(|i| self.entry_at(i))
    }

    /// The entry of `tag` pointing at `offset`.
    pub fn get_at(&self, tag: u64, offset: u64) -> Option<Entry> {
        self.candidate_entries(tag).find(|e| e.offset == offset)
    }

    /// Makes the entry of `tag` pointing at `offset` the first of its
    /// tag's candidates (it is a key's own, read and compared), so that
    /// what acts by tag ([`Self::insert`], [`Self::remove`],
    /// [`Self::mark_gone`], the access bits) acts on it. Entries with one
    /// tag share one home slot: swapping two keeps Robin Hood order.
    /// Whether there is such an entry.
    pub fn promote(&mut self, tag: u64, offset: u64) -> bool {
        let (first, at) = {
            let mut slots = self.candidates(tag);
            let Some(first) = slots.next() else {
                return false;
            };
            if Entry::unpack(self.loc_at(first), 0).offset == offset {
                return true;
            }
            match slots.find(|&i| Entry::unpack(self.loc_at(i), 0).offset == offset) {
                Some(at) => (first, at),
                None => return false,
            }
        };
        let (a, b) = (
            (self.loc_at(first), self.word_at(first)),
            (self.loc_at(at), self.word_at(at)),
        );
        // Either may move behind the sweep's cursor.
        self.pass_clean &= a.1 & EXPIRE_MASK == 0 && b.1 & EXPIRE_MASK == 0;
        self.set(first, tag, b.0, b.1);
        self.set(at, tag, a.0, a.1);
        true
    }

    /// Replaces the entry of `h` pointing at `offset` with `e`; returns it
    /// (`None`, and nothing changed, when there is none).
    pub fn replace_at(
        &mut self,
        h: &KeyHash,
        offset: u64,
        e: Entry,
    ) -> Result<Option<Entry>, IndexError> {
        if !self.promote(h.tag, offset) {
            return Ok(None);
        }
        self.insert(h, e)
    }

    /// Removes the entry of `h` pointing at `offset`; returns it.
    pub fn remove_at(&mut self, h: &KeyHash, offset: u64) -> Option<Entry> {
        if !self.promote(h.tag, offset) {
            return None;
        }
        self.remove(h)
    }

    /// Turns the live entry of `tag` pointing at `offset` into a marker,
    /// as [`Self::mark_gone`].
    pub fn mark_gone_at(&mut self, tag: u64, offset: u64) -> Option<Entry> {
        if !self.promote(tag, offset) {
            return None;
        }
        self.mark_gone(tag)
    }

    /// Makes a wide table built in memory (by a rebuild or a load, with
    /// whole tags) a packed one, in its own memory, ready to be written
    /// out: its tags keep only the bits of [`tag_mask`]. Its entries lie
    /// by their short tags' homes already ([`Partition::home`]), so each
    /// keeps its slot, in Robin Hood order (the keys whose tags become one
    /// share a home, and are that tag's candidates), and packed slot `i`
    /// is written over wide slots already read: its bytes end before wide
    /// slot `i`'s 24 do. (A copy placed again in a new table doubled the
    /// memory a rebuild touches, each new page a fault and a zeroing:
    /// most of a 100 M rebuild's write-out.) Past the packed slots and
    /// their tail the memory is unused until the table is mapped from its
    /// file. A table with an entry too far from its home to be packed
    /// with [`DISP_BITS`] is copied into a table of wider slots instead.
    fn shorten(&mut self) -> Result<(), IndexError> {
        debug_assert!(self.layout == Layout::Wide && self.in_memory);
        if self.far {
            *self = self.copy_to(self.slots)?;
            return Ok(());
        }
        let packed = Layout::packed(self.slots, self.owner.offset_bits);
        let (mask, n) = (tag_mask(), packed.bytes());
        for i in 0..self.slots {
            let a = HEADER + i as usize * n;
            match self.loc_at(i) {
                0 => self.map[a..a + n].fill(0),
                loc => {
                    let word = self.word_at(i);
                    let x = pack(packed, self.slots, i, self.tag_at(i) & mask, loc);
                    self.map[a..a + 8].copy_from_slice(&word.to_le_bytes());
                    self.map[a + 8..a + n].copy_from_slice(&x.to_le_bytes()[..n - 8]);
                }
            }
        }
        let end = HEADER + self.slots as usize * n;
        self.map[end..end + TAIL].fill(0);
        self.layout = packed;
        Ok(())
    }

    /// Removes the entry of `h`; returns it.
    pub fn remove(&mut self, h: &KeyHash) -> Option<Entry> {
        let (mut i, found) = self.find(h.tag);
        if !found {
            return None;
        }
        let old = self.entry_at(i);
        self.entries -= 1;
        self.tombstones -= old.tombstone as u64;
        self.expiring -= old.expiring() as u64;
        // Backward-shift deletion: the rest of the run moves back one slot,
        // up to an empty slot or an entry in its home slot.
        let mut j = self.next(i);
        while self.loc_at(j) != 0 && self.disp_at(j) != 0 {
            // The entry moves back, maybe behind the sweep's cursor.
            self.pass_clean &= self.word_at(j) & EXPIRE_MASK == 0;
            self.move_slot(j, i);
            i = j;
            j = self.next(j);
        }
        self.set(i, 0, 0, 0);
        Some(old)
    }

    /// Whether a live entry may carry an expiry (see [`Self::reap_expired`]).
    pub fn may_expire(&self) -> bool {
        self.may_expire
    }

    /// Marks expired entries among up to `count` slots from `*cursor` as
    /// markers (their records act as tombstones until compaction), calling
    /// `reaped` with each one as it was; the returned sweep says how many
    /// it marked and what TTLs it saw left. The cursor stops at `slots()`,
    /// the end of the table. A pass from slot 0 to the end that finds no
    /// live expiring entry, with none inserted meanwhile, clears
    /// [`Self::may_expire`] until one is.
    pub fn reap_expired(
        &mut self,
        cursor: &mut u64,
        count: u64,
        now_ms: u64,
        reaped: &mut dyn FnMut(Entry),
    ) -> Sweep {
        if *cursor == 0 {
            self.pass_clean = true;
        }
        let mut sweep = Sweep::default();
        let end = cursor.saturating_add(count).min(self.slots);
        while *cursor < end {
            let i = *cursor;
            *cursor += 1;
            let loc = self.loc_at(i);
            let exp = self.expire_at(i);
            if loc != 0 && loc & TOMBSTONE_BIT == 0 && exp != 0 {
                if exp <= now_ms {
                    reaped(self.entry_at(i));
                    let (tag, word) = (self.tag_at(i), self.word_at(i));
                    self.set(i, tag, loc | TOMBSTONE_BIT, word);
                    self.tombstones += 1;
                    self.expiring -= 1;
                    sweep.reaped += 1;
                } else {
                    self.pass_clean = false;
                    sweep.ttl_seen += 1;
                    sweep.ttl_sum_ms += exp - now_ms;
                }
            }
        }
        if *cursor == self.slots && self.pass_clean {
            self.may_expire = false;
        }
        sweep
    }

    /// Turns the live entry of `tag` into a marker (the key expired or was
    /// evicted); returns the entry as it was.
    pub fn mark_gone(&mut self, tag: u64) -> Option<Entry> {
        let (i, found) = self.find(tag);
        if !found {
            return None;
        }
        let old = self.entry_at(i);
        if old.tombstone {
            return None;
        }
        // A marker has an expiry: a key without one gets "long ago".
        let word = (self.word_at(i) & !EXPIRE_MASK) | old.expire_ms.max(1);
        self.set(i, tag, old.pack() | TOMBSTONE_BIT, word);
        self.tombstones += 1;
        self.expiring -= old.expiring() as u64;
        Some(old)
    }

    /// The access bits of `tag`'s entry.
    pub fn access(&self, tag: u64) -> Option<u32> {
        match self.find(tag) {
            (i, true) => Some((self.word_at(i) >> EXPIRE_BITS) as u32),
            _ => None,
        }
    }

    /// Replaces the access bits of `tag`'s entry with `f` of them; writes
    /// the slot only when they change.
    pub fn update_access(&mut self, tag: u64, f: impl FnOnce(u32) -> u32) {
        if let (i, true) = self.find(tag) {
            let word = self.word_at(i);
            let old = (word >> EXPIRE_BITS) as u32;
            let new = f(old) & ((1 << ACCESS_BITS) - 1);
            if new != old {
                self.set_word(i, (word & EXPIRE_MASK) | (new as u64) << EXPIRE_BITS);
            }
        }
    }

    /// The first live entry at or after slot `from` (wrapping) within
    /// `scan` slots that `want` accepts, with its tag and access bits: a
    /// random sample of the table for eviction.
    pub fn sample(
        &self,
        from: u64,
        scan: u64,
        want: impl Fn(&Entry) -> bool,
    ) -> Option<(u64, Entry, u32)> {
        let mut i = from % self.slots;
        for _ in 0..scan.min(self.slots) {
            if self.loc_at(i) != 0 {
                let e = self.entry_at(i);
                if !e.tombstone && want(&e) {
                    return Some((self.tag_at(i), e, (self.word_at(i) >> EXPIRE_BITS) as u32));
                }
            }
            i = if i + 1 == self.slots { 0 } else { i + 1 };
        }
        None
    }

    /// Checks the table's order: every run of occupied slots is sorted by
    /// home slot (Robin Hood order: a slot is at most one farther from
    /// its home than the slot before it, and a run starts at its first
    /// entry's home), and each tag is found where it is. A table whose
    /// order is broken would miss keys it holds.
    pub fn check_order(&self) -> Result<(), String> {
        let mut prev: Option<u64> = self
            .slots
            .checked_sub(1)
            .filter(|&l| self.loc_at(l) != 0)
            .map(|l| self.dist(l, self.tag_at(l)));
        for i in 0..self.slots {
            if self.loc_at(i) == 0 {
                prev = None;
                continue;
            }
            let tag = self.tag_at(i);
            let d = self.dist(i, tag);
            if d > prev.map_or(0, |p| p + 1) {
                return Err(format!(
                    "slot {i} lies {d} slots past its home, out of Robin Hood order"
                ));
            }
            if !self.candidates(tag).any(|j| j == i) {
                return Err(format!("slot {i} holds a tag found elsewhere"));
            }
            prev = Some(d);
        }
        Ok(())
    }

    /// Every entry in the table, without its tag (which a packed slot
    /// keeps only as home and remainder: the checks and counts of a start
    /// read 100 M entries, and need no tags).
    pub fn iter_entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (0..self.slots)
            .filter(|&i| self.loc_at(i) != 0)
            .map(|i| self.entry_at(i))
    }

    /// Every (tag, entry) in the table.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Entry)> + '_ {
        (0..self.slots)
            .filter(|&i| self.loc_at(i) != 0)
            .map(|i| (self.tag_at(i), self.entry_at(i)))
    }

    // Key iteration (SCAN, KEYS): by tag order, which growth and
    // backward-shift deletion never change.

    /// Appends to `out` every entry whose tag lies in `[from, to)` and
    /// returns `to`: the first tag of a home slot boundary (rounded up to a
    /// multiple of `1 << grain`) past at least `count` entries from `from`,
    /// or `None` when the step reached the end of the tag space (every
    /// entry with a tag at or after `from` was appended). A slot's home is
    /// `fastrange(tag, slots)`, monotone in the tag, so a tag range is a
    /// range of home slots whatever the table's size: a key whose tag is
    /// past `to` is found by a later step even if the table grew or
    /// entries shifted back meanwhile.
    pub fn scan_tags(
        &self,
        from: u64,
        count: usize,
        grain: u32,
        out: &mut Vec<(u64, Entry)>,
    ) -> Option<u64> {
        let first = out.len();
        if self.entries == 0 {
            return None;
        }
        let start = self.home(from);
        let mut i = start;
        let mut to = None;
        // Slots whose home is below `i` can sit at `i` and after; and a
        // home's run may continue past `i`: every candidate is checked by
        // tag at the end.
        while i < self.slots {
            if self.loc_at(i) != 0 && self.tag_at(i) >= from {
                out.push((self.tag_at(i), self.entry_at(i)));
            }
            i += 1;
            if out.len() - first >= count && i < self.slots {
                // The first tag whose home is `i`, rounded up to the grain.
                let home_start = ((i as u128) << 64).div_ceil(self.slots as u128);
                let g = 1u128 << grain;
                let t = home_start.div_ceil(g) * g;
                if t < 1 << 64 {
                    to = Some(t as u64);
                    break;
                }
            }
        }
        // The runs that reach the last slot visited go on (wrapping at the
        // end of the table) until an empty slot, or a slot visited already.
        let mut j = if i == self.slots { 0 } else { i };
        while j != start && self.loc_at(j) != 0 {
            out.push((self.tag_at(j), self.entry_at(j)));
            j = if j + 1 == self.slots { 0 } else { j + 1 };
        }
        let mut k = first;
        for n in first..out.len() {
            let tag = out[n].0;
            if tag >= from && to.is_none_or(|end| tag < end) {
                out[k] = out[n];
                k += 1;
            }
        }
        out.truncate(k);
        to
    }

    /// Grows the table by a quarter ([`grown`]). The grown table is built
    /// in anonymous memory; a table on its file then grows in place: the
    /// file is extended and the new table written over it. (A new file
    /// renamed over the old one at each growth cost the file system an
    /// inode each time: a sixth of a replica's poller while a full copy
    /// filled an empty index.) A table that changes is dirty on disk, so a
    /// crash half-way leaves a dirty file, which the next start rebuilds as
    /// any dirty table.
    ///
    /// A table built in memory by a rebuild or a load doubles: it is
    /// sized from what the table held before, or from the load's count,
    /// and grows only when that was short, where placing every key again
    /// four times instead of twice would slow the rebuild.
    fn grow(&mut self) -> Result<(), IndexError> {
        let slots = match self.in_memory {
            true => self.slots * 2,
            false => grown(self.slots),
        };
        self.grow_to(slots)
    }

    /// Makes room for `entries` keys at once, so that inserting them
    /// grows the table no more (a replica told how many keys its full
    /// copy holds). A table with room enough stays as it is.
    pub fn reserve(&mut self, entries: u64) -> Result<(), IndexError> {
        let slots = slots_for(entries);
        if slots > self.slots {
            self.grow_to(slots)?;
        }
        Ok(())
    }

    /// Grows the table to `slots` slots, as [`Partition::grow`] says.
    fn grow_to(&mut self, slots: u64) -> Result<(), IndexError> {
        self.relayout(slots, self.layout_for(slots))
    }

    /// Places every entry again in a table of `slots` slots laid out as
    /// `layout` (with more displacement bits, if an entry would lie too
    /// far from its home), as [`Partition::grow`] says.
    fn relayout(&mut self, slots: u64, mut layout: Layout) -> Result<(), IndexError> {
        use std::os::unix::fs::FileExt;
        let mut to = loop {
            let mut to = Self::anon_at(&self.path, self.id, self.owner, slots, layout)?;
            if self.place_all(&mut to) {
                break to;
            }
            layout = self.wider(layout);
        };
        if !self.in_memory {
            let path = &self.path;
            let file =
                (OpenOptions::new().read(true).write(true).open(path)).map_err(io_err(path))?;
            let len = to.map.len() as u64;
            allocate(&file, len).map_err(io_err(path))?;
            // A packed table's slots narrow as it grows: never shorter
            // than before, but its file is exactly its size.
            file.set_len(len).map_err(io_err(path))?;
            file.write_all_at(&to.map, 0).map_err(io_err(path))?;
            // The pages just written are in the page cache: mapping them
            // reads nothing.
            to.map = map_file(&file, path)?;
            to.in_memory = false;
        }
        *self = to;
        Ok(())
    }

    /// Places every entry, in Robin Hood order and with its tag shortened,
    /// in a new dirty packed table of `slots` slots (with more bits of
    /// displacement, if an entry would lie too far from its home) that
    /// replaces this one's file (renamed over it once whole: a clean table
    /// converted to a newer version stays on disk as it was until then).
    fn copy_to(&self, slots: u64) -> Result<Partition, IndexError> {
        let tmp = self.path.with_extension("idx.grow");
        let mut layout = Layout::packed(slots, self.owner.offset_bits);
        let mut to = loop {
            let mut to = if self.in_memory {
                Self::anon_at(&self.path, self.id, self.owner, slots, layout)?
            } else {
                Self::create_at(&tmp, self.id, self.owner, slots, layout)?
            };
            if self.place_all(&mut to) {
                break to;
            }
            layout = self.wider(layout);
        };
        if !self.in_memory {
            std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
            to.path = self.path.clone();
        }
        Ok(to)
    }

    /// Places every entry of this table in the empty table `to`, with the
    /// counts; into a packed table, with the tags [`tag_mask`] keeps (the
    /// entries of keys whose tags become one stay side by side, as
    /// candidates of that tag). False when an entry would lie too far
    /// from its home in `to`, which must then be larger.
    #[must_use]
    fn place_all(&self, to: &mut Partition) -> bool {
        to.populate();
        let mask = match to.layout {
            Layout::Wide => !0,
            _ => tag_mask(),
        };
        for i in 0..self.slots {
            let loc = self.loc_at(i);
            if loc != 0 {
                let tag = self.tag_at(i) & mask;
                let (j, _) = to.find(tag);
                if !to.place(j, tag, loc, self.word_at(i)) {
                    return false;
                }
            }
        }
        to.entries = self.entries;
        to.tombstones = self.tombstones;
        to.expiring = self.expiring;
        // The entries moved: a pass under way must start over.
        to.may_expire = self.may_expire;
        true
    }

    /// `layout` with two more bits of displacement, for entries that
    /// would lie farther from their homes than it says (keys crowding a
    /// home, or an unlucky run): rare enough to say in the log.
    fn wider(&self, layout: Layout) -> Layout {
        let wider = layout.wider(2);
        if let Layout::Packed { disp_bits, .. } = wider {
            tracing::info!(
                partition = self.id,
                "index partition: an entry would lie {} or more slots past its home: \
                 slots packed again with {disp_bits} bits of displacement",
                1u64 << (disp_bits - 2)
            );
        }
        wider
    }

    /// Whether the table is still being built in anonymous memory.
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }
}

/// How many threads [`flush_together`] flushes with at most.
const FLUSH_THREADS: usize = 16;

/// Flushes the tables `parts` (`Flush::Slots`: whole, `Flush::Headers`:
/// their headers' pages) from several threads at once, and returns the
/// first error. One after the other, each flush of a changed page is a
/// synchronous write and a cache flush of the device, and a slow one (a
/// journal commit, a busy disk) is paid once per table: 256 times over
/// when a server marks its index dirty at start or clean at shutdown. At
/// once, the file system and the block layer merge them.
pub fn flush_together(parts: &[&Partition], what: Flush) -> io::Result<()> {
    let flush = |p: &Partition| match what {
        Flush::Slots => p.flush_slots(),
        Flush::Headers => p.flush_header(),
    };
    if parts.len() <= 1 {
        return parts.iter().try_for_each(|p| flush(p));
    }
    let per = parts.len().div_ceil(FLUSH_THREADS);
    std::thread::scope(|s| {
        let threads: Vec<_> = parts
            .chunks(per)
            .map(|chunk| s.spawn(move || chunk.iter().try_for_each(|p| flush(p))))
            .collect();
        // The scope joins every thread; the first error is returned.
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("index flush thread"))
    })
}

/// What [`flush_together`] writes of each table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    Slots,
    Headers,
}

/// Inserts gathered by partition, and made a partition's share at a time
/// in tag order. One at a time in log order, the inserts of a rebuild or a
/// load each land on a random slot of a large table: a cache and TLB miss
/// per record, about half of a rebuild's time. A slot's home is monotone
/// in its tag whatever the table's size, so inserts sorted by tag walk
/// each table from front to back. A partition's inserts are made once
/// `cap / partitions` of them wait, each vector sized for that once (the
/// log comes shard by shard: a batch of `cap` shared out among all the
/// partitions grew a few vectors to the whole batch, each new page a
/// fault), in the order of the tag's top [`ORDER_BITS`] bits (enough to
/// walk a table of 2^12 runs or fewer in order), made by one counting pass
/// (a comparison sort was a sixth of a rebuild's samples). The pass is
/// stable: the records of one key keep their order, and the later one
/// wins as it would have.
pub struct Batch {
    by_part: Vec<Vec<(KeyHash, Entry)>>,
    /// A partition's share in order, and the counts that place it.
    sorted: Vec<(KeyHash, Entry)>,
    order: Vec<u32>,
    share: usize,
    /// The partitions whose tables were made writable.
    populated: Vec<bool>,
}

/// How many inserts ahead a [`Batch`] fetches the home slot.
const PREFETCH_AHEAD: usize = 8;

/// Top bits of a tag that order a [`Batch`]'s inserts.
const ORDER_BITS: u32 = 12;

impl Batch {
    /// A batch for the tables `mine` picks of `partitions`, of `cap`
    /// entries in all for all of them.
    pub fn new(partitions: u32, cap: usize, mine: impl Fn(usize) -> bool) -> Self {
        let share = (cap / partitions.max(1) as usize).max(1);
        Batch {
            by_part: (0..partitions as usize)
                .map(|pid| Vec::with_capacity(if mine(pid) { share } else { 0 }))
                .collect(),
            sorted: Vec::with_capacity(share),
            order: vec![0; 1 << ORDER_BITS],
            share,
            populated: vec![false; partitions as usize],
        }
    }

    /// Adds an insert into `parts[pid]`; inserts the partition's share
    /// once it is whole. A partition handed over ([`Inserter::hand_over`])
    /// takes no more.
    pub fn push(
        &mut self,
        parts: &mut [Option<Partition>],
        pid: u32,
        h: KeyHash,
        e: Entry,
    ) -> Result<(), IndexError> {
        let pid = pid as usize;
        self.by_part[pid].push((h, e));
        if self.by_part[pid].len() >= self.share {
            self.flush_one(parts, pid)?;
        }
        Ok(())
    }

    /// Inserts every entry gathered.
    pub fn flush(&mut self, parts: &mut [Option<Partition>]) -> Result<(), IndexError> {
        for pid in 0..parts.len() {
            self.flush_one(parts, pid)?;
        }
        Ok(())
    }

    /// Inserts the entries gathered for partition `pid`.
    fn flush_one(&mut self, parts: &mut [Option<Partition>], pid: usize) -> Result<(), IndexError> {
        match parts[pid].as_mut() {
            Some(p) => self.insert(p, pid),
            None if self.by_part[pid].is_empty() => Ok(()),
            None => panic!("inserts into partition {pid} after it was handed over"),
        }
    }

    /// Inserts the entries gathered for partition `pid`, in tag order.
    fn insert(&mut self, p: &mut Partition, pid: usize) -> Result<(), IndexError> {
        let v = &mut self.by_part[pid];
        let Some(&first) = v.first() else {
            return Ok(());
        };
        self.sorted.clear();
        self.sorted.resize(v.len(), first);
        let order = &mut self.order;
        order.fill(0);
        let bucket = |h: &KeyHash| (h.tag >> (64 - ORDER_BITS)) as usize;
        for (h, _) in v.iter() {
            order[bucket(h)] += 1;
        }
        let mut at = 0;
        for c in order.iter_mut() {
            (*c, at) = (at, at + *c);
        }
        for x in v.drain(..) {
            let b = bucket(&x.0);
            self.sorted[order[b] as usize] = x;
            order[b] += 1;
        }
        if !std::mem::replace(&mut self.populated[pid], true) {
            p.populate();
        }
        // The home slots a few inserts ahead are fetched meanwhile: one
        // at a time, each insert into a large table waited for its own.
        for (i, (h, e)) in self.sorted.iter().enumerate() {
            if let Some((ahead, _)) = self.sorted.get(i + PREFETCH_AHEAD) {
                p.prefetch(ahead);
            }
            p.insert(h, *e)?;
        }
        Ok(())
    }
}

/// Entries to insert into the partitions: (partition, digest, entry).
pub type Inserts = Vec<(u32, KeyHash, Entry)>;

/// What an [`Inserter`]'s thread is sent.
enum ToInsert {
    Entries(Inserts),
    /// These partitions take no more entries: they go to the write-out,
    /// once the probes are looked up.
    Done(Vec<u32>, Vec<Probe>),
}

/// An entry to look for before its partition is handed over (a rebuild's
/// large-value heads, found current only if no later record replaced
/// them): partition, the key's whole digest, and the entry's offset.
pub type Probe = (u32, KeyHash, u64);

/// Threads of their own making a bulk build's index inserts (a load's, a
/// rebuild's), each through a [`Batch`] for the partitions it owns, `cap`
/// entries in all: the thread that makes the records sends them their
/// entries, a vector at a time in log order (shared out by partition),
/// and meanwhile goes on with the next. Up to `cap` entries may wait, so
/// that no thread waits out another's slower stretches. The vectors come
/// back, emptied, for reuse (fresh memory costs a page fault and zeroing
/// per page).
///
/// The log comes shard by shard, so the partitions of one shard are
/// shared out among the threads (thread `(pid / groups) % threads`, a
/// shard's partitions being those `pid % groups` picks): one thread for
/// them all was the bottleneck of a 100 M key rebuild, and a third of the
/// two CPUs sat idle.
pub struct Inserter {
    to: Vec<std::sync::mpsc::Sender<ToInsert>>,
    groups: u32,
    back: std::sync::mpsc::Receiver<Inserts>,
    /// Vectors emptied here (shared out among the threads).
    spare: std::cell::RefCell<Vec<Inserts>>,
    waiting: std::sync::Arc<Waiting>,
    cap: usize,
    threads: Vec<std::thread::JoinHandle<Result<Inserted, IndexError>>>,
}

/// What an [`Inserter`] hands back: the partitions it kept, and the
/// offsets of the probes found current.
pub type Inserted = (Vec<Partition>, Vec<u64>);

/// The entries sent to an [`Inserter`]'s threads and not yet taken, and
/// whether a thread stopped.
#[derive(Default)]
struct Waiting {
    state: std::sync::Mutex<(usize, bool)>,
    taken: std::sync::Condvar,
}

impl Waiting {
    fn update(&self, f: impl FnOnce(&mut (usize, bool))) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut st);
        self.taken.notify_all();
    }
}

/// Marks the thread stopped however it ends, so that a sender never
/// waits for it in vain.
struct Stopped(std::sync::Arc<Waiting>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.update(|st| st.1 = true);
    }
}

/// Insert threads at most: past a few, the thread making the records is
/// the slower one.
const MAX_INSERT_THREADS: usize = 4;

/// The one of `threads` insert threads that owns partition `pid` of a
/// store of `groups` shards.
fn insert_owner(pid: u32, groups: u32, threads: usize) -> usize {
    (pid / groups) as usize % threads
}

impl Inserter {
    /// Starts threads `name-K` (one per CPU, at most
    /// [`MAX_INSERT_THREADS`]), which own `parts` until
    /// [`Inserter::finish`], or until they hand them to `out`
    /// ([`Inserter::hand_over`]); `groups` is the store's shard count.
    pub fn start(
        name: &str,
        parts: Vec<Partition>,
        cap: usize,
        groups: u32,
        out: Option<&WriteOut>,
    ) -> io::Result<Inserter> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = cpus.clamp(1, MAX_INSERT_THREADS).min(parts.len().max(1));
        let groups = groups.max(1);
        let partitions = parts.len() as u32;
        let mut owned: Vec<Vec<Option<Partition>>> = (0..n)
            .map(|_| (0..parts.len()).map(|_| None).collect())
            .collect();
        for (pid, p) in parts.into_iter().enumerate() {
            owned[insert_owner(pid as u32, groups, n)][pid] = Some(p);
        }
        let (back_tx, back) = std::sync::mpsc::channel();
        let waiting = std::sync::Arc::new(Waiting::default());
        let mut to = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (k, mut parts) in owned.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel::<ToInsert>();
            to.push(tx);
            let stopped = Stopped(waiting.clone());
            let back_tx = back_tx.clone();
            let out = out.map(|w| w.to.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{k}"))
                .spawn(move || {
                    let stopped = stopped;
                    let mine = |pid: usize| insert_owner(pid as u32, groups, n) == k;
                    let mut batch = Batch::new(partitions, cap, mine);
                    let mut found = Vec::new();
                    for msg in rx {
                        match msg {
                            ToInsert::Entries(mut entries) => {
                                let n = entries.len();
                                for (pid, hash, e) in entries.drain(..) {
                                    // The index cannot take it (no room to
                                    // grow, say): the thread stops, and
                                    // `send` says so.
                                    batch.push(&mut parts, pid, hash, e)?;
                                }
                                stopped.0.update(|st| st.0 -= n);
                                let _ = back_tx.send(entries);
                            }
                            ToInsert::Done(pids, probes) => {
                                for &pid in &pids {
                                    batch.flush_one(&mut parts, pid as usize)?;
                                }
                                // Looked up while the tags are whole: each
                                // finds its own key's entry, no other's.
                                for (pid, hash, offset) in probes {
                                    let p = parts[pid as usize].as_ref();
                                    let e = p.and_then(|p| p.get(&hash));
                                    if e.is_some_and(|e| e.offset == offset && !e.tombstone) {
                                        found.push(offset);
                                    }
                                }
                                for pid in pids {
                                    let (Some(out), Some(p)) = (&out, parts[pid as usize].take())
                                    else {
                                        continue;
                                    };
                                    // A write-out that stopped says why at
                                    // its end.
                                    let _ = out.send((p, None));
                                }
                            }
                        }
                    }
                    batch.flush(&mut parts)?;
                    Ok((parts.into_iter().flatten().collect(), found))
                })?;
            threads.push(thread);
        }
        Ok(Inserter {
            to,
            groups,
            back,
            spare: Default::default(),
            waiting,
            cap: cap.max(1),
            threads,
        })
    }

    /// The thread that owns partition `pid`.
    fn owner(&self, pid: u32) -> usize {
        insert_owner(pid, self.groups, self.to.len())
    }

    /// An empty vector to fill, one sent before if one came back.
    pub fn vec(&self) -> Inserts {
        let spare = self.spare.borrow_mut().pop();
        spare.unwrap_or_else(|| self.back.try_recv().unwrap_or_default())
    }

    /// Sends `entries` to be inserted, once fewer than the batch's size
    /// wait; false when a thread stopped on an error
    /// ([`Inserter::finish`] returns it).
    pub fn send(&self, mut entries: Inserts) -> bool {
        let mut st = self.waiting.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 >= self.cap && !st.1 {
            st = self
                .waiting
                .taken
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
        if st.1 {
            return false;
        }
        st.0 += entries.len();
        drop(st);
        if self.to.len() == 1 {
            return self.to[0].send(ToInsert::Entries(entries)).is_ok();
        }
        let mut shares: Vec<Inserts> = (0..self.to.len()).map(|_| self.vec()).collect();
        for x in entries.drain(..) {
            shares[self.owner(x.0)].push(x);
        }
        self.spare.borrow_mut().push(entries);
        let mut sent = true;
        for (to, share) in self.to.iter().zip(shares) {
            if share.is_empty() {
                self.spare.borrow_mut().push(share);
            } else {
                sent &= to.send(ToInsert::Entries(share)).is_ok();
            }
        }
        sent
    }

    /// Partitions `pids` take no more entries: once the entries sent
    /// before are in, and `probes` into them are looked up, they go to the
    /// write-out given at the start, with a dirty header, while the
    /// threads go on with the others.
    pub fn hand_over(&self, pids: Vec<u32>, probes: Vec<Probe>) {
        for (k, to) in self.to.iter().enumerate() {
            let mine: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|&p| self.owner(p) == k)
                .collect();
            let probes: Vec<Probe> = (probes.iter())
                .filter(|p| self.owner(p.0) == k)
                .copied()
                .collect();
            if !mine.is_empty() || !probes.is_empty() {
                let _ = to.send(ToInsert::Done(mine, probes));
            }
        }
    }

    /// Waits for every insert sent, and hands back the partitions not
    /// handed over (in the order of their ids), and the offsets of the
    /// probes whose key's entry (not a tombstone) is at their offset.
    pub fn finish(self) -> Result<Inserted, IndexError> {
        drop(self.to);
        let (mut parts, mut found) = (Vec::new(), Vec::new());
        let mut failed = None;
        for t in self.threads {
            match t.join().expect("index insert thread") {
                Ok((p, f)) => {
                    parts.extend(p);
                    found.extend(f);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        parts.sort_by_key(|p| p.id);
        Ok((parts, found))
    }
}

/// Writes a table built in memory to `part-NNNN.idx.build` beside its
/// file: with a clean header at `Some(checkpoint)` and the checksum of its
/// slots, synced; or with a dirty header, not synced (a dirty table's
/// contents count for nothing after a crash: the index is rebuilt, and a
/// file renamed before its pages reached the disk fails its header
/// check). Returns the build file, and whether it is synced (clean). A
/// table mapped from its file is left as it is (`None`).
fn write_build(
    p: &mut Partition,
    clean: Option<Checkpoint>,
) -> Result<Option<BuildFile>, IndexError> {
    use std::io::Write;
    if !p.in_memory {
        return Ok(None);
    }
    match clean {
        Some(cp) => {
            let crc = p.slots_crc();
            p.write_header_with(true, cp, Some(crc));
        }
        None => p.write_header(false, Checkpoint::default()),
    }
    let tmp = p.path.with_extension("idx.build");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // A table shortened in place is shorter than its memory.
    file.write_all(&p.map[..p.bytes() as usize])
        .map_err(io_err(&tmp))?;
    if clean.is_some() {
        file.sync_all().map_err(io_err(&tmp))?;
    }
    Ok(Some((tmp, file, clean.is_some())))
}

/// Writes tables built in memory to their files and maps them there: each
/// is written whole, sequentially, to `part-NNNN.idx.build` beside its
/// file (on every CPU), with a dirty header, or a clean one at
/// `Some(checkpoint)` with the checksum of its slots (`clean(id)` says
/// which; see `write_build`), then each is renamed over its file, then
/// the directory is synced. A crash before a rename leaves the file as it
/// was (the build's own file is never opened); after it, a clean file
/// whose contents are all on the disk, or a dirty one.
/// Tables already mapped from their files are handed back as they are.
pub fn write_out(
    parts: Vec<Partition>,
    clean: impl Fn(u32) -> Option<Checkpoint>,
) -> Result<Vec<Partition>, IndexError> {
    let at = parts.first().map(|p| p.path.clone()).unwrap_or_default();
    let out = WriteOut::start().map_err(io_err(&at))?;
    for p in parts {
        let cp = clean(p.id);
        out.send(p, cp);
    }
    out.finish()
}

/// Tables on their way from memory to their files ([`write_out`]): each
/// is written to its build file (its tags shortened first, if wide) by
/// the first of the threads (one per CPU: copying into the page cache
/// takes a CPU per gigabyte-second or so) that is free, as it is sent, so
/// that a rebuild writes a shard's tables while it scans the next
/// ([`Inserter::hand_over`]); [`WriteOut::finish`] renames and maps them.
pub struct WriteOut {
    to: std::sync::mpsc::Sender<(Partition, Option<Checkpoint>)>,
    workers: Vec<std::thread::JoinHandle<Vec<Built>>>,
}

/// A table's build file, and whether it is synced (clean).
type BuildFile = (PathBuf, File, bool);

/// A table written to its build file (`None`: one mapped from its file,
/// left as it was), or why not.
type Built = Result<(Partition, Option<BuildFile>), IndexError>;

impl WriteOut {
    pub fn start() -> io::Result<WriteOut> {
        let (to, rx) = std::sync::mpsc::channel::<(Partition, Option<Checkpoint>)>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("index-write-{i}"))
                    .spawn(move || {
                        let mut built = Vec::new();
                        loop {
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok((mut p, cp)) = next else {
                                return built;
                            };
                            // Shortening the tags reads and writes every
                            // slot: done on the same threads as the write.
                            let shortened = match p.in_memory && p.layout == Layout::Wide {
                                true => p.shorten(),
                                false => Ok(()),
                            };
                            built.push(
                                shortened
                                    .and_then(|()| write_build(&mut p, cp))
                                    .map(|f| (p, f)),
                            );
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(WriteOut { to, workers })
    }

    /// Table `p` goes to its file, with a clean header at `Some(checkpoint)`.
    pub fn send(&self, p: Partition, clean: Option<Checkpoint>) {
        // A thread that stopped is found at the end.
        let _ = self.to.send((p, clean));
    }

    /// Waits for every table sent to be written, renames each over its
    /// file, maps it there and syncs the directories; hands them back in
    /// the order of their ids.
    pub fn finish(self) -> Result<Vec<Partition>, IndexError> {
        drop(self.to);
        let mut built = Vec::new();
        for w in self.workers {
            built.extend(w.join().expect("index write-out thread"));
        }
        let mut built: Vec<(Partition, Option<BuildFile>)> =
            built.into_iter().collect::<Result<_, _>>()?;
        built.sort_by_key(|(p, _)| p.id);
        let mut dirs = Vec::new();
        let mut old = Vec::new();
        let mut out = Vec::with_capacity(built.len());
        for (mut p, f) in built {
            if let Some((tmp, file, synced)) = f {
                if !synced {
                    // Not renamed over the old file: ext4 would write the
                    // new one's pages out before the rename returned
                    // (`auto_da_alloc`), and removing the old one frees
                    // its blocks meanwhile: most of a rebuild's write-out
                    // time. The old file steps aside, and is removed on a
                    // thread of its own. A crash before the rename finds
                    // no file, and rebuilds as it would for a dirty one;
                    // the new pages reach the disk in the background, or
                    // when the index is marked clean.
                    let aside = p.path.with_extension("idx.old");
                    match std::fs::rename(&p.path, &aside) {
                        Ok(()) => old.push(aside),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&p.path)(e)),
                    }
                }
                std::fs::rename(&tmp, &p.path).map_err(io_err(&p.path))?;
                // The pages just written are in the page cache: mapping
                // them reads nothing.
                p.map = map_file(&file, &p.path)?;
                p.in_memory = false;
                if let Some(dir) = p.path.parent() {
                    if !dirs.iter().any(|d: &PathBuf| d == dir) {
                        dirs.push(dir.to_owned());
                    }
                }
            }
            out.push(p);
        }
        for dir in dirs {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&dir))?;
        }
        if !old.is_empty() {
            // What is left if the process ends first is replaced by the
            // next rebuild's file stepping aside under the same name.
            let _ = std::thread::Builder::new()
                .name("index-old-files".into())
                .spawn(move || old.iter().for_each(|f| drop(std::fs::remove_file(f))));
        }
        Ok(out)
    }
}

/// What one step of the expiry sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Entries it marked expired.
    pub reaped: u64,
    /// Live entries with a TTL it saw, and the sum of their TTLs left.
    pub ttl_seen: u64,
    pub ttl_sum_ms: u64,
}

impl std::ops::AddAssign for Sweep {
    fn add_assign(&mut self, o: Sweep) {
        self.reaped += o.reaped;
        self.ttl_seen += o.ttl_seen;
        self.ttl_sum_ms += o.ttl_sum_ms;
    }
}

/// The header's checksum: version 1 covers the first 80 bytes, version 2
/// the rest of the header as well.
fn header_crc(h: &[u8], version: u32) -> u32 {
    let crc = crc32c::crc32c(&h[..CRC_AT]);
    if version == 1 {
        crc
    } else {
        crc32c::crc32c_append(crc, &h[CRC_AT + 4..HEADER])
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The owner of a test's tables: offsets of the full 40 bits.
    fn owner(b: u8) -> Owner {
        Owner::new([b; 16], 1 << 44)
    }

    /// Bytes of a packed table of `slots` of a test's owner.
    fn packed_bytes(slots: u64) -> u64 {
        table_bytes(slots, Layout::packed(slots, OFF_BITS)).unwrap()
    }

    fn entry(n: u64) -> Entry {
        Entry {
            offset: n * 16,
            len: 4096,
            tombstone: n % 7 == 0,
            expire_ms: if n % 3 == 0 { 0 } else { 1_700_000_000_000 + n },
        }
    }

    /// Redis Cluster's examples (cluster-spec, "Hash tags").
    #[test]
    fn hash_tags_are_found_as_redis_cluster_finds_them() {
        assert_eq!(hash_tag(b"{user1000}.following"), Some(&b"user1000"[..]));
        assert_eq!(hash_tag(b"foo{}{bar}"), None);
        assert_eq!(hash_tag(b"foo{{bar}}zap"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), Some(&b"bar"[..]));
        assert_eq!(hash_tag(b"nobraces"), None);
        assert_eq!(hash_tag(b"open{only"), None);
        // One tag, one partition; the index still tells the keys apart.
        let (a, b) = (KeyHash::full(b"{u1}:name"), KeyHash::full(b"{u1}:cart"));
        assert_eq!(a.partition(64), b.partition(64));
        assert_ne!(a.tag, b.tag);
        // Untagged keys are placed as before (format version 2's rule).
        let h = xxhash_rust::xxh3::xxh3_128(b"plain");
        assert_eq!(KeyHash::of(b"plain").lo, h as u64);
    }

    #[test]
    fn a_table_built_in_memory_is_written_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        // The files as a crash left them: one dirty, one with stale slots.
        let mut old = Partition::create(dir.path(), 0, owner(3), 10).unwrap();
        old.insert(&KeyHash::of(b"stale"), entry(1)).unwrap();
        drop(old);
        let (old, cp) = Partition::open(dir.path(), 0, owner(3)).unwrap();
        assert!(cp.is_none());
        let mut p = old.rebuild_in_memory().unwrap();
        drop(old);
        assert!(p.in_memory());
        // Built with whole tags, written out with the tags the index keeps.
        let mut model = Vec::new();
        for n in 1..=5000u64 {
            let h = KeyHash::full(&n.to_le_bytes());
            p.insert(&h, entry(n)).unwrap();
            model.push((h.tag & tag_mask(), entry(n)));
            // Keys whose whole tags differ only in the bits the index
            // drops: one home, and after the write-out one tag's
            // candidates, each still found.
            if n % 1000 == 0 {
                for twin in 1..=2u64 {
                    let h = KeyHash {
                        lo: 0,
                        tag: (h.tag & !0xffff_ffff) | (h.tag as u32 as u64 ^ twin),
                    };
                    let e = entry(10_000 * twin + n);
                    p.insert(&h, e).unwrap();
                    model.push((h.tag & tag_mask(), e));
                }
            }
        }
        model.sort_by_key(|&(t, e)| (t, e.offset));
        // Grown in memory: the file on disk is still the old one.
        assert!(p.slots() > 64);
        let on_disk = std::fs::metadata(partition_path(dir.path(), 0))
            .unwrap()
            .len();
        assert_eq!(on_disk, packed_bytes(64));
        let q = Partition::create_in_memory(dir.path(), 1, owner(3), 0).unwrap();

        // A rebuild's write-out: dirty files, whose slots are the table's.
        let cp = Checkpoint {
            max_seq: 9,
            max_gen: 4,
        };
        let mut parts = write_out(vec![p, q], |id| (id == 1).then_some(cp)).unwrap();
        assert!(parts.iter().all(|p| !p.in_memory()));
        assert!(!dir.path().join("index/part-0000.idx.build").exists());
        let mut got: Vec<(u64, Entry)> = parts[0].iter().collect();
        got.sort_by_key(|&(t, e)| (t, e.offset));
        assert_eq!(got, model);
        parts[0].check_order().unwrap();
        for (t, e) in &model {
            assert!(parts[0].candidate_entries(*t).any(|c| c == *e), "{t:x}");
        }
        let h = KeyHash::of(b"late");
        parts[0].insert_new(&h, entry(7)).unwrap();
        parts[0].mark_clean(cp).unwrap();
        drop(parts);
        let (p, got_cp) = Partition::open(dir.path(), 0, owner(3)).unwrap();
        assert_eq!(got_cp, Some(cp));
        assert!(p.slots_intact());
        assert_eq!(p.get(&h), Some(entry(7)));
        assert_eq!(p.entries(), 5011);
        // A load's write-out: clean, with its checkpoint and checksum.
        let (q, got_cp) = Partition::open(dir.path(), 1, owner(3)).unwrap();
        assert_eq!(got_cp, Some(cp));
        assert!(q.slots_intact());
        assert_eq!(q.entries(), 0);
    }

    /// What a rebuild asks of the insert thread: every key ends with the
    /// entry of its last record in log order, whatever the shares and
    /// vectors the records came in, and a log that comes a few
    /// partitions at a time (shard by shard) changes nothing.
    #[test]
    fn the_insert_thread_keeps_the_last_record_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let parts_n = 8u32;
        let parts: Vec<Partition> = (0..parts_n)
            .map(|id| Partition::create_in_memory(dir.path(), id, owner(6), 64).unwrap())
            .collect();
        // Shares of 3 entries: most inserts happen long before the end.
        let ins = Inserter::start("test-index", parts, 24, 4, None).unwrap();
        let mut model = HashMap::new();
        let key = |k: u64| KeyHash::full(&k.to_le_bytes());
        let mut n = 0u64;
        for round in 0..5u64 {
            // The log of one "shard" at a time: keys of partitions 2r, 2r+1.
            let shard = round % 4;
            let mut v = ins.vec();
            for k in 0..3000u64 {
                let h = key(k);
                let pid = h.partition(parts_n);
                if pid / 2 != shard as u32 {
                    continue;
                }
                n += 1;
                v.push((pid, h, entry(n)));
                model.insert(k, (pid, entry(n)));
                if v.len() == 50 {
                    assert!(ins.send(std::mem::take(&mut v)));
                    v = ins.vec();
                }
            }
            assert!(ins.send(v));
        }
        let (parts, _) = ins.finish().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.entries()).sum::<u64>(),
            model.len() as u64
        );
        for (k, (pid, e)) in model {
            assert_eq!(parts[pid as usize].get(&key(k)), Some(e), "key {k}");
        }
    }

    /// A rebuild hands each shard's partitions to the write-out once the
    /// shard's log is scanned: they are written with every entry sent
    /// before, while the others still take theirs, and come back mapped
    /// from their files in the order of their ids.
    #[test]
    fn partitions_handed_over_mid_log_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let parts_n = 8u32;
        let parts: Vec<Partition> = (0..parts_n)
            .map(|id| Partition::create_in_memory(dir.path(), id, owner(6), 64).unwrap())
            .collect();
        let out = WriteOut::start().unwrap();
        let ins = Inserter::start("test-index", parts, 24, 4, Some(&out)).unwrap();
        let mut model = HashMap::new();
        let key = |k: u64| KeyHash::full(&k.to_le_bytes());
        let mut n = 0u64;
        let mut want = Vec::new();
        // Shards 0..3 of partitions 2s, 2s+1; shard 3 has no log.
        for shard in 0..3u32 {
            for pass in 0..2 {
                let mut v = ins.vec();
                for k in 0..3000u64 {
                    let h = key(k);
                    let pid = h.partition(parts_n);
                    if pid / 2 != shard || (pass == 1 && k % 3 != 0) {
                        continue;
                    }
                    n += 1;
                    v.push((pid, h, entry(n)));
                    model.insert(k, (pid, entry(n)));
                }
                assert!(ins.send(v));
            }
            // Probes: a key's entry (found unless a tombstone), and an
            // offset it left.
            let mut probes = Vec::new();
            for (&k, &(pid, e)) in &model {
                if pid / 2 == shard && k % 5 == 0 {
                    probes.push((pid, key(k), e.offset));
                    if !e.tombstone {
                        want.push(e.offset);
                    }
                    probes.push((pid, key(k), e.offset + 1));
                }
            }
            ins.hand_over(vec![2 * shard, 2 * shard + 1], probes);
        }
        let (rest, mut found) = ins.finish().unwrap();
        found.sort_unstable();
        want.sort_unstable();
        assert!(want.len() > 100, "{} probes found", want.len());
        assert_eq!(found, want);
        assert_eq!(rest.iter().map(|p| p.id).collect::<Vec<_>>(), [6, 7]);
        for p in rest {
            out.send(p, None);
        }
        let parts = out.finish().unwrap();
        assert_eq!(
            parts.iter().map(|p| p.id).collect::<Vec<_>>(),
            (0..parts_n).collect::<Vec<_>>()
        );
        assert!(parts.iter().all(|p| !p.in_memory));
        assert_eq!(
            parts.iter().map(|p| p.entries()).sum::<u64>(),
            model.len() as u64
        );
        // Written out with their short tags.
        for (k, (pid, e)) in model {
            let short = KeyHash::of(&k.to_le_bytes());
            assert_eq!(parts[pid as usize].get(&short), Some(e), "key {k}");
        }
    }

    #[test]
    fn a_dirty_write_out_reopens_dirty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create_in_memory(dir.path(), 2, owner(4), 100).unwrap();
        p.insert(&KeyHash::of(b"k"), entry(1)).unwrap();
        drop(write_out(vec![p], |_| None).unwrap());
        let (_, cp) = Partition::open(dir.path(), 2, owner(4)).unwrap();
        assert_eq!(cp, None);
    }

    #[test]
    fn a_reserved_table_takes_its_keys_without_growing_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        for in_memory in [false, true] {
            let mut p = if in_memory {
                Partition::create_in_memory(dir.path(), 3, owner(5), 10).unwrap()
            } else {
                Partition::create(dir.path(), 3, owner(5), 10).unwrap()
            };
            let key = |n: u64| KeyHash::of(&n.to_le_bytes());
            for n in 1..=8u64 {
                p.insert(&key(n), entry(n)).unwrap();
            }
            p.reserve(5000).unwrap();
            let slots = p.slots();
            assert!(slots >= slots_for(5000), "{slots}");
            for n in 9..=5000u64 {
                p.insert(&key(n), entry(n)).unwrap();
            }
            assert_eq!(p.slots(), slots, "no growth after the reserve");
            assert_eq!(p.entries(), 5000);
            assert!((1..=5000u64).all(|n| p.get(&key(n)) == Some(entry(n))));
            p.reserve(100).unwrap();
            assert_eq!(p.slots(), slots, "a table with room stays");
        }
    }

    #[test]
    fn reaping_marks_expired_entries_as_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 100).unwrap();
        for n in 1..=60u64 {
            let e = Entry {
                offset: n * 16,
                len: 16,
                tombstone: false,
                expire_ms: if n <= 20 { 1000 + n } else { 0 },
            };
            p.insert(&KeyHash::of(&n.to_le_bytes()), e).unwrap();
        }
        let mut cursor = 0;
        let mut marked = Vec::new();
        let sw = p.reap_expired(&mut cursor, u64::MAX, 1010, &mut |e| marked.push(e));
        assert_eq!((sw.reaped, p.live_keys(), cursor), (10, 50, p.slots()));
        assert_eq!(
            (sw.ttl_seen, sw.ttl_sum_ms),
            (10, (11..=20).sum::<u64>() - 10 * 10)
        );
        assert!(marked.iter().all(|e| e.expire_ms <= 1010 && !e.tombstone));
        assert_eq!(p.expiring(), 10);
        let n = 5u64;
        let e = p.get(&KeyHash::of(&n.to_le_bytes())).unwrap();
        assert!(e.is_marker() && !e.live(0));
        cursor = 0;
        assert_eq!(
            p.reap_expired(&mut cursor, u64::MAX, 1010, &mut |_| {})
                .reaped,
            0
        );
    }

    #[test]
    fn the_sweep_skips_a_table_only_while_no_live_key_can_expire() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 100).unwrap();
        let forever = |n: u64| Entry {
            offset: n * 16,
            len: 16,
            tombstone: false,
            expire_ms: 0,
        };
        for n in 1..=40u64 {
            p.insert(&KeyHash::of(&n.to_le_bytes()), forever(n))
                .unwrap();
        }
        assert!(!p.may_expire(), "no key has a TTL");
        let timed = KeyHash::of(b"timed");
        let e = Entry {
            expire_ms: 2000,
            ..forever(99)
        };
        p.insert(&timed, e).unwrap();
        assert!(p.may_expire());
        // A pass before the expiry keeps it: the key is still to reap.
        let mut cursor = 0;
        assert_eq!(
            p.reap_expired(&mut cursor, u64::MAX, 1000, &mut |_| {})
                .reaped,
            0
        );
        assert!(p.may_expire());
        // A key with a TTL inserted while a pass is under way, wherever
        // its slot is, keeps the table in the sweep.
        cursor = 0;
        p.reap_expired(&mut cursor, 1, 2500, &mut |_| {});
        p.insert(
            &KeyHash::of(b"late"),
            Entry {
                expire_ms: 3000,
                ..forever(98)
            },
        )
        .unwrap();
        p.reap_expired(&mut cursor, u64::MAX, 2500, &mut |_| {});
        assert!(
            p.may_expire(),
            "a pass that may have missed a TTL cannot clear it"
        );
        cursor = 0;
        assert_eq!(
            p.reap_expired(&mut cursor, u64::MAX, 3500, &mut |_| {})
                .reaped,
            1
        );
        assert_eq!(p.live_keys(), 40);
        assert!(!p.may_expire(), "every TTL reaped");
    }

    /// A clean table's slots are checked against the checksum it was
    /// closed with; one closed by a build that kept none opens unchecked.
    #[test]
    fn slots_checksum_finds_a_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 3, owner(2), 100).unwrap();
        for n in 1..50u64 {
            p.insert(&KeyHash::of(&n.to_le_bytes()), entry(n)).unwrap();
        }
        p.mark_clean(Checkpoint::default()).unwrap();
        drop(p);
        let (p, cp) = Partition::open(dir.path(), 3, owner(2)).unwrap();
        assert!(cp.is_some() && p.slots_intact());
        drop(p);

        let path = partition_path(dir.path(), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x04;
        std::fs::write(&path, &bytes).unwrap();
        let (p, cp) = Partition::open(dir.path(), 3, owner(2)).unwrap();
        assert!(cp.is_some(), "the header itself is intact");
        assert!(!p.slots_intact());
        drop(p);

        // As a build before the slot checksum left it: no flag, the
        // header's own checksum over the zeros there.
        bytes[SLOTS_CRC_AT..SLOTS_CRC_FLAG_AT + 4].fill(0);
        let crc = header_crc(&bytes[..HEADER], VERSION);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let (p, cp) = Partition::open(dir.path(), 3, owner(2)).unwrap();
        assert!(cp.is_some() && p.slots_intact());
    }

    #[test]
    fn matches_a_hashmap_through_growth_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 10).unwrap();
        let mut model = HashMap::new();
        let mut rng = 12345u64;
        for n in 1..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let h = KeyHash::of(&(rng % 3000).to_le_bytes());
            if rng % 5 == 0 {
                assert_eq!(p.remove(&h), model.remove(&h.tag));
            } else {
                assert_eq!(
                    p.insert(&h, entry(n)).unwrap(),
                    model.insert(h.tag, entry(n))
                );
            }
            assert_eq!(p.entries(), model.len() as u64);
        }
        for (tag, e) in p.iter() {
            assert_eq!(model.get(&tag), Some(&e));
        }
        // It grew in its own file, whose size follows the table's.
        let files: Vec<_> = std::fs::read_dir(dir.path().join("index"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1);
        let len = std::fs::metadata(partition_path(dir.path(), 0))
            .unwrap()
            .len();
        assert!(p.slots() > 64 && len == packed_bytes(p.slots()));
        let tombs = model.values().filter(|e| e.tombstone).count() as u64;
        assert_eq!(p.live_keys(), model.len() as u64 - tombs);
        p.mark_clean(Checkpoint {
            max_seq: 5,
            max_gen: 6,
        })
        .unwrap();
        drop(p);
        let (p, cp) = Partition::open(dir.path(), 0, owner(1)).unwrap();
        assert_eq!(
            cp,
            Some(Checkpoint {
                max_seq: 5,
                max_gen: 6
            })
        );
        assert_eq!(p.iter().count(), model.len());
        assert!(Partition::open(dir.path(), 0, owner(2)).is_err());
    }

    /// Short tags: keys of 8-bit tags collide by the dozen; the caller
    /// resolves a tag's candidates by the key of the record each points
    /// at (here a map from offset to key, as the record would say), and
    /// the table matches a `HashMap` of keys through growth, removal and
    /// markers.
    #[test]
    fn keys_sharing_short_tags_match_a_hashmap_by_their_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 10).unwrap();
        let mut model: HashMap<u64, Entry> = HashMap::new();
        let mut records: HashMap<u64, u64> = HashMap::new();
        let hash = |k: u64| {
            let h = KeyHash::of(&k.to_le_bytes());
            KeyHash {
                tag: h.tag & (0xFF << 56),
                ..h
            }
        };
        // The key's own entry among its tag's candidates.
        let own = |p: &Partition, records: &HashMap<u64, u64>, k: u64| {
            (p.candidate_entries(hash(k).tag)).find(|e| records[&e.offset] == k)
        };
        let mut rng = 54321u64;
        for n in 1..20_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let k = rng % 3000;
            let h = hash(k);
            let mine = own(&p, &records, k);
            match rng % 7 {
                0 => {
                    let removed = mine.and_then(|e| p.remove_at(&h, e.offset));
                    assert_eq!(removed, model.remove(&k));
                }
                1 => {
                    let gone = mine.and_then(|e| p.mark_gone_at(h.tag, e.offset));
                    let was = model.get(&k).copied().filter(|e| !e.tombstone);
                    assert_eq!(gone, was);
                    if let Some(e) = model.get_mut(&k) {
                        if !e.tombstone {
                            e.tombstone = true;
                            e.expire_ms = e.expire_ms.max(1);
                        }
                    }
                }
                _ => {
                    let e = entry(n);
                    records.insert(e.offset, k);
                    let old = match mine {
                        Some(m) => {
                            assert!(p.promote(h.tag, m.offset));
                            p.insert(&h, e).unwrap()
                        }
                        None => p.insert_new(&h, e).unwrap(),
                    };
                    assert_eq!(old, model.insert(k, e));
                }
            }
            assert_eq!(p.entries(), model.len() as u64);
        }
        p.check_order().unwrap();
        for k in 0..3000 {
            assert_eq!(own(&p, &records, k), model.get(&k).copied(), "key {k}");
        }
        // Many keys did share a tag.
        let shared = (0..3000)
            .filter(|&k| p.candidates(hash(k).tag).count() > 1)
            .count();
        assert!(shared > 1000, "{shared} keys share a tag");
        let tombs = model.values().filter(|e| e.tombstone).count() as u64;
        assert_eq!(p.live_keys(), model.len() as u64 - tombs);
    }

    #[test]
    fn a_tag_scan_finds_every_key_present_throughout_while_the_table_grows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 10).unwrap();
        let e = |n: u64| Entry {
            offset: n * 16,
            len: 16,
            tombstone: false,
            expire_ms: 0,
        };
        let key = |n: u64| KeyHash::of(&n.to_le_bytes());
        // Keys 0..500 stay throughout; 500..600 are removed during the
        // scan (backward shifts), 1000.. are added (the table grows
        // several times).
        for n in 0..600 {
            p.insert(&key(n), e(n)).unwrap();
        }
        let slots_before = p.slots();
        let (mut from, mut seen, mut steps) = (0u64, HashMap::new(), 0);
        let mut added = 1000;
        loop {
            let mut out = Vec::new();
            let to = p.scan_tags(from, 7, 24, &mut out);
            for (tag, _) in out {
                assert!(tag >= from && to.is_none_or(|t| tag < t));
                *seen.entry(tag).or_insert(0) += 1;
            }
            steps += 1;
            for _ in 0..40 {
                p.insert(&key(added), e(added)).unwrap();
                added += 1;
            }
            if steps <= 100 {
                p.remove(&key(500 + steps));
            }
            match to {
                Some(t) => {
                    assert!(t > from && t % (1 << 24) == 0);
                    from = t;
                }
                None => break,
            }
        }
        assert!(p.slots() >= 8 * slots_before, "the table grew");
        for n in 0..500 {
            assert_eq!(seen.get(&key(n).tag), Some(&1), "key {n} once");
        }
        // A step with no count limit returns the whole table once.
        let mut all = Vec::new();
        assert_eq!(p.scan_tags(0, usize::MAX, 24, &mut all), None);
        assert_eq!(all.len() as u64, p.entries());
        let distinct: std::collections::HashSet<u64> = all.iter().map(|a| a.0).collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn a_clean_version_1_table_is_converted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let path = partition_path(dir.path(), 2);
        let mut p = Partition::create_at(&path, 2, owner(1), slots_for(100), Layout::Wide).unwrap();
        for n in 1..=30u64 {
            let e = Entry {
                offset: n * 16,
                len: 16,
                tombstone: n % 10 == 0,
                expire_ms: if n % 3 == 0 { 5_000 } else { 0 },
            };
            p.insert(&KeyHash::full(&n.to_le_bytes()), e).unwrap();
        }
        let (i, _) = p.find(KeyHash::full(&3u64.to_le_bytes()).tag);
        p.mark_clean(Checkpoint::default()).unwrap();
        drop(p);
        // As version 1 wrote it (24-byte slots, whole tags): no TTL count,
        // the checksum over 80 bytes, and an expiry past what version 2
        // keeps exactly.
        let mut b = std::fs::read(&path).unwrap();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[EXPIRING_AT..EXPIRING_AT + 8].fill(0);
        b[SLOTS_CRC_AT..SLOTS_CRC_FLAG_AT + 4].fill(0);
        let far = KeyHash::of(&3u64.to_le_bytes());
        let at = HEADER + i as usize * WIDE_SLOT + 16;
        b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = header_crc(&b[..HEADER], 1);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let (p, cp) = Partition::open(dir.path(), 2, owner(1)).unwrap();
        assert!(cp.is_some(), "a clean table stays clean");
        // 10 keys with a TTL (n % 3 == 0), of which n = 30 is a tombstone.
        assert_eq!(p.expiring(), 9);
        assert_eq!(p.get(&far).unwrap().expire_ms, MAX_EXPIRE_MS);
        assert_eq!(p.access(far.tag), Some(0));
    }

    /// A tag whose home slot, in a table of `slots`, is `home`, told
    /// apart from the others of that home by `n`: forces runs of keys
    /// sharing a home, and runs that wrap past the end of the table.
    fn tag_at_home(home: u64, slots: u64, n: u64) -> KeyHash {
        let first = ((home as u128) << 64).div_ceil(slots as u128);
        let tag = (first.div_ceil(1 << 32) << 32) as u64 + (n << 32);
        KeyHash { lo: 0, tag }
    }

    #[test]
    fn robin_hood_order_holds_with_crowded_homes_and_wrapping_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 10).unwrap();
        let slots = p.slots();
        let mut model = HashMap::new();
        let mut rng = 99u64;
        for n in 1..5_000u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Homes among the last four slots and the first two of the
            // table as first created, a few keys each.
            let home = [slots - 4, slots - 2, slots - 1, 0, 1][(rng % 5) as usize];
            let h = tag_at_home(home, slots, (rng >> 8) % 7);
            if rng % 3 == 0 {
                assert_eq!(p.remove(&h), model.remove(&h.tag));
            } else {
                assert_eq!(
                    p.insert(&h, entry(n)).unwrap(),
                    model.insert(h.tag, entry(n))
                );
            }
            assert_eq!(p.get(&h), model.get(&h.tag).copied());
            p.check_order().unwrap();
        }
        assert_eq!(p.iter().collect::<HashMap<_, _>>(), model);
        // Misses stop short, wherever the probe starts.
        for home in 0..p.slots() {
            let h = tag_at_home(home, p.slots(), 1 << 20);
            assert_eq!(p.get(&h), None);
        }
    }

    /// Writes a clean version 2 table as that build did: linear probing,
    /// each key in the first free slot from its home, in insertion order.
    fn write_version_2(dir: &Path, id: u32, keys: &[(KeyHash, Entry)]) -> u64 {
        let path = partition_path(dir, id);
        let mut p = Partition::create_at(&path, id, owner(1), slots_for(10), Layout::Wide).unwrap();
        let slots = p.slots();
        for &(h, e) in keys {
            let mut i = p.home(h.tag);
            while p.loc_at(i) != 0 {
                i = p.next(i);
            }
            p.set(i, h.tag, e.pack(), clamp_expiry(e.expire_ms));
            p.entries += 1;
            p.tombstones += e.tombstone as u64;
            p.expiring += e.expiring() as u64;
        }
        p.mark_clean(Checkpoint {
            max_seq: 7,
            max_gen: 8,
        })
        .unwrap();
        drop(p);
        let mut b = std::fs::read(&path).unwrap();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = header_crc(&b[..HEADER], 2);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        slots
    }

    #[test]
    fn a_clean_version_2_table_is_converted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let slots = 64;
        // Linear probing puts d (home 4) after a (home 5): a Robin Hood
        // probe for d would stop at a and miss it.
        let e = |n: u64| Entry {
            offset: n * 16,
            len: 32,
            tombstone: false,
            expire_ms: if n == 3 { 9_000 } else { 0 },
        };
        let keys = [
            (tag_at_home(5, slots, 0), e(1)),
            (tag_at_home(4, slots, 0), e(2)),
            (tag_at_home(4, slots, 1), e(3)),
            (tag_at_home(5, slots, 1), e(4)),
            (tag_at_home(63, slots, 0), e(5)),
            (tag_at_home(63, slots, 1), e(6)),
            (tag_at_home(0, slots, 0), e(7)),
        ];
        assert_eq!(write_version_2(dir.path(), 1, &keys), slots);
        let path = partition_path(dir.path(), 1);
        let v2 = std::fs::read(&path).unwrap();
        let (p, cp) = Partition::open(dir.path(), 1, owner(1)).unwrap();
        assert_eq!(
            cp,
            Some(Checkpoint {
                max_seq: 7,
                max_gen: 8
            })
        );
        assert!(p.slots_intact());
        p.check_order().unwrap();
        for (h, e) in &keys {
            assert_eq!(p.get(h), Some(*e));
        }
        assert_eq!((p.entries(), p.expiring()), (7, 1));
        drop(p);
        let v5 = std::fs::read(&path).unwrap();
        assert_eq!(le32(&v5, 8), VERSION, "written back as version 5");
        assert_eq!(v5.len() as u64, packed_bytes(slots), "in packed slots");
        assert!(v2.len() > v5.len());
        // Opened again: clean, as converted.
        let (p, cp) = Partition::open(dir.path(), 1, owner(1)).unwrap();
        assert!(cp.is_some() && p.slots_intact());
        assert_eq!(p.iter().count(), 7);
    }

    /// A clean version 3 table (24-byte slots, whole tags) opens as a
    /// packed one: every key found by its short tag, and two keys
    /// whose tags become one kept side by side, as that tag's candidates.
    #[test]
    fn a_clean_version_3_table_is_shortened_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let path = partition_path(dir.path(), 0);
        let mut p = Partition::create_at(&path, 0, owner(1), slots_for(300), Layout::Wide).unwrap();
        let keys: Vec<_> = (1..=300u64)
            .map(|n| (KeyHash::full(&n.to_le_bytes()), entry(n)))
            .collect();
        for (h, e) in &keys {
            p.insert(h, *e).unwrap();
        }
        let twin = |n: u64| KeyHash {
            lo: 0,
            tag: 0x1234_5678_0000_0000 | n,
        };
        p.insert(&twin(1), entry(1001)).unwrap();
        p.insert(&twin(2), entry(1002)).unwrap();
        let slots = p.slots();
        p.mark_clean(Checkpoint::default()).unwrap();
        drop(p);
        assert_eq!(le32(&std::fs::read(&path).unwrap(), 8), WIDE_VERSION);
        let (p, cp) = Partition::open(dir.path(), 0, owner(1)).unwrap();
        assert!(cp.is_some() && p.slots_intact());
        p.check_order().unwrap();
        assert_eq!((p.entries(), p.slots()), (302, slots));
        for (h, e) in &keys {
            let short = KeyHash {
                tag: h.tag & tag_mask(),
                ..*h
            };
            assert!(p.candidate_entries(short.tag).any(|c| c == *e));
        }
        let mut both: Vec<u64> = (p.candidate_entries(0x1234_5678_0000_0000))
            .map(|e| e.offset)
            .collect();
        both.sort_unstable();
        assert_eq!(both, [1001 * 16, 1002 * 16]);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(le32(&on_disk, 8), VERSION);
        assert_eq!(on_disk.len() as u64, packed_bytes(slots));
    }

    /// A clean version 4 table (20-byte slots, 32-bit tags) opens as a
    /// packed one of version 5, every entry as it was.
    #[test]
    fn a_clean_version_4_table_is_packed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let path = partition_path(dir.path(), 0);
        // A store of 1 GiB: offsets of 26 bits.
        let small = Owner::new([1; 16], 1 << 30);
        let keys: Vec<_> = (1..=500u64)
            .map(|n| (KeyHash::of(&n.to_le_bytes()), entry(n)))
            .collect();
        // Placed as version 4 placed them: by their 32-bit tags' homes.
        let mut p = Partition::create_at(&path, 0, small, slots_for(500), Layout::Wide).unwrap();
        for (h, e) in &keys {
            p.insert(h, *e).unwrap();
        }
        let slots = p.slots();
        let cp = Checkpoint {
            max_seq: 3,
            max_gen: 2,
        };
        p.mark_clean(cp).unwrap();
        let mut b = p.map[..HEADER].to_vec();
        b.resize(HEADER + slots as usize * NARROW_SLOT, 0);
        for i in 0..slots {
            if p.loc_at(i) != 0 {
                let a = HEADER + i as usize * NARROW_SLOT;
                b[a..a + 4].copy_from_slice(&((p.tag_at(i) >> 32) as u32).to_le_bytes());
                b[a + 4..a + 12].copy_from_slice(&p.loc_at(i).to_le_bytes());
                b[a + 12..a + 20].copy_from_slice(&p.word_at(i).to_le_bytes());
            }
        }
        drop(p);
        b[8..12].copy_from_slice(&NARROW_VERSION.to_le_bytes());
        let crc = crc32c::crc32c(&b[HEADER..]);
        b[SLOTS_CRC_AT..SLOTS_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        let crc = header_crc(&b[..HEADER], NARROW_VERSION);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &b).unwrap();

        let (p, got) = Partition::open(dir.path(), 0, small).unwrap();
        assert_eq!(got, Some(cp));
        p.check_order().unwrap();
        assert_eq!(p.entries(), 500);
        for (h, e) in &keys {
            assert_eq!(p.get(h), Some(*e));
        }
        drop(p);
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(le32(&on_disk, 8), VERSION);
        let packed = Layout::packed(slots, small.offset_bits);
        assert_eq!(Some(on_disk.len() as u64), table_bytes(slots, packed));
        assert!(on_disk.len() < b.len(), "packed slots are narrower");
        let (p, got) = Partition::open(dir.path(), 0, small).unwrap();
        assert!(got.is_some() && p.slots_intact());
        assert_eq!(p.iter().count(), 500);
    }

    /// Keys crowded on one home slot (their 32-bit tags a few apart, as
    /// keys chosen to share a home would be) lie farther from it than a
    /// packed slot can say: the table is packed again with more bits of
    /// displacement, as a wide table so crowded is when it is written
    /// out, and every key is found.
    #[test]
    fn keys_too_far_from_their_home_widen_the_slots() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 0, owner(1), 1000).unwrap();
        let slots = p.slots();
        let keys: Vec<_> = (0..400)
            .map(|n| (tag_at_home(7, slots, n), entry(n + 1)))
            .collect();
        for (h, e) in &keys {
            p.insert(h, *e).unwrap();
        }
        assert_eq!(p.slots(), slots, "not grown: growing cannot part them");
        assert!(p.max_disp() >= 400, "packed again, saying farther");
        p.check_order().unwrap();
        for (h, e) in &keys {
            assert_eq!(p.get(h), Some(*e));
        }

        let mut w = Partition::create_in_memory(dir.path(), 1, owner(1), slots).unwrap();
        for (h, e) in &keys {
            w.insert(h, *e).unwrap();
        }
        let w = write_out(vec![w], |_| None).unwrap().pop().unwrap();
        assert_eq!(w.slots(), slots);
        assert!(w.max_disp() >= 400);
        w.check_order().unwrap();
        for (h, e) in &keys {
            assert_eq!(w.get(h), Some(*e));
        }
    }

    #[test]
    fn a_version_2_table_with_damaged_slots_is_left_for_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let keys: Vec<_> = (1..20u64)
            .map(|n| (KeyHash::full(&n.to_le_bytes()), entry(n)))
            .collect();
        write_version_2(dir.path(), 0, &keys);
        let path = partition_path(dir.path(), 0);
        let mut b = std::fs::read(&path).unwrap();
        let last = b.len() - 3;
        b[last] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let (p, cp) = Partition::open(dir.path(), 0, owner(1)).unwrap();
        assert!(cp.is_some() && !p.slots_intact());
        drop(p);
        assert_eq!(std::fs::read(&path).unwrap(), b, "not converted");
    }

    #[test]
    fn a_table_that_cannot_grow_refuses_new_keys_rather_than_filling_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 2, owner(1), 10).unwrap();
        // Growing writes a new file beside the table's: with the directory
        // gone, every growth fails.
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        let slots = p.slots;
        let mut refused = 0;
        for k in 0..2 * slots {
            let h = KeyHash::of(format!("k{k}").as_bytes());
            let e = Entry {
                offset: 4096 * (k + 1),
                len: 112,
                tombstone: false,
                expire_ms: 0,
            };
            if p.insert(&h, e).is_err() {
                refused += 1;
            }
        }
        assert!(p.entries < p.slots, "the table filled up");
        assert!(refused > slots / 2, "only {refused} inserts refused");
    }

    #[test]
    fn damaged_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 3, owner(1), 10).unwrap();
        p.mark_clean(Checkpoint::default()).unwrap();
        drop(p);
        let path = partition_path(dir.path(), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Partition::open(dir.path(), 3, owner(1)),
            Err(IndexError::Corrupt { .. })
        ));
        std::fs::write(&path, &bytes[..100]).unwrap();
        assert!(Partition::open(dir.path(), 3, owner(1)).is_err());
    }

    #[test]
    fn a_slot_count_whose_size_wraps_round_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("index")).unwrap();
        let mut p = Partition::create(dir.path(), 1, owner(1), 10).unwrap();
        p.mark_clean(Checkpoint::default()).unwrap();
        let slots = p.slots();
        drop(p);
        let path = partition_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        // 24 × 2^61 is 3 × 2^64: in wrapping arithmetic this slot count
        // matches the file's size, and would index far past the mapping.
        let huge = slots + (1 << 61);
        bytes[32..40].copy_from_slice(&huge.to_le_bytes());
        let crc = header_crc(&bytes[..HEADER], VERSION);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        match Partition::open(dir.path(), 1, owner(1)) {
            Err(IndexError::Corrupt { what, .. }) => {
                assert!(what.contains("slot count"), "{what}")
            }
            other => panic!("{:?}", other.map(|(p, _)| p.slots())),
        }
    }
}
