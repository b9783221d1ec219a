//! On-disk layout: superblock, segment header, record header.
//!
//! Every integer is little-endian. The device starts with a superblock at
//! offset 0; the data region is a sequence of fixed-size segments starting at
//! `data_start`. Each segment begins with a [`SegmentHeader`] and holds
//! records appended back to back, each aligned to [`RECORD_ALIGN`] bytes and
//! never spanning two segments. A record is self-describing (magic, CRC32C,
//! key, value, sequence number), so the index can be rebuilt by a scan.
//!
//! ```text
//! record: crc u32 | gen u32 | seq u64 | expire_ms u64 | value_len u32 | key_len u16 | flags u8 | magic u8 | key | value | pad to 16
//! ```
//! The CRC covers everything after itself up to the end of the value and is
//! seeded with the store's UUID, so that records an earlier store left on
//! the same device never pass for ours (format version 2). `gen`
//! is the low half of the segment's generation, so a scan of a reused segment
//! stops at the first record left over from its previous life.
//!
//! A record that fits in one device block never straddles two, so that a GET
//! reads exactly one block: records of a block are packed from its start,
//! and the rest of the block is zero padding. A larger record starts on a
//! block boundary.

use thiserror::Error;

/// Size of the superblock, and the smallest block size we support.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// Records start at multiples of this within a segment.
pub const RECORD_ALIGN: u64 = 16;
/// Bytes of a record header.
pub const RECORD_HEADER: usize = 32;
/// Bytes reserved for the segment header at the start of each segment.
pub const SEGMENT_HEADER: usize = 32;
/// Largest record the index can address (24-bit length in 16-byte units).
pub const MAX_RECORD: u64 = ((1 << 23) - 1) * RECORD_ALIGN;
/// Largest segment: a compaction reads one whole into memory.
pub const MAX_SEGMENT: u32 = 1 << 30;

const SUPER_MAGIC: &[u8; 8] = b"NVKVSUPR";
const SEGMENT_MAGIC: &[u8; 8] = b"NVKVSEG1";
const RECORD_MAGIC: u8 = 0xA7;
/// Current on-disk format version. Version 4 adds values larger than a
/// segment ([`FLAG_LARGE`] heads and [`PieceHeader`] segments); a version
/// 3 store is the same but for them, and is marked version 4 when opened,
/// so that no older build misreads a head as a value. Version 3 places keys in partitions by
/// their hash tag (`{…}`, see [`crate::index::KeyHash::of`]); version 2
/// stores are converted when opened (their records are the same: the
/// index is rebuilt by the new rule). Version 2 seeds record checksums
/// with the store's UUID; version 1 stores must be reloaded.
pub const FORMAT_VERSION: u32 = 4;
/// The older version a store is converted from when opened (its index
/// rebuilt).
pub const CONVERTIBLE_VERSION: u32 = 2;
/// The older version a store is upgraded from when opened, as it is.
pub const UPGRADABLE_VERSION: u32 = 3;

/// Record flag: this record deletes its key.
pub const FLAG_TOMBSTONE: u8 = 1;
/// Record flag: the record is the head of a large value, its value a
/// [`LargeHead`]; the bytes are in piece segments (format version 4).
pub const FLAG_LARGE: u8 = 2;
/// Record flags: the value's encoding as Redis's OBJECT ENCODING and
/// REFCOUNT report it, where its history and not its bytes decide it
/// ([`Enc`]). Builds before these bits wrote 0 there: by the value.
const FLAG_ENC_SHIFT: u32 = 2;
const FLAG_ENC_MASK: u8 = 3 << FLAG_ENC_SHIFT;

/// How Redis would hold a string value, when its bytes alone do not say:
/// Redis's object encodings follow how a value was made. A build that
/// does not know the mark reads it as [`Enc::Value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enc {
    /// As Redis encodes a value a client sets: `int` for an integer
    /// (shared from 0 to 9999), `embstr` up to 44 bytes, `raw` beyond.
    #[default]
    Value,
    /// `raw` whatever its length: built in place (APPEND to a key that
    /// was there, SETRANGE).
    Raw,
    /// Never `int`: `embstr` up to 44 bytes, `raw` beyond (INCRBYFLOAT's
    /// result, an integer or not).
    Embstr,
    /// As [`Enc::Value`], but an integer is not shared (refcount 1): a
    /// COPY of one.
    Unshared,
}

