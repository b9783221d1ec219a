//! Connection and server commands (HELLO and RESP3, CLIENT, COMMAND, INFO,
//! TIME, LASTSAVE, SELECT, inline commands, refused scripting), compared
//! byte for byte with a real redis-server where one is installed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{raw, RealRedis, Server};

/// Reads one whole reply (RESP2 or RESP3) and returns its bytes.
fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    read_one(s, &mut out);
    out
}

fn read_line_into(s: &mut TcpStream, out: &mut Vec<u8>) -> Vec<u8> {
    let start = out.len();
    let mut b = [0u8; 1];
    while !out[start..].ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            other => panic!(
                "reading a reply: {other:?} after {:?}",
                out.escape_ascii().to_string()
            ),
        }
    }
    out[start..out.len() - 2].to_vec()
}

fn read_one(s: &mut TcpStream, out: &mut Vec<u8>) {
    let line = read_line_into(s, out);
    let n = || -> i64 { String::from_utf8_lossy(&line[1..]).parse().unwrap() };
    match line[0] {
        b'$' | b'=' | b'!' if n() >= 0 => {
            let mut body = vec![0; n() as usize + 2];
            s.read_exact(&mut body).unwrap();
            out.extend_from_slice(&body);
        }
        b'*' | b'~' | b'>' => (0..n().max(0)).for_each(|_| read_one(s, out)),
        b'%' | b'|' => (0..2 * n()).for_each(|_| read_one(s, out)),
        _ => {}
    }
}

/// Sends `line` (an inline command or RESP) and reads `replies` replies.
fn exchange(s: &mut TcpStream, line: &[u8], replies: usize) -> Vec<String> {
    s.write_all(line).unwrap();
    (0..replies)
        .map(|_| String::from_utf8_lossy(&read_reply(s)).into_owned())
        .collect()
}

/// A command as RESP.
fn cmd(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    common::encode(&args)
}

/// Sends each command to both servers on fresh connections (RESP3 after
/// `HELLO 3` when `resp3`) and asserts the replies are the same bytes.
fn same_as_redis(srv: &Server, redis: &RealRedis, resp3: bool, commands: &[&[&str]]) {
    let mut ours = raw(srv);
    let mut theirs = TcpStream::connect(&redis.addr).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if resp3 {
        exchange(&mut ours, &cmd(&["HELLO", "3"]), 1);
        exchange(&mut theirs, &cmd(&["HELLO", "3"]), 1);
    }
    for c in commands {
        let a = exchange(&mut ours, &cmd(c), 1);
        let b = exchange(&mut theirs, &cmd(c), 1);
        assert_eq!(a, b, "{c:?} (resp3: {resp3})");
    }
}

