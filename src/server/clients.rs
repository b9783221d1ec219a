//! What other threads see of a connection: CLIENT LIST and CLIENT INFO
//! read it, CLIENT KILL marks it, the slow log names it. Every connection
//! of the server is in one registry ([`Clients`], in the server's shared
//! state), by id; ids count from 1 and are never reused, as Redis's.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// CLIENT NO-EVICT ON.
pub(super) const NO_EVICT: u8 = 1;
/// CLIENT NO-TOUCH ON.
pub(super) const NO_TOUCH: u8 = 2;
/// Subscribed to a channel or pattern (Redis's client type `pubsub`).
pub(super) const PUBSUB: u8 = 4;

/// The primary's link on a replica: its writes pass on a read-only one.
pub(super) const MASTER: u8 = 8;
/// One of replication's in-process connections (CLIENT KILL TYPE normal
/// spares it).
pub(super) const INTERNAL: u8 = 16;

/// A connection as CLIENT LIST shows it.
#[derive(Debug)]
pub(super) struct ClientInfo {
    /// CLIENT ID: unique in the server, never reused.
    pub id: u64,
    /// Its connection thread.
    pub thread: usize,
    /// Peer and local address, `ip:port` (`/unixsocket:0` on the Unix
    /// socket, as Redis shows it).
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub created: Instant,
    /// CLIENT SETNAME's name (empty: none).
    pub name: Mutex<Box<[u8]>>,
    /// The last command: its index in the command table plus one, and in
    /// the low byte its subcommand's index in the command's description
    /// plus one (0: none yet).
    pub last_cmd: AtomicU32,
    /// When the last command came, in ms since `created`.
    pub last_ms: AtomicU64,
    /// [`NO_EVICT`], [`NO_TOUCH`], [`PUBSUB`].
    pub flags: AtomicU8,
    /// 2 or 3.
    pub resp: AtomicU8,
    /// Bytes it holds (buffers, replies owed, requests in flight).
    pub mem: AtomicU64,
    /// CLIENT KILL chose it: its thread closes it.
    pub killed: AtomicBool,
}

/// The server's connections, as CLIENT LIST and CLIENT KILL see them.
#[derive(Debug, Default)]
pub(super) struct Clients {
    map: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// The last CLIENT ID given.
    last_id: AtomicU64,
    /// Counts CLIENT KILLs: a connection thread that sees it change looks
    /// for its connections marked `killed`.
    kills: AtomicU64,
}

impl Clients {
    /// A new connection on thread `thread`, registered.
    pub(super) fn register(
        &self,
        thread: usize,
        addr: String,
        laddr: String,
        fd: i32,
    ) -> Arc<ClientInfo> {
        let info = Arc::new(ClientInfo {
            id: self.last_id.fetch_add(1, Relaxed) + 1,
            thread,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            name: Mutex::new(Box::default()),
            last_cmd: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            resp: AtomicU8::new(2),
            mem: AtomicU64::new(0),
            killed: AtomicBool::new(false),
        });
        self.lock().insert(info.id, Arc::clone(&info));
        info
    }

    /// Takes a closed connection out.
    pub(super) fn unregister(&self, info: &ClientInfo) {
        self.lock().remove(&info.id);
    }

    /// Every connection, oldest first.
    pub(super) fn all(&self) -> Vec<Arc<ClientInfo>> {
        self.lock().values().cloned().collect()
    }

    /// Marks `info` for its thread to close.
    pub(super) fn kill(&self, info: &ClientInfo) {
        info.killed.store(true, Relaxed);
        self.kills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// CLIENT KILLs so far.
    pub(super) fn kills(&self) -> u64 {
        self.kills.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ClientInfo>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientInfo {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags.load(Relaxed) & flag != 0
    }

    pub(super) fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Relaxed);
        } else {
            self.flags.fetch_and(!flag, Relaxed);
        }
    }

    /// Notes a command: `cmd` as [`ClientInfo::last_cmd`] holds it.
    pub(super) fn note_command(&self, cmd: u32) {
        self.last_cmd.store(cmd, Relaxed);
        let since = super::turn::now().saturating_duration_since(self.created);
        (self.last_ms).store(since.as_millis() as u64, Relaxed);
    }

    /// Its name, empty for none.
    pub(super) fn name(&self) -> Box<[u8]> {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }
}