impl Enc {
    /// The encoding kept in a record's flags.
    pub fn of_flags(flags: u8) -> Self {
        match (flags & FLAG_ENC_MASK) >> FLAG_ENC_SHIFT {
            0 => Enc::Value,
            1 => Enc::Raw,
            2 => Enc::Embstr,
            _ => Enc::Unshared,
        }
    }

    /// The record flag bits of this encoding.
    pub fn flags(self) -> u8 {
        (self as u8) << FLAG_ENC_SHIFT
    }

    /// What a COPY of a value of this encoding is: Redis copies a shared
    /// integer into an object of its own, and keeps the rest.
    pub fn copied(self) -> Self {
        match self {
            Enc::Value => Enc::Unshared,
            other => other,
        }
    }
}

/// What can be wrong with bytes read from the device.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    #[error("not an nvkv store (bad superblock magic)")]
    NotAStore,
    #[error("the store is in format version {0}, this build reads version {FORMAT_VERSION} only: reload it (nvkv load --force)")]
    Version(u32),
    #[error("superblock checksum mismatch")]
    SuperblockChecksum,
    #[error("superblock is inconsistent: {0}")]
    SuperblockInvalid(&'static str),
    #[error("record magic mismatch")]
    RecordMagic,
    #[error("record length out of bounds")]
    RecordLength,
    #[error("record checksum mismatch")]
    RecordChecksum,
    #[error("record belongs to an older generation of its segment")]
    RecordGeneration,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Rounds `v` up to a multiple of `a` (a power of two).
pub const fn align_up(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

/// Rounds `v` down to a multiple of `a` (a power of two).
pub const fn align_down(v: u64, a: u64) -> u64 {
    v & !(a - 1)
}

/// The store's superblock, at offset 0 of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub block_size: u32,
    pub uuid: [u8; 16],
    /// Bytes of the device the store uses.
    pub capacity: u64,
    /// Offset of segment 0.
    pub data_start: u64,
    pub segment_size: u32,
    pub segment_count: u32,
    /// Shards: each key belongs to one shard forever; a poller owns whole shards.
    pub shards: u32,
    /// Index partitions (a multiple of `shards`).
    pub partitions: u32,
    pub created_unix: u64,
}

impl Superblock {
    const CRC_AT: usize = 80;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SUPER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        b[40..48].copy_from_slice(&self.data_start.to_le_bytes());
        b[48..52].copy_from_slice(&self.segment_size.to_le_bytes());
        b[52..56].copy_from_slice(&self.segment_count.to_le_bytes());
        b[56..60].copy_from_slice(&self.shards.to_le_bytes());
        b[60..64].copy_from_slice(&self.partitions.to_le_bytes());
        b[64..72].copy_from_slice(&self.created_unix.to_le_bytes());
        let crc = crc32c::crc32c(&b[..Self::CRC_AT]);
        b[Self::CRC_AT..Self::CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        match Self::decode_versioned(b)? {
            (sb, FORMAT_VERSION) => Ok(sb),
            (_, v) => Err(FormatError::Version(v)),
        }
    }

    /// Decodes a superblock of this version or of
    /// [`CONVERTIBLE_VERSION`], and says which.
    pub fn decode_versioned(b: &[u8]) -> Result<(Self, u32), FormatError> {
        if b.len() < SUPERBLOCK_SIZE || &b[0..8] != SUPER_MAGIC {
            return Err(FormatError::NotAStore);
        }
        let version = u32_at(b, 8);
        if ![FORMAT_VERSION, UPGRADABLE_VERSION, CONVERTIBLE_VERSION].contains(&version) {
            return Err(FormatError::Version(version));
        }
        if crc32c::crc32c(&b[..Self::CRC_AT]) != u32_at(b, Self::CRC_AT) {
            return Err(FormatError::SuperblockChecksum);
        }
        let sb = Superblock {
            block_size: u32_at(b, 12),
            uuid: b[16..32].try_into().expect("16 bytes"),
            capacity: u64_at(b, 32),
            data_start: u64_at(b, 40),
            segment_size: u32_at(b, 48),
            segment_count: u32_at(b, 52),
            shards: u32_at(b, 56),
            partitions: u32_at(b, 60),
            created_unix: u64_at(b, 64),
        };
        sb.validate()?;
        Ok((sb, version))
    }

    fn validate(&self) -> Result<(), FormatError> {
        use FormatError::SuperblockInvalid as Bad;
        if !self.block_size.is_power_of_two() || self.block_size < 512 {
            return Err(Bad("block size is not a power of two >= 512"));
        }
        if self.segment_size == 0 || self.segment_size % self.block_size != 0 {
            return Err(Bad("segment size is not a multiple of the block size"));
        }
        if self.segment_size > MAX_SEGMENT {
            return Err(Bad("segment size above 1 GiB"));
        }
        if self.shards == 0 || self.partitions == 0 || self.partitions % self.shards != 0 {
            return Err(Bad("partitions must be a non-zero multiple of shards"));
        }
        // u32 × u32 fits a u64; the sum may not (a damaged data_start).
        let end =
            (self.segment_count as u64 * self.segment_size as u64).checked_add(self.data_start);
        if self.data_start < SUPERBLOCK_SIZE as u64 || end.is_none_or(|e| e > self.capacity) {
            return Err(Bad("segments do not fit the capacity"));
        }
        Ok(())
    }

    /// Device offset of segment `seg`.
    pub fn segment_offset(&self, seg: u32) -> u64 {
        self.data_start + seg as u64 * self.segment_size as u64
    }

    /// The segment holding device offset `off`.
    pub fn segment_of(&self, off: u64) -> u32 {
        ((off - self.data_start) / self.segment_size as u64) as u32
    }

    /// Whether a record of `len` bytes can sit at device offset `off`:
    /// aligned, inside one segment, past its header. Index entries carry no
    /// checksum; one that fails this must not be read nor counted.
    pub fn record_fits(&self, off: u64, len: u32) -> bool {
        let end = self.segment_offset(self.segment_count);
        if off < self.data_start || off >= end || off % RECORD_ALIGN != 0 {
            return false;
        }
        let seg = self.segment_offset(self.segment_of(off));
        len as usize >= RECORD_HEADER
            && off >= seg + SEGMENT_HEADER as u64
            && off + len as u64 <= seg + self.segment_size as u64
    }
}

/// The header at the start of every segment in use. Its checksum is seeded
/// with the store's UUID, so segments left on a device by an earlier store
/// never pass for ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Globally increasing; bumped each time a segment is (re)opened.
    pub gen: u64,
    /// Sequence number of the segment's first record: orders a shard's segments.
    pub first_seq: u64,
    pub shard: u32,
    /// Opened by a FLUSHDB of one poller's shards (each given such a
    /// segment, all with this `first_seq`):
    /// every record of the shard below `first_seq` is flushed. It comes to
    /// the device with the first records written after the flush, in the
    /// same write, and the shard's [`FlushMark`] follows once they are
    /// durable. A rebuild takes the flush only when all its shards' such
    /// segments are there, or the marks say so: otherwise the commit that
    /// carried it was cut short, and its segments are dropped whole. Kept
    /// in the shard's field: the top bit, the shard in bits 0–10, the
    /// flush's first shard in 11–21 and its count in 22–30 (a store that
    /// can flush has at most 127 shards).
    pub flush: Option<FlushOf>,
}

