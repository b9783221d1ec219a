//! The file engines' end-to-end suites again, on the spdk engine: the read
//! path, the write path and SET's options, with every store on a namespace
//! of its own on an NVMe-oF/TCP loopback target that the harness starts at
//! first use and stops at exit (tests/common/nvmf.rs). Namespaces of 4 KiB
//! and 512-byte blocks alternate between tests. The few tests that edit the
//! data file itself skip themselves (there is none on a namespace).
//!
//! Built only with `--features spdk`; needs SPDK's nvmf_tgt and rpc.py (or
//! spdk_rpc.py) on PATH, and hugepages for the target.
#![cfg(feature = "spdk")]
// Each suite brings its own `mod common;` (the harness), as in its own
// test binary.
#![allow(clippy::duplicate_mod)]

#[path = "read_path.rs"]
mod read_path;
#[path = "set_options.rs"]
mod set_options;
#[path = "write_path.rs"]
mod write_path;
