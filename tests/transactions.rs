//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH. Replies are
//! compared byte for byte with a real redis-server's (where one is
//! installed), for fixed sequences and random ones, on one connection and
//! with a second one changing watched keys; then what Redis promises of
//! EXEC: nothing of a refused transaction is applied, no client sees part
//! of one, and an acknowledged one is all there after a kill -9. Keys with
//! the same hash tag (`{…}`) share a poller; with several pollers a
//! transaction across them is atomic and isolated too, and MSETNX,
//! RENAME, RENAMENX and COPY across them inside it run as Redis's, moves
//! both ways and over three pollers included (alone, each runs across
//! them: tests/cross_keys.rs). redis-py's default pipeline
//! (MULTI … EXEC) works. SCAN, KEYS, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL
//! and BGSAVE inside a transaction run at EXEC as Redis's, seeing its own
//! writes, and no client sees part of such a transaction, on one poller
//! or several; an acknowledged one holding a flush survives a kill -9.
//! Connection commands inside a transaction (CLIENT, CONFIG, PUBLISH, …)
//! run at EXEC in order with the others, and not at all when EXEC answers
//! nil or EXECABORT, as Redis's.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{encode, Both, Call, RealRedis, Server};
use rand::{Rng, SeedableRng};

/// A connection that sends one command and reads exactly one reply (inside
/// MULTI a marker command would be queued too).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: impl std::net::ToSocketAddrs) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn call(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Call::call(self, &args)
    }

    /// The next reply, one the server pushes (a message published) or
    /// the next of a pipeline.
    fn next_reply(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some(n) = reply_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            let n = self.s.read(&mut chunk).expect("read a reply");
            assert!(n > 0, "connection closed after {:?}", self.buf);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Call for Conn {
    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.s.write_all(&encode(args)).expect("send");
        self.next_reply()
    }
}

/// The length of the first complete RESP2 reply in `b` (RESP3's null
/// too), if it is all there.
fn reply_len(b: &[u8]) -> Option<usize> {
    let line = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line]).ok()?;
    let after = line + 2;
    match b.first()? {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' => Some(after),
        b'$' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'%' => {
            let n: i64 = head.parse().ok()?;
            let n = if b[0] == b'%' { 2 * n } else { n };
            let mut at = after;
            for _ in 0..n.max(0) {
                at += reply_len(&b[at..])?;
            }
            Some(at)
        }
        t => panic!("unexpected reply type {:?} in {b:?}", *t as char),
    }
}

/// A server of two pollers on `dir`, and four keys: the first and the
/// last on one poller, the second and the third on the other.
fn two_pollers(dir: &std::path::Path) -> (Server, [String; 4]) {
    let srv = Server::start(dir, &["--io-threads", "2"]);
    let (a, b) = tags_on_two_pollers(&mut Conn::connect(srv.addr));
    let keys = [
        format!("{{{a}}}x"),
        format!("{{{b}}}y"),
        format!("{{{b}}}z"),
        format!("{{{a}}}w"),
    ];
    (srv, keys)
}

fn pair(srv: &Server, redis: &RealRedis) -> Both<Conn> {
    Both {
        ours: Conn::connect(srv.addr),
        theirs: Conn::connect(redis.addr.as_str()),
    }
}

#[test]
fn transactions_reply_as_redis_does() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let mut a = pair(&srv, &redis);
    let mut b = pair(&srv, &redis);
    let script: &[&[&str]] = &[
        // Errors while queuing abort the transaction; nothing is applied.
        &["MULTI"],
        &["WATCH", "x"],
        &["MULTI"],
        &["NOSUCHCOMMAND", "1"],
        &["SET", "a"],
        &["SET", "a", "1"],
        &["EXEC"],
        &["GET", "a"],
        &["EXEC"],
        &["DISCARD"],
        // Errors while running are replies in the array; the rest applies.
        &["MULTI"],
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["GET", "a"],
        &["PING"],
        &["ECHO", "hi"],
        &["APPEND", "a", "xyz"],
        &["INCR", "a"],
        &["GETRANGE", "a", "1", "-1"],
        &["DEL", "a"],
        &["GET", "a"],
        &["SET", "n", "5", "NX"],
        &["SET", "n", "6", "NX"],
        &["INCRBY", "n", "10"],
        &["EXEC"],
        &["GET", "n"],
        // EXEC refused ends the transaction; RESET discards it.
        &["MULTI"],
        &["SET", "x1", "1"],
        &["EXEC", "extra"],
        &["EXEC"],
        &["MULTI"],
        &["SET", "x1", "1"],
        &["RESET"],
        &["EXEC"],
        &["GET", "x1"],
        // DISCARD drops what was queued.
        &["MULTI"],
        &["SET", "d", "1"],
        &["DISCARD"],
        &["GET", "d"],
        // Empty transactions, and keyless ones.
        &["MULTI"],
        &["EXEC"],
        &["MULTI"],
        &["GET", "nokey"],
        &["EXISTS", "nokey"],
        &["EXEC"],
        // Several keys in one command, TTLs.
        &["MULTI"],
        &["MSET", "{t}1", "a", "{t}2", "b"],
        &["MGET", "{t}1", "{t}2", "nokey"],
        &["EXISTS", "{t}1", "{t}2", "x"],
        &["SET", "e", "1", "EX", "100"],
        &["TTL", "e"],
        &["SET", "e", "2", "KEEPTTL"],
        &["TTL", "e"],
        &["PERSIST", "e"],
        &["TTL", "e"],
        &["EXPIRE", "e", "0"],
        &["GET", "e"],
        &["GETDEL", "{t}1"],
        &["MSETNX", "{t}1", "c", "{t}3", "d"],
        &["MSETNX", "{t}2", "c", "{t}3", "d"],
        &["EXEC"],
        &["MGET", "{t}1", "{t}2", "{t}3", "e"],
        // Commands of two keys inside a transaction see its own writes.
        &["MULTI"],
        &["SET", "r1", "a", "EX", "100"],
        &["RENAME", "r1", "r2"],
        &["GET", "r1"],
        &["TTL", "r2"],
        &["COPY", "r2", "r3"],
        &["APPEND", "r3", "b"],
        &["RENAMENX", "r3", "r2"],
        &["RENAME", "nokey", "r4"],
        &["TYPE", "r3"],
        &["EXEC"],
        &["MGET", "r1", "r2", "r3"],
    ];
    for cmd in script {
        a.check_str(cmd);
    }
    // WATCH: the watching connection's own change, another's, none.
    for cmd in [
        &["WATCH", "k"][..],
        &["SET", "k", "1"],
        &["MULTI"],
        &["GET", "k"],
        &["EXEC"],
        &["WATCH", "k", "j"],
        &["MULTI"],
        &["SET", "k", "5"],
        &["EXEC"],
        &["GET", "k"],
    ] {
        a.check_str(cmd);
    }
    a.check_str(&["WATCH", "k"]);
    b.check_str(&["SET", "k", "7"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "k", "8"]);
    a.check_str(&["EXEC"]);
    a.check_str(&["GET", "k"]);
    // UNWATCH and DISCARD forget the watched keys.
    a.check_str(&["WATCH", "k"]);
    b.check_str(&["SET", "k", "9"]);
    a.check_str(&["UNWATCH"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["INCR", "k"]);
    a.check_str(&["EXEC"]);
    a.check_str(&["WATCH", "k"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["DISCARD"]);
    b.check_str(&["SET", "k", "1"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["INCR", "k"]);
    a.check_str(&["EXEC"]);
    // A key that expires while watched counts as changed. (Its second
    // leaves room for a slow commit of the SET on a loaded machine: the
    // key must still be there when WATCH comes.)
    a.check_str(&["SET", "w", "1", "PX", "1000"]);
    a.check_str(&["WATCH", "w"]);
    std::thread::sleep(Duration::from_millis(1200));
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "w", "2"]);
    a.check_str(&["EXEC"]);
    a.check_str(&["GET", "w"]);
}

/// Random transactions, watches, other clients' writes and connection
/// commands inside transactions, compared with redis-server, on one
/// poller and on two.
#[test]
fn random_transactions_match_redis() {
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let Some(redis) = RealRedis::start(&[]) else {
            return;
        };
        random_transactions(&srv, &redis);
    }
}

/// Random commands, transactions and watches on two connections, each
/// reply compared with redis-server's.
fn random_transactions(srv: &Server, redis: &RealRedis) {
    let mut a = pair(srv, redis);
    let mut b = pair(srv, redis);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(17);
    let keys = ["x", "y", "{u}a", "{u}b"];
    for _ in 0..4000 {
        let k = keys[rng.gen_range(0..keys.len())];
        let v = rng.gen_range(0..5).to_string();
        let (name, samples) = (format!("n{v}"), (rng.gen_range(1..6)).to_string());
        let who = rng.gen_range(0..10);
        let cmd: Vec<&str> = match rng.gen_range(0..24) {
            0 => vec!["MULTI"],
            1 => vec!["EXEC"],
            2 => vec!["DISCARD"],
            3 => vec!["WATCH", k],
            4 => vec!["UNWATCH"],
            5 => vec!["SET", k, &v],
            6 => vec!["INCR", k],
            7 => vec!["GET", k],
            8 => vec!["DEL", k],
            9 => vec!["APPEND", k, &v],
            10 => vec!["SET", k, &v, "NX"],
            11 => vec!["GETSET", k, &v],
            12 => vec!["EXISTS", k, "x"],
            13 => vec!["MGET", "x", "y", k],
            14 => vec!["INCRBY", k, "notanumber"],
            // The key space, queued as any command (KEYS of one key's
            // name: one key at most, in the same order as Redis's).
            15 => vec!["DBSIZE"],
            16 => vec!["KEYS", k],
            17 => vec!["FLUSHDB"],
            // Connection commands, run at EXEC in order, or not at all.
            18 => vec!["CLIENT", "SETNAME", &name],
            19 => vec!["CLIENT", "GETNAME"],
            20 => vec!["CONFIG", "SET", "maxmemory-samples", &samples],
            21 => vec!["CONFIG", "GET", "maxmemory-samples"],
            22 => vec!["ECHO", &v],
            _ => vec!["STRLEN", k],
        };
        // Another client's writes, now and then, between a WATCH and EXEC.
        let conn = if who == 0 && !matches!(cmd[0], "MULTI" | "EXEC" | "DISCARD" | "WATCH") {
            &mut b
        } else {
            &mut a
        };
        conn.check_str(&cmd);
    }
}

#[test]
fn redis_crate_transactions_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let (a, b): (i64, String) = redis::pipe()
        .atomic()
        .incr("c", 5)
        .set("s", "v")
        .ignore()
        .get("s")
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b.as_str()), (5, "v"));
    // A watched key another client changes: EXEC answers nil, nothing runs.
    let mut other = srv.client();
    let _: () = redis::cmd("WATCH").arg("c").query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg("c")
        .arg(100)
        .query(&mut other)
        .unwrap();
    let r: Option<(i64,)> = redis::pipe().atomic().incr("c", 1).query(&mut con).unwrap();
    assert_eq!(r, None);
    let c: i64 = redis::cmd("GET").arg("c").query(&mut con).unwrap();
    assert_eq!(c, 100);
    // redis::transaction retries until the watched key stays put.
    let n: (i64,) = redis::transaction(&mut con, &["c"], |con, pipe| {
        let c: i64 = redis::cmd("GET").arg("c").query(con)?;
        pipe.set("c", c * 2).ignore().get("c").query(con)
    })
    .unwrap();
    assert_eq!(n, (200,));
}

/// redis-py 4's `pipeline()` is a transaction by default; `WatchError`
/// when a watched key changed.
#[test]
fn redis_py_pipelines_and_watch() {
    if !common::redis_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let script = r#"
import sys, redis
host, port = sys.argv[1].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port))
p = r.pipeline()
p.set("a", 1).incr("a").get("a").incrby("a", "x")
res = p.execute(raise_on_error=False)
assert res[:3] == [True, 2, b"2"], res
assert isinstance(res[3], redis.ResponseError), res
with r.pipeline() as p:
    p.watch("a")
    r.set("a", 10)
    p.multi()
    p.incr("a")
    try:
        p.execute()
        sys.exit("EXEC ran although the watched key changed")
    except redis.WatchError:
        pass
def double(p):
    v = int(p.get("a"))
    p.multi()
    p.set("a", v * 2)
