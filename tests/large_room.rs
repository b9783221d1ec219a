//! A SET of a value larger than a segment that finds too few free
//! segments waits for eviction or compaction to make room, as small
//! writes do (issue 17, point 5).

mod common;

use std::time::Duration;

use common::large::stat;
use common::Server;
use redis::Commands;

#[test]
fn a_large_set_waits_for_eviction_to_make_room() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--capacity", "128M", "--maxmemory-policy", "allkeys-lru"],
    );
    let mut c = srv.client();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // Small keys fill the store past its capacity: it evicts.
    let small = vec![b's'; 8 << 10];
    for batch in 0..200 {
        let mut p = redis::pipe();
        for i in 0..100 {
            p.set(format!("k{batch}:{i}"), &small).ignore();
        }
        let _: () = p.query(&mut c).unwrap();
    }
    assert!(
        stat(&srv, "evicted_keys") > 0,
        "the small keys evicted none"
    );
    // The access clock ticks in seconds, as Redis's: a second on, the
    // large value is more recent than every small key, taken first.
    std::thread::sleep(Duration::from_millis(1100));
    // Pieces (2 MiB segments less a 4 KiB header block) for more
    // segments than are free: the SET cannot take them at once.
    let free = stat(&srv, "segments_free") as usize;
    let len = (free + 2) * ((2 << 20) - 4096);
    let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    // The store is over its live limit with it: once the small keys are
    // gone, eviction may take it in turn; else it reads back whole.
    let got: Option<Vec<u8>> = c.get("big").unwrap();
    assert!(got.is_none_or(|v| v == big), "the large value differs");
    assert!(stat(&srv, "writes_deferred") > 0);
    // Larger than the store: refused at once, with the store-full error.
    let e = c.set::<_, _, ()>("huge", vec![0u8; 160 << 20]).unwrap_err();
    assert!(e.to_string().starts_with("OOM"), "{e}");
    // The store stays over its limit: "big" may have been evicted since.
    let got: Option<Vec<u8>> = c.get("big").unwrap();
    assert!(got.is_none_or(|v| v == big), "the large value differs");
    srv.stop();
}
