//! Server administration commands: SHUTDOWN, RESET, CONFIG RESETSTAT and
//! CONFIG REWRITE, as Redis 7.

use std::path::Path;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::conn::Conn;
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

/// `RESET`: the connection as new, as Redis's: no subscriptions, RESP2,
/// no name, replies on, and authenticated only if no password is set
/// (CLIENT NO-EVICT stays, as in Redis 7.0).
pub(super) fn reset(c: &mut Conn, shared: &Shared) {
    shared.pubsub.forget(c.me, &mut c.subs);
    c.info.set_flag(super::conn::PUBSUB, false);
    c.proto = Proto::Resp2;
    c.info.resp.store(2, Relaxed);
    if let Ok(mut n) = c.info.name.lock() {
        *n = Box::default();
    }
    c.reply_off = false;
    c.reply_skip = false;
    c.reply_skip_next = false;
    c.authed = shared.cfg.conns.requirepass.is_none();
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
/// CONFIG name, the default, and whether the file holds the value as a
/// TOML string (else a number).
const REWRITTEN: &[(&str, &str, bool)] = &[
    ("maxmemory", "0", true),
    ("maxmemory-policy", "noeviction", true),
    ("maxmemory-samples", "5", false),
    ("slowlog-log-slower-than", "10000", false),
    ("slowlog-max-len", "128", false),
    ("latency-monitor-threshold", "0", false),
    // REPLICAOF's primary, as Redis keeps it for the next start (Sentinel
    // sends CONFIG REWRITE after REPLICAOF).
    ("replicaof", "", true),
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
        .map(|&(name, default, quoted)| {
            let v = settings::value(shared, name).unwrap_or_default();
            let changed = v != default;
            (name, v, quoted, changed)
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

/// Rewrites the TOML file at `path` with `values`: (CONFIG name, value,
/// quoted, differs from the default).
fn rewrite_file(path: &Path, values: &[(&str, String, bool, bool)]) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    let out = rewritten(&text, values);
    let tmp = path.with_extension("rewrite.tmp");
    std::fs::write(&tmp, out)?;
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
