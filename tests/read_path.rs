//! The read path end to end: load → serve → GET through the `redis` crate.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{dbsize, load, raw, read_all, Server};
use nvkv::keys;
use redis::{Commands, Value};

const KEYS: u64 = 3000;
const SEED: u64 = 11;
const MIN: usize = 100;
const MAX: usize = 5000;

fn loaded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    load(dir.path(), KEYS, MIN, MAX, SEED);
    dir
}

fn check_sample(srv: &Server) {
    let mut con = srv.client();
    for i in (0..KEYS).step_by(7) {
        let got: Option<Vec<u8>> = con.get(keys::key(SEED, i)).unwrap();
        assert_eq!(got, Some(keys::value(SEED, i, MIN, MAX)), "key {i}");
    }
}

#[test]
fn get_returns_loaded_bytes_on_both_engines() {
    let dir = loaded();
    for engine in ["uring", "aio"] {
        let srv = Server::start(dir.path(), &["--engine", engine, "--io-threads", "2"]);
        check_sample(&srv);
        let mut con = srv.client();
        let missing: Option<Vec<u8>> = con.get("no-such-key").unwrap();
        assert_eq!(missing, None);
        assert_eq!(dbsize(&mut con), KEYS);
        let e: u64 = redis::cmd("EXISTS")
            .arg(keys::key(SEED, 1))
            .arg("nope")
            .arg(keys::key(SEED, 2))
            .query(&mut con)
            .unwrap();
        assert_eq!(e, 2);
        srv.stop();
    }
}

#[test]
fn pipelined_mget_and_gets_keep_order() {
    let dir = loaded();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let mut con = srv.client();
    let ids: Vec<u64> = (0..200).map(|i| (i * 37) % KEYS).collect();
    let mut mget = redis::cmd("MGET");
    for &i in &ids {
        mget.arg(keys::key(SEED, i));
    }
    mget.arg("missing");
    let mut pipe = redis::pipe();
    pipe.add_command(mget);
    for &i in ids.iter().rev() {
        pipe.get(keys::key(SEED, i));
    }
    type Values = Vec<Option<Vec<u8>>>;
    let v: Vec<Value> = pipe.query(&mut con).unwrap();
    let all: Values = redis::from_redis_value(&v[0]).unwrap();
    let singles: Values = v[1..]
        .iter()
        .map(|x| redis::from_redis_value(x).unwrap())
        .collect();
    assert_eq!(all.len(), ids.len() + 1);
    assert_eq!(all.last().unwrap(), &None);
    for (k, &i) in ids.iter().enumerate() {
        let want = keys::value(SEED, i, MIN, MAX);
        assert_eq!(all[k].as_deref(), Some(&want[..]));
        assert_eq!(singles[ids.len() - 1 - k].as_deref(), Some(&want[..]));
    }
}

/// Both ways of feeding reads to the device (`--io-feed`) serve exactly the
/// loaded bytes to concurrent pipelining clients, on both kernel engines.
#[test]
fn both_io_feeds_serve_the_loaded_bytes_under_load() {
    let dir = loaded();
    for feed in ["stream", "waves"] {
        for engine in ["uring", "aio"] {
            let srv = Server::start(dir.path(), &["--engine", engine, "--io-feed", feed]);
            assert_eq!(srv.info_field("io_feed"), feed);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let srv = &srv;
                    s.spawn(move || {
                        let mut con = srv.client();
                        for round in 0..25u64 {
                            let ids: Vec<u64> = (0..32u64)
                                .map(|j| (t * 7919 + round * 104_729 + j * 31) % KEYS)
                                .collect();
                            let mut pipe = redis::pipe();
                            for &i in &ids {
                                pipe.get(keys::key(SEED, i));
                            }
                            let got: Vec<Option<Vec<u8>>> = pipe.query(&mut con).unwrap();
                            for (v, &i) in got.iter().zip(&ids) {
                                let want = keys::value(SEED, i, MIN, MAX);
                                assert_eq!(
                                    v.as_deref(),
                                    Some(&want[..]),
                                    "{feed} {engine} key {i}"
                                );
                            }
                        }
                    });
                }
            });
            srv.stop();
        }
    }
}

#[test]
fn clean_restart_maps_the_index_without_reading_data() {
    let dir = loaded();
    let srv = Server::start(dir.path(), &[]);
    check_sample(&srv);
    srv.stop();
    let srv = Server::start(dir.path(), &[]);
    // Before any GET, the process has read next to nothing from storage.
    let read = common::read_bytes(srv.pid());
    assert!(read < 1 << 20, "read {read} bytes at start-up");
    assert_eq!(srv.info_field("index_state_at_start"), "clean");
    assert_eq!(srv.info_field("recovery_bytes_read"), "0");
    check_sample(&srv);
    srv.stop();
}