#[test]
fn replies_and_errors_are_redis_s() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    // nvkv has one database, as a Redis started with `--databases 1`.
    let Some(redis) = RealRedis::start(&["--databases", "1"]) else {
        return;
    };
    let commands: &[&[&str]] = &[
        &["GET", "missing"],
        &["MGET", "missing", "also-missing"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", "a b"],
        &["CLIENT", "SETNAME", "conn-1"],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "SETNAME", ""],
        &["CLIENT", "GETNAME"],
        &["CLIENT", "NO-EVICT", "maybe"],
        &["CLIENT", "NO-EVICT", "on"],
        &["CLIENT", "NO-EVICT", "off"],
        &["CLIENT", "KILL", "1.2.3.4:5"],
        &["CLIENT", "KILL", "ID", "x"],
        &["CLIENT", "KILL", "ID", "99999"],
        &["CLIENT", "KILL", "ID", "1", "ADDR"],
        &["CLIENT", "KILL", "TYPE", "foo"],
        &["CLIENT", "KILL", "TYPE", "pubsub"],
        &["CLIENT", "KILL", "USER", "x"],
        &["CLIENT", "KILL", "SKIPME", "maybe"],
        &["CLIENT", "KILL"],
        &["CLIENT", "LIST", "ID", "x"],
        &["CLIENT", "LIST", "TYPE", "foo"],
        &["CLIENT", "LIST", "TYPE", "pubsub"],
        &["CLIENT", "LIST", "FOO"],
        &["CLIENT", "ID", "1"],
        &["CLIENT", "NOPE"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["HELLO", "3", "FOO"],
        &["HELLO", "3", "AUTH", "default"],
        &["HELLO", "3", "SETNAME", "a b"],
        &["HELLO", "3", "AUTH", "nobody", "pw"],
        &["COMMAND", "INFO", "get", "nope", "set", "mget"],
        &["COMMAND", "INFO", "client|list"],
        &["COMMAND", "DOCS", "get", "set", "nope", "del", "expire"],
        &["COMMAND", "DOCS", "client|kill"],
        // The string and TTL commands, one at a time and together.
        &["COMMAND", "INFO", "incrbyfloat"],
        &["COMMAND", "DOCS", "incrbyfloat"],
        &["COMMAND", "INFO", "append"],
        &["COMMAND", "DOCS", "append"],
        &["COMMAND", "INFO", "strlen"],
        &["COMMAND", "DOCS", "strlen"],
        &["COMMAND", "INFO", "getrange"],
        &["COMMAND", "DOCS", "getrange"],
        &["COMMAND", "INFO", "substr"],
        &["COMMAND", "DOCS", "substr"],
        &["COMMAND", "INFO", "setrange"],
        &["COMMAND", "DOCS", "setrange"],
        &["COMMAND", "INFO", "getex"],
        &["COMMAND", "DOCS", "getex"],
        &["COMMAND", "INFO", "msetnx"],
        &["COMMAND", "DOCS", "msetnx"],
        &["COMMAND", "INFO", "expireat"],
        &["COMMAND", "DOCS", "expireat"],
        &["COMMAND", "INFO", "pexpireat"],
        &["COMMAND", "DOCS", "pexpireat"],
        &["COMMAND", "INFO", "expiretime"],
        &["COMMAND", "DOCS", "expiretime"],
        &["COMMAND", "INFO", "pexpiretime"],
        &["COMMAND", "DOCS", "pexpiretime"],
        &[
            "COMMAND",
            "INFO",
            "incrbyfloat",
            "append",
            "strlen",
            "getrange",
            "substr",
            "setrange",
            "getex",
            "msetnx",
            "expireat",
            "pexpireat",
            "expiretime",
            "pexpiretime",
        ],
        &[
            "COMMAND",
            "DOCS",
            "incrbyfloat",
            "append",
            "strlen",
            "getrange",
            "substr",
            "setrange",
            "getex",
            "msetnx",
            "expireat",
            "pexpireat",
            "expiretime",
            "pexpiretime",
        ],
        &["COMMAND", "GETKEYS", "mset", "a", "1", "b", "2"],
        &["COMMAND", "GETKEYS", "msetnx", "a", "1", "b", "2"],
        &["COMMAND", "GETKEYS", "getex", "a", "PERSIST"],
        &["COMMAND", "GETKEYS", "get", "a", "b"],
        &["COMMAND", "GETKEYS", "nope", "a"],
        &["COMMAND", "GETKEYS", "ping", "x"],
        &["COMMAND", "GETKEYS", "get"],
        &["COMMAND", "COUNT", "x"],
        &["COMMAND", "FOO"],
        &["COMMAND", "LIST", "FILTERBY", "MODULE", "x"],
        &["COMMAND", "LIST", "FILTERBY", "PATTERN", "mse?"],
        &["COMMAND", "LIST", "FOO"],
        &["SELECT", "0"],
        &["SELECT", "1"],
        &["SELECT", "x"],
        &["SELECT", "00"],
        &["TIME", "1"],
        &["LASTSAVE", "x"],
    ];
    same_as_redis(&srv, &redis, false, commands);
    same_as_redis(&srv, &redis, true, commands);
    srv.stop();
}

