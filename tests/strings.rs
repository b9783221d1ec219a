//! String and TTL commands: INCRBYFLOAT, APPEND, STRLEN, GETRANGE, SUBSTR,
//! SETRANGE, GETEX, MSETNX, EXPIRE and PEXPIRE with NX | XX | GT | LT,
//! EXPIREAT, PEXPIREAT, EXPIRETIME, PEXPIRETIME. Each reply is compared
//! byte for byte with a real redis-server's (where one is installed), for
//! fixed sequences of edge cases and random ones; then TTLs kept and
//! changed, MSETNX in a pipeline and across pollers, and values and TTLs
//! after a restart and after a crash.

mod common;

use common::{Both, RawConn, RealRedis, Server};
use rand::{Rng, SeedableRng};

fn start_both(dir: &std::path::Path) -> Option<(Server, RealRedis, Both)> {
    let srv = Server::start(dir, &[]);
    let redis = RealRedis::start(&[])?;
    let both = Both::connect(&srv, &redis);
    Some((srv, redis, both))
}

/// A time far in the future, in s (year 2096), and in ms.
const LATER: &str = "4000000000";
const LATER_MS: &str = "4000000000123";

#[test]
fn incrbyfloat_answers_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, _redis, mut both)) = start_both(dir.path()) else {
        return;
    };
    both.script(&[
        &["INCRBYFLOAT", "f", "10.5"],
        &["INCRBYFLOAT", "f", "0.1"],
        &["INCRBYFLOAT", "f", "5.0e3"],
        &["INCRBYFLOAT", "f", "-5010.6"],
        &["GET", "f"],
        &["INCRBYFLOAT", "g", "1e300"],
        &["INCRBYFLOAT", "g", "-1e300"],
        &["INCRBYFLOAT", "h", "1e4000"],
        &["INCRBYFLOAT", "h", "1e4932"],
        &["INCRBYFLOAT", "h", "1e4932"],
        &["GET", "h"],
        &["INCRBYFLOAT", "i", "-0.0000000000000000001"],
        &["INCRBYFLOAT", "i", "0.00000000000000001"],
        &["INCRBYFLOAT", "i", "0.000000000000000005"],
        &["INCRBYFLOAT", "i", "-0"],
        &["INCRBYFLOAT", "i", "1e-4940"],
        &["INCRBYFLOAT", "i", "1e-5000"],
        &["INCRBYFLOAT", "i", "1e5000"],
        &["INCRBYFLOAT", "i", "3.0000000000000000000000001"],
        &["INCRBYFLOAT", "i", "0x1p3"],
        &["INCRBYFLOAT", "i", "0X1.8P-1"],
        &["INCRBYFLOAT", "i", "0x"],
        &["INCRBYFLOAT", "i", "1."],
        &["INCRBYFLOAT", "i", ".5"],
        &["INCRBYFLOAT", "i", "."],
        &["INCRBYFLOAT", "i", "1e"],
        &["INCRBYFLOAT", "i", "1e+"],
        &["INCRBYFLOAT", "i", "+1E+2"],
        &["INCRBYFLOAT", "i", " 1"],
        &["INCRBYFLOAT", "i", "1 "],
        &["INCRBYFLOAT", "i", ""],
        &["INCRBYFLOAT", "i", "abc"],
        &["INCRBYFLOAT", "i", "nan"],
        &["INCRBYFLOAT", "i", "inf"],
        &["INCRBYFLOAT", "i", "-Infinity"],
        &["GET", "i"],
        &["SET", "j", "9223372036854775807"],
        &["INCRBYFLOAT", "j", "1"],
        &["SET", "k", " 1"],
        &["INCRBYFLOAT", "k", "1"],
        &["SET", "k", "inf"],
        &["INCRBYFLOAT", "k", "1"],
        &["SET", "k", "abc"],
        &["INCRBYFLOAT", "k", "abc"],
        &["SET", "k", "0x10"],
        &["INCRBYFLOAT", "k", "0.25"],
        &["SET", "k", "1.5e3"],
        &["INCRBYFLOAT", "k", "-1500"],
        &["INCRBYFLOAT", "k"],
        &["INCRBYFLOAT", "k", "1", "2"],
    ]);
    // A NUL ends the number, as for strtold.
    both.check(&[b"INCRBYFLOAT", b"n", b"2\x00junk"]);
    both.check(&[b"INCRBYFLOAT", b"n", b"\x001"]);
    // Random sums, in the forms clients write floats.
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(17);
    for step in 0..1500 {
        let key = format!("r{}", rng.gen_range(0..4));
        let by = match rng.gen_range(0..9) {
            6 => format!(
                "{}.{}e{}",
                rng.gen_range(-9..9),
                rng.gen::<u64>(),
                rng.gen_range(-330..330)
            ),
            7 => format!("{}{}", rng.gen::<u64>(), rng.gen::<u64>()),
            8 => format!("-0.{:030}", rng.gen::<u64>()),
            0 => format!("{}", rng.gen_range(-1000.0..1000.0f64)),
            1 => format!("{:.3}", rng.gen_range(-10.0..10.0f64)),
            2 => format!("{}e{}", rng.gen_range(-99..99), rng.gen_range(-30..30)),
            3 => format!("0.{}", rng.gen_range(0..1_000_000u32)),
            4 => rng.gen_range(-100i64..100).to_string(),
            _ => format!("{:e}", rng.gen::<f64>() * 1e20),
        };
        let reply = both.check_str(&["INCRBYFLOAT", &key, &by]);
        if step % 50 == 0 || reply.starts_with(b"-") {
            both.check_str(&["DEL", &key]);
        }
    }
    srv.stop();
}

