//! Index tags shorter than a key's digest (issue 19, step 1): a tag match
//! is resolved by the key stored in the record. Under the test switch
//! `NVKV_TEST_TAG_BITS=8` the index keeps 8 bits of each tag, and with 4
//! partitions the keys of a partition share their tags by the dozen: every
//! key must still read and write as in a real redis-server, before and
//! after a clean restart and a rebuild after kill -9.

mod common;

use std::path::Path;

use common::{Both, RealRedis, Server};

const KEYS: usize = 1500;

fn key(i: usize) -> String {
    format!("key:{i}")
}

/// A server with 8-bit index tags over a store of 4 partitions.
fn start(dir: &Path) -> Server {
    // Every test of this file runs its server with the switch (8 bits
    // unless the environment says otherwise: 64 for a run without it).
    if std::env::var_os("NVKV_TEST_TAG_BITS").is_none() {
        std::env::set_var("NVKV_TEST_TAG_BITS", "8");
    }
    Server::start(dir, &["--durability", "async"])
}

fn extra_reads(srv: &Server) -> u64 {
    srv.info_field("index_extra_reads").parse().unwrap()
}

/// TTL or EXPIRETIME (`cmd`) of `key` on both: -1 and -2 alike, times
/// within a few seconds of Redis's (the two servers were given a relative
/// EXPIRE, and are asked, one after the other).
fn ttl(both: &mut Both, cmd: &str, key: &str) {
    let args: [&[u8]; 2] = [cmd.as_bytes(), key.as_bytes()];
    let parse = |r: Vec<u8>| -> i64 {
        let s = String::from_utf8(r).unwrap();
        s.trim().trim_start_matches(':').parse().unwrap()
    };
    let (ours, theirs) = (parse(both.ours.call(&args)), parse(both.theirs.call(&args)));
    if ours < 0 || theirs < 0 {
        assert_eq!(ours, theirs, "{cmd} {key}");
    } else {
        assert!(
            ours.abs_diff(theirs) <= 5,
            "{cmd} {key}: {ours} against {theirs}"
        );
    }
}

/// GET, EXISTS, TTL and EXPIRETIME of every key, compared.
fn read_all(both: &mut Both) {
    for i in 0..KEYS {
        let k = key(i);
        both.check_str(&["GET", &k]);
        both.check_str(&["EXISTS", &k]);
        ttl(both, "TTL", &k);
        ttl(both, "EXPIRETIME", &k);
    }
    let all: Vec<String> = (0..KEYS).map(key).collect();
    let mut exists = vec!["EXISTS"];
    exists.extend(all.iter().map(String::as_str));
    both.check_str(&exists);
    // MGET: grouped by poller, each group served as one.
    let mut mget = vec!["MGET"];
    mget.extend(all.iter().map(String::as_str));
    both.check_str(&mget);
    both.check_str(&["DBSIZE"]);
}

#[test]
fn keys_sharing_short_tags_read_and_write_as_in_redis_across_restarts() {
    if common::on_spdk("keys_sharing_short_tags_read_and_write_as_in_redis_across_restarts") {
        return;
    }
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    common::create_store(&dir, &["--shards", "2", "--partitions", "4", "--sparse"]);
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);

    for i in 0..KEYS {
        both.check_str(&["SET", &key(i), &format!("value {i}")]);
    }
    read_all(&mut both);
    for i in 0..KEYS {
        let k = key(i);
        match i % 6 {
            0 => drop(both.check_str(&["DEL", &k])),
            1 => drop(both.check_str(&["SET", &k, &format!("second {i}"), "XX"])),
            2 => drop(both.check_str(&["SET", &k, "never", "NX"])),
            3 => drop(both.check_str(&["EXPIREAT", &k, "4102444800"])),
            4 => drop(both.check_str(&["SET", &k, &format!("kept {i}"), "GET"])),
            _ => drop(both.check_str(&["EXPIRE", &k, "100000"])),
        }
    }
    // Keys deleted come back with NX; keys never written stay missing.
    for i in (0..KEYS).step_by(12) {
        both.check_str(&["SET", &key(i), &format!("again {i}"), "NX"]);
        both.check_str(&["DEL", &format!("missing:{i}")]);
        both.check_str(&["EXISTS", &format!("missing:{i}")]);
        both.check_str(&["GET", &format!("missing:{i}")]);
        both.check_str(&["SET", &format!("missing:{i}"), "x", "XX"]);
    }
    read_all(&mut both);
    redis::cmd("SAVE").query::<()>(&mut srv.client()).unwrap();

    // A clean restart maps the index as it was.
    drop(both);
    srv.stop();
    let srv = start(&dir);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let mut both = Both::connect(&srv, &redis);
    read_all(&mut both);
    // The records are on the device now: a key whose tag another key's
    // entry shares first costs an extra read, counted.
    let extra = extra_reads(&srv);
    assert!(extra > 0, "no GET met another key's record of its tag");

    // Writes after the restart, then a crash: the rebuild keeps every key
    // of a colliding pair.
    for i in (0..KEYS).step_by(5) {
        both.check_str(&["SET", &key(i), &format!("third {i}")]);
    }
    for i in (3..KEYS).step_by(10) {
        both.check_str(&["DEL", &key(i)]);
    }
    redis::cmd("SAVE").query::<()>(&mut srv.client()).unwrap();
    drop(both);
    srv.kill();
    let srv = start(&dir);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let mut both = Both::connect(&srv, &redis);
    read_all(&mut both);
    drop(both);
    srv.stop();
}

/// Compaction moves live records and drops dead ones by the entry that
/// points at each: with keys sharing tags, it must move each key's own,
/// and keep every key of a colliding pair (a store four times its live
/// data, overwritten and deleted in part 24 times over).
#[test]
fn compaction_keeps_every_key_of_keys_sharing_short_tags() {
    if common::on_spdk("compaction_keeps_every_key_of_keys_sharing_short_tags") {
        return;
    }
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let args = [
        "--shards",
        "2",
        "--partitions",
        "4",
        "--sparse",
        "--capacity",
        "24M",
    ];
    common::create_store(&dir, &args);
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    let value = |i: usize, pass: usize| format!("{pass}:{i}:{}", "v".repeat(3000 + i % 1000));
    for pass in 0..24 {
        // A third of the keys stay as first written: the segments they
        // are in must be compacted.
        for i in 0..KEYS {
            if pass == 0 || i % 3 != 0 && (i + pass) % 4 != 0 {
                both.check_str(&["SET", &key(i), &value(i, pass)]);
            }
        }
        for i in (pass + 1..KEYS).step_by(9).filter(|i| i % 3 != 0) {
            both.check_str(&["DEL", &key(i)]);
        }
    }
    let compactions: u64 = srv.info_field("compactions").parse().unwrap();
    assert!(compactions > 0, "compaction never ran");
    read_all(&mut both);
    redis::cmd("SAVE").query::<()>(&mut srv.client()).unwrap();
    drop(both);
    srv.kill();
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    read_all(&mut both);
    drop(both);
    srv.stop();
}
