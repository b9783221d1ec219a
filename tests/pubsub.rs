//! Pub/sub: messages between connections on different connection
//! threads, through the `redis` crate, redis-cli and raw RESP2 / RESP3,
//! compared byte for byte with a real redis-server; a subscriber that
//! never reads is disconnected without holding the publisher up.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{encode, wait_for, RealRedis, Server};

/// A raw connection that sends scripts and reads what comes back.
struct Raw(TcpStream);

const MARKER: &str = "end-of-script";

impl Raw {
    fn connect(addr: impl std::net::ToSocketAddrs) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }

    /// Sends the commands, then `PING end-of-script` (allowed in every
    /// mode), and returns every byte up to the PING's reply.
    fn script(&mut self, cmds: &[&[&str]]) -> String {
        let mut req = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
            req.extend(encode(&args));
        }
        req.extend(encode(&[b"PING", MARKER.as_bytes()]));
        self.0.write_all(&req).unwrap();
        self.until(&format!("{MARKER}\r\n"))
    }

    /// Reads until the bytes end with `tail`; returns them without it.
    fn until(&mut self, tail: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(tail.as_bytes()) {
            let n = self.0.read(&mut buf).expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got.truncate(got.len() - tail.len());
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// What a script gets from nvkv and from Redis (`None` without Redis).
fn both(srv: &Server, redis: &Option<RealRedis>, setup: &[&[&str]], cmds: &[&[&str]]) {
    let run = |addr: &str| {
        let mut c = Raw::connect(addr);
        if !setup.is_empty() {
            c.script(setup);
        }
        c.script(cmds)
    };
    let ours = run(&srv.addr.to_string());
    if let Some(r) = redis {
        assert_eq!(ours, run(&r.addr), "{cmds:?}");
    }
}

#[test]
fn replies_and_errors_match_redis_in_resp2_and_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let redis = RealRedis::start(&[]);
    let resp3: &[&[&str]] = &[&["HELLO", "3"]];
    for setup in [&[][..], resp3] {
        both(
            &srv,
            &redis,
            setup,
            &[
                &["UNSUBSCRIBE"],
                &["PUNSUBSCRIBE"],
                &["SUBSCRIBE", "a", "b", "a"],
                &["PING"],
                &["PING", "x"],
                &["GET", "k"],
                &["CONFIG", "GET", "maxmemory"],
                &["PSUBSCRIBE", "p*", "q?"],
                &["UNSUBSCRIBE", "a", "zz"],
                &["PUNSUBSCRIBE", "q?"],
                &["SUBSCRIBE"],
                &["PING", "a", "b"],
                &["UNSUBSCRIBE"],
                &["PUNSUBSCRIBE"],
                &["PING"],
                &["GET", "k"],
            ],
        );
        both(
            &srv,
            &redis,
            setup,
            &[
                &["PUBSUB"],
                &["PUBSUB", "HELP"],
                &["PUBSUB", "help", "x"],
                &["PUBSUB", "FOO"],
                &["PUBSUB", "NUMSUB"],
                &["PUBSUB", "NUMSUB", "nobody", "here"],
                &["PUBSUB", "NUMPAT"],
                &["PUBSUB", "NUMPAT", "x"],
                &["PUBSUB", "CHANNELS"],
                &["PUBSUB", "CHANNELS", "*"],
                &["PUBSUB", "CHANNELS", "a", "b"],
                &["PUBLISH", "nobody"],
                &["PUBLISH", "nobody", "hello"],
                &["SUBSCRIBE", "one"],
                // To itself: the message comes before the reply (RESP3).
                &["PUBLISH", "one", "me"],
                &["RESET"],
                &["PUBSUB", "NUMSUB", "one"],
            ],
        );
    }
}

/// The bytes a subscriber receives for `publish`ed messages, with its
/// subscriptions made in `subscribe` (RESP3 if `resp3`).
fn received(addr: &str, resp3: bool, subscribe: &[&[&str]], publish: &[(&str, &str)]) -> String {
    let mut sub = Raw::connect(addr);
    if resp3 {
        sub.script(&[&["HELLO", "3"]]);
    }
    sub.script(subscribe);
    let mut publisher = Raw::connect(addr);
    for (ch, msg) in publish {
        publisher.script(&[&["PUBLISH", ch, msg]]);
    }
    // The messages come before the reply to a PING sent after them.
    sub.script(&[])
}

#[test]
fn messages_match_redis_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    let Some(redis) = RealRedis::start(&[]) else {
        return;
    };
    let subscribe: &[&[&str]] = &[&["SUBSCRIBE", "news", "sport"], &["PSUBSCRIBE", "n*"]];
    let publish = [
        ("news", "first"),
        ("sport", ""),
        ("nothing", "x"),
        ("nope", "\r\nbinary\0"),
        ("weather", "unheard"),
    ];
    for resp3 in [false, true] {
        let ours = received(&srv.addr.to_string(), resp3, subscribe, &publish);
        assert_eq!(ours, received(&redis.addr, resp3, subscribe, &publish));
        assert!(ours.contains("pmessage"), "{ours}");
    }
}