#[test]
fn append_strlen_getrange_setrange_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, _redis, mut both)) = start_both(dir.path()) else {
        return;
    };
    both.script(&[
        &["APPEND", "a", "Hello"],
        &["APPEND", "a", " World"],
        &["APPEND", "a", ""],
        &["APPEND", "e", ""],
        &["EXISTS", "e"],
        &["STRLEN", "a"],
        &["STRLEN", "e"],
        &["STRLEN", "missing"],
        &["GET", "a"],
        &["SET", "n", "12"],
        &["APPEND", "n", "34"],
        &["INCR", "n"],
        &["STRLEN", "n"],
        &["APPEND", "a"],
        &["STRLEN"],
        &["STRLEN", "a", "b"],
        &["GETRANGE", "a", "x", "1"],
        &["GETRANGE", "missing", "0", "x"],
        &["GETRANGE", "a", "0"],
        &["SUBSTR", "a", "1.5", "2"],
        &["SETRANGE", "s", "-1", "x"],
        &["SETRANGE", "s", "x", "x"],
        &["SETRANGE", "s", "0", ""],
        &["EXISTS", "s"],
        &["SETRANGE", "s", "9223372036854775807", ""],
        &["SETRANGE", "s", "9223372036854775807", "x"],
        &["SETRANGE", "s", "536870912", "x"],
        &["SETRANGE", "s", "536870911", "xx"],
        &["EXISTS", "s"],
        &["SETRANGE", "s", "5", "abc"],
        &["GET", "s"],
        &["SETRANGE", "s", "1", "Z"],
        &["SETRANGE", "s", "7", "long tail"],
        &["GET", "s"],
        &["SETRANGE", "s", "0", ""],
        &["SETRANGE", "s", "100", ""],
        &["SETRANGE", "n", "0", "9"],
        &["INCR", "n"],
        &["SETRANGE", "s"],
    ]);
    both.check_str(&["SET", "empty", ""]);
    let points = [
        "-9223372036854775808",
        "-100",
        "-12",
        "-11",
        "-10",
        "-5",
        "-1",
        "0",
        "1",
        "5",
        "10",
        "11",
        "100",
        "9223372036854775807",
    ];
    for key in ["a", "empty", "missing"] {
        for start in points {
            for end in points {
                both.check_str(&["GETRANGE", key, start, end]);
            }
        }
    }
    both.check_str(&["SUBSTR", "a", "-5", "-1"]);
    both.check_str(&["SUBSTR", "a", "3", "100"]);
    srv.stop();
}

