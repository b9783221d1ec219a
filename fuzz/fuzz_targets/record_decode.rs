//! Record decoding on arbitrary bytes; what decodes re-encodes to the same
//! record, a record never passes for one of another store, a segment
//! header that decodes re-encodes to its bytes, and a segment scan over
//! arbitrary bytes stays in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::format::{
    decode_record, encode_record, record_len, SegmentHeader, SegmentRecords, SEGMENT_HEADER,
};

const UUID: [u8; 16] = [0x5A; 16];
const OTHER: [u8; 16] = [0xA5; 16];

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = decode_record(&UUID, data) {
        let mut out = vec![0u8; record_len(rec.key.len(), rec.value.len()) as usize];
        encode_record(&UUID, &rec.meta, rec.key, rec.value, &mut out);
        let again = decode_record(&UUID, &out).expect("a re-encoded record decodes");
        assert_eq!(
            (again.key, again.value, again.meta),
            (rec.key, rec.value, rec.meta)
        );
        assert!(
            decode_record(&OTHER, &out).is_err(),
            "a record passed for one of another store"
        );
    }
    // A segment header that decodes encodes back to the same bytes (a
    // flushing one's shard, first shard and count included).
    if let Some(h) = SegmentHeader::decode(data, &UUID) {
        let mut out = [0u8; SEGMENT_HEADER];
        h.encode(&UUID, &mut out);
        assert_eq!(&out[..], &data[..SEGMENT_HEADER]);
    }
    let header = SegmentHeader {
        gen: 7,
        first_seq: 1,
        shard: 0,
        flush: None,
    };
    let mut last = 0;
    for (at, rec) in SegmentRecords::new(&UUID, data, &header, 512) {
        assert!(at >= last && at + rec.len as usize <= data.len() + 16);
        last = at + 1;
    }
});
