//! Values larger than a segment inside MULTI … EXEC (issue 17, point 5):
//! the large values' pieces are written first, their heads in the
//! transaction's one commit; compared with a real redis-server where one
//! is installed. Also SET … GET of a large value (its key held until the
//! head is durable) and a moved large value that cannot be read back for
//! the replication stream.

mod common;

use std::time::{Duration, Instant};

use common::large::{client, converge_keys, stat, value};
use common::Server;
use redis::{Commands, Value};

/// Bytes of value one piece holds in the tests' stores (2 MiB segments,
/// 4 KiB blocks).
const CAP: usize = (2 << 20) - 4096;

fn cmd(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// The server's peak RSS so far is under `mib` MiB (half the 256 MiB
/// value of the tests that check it): it held no value whole.
fn assert_peak_rss_under(srv: &Server, mib: u64) {
    let hwm_mib = common::status_kib(srv.pid(), "VmHWM") / 1024;
    println!("server peak RSS {hwm_mib} MiB");
    assert!(hwm_mib < mib, "peak RSS {hwm_mib} MiB");
}

/// Runs `cmds` as one MULTI … EXEC: EXEC's reply (or its error).
fn exec(con: &mut redis::Connection, cmds: &[redis::Cmd]) -> Result<Value, String> {
    let _: () = redis::cmd("MULTI").query(con).map_err(|e| e.to_string())?;
    for c in cmds {
        let queued: Value = c.query(con).map_err(|e| e.to_string())?;
        if queued != Value::SimpleString("QUEUED".into()) {
            return Err(format!("not queued: {queued:?}"));
        }
    }
    redis::cmd("EXEC").query(con).map_err(|e| e.to_string())
}

/// A reply, short enough to print: bulk strings as their lengths and
/// first bytes.
fn summary(v: &Result<Value, String>) -> String {
    fn one(v: &Value) -> String {
        match v {
            Value::BulkString(b) => format!("bulk({}, {:?})", b.len(), &b[..b.len().min(8)]),
            Value::Array(a) => format!("[{}]", a.iter().map(one).collect::<Vec<_>>().join(", ")),
            v => format!("{v:?}"),
        }
    }
    match v {
        Ok(v) => one(v),
        Err(e) => format!("error: {e}"),
    }
}

/// The same command to both servers: the same reply.
fn same(ours: &mut redis::Connection, theirs: &mut redis::Connection, args: &[&[u8]]) {
    let a = cmd(args).query::<Value>(ours).map_err(|e| e.to_string());
    let b = cmd(args).query::<Value>(theirs).map_err(|e| e.to_string());
    assert!(a == b, "ours {} theirs {}", summary(&a), summary(&b));
}

/// The same transaction to both servers: the same reply.
fn same_exec(ours: &mut redis::Connection, theirs: &mut redis::Connection, cmds: &[redis::Cmd]) {
    let (a, b) = (exec(ours, cmds), exec(theirs, cmds));
    assert!(a == b, "ours {} theirs {}", summary(&a), summary(&b));
}

/// Every key of `keys` has the same value on both servers.
fn same_values(ours: &mut redis::Connection, theirs: &mut redis::Connection, keys: &[&str]) {
    for k in keys {
        let a: Option<Vec<u8>> = ours.get(*k).unwrap();
        let b: Option<Vec<u8>> = theirs.get(*k).unwrap();
        assert!(
            a == b,
            "{k}: ours {:?} theirs {:?}",
            a.map(|v| v.len()),
            b.map(|v| v.len())
        );
    }
}

/// SET, APPEND, SETRANGE, GET, GETRANGE, STRLEN, RENAME, COPY, GETDEL,
/// SET … GET, GETEX, PEXPIRE, INCR and INCRBYFLOAT of large values inside MULTI …
/// EXEC, mixed with small keys, on new keys and on large values stored
/// before: EXEC's replies and the keys' values as redis-server's, and the
/// same after a restart.
#[test]
fn transactions_of_large_values_answer_as_redis_does() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let big = value(40 << 20, 1);
    let c = |args: &[&[u8]]| cmd(args);
    let cap = (CAP - 3).to_string();
    // New keys: the large value written and read back inside EXEC.
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SET", b"a{t}", &big]),
            c(&[b"SET", b"s{t}", b"small"]),
            c(&[b"GET", b"a{t}"]),
            c(&[b"STRLEN", b"a{t}"]),
            c(&[b"APPEND", b"a{t}", b"xyz"]),
            c(&[b"GETRANGE", b"a{t}", b"-5", b"-1"]),
            c(&[b"SETRANGE", b"a{t}", cap.as_bytes(), b"across"]),
            c(&[b"GET", b"s{t}"]),
        ],
    );
    same_values(&mut ours, &mut theirs, &["a{t}", "s{t}"]);
    // Large values stored before: read whole inside EXEC, edited, moved.
    let (v2, v3, v4) = (value(5 << 20, 2), value(3 << 20, 3), value(4 << 20, 4));
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"GET", b"a{t}"]),
            c(&[b"SETRANGE", b"a{t}", b"5", b"hello"]),
            c(&[b"APPEND", b"s{t}", &v2]),
            c(&[b"INCR", b"a{t}"]),
            c(&[b"INCRBYFLOAT", b"a{t}", b"1.5"]),
            c(&[b"RENAME", b"a{t}", b"b{t}"]),
            c(&[b"GET", b"b{t}"]),
            c(&[b"COPY", b"b{t}", b"c{t}"]),
            c(&[b"PEXPIRE", b"b{t}", b"600000"]),
            c(&[b"GETDEL", b"c{t}"]),
            c(&[b"SET", b"d{t}", &v3, b"GET"]),
            c(&[b"SET", b"b{t}", &v4, b"KEEPTTL", b"GET"]),
            c(&[b"STRLEN", b"b{t}"]),
            c(&[b"GETEX", b"s{t}", b"PX", b"900000"]),
            c(&[b"EXISTS", b"a{t}", b"c{t}"]),
        ],
    );
    let keys = ["a{t}", "b{t}", "c{t}", "d{t}", "s{t}"];
    same_values(&mut ours, &mut theirs, &keys);
    // A large value overwritten, deleted and set again in one EXEC.
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SET", b"d{t}", &big]),
            c(&[b"DEL", b"d{t}"]),
            c(&[b"SET", b"e{t}", &v2]),
            c(&[b"SET", b"d{t}", &v4]),
            c(&[b"RENAME", b"e{t}", b"f{t}"]),
            c(&[b"RENAME", b"f{t}", b"g{t}"]),
            c(&[b"EXISTS", b"d{t}", b"e{t}", b"f{t}", b"g{t}"]),
        ],
    );
    let keys = [
        "a{t}", "b{t}", "c{t}", "d{t}", "e{t}", "f{t}", "g{t}", "s{t}",
    ];
    same_values(&mut ours, &mut theirs, &keys);
    for k in ["b{t}", "s{t}"] {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query(&mut ours).unwrap();
        assert!(ttl > 500_000, "{k}: {ttl}");
    }
    // Durable: the same values after a restart.
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut ours = client(&srv);
    same_values(&mut ours, &mut theirs, &keys);
    srv.stop();
}

