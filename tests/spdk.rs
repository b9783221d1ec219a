//! The spdk engine end to end, against a real NVMe controller: SPDK's
//! NVMe-oF/TCP target on loopback (scripts/nvmf-target.sh), backed by RAM,
//! reached through the same driver API as a PCIe device. Built only with
//! `--features spdk`; the target needs SPDK's nvmf_tgt and RPC client
//! (found as scripts/nvmf-target.sh says). Without them the binary skips
//! itself with one line saying why.
//!
//! Every SPDK process here runs without PCI access (nvmf_tgt --no-pci; nvkv
//! sets no_pci for a TCP transport ID).
#![cfg(feature = "spdk")]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::nvmf::{free_port, Target};
use common::{run_on, Server, BIN, SPDK_ENV};
use nvkv::keys;
use redis::Commands;

/// Namespaces of the shared target: odd ones in 4 KiB blocks, even ones
/// in 512-byte blocks; each test takes its own.
const NAMESPACES: u32 = 12;
const NS_MIB: u32 = 192;

/// Before the test harness starts: without a target, the whole binary is
/// skipped with one line.
#[used]
#[link_section = ".init_array"]
static SKIP_WITHOUT_A_TARGET: extern "C" fn() = {
    extern "C" fn check() {
        common::nvmf::skip_unless_a_target_can_start("spdk", NAMESPACES, NS_MIB);
    }
    check
};

/// The target, shared by the tests that run at the same time; it stops
/// when the last of them is done.
fn target() -> Arc<Target> {
    static SHARED: Mutex<Weak<Target>> = Mutex::new(Weak::new());
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = g.upgrade() {
        return t;
    }
    let t = Arc::new(Target::start(NAMESPACES, NS_MIB));
    *g = Arc::downgrade(&t);
    t
}

/// A namespace nobody else uses, with 4 KiB blocks or 512-byte ones.
fn namespace(block_512: bool) -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed) % (NAMESPACES / 2);
    2 * k + 1 + u32::from(block_512)
}

/// A store on a fresh namespace, loaded with `keys` records.
fn load(t: &Target, nsid: u32, keys: u64, seed: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["load", "--path"])
        .arg(dir.path())
        .args(["--keys", &keys.to_string(), "--seed", &seed.to_string()])
        .args(["--min-size", "100", "--max-size", "5000"])
        .args([
            "--device",
            &t.trid(),
            "--nsid",
            &nsid.to_string(),
            "--force",
        ])
        .args(["--capacity", &format!("{}M", NS_MIB)])
        .args(SPDK_ENV)
        .output()
        .expect("run nvkv load");
    assert!(
        out.status.success(),
        "load on ns {nsid} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn serve(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--pin", "false", "--poll", "adaptive"];
    args.extend(SPDK_ENV);
    args.extend(extra);
    Server::start(dir, &args)
}

fn check_sample(srv: &Server, seed: u64, keys: u64) {
    let mut con = srv.client();
    for i in (0..keys).step_by(7) {
        let got: Option<Vec<u8>> = con.get(keys::key(seed, i)).unwrap();
        assert_eq!(got, Some(keys::value(seed, i, 100, 5000)), "key {i}");
    }
}

#[test]
fn load_serve_get_exact_bytes_in_both_block_sizes() {
    let t = target();
    for block_512 in [false, true] {
        let nsid = namespace(block_512);
        let dir = load(&t, nsid, 3000, 5);
        let srv = serve(dir.path(), &["--io-threads", "2"]);
        assert_eq!(srv.info_field("engine"), "Spdk");
        check_sample(&srv, 5, 3000);
        let mut con = srv.client();
        let missing: Option<Vec<u8>> = con.get("no-such-key").unwrap();
        assert_eq!(missing, None);
        let ks: Vec<Vec<u8>> = (0..50).map(|i| keys::key(5, i)).collect();
        let vals: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&ks).query(&mut con).unwrap();
        for (i, v) in vals.into_iter().enumerate() {
            assert_eq!(v, Some(keys::value(5, i as u64, 100, 5000)));
        }
        srv.stop();
        let out = run_on(
            &["check", "--spdk-no-huge", "--spdk-mem", "256", "--path"],
            dir.path(),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "check on ns {nsid}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("OK"), "{text}");
    }
}

