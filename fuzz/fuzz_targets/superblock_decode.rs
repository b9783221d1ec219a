//! Superblock and segment header decoding on arbitrary bytes: what decodes
//! encodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::format::{SegmentHeader, Superblock};

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }
    let uuid = [3u8; 16];
    if let Some(h) = SegmentHeader::decode(data, &uuid) {
        let mut out = [0u8; 32];
        h.encode(&uuid, &mut out);
        assert_eq!(SegmentHeader::decode(&out, &uuid), Some(h));
    }
});