#[test]
fn getex_and_msetnx_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, _redis, mut both)) = start_both(dir.path()) else {
        return;
    };
    both.script(&[
        &["GETEX", "missing"],
        &["GETEX", "missing", "EX", "100"],
        &["GETEX", "missing", "EX", "-5"],
        &["GETEX", "missing", "EX", "abc"],
        &["GETEX", "missing", "PERSIST"],
        &["GETEX", "missing", "EX"],
        &["SET", "g", "v"],
        &["GETEX", "g"],
        &["GETEX", "g", "EX"],
        &["GETEX", "g", "EX", "-5"],
        &["GETEX", "g", "EX", "0"],
        &["GETEX", "g", "PX", "abc"],
        &["GETEX", "g", "EXAT", "0"],
        &["GETEX", "g", "EX", "9223372036854775"],
        &["GETEX", "g", "PX", "9223372036854775807"],
        &["GETEX", "g", "EX", "9223372036854775807"],
        &["GETEX", "g", "EX", "1", "PX", "1"],
        &["GETEX", "g", "PERSIST", "EX", "1"],
        &["GETEX", "g", "EX", "1", "PERSIST"],
        &["GETEX", "g", "EXAT", "1", "PXAT", "1"],
        &["GETEX", "g", "KEEPTTL"],
        &["GETEX", "g", "NX"],
        &["GETEX", "g", "GET"],
        &["GETEX", "g", "FOO"],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "EXAT", LATER],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "ex", "abc", "EX", "100"],
        &["GETEX", "g", "EXAT", LATER, "EXAT", "4000000001"],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "PXAT", LATER_MS],
        &["PEXPIRETIME", "g"],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "PERSIST", "persist"],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "PERSIST"],
        &["GETEX", "g", "EXAT", "9223372036854775"],
        &["PEXPIRETIME", "g"],
        &["EXPIRETIME", "g"],
        &["GETEX", "g", "PXAT", "1"],
        &["EXISTS", "g"],
        &["SET", "g", "v"],
        &["GETEX", "g", "EXAT", "1000"],
        &["GET", "g"],
        &["MSETNX", "m1", "a", "m2", "b"],
        &["MGET", "m1", "m2"],
        &["MSETNX", "m3", "c", "m1", "x"],
        &["MGET", "m1", "m2", "m3"],
        &["MSETNX", "m4", "d", "m4", "e"],
        &["GET", "m4"],
        &["MSETNX", "m5", "a", "m6"],
        &["MSETNX", "m5"],
        &["EXISTS", "m5"],
    ]);
    srv.stop();
}