/// SETRANGE and APPEND inside MULTI … EXEC of large values stored before
/// write only the pieces they reach (counted by INFO), compose with each
/// other and with the reads, INCR, TTL and overwrites after them in the
/// same EXEC, and answer as redis-server does; the values are the same,
/// after a restart too.
#[test]
fn edits_of_stored_large_values_inside_exec_write_only_their_pieces() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let c = |args: &[&[u8]]| cmd(args);
    for (k, seed) in [("a{e}", 1), ("b{e}", 2), ("c{e}", 3)] {
        let v = value(6 * CAP + 123, seed);
        let _: () = ours.set(k, &v).unwrap();
        let _: () = theirs.set(k, &v).unwrap();
    }
    let _: () = ours.pexpire("c{e}", 900_000).unwrap();
    let _: () = theirs.pexpire("c{e}", 900_000).unwrap();
    let written = |srv: &Server| stat(srv, "large_pieces_written");
    // One byte: one piece written.
    let before = written(&srv);
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SETRANGE", b"a{e}", b"7", b"Z"]),
            c(&[b"STRLEN", b"a{e}"]),
        ],
    );
    assert_eq!(written(&srv) - before, 1, "a 1-byte SETRANGE inside EXEC");
    same_values(&mut ours, &mut theirs, &["a{e}"]);
    // Edits composing: across a piece boundary, twice in one piece, an
    // APPEND, a SETRANGE past the end, then reads of the result.
    let across = (2 * CAP - 3).to_string();
    let far = (6 * CAP + 500).to_string();
    let before = written(&srv);
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SETRANGE", b"b{e}", across.as_bytes(), b"across"]),
            c(&[b"SETRANGE", b"b{e}", b"10", b"hello"]),
            c(&[b"GETRANGE", b"b{e}", b"5", b"20"]),
            c(&[b"SETRANGE", b"b{e}", b"12", b"LL"]),
            c(&[b"APPEND", b"b{e}", b"tail"]),
            c(&[b"STRLEN", b"b{e}"]),
            c(&[b"SETRANGE", b"b{e}", far.as_bytes(), b"far"]),
            c(&[b"SETRANGE", b"b{e}", b"3", b""]),
            c(&[b"APPEND", b"b{e}", b""]),
            c(&[b"GETRANGE", b"b{e}", b"-600", b"-1"]),
            c(&[b"GETRANGE", b"b{e}", across.as_bytes(), b"-1"]),
            c(&[b"INCR", b"b{e}"]),
            c(&[b"INCRBYFLOAT", b"b{e}", b"1.5"]),
            c(&[b"TTL", b"b{e}"]),
            c(&[b"EXISTS", b"b{e}"]),
            c(&[b"SETRANGE", b"c{e}", b"1", b"ttl kept"]),
            c(&[b"TTL", b"c{e}"]),
        ],
    );
    // b: pieces 0, 1, 2 and the last (6, grown to the bytes past the
    // end); c: piece 0.
    assert_eq!(written(&srv) - before, 5, "edits inside EXEC");
    same_values(&mut ours, &mut theirs, &["b{e}", "c{e}"]);
    let ttl: i64 = redis::cmd("PTTL").arg("c{e}").query(&mut ours).unwrap();
    assert!(ttl > 500_000, "c{{e}}: {ttl}");
    // An edited value then read whole, copied, overwritten, deleted.
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SETRANGE", b"a{e}", b"1", b"first"]),
            c(&[b"GET", b"a{e}"]),
            c(&[b"COPY", b"a{e}", b"d{e}"]),
            c(&[b"SETRANGE", b"a{e}", b"2", b"second"]),
            c(&[b"SET", b"a{e}", b"small", b"GET"]),
            c(&[b"SETRANGE", b"c{e}", b"3", b"gone"]),
            c(&[b"DEL", b"c{e}"]),
            c(&[b"SETRANGE", b"b{e}", b"100", b"kept"]),
            c(&[b"PEXPIRE", b"b{e}", b"800000"]),
            c(&[b"EXISTS", b"a{e}", b"b{e}", b"c{e}", b"d{e}"]),
        ],
    );
    let keys = ["a{e}", "b{e}", "c{e}", "d{e}"];
    same_values(&mut ours, &mut theirs, &keys);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut ours = client(&srv);
    same_values(&mut ours, &mut theirs, &keys);
    srv.stop();
}

