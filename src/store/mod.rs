//! A store on disk: the device (superblock + segments) and the index
//! directory, opened once at start-up and then split into shards that the
//! pollers own.
//!
//! ```text
//! DIR/data.nvkv        the device: a file, or a symlink to a block device
//! DIR/data.nvme        or instead: the SPDK transport ID and namespace
//! DIR/index/part-*.idx the index partitions (mmapped)
//! DIR/nvkv.lock        flock'd by the one process that has the store open
//! ```

mod check;
pub mod clock;
pub mod evict;
pub mod keyspace;
mod load;
pub mod model;
mod pack;
mod recover;
mod shard;
mod space;
pub mod zero;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::format::{
    FlushMark, FormatError, Superblock, FORMAT_VERSION, SUPERBLOCK_SIZE, UPGRADABLE_VERSION,
};
use crate::index::{Checkpoint, IndexError, Owner, Partition};
use crate::io::{Device, DeviceSpec, EnvOptions, IoBuf};

pub use check::{check, CheckReport};
pub use load::{load, parse_size, CreateArgs, LoadArgs, LoadSummary};
pub use shard::{mark_dirty, shard_of, Lookup, Shard};
pub use space::{save_table, LargeMap, Space, NO_SHARD};

/// Creates an empty store in `dir`; `env` starts SPDK should
/// `args.device` be an NVMe namespace.
pub fn create_empty(dir: &Path, args: &CreateArgs, env: &EnvOptions) -> Result<(), StoreError> {
    let mut st = load::create(dir, args, env, 0, 0)?;
    // A store `serve` creates is zeroed before it serves: its first
    // writes (a replica's full copy, say) would otherwise race the
    // background zeroing for the disk. `nvkv load` leaves it to the
    // server, so that the load runs at the disk's pace.
    st.zero_now = true;
    let max_seq = vec![0; st.sb.shards as usize];
    load::finish(&mut st, &max_seq, 0)
}

/// Name of the device (or the symlink to it) inside the store directory.
pub const DATA_FILE: &str = "data.nvkv";
/// Name of the file naming the NVMe namespace of a store on SPDK.
pub const NVME_FILE: &str = "data.nvme";

/// Where the data of the store in `dir` lives, if it has any.
pub fn device_spec(dir: &Path) -> Result<Option<DeviceSpec>, StoreError> {
    let nvme = dir.join(NVME_FILE);
    if nvme.exists() {
        let text = std::fs::read_to_string(&nvme).map_err(io_at(&nvme))?;
        let bad = |why: String| StoreError::Invalid(format!("{}: {why}", nvme.display()));
        let t: toml::Table = text.parse().map_err(|e| bad(format!("{e}")))?;
        let trid = t.get("trid").and_then(|v| v.as_str());
        let nsid = t.get("nsid").and_then(|v| v.as_integer());
        return match (trid, nsid) {
            (Some(trid), Some(nsid)) if nsid > 0 && nsid <= u32::MAX as i64 => {
                Ok(Some(DeviceSpec::Nvme {
                    trid: trid.to_owned(),
                    nsid: nsid as u32,
                }))
            }
            _ => Err(bad("needs `trid = \"…\"` and `nsid = N`".into())),
        };
    }
    let data = dir.join(DATA_FILE);
    Ok(std::fs::symlink_metadata(&data)
        .is_ok()
        .then_some(DeviceSpec::Path(data)))
}

/// Where the data of the store in `dir` lives; an error if it is no store.
pub(crate) fn store_device(dir: &Path) -> Result<DeviceSpec, StoreError> {
    device_spec(dir)?.ok_or_else(|| {
        StoreError::Invalid(format!(
            "{}: not an nvkv store (no {DATA_FILE} or {NVME_FILE}); create one with `nvkv load`, or give `nvkv serve --path` a new or empty directory",
            dir.display()
        ))
    })
}

/// Opens the device `spec` names, for the store's own errors; for an NVMe
/// namespace, `env` starts the SPDK environment first (once per process).
pub(crate) fn open_device(spec: &DeviceSpec, env: &EnvOptions) -> Result<Device, StoreError> {
    env.start_for(spec)
        .and_then(|()| Device::open_spec(spec, None))
        .map_err(|e| StoreError::Io(PathBuf::from(spec.to_string()), e))
}
const LOCK_FILE: &str = "nvkv.lock";

