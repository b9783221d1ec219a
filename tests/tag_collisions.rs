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

/// A [`small_store`] where every key holds "first i" on both servers,
/// written by a server now stopped, and a server started on it again
/// with serve's arguments `args` (every record on the device: no request
/// finds one in a segment buffer, and the server knows no record's key):
/// the store's directory (the first value keeps it), redis-server, and
/// that server; `None` where the test is skipped.
fn written_then_restarted(
    test: &str,
    args: &[&str],
) -> Option<(tempfile::TempDir, std::path::PathBuf, RealRedis, Server)> {
    let (tmp, dir) = small_store(test, &[])?;
    let redis = RealRedis::start(&[])?;
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    for i in 0..KEYS {
        both.check_str(&["SET", &key(i), &format!("first {i}")]);
    }
    drop(both);
    srv.stop();
    let srv = start_with(&dir, args);
    Some((tmp, dir, redis, srv))
}

/// A server with 8-bit index tags over a store of 4 partitions.
fn start(dir: &Path) -> Server {
    start_with(dir, &["--durability", "async"])
}

/// [`start`] with serve's arguments `args`.
fn start_with(dir: &Path, args: &[&str]) -> Server {
    // Every test of this file runs its server with the switch (8 bits
    // unless the environment says otherwise).
    if std::env::var_os("NVKV_TEST_TAG_BITS").is_none() {
        std::env::set_var("NVKV_TEST_TAG_BITS", "8");
    }
    Server::start(dir, args)
}

