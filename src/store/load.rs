//! Creating a store, and `nvkv load`: the bulk loader (the original
//! `mk_data`). Records are packed into segments in memory and written with
//! large aligned `O_DIRECT` writes by a writer thread, at sequential-write
//! speed; the index is built alongside, on a thread of its own, and marked
//! clean at the end, so the server maps it without reading the data.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use super::{DirLock, StoreError, DATA_FILE, NVME_FILE};
use crate::format::{
    encode_record, record_len, RecordMeta, SegmentHeader, Superblock, MAX_RECORD, RECORD_HEADER,
    SEGMENT_HEADER, SUPERBLOCK_SIZE,
};
use crate::index::{Checkpoint, Entry, Inserter, KeyHash, Owner, Partition};
use crate::io::{Device, DeviceSpec, EnvOptions, IoBuf};
use crate::keys;

/// Parses a size such as `4096`, `64K`, `1M`, `10G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mul = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1u64 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&s[..i], mul)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// Layout choices for a new store.
#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bytes of the device to use (K/M/G/T suffixes). Default: the whole
    /// block device, or for a file twice the loaded data and at least 1 GiB.
    #[arg(long, value_parser = parse_size)]
    pub capacity: Option<u64>,
    /// Put the data on this file or block device instead of DIR/data.nvkv
    /// (a symlink to it is made in DIR), or on an NVMe namespace through
    /// SPDK, given by transport ID: 'trtype:PCIe traddr:0000:01:00.0' or
    /// 'trtype:TCP adrfam:IPv4 traddr:… trsvcid:4420 subnqn:…'.
    #[arg(long)]
    pub device: Option<String>,
    /// The namespace of an NVMe --device.
    #[arg(long, default_value_t = 1)]
    pub nsid: u32,
    /// Segment size: the unit of log writes and of space reclamation.
    #[arg(long, value_parser = parse_size, default_value = "2M")]
    pub segment_size: u64,
    /// Shards: a poller owns whole shards, so this caps --io-threads.
    #[arg(long, default_value_t = 8)]
    pub shards: u32,
    /// Index partitions (files), a multiple of --shards.
    #[arg(long, default_value_t = 256)]
    pub partitions: u32,
    /// Overwrite an existing store.
    #[arg(long)]
    pub force: bool,
    /// Leave a data file sparse: the server then does not write zeros over
    /// the space the loader leaves free (in the background, as it does by
    /// default). The first writes into each free segment then allocate
    /// blocks, and every such sync commit costs the file system a journal
    /// commit.
    #[arg(long)]
    pub sparse: bool,
}

impl Default for CreateArgs {
    fn default() -> Self {
        CreateArgs {
            capacity: None,
            device: None,
            nsid: 1,
            segment_size: 2 << 20,
            shards: 8,
            partitions: 256,
            force: false,
            sparse: false,
        }
    }
}

/// Arguments of `nvkv load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Store directory (created if missing).
    #[arg(long)]
    pub path: PathBuf,
    /// Number of records to write.
    #[arg(long)]
    pub keys: u64,
    /// Smallest value size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub min_size: usize,
    /// Largest value size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub max_size: usize,
    /// Seed of the data set: key i and its value derive from (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// What the loader did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadSummary {
    pub keys: u64,
    pub value_bytes: u64,
    pub device_bytes: u64,
    pub segments: u64,
    pub secs: f64,
    pub mb_per_sec: f64,
    pub index_bytes: u64,
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loaded {} keys, {:.1} MiB of values, {:.1} MiB written in {} segments, in {:.2} s: {:.0} MB/s; index {:.1} MiB ({:.1} bytes/key)",
            self.keys,
            self.value_bytes as f64 / 1048576.0,
            self.device_bytes as f64 / 1048576.0,
            self.segments,
            self.secs,
            self.mb_per_sec,
            self.index_bytes as f64 / 1048576.0,
            self.index_bytes as f64 / self.keys.max(1) as f64,
        )
    }
}

