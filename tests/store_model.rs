//! The write path against a model (see `nvkv::store::model`): random
//! sequences of SETs, DELs, EXPIREs, time moving on, compaction, eviction,
//! device faults, crashes and clean restarts, run through the store's
//! keyspace on a real file with io_uring, every GET checked against what
//! was acknowledged. No server, no TCP, no sleeps: time is a manual clock.

use nvkv::store::model::{decode, run, Report, Step};
use proptest::prelude::*;

fn run_bytes(bytes: &[u8]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    match run(dir.path(), bytes) {
        Ok(r) => r,
        Err(e) => panic!("{e}\nsteps: {:?}", decode(bytes)),
    }
}

/// A sequence that fills the store several times over with values that
/// expire and values that do not, deletes, crashes mid-commit and
/// restarts: compaction must run and expired keys must be reclaimed.
#[test]
fn churn_with_ttls_crashes_and_restarts_keeps_every_acknowledged_value() {
    let mut bytes = vec![0, 0];
    for round in 0u8..160 {
        // A batch of six writes: SETs of 8-20 KiB, some with TTLs, a DEL.
        bytes.extend([round.wrapping_mul(16) & 0xF0, 5]);
        for i in 0u8..6 {
            // Keys 0-15 churn; key 4 of each batch is one of 16-63, written
            // again only 48 rounds later: it keeps its segment partly live,
            // so that only compaction can free it.
            let key = match i {
                4 => 16 + round % 48,
                _ => round.wrapping_mul(7).wrapping_add(i) % 16,
            };
            let op = if i == 5 { 5 } else { 0 };
            let ttl = if i % 2 == 0 { 1 } else { 0 };
            bytes.extend([op, key, 40 + ttl + 4 * i, round]);
        }
        match round % 10 {
            3 => bytes.extend([10, 60]), // time moves on 2.2 s
            5 => bytes.extend([12, 20]), // background turns
            7 => bytes.extend([9, 1, 0, round, 44, 1, 0, round ^ 1, 48, 2, 3]), // crash
            9 => bytes.extend([14, 0]),  // clean restart
            _ => {}
        }
    }
    let r = run_bytes(&bytes);
    assert!(r.writes_acked > 600, "{r:?}");
    assert!(r.crashes >= 15 && r.restarts >= 15, "{r:?}");
    assert!(r.compactions > 0, "the store never compacted: {r:?}");
    assert!(r.expired > 0, "no key was found expired: {r:?}");
}

/// Under allkeys-lru with a small maxmemory, keys are evicted, and what
/// is left is still never older than acknowledged.
#[test]
fn eviction_under_a_small_maxmemory_never_returns_an_older_value() {
    let mut bytes = vec![0, 0, 15, 1];
    for round in 0u8..50 {
        bytes.extend([0, 3]);
        for i in 0u8..4 {
            bytes.extend([1, round.wrapping_mul(5).wrapping_add(i), 60 + 4 * i, round]);
        }
        if round % 8 == 4 {
            bytes.extend([9, 0, 1, round, 44, 0, 2]);
        }
        if round % 6 == 2 {
            bytes.extend([12, 10]);
        }
    }
    let r = run_bytes(&bytes);
    assert!(r.evicted > 0, "nothing was evicted: {r:?}");
    assert!(r.crashes > 0, "{r:?}");
}

/// Failed device writes and flushes: the writers get errors, nothing they
/// wrote is served before a crash, and after one only acknowledged or
/// failed writes' values are.
#[test]
fn failed_commits_roll_back_and_a_crash_after_them_brings_no_older_value() {
    for fault in [1u8, 2, 3, 0x81] {
        let mut bytes = vec![fault, 1];
        for round in 0u8..30 {
            bytes.extend([0, 2]);
            for i in 0u8..3 {
                bytes.extend([0, round.wrapping_add(i), 20 + i, round]);
            }
            if round % 5 == 4 {
                bytes.extend([9, 0, 0, round, 8, 0, 1]);
            }
        }
        let r = run_bytes(&bytes);
        assert!(
            r.writes_failed > 0,
            "fault {fault}: no commit failed: {r:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    /// Random steps, random faults.
    #[test]
    fn random_steps_keep_the_invariant(bytes in proptest::collection::vec(any::<u8>(), 2..400)) {
        let dir = tempfile::tempdir().unwrap();
        let result = run(dir.path(), &bytes);
        prop_assert!(result.is_ok(), "{}\nsteps: {:?}", result.unwrap_err(), decode(&bytes).1);
    }
}

/// Values larger than a segment (one to four pieces), overwritten by small
/// ones and large ones, given TTLs, across crashes during their writes and
/// clean restarts.
#[test]
fn large_values_across_crashes_and_restarts_keep_the_invariant() {
    let mut bytes = vec![0, 0];
    for round in 0u8..48 {
        let key = round % 6;
        // A batch: a large SET, a small SET of another key, an EXPIRE.
        bytes.extend([0, 2, 4, key, round, 7, 0, key + 6, 40, round]);
        bytes.extend([6, key, 1, round]);
        match round % 6 {
            1 => bytes.extend([9, 0, 4, (key + 1) % 6, 200, round, round % 8]), // crash
            3 => bytes.extend([10, 40]),                                        // time
            4 => bytes.extend([12, 30]),                                        // turns
            5 => bytes.extend([14, 0]),                                         // restart
            _ => {}
        }
    }
    let r = run_bytes(&bytes);
    assert!(r.large_writes >= 48, "{r:?}");
    assert!(r.crashes >= 8 && r.restarts >= 8, "{r:?}");
}

#[test]
fn steps_decode_from_bytes_as_documented() {
    let (faults, steps) = decode(&[0, 0, 10, 3, 14, 0]);
    assert!(faults.is_none());
    assert_eq!(steps, vec![Step::Advance(111), Step::Restart]);
    let (faults, _) = decode(&[0x81, 0]);
    assert_eq!(faults, Some("write-eio@2+".parse().unwrap()));
}
