//! INCR, DECR, INCRBY and DECRBY: Redis's replies and errors, compared
//! with a real redis-server where one is installed; counters in pipelines,
//! with TTLs, and across a crash.

mod common;

use common::{RealRedis, Server};
use rand::{Rng, SeedableRng};
use redis::{Connection, RedisResult, Value};

fn run(con: &mut Connection, args: &[String]) -> String {
    let r: RedisResult<Value> = redis::cmd(&args[0]).arg(&args[1..]).query(con);
    format!("{r:?}")
}

/// Integer arguments of expiry times, then random sequences of counter
/// commands over a few keys, with values and increments Redis reads as
/// integers and ones it does not, sent to both.
#[test]
fn counters_answer_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let (mut ours, mut theirs) = (srv.client(), redis.client());
    let odd = [
        "0",
        "1",
        "-1",
        "01",
        "+1",
        " 1",
        "1 ",
        "",
        "1.5",
        "abc",
        "-0",
        "-",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "-9223372036854775809",
        "100000000000000000000",
        "12345678901234567890123",
    ];
    // Times are integers as Redis reads them too.
    for t in [
        "+5",
        "05",
        "5",
        "-5",
        "0",
        " 5",
        "5.0",
        "9223372036854775807",
    ] {
        for cmd in [
            vec!["SET", "e", "v", "EX", t],
            vec!["SET", "e", "v", "PX", t],
            vec!["SETEX", "e", t, "v"],
            vec!["EXPIRE", "e", t],
            vec!["PEXPIRE", "e", t],
        ] {
            // A fresh key each time: no reply depends on an earlier TTL
            // running out between the two servers.
            let reset: Vec<String> = ["SET", "e", "v"].map(String::from).to_vec();
            run(&mut ours, &reset);
            run(&mut theirs, &reset);
            let args: Vec<String> = cmd.iter().map(|a| a.to_string()).collect();
            assert_eq!(run(&mut ours, &args), run(&mut theirs, &args), "{args:?}");
        }
    }
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    for step in 0..3000 {
        let key = format!("c{}", rng.gen_range(0..6));
        let arg = if rng.gen_bool(0.7) {
            rng.gen_range(-1000i64..1000).to_string()
        } else {
            odd[rng.gen_range(0..odd.len())].to_string()
        };
        let args: Vec<String> = match rng.gen_range(0..8) {
            0 => vec!["INCR".into(), key],
            1 => vec!["DECR".into(), key],
            2 => vec!["INCRBY".into(), key, arg],
            3 => vec!["DECRBY".into(), key, arg],
            4 => vec!["SET".into(), key, arg],
            5 => vec!["GET".into(), key],
            6 => vec!["DEL".into(), key],
            _ => vec!["INCRBY".into(), key],
        };
        assert_eq!(
            run(&mut ours, &args),
            run(&mut theirs, &args),
            "step {step}: {args:?}"
        );
    }
    srv.stop();
}

/// A counter keeps its TTL; a pipeline of increments on one key is applied
/// in order; acknowledged increments survive a kill -9.
#[test]
fn counters_keep_ttls_pipeline_in_order_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let _: () = redis::cmd("SET")
        .arg(&["t", "5", "EX", "100"])
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("INCRBY")
        .arg(&["t", "10"])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 15);
    let ttl: i64 = redis::cmd("TTL").arg("t").query(&mut con).unwrap();
    assert!((99..=100).contains(&ttl), "TTL {ttl} after INCRBY");
    let mut p = redis::pipe();
    for _ in 0..2000 {
        p.cmd("INCR").arg("hot");
    }
    p.cmd("DECRBY").arg(&["hot", "500"]);
    let replies: Vec<i64> = p.query(&mut con).unwrap();
    assert_eq!(replies[..2000], (1..=2000).collect::<Vec<_>>()[..]);
    assert_eq!(replies[2000], 1500);
    srv.kill();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let v: String = redis::cmd("GET").arg("hot").query(&mut con).unwrap();
    assert_eq!(v, "1500");
    let v: i64 = redis::cmd("INCR").arg("t").query(&mut con).unwrap();
    assert_eq!(v, 16);
    srv.stop();
}