r.transaction(double, "a")
assert r.get("a") == b"20", r.get("a")
print("ok")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &srv.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// No client sees part of a transaction: writers set two keys to the same
/// number in each EXEC (and add to two counters); readers never see them
/// differ.
#[test]
fn no_client_sees_part_of_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let url = srv.url();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..400 {
                    let v = format!("{w}-{i}");
                    let _: () = redis::pipe()
                        .atomic()
                        .set("{p}a", &v)
                        .set("{p}b", &v)
                        .incr("{p}n", 1)
                        .incr("{p}m", 1)
                        .query(&mut con)
                        .unwrap();
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut seen = 0;
                while !stop.load(Relaxed) {
                    let (a, b, n, m): (Option<String>, Option<String>, Option<i64>, Option<i64>) =
                        redis::cmd("MGET")
                            .arg(&["{p}a", "{p}b", "{p}n", "{p}m"])
                            .query(&mut con)
                            .unwrap();
                    assert_eq!(a, b, "a reader saw half of a transaction");
                    assert_eq!(n, m, "a reader saw half of a transaction");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let mut con = srv.client();
    let n: i64 = redis::cmd("GET").arg("{p}n").query(&mut con).unwrap();
    assert_eq!(n, 800);
}

/// Keys that, taken together, lie on both pollers of a server with two
/// (the hash spreads them; eight keys all on one poller would be a 1 in
/// 128 chance, and the hash is fixed: checked by
/// `commands_of_one_request_across_pollers_run_inside_exec`).
const SPREAD: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

/// With two pollers, a transaction whose keys are on both runs (redis-py's
/// default pipeline, as Redis answers it), MSETNX and RENAMENX among
/// them too: the same replies whether the keys share a poller or not;
/// keys with one hash tag always share a poller.
#[test]
fn commands_of_one_request_across_pollers_run_inside_exec() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    let (mut crossed, mut together) = (0, 0);
    for i in 0..40 {
        let (k1, k2) = (format!("x{i}"), format!("y{i}"));
        match common::apart(srv.addr, k1.as_bytes(), k2.as_bytes()) {
            true => crossed += 1,
            false => together += 1,
        }
        c.call(&["MULTI"]);
        c.call(&["SET", &k1, "1"]);
        c.call(&["SET", &k2, "1"]);
        assert_eq!(c.call(&["EXEC"]), b"*2\r\n+OK\r\n+OK\r\n");
        // RENAMENX of the two: refused, the source kept.
        c.call(&["MULTI"]);
        c.call(&["SET", &k1, "2"]);
        c.call(&["RENAMENX", &k1, &k2]);
        assert_eq!(c.call(&["EXEC"]), b"*2\r\n+OK\r\n:0\r\n");
        assert_eq!(c.call(&["MGET", &k1, &k2]), b"*2\r\n$1\r\n2\r\n$1\r\n1\r\n");
        // The destination gone, it runs.
        c.call(&["MULTI"]);
        c.call(&["DEL", &k2]);
        c.call(&["RENAMENX", &k1, &k2]);
        c.call(&["MSETNX", &k1, "3", &k2, "3"]);
        c.call(&["MSETNX", &k1, "4", &k2, "4"]);
        c.call(&["MGET", &k1, &k2]);
        let r = c.call(&["EXEC"]);
        assert_eq!(r, b"*5\r\n:1\r\n:1\r\n:0\r\n:0\r\n*2\r\n$-1\r\n$1\r\n2\r\n");
        c.call(&["DEL", &k1, &k2]);
        // The same two names with one tag: always together.
        let (t1, t2) = (format!("{{t{i}}}x"), format!("{{t{i}}}y"));
        assert!(!common::apart(srv.addr, t1.as_bytes(), t2.as_bytes()));
        c.call(&["MULTI"]);
        c.call(&["SET", &t1, "1"]);
        c.call(&["INCR", &t2]);
        assert_eq!(c.call(&["EXEC"]), b"*2\r\n+OK\r\n:1\r\n");
        assert_eq!(c.call(&["MSETNX", &t1, "2", &t2, "2"]), b":0\r\n");
    }
    assert!(
        crossed > 0 && together > 0,
        "crossed {crossed}, together {together}"
    );
    // SPREAD's keys lie on both pollers.
    let spread = SPREAD[1..]
        .iter()
        .any(|k| common::apart(srv.addr, SPREAD[0].as_bytes(), k.as_bytes()));
    assert!(spread, "SPREAD's keys are all on one poller");
    srv.stop();
}