/// The shards a FLUSHDB flushed, as a flushing segment names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlushOf {
    /// The lowest id among them (which poller's flush it was).
    pub first: u32,
    /// How many.
    pub shards: u32,
}

/// The bit of a segment header's shard field that says it flushes.
const FLUSHES_BIT: u32 = 1 << 31;

impl SegmentHeader {
    pub fn encode(&self, uuid: &[u8; 16], out: &mut [u8]) {
        out[0..8].copy_from_slice(SEGMENT_MAGIC);
        out[8..16].copy_from_slice(&self.gen.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        let shard = match self.flush {
            None => self.shard,
            Some(f) => {
                FLUSHES_BIT
                    | (f.shards & 0x1FF) << 22
                    | (f.first & 0x7FF) << 11
                    | self.shard & 0x7FF
            }
        };
        out[24..28].copy_from_slice(&shard.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(uuid), &out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
    }

    /// `None` when the bytes are not a valid segment header of the store
    /// `uuid` (a free segment, or one of another store).
    pub fn decode(b: &[u8], uuid: &[u8; 16]) -> Option<Self> {
        if b.len() < SEGMENT_HEADER || &b[0..8] != SEGMENT_MAGIC {
            return None;
        }
        if crc32c::crc32c_append(crc32c::crc32c(uuid), &b[..28]) != u32_at(b, 28) {
            return None;
        }
        let raw = u32_at(b, 24);
        Some(SegmentHeader {
            gen: u64_at(b, 8),
            first_seq: u64_at(b, 16),
            shard: match raw & FLUSHES_BIT {
                0 => raw,
                _ => raw & 0x7FF,
            },
            flush: (raw & FLUSHES_BIT != 0).then_some(FlushOf {
                first: (raw >> 11) & 0x7FF,
                shards: (raw >> 22) & 0x1FF,
            }),
        })
    }
}

/// The fields of a record besides its key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub gen: u32,
    pub seq: u64,
    /// Expiry time in ms since the Unix epoch; 0 = never.
    pub expire_ms: u64,
    pub flags: u8,
}

/// Padded on-disk length of a record.
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    align_up((RECORD_HEADER + key_len + value_len) as u64, RECORD_ALIGN)
}