#[test]
fn expire_options_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, _redis, mut both)) = start_both(dir.path()) else {
        return;
    };
    both.script(&[
        &["EXPIRE", "missing", "100"],
        &["EXPIRE", "missing", "100", "NX"],
        &["EXPIRE", "missing", "abc", "NX"],
        &["EXPIRE", "missing", "100", "FOO"],
        &["EXPIRE", "missing", "abc", "FOO"],
        &["EXPIRE", "missing", "100", "NX", "XX"],
        &["EXPIRE", "missing", "100", "NX", "GT"],
        &["EXPIRE", "missing", "100", "LT", "NX"],
        &["EXPIRE", "missing", "100", "GT", "LT"],
        &["EXPIRE", "missing", "100", "XX", "GT", "LT"],
        &["EXPIRE", "missing"],
        &["EXPIRETIME", "missing"],
        &["PEXPIRETIME", "missing"],
        &["EXPIRETIME"],
        &["SET", "k", "v"],
        &["EXPIRETIME", "k"],
        &["PEXPIRETIME", "k"],
        &["EXPIRE", "k", "9223372036854775807"],
        &["EXPIRE", "k", "-9223372036854775808"],
        &["PEXPIRE", "k", "9223372036854775807"],
        &["EXPIREAT", "k", "9223372036854775807"],
        &["EXPIREAT", "k", "abc"],
        &["PEXPIREAT", "k", "9223372036854775807"],
        &["PEXPIRETIME", "k"],
        &["EXPIRETIME", "k"],
        &["PERSIST", "k"],
        &["EXPIREAT", "k", LATER, "XX"],
        &["EXPIREAT", "k", LATER, "GT"],
        &["EXPIREAT", "k", LATER, "LT"],
        &["EXPIRETIME", "k"],
        &["EXPIREAT", "k", "4000000100", "NX"],
        &["EXPIREAT", "k", "4000000100", "xx"],
        &["EXPIRETIME", "k"],
        &["EXPIREAT", "k", LATER, "GT"],
        &["EXPIREAT", "k", "4000000100", "GT"],
        &["EXPIREAT", "k", "4000000200", "GT"],
        &["EXPIREAT", "k", "4000000200", "LT"],
        &["EXPIREAT", "k", "4000000100", "lt"],
        &["EXPIREAT", "k", "4000000300", "XX", "GT"],
        &["EXPIREAT", "k", "4000000300", "GT", "XX"],
        &["EXPIREAT", "k", "4000000000", "XX", "LT"],
        &["PEXPIRETIME", "k"],
        &["PEXPIREAT", "k", LATER_MS],
        &["EXPIRETIME", "k"],
        &["PEXPIREAT", "k", "4000000000623"],
        &["EXPIRETIME", "k"],
        &["PEXPIRETIME", "k"],
        &["EXPIRE", "k", "100", "GT"],
        &["EXPIRE", "k", "100", "LT"],
        &["PEXPIRE", "k", "100000", "NX"],
        &["PERSIST", "k"],
        &["EXPIRE", "k", "100", "LT"],
        &["PEXPIRE", "k", "-1", "GT"],
        &["EXISTS", "k"],
        &["EXPIRE", "k", "-1", "LT"],
        &["EXISTS", "k"],
        &["SET", "k", "v"],
        &["EXPIRE", "k", "0"],
        &["EXISTS", "k"],
        &["SET", "k", "v"],
        &["EXPIREAT", "k", "1"],
        &["EXISTS", "k"],
        &["SET", "k", "v"],
        &["PEXPIREAT", "k", "0", "NX"],
        &["EXISTS", "k"],
        &["SET", "k", "v"],
        &["PEXPIRE", "k", "-9223372036854775808"],
        &["EXISTS", "k"],
    ]);
    // Every combination of options, on a key with and without a TTL.
    let opts = ["NX", "XX", "GT", "LT", "FOO"];
    for a in 0..=opts.len() {
        for b in 0..=opts.len() {
            for ttl in [None, Some("4000000100")] {
                both.check_str(&["SET", "c", "v"]);
                if let Some(t) = ttl {
                    both.check_str(&["EXPIREAT", "c", t]);
                }
                let mut cmd = vec!["EXPIREAT", "c", LATER];
                cmd.extend(opts.get(a));
                cmd.extend(opts.get(b));
                both.check_str(&cmd);
                both.check_str(&["EXPIRETIME", "c"]);
            }
        }
    }
    srv.stop();
}

/// Random sequences of the string and TTL commands over a few keys, with
/// absolute times only (so that no reply depends on when it is sent).
#[test]
fn random_sequences_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let Some((srv, _redis, mut both)) = start_both(dir.path()) else {
        return;
    };
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    let times = ["1", "1000", LATER, "4000000100", "4000000200"];
    let ints = ["-3", "-1", "0", "1", "2", "5", "20", "x"];
    let values = ["", "1", "-2.5", "hello", "10", "abc def", "0.1"];
    for step in 0..4000 {
        let key = format!("x{}", rng.gen_range(0..5));
        let key2 = format!("x{}", rng.gen_range(0..5));
        let t = times[rng.gen_range(0..times.len())];
        let t_ms = format!("{t}{}", rng.gen_range(100..999));
        let i1 = ints[rng.gen_range(0..ints.len())];
        let i2 = ints[rng.gen_range(0..ints.len())];
        let v = values[rng.gen_range(0..values.len())];
        let cond = ["", "NX", "XX", "GT", "LT"][rng.gen_range(0..5)];
        let mut args: Vec<&str> = match rng.gen_range(0..17) {
            0 => vec!["SET", &key, v],
            1 => vec!["GET", &key],
            2 => vec!["APPEND", &key, v],
            3 => vec!["STRLEN", &key],
            4 => vec!["GETRANGE", &key, i1, i2],
            5 => vec!["SETRANGE", &key, i1, v],
            6 => vec!["INCRBYFLOAT", &key, v],
            7 => vec!["GETEX", &key, "EXAT", t],
            8 => vec!["GETEX", &key, "PXAT", &t_ms],
            9 => vec!["GETEX", &key, "PERSIST"],
            10 => vec!["MSETNX", &key, v, &key2, v],
            11 => vec!["EXPIREAT", &key, t, cond],
            12 => vec!["PEXPIREAT", &key, &t_ms, cond],
            13 => vec!["EXPIRETIME", &key],
            14 => vec!["PEXPIRETIME", &key],
            15 => vec!["DEL", &key],
            _ => vec!["INCR", &key],
        };
        if args[0].ends_with("EXPIREAT") && cond.is_empty() {
            args.pop();
        }
        let reply = both.check_str(&args);
        if step % 500 == 0 && reply.starts_with(b"-") {
            both.check_str(&["DEL", &key]);
        }
    }
    srv.stop();
}

