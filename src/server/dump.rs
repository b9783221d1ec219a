//! DUMP and RESTORE's serialized values, in Redis's format for a string:
//!
//! ```text
//! type byte 0 (string) | RDB string | RDB version u16 LE | CRC-64 (Jones, as Redis) LE
//! ```
//!
//! An RDB string is a length-prefixed byte string, an integer (8, 16 or
//! 32 bits), or LZF-compressed bytes. [`encode`] writes what Redis writes,
//! except that it never compresses (a value Redis would compress is
//! written plain, which Redis's RESTORE reads as well); [`decode`] reads
//! all three. Nothing here knows RESP: errors are typed, and the server
//! turns them into Redis's texts.

use crc::{Crc, Digest, Table, CRC_64_REDIS};

/// The RDB version DUMP writes: Redis 7.0's.
pub const RDB_VERSION: u16 = 10;
/// The newest RDB version RESTORE takes: Redis 7.4's (7.2 writes 11). A
/// string is encoded the same way in all three, so keys dumped by a newer
/// Redis move to nvkv too; Redis 7.0 itself refuses anything after 10.
pub const RESTORE_MAX_VERSION: u16 = 12;

/// The RDB object type of a string.
const TYPE_STRING: u8 = 0;
/// A length's first two bits: 6-bit, 14-bit, 32/64-bit length, or a
/// special encoding.
const LEN_6: u8 = 0;
const LEN_14: u8 = 1;
const LEN_32: u8 = 0x80;
const LEN_64: u8 = 0x81;
const ENCVAL: u8 = 3;
const ENC_INT8: u8 = 0;
const ENC_INT16: u8 = 1;
const ENC_INT32: u8 = 2;
const ENC_LZF: u8 = 3;

/// Slice-by-16 tables: a large value's DUMP runs its whole value through
/// it.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Why a payload is refused, as Redis tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpError {
    /// Shorter than its footer, from a newer RDB version, or with a wrong
    /// checksum.
    VersionOrChecksum,
    /// Not a string, or not a well formed one.
    BadFormat,
}

/// The serialized form of the string `value`.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 24);
    out.push(TYPE_STRING);
    match as_small_int(value) {
        Some(n) => encode_int(&mut out, n),
        None => {
            encode_len(&mut out, value.len() as u64);
            out.extend_from_slice(value);
        }
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The serialized form of a string too large to hold whole, made as its
/// bytes pass (a large value's DUMP, sent as it is read): the bytes
/// before the value ([`Streamed::start`]), the value, then those after it
/// ([`Streamed::finish`]), with the checksum carried along. The same bytes
/// as [`encode`] for a string that is no small integer.
pub struct Streamed {
    digest: Digest<'static, u64, Table<16>>,
}

impl Streamed {
    /// For a string of `len` bytes (not a small integer): the payload's
    /// length, and its bytes before the value.
    pub fn start(len: u64) -> (Streamed, u64, Vec<u8>) {
        let mut before = vec![TYPE_STRING];
        encode_len(&mut before, len);
        let mut digest = CRC64.digest();
        digest.update(&before);
        let total = before.len() as u64 + len + 10;
        (Streamed { digest }, total, before)
    }

    /// The next bytes of the value.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The bytes after the value: the RDB version and the checksum.
    pub fn finish(mut self) -> [u8; 10] {
        let version = RDB_VERSION.to_le_bytes();
        self.digest.update(&version);
        let mut out = [0; 10];
        out[..2].copy_from_slice(&version);
        out[2..].copy_from_slice(&self.digest.finalize().to_le_bytes());
        out
    }
}

/// The string a payload holds, checked as Redis's RESTORE checks it.
pub fn decode(payload: &[u8]) -> Result<Vec<u8>, DumpError> {
    if payload.len() < 10 {
        return Err(DumpError::VersionOrChecksum);
    }
    let footer = &payload[payload.len() - 10..];
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    if version > RESTORE_MAX_VERSION {
        return Err(DumpError::VersionOrChecksum);
    }
    let crc = CRC64.checksum(&payload[..payload.len() - 8]);
    if crc.to_le_bytes() != footer[2..] {
        return Err(DumpError::VersionOrChecksum);
    }
    // Redis reads the object from the whole buffer (its reader is not
    // bounded by the footer); so does this.
    let mut r = Reader { buf: payload };
    // Another type (a list, a hash, …) is not for nvkv, which holds
    // strings only.
    match r.byte()? {
        TYPE_STRING => r.string(),
        _ => Err(DumpError::BadFormat),
    }
}

/// The integer Redis stores a string as, in a DUMP: one that prints back
/// the same, of at most 11 characters, and within 32 bits.
fn as_small_int(v: &[u8]) -> Option<i32> {
    if v.is_empty() || v.len() > 11 {
        return None;
    }
    let n: i32 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == v).then_some(n)
}