/// A store of two shards and four partitions (so that keys sharing a
/// short tag are many), sparse, with `extra` flags, in a new temporary
/// directory (kept alive by the first value); `None` where the tests run
/// on an SPDK namespace (`test`: the test's name, for the skip line).
fn small_store(test: &str, extra: &[&str]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if common::on_spdk(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut args = vec!["--shards", "2", "--partitions", "4", "--sparse"];
    args.extend_from_slice(extra);
    common::create_store(&dir, &args);
    Some((tmp, dir))
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
    let Some((_tmp, dir)) = small_store(
        "keys_sharing_short_tags_read_and_write_as_in_redis_across_restarts",
        &[],
    ) else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
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
    let Some((_tmp, dir)) = small_store(
        "compaction_keeps_every_key_of_keys_sharing_short_tags",
        &["--capacity", "24M"],
    ) else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
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

/// Groups of three keys in one partition (of 4) whose 8-bit tags are the
/// same: under the switch, each group's keys are told apart only by the
/// keys in their records.
fn colliding(groups: usize) -> Vec<[String; 3]> {
    use std::collections::HashMap;
    let mut buckets: HashMap<(u32, u64), Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for i in 0.. {
        let k = format!("tag:{i}");
        let h = nvkv::index::KeyHash::full(k.as_bytes());
        let b = buckets.entry((h.partition(4), h.tag >> 56)).or_default();
        b.push(k);
        if b.len() == 3 {
            let [a, b, c]: [String; 3] = std::mem::take(b).try_into().unwrap();
            out.push([a, b, c]);
            if out.len() == groups {
                return out;
            }
        }
    }
    unreachable!()
}

/// Every key of the groups read on both, and the key space listed by
/// KEYS and by SCAN (sorted: the orders differ).
fn read_groups(both: &mut Both, srv: &Server, redis: &RealRedis, groups: &[[String; 3]]) {
    for g in groups {
        for k in g {
            both.check_str(&["GET", k]);
            both.check_str(&["TYPE", k]);
        }
        both.check_str(&["EXISTS", &g[0], &g[1], &g[2]]);
        both.check_str(&["MGET", &g[0], &g[1], &g[2]]);
    }
    let (mut ours, mut theirs) = (srv.client(), redis.client());
    let keys = |con: &mut redis::Connection| {
        let mut k: Vec<String> = redis::cmd("KEYS").arg("tag:*").query(con).unwrap();
        k.sort();
        k
    };
    let listed = keys(&mut ours);
    assert_eq!(listed, keys(&mut theirs), "KEYS tag:*");
    let mut scanned: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..100_000 {
        let (next, mut batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("tag:*")
            .arg("COUNT")
            .arg(50)
            .query(&mut ours)
            .unwrap();
        scanned.append(&mut batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    scanned.sort();
    scanned.dedup();
    assert_eq!(scanned, listed, "SCAN MATCH tag:*");
}

/// Each command on both connections (ours, then Redis's), the replies
/// compared as the client decodes them: for MULTI … EXEC, which a
/// [`Both`] cannot carry.
fn both_clients(ours: &mut redis::Connection, theirs: &mut redis::Connection, cmds: &[&[&str]]) {
    for cmd in cmds {
        let run = |con: &mut redis::Connection| {
            let mut c = redis::cmd(cmd[0]);
            for a in &cmd[1..] {
                c.arg(*a);
            }
            match c.query::<redis::Value>(con) {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("error {:?} {:?}", e.kind(), e.detail()),
            }
        };
        assert_eq!(run(ours), run(theirs), "{cmd:?}");
    }
}

/// Keys whose tags collide, through the paths that act on a key other
/// than by GET: MULTI/EXEC, MSET and MSETNX, RENAME, RENAMENX and COPY
/// (the destination's entry too), TYPE, TOUCH and OBJECT, WATCH (another
/// key of the tag written does not abort EXEC), DEL, and key iteration;
/// each answer compared with redis-server's, then again after a clean
/// restart and after a rebuild.
#[test]
fn keys_sharing_short_tags_through_transactions_moves_and_watch() {
    let Some((_tmp, dir)) = small_store(
        "keys_sharing_short_tags_through_transactions_moves_and_watch",
        &[],
    ) else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    let mut other = Both::connect(&srv, &redis);
    let (mut tx_ours, mut tx_theirs) = (srv.client(), redis.client());
    let groups = colliding(24);
    for (n, [a, b, c]) in groups.iter().enumerate() {
        let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
        both.script(&[
            &["SET", a, "1"],
            &["SET", b, "2"],
            &["GET", c],
            &["TYPE", c],
            &["OBJECT", "ENCODING", c],
            &["TOUCH", a, b, c],
            &["EXISTS", a, b, c],
        ]);
        both_clients(
            &mut tx_ours,
            &mut tx_theirs,
            &[
                // A transaction writing keys of one tag.
                &["MULTI"],
                &["SET", c, "3"],
                &["INCR", a],
                &["DEL", b],
                &["GET", c],
                &["EXISTS", b],
                &["EXEC"],
            ],
        );
        both.script(&[
            &["MGET", a, b, c],
            // MSET and MSETNX.
            &["MSET", a, "x", b, "y", c, "z"],
            &["MGET", a, b, c],
            &["MSETNX", a, "n", b, "n"],
            &["DEL", a, b],
            &["MSETNX", a, "n1", b, "n2"],
            &["MSETNX", c, "no", a, "no"],
            &["MGET", a, b, c],
            // RENAME, RENAMENX and COPY onto keys of the same tag.
            &["RENAME", a, b],
            &["MGET", a, b, c],
            &["RENAMENX", b, c],
            &["COPY", b, a],
            &["COPY", c, a],
            &["COPY", c, a, "REPLACE"],
            &["MGET", a, b, c],
            &["RENAME", c, a],
            &["EXISTS", a, b, c],
            &["MGET", a, b, c],
        ]);
        // WATCH: a write of another key of the tag leaves the key as it
        // was; a write of the key aborts the transaction.
        let (tx_o, tx_t) = (&mut tx_ours, &mut tx_theirs);
        both_clients(tx_o, tx_t, &[&["WATCH", a, c]]);
        other.check_str(&["SET", b, &format!("other {n}")]);
        let watched: [&[&str]; 4] = [&["MULTI"], &["GET", a], &["SET", c, "watched"], &["EXEC"]];
        both_clients(tx_o, tx_t, &watched);
        both_clients(tx_o, tx_t, &[&["WATCH", a]]);
        other.check_str(&["SET", a, &format!("changed {n}")]);
        both_clients(tx_o, tx_t, &[&["MULTI"], &["SET", a, "lost"], &["EXEC"]]);
        // Transactions of MSETNX and moves.
        both_clients(
            tx_o,
            tx_t,
            &[
                &["MULTI"],
                &["DEL", c],
                &["MSETNX", c, "t1", b, "t2"],
                &["MSETNX", c, "t3"],
                &["RENAME", a, c],
                &["COPY", c, a],
                &["MGET", a, b, c],
                &["EXEC"],
                &["MGET", a, b, c],
            ],
        );
        if n % 3 == 0 {
            both.script(&[&["DEL", a], &["EXISTS", a, b, c], &["MGET", a, b, c]]);
        }
    }
    read_groups(&mut both, &srv, &redis, &groups);
    redis::cmd("SAVE").query::<()>(&mut srv.client()).unwrap();
    drop((both, other, tx_ours, tx_theirs));
    srv.stop();
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    read_groups(&mut both, &srv, &redis, &groups);
    for [a, b, c] in &groups {
        both.script(&[&["MSET", a, "after", c, "restart"], &["DEL", b]]);
    }
    redis::cmd("SAVE").query::<()>(&mut srv.client()).unwrap();
    drop(both);
    srv.kill();
    let srv = start(&dir);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let mut both = Both::connect(&srv, &redis);
    read_groups(&mut both, &srv, &redis, &groups);
    drop(both);
    srv.stop();
}

/// An integer reply's value.
fn int(reply: &[u8]) -> i64 {
    let s = std::str::from_utf8(reply).unwrap();
    s.trim().trim_start_matches(':').parse().unwrap()
}

/// Eviction's access bits are kept per key, not per tag: a GET, TOUCH
/// or RESTORE … IDLETIME / FREQ of one key of a tag leaves the others'
/// idle time and frequency as they were (compared with redis-server's).
#[test]
fn keys_sharing_short_tags_keep_their_own_access_bits() {
    let Some((_tmp, dir)) = small_store("keys_sharing_short_tags_keep_their_own_access_bits", &[])
    else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let srv = start(&dir);
    let mut both = Both::connect(&srv, &redis);
    both.check_str(&["SET", "src", "value"]);
    let dump = both.check_str(&["DUMP", "src"]);
    // The payload of the bulk reply.
    let end = dump.iter().position(|&b| b == b'\r').unwrap();
    let n: usize = std::str::from_utf8(&dump[1..end]).unwrap().parse().unwrap();
    let p = dump[end + 2..end + 2 + n].to_vec();
    let groups = colliding(16);
    both.check_str(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    for [a, b, c] in &groups {
        // Restored in this order, the last is the first of its tag's
        // entries: reads of the others must not move its clock.
        for k in [a, b, c] {
            both.check(&[b"RESTORE", k.as_bytes(), b"0", &p, b"IDLETIME", b"1000"]);
        }
        both.check_str(&["GET", a]);
        both.check_str(&["TOUCH", b]);
        for k in [a, b, c] {
            let args: [&[u8]; 3] = [b"OBJECT", b"IDLETIME", k.as_bytes()];
            let (ours, theirs) = (int(&both.ours.call(&args)), int(&both.theirs.call(&args)));
            assert!(
                ours.abs_diff(theirs) <= 2,
                "OBJECT IDLETIME {k}: {ours} against {theirs}"
            );
        }
    }
    both.check_str(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lfu"]);
    for [a, b, c] in &groups {
        for (k, freq) in [(a, "100"), (b, "7"), (c, "50")] {
            let args: [&[u8]; 7] = [
                b"RESTORE",
                k.as_bytes(),
                b"0",
                &p,
                b"REPLACE",
                b"FREQ",
                freq.as_bytes(),
            ];
            both.check(&args);
        }
        for k in [a, b, c] {
            both.check_str(&["OBJECT", "FREQ", k]);
        }
    }
    drop(both);
    srv.stop();
}

/// A key of the form `{prefix}:{i}` on the other poller than `key`'s, of
/// a server with two.
fn key_apart(srv: &Server, key: &str, prefix: &str) -> String {
    (0..1000)
        .map(|i| format!("{prefix}:{i}"))
        .find(|k| common::apart(srv.addr, k.as_bytes(), key.as_bytes()))
        .expect("a key on the other poller")
}

/// RENAME, RENAMENX and COPY from a key of one poller onto keys of the
/// other whose tags are another key's there: the destination's part reads
/// the tag's records to know whether the key is there, and writes over
/// the key's own entry (another key of the tag keeps its value), as
/// redis-server answers.
#[test]
fn moves_across_pollers_onto_keys_sharing_short_tags() {
    let Some((_tmp, dir)) = small_store("moves_across_pollers_onto_keys_sharing_short_tags", &[])
    else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let srv = start_with(&dir, &["--io-threads", "2"]);
    let mut both = Both::connect(&srv, &redis);
    for (n, [a, b, c]) in colliding(6).iter().enumerate() {
        let src = key_apart(&srv, a, &format!("src{n}"));
        let (a, b, c, src) = (a.as_str(), b.as_str(), c.as_str(), src.as_str());
        both.script(&[
            &["SET", b, "b"],
            &["SET", src, "s1"],
            // The tag's only entry is b's: a is not there.
            &["RENAMENX", src, a],
            &["MGET", a, b, c, src],
            &["SET", src, "s2"],
            &["COPY", src, c],
            &["MGET", a, b, c, src],
            &["COPY", src, c],
            &["RENAMENX", src, c],
            &["RENAME", src, b],
            &["MGET", a, b, c, src],
            &["SET", src, "s3", "EX", "1000"],
            &["COPY", src, a, "REPLACE"],
            &["DEL", c],
            &["RENAME", src, c],
            &["MGET", a, b, c, src],
            &["TTL", c],
            &["EXISTS", a, b, c, src],
        ]);
    }
    read_all_groups(&mut both);
    drop(both);
    srv.stop();
    let srv = start_with(&dir, &["--io-threads", "2"]);
    let mut both = Both::connect(&srv, &redis);
    read_all_groups(&mut both);
    drop(both);
    srv.stop();
}

/// The keys of the groups [`colliding`] gives, and the key count,
/// compared.
fn read_all_groups(both: &mut Both) {
    for [a, b, c] in colliding(6) {
        both.check_str(&["MGET", &a, &b, &c]);
    }
    both.check_str(&["DBSIZE"]);
}

/// A transaction across pollers whose commit fails on one poller (its
/// device writes all fail) is undone on the other: there, keys sharing a
/// short tag that it wrote each get their own previous state back (a
/// value, or absent), and a key of the tag it did not write keeps its
/// value; so after a kill -9 too.
#[test]
fn an_undo_across_pollers_restores_each_key_sharing_a_short_tag() {
    let Some((_tmp, dir)) = small_store(
        "an_undo_across_pollers_restores_each_key_sharing_a_short_tag",
        &[],
    ) else {
        return;
    };
    let groups = colliding(8);
    let srv = start_with(&dir, &["--io-threads", "2"]);
    let mut con = srv.client();
    for [a, b, _] in &groups {
        redis::cmd("MSET")
            .arg(a)
            .arg(format!("{a} before"))
            .arg(b)
            .arg(format!("{b} before"))
            .query::<()>(&mut con)
            .unwrap();
    }
    drop(con);
    srv.stop();
    let srv = start_with(
        &dir,
        &["--io-threads", "2", "--inject-faults", "write-eio@1+:1"],
    );
    let mut con = srv.client();
    // Keys whose writes fail (poller 1's), and the groups on poller 0.
    let bad = (0..1000)
        .map(|i| format!("probe:{i}"))
        .find(|k| {
            redis::cmd("SET")
                .arg(k)
                .arg(1)
                .query::<()>(&mut con)
                .is_err()
        })
        .expect("a key of poller 1");
    let good: Vec<&[String; 3]> = (groups.iter())
        .filter(|g| common::apart(srv.addr, g[0].as_bytes(), bad.as_bytes()))
        .collect();
    assert!(!good.is_empty(), "no group on poller 0");
    let check = |con: &mut redis::Connection, when: &str| {
        for [a, b, c] in &good {
            let got: Vec<Option<String>> =
                redis::cmd("MGET").arg(a).arg(b).arg(c).query(con).unwrap();
            let want = vec![
                Some(format!("{a} before")),
                Some(format!("{b} before")),
                None,
            ];
            assert_eq!(got, want, "{when}");
        }
    };
    for [a, b, c] in &good {
        // Two keys of the tag written (the second's entry comes first
        // once written), and a new one beside them.
        let r: redis::RedisResult<()> = redis::cmd("MSET")
            .arg(a)
            .arg("new a")
            .arg(b)
            .arg("new b")
            .arg(&bad)
            .arg("x")
            .query(&mut con);
        assert!(r.is_err(), "MSET with a key of poller 1: {r:?}");
        let r: redis::RedisResult<()> = redis::cmd("MSET")
            .arg(c)
            .arg("new c")
            .arg(a)
            .arg("new a")
            .arg(&bad)
            .arg("x")
            .query(&mut con);
        assert!(r.is_err(), "MSET with a key of poller 1: {r:?}");
    }
    check(&mut con, "after the undos");
    drop(con);
    srv.kill();
    let srv = start_with(&dir, &["--io-threads", "2"]);
    check(&mut srv.client(), "after a kill -9");
    srv.stop();
}

/// Large values of keys sharing a short tag with another key: a SET
/// whose value arrives in pieces (its head written in a later turn,
/// once they are in) and an APPEND or SETRANGE of one (its pieces read
/// over later turns) write over the key's own entry, never another key's
/// of the tag; compared with redis-server, and after a restart.
#[test]
fn large_values_of_keys_sharing_short_tags_keep_the_other_keys() {
    let Some((_tmp, dir)) = small_store(
        "large_values_of_keys_sharing_short_tags_keep_the_other_keys",
        &["--capacity", "1G"],
    ) else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let srv = start_with(&dir, &[]);
    let mut both = Both::connect(&srv, &redis);
    let groups = colliding(12);
    // Values larger than a feed's pieces in flight and not yet taken (48
    // MiB): its SET comes while the device is still behind, before the
    // last pieces are taken.
    let big = |i: usize| -> Vec<u8> {
        (0..(64 << 20) + i * 4099)
            .map(|j| (j % 251) as u8)
            .collect()
    };
    // The SET on both, its replies compared (not its value, in a message).
    let set_big = |both: &mut Both, key: &str, value: &[u8]| {
        let args: [&[u8]; 3] = [b"SET", key.as_bytes(), value];
        let (ours, theirs) = (both.ours.call(&args), both.theirs.call(&args));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "SET {key} of {} bytes",
            value.len()
        );
    };
    let check = |both: &mut Both, [a, b, c]: &[String; 3]| {
        both.check_str(&["MGET", b, c]);
        both.check_str(&["STRLEN", a]);
        both.check_str(&["GETRANGE", a, "50331640", "50331660"]);
        both.check_str(&["GETRANGE", a, "-20", "-1"]);
        both.check_str(&["EXISTS", a, b, c]);
    };
    for (i, [a, b, c]) in groups.iter().enumerate() {
        both.check_str(&["SET", b, &format!("b{i}")]);
        if i % 2 == 0 {
            both.check_str(&["SET", c, &format!("c{i}")]);
        }
        // A new key's large value, fed in pieces.
        set_big(&mut both, a, &big(i));
        check(&mut both, &groups[i]);
        // Its edits, and another key of the tag written meanwhile.
        both.check_str(&["APPEND", a, "appended"]);
        both.check_str(&["SET", c, &format!("c{i} again")]);
        both.check_str(&["SETRANGE", a, "50331645", "in the middle"]);
        both.check_str(&["SET", b, &format!("b{i} again")]);
        both.check_str(&["APPEND", a, "end"]);
        check(&mut both, &groups[i]);
        // A large value over an old one, fed.
        set_big(&mut both, a, &big(i + 1));
        check(&mut both, &groups[i]);
    }
    both.check_str(&["DBSIZE"]);
    drop(both);
    srv.stop();
    let srv = start_with(&dir, &[]);
    let mut both = Both::connect(&srv, &redis);
    for g in &groups {
        check(&mut both, g);
    }
    both.check_str(&["DBSIZE"]);
    drop(both);
    srv.stop();
}

/// `nvkv check` tells keys sharing a short tag apart by their records: a
/// store of them checks clean, and an index given a second entry of one
/// key (pointing at the key's record, under the key's tag) is damage.
#[test]
fn check_finds_two_entries_of_one_key_among_keys_sharing_short_tags() {
    use std::os::unix::fs::FileExt;
    let Some((_tmp, dir)) = small_store(
        "check_finds_two_entries_of_one_key_among_keys_sharing_short_tags",
        &[],
    ) else {
        return;
    };
    let srv = start(&dir);
    let groups = colliding(8);
    let mut con = srv.client();
    for [a, b, c] in &groups[1..] {
        let _: () = redis::cmd("MSET")
            .arg(&[a, "1", b, "2", c, "3"])
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("DEL").arg(b).query(&mut con).unwrap();
    }
    // The only key of its tag.
    let key = &groups[0][0];
    let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).unwrap();
    drop(con);
    srv.stop();
    let report = |out: &std::process::Output| {
        let (o, e) = (&out.stdout, &out.stderr);
        format!(
            "{}{}",
            String::from_utf8_lossy(o),
            String::from_utf8_lossy(e)
        )
    };
    let out = common::run_on(&["check", "--path"], &dir);
    assert!(out.status.success(), "{}", report(&out));

    let f = std::fs::File::open(dir.join("data.nvkv")).unwrap();
    let mut b = vec![0; nvkv::format::SUPERBLOCK_SIZE];
    f.read_exact_at(&mut b, 0).unwrap();
    let sb = nvkv::format::Superblock::decode(&b).expect("a superblock");
    // The tag as the server kept it (this process may have read the
    // switch before the first server of its tests set it).
    let bits: u32 = std::env::var("NVKV_TEST_TAG_BITS")
        .unwrap()
        .parse()
        .unwrap();
    let full = nvkv::index::KeyHash::full(key.as_bytes());
    let h = nvkv::index::KeyHash {
        tag: full.tag & !0u64 << (64 - bits),
        ..full
    };
    let pid = h.partition(sb.partitions);
    let (mut p, cp) =
        nvkv::index::Partition::open(&dir, pid, nvkv::index::Owner::new(sb.uuid, sb.capacity))
            .unwrap();
    let e = p.get(&h).expect("the key's entry");
    p.insert_new(&h, e).unwrap();
    p.mark_clean(cp.expect("closed clean")).unwrap();
    drop(p);
    let out = common::run_on(&["check", "--path"], &dir);
    let text = report(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("two index entries hold key"), "{text}");
}

/// WATCH of a missing key whose tag another key then takes: EXEC is not
/// aborted, as in redis-server, even once that key's record has left its
/// segment buffer (megabytes written after it); a write of the watched
/// key itself still aborts it.
#[test]
fn watch_of_a_missing_key_is_not_aborted_by_another_key_of_its_tag() {
    let Some((_tmp, dir)) = small_store(
        "watch_of_a_missing_key_is_not_aborted_by_another_key_of_its_tag",
        &[],
    ) else {
        return;
    };
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let srv = start(&dir);
    let mut other = Both::connect(&srv, &redis);
    let (mut tx_ours, mut tx_theirs) = (srv.client(), redis.client());
    let fill = "f".repeat(256 << 10);
    for (n, [a, b, c]) in colliding(3).iter().enumerate() {
        let pid = nvkv::index::KeyHash::of(a.as_bytes()).partition(4);
        let (tx_o, tx_t) = (&mut tx_ours, &mut tx_theirs);
        both_clients(tx_o, tx_t, &[&["WATCH", a]]);
        other.check_str(&["SET", b, &format!("other {n}")]);
        if n > 0 {
            other.check_str(&["SET", c, "rewritten"]);
        }
        // 12 MiB more in a's partition: b's record leaves the segment
        // buffers.
        let mut written = 0;
        for i in 0.. {
            let k = format!("fill:{i}");
            if nvkv::index::KeyHash::of(k.as_bytes()).partition(4) == pid {
                other.check_str(&["SET", &k, &fill]);
                written += 1;
                if written == 48 {
                    break;
                }
            }
        }
        both_clients(tx_o, tx_t, &[&["MULTI"], &["SET", a, "watched"], &["EXEC"]]);
        other.check_str(&["MGET", a, b, c]);
        // The key itself written: aborted.
        both_clients(tx_o, tx_t, &[&["WATCH", c]]);
        other.check_str(&["SET", c, &format!("c {n}")]);
        both_clients(tx_o, tx_t, &[&["MULTI"], &["SET", c, "lost"], &["EXEC"]]);
        other.check_str(&["MGET", a, b, c]);
        other.check_str(&["DEL", a, b]);
    }
    drop(other);
    srv.stop();
}

/// A SET over a key whose record is on the device is written before the
/// record it replaces is read; when that record is another key's (here,
/// with 8-bit tags, often), that key's entry goes back. Pipelined
/// overwrites of keys sharing tags, with reads of other keys of the same
/// tags between them, answer as redis-server's, and every key reads its
/// latest value after, and after a rebuild.
#[test]
fn pipelined_overwrites_of_keys_sharing_short_tags_keep_every_key() {
    let Some((_tmp, dir, redis, srv)) = written_then_restarted(
        "pipelined_overwrites_of_keys_sharing_short_tags_keep_every_key",
        &["--durability", "async"],
    ) else {
        return;
    };
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.set(key(i), format!("second {i}"));
        pipe.get(key((i * 7 + 3) % KEYS));
        pipe.get(key(i));
    }
    let ours: Vec<redis::Value> = pipe.query(&mut srv.client()).unwrap();
    let theirs: Vec<redis::Value> = pipe.query(&mut redis.client()).unwrap();
    assert_eq!(ours, theirs);
    let unread: u64 = srv.info_field("index_overwrites_unread").parse().unwrap();
    assert!(unread > 0, "no SET was written before its read");
    assert!(extra_reads(&srv) > 0, "no SET replaced another key's entry");
    let mut both = Both::connect(&srv, &redis);
    read_all(&mut both);
    drop(both);
    srv.kill();
    let srv = start(&dir);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    let mut both = Both::connect(&srv, &redis);
    read_all(&mut both);
    drop(both);
    srv.stop();
}

/// A pipelined GET whose first entry of its tag is another key's record
/// (read to know, after a restart: the server knows no record's key yet)
/// answers the key's value at its arrival, not the value of a SET of the
/// key behind it in the pipeline (nil for a missing key); likewise
/// EXISTS, TTL, STRLEN, and MGET across two pollers (whose parts hold
/// their keys together, and each read holds its key on).
#[test]
fn a_read_past_another_keys_record_answers_before_the_writes_behind_it() {
    let Some((_tmp, _dir, redis, srv)) = written_then_restarted(
        "a_read_past_another_keys_record_answers_before_the_writes_behind_it",
        &["--durability", "async", "--io-threads", "2"],
    ) else {
        return;
    };
    let mut pipe = redis::pipe();
    for i in 0..2 * KEYS {
        // The first half missing: a SET of a missing key whose tag has one
        // entry, another key's, is written before its read.
        let k = if i < KEYS {
            format!("missing:{i}")
        } else {
            key(i - KEYS)
        };
        let others: Vec<String> = (1..4).map(|j| key((i + j * 7) % KEYS)).collect();
        match i % 5 {
            0 => pipe.get(&k).set(&k, format!("second {i}")),
            1 => pipe.strlen(&k).set(&k, format!("the second value of {i}")),
            2 => pipe.exists(&k).del(&k),
            3 => pipe.ttl(&k).set_ex(&k, "third", 1000),
            _ => pipe
                .mget(&[&k, &others[0], &others[1], &others[2]])
                .set(&k, "fourth"),
        };
    }
    let ours: Vec<redis::Value> = pipe.query(&mut srv.client()).unwrap();
    let theirs: Vec<redis::Value> = pipe.query(&mut redis.client()).unwrap();
    assert_eq!(ours, theirs);
    assert!(extra_reads(&srv) > 0, "no read met another key's record");
    drop(srv);
}