/// Errors opening or creating a store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: {1}")]
    Format(PathBuf, FormatError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0}: the store is in use by another process")]
    Locked(PathBuf),
    #[error("{0}: a store already exists here (use --force to overwrite it)")]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.to_owned(), e)
}

/// Holds the store directory's lock until dropped.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] File);

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked(dir.to_owned()));
        }
        Ok(DirLock(f))
    }
}

/// How the index came to be at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexState {
    /// Mapped as left by a clean shutdown: no data was read.
    Clean,
    /// Rebuilt by scanning the device.
    Rebuilt,
}

/// What start-up found and did; reported in the log and in INFO.
#[derive(Debug, Clone, Copy)]
pub struct OpenReport {
    pub state: IndexState,
    pub keys: u64,
    pub segments_scanned: u64,
    pub bytes_scanned: u64,
    pub records_scanned: u64,
    /// Segments the scan found with a valid header but nothing live, whose
    /// headers were then erased (see [`erase_dead_headers`]).
    pub segments_erased: u64,
    pub secs: f64,
}

/// An open store, before it is split among pollers.
#[derive(Debug)]
pub struct Store {
    pub dir: PathBuf,
    pub sb: Superblock,
    pub dev: Device,
    pub shards: Vec<Shard>,
    pub report: OpenReport,
    pub max_gen: u64,
    /// Sequence number for the next record (above every record on the device).
    pub next_seq: u64,
    pub space: Space,
    /// Held as long as the store is open.
    pub lock: DirLock,
}

/// Reads and checks the superblock of the device.
pub fn read_superblock(dev: &Device) -> Result<Superblock, StoreError> {
    match read_superblock_versioned(dev)? {
        (sb, FORMAT_VERSION) => Ok(sb),
        (_, v) => Err(StoreError::Format(
            dev.path().to_owned(),
            FormatError::Version(v),
        )),
    }
}

/// Reads and checks the superblock of the device, of this format version
/// or of the one `Store::open` converts; returns it with its version.
fn read_superblock_versioned(dev: &Device) -> Result<(Superblock, u32), StoreError> {
    if dev.capacity() < SUPERBLOCK_SIZE as u64 {
        return Err(StoreError::Format(
            dev.path().to_owned(),
            FormatError::NotAStore,
        ));
    }
    let mut b = IoBuf::new(SUPERBLOCK_SIZE);
    dev.read_at(&mut b, 0).map_err(io_at(dev.path()))?;
    let (sb, version) = Superblock::decode_versioned(&b)
        .map_err(|e| StoreError::Format(dev.path().to_owned(), e))?;
    if sb.block_size < dev.block_size() || sb.capacity > dev.capacity() {
        return Err(StoreError::Invalid(format!(
            "{}: the superblock describes {} bytes in {}-byte blocks but the device has {} bytes in {}-byte blocks (truncated?)",
            dev.path().display(),
            sb.capacity,
            sb.block_size,
            dev.capacity(),
            dev.block_size()
        )));
    }
    Ok((sb, version))
}

/// Writes `sb` at offset 0 in this build's format version, durably.
fn write_superblock(dev: &Device, sb: &Superblock) -> io::Result<()> {
    dev.sync()?;
    let mut b = IoBuf::new(SUPERBLOCK_SIZE);
    b.copy_from_slice(&sb.encode());
    dev.write_at(&b, 0)?;
    dev.sync()
}

