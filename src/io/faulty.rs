//! An engine wrapper that injects device faults, for tests: the server's
//! hidden `--inject-faults SPEC` flag turns it on.
//!
//! SPEC is a comma-separated list of `KIND@N` (the N-th operation of that
//! type fails) or `KIND@N+` (that one and every later one), with KIND one
//! of `read-eio`, `write-eio`, `short-write`, `flush-eio`, or
//! `alloc-fail` (the N-th buffer allocation fails, as when SPDK's DMA
//! memory runs out), or `read-late` (the N-th read completes, whole, but
//! [`LATE`] after the device's completion: a slow device, for the races
//! of reads with writes), or `write-lost` (the N-th write never reaches
//! the device and never completes: a write still queued in the kernel
//! when the process died, which a kill -9 drops while later ones land).
//! Counting is per poller, from 1. A rule ending in
//! `:P` (`write-eio@3+:1`) applies to poller P alone.

use std::io;
use std::time::Duration;

use super::{Completion, Engine, IoBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ReadEio,
    WriteEio,
    ShortWrite,
    FlushEio,
    AllocFail,
    ReadLate,
    WriteLost,
}

/// How long a `read-late` read's completion is held.
pub const LATE: Duration = Duration::from_millis(40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    kind: Kind,
    at: u64,
    sticky: bool,
    /// The poller it applies to (`None`: every one).
    poller: Option<usize>,
}

/// Parsed `--inject-faults`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultSpec(Vec<Rule>);