/// RENAME and COPY of keys of two pollers inside MULTI … EXEC run as
/// Redis runs them, in order with the transaction's other commands on
/// both pollers (a missing source, COPY onto a key there, REPLACE, TTLs
/// carried over, writes and reads of both keys before and after the
/// move), and a change to a WATCHed key applies none of it: compared
/// byte for byte with redis-server; several moves too, all from one
/// poller to the other (both ways:
/// `msetnx_renamenx_and_moves_both_ways_inside_exec_match_redis`).
#[test]
fn moves_across_pollers_inside_exec_match_redis() {
    let Some(redis) = RealRedis::start(&["--databases", "1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (srv, keys) = two_pollers(dir.path());
    let [x, y, z, w] = keys.each_ref().map(String::as_str);
    let mut both = pair(&srv, &redis);
    let mut other = pair(&srv, &redis);
    let txns: &[&[&[&str]]] = &[
        &[&["SET", x, "1"], &["RENAME", x, y], &["MGET", x, y]],
        &[
            &["GET", y],
            &["RENAME", x, y],
            &["GET", y],
            &["SET", w, "2"],
        ],
        &[
            &["SET", y, "before"],
            &["SET", x, "moved", "EXAT", "4000000000"],
            &["INCR", w],
            &["RENAME", x, y],
            &["EXPIRETIME", y],
            &["APPEND", y, "+"],
            &["SET", x, "again"],
            &["MGET", x, y, w],
        ],
        &[&["COPY", x, y], &["GET", x], &["SET", x, "changed"]],
        &[&["COPY", x, z], &["MGET", x, z]],
        &[
            &["SET", x, "c", "PXAT", "4000000000123"],
            &["COPY", x, z, "REPLACE"],
        ],
        &[
            &["PEXPIRETIME", z],
            &["DEL", x],
            &["COPY", x, z, "REPLACE"],
            &["GET", z],
        ],
        &[&["RENAME", y, w], &["MGET", y, w]],
        &[&["COPY", w, z, "DB", "0", "REPLACE"], &["GET", z]],
        &[
            &["COPY", z, w, "DB", "1"],
            &["RENAME", x, x],
            &["DEL", z],
            &["MGET", x, y, z, w],
        ],
        // Several moves, all from one poller to the other: in order.
        &[
            &["MSET", x, "1", w, "2"],
            &["RENAME", x, y],
            &["COPY", w, z],
            &["SET", x, "3"],
            &["COPY", x, y, "REPLACE"],
            &["RENAME", w, z],
            &["RENAME", w, y],
            &["MGET", x, y, z, w],
        ],
    ];
    for txn in txns {
        both.check_str(&["MULTI"]);
        for cmd in *txn {
            both.check_str(cmd);
        }
        both.check_str(&["EXEC"]);
        both.check_str(&["MGET", x, y, z, w]);
    }
    // WATCH: a change to the watched key applies nothing of the move.
    both.script(&[&["SET", x, "kept"], &["SET", y, "old"], &["WATCH", w]]);
    other.check_str(&["SET", w, "changed"]);
    both.script(&[&["MULTI"], &["RENAME", x, y], &["SET", z, "no"], &["EXEC"]]);
    both.check_str(&["MGET", x, y, z, w]);
    srv.stop();
}

/// MSETNX and RENAMENX of keys of two pollers inside MULTI … EXEC, and
/// RENAMEs and COPYs both ways between them in one transaction, run as
/// Redis runs them: their replies, the commands after them that read
/// what they did, a missing source, TTLs carried: EXEC's reply array and
/// the keys after it compared byte for byte with redis-server. A change
/// to a WATCHed key applies none of it.
#[test]
fn msetnx_renamenx_and_moves_both_ways_inside_exec_match_redis() {
    let Some(redis) = RealRedis::start(&["--databases", "1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (srv, keys) = two_pollers(dir.path());
    let [x, y, z, w] = keys.each_ref().map(String::as_str);
    let mut both = pair(&srv, &redis);
    let mut other = pair(&srv, &redis);
    let txns: &[&[&[&str]]] = &[
        // MSETNX, all keys absent: set, and read after it in the EXEC.
        &[
            &["MSETNX", x, "1", y, "2"],
            &["MGET", x, y],
            &["INCR", y],
            &["GET", x],
        ],
        // One key there, on the other poller (either order): nothing set.
        &[&["DEL", x], &["MSETNX", x, "3", y, "3"], &["MGET", x, y]],
        &[&["DEL", x], &["MSETNX", y, "4", x, "4"], &["MGET", x, y]],
        &[
            &["MSETNX", w, "5", x, "5", z, "5", y, "5"],
            &["MGET", x, y, z, w],
        ],
        // Made free earlier in the EXEC, taken later in it.
        &[
            &["DEL", y],
            &["MSETNX", x, "6", z, "6", w, "6"],
            &["MSETNX", y, "7", x, "7"],
            &["MGET", x, y, z, w],
            &["SET", z, "8"],
            &["MSETNX", y, "9", z, "9"],
            &["MGET", x, y, z, w],
        ],
        // RENAMENX: destination there (the source stays), then free.
        &[&["RENAMENX", x, y], &["MGET", x, y]],
        &[
            &["DEL", y],
            &["RENAMENX", x, y],
            &["MGET", x, y],
            &["RENAMENX", y, w],
            &["RENAMENX", w, z],
            &["MGET", x, y, z, w],
        ],
        // A missing source: the command's error, the rest runs.
        &[
            &["DEL", x],
            &["RENAMENX", x, y],
            &["RENAME", x, z],
            &["COPY", x, y],
            &["SET", w, "after"],
            &["MGET", x, y, z, w],
        ],
        // Two RENAMEs in opposite directions.
        &[
            &["MSET", x, "1", y, "2"],
            &["RENAME", x, z],
            &["RENAME", y, w],
            &["MGET", x, y, z, w],
        ],
        // A chain: from one poller to the other and back.
        &[
            &["SET", x, "chain"],
            &["RENAME", x, y],
            &["RENAME", y, w],
            &["GET", w],
            &["RENAME", w, z],
            &["RENAME", z, x],
            &["MGET", x, y, z, w],
        ],
        // COPY both ways, with REPLACE and onto a key there.
        &[
            &["MSET", x, "cx", y, "cy"],
            &["COPY", x, z],
            &["COPY", y, w],
            &["COPY", y, x],
            &["COPY", y, x, "REPLACE"],
            &["MGET", x, y, z, w],
        ],
        // TTLs carried both ways (absolute, so that they read back
        // exactly), a destination's own replaced.
        &[
            &["SET", x, "tx", "PXAT", "4000000000123"],
            &["SET", y, "ty", "EXAT", "4100000000"],
            &["SET", z, "tz", "EXAT", "4200000000"],
            &["RENAME", x, z],
            &["RENAMENX", y, x],
            &["PEXPIRETIME", z],
            &["PEXPIRETIME", x],
            &["PEXPIRETIME", y],
            &["COPY", z, w],
            &["PEXPIRETIME", w],
            &["PERSIST", x],
            &["RENAME", x, y],
            &["PEXPIRETIME", y],
        ],
        // Everything at once, several commands of each.
        &[&["FLUSHALL"]],
        &[
            &["MSETNX", x, "1", y, "1"],
            &["RENAMENX", x, z],
            &["RENAME", y, w],
            &["COPY", z, y],
            &["MSETNX", x, "2", y, "2"],
            &["RENAMENX", w, x],
            &["INCR", x],
            &["RENAME", z, w],
            &["MGET", x, y, z, w],
        ],
    ];
    for txn in txns {
        both.check_str(&["MULTI"]);
        for cmd in *txn {
            both.check_str(cmd);
        }
        both.check_str(&["EXEC"]);
        both.check_str(&["MGET", x, y, z, w]);
    }
    // The TTLs carried count down as Redis's do.
    both.script(&[&["SET", x, "t", "PX", "100000"], &["MULTI"]]);
    both.script(&[&["RENAME", x, y], &["RENAME", y, x], &["COPY", x, z]]);
    both.script(&[&["RENAME", z, w], &["EXEC"]]);
    for k in [x, w] {
        let pttl = String::from_utf8(both.ours.call(&["PTTL", k])).unwrap();
        let ms: i64 = pttl.trim_start_matches(':').trim().parse().unwrap();
        assert!(ms > 0 && ms <= 100_000, "PTTL {k}: {ms}");
    }
    // WATCH: a change to the watched key applies nothing of it.
    both.script(&[
        &["MSET", x, "kept", y, "old"],
        &["DEL", z, w],
        &["WATCH", w],
    ]);
    other.check_str(&["SET", w, "changed"]);
    both.script(&[
        &["MULTI"],
        &["MSETNX", z, "no", w, "no"],
        &["RENAMENX", x, z],
        &["RENAME", y, w],
        &["COPY", w, x, "REPLACE"],
        &["EXEC"],
    ]);
    both.check_str(&["MGET", x, y, z, w]);
    srv.stop();
}

/// With three pollers, MSETNX over all three, RENAMENX between two, and
/// moves spanning every pair of them (a ring of RENAMEs, COPYs each
/// way) inside one EXEC run as Redis runs them, byte for byte.
#[test]
fn moves_and_msetnx_over_three_pollers_inside_exec_match_redis() {
    let Some(redis) = RealRedis::start(&["--databases", "1"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "3"]);
    let [p, q, r] = tags_on_three_pollers(&srv);
    let [x, y, z] = [&p, &q, &r].map(|t| format!("{{{t}}}k"));
    let [u, v, w] = [&p, &q, &r].map(|t| format!("{{{t}}}m"));
    let (x, y, z, u, v, w) = (&*x, &*y, &*z, &*u, &*v, &*w);
    let mut both = pair(&srv, &redis);
    let txns: &[&[&[&str]]] = &[
        &[
            &["MSETNX", x, "1", y, "2", z, "3"],
            &["MGET", x, y, z],
            &["MSETNX", u, "4", v, "5", z, "6"],
            &["MGET", u, v, w],
        ],
        // A ring: each key to the next poller's.
        &[
            &["RENAME", x, v],
            &["RENAME", y, w],
            &["RENAME", z, u],
            &["MGET", x, y, z, u, v, w],
        ],
        &[
            &["RENAMENX", u, y],
            &["RENAMENX", v, y],
            &["COPY", w, x],
            &["COPY", y, z, "REPLACE"],
            &["COPY", x, u],
            &["MSETNX", x, "7", v, "7", w, "7"],
            &["MGET", x, y, z, u, v, w],
        ],
    ];
    for txn in txns {
        both.check_str(&["MULTI"]);
        for cmd in *txn {
            both.check_str(cmd);
        }
        both.check_str(&["EXEC"]);
        both.check_str(&["MGET", x, y, z, u, v, w]);
    }
    srv.stop();
}

/// Three clients running, concurrently and a few hundred times each,
/// transactions whose RENAMEs, RENAMENXs, COPYs and MSETNXs cross the two
/// pollers both ways, two of them over keys of their own (their
/// transactions run at once) and the third over keys of both, beside a
/// fourth whose transactions move keys one way only: every
/// EXEC completes (none waits for ever on another) with the replies of a
/// serial run, and the keys end as some serial order leaves them: the
/// values swapped about are all there, once each, and every MSETNX's
/// keys are set.
#[test]
fn concurrent_execs_moving_keys_both_ways_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let (a, b) = tags_on_two_pollers(&mut Conn::connect(srv.addr));
    // Slots alternate between the pollers: s0 and s2 on one, s1 and s3
    // on the other.
    let slots: Vec<String> = (0..4)
        .map(|i| format!("{{{}}}s{i}", if i % 2 == 0 { &a } else { &b }))
        .collect();
    let mut con = srv.client();
    for (i, s) in slots.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(s)
            .arg(format!("v{i}"))
            .query(&mut con)
            .unwrap();
    }
    const ROUNDS: usize = 300;
    // Client 0 swaps s0 and s1, client 1 s2 and s3, client 2 s1 and s2.
    const FIRST: [usize; 3] = [0, 2, 1];
    // The tags of the poller of a client's first slot, and of the other.
    let tags = |client: usize| match FIRST[client] % 2 {
        0 => (a.clone(), b.clone()),
        _ => (b.clone(), a.clone()),
    };
    let mut clients = Vec::new();
    for client in 0..FIRST.len() {
        let mut con = srv.client();
        let (first, second) = (
            slots[FIRST[client]].clone(),
            slots[FIRST[client] + 1].clone(),
        );
        let (mine, other) = tags(client);
        clients.push(std::thread::spawn(move || {
            let (first, second) = (&first, &second);
            let tmp = format!("{{{other}}}tmp{client}");
            let copy = format!("{{{other}}}copy{client}");
            for round in 0..ROUNDS {
                let (m1, m2) = (
                    format!("{{{mine}}}m{client}:{round}"),
                    format!("{{{other}}}m{client}:{round}"),
                );
                let replies: Vec<redis::Value> = redis::pipe()
                    .atomic()
                    .cmd("RENAME")
                    .arg(first)
                    .arg(&tmp)
                    .cmd("RENAME")
                    .arg(second)
                    .arg(first)
                    .cmd("RENAME")
                    .arg(&tmp)
                    .arg(second)
                    .cmd("RENAMENX")
                    .arg(first)
                    .arg(&tmp)
                    .cmd("RENAMENX")
                    .arg(&tmp)
                    .arg(first)
                    .cmd("MSETNX")
                    .arg(&m1)
                    .arg(round)
                    .arg(&m2)
                    .arg(round)
                    .cmd("COPY")
                    .arg(second)
                    .arg(&copy)
                    .arg("REPLACE")
                    .query(&mut con)
                    .expect("EXEC answers");
                let ok = redis::Value::Okay;
                let one = redis::Value::Int(1);
                let expected = [&ok, &ok, &ok, &one, &one, &one, &one];
                assert!(
                    replies.iter().zip(expected).all(|(r, e)| r == e) && replies.len() == 7,
                    "client {client}, round {round}: {replies:?}"
                );
            }
        }));
    }
    // And one whose moves all go one way (its EXECs pass the gate
    // together with other such, not alone): a key there and back, in two
    // EXECs, and a copy beside it.
    {
        let mut con = srv.client();
        let (a, b) = (a.clone(), b.clone());
        clients.push(std::thread::spawn(move || {
            let (here, there) = (format!("{{{a}}}ow"), format!("{{{b}}}ow"));
            let copies = (format!("{{{a}}}owc"), format!("{{{b}}}owc"));
            for round in 0..ROUNDS {
                // The copy on the destination's poller.
                let (from, to, copy) = match round % 2 {
                    0 => (&here, &there, &copies.1),
                    _ => (&there, &here, &copies.0),
                };
                let replies: Vec<redis::Value> = redis::pipe()
                    .atomic()
                    .cmd("SET")
                    .arg(from)
                    .arg(round)
                    .cmd("RENAME")
                    .arg(from)
                    .arg(to)
                    .cmd("COPY")
                    .arg(to)
                    .arg(copy)
                    .arg("REPLACE")
                    .query(&mut con)
                    .expect("EXEC answers");
                use redis::Value::{Int, Okay};
                assert_eq!(replies, [Okay, Okay, Int(1)], "one way, round {round}");
            }
        }));
    }
    let start = Instant::now();
    while !clients.iter().all(|c| c.is_finished()) {
        assert!(start.elapsed() < Duration::from_secs(120), "an EXEC hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in clients {
        c.join().expect("a client's EXECs answer as a serial run's");
    }
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&slots).query(&mut con).unwrap();
    let mut values: Vec<String> = values
        .into_iter()
        .map(|v| v.expect("a slot's value"))
        .collect();
    values.sort();
    assert_eq!(values, ["v0", "v1", "v2", "v3"]);
    for client in 0..FIRST.len() {
        let (mine, other) = tags(client);
        for round in 0..ROUNDS {
            let keys = [
                format!("{{{mine}}}m{client}:{round}"),
                format!("{{{other}}}m{client}:{round}"),
            ];
            let n: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut con).unwrap();
            assert_eq!(n, 2, "client {client}, round {round}");
        }
    }
    srv.stop();
}

/// Three tags whose keys lie on three different pollers (of a server
/// with at least three).
fn tags_on_three_pollers(srv: &Server) -> [String; 3] {
    let apart = |i: usize, j: usize| {
        let (a, b) = (format!("{{t{i}}}probe"), format!("{{t{j}}}probe"));
        common::apart(srv.addr, a.as_bytes(), b.as_bytes())
    };
    let second = (1..64)
        .find(|&i| apart(0, i))
        .expect("a tag on a second poller");
    let third = (1..64)
        .find(|&j| apart(0, j) && apart(second, j))
        .expect("a tag on a third poller");
    [0, second, third].map(|t| format!("t{t}"))
}

/// With three pollers, clients whose transactions span different sets of
/// them (pairs and all three), each moving its keys round its pollers
/// (a ring of RENAMEs, RENAMENX there and back, COPY) and MSETNX over
/// them, concurrently and a few hundred times each: every EXEC completes
/// with the replies of a serial run (no two wait for each other through
/// the one transaction a poller runs at a time), and each client's
/// values are all there, once each.
#[test]
fn concurrent_execs_over_three_pollers_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "3", "--tcp-threads", "3"]);
    let tags = tags_on_three_pollers(&srv);
    // Each client's pollers (places in `tags`), in the order its values
    // go round.
    let spans: [&[usize]; 4] = [&[0, 1], &[1, 2], &[2, 0, 1], &[0, 2]];
    const ROUNDS: usize = 200;
    let slots = |client: usize| -> Vec<String> {
        (spans[client].iter())
            .map(|&p| format!("{{{}}}c{client}s", tags[p]))
            .collect()
    };
    let mut con = srv.client();
    for client in 0..spans.len() {
        for (i, s) in slots(client).iter().enumerate() {
            let _: () = redis::cmd("SET").arg(s).arg(i).query(&mut con).unwrap();
        }
    }
    let mut clients = Vec::new();
    for (client, span) in spans.iter().enumerate() {
        let mut con = srv.client();
        let slots = slots(client);
        let span: Vec<String> = span.iter().map(|&p| tags[p].clone()).collect();
        clients.push(std::thread::spawn(move || {
            let k = slots.len();
            let tmp = format!("{{{}}}c{client}tmp", span[1]);
            let nx = format!("{{{}}}c{client}nx", span[k - 1]);
            let copy = format!("{{{}}}c{client}copy", span[0]);
            for round in 0..ROUNDS {
                let mut pipe = redis::pipe();
                pipe.atomic();
                // Round the ring: each slot takes the next one's value.
                pipe.cmd("RENAME").arg(&slots[0]).arg(&tmp);
                for i in 0..k - 1 {
                    pipe.cmd("RENAME").arg(&slots[i + 1]).arg(&slots[i]);
                }
                pipe.cmd("RENAME").arg(&tmp).arg(&slots[k - 1]);
                pipe.cmd("RENAMENX").arg(&slots[0]).arg(&nx);
                pipe.cmd("RENAMENX").arg(&nx).arg(&slots[0]);
                pipe.cmd("MSETNX");
                for t in &span {
                    pipe.arg(format!("{{{t}}}c{client}m{round}")).arg(round);
                }
                pipe.cmd("COPY")
                    .arg(&slots[k - 1])
                    .arg(&copy)
                    .arg("REPLACE");
                let replies: Vec<redis::Value> = pipe.query(&mut con).expect("EXEC answers");
                let mut expected = vec![redis::Value::Okay; k + 1];
                expected.extend([redis::Value::Int(1), redis::Value::Int(1)]);
                expected.extend([redis::Value::Int(1), redis::Value::Int(1)]);
                assert_eq!(replies, expected, "client {client}, round {round}");
            }
        }));
    }
    let start = Instant::now();
    while !clients.iter().all(|c| c.is_finished()) {
        assert!(start.elapsed() < Duration::from_secs(120), "an EXEC hangs");
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in clients {
        c.join().expect("a client's EXECs answer as a serial run's");
    }
    for (client, span) in spans.iter().enumerate() {
        let values: Vec<String> = redis::cmd("MGET")
            .arg(slots(client))
            .query(&mut con)
            .unwrap();
        let mut values: Vec<usize> = values.iter().map(|v| v.parse().unwrap()).collect();
        values.sort_unstable();
        assert_eq!(values, (0..span.len()).collect::<Vec<_>>());
        for round in 0..ROUNDS {
            let keys: Vec<String> = (span.iter())
                .map(|&p| format!("{{{}}}c{client}m{round}", tags[p]))
                .collect();
            let n: usize = redis::cmd("EXISTS").arg(&keys).query(&mut con).unwrap();
            assert_eq!(n, keys.len(), "client {client}, round {round}");
        }
    }
    srv.stop();
}