#[test]
fn crash_then_restart_rebuilds_the_index() {
    let dir = loaded();
    Server::start(dir.path(), &[]).kill();
    let srv = Server::start(dir.path(), &["--engine", "aio"]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    assert_eq!(srv.info_field("recovery_records_scanned"), KEYS.to_string());
    check_sample(&srv);
    assert_eq!(dbsize(&mut srv.client()), KEYS);
    srv.stop();
}

#[test]
fn damaged_index_file_is_rebuilt() {
    let dir = loaded();
    let part = dir.path().join("index/part-0007.idx");
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[20] ^= 0xFF;
    std::fs::write(&part, &bytes).unwrap();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    check_sample(&srv);
    assert!(srv
        .log
        .lock()
        .unwrap()
        .contains("index partition 7 unusable"));
}

#[test]
fn an_index_entry_pointing_off_the_device_makes_the_index_rebuilt() {
    let dir = loaded();
    let part = dir.path().join("index/part-0003.idx");
    let mut bytes = std::fs::read(&part).unwrap();
    // Packed slots (index format version 5) follow the 128-byte header,
    // 16 bytes end the file: the expiry and access word, then the offset /
    // 16 in the header's offset bits (at 100), the length / 16 in 23 bits,
    // the tag's place. The first one used gets the largest offset and
    // length its bytes hold.
    let slots = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let off_bits = u32::from_le_bytes(bytes[100..104].try_into().unwrap()) as usize;
    let size = (bytes.len() - 128 - 16) / slots;
    let slot = (128..bytes.len() - 16)
        .step_by(size)
        .find(|&at| bytes[at + 8..at + size].iter().any(|&b| b != 0))
        .expect("a used slot");
    let whole = (off_bits + 23) / 8;
    bytes[slot + 8..slot + 8 + whole].fill(0xFF);
    std::fs::write(&part, &bytes).unwrap();
    let srv = Server::start(dir.path(), &[]);
    assert_eq!(srv.info_field("index_state_at_start"), "rebuilt");
    check_sample(&srv);
    assert_eq!(dbsize(&mut srv.client()), KEYS);
    assert!(srv
        .log
        .lock()
        .unwrap()
        .contains("index partition 3: an entry points at"));
    srv.stop();
}

#[test]
fn corrupted_record_is_an_error_reply_and_the_server_lives_on() {
    if common::on_spdk("corrupted_record_is_an_error_reply_and_the_server_lives_on") {
        return;
    }
    let dir = loaded();
    // Overwrite bytes inside the first record of the first segment (the
    // segment starts at 1 MiB; its header takes 32 bytes).
    let data = dir.path().join("data.nvkv");
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"XXXXXXXX", (1 << 20) + 32 + 40).unwrap();
    f.sync_all().unwrap();

    let srv = Server::start(dir.path(), &[]);
    let mut con = srv.client();
    let (mut ok, mut corrupt) = (0, 0);
    for i in 0..KEYS {
        match con.get::<_, Option<Vec<u8>>>(keys::key(SEED, i)) {
            Ok(v) => {
                assert_eq!(v, Some(keys::value(SEED, i, MIN, MAX)), "key {i}");
                ok += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("corrupted record"), "{e}");
                corrupt += 1;
            }
        }
    }
    assert_eq!(corrupt, 1, "{corrupt} corrupt records");
    assert_eq!(ok + corrupt, KEYS);
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(srv.info_field("corrupt_records"), corrupt.to_string());
    srv.stop();

    // `nvkv check` finds the damage too, and fails.
    let out = common::run_on(&["check", "--path"], dir.path());
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        report.contains("DAMAGE: record at 1048608: record checksum mismatch"),
        "{report}"
    );
}

#[test]
fn check_passes_a_sound_store() {
    let dir = loaded();
    let out = common::run_on(&["check", "--path"], dir.path());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains(&format!("{KEYS} entries")), "{report}");
    assert!(report.contains("OK: no damage found"), "{report}");
}