#[test]
fn publisher_and_subscribers_on_different_connection_threads() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    // Connections are dealt to the threads in turn: four subscribers are
    // on both threads, so some are on the other thread from the publisher.
    let client = redis::Client::open(srv.url()).unwrap();
    let mut conns: Vec<redis::Connection> =
        (0..4).map(|_| client.get_connection().unwrap()).collect();
    conns
        .iter()
        .for_each(|c| c.set_read_timeout(Some(Duration::from_secs(10))).unwrap());
    // (A `PubSub` unsubscribes when dropped: they live to the end.)
    let mut subs: Vec<redis::PubSub> = conns.iter_mut().map(|c| c.as_pubsub()).collect();
    for (i, ps) in subs.iter_mut().enumerate() {
        if i % 2 == 0 {
            ps.subscribe("events").unwrap();
        } else {
            ps.psubscribe("ev*").unwrap();
        }
    }
    let mut publisher = srv.client();
    let n: i64 = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("events")
        .query::<(String, i64)>(&mut publisher)
        .unwrap()
        .1;
    assert_eq!(n, 2);
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(numpat, 1);
    assert_eq!(srv.info_field("pubsub_channels"), "1");
    assert_eq!(srv.info_field("pubsub_patterns"), "1");
    for i in 0..200 {
        let got: i64 = redis::cmd("PUBLISH")
            .arg("events")
            .arg(format!("m{i}"))
            .query(&mut publisher)
            .unwrap();
        assert_eq!(got, 4, "every subscriber counted");
    }
    for (i, ps) in subs.iter_mut().enumerate() {
        for want in 0..200 {
            let m = ps.get_message().unwrap();
            assert_eq!(m.get_channel_name(), "events");
            assert_eq!(m.get_payload::<String>().unwrap(), format!("m{want}"));
            if i % 2 == 1 {
                assert_eq!(m.get_pattern::<String>().unwrap(), "ev*");
            }
        }
    }
    // Closing a subscriber takes its subscriptions out.
    drop(subs);
    drop(conns);
    wait_for("subscribers gone", || {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("events")
            .query(&mut publisher)
            .unwrap();
        n == 0
    });
    let got: i64 = redis::cmd("PUBLISH")
        .arg("events")
        .arg("x")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(got, 0);
}

#[test]
fn redis_cli_publishes_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut sub = Raw::connect(srv.addr);
    sub.script(&[&["SUBSCRIBE", "chan"]]);
    let cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &srv.addr.port().to_string()])
            .args(args)
            .output()
    };
    let Ok(out) = cli(&["PUBLISH", "chan", "from cli"]) else {
        eprintln!("skipped: no redis-cli installed");
        return;
    };
    // (No terminal: redis-cli prints the bare reply.)
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");
    let got = sub.script(&[]);
    assert_eq!(
        got,
        "*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$8\r\nfrom cli\r\n*2\r\n$4\r\npong\r\n$13\r\n"
    );
    let out = cli(&["PUBSUB", "CHANNELS"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "chan\n");
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_and_the_publisher_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--max-output-buffer", "1M", "--tcp-threads", "2"],
    );
    // A raw subscriber that never reads again.
    let mut idle = Raw::connect(srv.addr);
    idle.script(&[&["SUBSCRIBE", "flood"]]);
    // And one that reads everything.
    let client = redis::Client::open(srv.url()).unwrap();
    let mut reader = client.get_connection().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut ps = reader.as_pubsub();
    ps.subscribe("flood").unwrap();
    let payload = "p".repeat(64 << 10);
    let mut publisher = srv.client();
    // 32 MiB in all: more than the kernel's socket buffers and the
    // output-buffer limit hold. Every PUBLISH is answered (within the
    // client's 10 s read timeout each): the idle subscriber holds no one up.
    let mut counts = Vec::new();
    for _ in 0..512 {
        let n: i64 = redis::cmd("PUBLISH")
            .arg("flood")
            .arg(&payload)
            .query(&mut publisher)
            .unwrap();
        counts.push(n);
        let m = ps.get_message().unwrap();
        assert_eq!(m.get_payload::<String>().unwrap().len(), payload.len());
    }
    assert_eq!(counts[0], 2);
    assert_eq!(*counts.last().unwrap(), 1, "the idle subscriber is gone");
    assert!(
        srv.info_field("client_output_buffer_limit_disconnections")
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    drop(idle);
}