#[test]
fn writes_survive_clean_restart_and_crash() {
    let t = target();
    let dir = load(&t, namespace(false), 500, 6);
    let srv = serve(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..300u32 {
        let _: () = con
            .set(format!("w:{i}"), vec![i as u8; 100 + i as usize * 13])
            .unwrap();
    }
    let _: () = con.del("w:7").unwrap();
    let _: () = redis::cmd("SET")
        .arg("w:ttl")
        .arg("soon")
        .arg("EX")
        .arg(1)
        .query(&mut con)
        .unwrap();
    srv.stop();

    // Clean shutdown: the index is mapped, not rebuilt.
    let srv = serve(dir.path(), &[]);
    assert_eq!(srv.info_field("recovery_bytes_read"), "0");
    let mut con = srv.client();
    let v: Option<Vec<u8>> = con.get("w:299").unwrap();
    assert_eq!(v, Some(vec![43u8; 100 + 299 * 13]));
    let gone: Option<Vec<u8>> = con.get("w:7").unwrap();
    assert_eq!(gone, None);
    for i in 300..400u32 {
        let _: () = con.set(format!("w:{i}"), vec![i as u8; 2000]).unwrap();
    }
    srv.kill();

    // A crash: the index is rebuilt from the namespace; every acknowledged
    // (sync) write is there, deletes stay deleted, expired keys are gone.
    std::thread::sleep(Duration::from_millis(1100));
    let srv = serve(dir.path(), &[]);
    assert_ne!(srv.info_field("recovery_bytes_read"), "0");
    let mut con = srv.client();
    for i in (0..400u32).filter(|&i| i != 7) {
        let v: Option<Vec<u8>> = con.get(format!("w:{i}")).unwrap();
        let len = if i < 300 { 100 + i as usize * 13 } else { 2000 };
        assert_eq!(v, Some(vec![i as u8; len]), "w:{i}");
    }
    let gone: Option<Vec<u8>> = con.get("w:7").unwrap();
    assert_eq!(gone, None);
    let expired: Option<Vec<u8>> = con.get("w:ttl").unwrap();
    assert_eq!(expired, None);
    check_sample(&srv, 6, 500);
    srv.stop();
}

/// What a start that cannot reach its namespace prints, and that it fails.
fn start_fails(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--path"])
        .arg(dir)
        .args(SPDK_ENV)
        .output()
        .expect("run nvkv serve");
    assert!(!out.status.success(), "serve started on a bad namespace");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn store_on(trid: &str, nsid: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("data.nvme"),
        format!("trid = {:?}\nnsid = {nsid}\n", trid),
    )
    .unwrap();
    dir
}

#[test]
fn bad_transport_ids_and_namespaces_are_clear_errors() {
    let t = target();
    let dir = store_on("trtype:TCP traddr", 1);
    let err = start_fails(dir.path());
    assert!(err.contains("does not parse"), "{err}");
    let dir = store_on("trtype:NOPE traddr:x", 1);
    let err = start_fails(dir.path());
    assert!(err.contains("not available"), "{err}");

    let dir = store_on(
        &format!(
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:nqn.2016-06.io.spdk:none",
            free_port()
        ),
        1,
    );
    let err = start_fails(dir.path());
    assert!(err.contains("no NVMe controller answered"), "{err}");

    let dir = store_on(&t.trid(), 99);
    let err = start_fails(dir.path());
    assert!(err.contains("namespace 99 does not exist"), "{err}");

    // Loading refuses the same way, and leaves no store behind.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["load", "--keys", "10", "--path"])
        .arg(dir.path())
        .args(["--device", &t.trid(), "--nsid", "99"])
        .args(SPDK_ENV)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!dir.path().join("data.nvme").exists());
}

#[test]
fn a_vanished_namespace_gives_error_replies_and_the_server_lives() {
    let t = target();
    let nsid = namespace(false);
    let dir = load(&t, nsid, 2000, 8);
    let srv = serve(dir.path(), &[]);
    check_sample(&srv, 8, 2000);
    // The namespace disappears under the running server.
    t.rpc(&[
        "nvmf_subsystem_remove_ns",
        &format!("nqn.2016-06.io.spdk:nvkv-{}", t.port),
        &nsid.to_string(),
    ]);
    let mut con = srv.client();
    let mut errors = 0;
    for i in 0..200 {
        match con.get::<_, Option<Vec<u8>>>(keys::key(8, i)) {
            Err(e) => {
                assert!(
                    e.to_string().contains("I/O error")
                        || e.to_string().contains("IOERR")
                        || e.to_string().contains("error"),
                    "{e}"
                );
                errors += 1;
            }
            // A value that comes back is still the right one.
            Ok(v) => assert_eq!(v, Some(keys::value(8, i, 100, 5000))),
        }
    }
    assert!(errors > 0, "reads of a removed namespace all succeeded");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let n: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(n, 2000);
    drop(srv);
}
