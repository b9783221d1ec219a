//! SET's KEEPTTL and GET options and the older forms (SETNX, SETEX, PSETEX,
//! GETSET, GETDEL), with Redis's replies, through the `redis` crate.

mod common;

use common::Server;
use redis::{Commands, Value};

fn cmd(con: &mut redis::Connection, args: &[&str]) -> Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn keepttl_and_get_options() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(cmd(&mut con, &["SET", "a", "1", "EX", "100"]), Value::Okay);
    assert_eq!(cmd(&mut con, &["SET", "a", "2", "KEEPTTL"]), Value::Okay);
    let ttl: i64 = con.ttl("a").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    // A plain SET clears the TTL; KEEPTTL of a key without one keeps none.
    assert_eq!(cmd(&mut con, &["SET", "a", "3"]), Value::Okay);
    assert_eq!(con.ttl::<_, i64>("a").unwrap(), -1);
    assert_eq!(cmd(&mut con, &["SET", "new", "x", "KEEPTTL"]), Value::Okay);
    assert_eq!(con.ttl::<_, i64>("new").unwrap(), -1);

    // GET returns the old value (or nil) and sets.
    assert_eq!(cmd(&mut con, &["SET", "a", "4", "GET"]), bulk("3"));
    assert_eq!(cmd(&mut con, &["SET", "b", "1", "GET"]), Value::Nil);
    assert_eq!(cmd(&mut con, &["GET", "b"]), bulk("1"));
    // With NX: the old value, and nothing set.
    assert_eq!(cmd(&mut con, &["SET", "a", "9", "NX", "GET"]), bulk("4"));
    assert_eq!(cmd(&mut con, &["GET", "a"]), bulk("4"));
    // With XX on a missing key: nil, nothing set.
    assert_eq!(cmd(&mut con, &["SET", "c", "1", "XX", "GET"]), Value::Nil);
    assert_eq!(cmd(&mut con, &["EXISTS", "c"]), Value::Int(0));
    // Pipelined: each GET sees the SET before it.
    let replies: Vec<Value> = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg("1")
        .cmd("SET")
        .arg("p")
        .arg("2")
        .arg("GET")
        .cmd("SET")
        .arg("p")
        .arg("3")
        .arg("GET")
        .cmd("GET")
        .arg("p")
        .query(&mut con)
        .unwrap();
    assert_eq!(replies, vec![Value::Okay, bulk("1"), bulk("2"), bulk("3")]);
    // Bad combinations.
    for bad in [
        &["SET", "a", "1", "KEEPTTL", "EX", "5"][..],
        &["SET", "a", "1", "EX", "5", "KEEPTTL"],
        &["SET", "a", "1", "NX", "XX"],
    ] {
        let e = redis::cmd(bad[0]).arg(&bad[1..]).query::<Value>(&mut con);
        assert!(
            e.unwrap_err().to_string().contains("syntax error"),
            "{bad:?}"
        );
    }
    srv.stop();
}

#[test]
fn older_forms() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(cmd(&mut con, &["SETNX", "a", "x"]), Value::Int(1));
    assert_eq!(cmd(&mut con, &["SETNX", "a", "y"]), Value::Int(0));
    assert_eq!(cmd(&mut con, &["GET", "a"]), bulk("x"));
    assert_eq!(cmd(&mut con, &["SETEX", "e", "100", "v"]), Value::Okay);
    let ttl: i64 = con.ttl("e").unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert_eq!(cmd(&mut con, &["PSETEX", "f", "100000", "v"]), Value::Okay);
    let pttl: i64 = con.pttl("f").unwrap();
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    let e = redis::cmd("SETEX")
        .arg("g")
        .arg(0)
        .arg("v")
        .query::<Value>(&mut con);
    assert!(e
        .unwrap_err()
        .to_string()
        .contains("invalid expire time in 'setex'"));
    // GETSET: the old value; the TTL goes.
    assert_eq!(cmd(&mut con, &["GETSET", "e", "w"]), bulk("v"));
    assert_eq!(con.ttl::<_, i64>("e").unwrap(), -1);
    assert_eq!(cmd(&mut con, &["GETSET", "missing", "m"]), Value::Nil);
    // GETDEL: the value, then the key is gone.
    assert_eq!(cmd(&mut con, &["GETDEL", "e"]), bulk("w"));
    assert_eq!(cmd(&mut con, &["GETDEL", "e"]), Value::Nil);
    assert_eq!(cmd(&mut con, &["EXISTS", "e"]), Value::Int(0));
    srv.stop();
}

#[test]
fn keepttl_and_getdel_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(cmd(&mut con, &["SET", "k", "1", "EX", "1000"]), Value::Okay);
    assert_eq!(cmd(&mut con, &["SET", "k", "2", "KEEPTTL"]), Value::Okay);
    assert_eq!(cmd(&mut con, &["SET", "d", "x"]), Value::Okay);
    assert_eq!(cmd(&mut con, &["GETDEL", "d"]), bulk("x"));
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    assert_eq!(cmd(&mut con, &["GET", "k"]), bulk("2"));
    let ttl: i64 = con.ttl("k").unwrap();
    assert!((990..=1000).contains(&ttl), "{ttl}");
    assert_eq!(cmd(&mut con, &["GET", "d"]), Value::Nil);
    srv.stop();
}

/// SET … GET and GETSET read the key as GET does: Redis counts a hit or
/// a miss for each, alone and inside MULTI … EXEC, and so does nvkv.
#[test]
fn set_get_and_getset_count_hits_and_misses_as_redis_does() {
    let Some(real) = common::RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let cmds: &[&[&str]] = &[
        &["SET", "s", "v2", "GET"],
        &["GETSET", "s", "v3"],
        &["SET", "nope", "v", "GET"],
        &["GETSET", "nope2", "v"],
        &["SET", "s", "a", "NX", "GET"],
        &["SET", "nope3", "a", "XX", "GET"],
        &["SET", "s", "b"],
        &["GET", "s"],
    ];
    let mut counts = Vec::new();
    for mut con in [srv.client(), real.client()] {
        let mut seen = Vec::new();
        for txn in [false, true] {
            cmd(&mut con, &["SET", "s", "v"]);
            cmd(&mut con, &["DEL", "nope", "nope2", "nope3"]);
            let counts = common::hits_misses_of(&mut con, cmds, txn);
            seen.extend((cmds.iter().zip(counts)).map(|(args, (h, m))| (txn, args, h, m)));
        }
        counts.push(seen);
    }
    assert_eq!(
        counts[0], counts[1],
        "(in a transaction, command, hits, misses): nvkv, then Redis"
    );
}