/// A 1-byte SETRANGE inside MULTI … EXEC of a 256 MiB value stored before
/// (the server started with it on its device) keeps the server's peak RSS
/// under half the value: only the piece it reaches is in memory.
#[test]
fn a_setrange_inside_exec_of_256_mib_keeps_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--capacity", "1G"];
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let mut big = value(256 << 20, 46);
    let _: () = c.set("big", &big).unwrap();
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let at = (200 << 20).to_string();
    let got = exec(&mut c, &[cmd(&[b"SETRANGE", b"big", at.as_bytes(), b"!"])]);
    assert_eq!(got, Ok(Value::Array(vec![Value::Int(256 << 20)])));
    assert_peak_rss_under(&srv, 128);
    big[200 << 20] = b'!';
    let back: Vec<u8> = c.get("big").unwrap();
    assert!(back == big, "the edited value read back differs");
    srv.stop();
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT and PERSIST (with NX, XX, GT,
/// LT, and a time past), RENAME, RENAMENX and COPY inside MULTI … EXEC
/// of large values stored before and of ones the EXEC edited, and the
/// commands after them in the same EXEC (TTL, EXPIRETIME, STRLEN,
/// GETRANGE, GET, SETRANGE, EXISTS): as redis-server answers; the values
/// and expiries the same, after a restart too.
#[test]
fn expiries_and_moves_inside_exec_of_stored_large_values_answer_as_redis_does() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let c = |args: &[&[u8]]| cmd(args);
    let keys = [
        "a{m}", "b{m}", "c{m}", "d{m}", "e{m}", "f{m}", "g{m}", "h{m}",
    ];
    for (seed, k) in keys.iter().take(4).enumerate() {
        let v = value(3 * CAP + 77 + seed, seed as u8 + 10);
        let _: () = ours.set(*k, &v).unwrap();
        let _: () = theirs.set(*k, &v).unwrap();
    }
    for con in [&mut ours, &mut theirs] {
        let _: () = con.expire("b{m}", 3000).unwrap();
    }
    let at = b"4102444800";
    let at_ms = b"4102444800123";
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"EXPIRE", b"a{m}", b"1000"]),
            c(&[b"TTL", b"a{m}"]),
            c(&[b"EXPIRE", b"a{m}", b"500", b"GT"]),
            c(&[b"EXPIRE", b"a{m}", b"2000", b"XX"]),
            c(&[b"EXPIRE", b"a{m}", b"5000", b"NX"]),
            c(&[b"TTL", b"a{m}"]),
            c(&[b"PERSIST", b"a{m}"]),
            c(&[b"TTL", b"a{m}"]),
            c(&[b"PERSIST", b"a{m}"]),
            c(&[b"EXPIRE", b"b{m}", b"100", b"GT"]),
            c(&[b"PEXPIRE", b"b{m}", b"2000000", b"LT"]),
            c(&[b"EXPIRE", b"c{m}", b"10", b"XX"]),
            c(&[b"PEXPIREAT", b"c{m}", at_ms, b"NX"]),
            c(&[b"PEXPIRETIME", b"c{m}"]),
            c(&[b"EXPIREAT", b"d{m}", at]),
            c(&[b"EXPIRETIME", b"d{m}"]),
            c(&[b"STRLEN", b"d{m}"]),
            c(&[b"GETRANGE", b"d{m}", b"0", b"9"]),
        ],
    );
    same_values(&mut ours, &mut theirs, &keys);
    let cap = (CAP - 2).to_string();
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"RENAME", b"a{m}", b"e{m}"]),
            c(&[b"EXISTS", b"a{m}", b"e{m}"]),
            c(&[b"STRLEN", b"e{m}"]),
            c(&[b"TTL", b"e{m}"]),
            c(&[b"SETRANGE", b"e{m}", cap.as_bytes(), b"across"]),
            c(&[b"GETRANGE", b"e{m}", cap.as_bytes(), b"-1"]),
            c(&[b"COPY", b"b{m}", b"f{m}"]),
            c(&[b"TTL", b"f{m}"]),
            c(&[b"SETRANGE", b"f{m}", b"3", b"copy"]),
            c(&[b"GET", b"b{m}"]),
            c(&[b"COPY", b"c{m}", b"f{m}"]),
            c(&[b"RENAMENX", b"c{m}", b"f{m}"]),
            c(&[b"RENAMENX", b"c{m}", b"g{m}"]),
            c(&[b"PEXPIRETIME", b"g{m}"]),
            c(&[b"RENAME", b"d{m}", b"g{m}"]),
            c(&[b"EXPIRETIME", b"g{m}"]),
            c(&[b"PERSIST", b"g{m}"]),
            c(&[b"GET", b"g{m}"]),
            c(&[
                b"EXISTS", b"a{m}", b"b{m}", b"c{m}", b"d{m}", b"f{m}", b"g{m}",
            ]),
        ],
    );
    same_values(&mut ours, &mut theirs, &keys);
    // Views the EXEC edited, moved and given expiries; a time past
    // deletes.
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"SETRANGE", b"e{m}", b"1", b"view"]),
            c(&[b"EXPIRE", b"e{m}", b"700"]),
            c(&[b"RENAME", b"e{m}", b"h{m}"]),
            c(&[b"TTL", b"h{m}"]),
            c(&[b"COPY", b"h{m}", b"a{m}"]),
            c(&[b"SETRANGE", b"a{m}", b"2", b"A"]),
            c(&[b"SETRANGE", b"h{m}", b"2", b"H"]),
            c(&[b"GETRANGE", b"a{m}", b"0", b"9"]),
            c(&[b"GETRANGE", b"h{m}", b"0", b"9"]),
            c(&[b"PERSIST", b"a{m}"]),
            c(&[b"RENAME", b"b{m}", b"h{m}"]),
            c(&[b"STRLEN", b"h{m}"]),
            c(&[b"SETRANGE", b"g{m}", b"5", b"gone"]),
            c(&[b"EXPIRE", b"g{m}", b"-1"]),
            c(&[b"PEXPIREAT", b"f{m}", b"1"]),
            c(&[
                b"EXISTS", b"a{m}", b"b{m}", b"e{m}", b"f{m}", b"g{m}", b"h{m}",
            ]),
        ],
    );
    same_values(&mut ours, &mut theirs, &keys);
    let ttls = |con: &mut redis::Connection| -> Vec<i64> {
        let ttl = |k: &&str| redis::cmd("TTL").arg(*k).query::<i64>(&mut *con).unwrap();
        keys.iter().map(ttl).collect()
    };
    // TTLs counted down by both servers, read at about the same time: the
    // same, or a second apart where one crossed a second before the other
    // (the restart below takes a while).
    let same_ttls = |ours: &mut redis::Connection, theirs: &mut redis::Connection| {
        let (a, b) = (ttls(ours), ttls(theirs));
        let close = |(x, y): (&i64, &i64)| x == y || *x >= 0 && *y >= 0 && x.abs_diff(*y) <= 1;
        assert!(
            a.iter().zip(&b).all(close),
            "TTLs {a:?}, redis-server's {b:?}"
        );
    };
    same_ttls(&mut ours, &mut theirs);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut ours = client(&srv);
    same_values(&mut ours, &mut theirs, &keys);
    same_ttls(&mut ours, &mut theirs);
    srv.stop();
}

/// RENAME, then EXPIRE, PERSIST and COPY inside MULTI … EXEC of a 256 MiB
/// value stored before (the server started with it on its device) keep
/// the server's peak RSS under half the value: the value is not read;
/// the keys are as they should be after.
#[test]
fn a_rename_and_an_expire_inside_exec_of_256_mib_keep_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--capacity", "1G"];
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let big = value(256 << 20, 48);
    let _: () = c.set("big{x}", &big).unwrap();
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let len = Value::Int(256 << 20);
    let got = exec(
        &mut c,
        &[
            cmd(&[b"EXPIRE", b"big{x}", b"1000"]),
            cmd(&[b"TTL", b"big{x}"]),
        ],
    );
    assert_eq!(got, Ok(Value::Array(vec![Value::Int(1), Value::Int(1000)])));
    let got = exec(
        &mut c,
        &[
            cmd(&[b"RENAME", b"big{x}", b"moved{x}"]),
            cmd(&[b"STRLEN", b"moved{x}"]),
            cmd(&[b"PERSIST", b"moved{x}"]),
            cmd(&[b"COPY", b"moved{x}", b"copy{x}"]),
            cmd(&[b"EXISTS", b"big{x}"]),
        ],
    );
    let ok = Value::Okay;
    let want = vec![ok, len, Value::Int(1), Value::Int(1), Value::Int(0)];
    assert_eq!(got, Ok(Value::Array(want)));
    assert_peak_rss_under(&srv, 128);
    for k in ["moved{x}", "copy{x}"] {
        let ttl: i64 = c.ttl(k).unwrap();
        assert_eq!(ttl, -1, "{k}");
        let back: Vec<u8> = c.get(k).unwrap();
        assert!(back == big, "{k}: the value read back differs");
    }
    srv.stop();
}