/// redis-py's default pipeline (MULTI … EXEC) over keys of both pollers
/// answers as Redis does, and so do MSET and MGET across them.
#[test]
fn redis_py_pipelines_across_pollers_match_redis() {
    if !common::redis_py() {
        return;
    }
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let script = r#"
import sys, redis
host, port = sys.argv[1].rsplit(":", 1)
r = redis.Redis(host=host, port=int(port))
keys = ["k%d" % i for i in range(40)]
p = r.pipeline()
for i, k in enumerate(keys):
    p.set(k, i)
for k in keys:
    p.incr(k)
p.mget(keys).mset({k: "v" + k for k in keys[::3]}).get("k3").delete(*keys[:7])
p.exists(*keys).incrby("k9", "x").append("k10", "z").getdel("k11").strlen("k12")
out = [repr(x) for x in p.execute(raise_on_error=False)]
r.mset({k: i for i, k in enumerate(keys)})
out.append(repr(r.mget(keys + ["nope"])))
with r.pipeline() as p:
    p.watch(*keys[::5])
    p.multi()
    p.incr("k5").incr("k6").set("k7", "x")
    out.append(repr(p.execute()))
print("\n".join(out))
"#;
    let run = |addr: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", script, addr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ours = run(&srv.addr.to_string());
    assert_eq!(ours, run(&redis.addr));
    assert!(ours.contains("ResponseError"), "{ours}");
}

/// WATCH of keys on both pollers: a change to any of them by another
/// client makes EXEC answer nil, with nothing applied; unchanged, EXEC
/// runs. As Redis answers.
#[test]
fn watch_across_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let mut a = pair(&srv, &redis);
    let mut b = pair(&srv, &redis);
    let watch: Vec<&str> = std::iter::once("WATCH").chain(SPREAD).collect();
    for changed in std::iter::once(None).chain(SPREAD.iter().map(Some)) {
        a.check_str(&watch);
        if let Some(k) = changed {
            b.check_str(&["SET", k, "changed"]);
        }
        a.check_str(&["MULTI"]);
        for k in SPREAD {
            a.check_str(&["INCR", &format!("n{k}")]);
        }
        a.check_str(&["SET", "a", "ran"]);
        let r = a.check_str(&["EXEC"]);
        assert_eq!(r.starts_with(b"*-1"), changed.is_some());
        a.check_str(&["MGET", "na", "nb", "nc", "nd", "ne", "nf", "ng", "nh", "a"]);
    }
    // The watches end with EXEC: a change after it aborts nothing.
    a.check_str(&watch);
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "b", "1"]);
    a.check_str(&["EXEC"]);
    b.check_str(&["SET", "a", "after"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "c", "1"]);
    a.check_str(&["EXEC"]);
    // WATCHed again between the parts' arrival: the next EXEC sees it.
    a.check_str(&watch);
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "d", "1"]);
    a.check_str(&["EXEC"]);
    a.check_str(&["WATCH", "e", "f"]);
    b.check_str(&["SET", "f", "changed"]);
    a.check_str(&["MULTI"]);
    a.check_str(&["SET", "g", "1"]);
    a.check_str(&["EXEC"]);
    a.check_str(&["MGET", "d", "g"]);
}

/// Connection-level commands queued in a transaction (CLIENT SETNAME,
/// CONFIG SET, PUBLISH, CLIENT NO-EVICT, SELECT, CONFIG RESETSTAT) run at
/// EXEC in order with the others (a CONFIG GET or CLIENT GETNAME after
/// them sees them; a command pipelined after EXEC too), and not at all
/// when EXEC answers nil because a watched key changed, or EXECABORT: as
/// Redis, byte for byte, on one poller and on two (the transaction's keys
/// on both).
#[test]
fn connection_commands_of_a_transaction_run_only_when_it_does() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let sets: Vec<Vec<&str>> = SPREAD.iter().map(|k| vec!["SET", k, "txn"]).collect();
    let mut txn: Vec<&[&str]> = vec![
        // Reads before the first command with effects: run as EXEC
        // starts, as Redis runs them.
        &["CLIENT", "GETNAME"],
        &["PING"],
        &["CLIENT", "SETNAME", "inside"],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
        &["CONFIG", "GET", "maxmemory-policy"],
        &["PUBLISH", "ch", "inside"],
    ];
    txn.extend(sets.iter().map(Vec::as_slice));
    txn.extend_from_slice(&[
        &["CLIENT", "GETNAME"],
        &["SELECT", "0"],
        &["CLIENT", "NO-EVICT", "ON"],
        &["INCR", "n"],
        &["CONFIG", "RESETSTAT"],
    ]);
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let mut a = pair(&srv, &redis);
        let mut b = pair(&srv, &redis);
        let mut sub = pair(&srv, &redis);
        // Both start empty.
        a.theirs.call(&["FLUSHALL"]);
        sub.check_str(&["SUBSCRIBE", "ch"]);
        let mut del = vec!["DEL", "n", "k"];
        del.extend(SPREAD);
        let fresh: &[&[&str]] = &[
            &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
            &["CLIENT", "SETNAME", "before"],
            &["CLIENT", "NO-EVICT", "OFF"],
            &del,
            &["SET", "hit", "1"],
            &["GET", "hit"],
        ];
        // What no part of the transaction changed.
        let unchanged = |a: &mut Both<Conn>, b: &mut Both<Conn>, sub: &mut Both<Conn>| {
            a.check_str(&["CLIENT", "GETNAME"]);
            a.check_str(&["CONFIG", "GET", "maxmemory-policy"]);
            assert_eq!(client_flags(a), "N");
            a.check_str(&["MGET", "n", "a", "b", "c", "d", "e", "f", "g", "h"]);
            for hits in [&mut a.ours, &mut a.theirs] {
                let info = String::from_utf8(hits.call(&["INFO", "stats"])).unwrap();
                assert!(!info.contains("keyspace_hits:0\r"), "stats reset: {info}");
            }
            // The subscriber's next message is the one published after.
            b.check_str(&["PUBLISH", "ch", "after"]);
            let next = Both::<Conn>::next_replies(sub);
            assert!(
                next.ends_with(b"$5\r\nafter\r\n"),
                "{}",
                next.escape_ascii()
            );
        };

        // WATCH, and another client changes the key: EXEC answers nil.
        a.script(fresh);
        a.check_str(&["WATCH", "k"]);
        b.check_str(&["SET", "k", "changed"]);
        a.check_str(&["MULTI"]);
        txn.iter()
            .for_each(|c| assert_eq!(a.check_str(c), b"+QUEUED\r\n"));
        assert_eq!(a.check_str(&["EXEC"]), b"*-1\r\n");
        unchanged(&mut a, &mut b, &mut sub);

        // An error while queuing: EXECABORT.
        a.script(fresh);
        a.check_str(&["MULTI"]);
        txn.iter()
            .for_each(|c| assert_eq!(a.check_str(c), b"+QUEUED\r\n"));
        a.check_str(&["NOSUCHCOMMAND"]);
        assert!(a.check_str(&["EXEC"]).starts_with(b"-EXECABORT"));
        unchanged(&mut a, &mut b, &mut sub);

        // WATCH, nothing changes; then no WATCH: EXEC runs them all, in
        // order with the others.
        for watch in [true, false] {
            a.script(fresh);
            if watch {
                a.check_str(&["WATCH", "k"]);
            }
            a.check_str(&["MULTI"]);
            txn.iter()
                .for_each(|c| assert_eq!(a.check_str(c), b"+QUEUED\r\n"));
            let r = a.check_str(&["EXEC"]);
            let head = format!("*{}\r\n$6\r\nbefore\r\n+PONG\r\n+OK\r\n", txn.len());
            assert!(r.starts_with(head.as_bytes()));
            a.check_str(&["CLIENT", "GETNAME"]);
            a.check_str(&["CONFIG", "GET", "maxmemory-policy"]);
            assert_eq!(client_flags(&mut a), "e");
            let got = Both::<Conn>::next_replies(&mut sub);
            assert!(got.ends_with(b"$6\r\ninside\r\n"), "{}", got.escape_ascii());
        }

        // EXEC and commands pipelined after it: they see what it did.
        a.script(fresh);
        let pipeline: &[&[&str]] = &[
            &["MULTI"],
            &["CLIENT", "SETNAME", "piped"],
            &["SET", "a", "1"],
            &["SET", "b", "1"],
            &["EXEC"],
            &["CLIENT", "GETNAME"],
            &["MULTI"],
            &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
            &["INCR", "n"],
            &["EXEC"],
            &["CONFIG", "GET", "maxmemory-policy"],
            &["CLIENT", "SETNAME", "after"],
        ];
        let ours = pipelined(&mut a.ours, pipeline);
        let theirs = pipelined(&mut a.theirs, pipeline);
        assert_eq!(
            ours.escape_ascii().to_string(),
            theirs.escape_ascii().to_string()
        );
        a.check_str(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    }
}

impl Both<Conn> {
    /// The next reply each server pushes (a message published), the
    /// same on both.
    fn next_replies(both: &mut Both<Conn>) -> Vec<u8> {
        let ours = both.ours.next_reply();
        assert_eq!(ours, both.theirs.next_reply());
        ours
    }
}

/// The `flags=` field of CLIENT INFO, the same on both servers.
fn client_flags(c: &mut Both<Conn>) -> String {
    let flags = |c: &mut Conn| {
        let info = String::from_utf8(c.call(&["CLIENT", "INFO"])).unwrap();
        let f = info.split(' ').find_map(|f| f.strip_prefix("flags="));
        f.expect("flags in CLIENT INFO").to_string()
    };
    let ours = flags(&mut c.ours);
    assert_eq!(ours, flags(&mut c.theirs));
    ours
}

/// `cmds` sent in one write, and their replies.
fn pipelined(c: &mut Conn, cmds: &[&[&str]]) -> Vec<u8> {
    let mut req = Vec::new();
    for args in cmds {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        req.extend(encode(&args));
    }
    c.s.write_all(&req).expect("send");
    (0..cmds.len()).flat_map(|_| c.next_reply()).collect()
}

/// Through the `redis` crate: after another client changed a WATCHed key,
/// a transaction of CLIENT SETNAME, CONFIG SET and SET gets nil, and
/// CLIENT GETNAME, CONFIG GET and GET show none of it, as with
/// redis-server; unchanged, it runs.
#[test]
fn redis_crate_watched_transaction_of_connection_commands() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let run = |a: &mut redis::Connection, b: &mut redis::Connection, change: bool| {
        let _: () = redis::cmd("CONFIG")
            .arg(&["SET", "maxmemory-policy", "noeviction"])
            .query(a)
            .unwrap();
        let _: () = redis::cmd("DEL").arg(&["k", "a"]).query(a).unwrap();
        let _: () = redis::cmd("WATCH").arg("k").query(a).unwrap();
        if change {
            let _: () = redis::cmd("SET").arg(&["k", "changed"]).query(b).unwrap();
        }
        let r: Option<(String, String, String)> = redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg(&["SETNAME", "x"])
            .cmd("CONFIG")
            .arg(&["SET", "maxmemory-policy", "allkeys-lru"])
            .cmd("SET")
            .arg(&["a", "1"])
            .query(a)
            .unwrap();
        let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(a).unwrap();
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg(&["GET", "maxmemory-policy"])
            .query(a)
            .unwrap();
        let value: Option<String> = redis::cmd("GET").arg("a").query(a).unwrap();
        (r, name, policy, value)
    };
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        for change in [true, false] {
            let ours = run(&mut srv.client(), &mut srv.client(), change);
            let theirs = run(&mut redis.client(), &mut redis.client(), change);
            assert_eq!(ours, theirs, "changed: {change}");
            assert_eq!(ours.0.is_none(), change);
            assert_eq!(ours.1.is_none(), change);
        }
    }
}