/// A new, empty store being filled: device, superblock, index partitions.
pub(crate) struct NewStore {
    pub dev: Device,
    pub sb: Superblock,
    pub parts: Vec<Partition>,
    /// The store directory.
    pub dir: PathBuf,
    pub _lock: DirLock,
    /// Leave the holes of a data file unwritten (`--sparse`).
    pub sparse: bool,
    /// Write the zeros over the data file's free part now, in [`finish`],
    /// rather than leave them to the server's background zeroing (a store
    /// `serve` creates: see [`super::create_empty`]).
    pub zero_now: bool,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// Creates the directory, device and empty index of a new store sized for
/// about `expected_keys` keys and `expected_bytes` of records. The
/// superblock is written last, by [`finish`].
pub(crate) fn create(
    dir: &Path,
    args: &CreateArgs,
    env: &EnvOptions,
    expected_keys: u64,
    expected_bytes: u64,
) -> Result<NewStore, StoreError> {
    let seg = args.segment_size;
    if !seg.is_power_of_two() || !(64 << 10..=crate::format::MAX_SEGMENT as u64).contains(&seg) {
        return Err(invalid(
            "--segment-size must be a power of two between 64K and 1G",
        ));
    }
    if args.shards == 0 || args.partitions == 0 || args.partitions % args.shards != 0 {
        return Err(invalid(
            "--partitions must be a non-zero multiple of --shards",
        ));
    }
    fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_owned(), e))?;
    let lock = DirLock::acquire(dir)?;
    let data = dir.join(DATA_FILE);
    let nvme = dir.join(NVME_FILE);
    let exists = super::device_spec(dir).map_or(true, |s| s.is_some());
    if exists && !args.force {
        return Err(StoreError::Exists(dir.to_owned()));
    }
    let zeroing = dir.join(super::zero::ZERO_FILE);
    for old in [&data, &nvme, &zeroing] {
        if fs::symlink_metadata(old).is_ok() {
            fs::remove_file(old).map_err(|e| StoreError::Io(old.clone(), e))?;
        }
    }

    let capacity = args
        .capacity
        .unwrap_or_else(|| (2 * expected_bytes + (64 << 20)).max(1 << 30));
    let spec = args
        .device
        .as_deref()
        .map(|d| DeviceSpec::parse(d, args.nsid));
    let dev = match &spec {
        Some(DeviceSpec::Path(target)) => {
            std::os::unix::fs::symlink(target, &data)
                .map_err(|e| StoreError::Io(data.clone(), e))?;
            Device::open(&data, Some(capacity))
        }
        Some(ns @ DeviceSpec::Nvme { trid, nsid }) => env.start_for(ns).and_then(|()| {
            let dev = Device::open_spec(ns, None)?;
            let text = format!(
                "# The data of this nvkv store is on an NVMe namespace, reached through SPDK.\n\
                 trid = {}\nnsid = {nsid}\n",
                toml::Value::String(trid.clone())
            );
            fs::write(&nvme, text)?;
            Ok(dev)
        }),
        None => Device::open(&data, Some(capacity)),
    }
    .map_err(|e| StoreError::Io(data.clone(), e))?;
    // The device opened: only now is the old index replaced.
    let index = dir.join("index");
    if index.exists() {
        fs::remove_dir_all(&index).map_err(|e| StoreError::Io(index.clone(), e))?;
    }
    fs::create_dir_all(&index).map_err(|e| StoreError::Io(index.clone(), e))?;
    let capacity = capacity.min(dev.capacity());
    let data_start = 1 << 20;
    if capacity < data_start + 4 * seg {
        return Err(invalid(format!(
            "capacity {capacity} is too small: need at least {} bytes",
            data_start + 4 * seg
        )));
    }
    if capacity / seg > u32::MAX as u64 || capacity > Entry::MAX_OFFSET {
        return Err(invalid("capacity too large for this segment size"));
    }
    let mut uuid = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut uuid);
    let sb = Superblock {
        block_size: dev.block_size(),
        uuid,
        capacity,
        data_start,
        segment_size: seg as u32,
        segment_count: ((capacity - data_start) / seg) as u32,
        shards: args.shards,
        partitions: args.partitions,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    // Invalidate a superblock left on the device until the new one is written.
    dev.write_at(&IoBuf::new(SUPERBLOCK_SIZE), 0)
        .map_err(|e| StoreError::Io(data.clone(), e))?;
    // Room for the mean plus three standard deviations of the keys a
    // partition receives, so that a loaded table stays near the load factor.
    let mean = expected_keys as f64 / args.partitions as f64;
    let per_part = (mean + 3.0 * mean.sqrt()).ceil() as u64;
    // Built in memory, written to their files by `finish`.
    let (owner, slots) = (
        Owner::new(uuid, capacity),
        crate::index::slots_for(per_part),
    );
    let parts = (0..args.partitions)
        .map(|id| Partition::create_in_memory(dir, id, owner, slots))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NewStore {
        dev,
        sb,
        parts,
        dir: dir.to_owned(),
        _lock: lock,
        sparse: args.sparse,
        zero_now: false,
    })
}