/// The CRC32C of a record's bytes after the checksum field, seeded with the
/// store's UUID.
fn record_crc(uuid: &[u8; 16], b: &[u8]) -> u32 {
    crc32c_of(uuid, b)
}

/// The CRC32C of `uuid` followed by `data`, as `crc32c`'s
/// `crc32c_append(crc32c(uuid), data)`: computed by `crc-fast`, whose
/// carry-less multiplication (VPCLMULQDQ where the CPU has it) goes two to
/// three times as fast over records of 1 to 4 KiB as the CRC32
/// instruction `crc32c` uses. Every record written and read (a full copy
/// included) is checked this way.
fn crc32c_of(uuid: &[u8; 16], data: &[u8]) -> u32 {
    let mut d = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    d.update(uuid);
    d.update(data);
    d.finalize() as u32
}

/// Writes a record of the store `uuid` into `out` (at least `record_len`
/// bytes; padding zeroed). Returns the padded length.
pub fn encode_record(
    uuid: &[u8; 16],
    meta: &RecordMeta,
    key: &[u8],
    value: &[u8],
    out: &mut [u8],
) -> usize {
    let len = record_len(key.len(), value.len()) as usize;
    let h = RECORD_HEADER;
    out[4..8].copy_from_slice(&meta.gen.to_le_bytes());
    out[8..16].copy_from_slice(&meta.seq.to_le_bytes());
    out[16..24].copy_from_slice(&meta.expire_ms.to_le_bytes());
    out[24..28].copy_from_slice(&(value.len() as u32).to_le_bytes());
    out[28..30].copy_from_slice(&(key.len() as u16).to_le_bytes());
    out[30] = meta.flags;
    out[31] = RECORD_MAGIC;
    out[h..h + key.len()].copy_from_slice(key);
    out[h + key.len()..h + key.len() + value.len()].copy_from_slice(value);
    out[h + key.len() + value.len()..len].fill(0);
    let crc = record_crc(uuid, &out[4..h + key.len() + value.len()]);
    out[0..4].copy_from_slice(&crc.to_le_bytes());
    len
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub meta: RecordMeta,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Padded length on the device.
    pub len: u64,
}

impl Record<'_> {
    pub fn is_tombstone(&self) -> bool {
        self.meta.flags & FLAG_TOMBSTONE != 0
    }

    /// Whether the record is the head of a large value.
    pub fn is_large(&self) -> bool {
        self.meta.flags & FLAG_LARGE != 0
    }

    /// Whether the record has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.meta.expire_ms != 0 && self.meta.expire_ms <= now_ms
    }

    /// The value's encoding mark.
    pub fn enc(&self) -> Enc {
        Enc::of_flags(self.meta.flags)
    }
}

/// Decodes and verifies the record at the start of `b`; a record of
/// another store (another UUID) fails its checksum.
pub fn decode_record<'a>(uuid: &[u8; 16], b: &'a [u8]) -> Result<Record<'a>, FormatError> {
    if b.len() < RECORD_HEADER {
        return Err(FormatError::RecordLength);
    }
    if b[31] != RECORD_MAGIC {
        return Err(FormatError::RecordMagic);
    }
    let value_len = u32_at(b, 24) as usize;
    let key_len = u16_at(b, 28) as usize;
    let end = RECORD_HEADER + key_len + value_len;
    if end > b.len() {
        return Err(FormatError::RecordLength);
    }
    if record_crc(uuid, &b[4..end]) != u32_at(b, 0) {
        return Err(FormatError::RecordChecksum);
    }
    Ok(Record {
        meta: RecordMeta {
            gen: u32_at(b, 4),
            seq: u64_at(b, 8),
            expire_ms: u64_at(b, 16),
            flags: b[30],
        },
        key: &b[RECORD_HEADER..RECORD_HEADER + key_len],
        value: &b[RECORD_HEADER + key_len..end],
        len: record_len(key_len, value_len),
    })
}

/// Where a record of `len` bytes goes when appended at `pos` of a segment
/// with `block`-byte blocks: `pos` itself, or the next block boundary when
/// the record would straddle one needlessly.
pub fn place_record(pos: u64, len: u64, block: u64) -> u64 {
    let room = align_up(pos + 1, block) - pos;
    if len <= room || (pos % block == 0) {
        pos
    } else {
        align_up(pos, block)
    }
}