/// A HELLO or CLIENT NO-TOUCH queued before commands of keys changes
/// them as if run before them (their replies in RESP3, their reads not
/// touching), though it runs once the pollers have run them; when EXEC
/// answers nil, the protocol stays RESP2. A SUBSCRIBE inside leaves the
/// commands after it to run. HELLO's reply is compared only
/// in its kind (servers name themselves), the rest byte for byte with
/// redis-server (Redis 7.0 has no NO-TOUCH: checked on ours alone).
#[test]
fn hello_and_no_touch_inside_exec_apply_to_the_commands_after_them() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    for addr in [srv.addr.to_string(), redis.addr.clone()] {
        let mut a = Conn::connect(addr.as_str());
        let mut b = Conn::connect(addr.as_str());
        a.call(&["WATCH", "a"]);
        b.call(&["SET", "a", "changed"]);
        a.call(&["MULTI"]);
        a.call(&["HELLO", "3"]);
        a.call(&["GET", "missing"]);
        assert_eq!(a.call(&["EXEC"]), b"*-1\r\n", "{addr}");
        assert_eq!(a.call(&["GET", "missing"]), b"$-1\r\n", "{addr}");
        a.call(&["MULTI"]);
        a.call(&["HELLO", "3"]);
        a.call(&["GET", "missing"]);
        a.call(&["MGET", "a", "b", "missing"]);
        let r = a.call(&["EXEC"]);
        assert!(r.starts_with(b"*3\r\n%"), "{addr}: {}", r.escape_ascii());
        let tail = b"_\r\n*3\r\n$7\r\nchanged\r\n_\r\n_\r\n";
        assert!(r.ends_with(tail), "{addr}: {}", r.escape_ascii());
    }
    // A SUBSCRIBE inside: the commands after it run (PING answers as
    // subscribed), as Redis's, with and without keys.
    let mut both = pair(&srv, &redis);
    for key in [None, Some("a")] {
        both.check_str(&["MULTI"]);
        both.check_str(&["SUBSCRIBE", "ch"]);
        both.check_str(&["CONFIG", "GET", "maxmemory-policy"]);
        if let Some(k) = key {
            both.check_str(&["GET", k]);
        }
        both.check_str(&["PING"]);
        both.check_str(&["EXEC"]);
        both.check_str(&["UNSUBSCRIBE"]);
    }
    // A HELLO refused (wrong password) switches nothing: byte for byte.
    let dir = tempfile::tempdir().unwrap();
    let locked = Server::start(dir.path(), &["--requirepass", "pw"]);
    let Some(locked_redis) = RealRedis::start(&["--requirepass", "pw"]) else {
        return;
    };
    let mut both = pair(&locked, &locked_redis);
    both.script(&[
        &["AUTH", "pw"],
        &["MULTI"],
        &["HELLO", "3", "AUTH", "default", "wrong"],
        &["GET", "missing"],
        &["EXEC"],
        &["GET", "missing"],
    ]);
    drop(locked);
    // A key restored as idle for 1000 s: a GET after CLIENT NO-TOUCH ON in
    // the transaction leaves it idle; one after NO-TOUCH OFF does not
    // (reads count under an LRU policy).
    let mut con = srv.client();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "allkeys-lru"])
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET").arg(&["x", "v"]).query(&mut con).unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP").arg("x").query(&mut con).unwrap();
    let idle_after = |con: &mut redis::Connection, touch: &str| -> i64 {
        let _: () = redis::cmd("RESTORE")
            .arg("x")
            .arg(0)
            .arg(&dump)
            .arg(&["REPLACE", "IDLETIME", "1000"])
            .query(con)
            .unwrap();
        let (_, v): (String, String) = redis::pipe()
            .atomic()
            .cmd("CLIENT")
            .arg(&["NO-TOUCH", touch])
            .cmd("GET")
            .arg("x")
            .query(con)
            .unwrap();
        assert_eq!(v, "v");
        redis::cmd("OBJECT")
            .arg(&["IDLETIME", "x"])
            .query(con)
            .unwrap()
    };
    assert!(
        idle_after(&mut con, "ON") >= 1000,
        "a NO-TOUCH read touched"
    );
    assert!(idle_after(&mut con, "OFF") < 1000, "a read did not touch");
}

/// No client sees part of a transaction across pollers: writers set keys
/// of both pollers to the same number in each EXEC, or each MSET;
/// readers' MGETs never see them differ.
#[test]
fn no_client_sees_part_of_a_transaction_across_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let url = srv.url();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for i in 0..300 {
                    let v = format!("{w}-{i}");
                    if i % 2 == 0 {
                        let mut p = redis::pipe();
                        p.atomic();
                        for k in SPREAD {
                            p.set(k, &v);
                        }
                        let _: () = p.incr("n1", 1).incr("n2", 1).query(&mut con).unwrap();
                    } else {
                        let pairs: Vec<(&str, &str)> = SPREAD.iter().map(|&k| (k, &*v)).collect();
                        let _: () = redis::cmd("MSET").arg(&pairs).query(&mut con).unwrap();
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop) = (url.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let mut seen = 0;
                while !stop.load(Relaxed) {
                    let vals: Vec<Option<String>> =
                        redis::cmd("MGET").arg(&SPREAD).query(&mut con).unwrap();
                    assert!(
                        vals.iter().all(|v| *v == vals[0]),
                        "a reader saw part of a transaction: {vals:?}"
                    );
                    let (n1, n2): (Option<i64>, Option<i64>) = redis::cmd("MGET")
                        .arg(&["n1", "n2"])
                        .query(&mut con)
                        .unwrap();
                    assert_eq!(n1, n2, "a reader saw part of a transaction");
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let mut con = srv.client();
    let n: (i64, i64) = redis::cmd("MGET")
        .arg(&["n1", "n2"])
        .query(&mut con)
        .unwrap();
    assert_eq!(n, (300, 300));
}

/// With two pollers, KEYS and DBSIZE look at the store at one instant:
/// they list and count a transaction across pollers whole or not at all
/// (writers MSET SPREAD's keys and delete them in one MULTI … EXEC, or
/// another client flushes the store), and
/// never a later write without an earlier one (a writer SETs `x:i`, then
/// `y:i`, each acknowledged, and deletes them in the other order), as in
/// Redis, where each runs alone.
#[test]
fn keys_and_dbsize_see_the_store_at_one_instant_across_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let url = srv.url();
    let con = |url: &str| redis::Client::open(url).unwrap().get_connection().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers = |check: fn(&mut redis::Connection)| -> Vec<std::thread::JoinHandle<u64>> {
        (0..2)
            .map(|_| {
                let (mut c, stop) = (con(&url), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while !stop.load(Relaxed) {
                        check(&mut c);
                        seen += 1;
                    }
                    seen
                })
            })
            .collect()
    };
    let finish = |readers: Vec<std::thread::JoinHandle<u64>>| {
        stop.store(true, Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0, "a reader never ran");
        }
        stop.store(false, Relaxed);
    };

    // Transactions across pollers, whole or not at all.
    let spread = |c: &mut redis::Connection| {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        assert!(
            keys.is_empty() || keys.len() == SPREAD.len(),
            "KEYS listed part of a transaction: {keys:?}"
        );
        let n: u64 = redis::cmd("DBSIZE").query(c).unwrap();
        assert!(
            n == 0 || n == SPREAD.len() as u64,
            "DBSIZE counted part of one: {n}"
        );
    };
    let rs = readers(spread);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let mut c = con(&url);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let v = format!("{w}-{i}");
                    let pairs: Vec<(&str, &str)> = SPREAD.iter().map(|&k| (k, &*v)).collect();
                    let _: () = redis::cmd("MSET").arg(&pairs).query(&mut c).unwrap();
                    let mut p = redis::pipe();
                    p.atomic();
                    for k in SPREAD {
                        p.del(k);
                    }
                    let _: () = p.query(&mut c).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    finish(rs);

    // A flush empties both pollers at one instant: never half of an MSET.
    let rs = readers(spread);
    let (mut w, mut f) = (con(&url), con(&url));
    let writer = std::thread::spawn(move || {
        for i in 0..200 {
            let v = i.to_string();
            let pairs: Vec<(&str, &str)> = SPREAD.iter().map(|&k| (k, &*v)).collect();
            let _: () = redis::cmd("MSET").arg(&pairs).query(&mut w).unwrap();
        }
    });
    for _ in 0..100 {
        let _: () = redis::cmd("FLUSHDB").query(&mut f).unwrap();
    }
    writer.join().unwrap();
    finish(rs);
    let _: () = redis::cmd("FLUSHALL").query(&mut f).unwrap();

    // Acknowledged writes on two pollers, in their order.
    let ordered = |c: &mut redis::Connection| {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(c).unwrap();
        for k in keys.iter().filter_map(|k| k.strip_prefix("y:")) {
            assert!(
                keys.contains(&format!("x:{k}")),
                "KEYS listed y:{k}, written after x:{k} and deleted before it, without x:{k}"
            );
        }
    };
    let rs = readers(ordered);
    let mut c = con(&url);
    for i in 0..400 {
        let (x, y) = (format!("x:{i}"), format!("y:{i}"));
        let _: () = redis::cmd("SET").arg(&x).arg(1).query(&mut c).unwrap();
        let _: () = redis::cmd("SET").arg(&y).arg(1).query(&mut c).unwrap();
        let _: () = redis::cmd("DEL").arg(&y).query(&mut c).unwrap();
        let _: () = redis::cmd("DEL").arg(&x).query(&mut c).unwrap();
    }
    finish(rs);
    assert_eq!(common::dbsize(&mut c), 0);
}

/// A value larger than a segment, read in a transaction across pollers
/// and by an MGET across them, is read whole (not streamed behind the
/// other pollers' replies).
#[test]
fn large_values_read_across_pollers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut con = srv.client();
    let big = "v".repeat(20 << 20);
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    let mut p = redis::pipe();
    p.atomic().get("a");
    for k in &SPREAD[1..] {
        p.set(*k, 1).ignore();
    }
    let (got,): (String,) = p.query(&mut con).unwrap();
    assert!(got == big, "a value of {} bytes came back", got.len());
    let vals: Vec<String> = redis::cmd("MGET").arg(&SPREAD).query(&mut con).unwrap();
    assert!(vals[0] == big && vals[1..].iter().all(|v| v == "1"));
}

/// Two clients running transactions over the same keys of both pollers,
/// naming them in opposite orders, both finish (the parts hold their
/// keys poller by poller, lowest first), and every increment is there.
#[test]
fn opposite_transactions_across_pollers_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let url = srv.url();
    let clients: Vec<_> = (0..2)
        .map(|w| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut keys = SPREAD.to_vec();
                if w == 1 {
                    keys.reverse();
                }
                for _ in 0..300 {
                    let mut p = redis::pipe();
                    p.atomic();
                    for k in &keys {
                        p.incr(*k, 1);
                    }
                    let _: Vec<i64> = p.query(&mut con).expect("EXEC answered");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut con = srv.client();
    let vals: Vec<i64> = redis::cmd("MGET").arg(&SPREAD).query(&mut con).unwrap();
    assert_eq!(vals, vec![600; SPREAD.len()]);
}

/// After a kill -9, every acknowledged EXEC is there whole (each wrote the
/// same number to keys in several shards); with sync and async
/// durability.
#[test]
fn acknowledged_transactions_survive_kill_9() {
    kill_9_during_transactions(&[], &["a", "b", "{c}x"]);
}

/// The same with two pollers and keys on both: every part of each
/// acknowledged EXEC is there after a kill -9.
#[test]
fn acknowledged_transactions_across_pollers_survive_kill_9() {
    kill_9_during_transactions(&["--io-threads", "2"], &SPREAD);
}

fn kill_9_during_transactions(extra: &[&str], keys: &[&str]) {
    for durability in ["sync", "async"] {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<&str> = ["--durability", durability]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let srv = Server::start(dir.path(), &args);
        let acked = Arc::new(AtomicU64::new(0));
        let url = srv.url();
        let writer = {
            let acked = Arc::clone(&acked);
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let start = Instant::now();
                for i in 1..u64::MAX {
                    let mut p = redis::pipe();
                    p.atomic();
                    for k in &keys {
                        p.set(k, i);
                    }
                    let r: redis::RedisResult<()> =
                        p.set("{big}", "x".repeat(3000)).query(&mut con);
                    if r.is_err() || start.elapsed() > Duration::from_secs(20) {
                        return; // the server is gone
                    }
                    acked.store(i, Relaxed);
                }
            })
        };
        common::wait_for("transactions acknowledged", || acked.load(Relaxed) >= 200);
        srv.kill();
        writer.join().unwrap();
        let last = acked.load(Relaxed);
        let srv = Server::start(dir.path(), &args);
        let mut con = srv.client();
        let vals: Vec<u64> = redis::cmd("MGET").arg(keys).query(&mut con).unwrap();
        for v in &vals {
            assert!(
                *v >= last,
                "{durability}: {vals:?} after {last} acknowledged"
            );
        }
        srv.stop();
    }
}