#[test]
fn hello_switches_the_protocol_and_nulls_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    let id = exchange(&mut s, &cmd(&["CLIENT", "ID"]), 1).remove(0);
    let id = id.trim_start_matches(':').trim_end();
    // A GET sent before HELLO 3, in the same write, keeps RESP2's nil.
    let mut pipeline = cmd(&["GET", "missing"]);
    pipeline.extend(cmd(&["HELLO", "3", "SETNAME", "h3"]));
    pipeline.extend(cmd(&["GET", "missing"]));
    pipeline.extend(cmd(&["CLIENT", "GETNAME"]));
    let r = exchange(&mut s, &pipeline, 4);
    assert_eq!(r[0], "$-1\r\n");
    let hello = format!(
        "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    );
    assert_eq!(r[1], hello);
    assert_eq!(r[2], "_\r\n");
    assert_eq!(r[3], "$2\r\nh3\r\n");
    // Maps and verbatim strings in RESP3; back to RESP2 with HELLO 2.
    let r = exchange(&mut s, &cmd(&["CONFIG", "GET", "maxmemory-policy"]), 1);
    assert!(
        r[0].starts_with("%1\r\n$16\r\nmaxmemory-policy\r\n"),
        "{r:?}"
    );
    let r = exchange(&mut s, &cmd(&["INFO", "server"]), 1);
    assert!(
        r[0].starts_with('=') && r[0].contains("\r\ntxt:# Server\r\n"),
        "{r:?}"
    );
    let r = exchange(&mut s, &cmd(&["HELLO", "2"]), 1);
    assert!(r[0].starts_with("*14\r\n"), "{r:?}");
    assert_eq!(exchange(&mut s, &cmd(&["GET", "missing"]), 1)[0], "$-1\r\n");

    // The redis crate in RESP3.
    let client = redis::Client::open(format!("redis://{}/?protocol=resp3", srv.addr)).unwrap();
    let mut con = client.get_connection().unwrap();
    let v: redis::Value = redis::cmd("GET").arg("missing").query(&mut con).unwrap();
    assert_eq!(v, redis::Value::Nil);
    let v: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut con)
        .unwrap();
    assert!(matches!(v, redis::Value::Map(_)), "{v:?}");
    srv.stop();
}

#[test]
fn hello_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--requirepass", "sesame"]);
    let mut s = raw(&srv);
    let r = exchange(&mut s, &cmd(&["HELLO", "3"]), 1);
    assert!(r[0].starts_with("-NOAUTH HELLO must be called"), "{r:?}");
    let r = exchange(&mut s, &cmd(&["HELLO", "3", "AUTH", "default", "wrong"]), 1);
    assert!(r[0].starts_with("-WRONGPASS"), "{r:?}");
    let r = exchange(
        &mut s,
        &cmd(&["HELLO", "3", "AUTH", "default", "sesame"]),
        1,
    );
    assert!(r[0].starts_with("%7\r\n"), "{r:?}");
    assert_eq!(exchange(&mut s, &cmd(&["GET", "k"]), 1)[0], "_\r\n");
    srv.stop();
}

/// The `key=value` fields of a CLIENT LIST line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|f| f.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

