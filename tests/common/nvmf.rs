//! An NVMe-oF/TCP target on loopback for the spdk engine's tests: SPDK's
//! `nvmf_tgt` (started without PCI access by scripts/nvmf-target.sh) with
//! RAM namespaces, a real NVMe controller reached through the same driver
//! API as a PCIe device.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A running target; stopped when dropped.
pub struct Target {
    pub port: u16,
    pub state: tempfile::TempDir,
}

impl Target {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nvmf-target.sh")
    }

    /// Starts a target with `namespaces` namespaces of `size_mb` MiB each,
    /// odd ones in 4 KiB blocks and even ones in 512-byte blocks.
    pub fn start(namespaces: u32, size_mb: u32) -> Target {
        let port = free_port();
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(Self::script())
            .args(["start", "--port", &port.to_string()])
            .args(["--namespaces", &namespaces.to_string()])
            .args([
                "--size-mb",
                &size_mb.to_string(),
                "--block-size",
                "4096,512",
            ])
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("run scripts/nvmf-target.sh");
        assert!(
            out.status.success(),
            "the NVMe-oF target did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Target { port, state }
    }

    /// The transport ID nvkv attaches with.
    pub fn trid(&self) -> String {
        format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{0} subnqn:nqn.2016-06.io.spdk:nvkv-{0}",
            self.port
        )
    }

    /// Runs one of SPDK's RPCs against the target, through the script's
    /// `rpc` (which finds SPDK's RPC client).
    pub fn rpc(&self, args: &[&str]) {
        let out = Command::new(Self::script())
            .args(["rpc", "--port", &self.port.to_string(), "--state-dir"])
            .arg(self.state.path())
            .args(args)
            .output()
            .expect("run scripts/nvmf-target.sh rpc");
        assert!(
            out.status.success(),
            "rpc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let _ = Command::new(Self::script())
            .args(["stop", "--port", &self.port.to_string(), "--state-dir"])
            .arg(self.state.path())
            .output();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends the test binary `binary` before its tests run, with one line on
/// stderr, when no target of `namespaces` namespaces of `size_mb` MiB can
/// start here (no nvmf_tgt, no SPDK RPC client that runs, no memory for
/// it): `scripts/nvmf-target.sh check` says why. Called by a constructor
/// of the binary, before the test harness starts (`--list` still lists).
pub fn skip_unless_a_target_can_start(binary: &str, namespaces: u32, size_mb: u32) {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let out = Command::new(Target::script())
        .args(["check", "--namespaces", &namespaces.to_string()])
        .args(["--size-mb", &size_mb.to_string()])
        .output();
    let why = match out {
        Ok(o) if o.status.success() => return,
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("scripts/nvmf-target.sh does not run: {e}"),
    };
    eprintln!("{binary}: SKIPPED, no NVMe-oF target can start here: {why}");
    std::process::exit(0);
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Namespaces of the suites' target, and their size: each test running at
/// the same time has one of its own, of either block size in turn, with
/// room for the 128 MiB stores the harness makes there. (Each suite module
/// of tests/spdk_suites.rs has its own copy of this harness, and so its own
/// target: three of them need about 3 GiB of hugepages.)
pub const SUITE_NAMESPACES: u32 = 3;
pub const SUITE_NS_MIB: u32 = 160;

static SUITE: OnceLock<Target> = OnceLock::new();
static FREE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

extern "C" fn stop_suite_target() {
    if let Some(t) = SUITE.get() {
        t.stop();
    }
}

/// A namespace lent to one test (its thread) and given back when it ends.
struct Lease(u32);

impl Drop for Lease {
    fn drop(&mut self) {
        FREE.lock().unwrap_or_else(|e| e.into_inner()).push(self.0);
    }
}

thread_local! {
    static LEASE: RefCell<Option<Lease>> = const { RefCell::new(None) };
}

/// The transport ID and namespace of the calling test's store, for the
/// file engines' suites run on SPDK (tests/spdk_suites.rs): one target for
/// the whole run, started at first use and stopped when the process exits.
pub fn suite_namespace() -> (String, String) {
    let target = SUITE.get_or_init(|| {
        let t = Target::start(SUITE_NAMESPACES, SUITE_NS_MIB);
        // Odd namespaces (4 KiB blocks) and even ones (512 bytes) alternate.
        *FREE.lock().unwrap() = (1..=SUITE_NAMESPACES).rev().collect();
        // SAFETY: registers a plain function with no arguments, run once at
        // exit; it only runs the target's stop script.
        unsafe { libc::atexit(stop_suite_target) };
        t
    });
    let nsid = LEASE.with(|l| {
        l.borrow_mut()
            .get_or_insert_with(|| {
                let n = FREE
                    .lock()
                    .unwrap()
                    .pop()
                    .expect("more tests at once than the target has namespaces");
                Lease(n)
            })
            .0
    });
    (target.trid(), nsid.to_string())
}

/// Whether this test binary is the one that runs the file engines' suites
/// on SPDK.
pub fn in_suites() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|n| n.starts_with("spdk_suites-"))
}
