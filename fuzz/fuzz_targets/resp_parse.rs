//! The RESP parser on arbitrary input: no panic, no allocation driven by a
//! claimed length, consumed bytes and arguments within the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvkv::server::resp::{parse_command, Limits};

fuzz_target!(|data: &[u8]| {
    for limits in [
        Limits::default(),
        Limits {
            max_bulk: 1 << 20,
            max_args: 1024,
            max_inline: 4096,
        },
    ] {
        let mut args = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            match parse_command(&data[pos..], &limits, &mut args) {
                Ok(Some(n)) => {
                    assert!(n > 0 && pos + n <= data.len());
                    assert!(args.iter().all(|r| r.start <= r.end && r.end <= n));
                    pos += n;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
});