#[test]
fn client_ids_names_list_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    let mut a = srv.client();
    let mut b = srv.client();
    let id_a: i64 = redis::cmd("CLIENT").arg("ID").query(&mut a).unwrap();
    let id_b: i64 = redis::cmd("CLIENT").arg("ID").query(&mut b).unwrap();
    assert!(id_a > 0 && id_b > 0 && id_a != id_b);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-b")
        .query(&mut b)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("NO-EVICT")
        .arg("ON")
        .query(&mut b)
        .unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut a).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let line_b = lines
        .iter()
        .find(|l| field(l, "id") == id_b.to_string())
        .unwrap();
    assert_eq!(field(line_b, "name"), "worker-b");
    assert_eq!(field(line_b, "flags"), "e");
    assert_eq!(field(line_b, "cmd"), "client|no-evict");
    assert_eq!(field(line_b, "db"), "0");
    assert_eq!(field(line_b, "resp"), "2");
    let line_a = lines
        .iter()
        .find(|l| field(l, "id") == id_a.to_string())
        .unwrap();
    assert_eq!(field(line_a, "cmd"), "client|list");
    assert_eq!(field(line_a, "flags"), "N");
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut b).unwrap();
    assert_eq!(field(&info, "id"), id_b.to_string());
    let only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id_b)
        .query(&mut a)
        .unwrap();
    assert_eq!(only.lines().count(), 1);

    // KILL ID closes the other connection, KILL ADDR another one, the
    // old form answers +OK.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id_b)
        .query(&mut a)
        .unwrap();
    assert_eq!(killed, 1);
    assert!(redis::cmd("PING").query::<String>(&mut b).is_err());
    // Each connection answers once first, so that the server has it.
    let mut c = raw(&srv);
    exchange(&mut c, b"PING\r\n", 1);
    let addr = c.local_addr().unwrap().to_string();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ADDR")
        .arg(&addr)
        .query(&mut a)
        .unwrap();
    assert_eq!(killed, 1);
    let mut rest = Vec::new();
    assert_eq!(c.read_to_end(&mut rest).unwrap(), 0);
    let mut d = raw(&srv);
    exchange(&mut d, b"PING\r\n", 1);
    let addr = d.local_addr().unwrap().to_string();
    let ok: String = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(&addr)
        .query(&mut a)
        .unwrap();
    assert_eq!(ok, "OK");
    assert_eq!(d.read_to_end(&mut rest).unwrap(), 0);
    // SKIPME yes is the default of the new form: the sender stays.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut a)
        .unwrap();
    assert_eq!(killed, 0);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut a).unwrap();
    assert_eq!(list.lines().count(), 1, "{list}");
    srv.stop();
}

#[test]
fn command_docs_info_list_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    let list: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut con).unwrap();
    let top = list.iter().filter(|n| !n.contains('|')).count();
    assert_eq!(top as i64, count);
    for name in ["get", "set", "hello", "client|list", "command|docs"] {
        assert!(list.iter().any(|n| n == name), "{name} not in {list:?}");
    }
    let all: Vec<redis::Value> = redis::cmd("COMMAND").query(&mut con).unwrap();
    assert_eq!(all.len() as i64, count);
    // Every command has documentation, with a summary.
    let mut s = raw(&srv);
    for name in list.iter().filter(|n| !n.contains('|')) {
        let r = exchange(&mut s, &cmd(&["COMMAND", "DOCS", name]), 1).remove(0);
        assert!(r.contains("$7\r\nsummary\r\n"), "{name}: {r}");
    }
    let acl: Vec<String> = redis::cmd("COMMAND")
        .arg("LIST")
        .arg("FILTERBY")
        .arg("ACLCAT")
        .arg("connection")
        .query(&mut con)
        .unwrap();
    assert!(acl.contains(&"hello".to_string()) && !acl.contains(&"get".to_string()));
    srv.stop();
}

#[test]
fn info_sections_as_redis() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let info = |con: &mut redis::Connection, args: &[&str]| -> String {
        let mut c = redis::cmd("INFO");
        for a in args {
            c.arg(*a);
        }
        c.query(con).unwrap()
    };
    let headers = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("# "))
            .map(String::from)
            .collect()
    };
    let two = info(&mut con, &["server", "clients"]);
    assert_eq!(headers(&two), ["# Server", "# Clients"]);
    // Redis's order whatever the order asked, each section once.
    let two = info(&mut con, &["CLIENTS", "server", "clients"]);
    assert_eq!(headers(&two), ["# Server", "# Clients"]);
    assert!(two.contains("\r\n\r\n# Clients\r\n") && !two.ends_with("\r\n\r\n"));
    let plain = info(&mut con, &[]);
    assert_eq!(headers(&plain), headers(&info(&mut con, &["default"])));
    // Plain INFO has Redis's sections in Redis's order (and nvkv's own
    // last).
    if let Some(redis) = common::RealRedis::start(&[]) {
        let theirs = info(&mut redis.client(), &[]);
        let mut ours = headers(&plain);
        assert_eq!(ours.pop().as_deref(), Some("# Nvkv"));
        assert_eq!(ours, headers(&theirs));
        let cluster = info(&mut con, &["cluster"]);
        assert_eq!(cluster, info(&mut redis.client(), &["cluster"]));
    }
    assert!(!plain.contains("# Commandstats"));
    for all in ["all", "everything"] {
        let h = headers(&info(&mut con, &[all]));
        assert!(h.contains(&"# Commandstats".to_string()), "{all}: {h:?}");
        assert!(h.contains(&"# Keyspace".to_string()), "{all}: {h:?}");
        assert!(!h.contains(&"# Segments".to_string()), "{all}: {h:?}");
    }
    assert_eq!(info(&mut con, &["nope"]), "");
    srv.stop();
}