impl std::str::FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let rules = s
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| {
                let (r, poller) = match r.split_once(':') {
                    Some((r, p)) => {
                        let p = p.parse().map_err(|_| format!("{p:?}: not a poller"))?;
                        (r, Some(p))
                    }
                    None => (r, None),
                };
                let (kind, at) = r
                    .split_once('@')
                    .ok_or_else(|| format!("{r:?}: expected KIND@N"))?;
                let kind = match kind {
                    "read-eio" => Kind::ReadEio,
                    "write-eio" => Kind::WriteEio,
                    "short-write" => Kind::ShortWrite,
                    "flush-eio" => Kind::FlushEio,
                    "alloc-fail" => Kind::AllocFail,
                    "read-late" => Kind::ReadLate,
                    "write-lost" => Kind::WriteLost,
                    _ => return Err(format!("{kind:?}: unknown fault kind")),
                };
                let (at, sticky) = match at.strip_suffix('+') {
                    Some(n) => (n, true),
                    None => (at, false),
                };
                let at = at.parse().map_err(|_| format!("{at:?}: not a count"))?;
                Ok(Rule {
                    kind,
                    at,
                    sticky,
                    poller,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(FaultSpec(rules))
    }
}

impl FaultSpec {
    /// The rules that apply to poller `id`.
    pub fn for_poller(&self, id: usize) -> FaultSpec {
        let rules = self.0.iter().filter(|r| r.poller.is_none_or(|p| p == id));
        FaultSpec(rules.copied().collect())
    }

    fn hits(&self, kind: Kind, n: u64) -> bool {
        self.0
            .iter()
            .any(|r| r.kind == kind && (n == r.at || (r.sticky && n >= r.at)))
    }

    fn hit_any(&self, kinds: &[Kind], n: u64) -> Option<Kind> {
        kinds.iter().copied().find(|&k| self.hits(k, n))
    }
}

/// Wraps an engine and fails the operations the spec names.
pub struct Faulty<E> {
    inner: E,
    spec: FaultSpec,
    reads: u64,
    writes: u64,
    flushes: u64,
    allocs: u64,
    injected: Vec<Completion>,
    /// Injected faults not yet counted by a submit: each counts as one
    /// operation submitted, once.
    uncounted: usize,
    /// Tags of `read-late` reads at the device, and the completions held,
    /// with when each is handed over.
    late: std::collections::HashSet<u64>,
    held: Vec<(std::time::Instant, Completion)>,
    /// Buffers of `write-lost` writes: never written, never completed.
    lost: Vec<IoBuf>,
}

impl<E> Faulty<E> {
    pub fn new(inner: E, spec: FaultSpec) -> Self {
        Faulty {
            inner,
            spec,
            reads: 0,
            writes: 0,
            flushes: 0,
            allocs: 0,
            injected: Vec::new(),
            uncounted: 0,
            late: Default::default(),
            held: Vec::new(),
            lost: Vec::new(),
        }
    }

    fn fail(&mut self, tag: u64, buf: Option<IoBuf>, result: io::Result<usize>) {
        self.injected.push(Completion { tag, result, buf });
        self.uncounted += 1;
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl<E: Engine> Engine for Faulty<E> {
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn alloc(&mut self, len: usize) -> io::Result<IoBuf> {
        self.allocs += 1;
        if self.spec.hits(Kind::AllocFail, self.allocs) {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("injected fault: no memory for a buffer of {len} bytes"),
            ));
        }
        self.inner.alloc(len)
    }
    fn read(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.reads += 1;
        if self.spec.hits(Kind::ReadEio, self.reads) {
            self.fail(tag, Some(buf), Err(eio()));
            return Ok(());
        }
        if self.spec.hits(Kind::ReadLate, self.reads) {
            self.late.insert(tag);
        }
        self.inner.read(off, buf, tag)
    }
    fn write(&mut self, off: u64, buf: IoBuf, tag: u64) -> Result<(), IoBuf> {
        self.writes += 1;
        if self.spec.hits(Kind::WriteLost, self.writes) {
            self.lost.push(buf);
            self.uncounted += 1;
            return Ok(());
        }
        match self
            .spec
            .hit_any(&[Kind::WriteEio, Kind::ShortWrite], self.writes)
        {
            Some(Kind::WriteEio) => self.fail(tag, Some(buf), Err(eio())),
            Some(_) => {
                let half = buf.len() / 2;
                self.fail(tag, Some(buf), Ok(half));
            }
            None => return self.inner.write(off, buf, tag),
        }
        Ok(())
    }
    fn flush(&mut self, tag: u64) -> bool {
        self.flushes += 1;
        if self.spec.hits(Kind::FlushEio, self.flushes) {
            self.fail(tag, None, Err(eio()));
            return true;
        }
        self.inner.flush(tag)
    }
    fn submit(&mut self) -> io::Result<usize> {
        Ok(self.inner.submit()? + std::mem::take(&mut self.uncounted))
    }
    /// Injected faults are counted by `submit` and `submit_each`.
    fn submit_one(&mut self) -> io::Result<bool> {
        self.inner.submit_one()
    }
    fn submit_each(&mut self) -> io::Result<usize> {
        Ok(self.inner.submit_each()? + std::mem::take(&mut self.uncounted))
    }
    fn reap(&mut self, out: &mut Vec<Completion>) {
        let first = out.len();
        self.inner.reap(out);
        if !self.late.is_empty() {
            let due = std::time::Instant::now() + LATE;
            let mut i = first;
            while i < out.len() {
                if self.late.remove(&out[i].tag) {
                    self.held.push((due, out.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        if !self.held.is_empty() {
            let now = std::time::Instant::now();
            let mut i = 0;
            while i < self.held.len() {
                if self.held[i].0 <= now {
                    out.push(self.held.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        }
        out.append(&mut self.injected);
    }
    fn wait(&mut self, timeout: Duration) {
        if !self.injected.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let next = self
            .held
            .iter()
            .map(|h| h.0.saturating_duration_since(now))
            .min();
        self.inner.wait(next.map_or(timeout, |n| n.min(timeout)))
    }
    fn queued(&self) -> usize {
        self.inner.queued()
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight() + self.injected.len() + self.held.len() + self.lost.len()
    }

    /// Completions held back or injected come out of `reap` alone.
    fn completes_by_polling(&self) -> bool {
        self.inner.completes_by_polling() || !self.held.is_empty() || !self.injected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: FaultSpec = "write-eio@3,read-eio@2+".parse().unwrap();
        assert!(s.hits(Kind::WriteEio, 3) && !s.hits(Kind::WriteEio, 4));
        assert!(s.hits(Kind::ReadEio, 2) && s.hits(Kind::ReadEio, 9) && !s.hits(Kind::ReadEio, 1));
        let s: FaultSpec = "alloc-fail@2".parse().unwrap();
        assert!(s.hits(Kind::AllocFail, 2) && !s.hits(Kind::AllocFail, 3));
        assert!("bogus@1".parse::<FaultSpec>().is_err());
        assert!("write-eio".parse::<FaultSpec>().is_err());
        let s: FaultSpec = "write-eio@2+:1,flush-eio@1".parse().unwrap();
        let (p0, p1) = (s.for_poller(0), s.for_poller(1));
        assert!(!p0.hits(Kind::WriteEio, 2) && p0.hits(Kind::FlushEio, 1));
        assert!(p1.hits(Kind::WriteEio, 5) && p1.hits(Kind::FlushEio, 1));
        assert!("write-eio@1:x".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn an_injected_fault_counts_as_submitted_once_in_every_feed_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::io::Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
        let wake = crate::io::EventFd::new().unwrap();
        let eng = crate::io::open_engine(crate::io::EngineKind::Uring, &dev, 8, &wake).unwrap();
        let mut e = Faulty::new(eng, "read-eio@1+".parse().unwrap());
        let mut out = Vec::new();
        // `stream`: one submit per turn, and perhaps another before reap.
        let b = e.alloc(4096).unwrap();
        e.read(0, b, 1).unwrap();
        assert_eq!(e.submit().unwrap(), 1);
        assert_eq!(e.submit().unwrap(), 0, "counted once");
        e.reap(&mut out);
        assert_eq!(out.len(), 1);
        // `waves`: each operation on its own.
        let b = e.alloc(4096).unwrap();
        e.read(0, b, 2).unwrap();
        assert_eq!(e.submit_each().unwrap(), 1);
        assert_eq!(e.submit_each().unwrap(), 0, "counted once");
        e.reap(&mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|c| c.result.is_err()));
    }

    #[test]
    fn an_injected_alloc_failure_fails_that_allocation_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dev = crate::io::Device::open(&dir.path().join("dev"), Some(1 << 20)).unwrap();
        let wake = crate::io::EventFd::new().unwrap();
        let eng = crate::io::open_engine(crate::io::EngineKind::Aio, &dev, 8, &wake).unwrap();
        let mut e = Faulty::new(eng, "alloc-fail@2".parse().unwrap());
        assert!(e.alloc(4096).is_ok());
        let err = e.alloc(4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.alloc(4096).is_ok());
    }
}