impl Store {
    /// Opens the store in `dir`: maps a cleanly closed index, or rebuilds it
    /// by scanning the device. `env` starts SPDK for a store on an NVMe
    /// namespace.
    pub fn open(dir: &Path, env: &EnvOptions) -> Result<Self, StoreError> {
        let t0 = Instant::now();
        let spec = store_device(dir)?;
        let lock = DirLock::acquire(dir)?;
        let dev = open_device(&spec, env)?;
        let (sb, version) = read_superblock_versioned(&dev)?;
        let upgrading = version == UPGRADABLE_VERSION;
        let converting = version != FORMAT_VERSION && !upgrading;

        let mut flushed = read_flush_marks(&dev, &sb)?;
        // The heads of large values: saved at the clean shutdown (a store
        // of version 3 has none); without them, only a scan finds them.
        // Read first, so that the tables' check counts the heads their
        // entries point at; its generation is checked against theirs below.
        let saved_large = (!upgrading)
            .then(|| space::read_large_table(dir, &sb))
            .flatten();
        let no_large = LargeMap::new();
        let heads = saved_large.as_ref().map_or(&no_large, |(_, m)| m);
        let (parts, checkpoints, damage, walked) = open_partitions(dir, &sb, heads)?;
        let mut clean = checkpoints.iter().all(Option::is_some);
        if converting {
            // The records stay as they are; the index is rebuilt by the
            // new placement rule.
            tracing::warn!(
                "the store is in format version {version}: converting it to version \
                 {FORMAT_VERSION} (keys with a hash tag {{…}} are placed by their tag); \
                 the index is rebuilt from the device"
            );
            clean = false;
        }
        if let (true, Some(why)) = (clean, damage) {
            tracing::warn!("{why}; the index will be rebuilt");
            clean = false;
        }
        let mut large = LargeMap::new();
        if clean && !upgrading {
            let max_gen = checkpoints.iter().flatten().map(|c| c.max_gen).max();
            match saved_large.filter(|(gen, _)| *gen == max_gen.unwrap_or(0)) {
                Some((_, map)) => large = map,
                None => {
                    tracing::warn!(
                        "the table of large values (large.tbl) is missing, damaged or \
                         older than the index; the index will be rebuilt"
                    );
                    clean = false;
                }
            }
        }
        let (shards, mut report, max_gen, min_seq, scanned) = if clean {
            let max_gen = checkpoints
                .iter()
                .flatten()
                .map(|c| c.max_gen)
                .max()
                .unwrap_or(0);
            let shards = shard::split(&sb, parts, &checkpoints);
            let keys = shards.iter().map(Shard::live_keys).sum();
            let report = OpenReport {
                state: IndexState::Clean,
                keys,
                segments_scanned: 0,
                bytes_scanned: 0,
                records_scanned: 0,
                segments_erased: 0,
                secs: t0.elapsed().as_secs_f64(),
            };
            let min_seq = space::load_table(dir, &sb);
            (shards, report, max_gen, min_seq, Vec::new())
        } else {
            let below: Vec<u64> = flushed.iter().map(|m| m.below).collect();
            let r = recover::rebuild(&dev, &sb, parts, &below, t0)?;
            if converting {
                if r.misplaced > 0 {
                    return Err(StoreError::Invalid(format!(
                        "{}: the store is in format version {version}, and {} of its records \
                         hold keys with a hash tag ({{…}}) that version {FORMAT_VERSION} places \
                         in another shard: it cannot be converted in place. Reload it \
                         (export its keys with a build of format version {version}, then \
                         nvkv load --force and write them again)",
                        dir.display(),
                        r.misplaced
                    )));
                }
                write_superblock(&dev, &sb).map_err(io_at(dev.path()))?;
                tracing::info!("the store is now in format version {FORMAT_VERSION}");
            }
            large = r.large;
            // A flush found by its flushing segment alone (a crash before
            // its mark was written): the mark is written now, before dead
            // headers are erased, so that no erasure can outlive it.
            for (shard, &below) in r.flushed_below.iter().enumerate() {
                let mark = &mut flushed[shard];
                if below > mark.below {
                    *mark = FlushMark {
                        epoch: mark.epoch + 1,
                        below,
                    };
                    write_flush_mark(&dev, &sb, shard as u32, mark).map_err(io_at(dev.path()))?;
                    tracing::info!(
                        shard,
                        below,
                        "a flush found by its flushing segment: its mark written"
                    );
                }
            }
            (r.shards, r.report, r.max_gen, Some(r.min_seq), r.scanned)
        };
        if upgrading {
            write_superblock(&dev, &sb).map_err(io_at(dev.path()))?;
            tracing::info!(
                "the store was in format version {version}: it is now in version \
                 {FORMAT_VERSION} (values larger than a segment)"
            );
        }
        let mut shards = shards;
        for s in &mut shards {
            s.flushed = flushed[s.id as usize];
            // Records written after a flush must sort above it.
            s.next_seq = s.next_seq.max(s.flushed.below);
        }
        // A clean start counted the entries as it checked them.
        let space = match (report.state, walked) {
            (IndexState::Clean, Some(walked)) => {
                Space::from_walked(&sb, walked, max_gen, min_seq, large)
            }
            _ => Space::from_index(&sb, &shards, max_gen, min_seq, large),
        };
        report.segments_erased = erase_dead_headers(&dev, &sb, &space, &scanned)?;
        let next_seq = shards.iter().map(|s| s.next_seq).max().unwrap_or(1);
        Ok(Store {
            dir: dir.to_owned(),
            sb,
            dev,
            shards,
            report,
            max_gen,
            next_seq,
            space,
            lock,
        })
    }
}