/// A store of format version 2 (before hash tags) is converted when it
/// opens: its keys read back, and the store is version 4 after; a
/// version 3 store is upgraded to 4 as it is.
#[test]
fn a_version_2_store_is_converted_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("key{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    srv.stop();
    let data = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("data"))
        });
    let Some(data) = data else {
        eprintln!("skipped: the store is not in a data file here");
        return;
    };
    let set_version = |v: u32| {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data)
            .unwrap();
        let mut sb = vec![0u8; 4096];
        f.read_exact(&mut sb).unwrap();
        sb[8..12].copy_from_slice(&v.to_le_bytes());
        let crc = crc32c::crc32c(&sb[..80]);
        sb[80..84].copy_from_slice(&crc.to_le_bytes());
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&sb).unwrap();
    };
    set_version(2);
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    for i in 0..200 {
        let v: i64 = redis::cmd("GET")
            .arg(format!("key{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, i);
    }
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.contains("format version 2: converting it to version 4"),
        "{log}"
    );
    srv.stop();
    let version = || {
        let mut sb = vec![0u8; 12];
        std::fs::File::open(&data)
            .unwrap()
            .read_exact(&mut sb)
            .unwrap();
        u32::from_le_bytes(sb[8..12].try_into().unwrap())
    };
    assert_eq!(version(), 4);
    // A version 3 store (no values in pieces) opens as it is, its clean
    // index trusted, and is marked version 4.
    set_version(3);
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    let v: i64 = redis::cmd("GET")
        .arg("key7")
        .query(&mut srv.client())
        .unwrap();
    assert_eq!(v, 7);
    let log = srv.log.lock().unwrap().clone();
    assert!(log.contains("was in format version 3"), "{log}");
    srv.stop();
    assert_eq!(version(), 4);
}

/// Two hash tags whose keys lie on the two pollers of a server with two
/// (`common::apart`).
fn tags_on_two_pollers(c: &mut Conn) -> (String, String) {
    let addr = c.s.peer_addr().expect("an address");
    for i in 1..64 {
        let (from, to) = ("{t0}probe".to_string(), format!("{{t{i}}}probe"));
        if common::apart(addr, from.as_bytes(), to.as_bytes()) {
            return ("t0".into(), format!("t{i}"));
        }
    }
    panic!("no two tags on two pollers")
}

/// The value of key `k` (a GET's bulk string), `None` when missing.
fn get(c: &mut Conn, k: &str) -> Option<String> {
    let r = c.call(&["GET", k]);
    if r.starts_with(b"$-1") {
        return None;
    }
    let r = String::from_utf8(r).expect("a string");
    let body = r.split("\r\n").nth(1).expect("a bulk string");
    Some(body.to_string())
}

/// One transaction (EXEC when `exec`, else MSET) setting counter keys
/// `{a}c{w}` and `{b}c{w}` to `i`, and `fill` new values of 1.5 MiB (a
/// segment holds one) on `{b}`'s poller: its reply.
fn counted_txn(
    c: &mut Conn,
    (a, b): (&str, &str),
    w: usize,
    i: u64,
    fill: u64,
    exec: bool,
) -> Vec<u8> {
    let value = "v".repeat(3 << 19);
    let (ka, kb, n) = (
        format!("{{{a}}}c{w}"),
        format!("{{{b}}}c{w}"),
        i.to_string(),
    );
    let fills: Vec<String> = (0..fill)
        .map(|j| format!("{{{b}}}fill{w}-{i}-{j}"))
        .collect();
    let mut args: Vec<&str> = vec!["MSET", &ka, &n, &kb, &n];
    for f in &fills {
        args.extend([f.as_str(), value.as_str()]);
    }
    if !exec {
        return c.call(&args);
    }
    assert_eq!(c.call(&["MULTI"]), b"+OK\r\n");
    for pair in args[1..].chunks(2) {
        assert_eq!(c.call(&["SET", pair[0], pair[1]]), b"+QUEUED\r\n");
    }
    c.call(&["EXEC"])
}

/// A store of 64 MiB (32 segments) filled by transactions across two
/// pollers, each setting a counter's keys on both and adding 1.5 MiB
/// values on one: once it is nearly full, the part with the values is
/// refused for room while the other would fit. EXEC (and MSET) answer
/// the store's OOM error and neither poller's keys change (nor after a
/// restart); with room again, the next one succeeds, as Redis answers it.
#[test]
fn a_transaction_refused_for_room_on_one_poller_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    common::create_store(dir.path(), &["--capacity", "64M"]);
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    let (a, b) = tags_on_two_pollers(&mut c);
    let tags = (a.as_str(), b.as_str());
    let (ka, kb) = (format!("{{{a}}}c0"), format!("{{{b}}}c0"));
    let (mut applied, mut refused, mut in_a_row) = (None, 0, 0);
    let mut refused_fills = Vec::new();
    for i in 0..300u64 {
        let fill = 1 + i % 3;
        let r = counted_txn(&mut c, tags, 0, i, fill, i % 2 == 0);
        let ok: &[u8] = if i % 2 == 0 { b"*" } else { b"+OK\r\n" };
        if r.starts_with(ok) {
            applied = Some(i.to_string());
            in_a_row = 0;
        } else {
            let text = String::from_utf8_lossy(&r).to_string();
            assert!(text.starts_with("-OOM "), "transaction {i}: {text}");
            refused += 1;
            in_a_row += 1;
            refused_fills.push(format!("{{{b}}}fill0-{i}-0"));
        }
        // Both pollers' keys as the last transaction applied left them.
        let (va, vb) = (get(&mut c, &ka), get(&mut c, &kb));
        assert_eq!((&va, &vb), (&applied, &applied), "after transaction {i}");
        if in_a_row == 20 {
            break;
        }
    }
    assert_eq!(in_a_row, 20, "the store never filled: {refused} refused");
    for f in &refused_fills {
        assert_eq!(get(&mut c, f), None, "{f} of a refused transaction");
    }
    drop(c);
    srv.stop();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    assert_eq!(
        (get(&mut c, &ka), get(&mut c, &kb)),
        (applied.clone(), applied)
    );
    for f in &refused_fills {
        assert_eq!(
            get(&mut c, f),
            None,
            "{f} of a refused transaction, restarted"
        );
    }
    // Room again: the values go, and compaction frees their segments.
    let keys = c.call(&["KEYS", &format!("{{{b}}}fill*")]);
    let keys = String::from_utf8(keys).unwrap();
    for k in keys.split("\r\n").filter(|l| l.contains("fill")) {
        assert_eq!(c.call(&["DEL", k]), b":1\r\n");
    }
    let mut last = Vec::new();
    common::wait_for("a transaction with room", || {
        last = counted_txn(&mut c, tags, 0, 1000, 0, true);
        !last.starts_with(b"-OOM")
    });
    assert_eq!(last, b"*2\r\n+OK\r\n+OK\r\n");
    if let Some(redis) = RealRedis::start(&[]) {
        let mut theirs = Conn::connect(redis.addr.as_str());
        assert_eq!(counted_txn(&mut theirs, tags, 0, 1000, 0, true), last);
    }
    assert_eq!(get(&mut c, &ka).as_deref(), Some("1000"));
    assert_eq!(get(&mut c, &kb).as_deref(), Some("1000"));
    srv.stop();
}

/// A transaction refused for room (EXEC answers the store's OOM error)
/// runs none of its connection commands either: its CLIENT SETNAME and
/// CONFIG SET are not applied, those of the transactions that ran are.
#[test]
fn a_transaction_refused_for_room_runs_no_connection_command() {
    let dir = tempfile::tempdir().unwrap();
    common::create_store(dir.path(), &["--capacity", "64M"]);
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    let (a, b) = tags_on_two_pollers(&mut c);
    let value = "v".repeat(3 << 19);
    let mut name = b"$-1\r\n".to_vec();
    let mut samples = String::from_utf8(c.call(&["CONFIG", "GET", "maxmemory-samples"])).unwrap();
    let mut refused = 0;
    for i in 0..300u64 {
        let (n, s) = (format!("n{i}"), (1 + i % 9).to_string());
        let (ka, kb) = (format!("{{{a}}}c"), format!("{{{b}}}fill{i}"));
        c.call(&["MULTI"]);
        c.call(&["CLIENT", "SETNAME", &n]);
        c.call(&["SET", &ka, &n]);
        c.call(&["CONFIG", "SET", "maxmemory-samples", &s]);
        c.call(&["SET", &kb, &value]);
        let r = c.call(&["EXEC"]);
        if r.starts_with(b"*") {
            name = format!("${}\r\n{n}\r\n", n.len()).into_bytes();
            samples = format!("*2\r\n$17\r\nmaxmemory-samples\r\n${}\r\n{s}\r\n", s.len());
        } else {
            let text = String::from_utf8_lossy(&r).to_string();
            assert!(text.starts_with("-OOM "), "transaction {i}: {text}");
            refused += 1;
        }
        assert_eq!(c.call(&["CLIENT", "GETNAME"]), name, "after {i}");
        let now = String::from_utf8(c.call(&["CONFIG", "GET", "maxmemory-samples"])).unwrap();
        assert_eq!(now, samples, "after {i}");
        if refused == 5 {
            break;
        }
    }
    assert_eq!(refused, 5, "the store never filled");
    srv.stop();
}

/// Concurrent transactions across two pollers filling a small store,
/// each setting its counter's keys on both pollers (and adding values on
/// one, each writer on another): each is applied whole or not at all. A
/// reader never sees a counter's keys differ, and afterwards (and after
/// a restart) they agree with the last transaction acknowledged.
#[test]
fn concurrent_transactions_in_a_nearly_full_store_are_all_or_none() {
    let dir = tempfile::tempdir().unwrap();
    common::create_store(dir.path(), &["--capacity", "64M"]);
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let (a, b) = tags_on_two_pollers(&mut Conn::connect(srv.addr));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = srv.addr;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                // Each writer adds its values on another poller.
                let tags = if w == 0 { (&*a, &*b) } else { (&*b, &*a) };
                let (mut applied, mut refused) = (None, 0);
                for i in 0..60u64 {
                    let r = counted_txn(&mut c, tags, w, i, 1 + i % 3, i % 2 == 0);
                    if r.starts_with(b"-OOM ") {
                        refused += 1;
                    } else {
                        assert!(r.starts_with(b"*") || r == b"+OK\r\n", "{r:?}");
                        applied = Some(i.to_string());
                    }
                }
                (applied, refused)
            })
        })
        .collect();
    let reader = {
        let (a, b, stop) = (a.clone(), b.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://{addr}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut seen = 0;
            while !stop.load(Relaxed) {
                for w in 0..2 {
                    let keys = [format!("{{{a}}}c{w}"), format!("{{{b}}}c{w}")];
                    let v: Vec<Option<String>> =
                        redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
                    assert_eq!(v[0], v[1], "a reader saw part of a transaction");
                }
                seen += 1;
            }
            seen
        })
    };
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Relaxed);
    assert!(reader.join().unwrap() > 0);
    let refused: u32 = results.iter().map(|r| r.1).sum();
    assert!(refused > 0, "the store never filled");
    let check = |c: &mut Conn, when: &str| {
        for (w, (applied, _)) in results.iter().enumerate() {
            let va = get(c, &format!("{{{a}}}c{w}"));
            let vb = get(c, &format!("{{{b}}}c{w}"));
            assert_eq!((&va, &vb), (applied, applied), "writer {w}, {when}");
        }
    };
    check(&mut Conn::connect(srv.addr), "served");
    srv.stop();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    check(&mut Conn::connect(srv.addr), "restarted");
    srv.stop();
}

