use std::time::{Duration, Instant};

use super::*;

fn round_trip(kind: EngineKind) {
    round_trip_on(|dev, wake| open_engine(kind, dev, 8, wake).unwrap());
}

fn round_trip_on<E: Engine>(open: impl FnOnce(&Device, &EventFd) -> E) {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
    let wake = EventFd::new().unwrap();
    let mut e = open(&dev, &wake);
    assert_eq!(e.block_size(), 4096);
    assert_eq!(e.capacity(), 1 << 20);

    // Two writes and a flush in one batch.
    for (i, fill) in [(0u64, 0xAAu8), (1, 0xBB)] {
        let mut b = e.alloc(8192).unwrap();
        b.fill(fill);
        e.write(i * 8192, b, i).unwrap();
    }
    assert!(e.flush(99));
    assert_eq!(e.submit().unwrap(), 3);
    let done = reap_all(&mut e, 3);
    assert!(done.iter().all(|c| c.result.is_ok()), "{done:?}");

    let b = e.alloc(4096).unwrap();
    e.read(8192 + 4096, b, 7).unwrap();
    e.submit().unwrap();
    let mut done = reap_all(&mut e, 1);
    let c = done.pop().unwrap();
    assert_eq!((c.tag, c.result.as_ref().unwrap()), (7, &4096));
    assert!(c.buf.as_ref().unwrap().iter().all(|&x| x == 0xBB));

    // A misaligned O_DIRECT read fails with EINVAL, reported in its completion.
    let b = e.alloc(100).unwrap();
    e.read(1, b, 8).unwrap();
    e.submit().unwrap();
    let c = reap_all(&mut e, 1).pop().unwrap();
    assert!(c.result.is_err());

    // The depth limit hands buffers back instead of queueing.
    for t in 0..8 {
        let b = e.alloc(4096).unwrap();
        e.read(0, b, t).unwrap();
    }
    let extra = e.alloc(4096).unwrap();
    assert!(e.read(0, extra, 9).is_err());
    e.submit().unwrap();
    reap_all(&mut e, 8);

    // wait() returns when another thread rings the eventfd: its timeout
    // is an hour, so returning at all is the check (no assertion on how
    // long it took, which a loaded machine could break).
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            wake.notify();
        });
        e.wait(Duration::from_secs(3600));
    });
}

fn reap_all<E: Engine>(e: &mut E, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(Instant::now() < deadline, "completions did not arrive");
        e.reap(&mut out);
        if out.len() < n {
            e.wait(Duration::from_millis(10));
        }
    }
    out
}

#[test]
fn uring_round_trip() {
    round_trip(EngineKind::Uring);
}

#[test]
fn aio_round_trip() {
    round_trip(EngineKind::Aio);
}

#[test]
fn uring_round_trip_without_registered_buffers_or_file() {
    round_trip_on(|dev, wake| {
        let mut e = Uring::open(dev, 8, wake, false).unwrap();
        // Plain buffers (READ and WRITE), pooled all the same.
        let b = e.alloc(4096).unwrap();
        assert_eq!(b.pool_index(), None);
        let p = b.as_ptr();
        drop(b);
        assert_eq!(
            e.alloc(4096).unwrap().as_ptr(),
            p,
            "the buffer came from the pool"
        );
        e
    });
}

#[test]
fn uring_registered_buffers_go_back_to_their_pool_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
    let wake = EventFd::new().unwrap();
    let mut e = Uring::new(&dev, 4, &wake).unwrap();
    let b = e.alloc(4096).unwrap();
    let Some(index) = b.pool_index() else {
        eprintln!("skipped: the kernel refused to register buffers (RLIMIT_MEMLOCK?)");
        return;
    };
    let all: Vec<IoBuf> = (0..3).map(|_| e.alloc(4096).unwrap()).collect();
    assert!(all.iter().all(|b| b.pool_index().is_some()));
    // The pool is empty: a plain buffer, freed when dropped.
    assert_eq!(e.alloc(4096).unwrap().pool_index(), None);
    drop(all);
    // Dropped on another thread, a registered buffer still goes home.
    std::thread::spawn(move || drop(b)).join().unwrap();
    assert_eq!(e.alloc(4096).unwrap().pool_index(), Some(index));
}

/// io_submit refuses a control block with a negative offset (EINVAL), and
/// takes only those before it: the refused read fails alone, the others
/// complete, wherever it stands in the batch.
#[test]
fn aio_a_refused_iocb_fails_alone_and_the_rest_of_the_batch_completes() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
    let wake = EventFd::new().unwrap();
    let mut e = open_engine(EngineKind::Aio, &dev, 8, &wake).unwrap();
    const BAD: u64 = 1 << 63;
    for batch in [[0, BAD, 4096], [BAD, 0, 4096], [0, 4096, BAD]] {
        for (tag, off) in batch.into_iter().enumerate() {
            let b = e.alloc(4096).unwrap();
            e.read(off, b, tag as u64).unwrap();
        }
        assert_eq!(e.submit().unwrap(), 2, "{batch:?}");
        assert_eq!(e.queued(), 0);
        let mut done = reap_all(&mut e, 3);
        done.sort_by_key(|c| c.tag);
        for (c, off) in done.iter().zip(batch) {
            match off {
                BAD => {
                    let err = c.result.as_ref().unwrap_err();
                    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{batch:?}");
                }
                _ => assert_eq!(c.result.as_ref().unwrap(), &4096, "{batch:?}: {c:?}"),
            }
            assert!(c.buf.is_some());
        }
        drop(done); // the buffers go back to the pool
        assert_eq!(e.in_flight(), 0);
    }
}