/// Writes the superblock and marks the index clean.
pub(crate) fn finish(st: &mut NewStore, max_seq: &[u64], max_gen: u64) -> Result<(), StoreError> {
    let err = |e| StoreError::Io(st.dev.path().to_owned(), e);
    if st.dev.is_file && !st.sparse && st.zero_now {
        // The whole file now: it holds no segment yet.
        let end = st.dev.capacity();
        super::zero::fill_holes(&st.dev, 0, end, &AtomicBool::new(false)).map_err(err)?;
    } else if st.dev.is_file && !st.sparse {
        // The blocks before the segments (flush marks) now; the free
        // segments are left to the server, in the background (`zero.rs`).
        let end = st.sb.data_start;
        super::zero::fill_holes(&st.dev, 0, end, &AtomicBool::new(false)).map_err(err)?;
        super::zero::mark_unzeroed(&st.dir).map_err(|e| StoreError::Io(st.dir.clone(), e))?;
    }
    st.dev.sync().map_err(err)?;
    let mut b = IoBuf::new(SUPERBLOCK_SIZE);
    b.copy_from_slice(&st.sb.encode());
    st.dev.write_at(&b, 0).map_err(err)?;
    st.dev.sync().map_err(err)?;
    // A new store holds no large value: its clean open needs the (empty)
    // table of them.
    super::space::save_large_table(&st.dir, &st.sb, &Default::default(), max_gen)
        .map_err(|e| StoreError::Io(st.dir.clone(), e))?;
    let shards = st.sb.shards;
    let parts = std::mem::take(&mut st.parts);
    st.parts = crate::index::write_out(parts, |id| {
        Some(Checkpoint {
            max_seq: max_seq[(id % shards) as usize],
            max_gen,
        })
    })?;
    Ok(())
}

/// Records of one shard waiting for a segment.
#[derive(Default)]
struct Window {
    /// Keys and values, back to back.
    data: Vec<u8>,
    recs: Vec<Staged>,
    /// Sum of the records' lengths.
    bytes: usize,
}

struct Staged {
    at: usize,
    key_len: usize,
    value_len: usize,
    hash: KeyHash,
    pid: u32,
}

impl Staged {
    fn len(&self) -> u32 {
        record_len(self.key_len, self.value_len) as u32
    }
}