/// INFO's `segments_free`.
fn segments_free(srv: &Server) -> u64 {
    srv.info_field("segments_free")
        .parse()
        .expect("segments_free")
}

/// A transaction across pollers whose part on one poller writes a value
/// larger than a segment (its pieces written first) while the part on the
/// other is refused for room (more than the whole store): EXEC answers
/// OOM, the large value is not there, and its pieces go back (the free
/// segments return to what they were), however often it is tried.
#[test]
fn a_refused_transaction_across_pollers_gives_its_large_pieces_back() {
    let dir = tempfile::tempdir().unwrap();
    common::create_store(dir.path(), &["--capacity", "32M"]);
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    let (a, b) = tags_on_two_pollers(&mut c);
    let (ka, kb, big) = (
        format!("{{{a}}}c"),
        format!("{{{b}}}c"),
        format!("{{{b}}}big"),
    );
    // Both pollers have written: their open segments are taken.
    c.call(&["MULTI"]);
    c.call(&["SET", &ka, "0"]);
    c.call(&["SET", &kb, "0"]);
    assert_eq!(c.call(&["EXEC"]), b"*2\r\n+OK\r\n+OK\r\n");
    let before = segments_free(&srv);
    let (large, fill) = ("L".repeat(6 << 20), "f".repeat(3 << 19));
    for i in 1..=5 {
        let n = i.to_string();
        c.call(&["MULTI"]);
        c.call(&["SET", &ka, &n]);
        c.call(&["SET", &kb, &n]);
        c.call(&["SET", &big, &large]);
        // 25.5 MiB of values on one poller: more than a 32 MiB store
        // gives client writes.
        for j in 0..17 {
            c.call(&["SET", &format!("{{{a}}}f{j}"), &fill]);
        }
        let r = String::from_utf8(c.call(&["EXEC"])).unwrap();
        assert!(r.starts_with("-OOM "), "EXEC {i}: {r}");
        assert_eq!(get(&mut c, &big).map(|v| v.len()), None, "EXEC {i}");
        assert_eq!(get(&mut c, &ka).as_deref(), Some("0"));
        assert_eq!(get(&mut c, &kb).as_deref(), Some("0"));
    }
    common::wait_for("the refused transactions' pieces to be free again", || {
        segments_free(&srv) == before
    });
    srv.stop();
}

/// Which of tags `a` and `b` has its keys on poller 1 of a server whose
/// poller 1 fails every device write (a SET there fails): (that one, the
/// other).
fn tag_on_failing_poller<'a>(c: &mut Conn, a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    let fails = |c: &mut Conn, t: &str| c.call(&["SET", &format!("{{{t}}}probe"), "1"])[0] == b'-';
    match (fails(c, a), fails(c, b)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        other => panic!("one poller's writes fail: {other:?}"),
    }
}

/// A value larger than a segment (stored in pieces).
fn large_value(fill: char) -> String {
    fill.to_string().repeat(3 << 20)
}

/// The keys a transaction across pollers writes on each of tags `a` and
/// `b`'s pollers, and what they hold before it: a counter, a key with an
/// expiry, a key it deletes, a key it creates, a large value it
/// overwrites, a key it gives a large value.
fn undo_keys(a: &str, b: &str) -> Vec<(String, Option<String>)> {
    let mut keys = Vec::new();
    for t in [a, b] {
        let k = |name: &str| format!("{{{t}}}{name}");
        keys.push((k("c"), Some("0".to_string())));
        keys.push((k("ttl"), Some("kept".to_string())));
        keys.push((k("gone"), Some("there".to_string())));
        keys.push((k("new"), None));
        keys.push((k("big"), Some(large_value('b'))));
        keys.push((k("grow"), Some("small".to_string())));
    }
    keys
}

/// Every key of `undo_keys` holds what it held before (and the key with
/// an expiry still has it).
fn unchanged(c: &mut Conn, a: &str, b: &str, when: &str) {
    for (k, want) in undo_keys(a, b) {
        let got = get(c, &k);
        assert!(got == want, "{k} {when}: {:?}", got.map(|v| v.len()));
        if k.ends_with("ttl") {
            let ttl = c.call(&["TTL", &k]);
            assert!(
                ttl.starts_with(b":") && ttl != b":-1\r\n",
                "{k} {when}: TTL {ttl:?}"
            );
        }
    }
}

/// One transaction (EXEC, or MSET when `mset`) writing keys of
/// `undo_keys` on both pollers (the large value only on `good`'s, as one
/// on the failing poller would fail before the commit), the counters
/// to `i`: its reply.
fn undo_txn(c: &mut Conn, (a, b): (&str, &str), good: &str, i: u64, mset: bool) -> Vec<u8> {
    let n = i.to_string();
    if mset {
        let (ca, cb) = (format!("{{{a}}}c"), format!("{{{b}}}c"));
        let (na, nb) = (format!("{{{a}}}new"), format!("{{{b}}}new"));
        return c.call(&["MSET", &ca, &n, &na, "x", &cb, &n, &nb, "x"]);
    }
    assert_eq!(c.call(&["MULTI"]), b"+OK\r\n");
    let grow = large_value('g');
    for t in [a, b] {
        let k = |name: &str| format!("{{{t}}}{name}");
        let mut q = |args: &[&str]| assert_eq!(c.call(args), b"+QUEUED\r\n");
        q(&["SET", &k("c"), &n]);
        q(&["SET", &k("ttl"), "changed"]);
        q(&["DEL", &k("gone")]);
        q(&["SET", &k("new"), "x", "EX", "100"]);
        q(&["SET", &k("big"), "small now"]);
        if t == good {
            q(&["SET", &k("grow"), &grow]);
        }
    }
    c.call(&["EXEC"])
}

/// With two pollers, poller 1's device writes all failing: a transaction
/// across both (EXEC and MSET) answers the I/O error, and the part on
/// poller 0, whose commit is durable, is undone before any client sees
/// it: every key holds what it held before (values read back from the
/// device or a segment buffer, an expiry, a deleted key, a created one, a
/// large value overwritten, a key given a large value), and so after a
/// kill -9 and a restart. A reader's MGET of the two counters never sees
/// them differ meanwhile.
#[test]
fn a_transaction_whose_commit_fails_on_one_poller_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2"]);
    let mut c = Conn::connect(srv.addr);
    let (a, b) = tags_on_two_pollers(&mut c);
    for (k, v) in undo_keys(&a, &b) {
        let Some(v) = v else { continue };
        let ex: &[&str] = if k.ends_with("ttl") {
            &["EX", "1000"]
        } else {
            &[]
        };
        assert_eq!(c.call(&[&["SET", &k, &v][..], ex].concat()), b"+OK\r\n");
    }
    drop(c);
    srv.stop();
    // Restarted, the values are on the device (not in a segment buffer),
    // and every device write of poller 1 fails.
    let args = ["--io-threads", "2", "--tcp-threads", "2"];
    let faulty = [&args[..], &["--inject-faults", "write-eio@1+:1"]].concat();
    let srv = Server::start(dir.path(), &faulty);
    let mut c = Conn::connect(srv.addr);
    let (bad, good) = tag_on_failing_poller(&mut c, &a, &b);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (addr, stop) = (srv.addr, Arc::clone(&stop));
        let keys = [format!("{{{a}}}c"), format!("{{{b}}}c")];
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://{addr}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut seen = 0;
            while !stop.load(Relaxed) {
                let v: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
                assert_eq!(v[0], v[1], "a reader saw part of a transaction");
                assert_eq!(
                    v[0].as_deref(),
                    Some("0"),
                    "a reader saw a failed transaction"
                );
                seen += 1;
            }
            seen
        })
    };
    for i in 1..=20u64 {
        let r = undo_txn(&mut c, (&a, &b), good, i, i % 2 == 0);
        let text = String::from_utf8_lossy(&r).to_string();
        assert!(
            text.starts_with("-ERR I/O error"),
            "transaction {i}: {text} (failing poller's tag {bad})"
        );
        unchanged(&mut c, &a, &b, &format!("after transaction {i}"));
    }
    stop.store(true, Relaxed);
    assert!(reader.join().unwrap() > 0);
    drop(c);
    srv.kill();
    let srv = Server::start(dir.path(), &args);
    let mut c = Conn::connect(srv.addr);
    unchanged(&mut c, &a, &b, "after a kill -9 and a restart");
    drop(c);
    srv.stop();
}

/// SCAN, KEYS, RANDOMKEY, DBSIZE, FLUSHDB, FLUSHALL and BGSAVE inside
/// MULTI … EXEC are queued and run at EXEC, seeing the transaction's own
/// earlier writes, with Redis's replies byte for byte: with one poller
/// and two, in RESP2 and RESP3 (SCAN's cursors are nvkv's own with
/// several pollers: compared with one only).
#[test]
fn key_space_commands_inside_exec_reply_as_redis() {
    for pollers in ["1", "2"] {
        for proto in ["2", "3"] {
            let dir = tempfile::tempdir().unwrap();
            let srv = Server::start(dir.path(), &["--io-threads", pollers]);
            let Some(redis) = RealRedis::start(&[]) else {
                return;
            };
            let mut both = pair(&srv, &redis);
            // HELLO's reply names each server's version and ids.
            both.ours.call(&["HELLO", proto]);
            both.theirs.call(&["HELLO", proto]);
            let mut script: Vec<&[&str]> = vec![
                // A flush touches the watched keys it empties, and those
                // changed since WATCH, not one that stayed absent.
                &["WATCH", "z"],
                &["SET", "z", "1"],
                &["FLUSHDB"],
                &["MULTI"],
                &["PING"],
                &["EXEC"],
                &["SET", "z", "1"],
                &["WATCH", "z"],
                &["MULTI"],
                &["FLUSHALL"],
                &["EXEC"],
                &["WATCH", "z"],
                &["FLUSHDB"],
                &["MULTI"],
                &["PING"],
                &["EXEC"],
                // The issue's example.
                &["MULTI"],
                &["SET", "a", "1"],
                &["DEL", "b"],
                &["DBSIZE"],
                &["KEYS", "*"],
                &["FLUSHDB"],
                &["DBSIZE"],
                &["SET", "c", "1"],
                &["EXEC"],
                &["GET", "a"],
                &["GET", "c"],
                &["DBSIZE"],
                &["KEYS", "*"],
                // Keys stored before, deleted, created, expiring.
                &["SET", "p", "1"],
                &["SET", "q", "2"],
                &["MULTI"],
                &["DBSIZE"],
                &["DEL", "p"],
                &["DBSIZE"],
                &["KEYS", "p"],
                &["KEYS", "q"],
                &["SET", "r", "3", "PX", "100000"],
                &["DBSIZE"],
                &["KEYS", "r*"],
                &["KEYS", "nomatch*"],
                &["SET", "p", "again"],
                &["KEYS", "p"],
                &["DEL", "c", "q", "r"],
                &["RANDOMKEY"],
                &["DBSIZE"],
                &["EXEC"],
                &["DBSIZE"],
                &["RANDOMKEY"],
                // FLUSHALL, then reads and writes after it in the same EXEC.
                &["MULTI"],
                &["SET", "x", "1"],
                &["FLUSHALL", "SYNC"],
                &["GET", "p"],
                &["GET", "x"],
                &["EXISTS", "p", "x"],
                &["KEYS", "*"],
                &["DBSIZE"],
                &["RANDOMKEY"],
                &["INCR", "p"],
                &["RANDOMKEY"],
                &["DBSIZE"],
                &["FLUSHDB", "ASYNC"],
                &["FLUSHDB", "NOSUCHMODE"],
                &["SET", "y", "2"],
                &["BGSAVE"],
                &["EXEC"],
                &["GET", "p"],
                &["GET", "y"],
                &["DBSIZE"],
                &["KEYS", "*"],
                // A transaction of key-space commands only.
                &["MULTI"],
                &["KEYS", "*"],
                &["DBSIZE"],
                &["RANDOMKEY"],
                &["FLUSHALL"],
                &["RANDOMKEY"],
                &["EXEC"],
                &["DBSIZE"],
                // Arity errors while queued still abort.
                &["MULTI"],
                &["KEYS"],
                &["DBSIZE"],
                &["EXEC"],
                // WATCH: a changed key makes EXEC nil, nothing flushed.
                &["SET", "w", "1"],
                &["WATCH", "w"],
                &["MULTI"],
                &["FLUSHDB"],
            ];
            if pollers == "1" {
                script.extend_from_slice(&[
                    &["SET", "w", "0"],
                    &["EXEC"],
                    &["DBSIZE"],
                    &["MULTI"],
                    &["SET", "s", "1"],
                    &["DEL", "w"],
                    &["SCAN", "0", "COUNT", "1000"],
                    &["SCAN", "0", "MATCH", "w*"],
                    &["SCAN", "0", "TYPE", "hash"],
                    &["FLUSHDB"],
                    &["SCAN", "0"],
                    &["SET", "t", "2"],
                    &["SCAN", "0", "MATCH", "t"],
                    &["EXEC"],
                ]);
            } else {
                script.extend_from_slice(&[&["DISCARD"], &["UNWATCH"]]);
            }
            for cmd in &script {
                both.check_str(cmd);
            }
            // Inside the EXEC of the WATCH above, another client changed w.
            if pollers != "1" {
                let mut other = pair(&srv, &redis);
                other.ours.call(&["HELLO", proto]);
                other.theirs.call(&["HELLO", proto]);
                both.script(&[&["WATCH", "w"], &["MULTI"], &["FLUSHDB"]]);
                other.check_str(&["SET", "w", "2"]);
                both.script(&[&["EXEC"], &["DBSIZE"], &["GET", "w"]]);
            }
        }
    }
}