fn encode_int(out: &mut Vec<u8>, n: i32) {
    if let Ok(b) = i8::try_from(n) {
        out.push(ENCVAL << 6 | ENC_INT8);
        out.push(b as u8);
    } else if let Ok(h) = i16::try_from(n) {
        out.push(ENCVAL << 6 | ENC_INT16);
        out.extend_from_slice(&h.to_le_bytes());
    } else {
        out.push(ENCVAL << 6 | ENC_INT32);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// An RDB length: 6 or 14 bits in one or two bytes, or 32 or 64 bits
/// big-endian after a marker byte.
fn encode_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(LEN_6 << 6 | len as u8);
    } else if len < 1 << 14 {
        out.push(LEN_14 << 6 | (len >> 8) as u8);
        out.push(len as u8);
    } else if let Ok(l) = u32::try_from(len) {
        out.push(LEN_32);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(LEN_64);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

/// A length, or a special encoding of a string.
enum Len {
    Plain(u64),
    Encoded(u8),
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], DumpError> {
        let n = usize::try_from(n).map_err(|_| DumpError::BadFormat)?;
        if n > self.buf.len() {
            return Err(DumpError::BadFormat);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, DumpError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<Len, DumpError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3f)),
            1 => Len::Plain(u64::from(first & 0x3f) << 8 | u64::from(self.byte()?)),
            3 => Len::Encoded(first & 0x3f),
            _ if first == LEN_32 => {
                let b = self.take(4)?;
                Len::Plain(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            }
            _ if first == LEN_64 => {
                let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                Len::Plain(u64::from_be_bytes(b))
            }
            _ => return Err(DumpError::BadFormat),
        })
    }

    fn plain_len(&mut self) -> Result<u64, DumpError> {
        match self.len()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(_) => Err(DumpError::BadFormat),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, DumpError> {
        match self.len()? {
            Len::Plain(n) => Ok(self.take(n)?.to_vec()),
            Len::Encoded(ENC_INT8) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Len::Encoded(ENC_INT16) => {
                let b = self.take(2)?;
                Ok(i16::from_le_bytes([b[0], b[1]]).to_string().into_bytes())
            }
            Len::Encoded(ENC_INT32) => {
                let b = self.take(4)?;
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                Ok(n.to_string().into_bytes())
            }
            Len::Encoded(ENC_LZF) => {
                let clen = self.plain_len()?;
                let len = self.plain_len()?;
                let packed = self.take(clen)?;
                // No more than the payload could expand to (an LZF
                // back reference writes at most 264 bytes from 2).
                if len == 0 || len > packed.len() as u64 * 132 + 32 {
                    return Err(DumpError::BadFormat);
                }
                lzf_decompress(packed, len as usize).ok_or(DumpError::BadFormat)
            }
            Len::Encoded(_) => Err(DumpError::BadFormat),
        }
    }
}