/// Reads inside MULTI … EXEC of large values stored before, and of one
/// the EXEC edited in pieces, stream their values after EXEC's other
/// replies, in order: GET, GETRANGE, SUBSTR, GETEX, GETDEL, SET … GET,
/// GETSET, MGET, with PING and small values between; each value as of
/// its point in the transaction. As redis-server answers.
#[test]
fn reads_of_large_values_inside_exec_stream_as_redis_answers() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let c = |args: &[&[u8]]| cmd(args);
    for (k, v) in [
        ("a{s}", value(3 * CAP + 11, 1)),
        ("b{s}", value(2 * CAP + 5, 2)),
        ("g{s}", value(CAP + 77, 3)),
        ("s{s}", b"small".to_vec()),
    ] {
        let _: () = ours.set(k, &v).unwrap();
        let _: () = theirs.set(k, &v).unwrap();
    }
    let mid = (CAP + 10).to_string();
    let v5 = value(2 * CAP, 5);
    let before = (
        common::hits_misses(&mut ours),
        common::hits_misses(&mut theirs),
    );
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"GET", b"a{s}"]),
            c(&[b"PING"]),
            c(&[b"GETRANGE", b"a{s}", b"5", mid.as_bytes()]),
            c(&[b"SUBSTR", b"a{s}", b"-9", b"-1"]),
            c(&[b"GETRANGE", b"a{s}", b"9", b"3"]),
            c(&[b"SET", b"a{s}", b"new", b"GET"]),
            c(&[b"GET", b"a{s}"]),
            c(&[b"MGET", b"b{s}", b"s{s}", b"missing{s}", b"b{s}"]),
            c(&[b"SETRANGE", b"b{s}", b"7", b"edited"]),
            c(&[b"GETEX", b"b{s}"]),
            c(&[b"APPEND", b"b{s}", b"tail"]),
            c(&[b"GETRANGE", b"b{s}", b"0", b"20"]),
            c(&[b"GETDEL", b"b{s}"]),
            c(&[b"GET", b"b{s}"]),
            c(&[b"GETSET", b"g{s}", &v5]),
            c(&[b"GET", b"g{s}"]),
            c(&[b"GET", b"s{s}"]),
        ],
    );
    // Each read counted once in INFO's keyspace hits and misses, streamed
    // or not, as Redis counts them.
    let after = (
        common::hits_misses(&mut ours),
        common::hits_misses(&mut theirs),
    );
    let delta = |a: (u64, u64), b: (u64, u64)| (a.0 - b.0, a.1 - b.1);
    assert_eq!(
        delta(after.0, before.0),
        delta(after.1, before.1),
        "keyspace (hits, misses) of the EXEC: nvkv, then Redis"
    );
    same_values(&mut ours, &mut theirs, &["a{s}", "b{s}", "g{s}", "s{s}"]);
    // GETEX's expiries: a head sharing the pieces; in the past, a delete.
    for (k, v) in [
        ("x{s}", value(2 * CAP + 1, 6)),
        ("y{s}", value(3 * CAP, 7)),
        ("z{s}", value(CAP + 2, 8)),
    ] {
        let _: () = ours.set(k, &v).unwrap();
        let _: () = theirs.set(k, &v).unwrap();
    }
    let _: () = ours.pexpire("x{s}", 700_000).unwrap();
    let _: () = theirs.pexpire("x{s}", 700_000).unwrap();
    same_exec(
        &mut ours,
        &mut theirs,
        &[
            c(&[b"GETEX", b"x{s}", b"PERSIST"]),
            c(&[b"TTL", b"x{s}"]),
            c(&[b"GETEX", b"y{s}", b"PX", b"900000"]),
            c(&[b"TTL", b"y{s}"]),
            c(&[b"SETRANGE", b"y{s}", b"3", b"zz"]),
            c(&[b"GETEX", b"y{s}", b"EX", b"1000"]),
            c(&[b"TTL", b"y{s}"]),
            c(&[b"GETEX", b"z{s}", b"PXAT", b"1"]),
            c(&[b"EXISTS", b"z{s}"]),
            c(&[b"GETEX", b"z{s}", b"PERSIST"]),
        ],
    );
    same_values(&mut ours, &mut theirs, &["x{s}", "y{s}", "z{s}"]);
    let ttl: i64 = redis::cmd("PTTL").arg("y{s}").query(&mut ours).unwrap();
    assert!(ttl > 900_000, "y{{s}}: {ttl}");
    let ttl: i64 = redis::cmd("PTTL").arg("x{s}").query(&mut ours).unwrap();
    assert_eq!(ttl, -1, "x{{s}}");
    // Pipelined after an EXEC that streams: the replies keep their order.
    let (x, y): (Vec<Value>, String) = redis::pipe()
        .cmd("MULTI")
        .ignore()
        .cmd("GET")
        .arg("g{s}")
        .ignore()
        .cmd("GET")
        .arg("g{s}")
        .ignore()
        .cmd("EXEC")
        .cmd("GET")
        .arg("s{s}")
        .query(&mut ours)
        .unwrap();
    assert_eq!(
        x,
        vec![Value::BulkString(v5.clone()), Value::BulkString(v5)]
    );
    assert_eq!(y, "small");
    // DUMP inside EXEC restores to the value.
    let dumped = exec(&mut ours, &[c(&[b"DUMP", b"g{s}"])]).unwrap();
    let Value::Array(d) = dumped else {
        panic!("{dumped:?}")
    };
    let Value::BulkString(payload) = &d[0] else {
        panic!("{d:?}")
    };
    let _: () = redis::cmd("RESTORE")
        .arg("h{s}")
        .arg(0)
        .arg(payload)
        .query(&mut ours)
        .unwrap();
    let (g, h): (Vec<u8>, Vec<u8>) = (ours.get("g{s}").unwrap(), ours.get("h{s}").unwrap());
    assert!(g == h, "DUMP inside EXEC restored another value");
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut ours = client(&srv);
    same_values(&mut ours, &mut theirs, &["x{s}", "y{s}", "z{s}"]);
    let ttl: i64 = redis::cmd("PTTL").arg("y{s}").query(&mut ours).unwrap();
    assert!(ttl > 900_000, "y{{s}} after a restart: {ttl}");
    srv.stop();
}

/// A GET inside MULTI … EXEC of a 256 MiB value streams it: the server's
/// peak RSS stays under half the value, and another client overwriting
/// the key while the reply is read does not change it.
#[test]
fn a_get_inside_exec_of_256_mib_streams_the_value_it_found() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let args = ["--capacity", "1G"];
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let big = value(256 << 20, 47);
    let _: () = c.set("big", &big).unwrap();
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &args);
    let mut s = common::raw(&srv);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(b"MULTI\r\nGET big\r\nPING\r\nEXEC\r\n")
        .unwrap();
    let head = format!("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n${}\r\n", big.len());
    let mut got = vec![0; head.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8_lossy(&got), head);
    // EXEC ran: the key changes under the reply being read.
    let mut c = client(&srv);
    let _: () = c.set("big", "overwritten").unwrap();
    let mut buf = vec![0; 1 << 20];
    for (i, chunk) in big.chunks(buf.len()).enumerate() {
        let got = &mut buf[..chunk.len()];
        s.read_exact(got).unwrap();
        assert!(got == chunk, "the value differs in MiB {i}");
    }
    let mut tail = [0u8; 9];
    s.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"\r\n+PONG\r\n");
    assert_peak_rss_under(&srv, 128);
    let now: String = c.get("big").unwrap();
    assert_eq!(now, "overwritten");
    srv.stop();
}

