//! The pollers' submission figures in INFO (`poller0:submits_per_sec=…,
//! mean_batch=…,max_batch=…`) under each way of feeding the device.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use common::{load, wait_for, Server};
use nvkv::keys;

const KEYS: u64 = 2000;
const SEED: u64 = 5;

/// The figures of poller 0 in INFO, by name.
fn poller0(srv: &Server) -> Vec<(String, f64)> {
    srv.info_field("poller0")
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// Runs pipelines of 32 GETs until a sampling window shows submissions,
/// and returns poller 0's figures for that window.
fn figures_under_load(srv: &Server) -> Vec<(String, f64)> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut con = srv.client();
            let mut round = 0u64;
            while !stop.load(Relaxed) {
                let mut pipe = redis::pipe();
                for j in 0..32u64 {
                    pipe.get(keys::key(SEED, (round * 32 + j * 61) % KEYS));
                }
                let _: Vec<Option<Vec<u8>>> = pipe.query(&mut con).unwrap();
                round += 1;
            }
        });
        let mut got = Vec::new();
        wait_for("a sampling window with submissions", || {
            got = poller0(srv);
            got.iter().find(|(k, _)| k == "submits_per_sec").unwrap().1 > 0.0
        });
        stop.store(true, Relaxed);
        got
    })
}

fn get(f: &[(String, f64)], name: &str) -> f64 {
    f.iter().find(|(k, _)| k == name).unwrap().1
}

/// `waves` sends each read in a call of its own: every one is a
/// submission of one operation, including those sent the moment a wave
/// completes. `stream` sends a turn's reads in one call.
#[test]
fn a_wave_counts_one_submission_per_operation_and_a_stream_one_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, 100, 3000, SEED);
    for feed in ["waves", "stream"] {
        let srv = Server::start(dir.path(), &["--io-feed", feed]);
        let f = figures_under_load(&srv);
        let (mean, max) = (get(&f, "mean_batch"), get(&f, "max_batch"));
        match feed {
            "waves" => assert_eq!((mean, max), (1.0, 1.0), "{feed}: {f:?}"),
            _ => assert!(mean >= 1.0 && max >= 1.0, "{feed}: {f:?}"),
        }
        srv.stop();
    }
}

/// A request that finds its poller parked rings the doorbell, and the
/// wake-up is counted: in the poller's INFO line (count and percentiles)
/// and in the figures INFO and /metrics share.
#[test]
fn a_parked_poller_counts_its_doorbell_wake_ups() {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, 100, 300, SEED);
    // Park at once when idle, so every lone request wakes the poller.
    // And with a poller thread of its own (`--inline-io off`): a poller
    // run inside its connection thread is never rung for that thread's
    // requests. One poller: its line counts every wake-up.
    let one = ["--tcp-threads", "1", "--io-threads", "1"];
    let srv = Server::start(
        dir.path(),
        &[&one[..], &["--spin-us", "0", "--inline-io", "off"]].concat(),
    );
    let mut con = srv.client();
    let wakeups = |srv: &Server| -> u64 { srv.info_field("poller_wakeups").parse().unwrap() };
    assert_eq!(get(&poller0(&srv), "wakeups"), wakeups(&srv) as f64);
    let before = wakeups(&srv);
    // One at a time: after each reply the poller has nothing to do and
    // parks, so the next GET finds it asleep (or on its way there).
    for i in 0..20 {
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::key(SEED, i))
            .query(&mut con)
            .unwrap();
        assert!(v.is_some());
    }
    let after = wakeups(&srv);
    assert!(after > before, "20 lone GETs, no wake-up counted");
    let f = poller0(&srv);
    assert_eq!(get(&f, "wakeups"), after as f64, "{f:?}");
    assert!(get(&f, "wake_p50_us") > 0.0 && get(&f, "wake_p99_us") >= get(&f, "wake_p50_us"));
    let slow: u64 = srv.info_field("poller_late_wakeups").parse().unwrap();
    assert!(slow <= after);
    srv.stop();
}