/// Writes `shard`'s flush mark `mark` to its slot, durably.
fn write_flush_mark(dev: &Device, sb: &Superblock, shard: u32, mark: &FlushMark) -> io::Result<()> {
    let at = FlushMark::offset(sb, shard, mark.slot())
        .ok_or_else(|| io::Error::other("no room for the flush mark"))?;
    let mut b = IoBuf::new(sb.block_size as usize);
    mark.encode(&sb.uuid, shard, &mut b);
    dev.write_at(&b, at)?;
    dev.sync()
}

/// Every shard's flush mark (FLUSHDB): the valid one of the higher epoch
/// of its two slots, or none.
fn read_flush_marks(dev: &Device, sb: &Superblock) -> Result<Vec<FlushMark>, StoreError> {
    let mut b = IoBuf::new(sb.block_size as usize);
    let mut marks = Vec::with_capacity(sb.shards as usize);
    for shard in 0..sb.shards {
        let mut slot = |k| -> Result<Option<FlushMark>, StoreError> {
            let Some(at) = FlushMark::offset(sb, shard, k) else {
                return Ok(None);
            };
            dev.read_at(&mut b, at).map_err(io_at(dev.path()))?;
            Ok(FlushMark::decode(&sb.uuid, shard, &b))
        };
        let (a, c) = (slot(0)?, slot(1)?);
        marks.push(FlushMark::latest(a, c));
    }
    Ok(marks)
}

/// Checks a cleanly closed partition: its slots match the checksum taken
/// when it was closed, and every entry points at a place a record can be
/// (inside one segment, past its header), so that a damaged slot neither
/// loses a key nor sends reads past the device, nor makes the space
/// accounting index past its tables. This reads the whole table.
fn check_entries(sb: &Superblock, p: &Partition) -> Result<(), String> {
    for e in p.iter_entries() {
        if !sb.record_fits(e.offset, e.len) {
            return Err(format!(
                "index partition {}: an entry points at {} bytes at offset {}, where no record can be",
                p.id(),
                e.len,
                e.offset
            ));
        }
    }
    if !p.slots_intact() {
        return Err(format!(
            "index partition {}: the checksum of its slots does not match",
            p.id()
        ));
    }
    Ok(())
}

/// Erases the header of every segment in `scanned` that nothing references
/// any longer, before it joins the free pool; returns how many there were.
///
/// A free segment must not keep a valid header: a later rebuild would
/// replay its stale records, and one of them could be an old value of a
/// key whose tombstone is gone (dropped by compaction once no live segment
/// held anything older). The running server erases a segment once what
/// emptied it is durable; these are the ones a crash caught in between.
fn erase_dead_headers(
    dev: &Device,
    sb: &Superblock,
    space: &Space,
    scanned: &[u32],
) -> Result<u64, StoreError> {
    use std::sync::atomic::Ordering::Relaxed;
    let dead: Vec<u32> = scanned
        .iter()
        .copied()
        .filter(|&seg| space.live[seg as usize].load(Relaxed) == 0)
        .collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let io_err = |e| StoreError::Io(dev.path().to_owned(), e);
    // What superseded their records is durable before they go.
    dev.sync().map_err(io_err)?;
    let mut zero = IoBuf::new(sb.block_size as usize);
    zero.set_len(sb.block_size as usize);
    for &seg in &dead {
        dev.write_at(&zero, sb.segment_offset(seg))
            .map_err(io_err)?;
    }
    dev.sync().map_err(io_err)?;
    tracing::info!(
        segments = dead.len(),
        "erased the headers of segments nothing references any longer"
    );
    Ok(dead.len() as u64)
}