/// EXECABORT after a large SET was queued applies nothing; WATCH of a
/// large key changed by another client (SET, SETRANGE) makes EXEC answer
/// nil and apply nothing; unchanged, EXEC runs: as redis-server.
#[test]
fn execabort_and_watch_with_large_values_answer_as_redis_does() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let (mut ours, mut theirs) = (client(&srv), real.client());
    let (mut ours2, mut theirs2) = (client(&srv), real.client());
    let (v1, v2) = (value(6 << 20, 1), value(5 << 20, 2));
    let mut both = |args: &[&[u8]]| same(&mut ours, &mut theirs, args);
    both(&[b"MULTI"]);
    both(&[b"SET", b"x", &v1]);
    both(&[b"NOSUCHCOMMAND", b"x"]);
    both(&[b"EXEC"]);
    both(&[b"EXISTS", b"x"]);
    both(&[b"SET", b"w", &v1]);
    // Changed by another client after WATCH: by a large SET, by a SETRANGE.
    for change in [
        &[&b"SET"[..], b"w", &v2][..],
        &[&b"SETRANGE"[..], b"w", b"100", b"changed"][..],
    ] {
        same(&mut ours, &mut theirs, &[b"WATCH", b"w"]);
        same(&mut ours2, &mut theirs2, change);
        let mut both = |args: &[&[u8]]| same(&mut ours, &mut theirs, args);
        both(&[b"MULTI"]);
        both(&[b"SET", b"w", &v1]);
        both(&[b"SET", b"y", &v2]);
        both(&[b"EXEC"]);
        both(&[b"EXISTS", b"y"]);
    }
    // Unchanged: EXEC runs.
    let mut both = |args: &[&[u8]]| same(&mut ours, &mut theirs, args);
    both(&[b"WATCH", b"w"]);
    both(&[b"MULTI"]);
    both(&[b"SET", b"w", &v1]);
    both(&[b"STRLEN", b"w"]);
    both(&[b"EXEC"]);
    same_values(&mut ours, &mut theirs, &["w", "x", "y"]);
    srv.stop();
}

/// SET … GET whose new value is large holds its key until the new head is
/// durable: a GET pipelined right after it finds the new value, never the
/// old one.
#[test]
fn set_get_of_a_large_value_holds_its_key_until_its_head_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let mut prev = value(3 * CAP + 5, 0);
    let _: () = c.set("k", &prev).unwrap();
    for round in 1..6u8 {
        let next = value(3 * CAP + 5 + round as usize, round);
        let (old, now): (Vec<u8>, Vec<u8>) = redis::pipe()
            .cmd("SET")
            .arg("k")
            .arg(&next)
            .arg("GET")
            .cmd("GET")
            .arg("k")
            .query(&mut c)
            .unwrap();
        assert!(
            old == prev,
            "round {round}: SET … GET answered another value"
        );
        assert!(
            now == next,
            "round {round}: a GET after SET … GET found the old value"
        );
        prev = next;
    }
    // From a small value read from the device (after a restart): the
    // same.
    let _: () = c.set("s", "small").unwrap();
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    let mut c = client(&srv);
    let next = value(2 * CAP, 9);
    let (old, now): (Vec<u8>, Vec<u8>) = redis::pipe()
        .cmd("SET")
        .arg("s")
        .arg(&next)
        .arg("GET")
        .cmd("GET")
        .arg("s")
        .query(&mut c)
        .unwrap();
    assert_eq!(old, b"small");
    assert!(now == next, "a GET after SET … GET found the old value");
    srv.stop();
}

/// Runs the EXECs `cmds(1)`, `cmds(2)`, … (each also setting `y{k}` to
/// its round, at most `rounds` of them) on `c` until the server, killed
/// (-9) after `wait`, stops answering; restarts it on `dir` and returns it
/// with the round `y{k}` tells, checked to be the last acknowledged or
/// the next.
fn kill_during_execs(
    dir: &std::path::Path,
    (srv, mut c): (Server, redis::Connection),
    rounds: u32,
    wait: Duration,
    cmds: impl Fn(u32) -> Vec<redis::Cmd> + Send + 'static,
) -> (Server, u32) {
    let writer = std::thread::spawn(move || {
        let mut acked = 0;
        for round in 1..rounds {
            match exec(&mut c, &cmds(round)) {
                Ok(Value::Array(_)) => acked = round,
                _ => break,
            }
        }
        acked
    });
    std::thread::sleep(wait);
    srv.kill();
    let acked = writer.join().unwrap();
    assert!(acked < rounds - 1, "the kill came after every EXEC");
    println!("{acked} EXECs acknowledged before the kill");
    let srv = Server::start(dir, &[]);
    let mut c = client(&srv);
    let y: String = c.get("y{k}").unwrap();
    let round: u32 = y.parse().unwrap();
    assert!(
        round == acked || round == acked + 1,
        "round {round} after {acked} acknowledged"
    );
    (srv, round)
}

/// EXEC `round` of the kill test: two large values and a small one, all
/// telling the round.
fn kill_round(round: u8) -> Vec<redis::Cmd> {
    let (x, z) = (value(9 * CAP + 7, round), value(2 * CAP, round ^ 0x55));
    vec![
        cmd(&[b"SET", b"x{k}", &x]),
        cmd(&[b"SET", b"y{k}", round.to_string().as_bytes()]),
        cmd(&[b"SET", b"z{k}", &z]),
    ]
}

/// A stream of EXECs each writing two large values and a small one, the
/// server killed (-9) during it: after the restart the keys hold one
/// round's values, the last acknowledged or the next, never a mix.
#[test]
fn after_a_kill_each_exec_of_large_values_is_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    exec(&mut c, &kill_round(0)).unwrap();
    let wait = Duration::from_millis(2500);
    let rounds = |r: u32| kill_round(r as u8);
    let (srv, round) = kill_during_execs(dir.path(), (srv, c), 200, wait, rounds);
    let round = round as u8;
    let mut c = client(&srv);
    let x: Vec<u8> = c.get("x{k}").unwrap();
    let z: Vec<u8> = c.get("z{k}").unwrap();
    assert!(x == value(9 * CAP + 7, round), "x{{k}} of another round");
    assert!(z == value(2 * CAP, round ^ 0x55), "z{{k}} of another round");
    // The store takes large values after the rebuild.
    let big = value(100 << 20, 7);
    let _: () = c.set("after", &big).unwrap();
    let got: Vec<u8> = c.get("after").unwrap();
    assert!(got == big);
    srv.stop();
}

/// A stream of EXECs each editing a large value stored before in two of
/// its pieces (the first and the last) and setting a small key to the
/// round, the server killed (-9) during it: after the restart both edits
/// and the small key tell one round, the last acknowledged or the next.
#[test]
fn after_a_kill_each_exec_editing_a_large_value_is_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let len = 5 * CAP + 33;
    let _: () = c.set("x{k}", value(len, 9)).unwrap();
    let _: () = c.set("y{k}", "0").unwrap();
    let far = (len - 8).to_string();
    let rounds = move |round: u32| {
        let tag = format!("{round:08}");
        vec![
            cmd(&[b"SETRANGE", b"x{k}", b"100", tag.as_bytes()]),
            cmd(&[b"SETRANGE", b"x{k}", far.as_bytes(), tag.as_bytes()]),
            cmd(&[b"SET", b"y{k}", round.to_string().as_bytes()]),
        ]
    };
    let wait = Duration::from_millis(2000);
    let (srv, round) = kill_during_execs(dir.path(), (srv, c), 2000, wait, rounds);
    let mut c = client(&srv);
    let x: Vec<u8> = c.get("x{k}").unwrap();
    assert_eq!(x.len(), len);
    if round > 0 {
        let tag = format!("{round:08}").into_bytes();
        assert_eq!(&x[100..108], &tag[..], "the first edit of another round");
        assert_eq!(&x[len - 8..], &tag[..], "the last edit of another round");
    }
    let mut want = value(len, 9);
    want[100..108].copy_from_slice(&x[100..108]);
    want[len - 8..].copy_from_slice(&x[len - 8..]);
    assert!(x == want, "bytes outside the edits changed");
    srv.stop();
}

