//! The RESP parser on arbitrary input: no panic, no allocation driven by a
//! claimed length, consumed bytes and arguments within the input; and the
//! resumable parser, fed the same input in pieces, agrees with one parse of
//! the whole (same commands, same arguments, an error where it errs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::resp::{parse_command, parse_resumable, Limits, Resume};
use std::ops::Range;

/// Commands parsed from the front of `data`, then whether parsing stopped
/// on an error (rather than on input that ends inside a command).
fn whole(data: &[u8], limits: &Limits) -> (Vec<Vec<Range<usize>>>, bool) {
    let mut out = Vec::new();
    let mut args = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        match parse_command(&data[pos..], limits, &mut args) {
            Ok(Some(n)) => {
                assert!(n > 0 && pos + n <= data.len());
                assert!(args.iter().all(|r| r.start <= r.end && r.end <= n));
                out.push(args.iter().map(|r| r.start + pos..r.end + pos).collect());
                pos += n;
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// The same, with the input arriving `step` bytes at a time.
fn in_pieces(data: &[u8], limits: &Limits, step: usize) -> (Vec<Vec<Range<usize>>>, bool) {
    let mut out = Vec::new();
    let mut st = Resume::default();
    let mut pos = 0;
    let mut end = 0;
    while end < data.len() {
        end = (end + step).min(data.len());
        loop {
            if pos == end {
                break;
            }
            match parse_resumable(&data[pos..end], limits, &mut st) {
                Ok(Some(n)) => {
                    assert!(n > 0 && pos + n <= end);
                    out.push(st.args.iter().map(|r| r.start + pos..r.end + pos).collect());
                    pos += n;
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let small = Limits {
        max_bulk: 1 << 20,
        max_args: 1024,
        max_inline: 4096,
        unauthenticated: false,
    };
    for limits in [Limits::default(), small, Limits::pre_auth()] {
        let reference = whole(data, &limits);
        let step = 1 + data.first().map_or(0, |b| usize::from(b % 7));
        assert_eq!(in_pieces(data, &limits, step), reference);
    }
});