/// Opens the index partitions, and checks each one closed clean
/// ([`check_entries`]) as soon as it is open: on several threads, so that
/// one table's pages come from the disk while another's are checked (a
/// clean start reads the whole index once). A partition that cannot be
/// opened is replaced by an empty one, and then no table counts as clean
/// (the index is rebuilt). Also returned: the first damage a check
/// found, and, when every table is clean and sound, what the checks
/// counted of their entries (`heads`: the large values' heads the store
/// may hold) for `Space::from_walked`.
#[allow(clippy::type_complexity)]
fn open_partitions(
    dir: &Path,
    sb: &Superblock,
    heads: &LargeMap,
) -> Result<
    (
        Vec<Partition>,
        Vec<Option<Checkpoint>>,
        Option<String>,
        Option<Vec<space::Walked>>,
    ),
    StoreError,
> {
    let idx = dir.join("index");
    std::fs::create_dir_all(&idx).map_err(io_at(&idx))?;
    type Opened = (
        Result<(Partition, Option<Checkpoint>), String>,
        Option<String>,
    );
    let n = sb.partitions as usize;
    // Twice the CPUs: the threads wait for the disk as much as they work.
    let threads = std::thread::available_parallelism()
        .map_or(1, |c| c.get())
        .saturating_mul(2)
        .clamp(1, n.clamp(1, 16));
    let mut opened: Vec<Option<Opened>> = (0..n).map(|_| None).collect();
    // What the checks counted of the entries (`Space::from_walked`), which
    // a clean start uses: the walk is done once.
    let mut walked = Vec::with_capacity(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let (mut out, mut counts) = (Vec::new(), space::Walked::new(sb));
                    for id in (t..n).step_by(threads) {
                        let got = Partition::open(dir, id as u32, Owner::new(sb.uuid, sb.capacity));
                        let damage = match &got {
                            Ok((p, Some(_))) => check_entries(sb, p).err(),
                            _ => None,
                        };
                        if let (Ok((p, Some(_))), None) = (&got, &damage) {
                            counts.count(sb, shard_of(id as u32, sb.shards), p, heads);
                        }
                        out.push((id, (got.map_err(|e| e.to_string()), damage)));
                    }
                    (out, counts)
                })
            })
            .collect();
        for w in workers {
            let (out, counts) = w.join().expect("index open thread");
            for (id, o) in out {
                opened[id] = Some(o);
            }
            walked.push(counts);
        }
    });
    let mut parts = Vec::with_capacity(n);
    let mut cps = Vec::with_capacity(n);
    let mut damage = None;
    for (id, o) in opened.into_iter().enumerate() {
        let (got, d) = o.expect("every partition opened");
        damage = damage.or(d);
        match got {
            Ok((p, cp)) => {
                parts.push(p);
                cps.push(cp);
            }
            Err(e) => {
                tracing::warn!("index partition {id} unusable ({e}); the index will be rebuilt");
                parts.push(Partition::create(
                    dir,
                    id as u32,
                    Owner::new(sb.uuid, sb.capacity),
                    0,
                )?);
                cps.push(None);
            }
        }
    }
    let all_clean = cps.iter().all(Option::is_some);
    if !all_clean {
        // The rebuild builds new tables (sized as these) and replaces
        // the files: these are not cleared page by page first.
        cps.iter_mut().for_each(|cp| *cp = None);
    }
    let walked = (all_clean && damage.is_none()).then_some(walked);
    Ok((parts, cps, damage, walked))
}