/// LZF decompression (liblzf's `lzf_decompress`, with its input checks):
/// the `out_len` bytes `input` expands to, or `None` when it is malformed
/// or expands to any other length.
fn lzf_decompress(input: &[u8], out_len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(out_len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 1 << 5 {
            // A literal run of ctrl + 1 bytes.
            let n = ctrl + 1;
            if out.len() + n > out_len || i + n > input.len() {
                return None;
            }
            out.extend_from_slice(&input[i..i + n]);
            i += n;
        } else {
            // A back reference: length (+ 2) and distance (+ 1).
            let mut len = ctrl >> 5;
            if len == 7 {
                len += *input.get(i)? as usize;
                i += 1;
            }
            let low = *input.get(i)? as usize;
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            let len = len + 2;
            if out.len() + len > out_len || back > out.len() {
                return None;
            }
            let from = out.len() - back;
            for k in 0..len {
                // Byte by byte: the areas may overlap.
                let b = out[from + k];
                out.push(b);
            }
        }
    }
    (out.len() == out_len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made as its bytes pass, in uneven steps, a payload is `encode`'s.
    #[test]
    fn a_streamed_payload_is_the_whole_one() {
        for len in [64usize, 20_000, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (mut st, total, mut out) = Streamed::start(len as u64);
            for chunk in v.chunks(7_777) {
                st.update(chunk);
                out.extend_from_slice(chunk);
            }
            out.extend_from_slice(&st.finish());
            assert_eq!(total as usize, out.len());
            assert!(out == encode(&v), "{len} bytes");
            assert!(decode(&out).unwrap() == v);
        }
    }

    /// Payloads of Redis 7.0's DUMP (redis-server 7.0.15).
    #[test]
    fn reads_what_redis_dumps() {
        // DUMP of "hello", of 123 and of -40000.
        let hello = b"\x00\x05hello\n\x00cr\xdfve4 \n";
        assert_eq!(decode(hello), Ok(b"hello".to_vec()));
        assert_eq!(encode(b"hello"), hello);
        for v in [
            "123",
            "-40000",
            "0",
            "-128",
            "127",
            "128",
            "2147483647",
            "-2147483648",
        ] {
            assert_eq!(
                decode(&encode(v.as_bytes())),
                Ok(v.as_bytes().to_vec()),
                "{v}"
            );
        }
        assert_eq!(&encode(b"123")[..3], b"\x00\xc0\x7b");
        assert_eq!(&encode(b"-40000")[..6], b"\x00\xc2\xc0\x63\xff\xff");
        // Not integers Redis would encode as such.
        for v in ["0123", "-0", "2147483648", "+1", " 1", "12345678901"] {
            let p = encode(v.as_bytes());
            assert_eq!(p[1] as usize, v.len(), "{v}");
            assert_eq!(decode(&p), Ok(v.as_bytes().to_vec()));
        }
    }

    /// Redis's DUMP of 1,000 times "a": LZF-compressed.
    #[test]
    fn reads_redis_compressed_strings() {
        let big = b"\x00\xc3\x12C\xe8\x01aa\xe0\xff\x00\xe0\xff\x00\xe0\xff\x00\xe0\xc3\x00\x01aa\n\x00\x86\xc2\x12\xdbT\x81\x9e<";
        assert_eq!(decode(big), Ok(vec![b'a'; 1000]));
    }

    #[test]
    fn lengths_of_every_size_round_trip() {
        for n in [0, 1, 63, 64, 16383, 16384, 70000] {
            let v = vec![b'x'; n];
            assert_eq!(decode(&encode(&v)), Ok(v), "{n}");
        }
    }

    #[test]
    fn refuses_newer_versions_bad_checksums_and_other_types() {
        let mut p = encode(b"hello");
        let n = p.len();
        p[n - 1] ^= 1;
        assert_eq!(decode(&p), Err(DumpError::VersionOrChecksum));
        assert_eq!(decode(b"short"), Err(DumpError::VersionOrChecksum));
        // Versions 11 and 12 (Redis 7.2, 7.4) are read, 13 is not.
        for (version, ok) in [(11, true), (12, true), (13, false)] {
            let mut p = vec![0, 1, b'x', version, 0];
            let crc = CRC64.checksum(&p);
            p.extend_from_slice(&crc.to_le_bytes());
            let want = if ok {
                Ok(b"x".to_vec())
            } else {
                Err(DumpError::VersionOrChecksum)
            };
            assert_eq!(decode(&p), want, "{version}");
        }
        // Redis's DUMP of a list of one element (type 18, quicklist 2).
        let list = b"\x12\x01\x02\n\n\x00\x00\x00\x01\x00\x81a\x02\xff\n\x00\t\xb9\xed\xf5\x94\xde\xd9\x95";
        assert_eq!(decode(list), Err(DumpError::BadFormat));
    }

    #[test]
    fn lzf_expands_literals_and_overlapping_references() {
        // "abc" then a reference 3 back of length 9: "abcabcabcabc".
        let packed = [2, b'a', b'b', b'c', (7 << 5), 0, 2];
        // len 7 + 0 + 2 = 9.
        assert_eq!(
            lzf_decompress(&packed, 12).as_deref(),
            Some(&b"abcabcabcabc"[..])
        );
        assert_eq!(lzf_decompress(&packed, 13), None);
        assert_eq!(lzf_decompress(&[(1 << 5), 0], 3), None);
    }
}