#[test]
fn bad_clients_get_errors_and_do_not_disturb_others() {
    let dir = loaded();
    let srv = Server::start(dir.path(), &[]);
    let mut good = srv.client();

    // A bulk length of 2^40: a protocol error, then the connection closes.
    let mut s = raw(&srv);
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1099511627776\r\n")
        .unwrap();
    let reply = read_all(s);
    assert!(reply.starts_with("-ERR Protocol error"), "{reply:?}");

    // Garbage after a valid command: the valid one is answered first.
    let mut s = raw(&srv);
    s.write_all(b"PING\r\n*x\r\n").unwrap();
    let reply = read_all(s);
    assert!(
        reply.starts_with("+PONG\r\n-ERR Protocol error"),
        "{reply:?}"
    );

    // A client that vanishes mid-request.
    let mut s = raw(&srv);
    s.write_all(b"*2\r\n$3\r\nGET\r\n$10\r\nk:11").unwrap();
    drop(s);

    // Unknown commands and wrong arity: errors, the connection stays usable.
    let e = redis::cmd("NOSUCH")
        .arg("a")
        .query::<()>(&mut good)
        .unwrap_err();
    assert!(e.to_string().contains("unknown command 'NOSUCH'"), "{e}");
    let e = redis::cmd("GET").query::<()>(&mut good).unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'get'"),
        "{e}"
    );
    let e = redis::cmd("SELECT")
        .arg(3)
        .query::<()>(&mut good)
        .unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");

    let v: Option<Vec<u8>> = good.get(keys::key(SEED, 5)).unwrap();
    assert_eq!(v, Some(keys::value(SEED, 5, MIN, MAX)));
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut good).unwrap();
    assert_eq!(echo, "hi");
    let ok: String = redis::cmd("SELECT").arg(0).query(&mut good).unwrap();
    assert_eq!(ok, "OK");
    srv.stop();
}

#[test]
fn inline_commands_and_quit() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let mut s = raw(&srv);
    s.write_all(b"PING\r\nECHO hello\r\nQUIT\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_all(s), "+PONG\r\n$5\r\nhello\r\n+OK\r\n");
    srv.stop();
}

#[test]
fn not_a_store_is_a_clear_error() {
    if common::on_spdk("not_a_store_is_a_clear_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.nvkv"), vec![7u8; 1 << 16]).unwrap();
    let out = common::run_on(&["serve", "--listen", "127.0.0.1:0", "--path"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an nvkv store"), "{err}");

    // A truncated device: the superblock promises more than is there.
    let dir = loaded();
    let data = dir.path().join("data.nvkv");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let out = common::run_on(&["serve", "--listen", "127.0.0.1:0", "--path"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated"), "{err}");

    // load refuses to overwrite a store without --force.
    let out = common::run_on(&["load", "--keys", "1", "--path"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn serve_creates_an_empty_store_in_a_new_directory() {
    if common::on_spdk("serve_creates_an_empty_store_in_a_new_directory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh");
    let srv = Server::start(&path, &[]);
    assert_eq!(dbsize(&mut srv.client()), 0);
    let v: Option<Vec<u8>> = srv.client().get("x").unwrap();
    assert_eq!(v, None);
    srv.stop();
    assert!(path.join("data.nvkv").exists());
}

/// Reads one bulk-string reply.
fn read_bulk(r: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let len: usize = line
        .strip_prefix('$')
        .and_then(|l| l.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not a bulk string: {line:?}"));
    let mut v = vec![0; len + 2];
    r.read_exact(&mut v).unwrap();
    assert_eq!(&v[len..], b"\r\n");
    v.truncate(len);
    v
}

#[test]
fn a_pipeline_deeper_than_the_poller_ring_is_answered_in_order_and_others_go_on() {
    const N: u64 = 20_000;
    let dir = loaded();
    // One connection thread and one poller, whose ring (4096 requests)
    // this pipeline overflows.
    let srv = Server::start(
        dir.path(),
        &[
            "--max-pipeline",
            "100000",
            "--tcp-threads",
            "1",
            "--io-threads",
            "1",
        ],
    );
    let ids: Vec<u64> = (0..N).map(|j| (j * 7919) % KEYS).collect();
    let mut requests = Vec::new();
    for &i in &ids {
        requests.extend(common::encode(&[b"GET", &keys::key(SEED, i)]));
    }
    let s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&requests));
    // Another client of the same thread is served meanwhile, and right.
    let mut other = srv.client();
    for i in (0..KEYS).step_by(97) {
        let got: Option<Vec<u8>> = other.get(keys::key(SEED, i)).unwrap();
        assert_eq!(got, Some(keys::value(SEED, i, MIN, MAX)), "key {i}");
    }
    let mut r = std::io::BufReader::new(s);
    for (n, &i) in ids.iter().enumerate() {
        let got = read_bulk(&mut r);
        assert!(
            got == keys::value(SEED, i, MIN, MAX),
            "reply {n} (key {i}): {} bytes, not its value",
            got.len()
        );
    }
    writer.join().unwrap().unwrap();
    let waits: u64 = srv.info_field("ring_full_waits").parse().unwrap();
    assert!(waits > 0, "the ring never filled: the test tests nothing");
    srv.stop();
}
