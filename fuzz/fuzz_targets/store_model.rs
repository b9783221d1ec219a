//! The write path against a model of what was acknowledged (see
//! `nvkv::store::model`): the bytes are a sequence of SETs, DELs, EXPIREs,
//! time moving on, compaction and eviction turns, injected device faults,
//! crashes and clean restarts, run on a real store file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    if let Err(e) = nvkv::store::model::run(dir.path(), data) {
        panic!("{e}");
    }
});