/// kill -9 during EXECs that each rename a large value stored before
/// back and forth, give it a new expiry and set a small key: after the
/// restart the value is under the name, and with the expiry, of the
/// round the small key tells, whole.
#[test]
fn after_a_kill_each_exec_moving_a_large_value_is_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M"]);
    let mut c = client(&srv);
    let len = 3 * CAP + 21;
    let _: () = c.set("p{k}", value(len, 5)).unwrap();
    let _: () = c.set("y{k}", "0").unwrap();
    let base = 4102444800000u64;
    let name = |round: u32| if round % 2 == 1 { "q{k}" } else { "p{k}" };
    let rounds = move |round: u32| {
        let (from, to) = (name(round - 1).as_bytes(), name(round).as_bytes());
        let at = (base + round as u64).to_string();
        vec![
            cmd(&[b"RENAME", from, to]),
            cmd(&[b"PEXPIREAT", to, at.as_bytes()]),
            cmd(&[b"SET", b"y{k}", round.to_string().as_bytes()]),
        ]
    };
    let wait = Duration::from_millis(2000);
    let (srv, round) = kill_during_execs(dir.path(), (srv, c), 1_000_000, wait, rounds);
    let mut c = client(&srv);
    let (here, gone) = (name(round), name(round + 1));
    let exists: i64 = c.exists(gone).unwrap();
    assert_eq!(exists, 0, "{gone} after round {round}");
    let at: i64 = redis::cmd("PEXPIRETIME").arg(here).query(&mut c).unwrap();
    let want = if round == 0 {
        -1
    } else {
        (base + round as u64) as i64
    };
    assert_eq!(at, want, "{here}'s expiry after round {round}");
    let x: Vec<u8> = c.get(here).unwrap();
    assert!(x == value(len, 5), "{here} differs after round {round}");
    srv.stop();
}

/// A replica attached while transactions of large values run (during its
/// full copy, and fed by the stream after) ends with the primary's values.
#[test]
fn a_replica_attached_during_large_execs_ends_with_the_same_values() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--capacity", "512M"]);
    let mut p = client(&primary);
    let _: () = p.set("a{r}", value(3 * CAP, 1)).unwrap();
    let to = format!("127.0.0.1 {}", primary.addr.port());
    let replica = Server::start(rd.path(), &["--capacity", "512M", "--replicaof", &to]);
    // Edits inside EXEC of a large value stored before go as SETRANGEs.
    let _: () = p.set("e{r}", value(4 * CAP + 9, 7)).unwrap();
    for round in 0..3u8 {
        let far = (4 * CAP + 100 * round as usize).to_string();
        exec(
            &mut p,
            &[
                cmd(&[b"SETRANGE", b"e{r}", b"5", &[round; 3]]),
                cmd(&[b"APPEND", b"e{r}", b"more"]),
                cmd(&[b"SETRANGE", b"e{r}", far.as_bytes(), b"far"]),
                cmd(&[b"SET", b"n{r}", round.to_string().as_bytes()]),
                cmd(&[b"GETEX", b"e{r}", b"PXAT", b"4102444800000"]),
            ],
        )
        .unwrap();
    }
    for round in 0..4u8 {
        let v = value(40 << 20, round);
        exec(
            &mut p,
            &[
                cmd(&[b"SET", b"a{r}", &v]),
                cmd(&[b"APPEND", b"a{r}", b"tail"]),
                cmd(&[b"SET", b"n{r}", round.to_string().as_bytes()]),
                cmd(&[b"COPY", b"a{r}", b"b{r}", b"REPLACE"]),
                cmd(&[b"SETRANGE", b"b{r}", b"7", b"bee"]),
                cmd(&[b"DEL", b"c{r}"]),
                cmd(&[b"SET", b"c{r}", &value(CAP + 1, round ^ 1)]),
            ],
        )
        .unwrap();
    }
    // Expiries and moves inside EXEC of a large value stored before.
    let _: () = p.set("m{r}", value(3 * CAP + 5, 9)).unwrap();
    exec(
        &mut p,
        &[
            cmd(&[b"EXPIRE", b"m{r}", b"1000"]),
            cmd(&[b"RENAME", b"m{r}", b"k{r}"]),
            cmd(&[b"COPY", b"k{r}", b"l{r}"]),
            cmd(&[b"PERSIST", b"l{r}"]),
            cmd(&[b"SETRANGE", b"l{r}", b"3", b"x"]),
            cmd(&[b"PEXPIREAT", b"a{r}", b"4102444800000"]),
        ],
    )
    .unwrap();
    converge_keys(
        &primary,
        &replica,
        &[
            "a{r}", "b{r}", "c{r}", "e{r}", "n{r}", "k{r}", "l{r}", "m{r}",
        ],
    );
    for (k, want) in [("k{r}", true), ("l{r}", false), ("a{r}", true)] {
        let pttl = |con: &mut redis::Connection| con.pttl::<_, i64>(k).unwrap();
        let (on_p, on_r) = (pttl(&mut p), pttl(&mut client(&replica)));
        assert_eq!(on_p > 0, want, "{k} on the primary: {on_p}");
        assert_eq!(on_r > 0, want, "{k} on the replica: {on_r}");
    }
    // GETEX's expiry inside EXEC went as PEXPIREAT.
    let mut r = client(&replica);
    let at: i64 = redis::cmd("PEXPIRETIME").arg("e{r}").query(&mut r).unwrap();
    assert_eq!(at, 4102444800000);
    replica.stop();
    primary.stop();
}

/// Where `needle` first is in file `path`.
fn find_in_file(path: &std::path::Path, needle: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let (mut base, mut carry) = (0u64, 0usize);
    loop {
        let n = f.read(&mut buf[carry..]).unwrap();
        if n == 0 {
            return None;
        }
        let end = carry + n;
        if let Some(i) = buf[..end].windows(needle.len()).position(|w| w == needle) {
            return Some(base + i as u64);
        }
        let keep = (needle.len() - 1).min(end);
        buf.copy_within(end - keep..end, 0);
        base += (end - keep) as u64;
        carry = keep;
    }
}

