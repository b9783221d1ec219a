//! Server administration commands: SHUTDOWN, RESET, CONFIG RESETSTAT and
//! CONFIG REWRITE, as Redis 7.

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use super::conn::Conn;
use super::replies::Combine;
use super::{counters, settings, strings, Shared};
use crate::resp::{self, Proto};

/// `SHUTDOWN [NOSAVE | SAVE] [NOW] [FORCE] [ABORT]`: the clean stop a
/// SIGTERM starts (every acknowledged write is durable already, and the
/// index is flushed and marked clean, with or without SAVE); the client
/// gets no reply, it sees the connection close, as with Redis. ABORT has
/// no shutdown to abort: a shutdown is never left pending.
pub(super) fn shutdown(c: &mut Conn, shared: &Shared, args: &[&[u8]]) {
    let (mut save, mut nosave, mut abort, mut other) = (false, false, false, false);
    for a in &args[1..] {
        match a.to_ascii_uppercase().as_slice() {
            b"NOSAVE" => nosave = true,
            b"SAVE" => save = true,
            b"NOW" | b"FORCE" => other = true,
            b"ABORT" => abort = true,
            _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
        }
    }
    if (abort && (save || nosave || other)) || (save && nosave) {
        return c.reply(|o| resp::error(o, strings::SYNTAX));
    }
    if abort {
        return c.reply(|o| resp::error(o, strings::NO_SHUTDOWN));
    }
    tracing::info!(client = %c.info.addr, "SHUTDOWN: stopping");
    shared.shutdown.store(true, SeqCst);
    c.closing = true;
}

/// SAVE and BGSAVE, and what LASTSAVE and INFO persistence say of them.
///
/// A save is a commit on every poller that starts at once and flushes the
/// device even with nothing to write: once each poller's part is in,
/// every write acknowledged before the SAVE is on stable media (in
/// `--durability async` too, where writes are acknowledged before their
/// commit). The device is the store's persistence — the index is rebuilt
/// from it after a crash, and flushed at a clean shutdown — so there is no
/// snapshot file to write.
pub(super) struct Saves {
    /// Unix seconds of the last save completed without error (the start
    /// counts as one, as in Redis).
    last: AtomicU64,
    /// Poller parts of saves under way, in all and of BGSAVEs.
    parts: AtomicUsize,
    background: AtomicUsize,
    /// A part failed since the parts last all completed.
    failed: AtomicBool,
    /// How the last BGSAVE ended.
    last_bg_ok: AtomicBool,
}

impl Saves {
    pub(super) fn new() -> Self {
        Saves {
            last: AtomicU64::new(crate::store::clock::unix_ms() / 1000),
            parts: AtomicUsize::new(0),
            background: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
            last_bg_ok: AtomicBool::new(true),
        }
    }

    /// Pollers start their parts of a save.
    fn start(&self, pollers: usize, background: bool) {
        self.parts.fetch_add(pollers, SeqCst);
        if background {
            self.background.fetch_add(pollers, SeqCst);
        }
    }

    /// A poller's part of a save is durable (`ok`) or failed. When the
    /// last part under way completes and none failed, LASTSAVE moves.
    pub(super) fn record(&self, background: bool, ok: bool) {
        if !ok {
            self.failed.store(true, SeqCst);
        }
        if background {
            self.background.fetch_sub(1, SeqCst);
            if !ok {
                self.last_bg_ok.store(false, SeqCst);
            }
        }
        if self.parts.fetch_sub(1, SeqCst) == 1 && !self.failed.swap(false, SeqCst) {
            self.last
                .store(crate::store::clock::unix_ms() / 1000, SeqCst);
            if background {
                self.last_bg_ok.store(true, SeqCst);
            }
        }
    }

    /// LASTSAVE.
    pub(super) fn last(&self) -> u64 {
        self.last.load(Relaxed)
    }

    /// A BGSAVE is under way.
    pub(super) fn in_background(&self) -> bool {
        self.background.load(SeqCst) > 0
    }

    /// INFO persistence's lines about saves.
    pub(super) fn info(&self) -> String {
        format!(
            "rdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\n",
            self.in_background() as u8,
            self.last(),
            if self.last_bg_ok.load(Relaxed) {
                "ok"
            } else {
                "err"
            }
        )
    }
}