/// Iterates over the valid records of one segment image (header included).
/// Past the last record of a block comes padding: the scan goes on at the
/// next block boundary, and stops at a block that starts with no record of
/// this generation and store.
pub struct SegmentRecords<'a> {
    uuid: &'a [u8; 16],
    buf: &'a [u8],
    pos: usize,
    gen: u32,
    block: usize,
}

impl<'a> SegmentRecords<'a> {
    /// Scans `buf`, a segment of the store `uuid` with header `header`.
    pub fn new(uuid: &'a [u8; 16], buf: &'a [u8], header: &SegmentHeader, block: u32) -> Self {
        SegmentRecords {
            uuid,
            buf,
            pos: SEGMENT_HEADER,
            gen: header.gen as u32,
            block: block as usize,
        }
    }

    /// Continues a scan at `pos` (a value [`SegmentRecords::end`] returned).
    pub fn resume(
        uuid: &'a [u8; 16],
        buf: &'a [u8],
        header: &SegmentHeader,
        block: u32,
        pos: usize,
    ) -> Self {
        SegmentRecords {
            pos,
            ..SegmentRecords::new(uuid, buf, header, block)
        }
    }

    /// Offset within the segment just past the last record returned.
    pub fn end(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for SegmentRecords<'a> {
    /// (offset within the segment, record)
    type Item = (usize, Record<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rec = decode_record(self.uuid, self.buf.get(self.pos..)?)
                .ok()
                .filter(|r| r.meta.gen == self.gen);
            match rec {
                Some(rec) => {
                    let at = self.pos;
                    self.pos += rec.len as usize;
                    return Some((at, rec));
                }
                None if self.pos % self.block == 0 => return None,
                None => self.pos = self.pos.next_multiple_of(self.block),
            }
        }
    }
}

// ---------------------------------------------------------------------
// Large values: a head record and piece segments.

const PIECE_MAGIC: &[u8; 8] = b"NVKVPIEC";
/// Bytes of a piece header (it has its segment's whole first block).
pub const PIECE_HEADER: usize = 40;

/// The header of a piece segment: a whole segment holding part of a large
/// value, its data from the segment's second block on. Its checksum is
/// seeded with the store's UUID, as the other headers are.
///
/// ```text
/// magic "NVKVPIEC" | value_id u64 | piece u32 | len u32 | data_crc u32 | shard u32 | 0 u32 | crc u32 (of the 36 bytes before it)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceHeader {
    /// The value's id, unique in the store (a segment generation).
    pub value_id: u64,
    /// Which piece of the value this is, from 0.
    pub piece: u32,
    /// Bytes of data in the piece.
    pub len: u32,
    /// CRC32C of the data, seeded with the store's UUID.
    pub data_crc: u32,
    pub shard: u32,
}