/// A RENAME of a large value with a replica attached, whose first piece
/// fails its check when read back for the stream: no SET can tell the
/// replica the moved value, so the primary starts its stream again under
/// a new id and the replica copies in full: it no longer has the source
/// key (before, it kept it for good).
#[test]
fn a_moved_large_value_that_cannot_be_read_back_makes_the_replica_copy_again() {
    let (pd, rd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let primary = Server::start(pd.path(), &["--capacity", "512M"]);
    let mut p = client(&primary);
    let marker = b"a-moved-value-whose-piece-gets-damaged-3c81";
    let mut v = value(3 * CAP, 5);
    v[..marker.len()].copy_from_slice(marker);
    let _: () = p.set("src", &v).unwrap();
    let _: () = p.set("warm", "up").unwrap();
    let to = format!("127.0.0.1 {}", primary.addr.port());
    let replica = Server::start(rd.path(), &["--capacity", "512M", "--replicaof", &to]);
    converge_keys(&primary, &replica, &["src", "warm"]);
    let first_id = primary.info_field("master_replid");
    // The first piece's data is damaged on the device: its check fails.
    let data = pd.path().join("data.nvkv");
    let at = find_in_file(&data, marker).expect("the value's first piece in the data file");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
        f.seek(SeekFrom::Start(at + 1000)).unwrap();
        f.write_all(b"damage").unwrap();
        f.sync_all().unwrap();
    }
    let _: () = redis::cmd("RENAME")
        .arg("src")
        .arg("dst")
        .query(&mut p)
        .unwrap();
    let _: () = p.set("after", "the move").unwrap();
    let mut r = client(&replica);
    let t0 = Instant::now();
    loop {
        let src: i64 = redis::cmd("EXISTS").arg("src").query(&mut r).unwrap_or(1);
        let after: Option<String> = r.get("after").unwrap_or(None);
        if src == 0 && after.as_deref() == Some("the move") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the replica kept the moved key; its log:\n{}",
            replica.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let plog = primary.log.lock().unwrap().clone();
    assert!(
        plog.contains("could not be read back") && plog.contains("the replicas sync again in full"),
        "{plog}"
    );
    assert_ne!(
        first_id,
        primary.info_field("master_replid"),
        "the stream goes on under a new id"
    );
    let rlog = replica.log.lock().unwrap().clone();
    assert_eq!(rlog.matches("full copy applied").count(), 2, "{rlog}");
    replica.stop();
    primary.stop();
}

/// Commands sent as one pipeline, then an ECHO of a marker: the bytes
/// before the marker's reply (every command's reply, MULTI … EXEC's too,
/// where `common::RawConn`'s marker would be queued).
fn pipeline_raw(s: &mut std::net::TcpStream, cmds: &[&[&[u8]]]) -> Vec<u8> {
    use std::io::{Read, Write};
    const MARKER: &[u8] = b"\x00end-of-pipeline\x00";
    let mut req = Vec::new();
    for c in cmds {
        req.extend(common::encode(c));
    }
    req.extend(common::encode(&[b"ECHO", MARKER]));
    s.write_all(&req).unwrap();
    let mut tail = format!("${}\r\n", MARKER.len()).into_bytes();
    tail.extend_from_slice(MARKER);
    tail.extend_from_slice(b"\r\n");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !got.ends_with(&tail) {
        let n = s.read(&mut buf).expect("read the replies");
        assert!(n > 0, "connection closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got.truncate(got.len() - tail.len());
    got
}

/// A connection to nvkv and one to redis-server.
struct RawPair {
    ours: std::net::TcpStream,
    theirs: std::net::TcpStream,
}

impl RawPair {
    fn connect(ours: &Server, theirs: &common::RealRedis) -> RawPair {
        let connect = |addr: &str| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s
        };
        RawPair {
            ours: connect(&ours.addr.to_string()),
            theirs: connect(&theirs.addr),
        }
    }

    /// `cmds` as one pipeline to both: the same bytes back.
    fn check(&mut self, cmds: &[&[&[u8]]]) {
        let a = pipeline_raw(&mut self.ours, cmds);
        let b = pipeline_raw(&mut self.theirs, cmds);
        if a != b {
            let at = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let around = |v: &[u8]| {
                v[at.saturating_sub(40)..(at + 80).min(v.len())]
                    .escape_ascii()
                    .to_string()
            };
            panic!(
                "{:?}: ours {} bytes, theirs {}; first difference at {at}: ours {} theirs {}",
                cmds.iter()
                    .map(|c| String::from_utf8_lossy(c[0]).into_owned())
                    .collect::<Vec<_>>(),
                a.len(),
                b.len(),
                around(&a),
                around(&b)
            );
        }
    }

    /// MULTI, `cmds`, EXEC to both: the same bytes back.
    fn check_exec(&mut self, cmds: &[&[&[u8]]]) {
        let mut all: Vec<&[&[u8]]> = vec![&[b"MULTI"]];
        all.extend_from_slice(cmds);
        all.push(&[b"EXEC"]);
        self.check(&all);
    }
}

/// Two hash tags whose keys lie on different pollers of a server with
/// `--io-threads 2`, that of `s` (the hash is fixed, so the first few
/// tags tried hold such a pair).
fn tags_on_two_pollers(s: &mut std::net::TcpStream) -> (String, String) {
    let a = "{t0}".to_string();
    let addr = s.peer_addr().unwrap();
    for i in 1..64 {
        let b = format!("{{t{i}}}");
        let (ka, kb) = (format!("probe{a}"), format!("probe{b}"));
        if common::apart(addr, ka.as_bytes(), kb.as_bytes()) {
            return (a, b);
        }
    }
    panic!("no two tags on two pollers");
}

/// With `--io-threads 2`, an EXEC whose keys lie on both pollers runs as
/// one part per poller, their replies merged: its reads of large values
/// (GET, MGET, GETRANGE, GETDEL, GETEX, SET … GET, DUMP), of values stored
/// before and of values the EXEC edited (APPEND, SETRANGE), moved
/// (RENAME, COPY; on one poller, and from one to the other) or set
/// whole, answer the value in its place among EXEC's replies, byte for
/// byte as redis-server's, in RESP2 and RESP3;
/// the keys end with redis-server's values and expiries. (nvkv's DUMP
/// never compresses: redis-server runs with `rdbcompression no`.)
#[test]
fn reads_of_large_values_inside_exec_across_pollers_answer_as_redis_does() {
    let Some(real) = common::RealRedis::start(&["--rdbcompression", "no"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--capacity", "512M", "--io-threads", "2"]);
    for resp3 in [false, true] {
        let mut both = RawPair::connect(&srv, &real);
        if resp3 {
            pipeline_raw(&mut both.ours, &[&[b"HELLO", b"3"]]);
            pipeline_raw(&mut both.theirs, &[&[b"HELLO", b"3"]]);
        }
        let (p, q) = tags_on_two_pollers(&mut both.ours);
        let k = |name: &str| format!("{name}{p}").into_bytes();
        let (a, b, c, d) = (k("a"), k("b"), k("c"), k("d"));
        let (e, f, g, h) = (k("e"), k("f"), k("g"), k("h"));
        let x = format!("x{q}").into_bytes();
        let (va, vb) = (value(3 * CAP + 11, 1), value(2 * CAP + 5, 2));
        let (vc, vd, ve) = (value(CAP + 77, 3), value(2 * CAP, 4), value(CAP + 1, 5));
        for (key, v) in [(&a, &va), (&b, &vb), (&c, &vc), (&d, &vd), (&e, &ve)] {
            both.check(&[&[b"SET", key, v]]);
        }
        both.check(&[&[b"DEL", &f, &g, &h], &[b"DEL", &x]]);
        let mid = (CAP + 10).to_string();
        let edge = (2 * CAP - 3).to_string();
        // Stored before: each read in its place, the other poller's
        // replies around them.
        both.check_exec(&[
            &[b"SET", &x, b"1"],
            &[b"GET", &a],
            &[b"INCR", &x],
            &[b"GETRANGE", &a, b"5", mid.as_bytes()],
            &[b"SUBSTR", &a, b"-9", b"-1"],
            &[b"MGET", &b, &x, &a],
            &[b"DUMP", &c],
            &[b"GETEX", &c, b"PX", b"900000"],
            &[b"GETDEL", &b],
            &[b"GET", &b],
            &[b"SET", &c, b"small", b"GET"],
            &[b"GET", &x],
        ]);
        // Edited earlier in the same EXEC: the changed pieces and the
        // stored ones, in order.
        both.check_exec(&[
            &[b"APPEND", &a, b"tail"],
            &[b"INCR", &x],
            &[b"GET", &a],
            &[b"SETRANGE", &d, edge.as_bytes(), b"across-a-piece-edge"],
            &[b"GETRANGE", &d, b"0", b"20"],
            &[b"GETRANGE", &d, mid.as_bytes(), b"-1"],
            &[b"DUMP", &d],
            &[b"SETRANGE", &e, b"3", b"zz"],
            &[b"GETEX", &e, b"PERSIST"],
            &[b"SET", &e, &vb, b"GET"],
            &[b"APPEND", &d, b"more"],
            &[b"GETDEL", &d],
            &[b"EXISTS", &d],
        ]);
        // Moved, copied and set whole inside the EXEC, then read.
        both.check_exec(&[
            &[b"RENAME", &a, &f],
            &[b"GET", &f],
            &[b"COPY", &f, &g],
            &[b"SETRANGE", &g, b"1", b"copy"],
            &[b"GETRANGE", &g, b"0", b"9"],
            &[b"DUMP", &f],
            &[b"SET", &h, &vc],
            &[b"GET", &h],
            &[b"APPEND", &h, b"!"],
            &[b"GETDEL", &h],
            &[b"GET", &x],
        ]);
        // Large values read on both pollers, their replies interleaved.
        let y = format!("y{q}").into_bytes();
        both.check(&[&[b"SET", &y, &vd]]);
        both.check_exec(&[
            &[b"GET", &y],
            &[b"GET", &f],
            &[b"APPEND", &y, b"end"],
            &[b"SETRANGE", &g, b"0", b"G"],
            &[b"GETRANGE", &y, b"-9", b"-1"],
            &[b"MGET", &g, &y, &f],
            &[b"GETDEL", &y],
        ]);
        // Moved from one poller to the other inside the EXEC: read whole,
        // carried over, then edited and read there.
        let (m, n) = (format!("m{q}").into_bytes(), format!("n{q}").into_bytes());
        both.check(&[&[b"DEL", &m, &n]]);
        both.check_exec(&[
            &[b"SET", &a, &va, b"PX", b"900000"],
            &[b"GET", &x],
            &[b"RENAME", &a, &m],
            &[b"APPEND", &m, b"!"],
            &[b"GETRANGE", &m, b"-9", b"-1"],
            &[b"STRLEN", &m],
        ]);
        both.check_exec(&[
            &[b"COPY", &g, &n],
            &[b"SETRANGE", &g, b"0", b"after"],
            &[b"GETRANGE", &n, b"0", b"9"],
            &[b"MGET", &n, &x],
        ]);
        // Two moves the same way in one EXEC.
        both.check_exec(&[
            &[b"RENAME", &f, &m],
            &[b"COPY", &g, &n, b"REPLACE"],
            &[b"STRLEN", &m],
            &[b"GETRANGE", &n, b"0", b"9"],
            &[b"EXISTS", &f, &g],
        ]);
        for key in [&a, &b, &c, &d, &e, &f, &g, &h, &x, &y, &m, &n] {
            both.check(&[&[b"GET", key], &[b"TTL", key]]);
        }
        both.check(&[
            &[b"DEL", &a, &b, &c, &d, &e, &f, &g, &h],
            &[b"DEL", &x, &y, &m, &n],
        ]);
    }
    srv.stop();
}

/// A GET inside an EXEC across pollers of a 256 MiB value reads it whole
/// (a part's reply cannot stream): the server holds it once (its peak RSS
/// under 384 MiB, where a copy more would pass 512), and the client gets
/// it whole.
#[test]
fn a_get_inside_exec_across_pollers_of_256_mib_holds_the_value_once() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--capacity", "1G", "--io-threads", "2"];
    let srv = Server::start(dir.path(), &args);
    let (p, q) = tags_on_two_pollers(&mut common::raw(&srv));
    let (key, x) = (format!("big{p}"), format!("x{q}"));
    let big = value(256 << 20, 48);
    let mut c = client(&srv);
    let _: () = c.set(&key, &big).unwrap();
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &args);
    let mut c = client(&srv);
    let (got, n): (Vec<u8>, i64) = redis::pipe()
        .atomic()
        .get(&key)
        .incr(&x, 1)
        .query(&mut c)
        .unwrap();
    assert!(got == big, "the value differs");
    assert_eq!(n, 1);
    assert_peak_rss_under(&srv, 384);
    srv.stop();
}

/// MSET and MSETNX of values larger than a segment, pipelined with
/// commands of the same keys behind them, on one poller and on two: each
/// command after sees the value whole, as redis-server answers. (An MSET
/// let its keys go before the large value's head was written: a STRLEN
/// behind it answered 0 and an APPEND made a 3-byte value; an MSETNX of
/// one refused it: `record larger than a segment`.)
#[test]
fn commands_pipelined_behind_an_mset_of_large_values_see_them() {
    let Some(redis) = common::RealRedis::start(&[]) else {
        return;
    };
    let big = value(CAP + 1000, 7);
    let other = value(2 * CAP + 5, 9);
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let mut ours = common::RawConn::connect(srv.addr);
        let mut theirs = common::RawConn::connect(&redis.addr);
        theirs.call(&[b"FLUSHALL"]);
        let cmds: Vec<Vec<&[u8]>> = vec![
            vec![b"SET", b"b", b"taken"],
            vec![b"MSET", b"a", &big, b"b", b"s"],
            vec![b"STRLEN", b"a"],
            vec![b"GETRANGE", b"a", b"-5", b"-1"],
            vec![b"APPEND", b"a", b"xyz"],
            vec![b"MSETNX", b"c", &other, b"{c}d", &big],
            vec![b"STRLEN", b"c"],
            vec![b"STRLEN", b"{c}d"],
            vec![b"MSETNX", b"e", &big, b"b", b"no"],
            vec![b"EXISTS", b"e"],
            vec![b"MSET", b"c", b"small", b"f", &other],
            vec![b"GETRANGE", b"f", b"0", b"9"],
            vec![b"STRLEN", b"c"],
        ];
        let cmds: Vec<&[&[u8]]> = cmds.iter().map(Vec::as_slice).collect();
        let got = ours.pipeline(&cmds);
        let want = theirs.pipeline(&cmds);
        assert!(
            got == want,
            "{pollers} pollers: {}",
            String::from_utf8_lossy(&got)
        );
        for key in [&b"a"[..], b"c", b"{c}d", b"f"] {
            assert!(
                ours.call(&[b"GET", key]) == theirs.call(&[b"GET", key]),
                "{key:?}"
            );
        }
        srv.stop();
    }
}