/// `SAVE`: every poller commits at once; `+OK` once all are durable.
pub(super) fn save(c: &mut Conn, router: &mut super::router::Router) {
    let shared = router.shared;
    if shared.saves.in_background() {
        return c.reply(|o| resp::error(o, strings::BGSAVE_RUNNING));
    }
    shared.saves.start(shared.pollers.len(), false);
    let id = c.expect(shared.pollers.len(), Some(Combine::AllOk));
    router.send_to_every_poller(c.me, c.touches(), id, || super::msg::Op::Save);
}

/// `BGSAVE [SCHEDULE]`: as SAVE, answered at once. While one is under way,
/// an error, or with SCHEDULE another that follows it.
pub(super) fn bgsave(c: &mut Conn, router: &mut super::router::Router, args: &[&[u8]]) {
    let schedule = match args {
        [_] => false,
        [_, a] if a.eq_ignore_ascii_case(b"SCHEDULE") => true,
        _ => return c.reply(|o| resp::error(o, strings::SYNTAX)),
    };
    let shared = router.shared;
    let running = shared.saves.in_background();
    if running && !schedule {
        return c.reply(|o| resp::error(o, strings::BGSAVE_RUNNING));
    }
    let pollers = shared.pollers.len();
    shared.saves.start(pollers, true);
    for p in 0..pollers {
        let req = super::msg::Request {
            tried: Vec::new(),
            from: c.me,
            touch: false,
            id: super::msg::NO_REPLY,
            part: p as u32,
            hash: crate::index::KeyHash { lo: 0, tag: 0 },
            pid: p as u32,
            op: super::msg::Op::Save,
        };
        // Inside EXEC too it goes now: the transaction's writes are
        // answered durable anyway.
        router.send_now(p, req);
    }
    // Inside EXEC, Redis schedules it for after the transaction.
    let text = if running || router.capturing() {
        strings::BGSAVE_SCHEDULED
    } else {
        strings::BGSAVE_STARTED
    };
    c.reply(|o| resp::simple(o, text));
}

/// `RESET`: the connection as new, as Redis's: no subscriptions, RESP2,
/// no name, replies on, and authenticated only if no password is set
/// (CLIENT NO-EVICT stays, as in Redis 7.0).
pub(super) fn reset(c: &mut Conn, shared: &Shared) {
    shared.pubsub.forget(c.me, &mut c.subs);
    c.info.set_flag(super::clients::PUBSUB, false);
    c.proto = Proto::Resp2;
    c.info.resp.store(2, Relaxed);
    if let Ok(mut n) = c.info.name.lock() {
        *n = Box::default();
    }
    c.reply_off = false;
    c.reply_skip = false;
    c.reply_skip_next = false;
    c.authed = !shared.cfg.conns.needs_password();
    c.reply(|o| resp::simple(o, strings::RESET))
}

/// `CONFIG RESETSTAT`: INFO's stats and commandstats start from zero.
pub(super) fn resetstat(c: &mut Conn, shared: &Shared) {
    counters::reset_stats(shared);
    c.reply(|o| resp::simple(o, strings::OK))
}

pub(super) const CONFIG_HELP: &[&str] = &[
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "SET <directive> <value>",
    "    Set the configuration <directive> to <value>.",
    "RESETSTAT",
    "    Reset statistics reported by the INFO command.",
    "REWRITE",
    "    Rewrite the configuration file.",
    "HELP",
    "    Prints this help.",
];

/// The settings CONFIG SET changes, which CONFIG REWRITE writes: the
/// CONFIG name, the serve flag (the file's key), the default, and whether
/// the file holds the value as a TOML string (else a number).
const REWRITTEN: &[(&str, &str, &str, bool)] = &[
    ("maxmemory", "maxmemory", "0", true),
    ("maxmemory-policy", "maxmemory-policy", "noeviction", true),
    ("maxmemory-samples", "maxmemory-samples", "5", false),
    (
        "slowlog-log-slower-than",
        "slowlog-log-slower-than",
        "10000",
        false,
    ),
    ("slowlog-max-len", "slowlog-max-len", "128", false),
    (
        "latency-monitor-threshold",
        "latency-monitor-threshold",
        "0",
        false,
    ),
    ("maxclients", "max-clients", "10000", false),
    ("timeout", "timeout", "0", false),
    // As Redis writes it into its file; not when it came from
    // `--requirepass-file` (it stays there, out of the config file).
    ("requirepass", "requirepass", "", true),
    // REPLICAOF's primary, as Redis keeps it for the next start (Sentinel
    // sends CONFIG REWRITE after REPLICAOF).
    ("replicaof", "replicaof", "", true),
];

