//! The file engines' end-to-end suites again, on the spdk engine: pollers
//! inside the connection threads, the read path, the write path, SET's
//! options and the space lifecycle (expiry, eviction, compaction across
//! restarts and kills), with every store on a namespace of its own on an
//! NVMe-oF/TCP loopback target that the harness starts at first use and
//! stops at exit (tests/common/nvmf.rs). Namespaces of 4 KiB
//! and 512-byte blocks alternate between tests. The few tests that edit the
//! data file itself skip themselves (there is none on a namespace).
//!
//! Built only with `--features spdk`; needs SPDK's nvmf_tgt and RPC client
//! (found as scripts/nvmf-target.sh says), and hugepages for the target.
//! Without them the binary skips itself with one line saying why.
#![cfg(feature = "spdk")]
// Each suite brings its own `mod common;` (the harness), as in its own
// test binary; this file has one more, for the check below.
#![allow(clippy::duplicate_mod)]

mod common;

/// Before the test harness starts: without a target, the whole binary is
/// skipped with one line.
#[used]
#[link_section = ".init_array"]
static SKIP_WITHOUT_A_TARGET: extern "C" fn() = {
    extern "C" fn check() {
        common::nvmf::skip_unless_a_target_can_start(
            "spdk_suites",
            common::nvmf::SUITE_NAMESPACES,
            common::nvmf::SUITE_NS_MIB,
        );
    }
    check
};

#[path = "inline_io.rs"]
mod inline_io;
#[path = "read_path.rs"]
mod read_path;
#[path = "set_options.rs"]
mod set_options;
#[path = "space_lifecycle.rs"]
mod space_lifecycle;
#[path = "write_path.rs"]
mod write_path;