/// Runs `nvkv load`; `env` starts SPDK for a store on an NVMe namespace.
pub fn load(args: &LoadArgs, env: &EnvOptions) -> Result<LoadSummary, StoreError> {
    let t0 = Instant::now();
    if args.min_size == 0 || args.min_size > args.max_size {
        return Err(invalid("need 1 <= --min-size <= --max-size"));
    }
    let seg_size = args.create.segment_size as usize;
    let max_rec = record_len(40, args.max_size);
    if max_rec > MAX_RECORD || max_rec as usize > seg_size - SEGMENT_HEADER - 4096 {
        return Err(invalid(format!(
            "--max-size {} does not fit a {seg_size}-byte segment",
            args.max_size
        )));
    }
    let avg_rec = RECORD_HEADER as u64 + 24 + (args.min_size + args.max_size) as u64 / 2;
    let mut st = create(
        &args.path,
        &args.create,
        env,
        args.keys,
        args.keys * avg_rec * 10 / 9,
    )?;
    let sb = st.sb.clone();

    let (to_writer, writer_rx) = mpsc::sync_channel::<(u64, IoBuf)>(8);
    let (recycle, recycled) = mpsc::channel::<IoBuf>();
    let dev_path = st.dev.path().to_owned();
    let writer_dev = st
        .dev
        .try_clone()
        .map_err(|e| StoreError::Io(dev_path.clone(), e))?;
    let writer = std::thread::Builder::new()
        .name("load-writer".into())
        .spawn(move || -> std::io::Result<u64> {
            let mut written = 0;
            for (off, buf) in writer_rx {
                writer_dev.write_at(&buf, off)?;
                written += buf.len() as u64;
                let _ = recycle.send(buf);
            }
            Ok(written)
        })
        .map_err(|e| StoreError::Io(dev_path.clone(), e))?;

    let bar = indicatif::ProgressBar::new(args.keys);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {human_pos}/{human_len} keys {per_sec} eta {eta}",
        )
        .expect("template"),
    );
    // The index is built on a thread of its own, from the entries of
    // each segment as it is sealed: the other core generates and packs.
    let parts = std::mem::take(&mut st.parts);
    let inserter = Inserter::start("load-index", parts, 1 << 20, sb.shards, None)
        .map_err(|e| StoreError::Io(dev_path.clone(), e))?;
    let mut windows: Vec<Window> = (0..sb.shards).map(|_| Window::default()).collect();
    let mut sealer = Sealer {
        sb: &sb,
        to_writer: &to_writer,
        inserter: &inserter,
        recycled: &recycled,
        next_seg: 0,
        gen: 0,
        next_seq: vec![1; sb.shards as usize],
    };
    let payload = seg_size - SEGMENT_HEADER;
    let mut value_bytes = 0u64;
    for i in 0..args.keys {
        let h;
        let pid;
        {
            let mut key = Vec::with_capacity(24);
            keys::write_key(args.seed, i, &mut key);
            h = KeyHash::full(&key);
            pid = h.partition(sb.partitions);
            let w = &mut windows[(pid % sb.shards) as usize];
            let vg = keys::ValueGen::new(args.seed, i, args.min_size, args.max_size);
            let (at, value_len) = (w.data.len(), vg.len());
            w.data.extend_from_slice(&key);
            w.data.resize(at + key.len() + value_len, 0);
            vg.fill(&mut w.data[at + key.len()..]);
            value_bytes += value_len as u64;
            let staged = Staged {
                at,
                key_len: key.len(),
                value_len,
                hash: h,
                pid,
            };
            w.bytes += staged.len() as usize;
            w.recs.push(staged);
        }
        let shard = (pid % sb.shards) as usize;
        if windows[shard].bytes >= payload {
            sealer.seal(shard as u32, &mut windows[shard])?;
        }
        if i % 4096 == 0 {
            bar.set_position(i);
        }
    }
    for (shard, w) in windows.iter_mut().enumerate() {
        while !w.recs.is_empty() {
            sealer.seal(shard as u32, w)?;
        }
    }
    let (segments, gen) = (sealer.next_seg as u64, sealer.gen);
    let max_seq: Vec<u64> = sealer.next_seq.iter().map(|s| s - 1).collect();
    st.parts = inserter.finish()?.0;
    drop(to_writer);
    let device_bytes = writer
        .join()
        .expect("writer thread")
        .map_err(|e| StoreError::Io(dev_path.clone(), e))?;
    bar.finish_and_clear();
    finish(&mut st, &max_seq, gen)?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(LoadSummary {
        keys: args.keys,
        value_bytes,
        device_bytes,
        segments,
        secs,
        mb_per_sec: device_bytes as f64 / secs / 1e6,
        index_bytes: st.parts.iter().map(Partition::bytes).sum(),
    })
}