#[test]
fn subscribers_are_clients_of_type_pubsub() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut sub = Raw::connect(srv.addr);
    sub.script(&[&["CLIENT", "SETNAME", "listener"], &["SUBSCRIBE", "c"]]);
    let mut con = srv.client();
    let list = |con: &mut redis::Connection, t: &str| -> String {
        redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg(t)
            .query(con)
            .unwrap()
    };
    let pubsub = list(&mut con, "pubsub");
    assert_eq!(pubsub.lines().count(), 1, "{pubsub}");
    assert!(
        pubsub.contains("name=listener") && pubsub.contains("flags=P"),
        "{pubsub}"
    );
    assert!(!list(&mut con, "normal").contains("listener"));
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut con)
        .unwrap();
    assert_eq!(killed, 1);
    wait_for("the subscriber gone", || {
        list(&mut con, "pubsub").is_empty()
    });
    // Unsubscribed, a client is a normal one again.
    let mut other = Raw::connect(srv.addr);
    other.script(&[
        &["CLIENT", "SETNAME", "back"],
        &["SUBSCRIBE", "c"],
        &["UNSUBSCRIBE"],
    ]);
    assert!(list(&mut con, "normal").contains("name=back"));
}

#[test]
fn sharded_pub_sub_matches_redis_in_resp2_and_resp3() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--tcp-threads", "2"]);
    let redis = RealRedis::start(&[]);
    let resp3: &[&[&str]] = &[&["HELLO", "3"]];
    for setup in [&[][..], resp3] {
        both(
            &srv,
            &redis,
            setup,
            &[
                &["SUNSUBSCRIBE"],
                &["SSUBSCRIBE"],
                &["SPUBLISH", "s"],
                &["SSUBSCRIBE", "s", "t", "s"],
                // Shard channels count apart from channels and patterns.
                &["SUBSCRIBE", "s"],
                &["PSUBSCRIBE", "*"],
                &["GET", "k"],
                &["PING"],
                &["SUNSUBSCRIBE", "s", "zz"],
                &["UNSUBSCRIBE"],
                &["PUNSUBSCRIBE"],
                // Still in subscribed mode (RESP2): a shard channel is left.
                &["GET", "k"],
                &["SUNSUBSCRIBE"],
                &["SUNSUBSCRIBE"],
                &["GET", "k"],
            ],
        );
        both(
            &srv,
            &redis,
            setup,
            &[
                &["PUBSUB", "SHARDCHANNELS"],
                &["PUBSUB", "SHARDCHANNELS", "a", "b"],
                &["PUBSUB", "SHARDNUMSUB"],
                &["PUBSUB", "SHARDNUMSUB", "nobody"],
                &["SPUBLISH", "nobody", "hello"],
                &["SSUBSCRIBE", "one"],
                // To itself: the message comes before the reply.
                &["SPUBLISH", "one", "me"],
                &["PUBLISH", "one", "not to shard subscribers"],
                &["PUBSUB", "SHARDCHANNELS"],
                &["PUBSUB", "SHARDCHANNELS", "o*"],
                &["PUBSUB", "SHARDCHANNELS", "x*"],
                &["PUBSUB", "SHARDNUMSUB", "one", "two"],
                &["PUBSUB", "NUMSUB", "one"],
                &["PUBSUB", "CHANNELS"],
                &["RESET"],
                &["PUBSUB", "SHARDNUMSUB", "one"],
                &["MULTI"],
                &["SSUBSCRIBE", "m"],
                &["SUBSCRIBE", "m"],
                &["EXEC"],
                &["RESET"],
            ],
        );
    }
    // Messages between connections (on two connection threads), byte for
    // byte.
    let Some(redis) = redis else {
        return;
    };
    for resp3 in [false, true] {
        let got = |addr: &str| {
            let mut sub = Raw::connect(addr);
            if resp3 {
                sub.script(&[&["HELLO", "3"]]);
            }
            sub.script(&[&["SSUBSCRIBE", "news", "sport"], &["PSUBSCRIBE", "*"]]);
            let mut publisher = Raw::connect(addr);
            let counts = publisher.script(&[
                &["SPUBLISH", "news", "first"],
                &["SPUBLISH", "sport", ""],
                &["SPUBLISH", "weather", "unheard"],
                &["PUBLISH", "news", "through the pattern only"],
                &["SPUBLISH", "news", "\r\nbinary\0"],
            ]);
            (counts, sub.script(&[]))
        };
        let ours = got(&srv.addr.to_string());
        assert_eq!(ours, got(&redis.addr));
        assert!(ours.1.contains("smessage"), "{ours:?}");
    }
}