/// APPEND, SETRANGE and INCRBYFLOAT keep a key's TTL; GETEX changes it;
/// values and TTLs written by each command are there after a clean
/// restart and after a kill -9.
#[test]
fn ttls_are_kept_and_everything_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let q = |con: &mut redis::Connection, args: &[&str]| -> redis::Value {
        redis::cmd(args[0]).arg(&args[1..]).query(con).unwrap()
    };
    let int = |con: &mut redis::Connection, args: &[&str]| -> i64 {
        redis::cmd(args[0]).arg(&args[1..]).query(con).unwrap()
    };
    for (key, write) in [
        ("ap", &["APPEND", "ap", "tail"][..]),
        ("sr", &["SETRANGE", "sr", "2", "xy"]),
        ("fl", &["INCRBYFLOAT", "fl", "0.5"]),
    ] {
        q(&mut con, &["SET", key, "12", "EX", "1000"]);
        q(&mut con, write);
        let ttl = int(&mut con, &["TTL", key]);
        assert!((990..=1000).contains(&ttl), "{write:?} left TTL {ttl}");
    }
    q(&mut con, &["SET", "gx", "v"]);
    let v: String = redis::cmd("GETEX")
        .arg(&["gx", "EX", "500"])
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "v");
    assert!((490..=500).contains(&int(&mut con, &["TTL", "gx"])));
    q(&mut con, &["SET", "gp", "v", "EX", "100"]);
    q(&mut con, &["GETEX", "gp", "PERSIST"]);
    assert_eq!(int(&mut con, &["TTL", "gp"]), -1);
    q(&mut con, &["SET", "ex", "v"]);
    assert_eq!(int(&mut con, &["EXPIREAT", "ex", LATER, "NX"]), 1);
    assert_eq!(int(&mut con, &["MSETNX", "m1", "a", "m2", "b"]), 1);
    q(&mut con, &["SET", "gone", "v"]);
    assert_eq!(int(&mut con, &["EXPIRE", "gone", "-1"]), 1);
    q(&mut con, &["SET", "gone2", "v"]);
    let v: String = redis::cmd("GETEX")
        .arg(&["gone2", "PXAT", "1"])
        .query(&mut con)
        .unwrap();
    assert_eq!(v, "v");
    let expected = |con: &mut redis::Connection| {
        let get = |con: &mut redis::Connection, k: &str| -> Option<String> {
            redis::cmd("GET").arg(k).query(con).unwrap()
        };
        assert_eq!(get(con, "ap").as_deref(), Some("12tail"));
        assert_eq!(get(con, "sr").as_deref(), Some("12xy"));
        assert_eq!(get(con, "fl").as_deref(), Some("12.5"));
        assert_eq!(get(con, "m1").as_deref(), Some("a"));
        assert_eq!(get(con, "m2").as_deref(), Some("b"));
        assert_eq!(get(con, "gone"), None);
        assert_eq!(get(con, "gone2"), None);
        for k in ["ap", "sr", "fl"] {
            let ttl: i64 = redis::cmd("TTL").arg(k).query(con).unwrap();
            assert!((900..=1000).contains(&ttl), "{k}: TTL {ttl}");
        }
        let ttl: i64 = redis::cmd("TTL").arg("gx").query(con).unwrap();
        assert!((400..=500).contains(&ttl), "gx: TTL {ttl}");
        let ttl: i64 = redis::cmd("TTL").arg("gp").query(con).unwrap();
        assert_eq!(ttl, -1);
        let at: i64 = redis::cmd("EXPIRETIME").arg("ex").query(con).unwrap();
        assert_eq!(at, 4_000_000_000);
    };
    expected(&mut con);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    expected(&mut con);
    // Written just before a crash: acknowledged, so durable.
    assert_eq!(int(&mut con, &["APPEND", "ap", "!"]), 7);
    assert_eq!(int(&mut con, &["EXPIREAT", "ex", "4000000100", "GT"]), 1);
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let v: String = redis::cmd("GET").arg("ap").query(&mut con).unwrap();
    assert_eq!(v, "12tail!");
    assert_eq!(int(&mut con, &["EXPIRETIME", "ex"]), 4_000_000_100);
    srv.stop();
}