/// Packs windows of records into segments and sends them to the writer
/// thread, their index entries to the index thread.
struct Sealer<'a> {
    sb: &'a Superblock,
    to_writer: &'a mpsc::SyncSender<(u64, IoBuf)>,
    inserter: &'a Inserter,
    recycled: &'a mpsc::Receiver<IoBuf>,
    next_seg: u32,
    gen: u64,
    next_seq: Vec<u64>,
}

impl Sealer<'_> {
    /// Writes one segment of `shard` holding as much of `w` as fits; the
    /// records that did not fit stay in `w`.
    fn seal(&mut self, shard: u32, w: &mut Window) -> Result<(), StoreError> {
        if self.next_seg >= self.sb.segment_count {
            return Err(invalid(format!(
                "the store is full after {} segments: give a larger --capacity",
                self.sb.segment_count
            )));
        }
        let no = self.next_seg;
        self.next_seg += 1;
        self.gen += 1;
        let (seg_size, block) = (self.sb.segment_size, self.sb.block_size);
        let lens: Vec<u32> = w.recs.iter().map(Staged::len).collect();
        let places = super::pack::pack(&lens, seg_size, block, SEGMENT_HEADER as u32);
        let mut placed: Vec<(u32, usize)> = places
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|at| (at, i)))
            .collect();
        placed.sort_unstable();

        let mut buf = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| IoBuf::new(seg_size as usize));
        buf.set_len(seg_size as usize);
        buf.fill(0);
        let header = SegmentHeader {
            gen: self.gen,
            first_seq: self.next_seq[shard as usize],
            shard,
            flush: None,
        };
        header.encode(&self.sb.uuid, &mut buf[..SEGMENT_HEADER]);
        let base = self.sb.segment_offset(no);
        let mut entries = self.inserter.vec();
        for &(at, i) in &placed {
            let r = &w.recs[i];
            let key = &w.data[r.at..r.at + r.key_len];
            let value = &w.data[r.at + r.key_len..r.at + r.key_len + r.value_len];
            let seq = &mut self.next_seq[shard as usize];
            let meta = RecordMeta {
                gen: self.gen as u32,
                seq: *seq,
                expire_ms: 0,
                flags: 0,
            };
            *seq += 1;
            let n = encode_record(&self.sb.uuid, &meta, key, value, &mut buf[at as usize..]);
            let e = Entry {
                offset: base + at as u64,
                len: n as u32,
                tombstone: false,
                expire_ms: 0,
            };
            entries.push((r.pid, r.hash, e));
        }
        // Refused: the index thread stopped on an error, which `finish`
        // reports.
        self.inserter.send(entries);
        // The whole segment, the zeros after its records included: no hole
        // is left in it for the server's zeroing to find.
        self.to_writer
            .send((base, buf))
            .map_err(|_| invalid("the writer thread stopped (see its error)"))?;

        // Keep what did not fit for the next segment, moved to the front
        // of the window (its records lie in the order they came, so each
        // moves down): the window keeps its memory for the next records.
        let (mut end, mut bytes, mut kept) = (0, 0, 0);
        for (i, place) in places.iter().enumerate() {
            if place.is_some() {
                continue;
            }
            let r = &w.recs[i];
            let n = r.key_len + r.value_len;
            w.data.copy_within(r.at..r.at + n, end);
            bytes += r.len() as usize;
            w.recs[kept] = Staged {
                at: end,
                ..w.recs[i]
            };
            (end, kept) = (end + n, kept + 1);
        }
        w.data.truncate(end);
        w.recs.truncate(kept);
        w.bytes = bytes;
        Ok(())
    }
}