impl PieceHeader {
    pub fn encode(&self, uuid: &[u8; 16], out: &mut [u8]) {
        out[0..8].copy_from_slice(PIECE_MAGIC);
        out[8..16].copy_from_slice(&self.value_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.piece.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
        out[24..28].copy_from_slice(&self.data_crc.to_le_bytes());
        out[28..32].copy_from_slice(&self.shard.to_le_bytes());
        out[32..36].fill(0);
        let crc = crc32c::crc32c_append(crc32c::crc32c(uuid), &out[..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
    }

    /// `None` when the bytes are no piece header of the store `uuid`.
    pub fn decode(b: &[u8], uuid: &[u8; 16]) -> Option<Self> {
        if b.len() < PIECE_HEADER || &b[0..8] != PIECE_MAGIC {
            return None;
        }
        if crc32c::crc32c_append(crc32c::crc32c(uuid), &b[..36]) != u32_at(b, 36) {
            return None;
        }
        Some(PieceHeader {
            value_id: u64_at(b, 8),
            piece: u32_at(b, 16),
            len: u32_at(b, 20),
            data_crc: u32_at(b, 24),
            shard: u32_at(b, 28),
        })
    }

    /// The checksum of a piece's data.
    pub fn data_crc(uuid: &[u8; 16], data: &[u8]) -> u32 {
        crc32c_of(uuid, data)
    }
}

/// Whether a record of a `value_len`-byte value under a `key_len`-byte key
/// is too large for one segment of `segment_size` bytes (blocks of
/// `block`): the value goes in pieces.
pub fn is_large_record(segment_size: u32, block: u64, key_len: usize, value_len: usize) -> bool {
    let room = segment_size as u64 - SEGMENT_HEADER as u64 - block;
    record_len(key_len, value_len) > room
}

/// Bytes of value a piece segment holds: all of it but its first block.
pub fn piece_capacity(segment_size: u32, block: u64) -> u64 {
    segment_size as u64 - block
}

/// The value of a large value's head record: its length, its id, and
/// its piece segments in order.
///
/// ```text
/// total_len u64 | value_id u64 | count u32 | segment u32 × count
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargeHead {
    pub total_len: u64,
    pub value_id: u64,
    pub pieces: Vec<u32>,
}

impl LargeHead {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + 4 * self.pieces.len());
        b.extend_from_slice(&self.total_len.to_le_bytes());
        b.extend_from_slice(&self.value_id.to_le_bytes());
        b.extend_from_slice(&(self.pieces.len() as u32).to_le_bytes());
        for p in &self.pieces {
            b.extend_from_slice(&p.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 20 {
            return None;
        }
        let count = u32_at(b, 16) as usize;
        if b.len() != 20 + 4 * count {
            return None;
        }
        Some(LargeHead {
            total_len: u64_at(b, 0),
            value_id: u64_at(b, 8),
            pieces: (0..count).map(|i| u32_at(b, 20 + 4 * i)).collect(),
        })
    }

    /// Bytes of data piece `i` holds, pieces holding `cap` bytes each.
    pub fn piece_len(&self, i: usize, cap: u64) -> u64 {
        (self.total_len - i as u64 * cap).min(cap)
    }
}

// ---------------------------------------------------------------------
// Flush marks (FLUSHDB, FLUSHALL).

/// A shard's flush mark: every record of the shard with a sequence number
/// below `below` was flushed, and no rebuild replays it. Each shard has
/// two slots of one block each between the superblock and the first
/// segment (unused before: the loader zeroes them); a mark goes to slot
/// `epoch % 2`, so a torn write leaves the previous mark whole in the
/// other, and the valid mark of the higher epoch counts.
///
/// ```text
/// magic "NVKVFLSH" | uuid [16] | shard u32 | 0 u32 | epoch u64 | below u64 | crc u32 (of the 48 bytes before it)
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushMark {
    pub epoch: u64,
    pub below: u64,
}

const FLUSH_MAGIC: &[u8; 8] = b"NVKVFLSH";
const FLUSH_CRC_AT: usize = 48;

impl FlushMark {
    /// Device offset of slot `k` (0 or 1) of `shard`'s mark, or `None`
    /// when the gap before the first segment has no room for it.
    pub fn offset(sb: &Superblock, shard: u32, k: u64) -> Option<u64> {
        let block = sb.block_size as u64;
        let base = align_up(SUPERBLOCK_SIZE as u64, block);
        let at = base + (2 * shard as u64 + k) * block;
        (at + block <= sb.data_start).then_some(at)
    }

    /// The slot this mark is written to.
    pub fn slot(&self) -> u64 {
        self.epoch % 2
    }

    /// The mark's bytes, zero-padded to `out`'s length (a block).
    pub fn encode(&self, uuid: &[u8; 16], shard: u32, out: &mut [u8]) {
        out.fill(0);
        out[0..8].copy_from_slice(FLUSH_MAGIC);
        out[8..24].copy_from_slice(uuid);
        out[24..28].copy_from_slice(&shard.to_le_bytes());
        out[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        out[40..48].copy_from_slice(&self.below.to_le_bytes());
        let crc = crc32c::crc32c(&out[..FLUSH_CRC_AT]);
        out[FLUSH_CRC_AT..FLUSH_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The mark in `b` if it is a whole one of this store's `shard`.
    pub fn decode(uuid: &[u8; 16], shard: u32, b: &[u8]) -> Option<Self> {
        let valid = b.len() >= FLUSH_CRC_AT + 4
            && &b[0..8] == FLUSH_MAGIC
            && b[8..24] == uuid[..]
            && u32_at(b, 24) == shard
            && crc32c::crc32c(&b[..FLUSH_CRC_AT]) == u32_at(b, FLUSH_CRC_AT);
        valid.then(|| FlushMark {
            epoch: u64_at(b, 32),
            below: u64_at(b, 40),
        })
    }

    /// The mark that counts of a shard's two slots.
    pub fn latest(a: Option<Self>, b: Option<Self>) -> Self {
        a.into_iter()
            .chain(b)
            .max_by_key(|m| m.epoch)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            block_size: 4096,
            uuid: [7; 16],
            capacity: 1 << 30,
            data_start: 1 << 20,
            segment_size: 1 << 20,
            segment_count: 1000,
            shards: 4,
            partitions: 64,
            created_unix: 1,
        }
    }

    #[test]
    fn record_checksum_is_crc32c_seeded_with_the_uuid() {
        // The records on every existing store were checked with `crc32c`'s
        // routine: the faster one must give the same value, at every length
        // and alignment.
        let uuid = [0x5a; 16];
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 131 % 251) as u8).collect();
        for len in [0, 1, 7, 31, 32, 255, 1024, 2561, 4096, 8191] {
            for at in 0..9 {
                let b = &data[at..at + len];
                let want = crc32c::crc32c_append(crc32c::crc32c(&uuid), b);
                assert_eq!(crc32c_of(&uuid, b), want, "len {len} at {at}");
            }
        }
    }

    #[test]
    fn superblock_round_trip_and_damage() {
        let b = sb().encode();
        assert_eq!(Superblock::decode(&b).unwrap(), sb());
        let mut bad = b.clone();
        bad[33] ^= 1;
        assert_eq!(
            Superblock::decode(&bad),
            Err(FormatError::SuperblockChecksum)
        );
        assert_eq!(Superblock::decode(&b[..100]), Err(FormatError::NotAStore));
        assert_eq!(Superblock::decode(&[0; 4096]), Err(FormatError::NotAStore));
    }

    #[test]
    fn records_fit_only_inside_one_segment_past_its_header() {
        let sb = sb();
        let seg1 = sb.segment_offset(1);
        assert!(sb.record_fits(seg1 + SEGMENT_HEADER as u64, 64));
        assert!(sb.record_fits(seg1 + (1 << 20) - 64, 64));
        assert!(!sb.record_fits(seg1, 64), "into the header");
        assert!(
            !sb.record_fits(seg1 + (1 << 20) - 48, 64),
            "across segments"
        );
        assert!(!sb.record_fits(seg1 + 40, 64), "misaligned");
        assert!(
            !sb.record_fits(seg1 + 48, 16),
            "shorter than a record header"
        );
        assert!(!sb.record_fits(sb.data_start - 4096, 64), "before the data");
        assert!(!sb.record_fits(sb.segment_offset(1000), 64), "past the end");
    }

    #[test]
    fn a_superblock_with_fields_out_of_range_is_refused() {
        let invalid = |sb: Superblock| match Superblock::decode(&sb.encode()) {
            Err(FormatError::SuperblockInvalid(why)) => why,
            other => panic!("{sb:?}: {other:?}"),
        };
        // The end of the segments would overflow: it must not wrap round.
        let why = invalid(Superblock {
            data_start: u64::MAX - 4095,
            capacity: u64::MAX,
            ..sb()
        });
        assert!(why.contains("do not fit"), "{why}");
        let why = invalid(Superblock {
            segment_size: 1 << 31,
            segment_count: 1,
            ..sb()
        });
        assert!(why.contains("above 1 GiB"), "{why}");
        let why = invalid(Superblock {
            segment_count: 2000,
            ..sb()
        });
        assert!(why.contains("do not fit"), "{why}");
    }

    #[test]
    fn a_version_2_superblock_is_read_for_conversion_only() {
        let mut b = sb().encode();
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[..Superblock::CRC_AT]);
        b[Superblock::CRC_AT..Superblock::CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Superblock::decode(&b), Err(FormatError::Version(2)));
        assert_eq!(Superblock::decode_versioned(&b), Ok((sb(), 2)));
    }

    #[test]
    fn a_version_1_superblock_is_refused_with_a_reload_hint() {
        let mut b = sb().encode();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&b[..Superblock::CRC_AT]);
        b[Superblock::CRC_AT..Superblock::CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        let e = Superblock::decode(&b).unwrap_err();
        assert_eq!(e, FormatError::Version(1));
        assert_eq!(
            Superblock::decode_versioned(&b),
            Err(FormatError::Version(1))
        );
        let msg = e.to_string();
        assert!(
            msg.contains("format version 1") && msg.contains("reload it (nvkv load --force)"),
            "{msg}"
        );
    }

    #[test]
    fn record_round_trip_and_damage() {
        let meta = RecordMeta {
            gen: 3,
            seq: 9,
            expire_ms: 0,
            flags: 0,
        };
        let mut buf = vec![0xFFu8; 128];
        let n = encode_record(&[1; 16], &meta, b"key\r\n", b"v\0lue", &mut buf);
        assert_eq!(n, 48);
        let r = decode_record(&[1; 16], &buf).unwrap();
        assert_eq!(
            (r.key, r.value, r.meta),
            (&b"key\r\n"[..], &b"v\0lue"[..], meta)
        );
        for i in 0..n.min(42) {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_record(&[1; 16], &bad).is_err(),
                "flip at {i} went unnoticed"
            );
        }
        assert_eq!(
            decode_record(&[1; 16], &buf[..40]).unwrap_err(),
            FormatError::RecordLength
        );
        // The same bytes are no record of another store.
        assert_eq!(
            decode_record(&[2; 16], &buf).unwrap_err(),
            FormatError::RecordChecksum
        );
    }

    #[test]
    fn piece_header_and_head_round_trip() {
        let h = PieceHeader {
            value_id: 77,
            piece: 3,
            len: 4096,
            data_crc: 9,
            shard: 2,
        };
        let mut b = [0u8; 64];
        h.encode(&[1; 16], &mut b);
        assert_eq!(PieceHeader::decode(&b, &[1; 16]), Some(h));
        assert_eq!(PieceHeader::decode(&b, &[2; 16]), None);
        assert_eq!(SegmentHeader::decode(&b, &[1; 16]), None);
        b[17] ^= 1;
        assert_eq!(PieceHeader::decode(&b, &[1; 16]), None);
        let head = LargeHead {
            total_len: 10_000,
            value_id: 77,
            pieces: vec![5, 9, 2],
        };
        let enc = head.encode();
        assert_eq!(LargeHead::decode(&enc), Some(head.clone()));
        assert_eq!(LargeHead::decode(&enc[..enc.len() - 1]), None);
        assert_eq!(head.piece_len(0, 4096), 4096);
        assert_eq!(head.piece_len(2, 4096), 10_000 - 8192);
    }

    #[test]
    fn placement_avoids_straddling() {
        assert_eq!(place_record(32, 100, 4096), 32);
        assert_eq!(place_record(4000, 96, 4096), 4000);
        assert_eq!(place_record(4000, 112, 4096), 4096);
        assert_eq!(place_record(4096, 9000, 4096), 4096);
        assert_eq!(place_record(100, 9000, 4096), 4096);
    }

    #[test]
    fn a_flushing_segment_header_says_so_and_keeps_its_shard() {
        let uuid = [7; 16];
        let of = |first, shards| Some(FlushOf { first, shards });
        for flush in [None, of(0, 1), of(77, 127), of(5, 100)] {
            let hdr = SegmentHeader {
                gen: 9,
                first_seq: 1234,
                shard: 77,
                flush,
            };
            let mut b = [0u8; SEGMENT_HEADER];
            hdr.encode(&uuid, &mut b);
            assert_eq!(SegmentHeader::decode(&b, &uuid), Some(hdr));
        }
        // A header written before the bit existed reads as not flushing.
        let mut b = [0u8; SEGMENT_HEADER];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[24..28].copy_from_slice(&77u32.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&uuid), &b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        let h = SegmentHeader::decode(&b, &uuid).unwrap();
        assert_eq!((h.shard, h.flush), (77, None));
    }

    #[test]
    fn segment_scan_stops_at_other_generation() {
        let hdr = SegmentHeader {
            gen: 5,
            first_seq: 1,
            shard: 0,
            flush: None,
        };
        let mut seg = vec![0u8; 4 * 512];
        hdr.encode(&[1; 16], &mut seg);
        let mut pos = SEGMENT_HEADER as u64;
        // Records packed with padding before block boundaries, then a stale one.
        for (i, (gen, vlen)) in [(5u32, 5), (5, 400), (5, 100), (4, 5)]
            .into_iter()
            .enumerate()
        {
            let meta = RecordMeta {
                gen,
                seq: i as u64,
                expire_ms: 0,
                flags: 0,
            };
            let v = vec![7u8; vlen];
            pos = place_record(pos, record_len(1, vlen), 512);
            pos += encode_record(&[1; 16], &meta, b"k", &v, &mut seg[pos as usize..]) as u64;
        }
        let recs: Vec<_> = SegmentRecords::new(&[1; 16], &seg, &hdr, 512).collect();
        let offsets: Vec<usize> = recs.iter().map(|r| r.0).collect();
        assert_eq!(offsets, vec![32, 512, 1024]);
        assert_eq!(SegmentHeader::decode(&seg, &[1; 16]), Some(hdr));
        assert_eq!(SegmentHeader::decode(&seg, &[2; 16]), None);
    }
}