/// MSETNX in a pipeline behind a read-modify-write of one of its keys
/// (a GETDEL whose record must come from the device): it waits for it,
/// and a later request for its other key waits for the MSETNX.
#[test]
fn msetnx_waits_for_its_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let _: () = redis::cmd("SET")
        .arg(&["a", "old"])
        .query(&mut con)
        .unwrap();
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let mut p = redis::pipe();
    p.cmd("GETDEL").arg("a");
    p.cmd("MSETNX").arg(&["a", "1", "b", "2"]);
    p.cmd("GET").arg("b");
    p.cmd("GET").arg("a");
    let (old, set, b, a): (String, i64, Option<String>, Option<String>) =
        p.query(&mut con).unwrap();
    assert_eq!(
        (old.as_str(), set, b.as_deref(), a.as_deref()),
        ("old", 1, Some("2"), Some("1"))
    );
    srv.stop();
}

/// With two pollers, MSETNX of keys that land on both sets all of them,
/// or none when one is there (on either poller).
#[test]
fn msetnx_across_pollers_sets_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut raw = RawConn::connect(srv.addr);
    let msetnx = |raw: &mut RawConn, keys: std::ops::Range<u32>| {
        let mut args: Vec<Vec<u8>> = vec![b"MSETNX".to_vec()];
        for i in keys {
            args.push(format!("key{i}").into_bytes());
            args.push(b"v".to_vec());
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        raw.call(&refs)
    };
    assert_eq!(msetnx(&mut raw, 0..32), b":1\r\n");
    assert_eq!(
        raw.call(&[b"EXISTS", b"key0", b"key1", b"key31"]),
        b":3\r\n"
    );
    // One key there, on either poller: none set.
    assert_eq!(msetnx(&mut raw, 31..64), b":0\r\n");
    assert_eq!(
        raw.call(&[b"EXISTS", b"key32", b"key33", b"key63"]),
        b":0\r\n"
    );
    assert_eq!(msetnx(&mut raw, 32..64), b":1\r\n");
    assert_eq!(
        raw.call(&[b"EXISTS", b"key32", b"key33", b"key63"]),
        b":3\r\n"
    );
    srv.stop();
}

/// APPEND and SETRANGE past `--max-value-size` get nvkv's error for that
/// limit and change nothing; past Redis's 512 MiB, Redis's own.
#[test]
fn append_and_setrange_stop_at_the_value_limit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-value-size", "1K"]);
    let mut raw = RawConn::connect(srv.addr);
    let half = vec![b'a'; 600];
    assert_eq!(raw.call(&[b"APPEND", b"k", &half]), b":600\r\n");
    assert_eq!(
        raw.call(&[b"APPEND", b"k", &half]),
        b"-ERR value of 1200 bytes is over the limit of 1024 (--max-value-size)\r\n"
    );
    assert_eq!(
        raw.call(&[b"SETRANGE", b"k", b"1020", b"0123456789"]),
        b"-ERR value of 1030 bytes is over the limit of 1024 (--max-value-size)\r\n"
    );
    assert_eq!(raw.call(&[b"STRLEN", b"k"]), b":600\r\n");
    assert_eq!(
        raw.call(&[b"SETRANGE", b"k", b"1014", b"0123456789"]),
        b":1024\r\n"
    );
    assert_eq!(
        raw.call(&[b"SETRANGE", b"k", b"536870911", b"xx"]),
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    assert_eq!(raw.call(&[b"STRLEN", b"k"]), b":1024\r\n");
    srv.stop();
}