#[test]
fn inline_commands_are_split_as_redis_splits_them() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let lines: &[&[u8]] = &[
        b"SET \"a b\" 'c d'\r\n",
        b"GET \"a b\"\r\n",
        b"SET k \"\\x41\\n\\\"q\\\"\"\r\n",
        b"GET k\r\n",
        b"SET it 'it\\'s'\r\n",
        b"GET it\r\n",
        b"ECHO a\"b c\"\r\n",
    ];
    let mut ours = raw(&srv);
    let mut got = Vec::new();
    for l in lines {
        got.extend(exchange(&mut ours, l, 1));
    }
    assert_eq!(got[1], "$3\r\nc d\r\n");
    assert_eq!(got[3], "$5\r\nA\n\"q\"\r\n");
    assert_eq!(got[5], "$4\r\nit's\r\n");
    // A quote may open inside a word.
    assert_eq!(got[6], "$4\r\nab c\r\n");
    let v: String = redis::cmd("GET")
        .arg("a b")
        .query(&mut srv.client())
        .unwrap();
    assert_eq!(v, "c d");
    let bad = exchange(&mut ours, b"SET \"a b\r\n", 1);
    assert_eq!(
        bad[0],
        "-ERR Protocol error: unbalanced quotes in request\r\n"
    );
    if let Some(redis) = RealRedis::start(&[]) {
        let mut theirs = TcpStream::connect(&redis.addr).unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut want = Vec::new();
        for l in lines {
            want.extend(exchange(&mut theirs, l, 1));
        }
        assert_eq!(got, want);
        assert_eq!(exchange(&mut theirs, b"SET \"a b\r\n", 1), bad);
    }
    srv.stop();
}

#[test]
fn time_lastsave_and_refused_scripting() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (secs, usecs): (String, String) = redis::cmd("TIME").query(&mut con).unwrap();
    let secs: u64 = secs.parse().unwrap();
    let usecs: u64 = usecs.parse().unwrap();
    assert!(secs.abs_diff(now) <= 2 && usecs < 1_000_000);
    let last: u64 = redis::cmd("LASTSAVE").query(&mut con).unwrap();
    let up: u64 = srv.info_field("uptime_in_seconds").parse().unwrap();
    assert!(
        last <= secs && last.abs_diff(now - up) <= 2,
        "{last} {now} {up}"
    );
    for c in [
        &["EVAL", "return 1", "0"][..],
        &["EVALSHA", "abc", "0"],
        &["FUNCTION", "LIST"],
        &["SCRIPT", "LOAD", "x"],
    ] {
        let mut q = redis::cmd(c[0]);
        c[1..].iter().for_each(|a| {
            q.arg(*a);
        });
        let e = q.query::<redis::Value>(&mut con).unwrap_err();
        assert!(
            e.to_string().contains("scripting is not supported by nvkv"),
            "{c:?}: {e}"
        );
    }
    srv.stop();
}

#[test]
fn redis_cli_in_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let run = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &srv.addr.port().to_string(),
                "-3",
                "--no-raw",
            ])
            .args(args)
            .output()
    };
    let Ok(out) = run(&["GET", "missing"]) else {
        eprintln!("skipped: no redis-cli installed");
        return;
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), "(nil)\n");
    let out = run(&["CONFIG", "GET", "maxmemory-policy"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("1# \"maxmemory-policy\" => "), "{text}");
    srv.stop();
}