/// `CONFIG REWRITE`: writes the current values of the run-time settings
/// into the `--config` file, as Redis does: a setting's line keeps its
/// place (and its comment), a setting not in the file is added at the
/// end when it differs from its default, every other line stays as it
/// was. The new file replaces the old one at once (renamed over it).
pub(super) fn rewrite(c: &mut Conn, shared: &Shared) {
    let Some(path) = &shared.config_file else {
        return c.reply(|o| resp::error(o, strings::NO_CONFIG_FILE));
    };
    let values: Vec<(&str, String, bool, bool)> = (REWRITTEN.iter())
        .filter(|(name, ..)| *name != "requirepass" || !shared.cfg.conns.password_file)
        .map(|&(name, key, default, quoted)| {
            let v = settings::value(shared, name).unwrap_or_default();
            let changed = v != default;
            (key, v, quoted, changed)
        })
        .collect();
    match rewrite_file(path, &values) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "CONFIG REWRITE");
            c.reply(|o| resp::simple(o, strings::OK))
        }
        Err(e) => {
            let msg = strings::rewrite_failed(&e);
            c.reply(|o| resp::error(o, &msg))
        }
    }
}

/// Rewrites the TOML file at `path` with `values`: (the file's key, value,
/// quoted, differs from the default).
fn rewrite_file(path: &Path, values: &[(&str, String, bool, bool)]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let out = rewritten(&text, values);
    let tmp = path.with_extension("rewrite.tmp");
    std::fs::write(&tmp, out)?;
    // The new file keeps the old one's permissions: it may hold the
    // password (`requirepass`), and a file made 0600 stays so.
    std::fs::set_permissions(&tmp, std::fs::metadata(path)?.permissions())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The text of the file with the settings' lines rewritten.
fn rewritten(text: &str, values: &[(&str, String, bool, bool)]) -> String {
    let entry = |key: &str, v: &str, quoted: bool| {
        if quoted {
            format!("{key} = {}", toml::Value::String(v.into()))
        } else {
            format!("{key} = {v}")
        }
    };
    let mut done = vec![false; values.len()];
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let found = (!line.trim_start().starts_with('#') && line.contains('='))
            .then(|| (values.iter()).position(|(name, ..)| key.replace('_', "-") == *name))
            .flatten();
        match found {
            Some(i) => {
                let (_, v, quoted, _) = &values[i];
                // A comment after the value stays.
                let comment = line
                    .find(" #")
                    .filter(|&at| line[..at].matches('"').count() % 2 == 0)
                    .map(|at| line[at..].to_string())
                    .unwrap_or_default();
                out.push_str(&entry(key, v, *quoted));
                out.push_str(&comment);
                done[i] = true;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    let mut header = false;
    for (i, (name, v, quoted, changed)) in values.iter().enumerate() {
        if !done[i] && *changed {
            if !header {
                out.push_str("# Generated by CONFIG REWRITE\n");
                header = true;
            }
            out.push_str(&entry(&name.replace('-', "_"), v, *quoted));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rewritten;

    #[test]
    fn rewrite_keeps_comments_and_other_lines() {
        let text = "# my server\nlisten = \"127.0.0.1:7000\"\nmaxmemory-policy = \"noeviction\" # was\nmaxmemory_samples = 5\n";
        let values = [
            ("maxmemory-policy", "allkeys-lru".to_string(), true, true),
            ("maxmemory-samples", "5".to_string(), false, false),
            ("slowlog-max-len", "64".to_string(), false, true),
            ("latency-monitor-threshold", "0".to_string(), false, false),
        ];
        assert_eq!(
            rewritten(text, &values),
            "# my server\nlisten = \"127.0.0.1:7000\"\nmaxmemory-policy = \"allkeys-lru\" # was\n\
             maxmemory_samples = 5\n# Generated by CONFIG REWRITE\nslowlog_max_len = 64\n"
        );
    }
}