/// Key `i`'s value of transaction `n` in the transactions below.
fn spread_pairs(n: u64) -> Vec<(String, String)> {
    SPREAD
        .iter()
        .map(|k| (format!("{{{k}}}k"), n.to_string()))
        .collect()
}

/// A transaction of FLUSHDB and SETs of keys on every poller is seen
/// whole by every other client, while another client's transactions set
/// the same keys: KEYS, DBSIZE and MGET never find the store empty or
/// part of the keys set, and a transaction of KEYS and DBSIZE agrees
/// with itself; with one poller and two.
#[test]
fn no_client_sees_part_of_a_transaction_with_a_flush() {
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers, "--tcp-threads", "2"]);
        let url = srv.url();
        let con = |url: &str| redis::Client::open(url).unwrap().get_connection().unwrap();
        let keys: Vec<String> = spread_pairs(0).into_iter().map(|(k, _)| k).collect();
        let flush_and_set = |c: &mut redis::Connection, n: u64| {
            let mut p = redis::pipe();
            p.atomic().cmd("FLUSHDB").ignore();
            for (k, v) in spread_pairs(n) {
                p.set(k, v).ignore();
            }
            let _: () = p.query(c).unwrap();
        };
        flush_and_set(&mut con(&url), 0);
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (mut c, stop, keys) = (con(&url), Arc::clone(&stop), keys.clone());
                std::thread::spawn(move || {
                    let mut seen = 0;
                    while !stop.load(Relaxed) {
                        if r == 0 {
                            let mut found: Vec<String> =
                                redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
                            found.sort();
                            let mut want = keys.clone();
                            want.sort();
                            assert_eq!(found, want, "KEYS saw part of a transaction");
                            let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
                            assert_eq!(n, keys.len() as u64, "DBSIZE saw part of one");
                        } else {
                            let vals: Vec<Option<String>> =
                                redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
                            assert!(
                                vals[0].is_some() && vals.iter().all(|v| *v == vals[0]),
                                "MGET saw part of a transaction: {vals:?}"
                            );
                            let (found, n): (Vec<String>, u64) = redis::pipe()
                                .atomic()
                                .cmd("KEYS")
                                .arg("*")
                                .cmd("DBSIZE")
                                .query(&mut c)
                                .unwrap();
                            assert_eq!(found.len() as u64, n, "{found:?}");
                            assert_eq!(n, keys.len() as u64);
                        }
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        // Beside it, transactions of the same keys without a flush.
        let plain = {
            let mut c = con(&url);
            std::thread::spawn(move || {
                for n in 1..=300 {
                    let mut p = redis::pipe();
                    p.atomic();
                    for (k, _) in spread_pairs(n) {
                        p.set(k, format!("m{n}")).ignore();
                    }
                    let _: () = p.query(&mut c).unwrap();
                }
            })
        };
        let mut w = con(&url);
        for n in 1..=300 {
            flush_and_set(&mut w, n);
        }
        plain.join().unwrap();
        stop.store(true, Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0, "a reader never ran");
        }
        let vals: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut w).unwrap();
        assert!(
            vals.iter().all(|v| *v == vals[0]) && ["300", "m300"].contains(&&*vals[0]),
            "{vals:?}"
        );
    }
}

/// After a kill -9, every key of the last acknowledged EXEC holding
/// FLUSHDB and SETs is there, and nothing the flush removed: the flush
/// marks and the writes are durable together. With one poller and two,
/// sync and async durability.
#[test]
fn an_acknowledged_exec_with_a_flush_survives_kill_9() {
    for extra in [&["--io-threads", "1"], &["--io-threads", "2"]] {
        for durability in ["sync", "async"] {
            let dir = tempfile::tempdir().unwrap();
            let mut args = vec!["--durability", durability];
            args.extend_from_slice(extra);
            let srv = Server::start(dir.path(), &args);
            let acked = Arc::new(AtomicU64::new(0));
            let url = srv.url();
            let writer = {
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || {
                    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                    let start = Instant::now();
                    for n in 1..u64::MAX {
                        let mut p = redis::pipe();
                        p.atomic().cmd("FLUSHDB").ignore();
                        for (k, v) in spread_pairs(n) {
                            p.set(k, v).ignore();
                        }
                        p.set(format!("n:{n}"), n).ignore();
                        let r: redis::RedisResult<()> = p.query(&mut con);
                        if r.is_err() || start.elapsed() > Duration::from_secs(20) {
                            return; // the server is gone
                        }
                        acked.store(n, Relaxed);
                    }
                })
            };
            common::wait_for("transactions acknowledged", || acked.load(Relaxed) >= 100);
            srv.kill();
            writer.join().unwrap();
            let last = acked.load(Relaxed);
            let srv = Server::start(dir.path(), &args);
            let mut con = srv.client();
            let keys: Vec<String> = spread_pairs(0).into_iter().map(|(k, _)| k).collect();
            let vals: Vec<u64> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
            let mut found: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
            found.sort();
            let n = vals[0];
            if extra[1] == "1" {
                assert!(
                    n >= last && vals.iter().all(|v| *v == n),
                    "{extra:?} {durability}: {vals:?} after {last} acknowledged"
                );
                let mut want = keys.clone();
                want.push(format!("n:{n}"));
                want.sort();
                assert_eq!(found, want, "{extra:?} {durability}");
            } else {
                // Across pollers, the next transaction, cut by the kill
                // before its reply, may be there on one poller and not
                // on the other (README: a crash before the reply can
                // keep one poller's part); the acknowledged one is whole.
                assert!(
                    vals.iter().all(|v| (last..=last + 1).contains(v)),
                    "{extra:?} {durability}: {vals:?} after {last} acknowledged"
                );
                let markers = [format!("n:{last}"), format!("n:{}", last + 1)];
                let mut rest = found.clone();
                rest.retain(|k| !markers.contains(k));
                let mut want = keys.clone();
                want.sort();
                assert_eq!(rest, want, "{extra:?} {durability}: {found:?}");
            }
            srv.stop();
        }
    }
}

/// RANDOMKEY inside EXEC after the transaction deleted a key answers one
/// of the keys left, never the deleted one and never nil, as Redis does
/// (one poller and two): a pick the transaction deleted is picked again.
#[test]
fn randomkey_inside_exec_never_answers_a_key_the_transaction_deleted() {
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let mut con = srv.client();
        let keys: Vec<String> = (0..20).map(|i| format!("{{rk}}k{i}")).collect();
        for k in &keys {
            let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut con).unwrap();
        }
        for round in 0..40 {
            let gone = &keys[round % keys.len()];
            let (pick,): (Option<String>,) = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(gone)
                .ignore()
                .cmd("RANDOMKEY")
                .cmd("SET")
                .arg(gone)
                .arg("v")
                .ignore()
                .query(&mut con)
                .unwrap();
            let pick = pick.expect("RANDOMKEY answered nil with 19 keys left");
            assert!(pick != *gone && keys.contains(&pick), "{pollers}: {pick}");
        }
        srv.stop();
    }
}

/// A watched key whose record compaction moves meanwhile has not
/// changed: EXEC runs, as Redis's does (before, the move counted as a
/// change and EXEC answered nil). The watched key is left alone in its
/// segment (the values written after it deleted), then WATCHed, then the
/// store is filled until compaction runs: it takes the emptiest segment
/// first, the watched key's.
#[test]
fn a_watched_key_moved_by_compaction_has_not_changed() {
    if common::on_spdk("a_watched_key_moved_by_compaction_has_not_changed") {
        return;
    }
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let args = ["--capacity", "32M", "--shards", "1", "--partitions", "16"];
    common::create_store(&dir, &args);
    let srv = Server::start(&dir, &["--durability", "async"]);
    let value = |tag: &str, i: usize| format!("{tag}:{i}:{}", "v".repeat(3000));
    // SETs (or DELs: `set` false) of `tag{i}` for i in 0..n, ten to a
    // pipeline.
    let write = |con: &mut redis::Connection, n: usize, tag: &str, set: bool| {
        for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
            let mut p = redis::pipe();
            for &i in chunk {
                match set {
                    true => p.set(format!("{tag}{i}"), value(tag, i)).ignore(),
                    false => p.del(format!("{tag}{i}")).ignore(),
                };
            }
            let _: () = p.query(con).unwrap();
        }
    };
    let mut outcomes = Vec::new();
    for (mut watcher, mut writer) in [
        (srv.client(), srv.client()),
        (redis.client(), redis.client()),
    ] {
        let _: () = redis::cmd("SET")
            .arg("w")
            .arg("watched")
            .query(&mut writer)
            .unwrap();
        write(&mut writer, 1500, "d", true);
        write(&mut writer, 1500, "d", false);
        let _: () = redis::cmd("WATCH").arg("w").query(&mut watcher).unwrap();
        // 18 MB in a store of 15 segments of 2 MB: free segments run low.
        write(&mut writer, 6000, "s", true);
        let exec: Option<(String,)> = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg("w")
            .query(&mut watcher)
            .unwrap();
        outcomes.push(exec);
    }
    let compactions: u64 = srv.info_field("compactions").parse().unwrap();
    assert!(compactions > 0, "compaction never ran");
    let want = Some(("watched".to_string(),));
    assert_eq!(
        outcomes,
        [want.clone(), want],
        "nvkv's EXEC, then redis-server's"
    );
    srv.stop();
}

/// INFO inside MULTI … EXEC reports what the commands queued before it
/// did, as Redis's: after two SETs, two keys in its keyspace section,
/// and after a GET, the hit (before, it ran at once, before the pollers
/// ran the transaction's commands, and reported none of them); an INFO
/// before any command of keys reports the store as it was. The
/// keyspace lines and hit counts are compared with redis-server's.
#[test]
fn info_inside_exec_reports_the_commands_before_it() {
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    for pollers in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let srv = Server::start(dir.path(), &["--io-threads", pollers]);
        let mut both = pair(&srv, &redis);
        // The lines of INFO's reply (inside EXEC's array) that name keys
        // and hits.
        let lines = |r: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(r)
                .split("\r\n")
                .filter(|l| l.starts_with("db0:") || l.starts_with("keyspace_hits:"))
                .map(str::to_string)
                .collect()
        };
        both.check_str(&["FLUSHALL"]);
        both.check_str(&["CONFIG", "RESETSTAT"]);
        let script: &[&[&str]] = &[
            &["MULTI"],
            &["INFO", "keyspace"],
            &["SET", "a", "1"],
            &["SET", "b", "2"],
            &["GET", "a"],
            &["INFO", "keyspace", "stats"],
            &["EXEC"],
        ];
        let mut got = Vec::new();
        for c in [&mut both.ours, &mut both.theirs] {
            let mut last = Vec::new();
            for cmd in script {
                last = c.call(cmd);
            }
            got.push(last);
        }
        let (ours, theirs) = (&got[0], &got[1]);
        assert_eq!(lines(ours), lines(theirs), "{pollers} poller(s)");
        assert!(
            lines(theirs).contains(&"db0:keys=2,expires=0,avg_ttl=0".to_string()),
            "{:?}",
            lines(theirs)
        );
        srv.stop();
    }
}
