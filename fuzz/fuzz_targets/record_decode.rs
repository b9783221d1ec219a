//! Record decoding on arbitrary bytes; what decodes re-encodes to the same
//! record, and a segment scan over arbitrary bytes stays in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::format::{decode_record, encode_record, record_len, SegmentHeader, SegmentRecords};

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = decode_record(data) {
        let mut out = vec![0u8; record_len(rec.key.len(), rec.value.len()) as usize];
        encode_record(&rec.meta, rec.key, rec.value, &mut out);
        let again = decode_record(&out).expect("a re-encoded record decodes");
        assert_eq!(
            (again.key, again.value, again.meta),
            (rec.key, rec.value, rec.meta)
        );
    }
    let header = SegmentHeader {
        gen: 7,
        first_seq: 1,
        shard: 0,
    };
    let mut last = 0;
    for (at, rec) in SegmentRecords::new(data, &header, 512) {
        assert!(at >= last && at + rec.len as usize <= data.len() + 16);
        last = at + 1;
    }
});