/// LCS answers as Redis's: random strings over a small alphabet (so they
/// share long subsequences), with every option (LEN, IDX, MINMATCHLEN,
/// WITHMATCHLEN) and their errors, keys on one poller and on two, a
/// missing key (an empty string), plainly and inside MULTI … EXEC, in
/// RESP2 and RESP3; a table over `proto-max-bulk-len` is refused with
/// Redis's error; COMMAND INFO and DOCS describe it as Redis does.
#[test]
fn lcs_answers_as_redis() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut ours = RawConn::connect(srv.addr);
    let mut theirs = RawConn::connect(redis.addr.as_str());
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let options: &[&[&[u8]]] = &[
        &[],
        &[b"LEN"],
        &[b"IDX"],
        &[b"IDX", b"WITHMATCHLEN"],
        &[b"IDX", b"MINMATCHLEN", b"2"],
        &[b"idx", b"minmatchlen", b"3", b"withmatchlen"],
        &[b"MINMATCHLEN", b"-4", b"IDX"],
        &[b"LEN", b"IDX"],
        &[b"MINMATCHLEN"],
        &[b"MINMATCHLEN", b"x"],
        &[b"FOO"],
        &[b"WITHMATCHLEN"],
    ];
    for round in 0..200 {
        let text = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
            let n = rng.gen_range(0..14);
            (0..n).map(|_| b"abc"[rng.gen_range(0..3)]).collect()
        };
        let (a, b) = (text(&mut rng), text(&mut rng));
        let (ka, kb): (&[u8], &[u8]) = match round % 4 {
            0 => (b"x", b"y"),
            1 => (b"{t}x", b"{t}y"),
            2 => (b"x", b"x"),
            _ => (b"x", b"missing"),
        };
        let mut lcs: Vec<&[u8]> = vec![b"LCS", ka, kb];
        lcs.extend(options[round % options.len()]);
        let proto: &[u8] = if round % 3 == 0 { b"3" } else { b"2" };
        let hello: [&[u8]; 2] = [b"HELLO", proto];
        let (set_a, set_b): ([&[u8]; 3], [&[u8]; 3]) = ([b"SET", ka, &a], [b"SET", kb, &b]);
        let cmds: Vec<&[&[u8]]> = vec![&hello, &set_a, &set_b, &lcs, &[b"MULTI"], &lcs, &[b"EXEC"]];
        // HELLO's reply names the server and the client: left out.
        let ours_got = ours.pipeline(&cmds[1..]);
        let theirs_got = theirs.pipeline(&cmds[1..]);
        ours.pipeline(&cmds[..1]);
        theirs.pipeline(&cmds[..1]);
        assert_eq!(
            ours_got.escape_ascii().to_string(),
            theirs_got.escape_ascii().to_string(),
            "round {round}: {:?}",
            lcs.iter()
                .map(|a| a.escape_ascii().to_string())
                .collect::<Vec<_>>()
        );
    }
    let mut both = Both {
        ours: RawConn::connect(srv.addr),
        theirs: RawConn::connect(redis.addr.as_str()),
    };
    let long = "a".repeat(12_000);
    let other = "b".repeat(12_000);
    both.check_str(&["SET", "la", &long]);
    both.check_str(&["SET", "lb", &other]);
    both.check_str(&["LCS", "la", "lb", "LEN"]);
    both.check_str(&["LCS", "la"]);
    both.check_str(&["COMMAND", "INFO", "lcs"]);
    both.check_str(&["COMMAND", "DOCS", "lcs"]);
    srv.stop();
}
