//! `CONFIG GET | SET`: the settings a running server shows and the ones it
//! lets clients change, with Redis's names, values and errors.

use std::sync::atomic::Ordering::Relaxed;

use super::{strings, Durability, Shared};
use crate::resp;
use crate::store::evict::Policy;

/// A setting: its name, its value now, and how to change it (`None`: read
/// only here): a check of the value, then its application.
struct Setting {
    name: &'static str,
    get: fn(&Shared) -> String,
    set: Option<(Check, Apply)>,
}

type Check = fn(&str) -> Result<(), String>;
type Apply = fn(&Shared, &str);

const SETTINGS: &[Setting] = &[
    Setting {
        name: "maxmemory",
        get: |s| s.eviction.maxmemory().to_string(),
        set: Some((
            |v| {
                memory_value(v)
                    .map(drop)
                    .ok_or_else(|| "argument must be a memory value".into())
            },
            |s, v| {
                s.eviction
                    .maxmemory
                    .store(memory_value(v).unwrap_or(0), Relaxed)
            },
        )),
    },
    Setting {
        name: "maxmemory-policy",
        get: |s| s.eviction.policy().to_string(),
        set: Some((
            |v| v.parse::<Policy>().map(drop).map_err(|e| e.to_string()),
            |s, v| {
                let p: Policy = v.parse().unwrap_or_default();
                s.eviction.policy.store(p.code(), Relaxed);
                tracing::info!(policy = %p, "maxmemory-policy set");
            },
        )),
    },
    Setting {
        name: "maxmemory-samples",
        get: |s| s.eviction.samples.load(Relaxed).to_string(),
        set: Some((
            |v| match v.parse::<i64>() {
                Ok(n) if (1..=i32::MAX as i64).contains(&n) => Ok(()),
                _ => Err("argument must be between 1 and 2147483647 inclusive".into()),
            },
            |s, v| s.eviction.samples.store(v.parse().unwrap_or(5), Relaxed),
        )),
    },
    Setting {
        name: "replica-ignore-maxmemory",
        get: |s| yes_no(s.eviction.replica_ignore.load(Relaxed)),
        set: Some((yes_or_no, |s, v| {
            (s.eviction.replica_ignore).store(v.eq_ignore_ascii_case("yes"), Relaxed)
        })),
    },
    Setting {
        name: "replicaof",
        get: super::repl::replicaof_setting,
        set: None,
    },
    // As Redis: a limit above what the open-file limit allows (raised
    // first if it can be) is refused, with the most it would take.
    Setting {
        name: "maxclients",
        get: |s| s.cfg.conns.max_clients.load(Relaxed).to_string(),
        set: Some((
            |v| {
                let n = integer_between(v, 1, u32::MAX as i64)?;
                match super::access::raise_fd_limit(n as usize) {
                    Ok(()) => Ok(()),
                    Err(most) => Err(format!(
                        "The operating system is not able to handle the specified number of clients, try with {most}"
                    )),
                }
            },
            |s, v| {
                let n = v.parse().unwrap_or(10_000);
                s.cfg.conns.max_clients.store(n, Relaxed);
                tracing::info!(maxclients = n, "maxclients set");
            },
        )),
    },
    // Clients idle longer are closed from the next check on (the
    // connection threads check each turn they are awake, at least once a
    // second).
    Setting {
        name: "timeout",
        get: |s| s.cfg.conns.timeout.load(Relaxed).to_string(),
        set: Some((
            |v| integer_between(v, 0, i32::MAX as i64).map(drop),
            |s, v| s.cfg.conns.timeout.store(v.parse().unwrap_or(0), Relaxed),
        )),
    },
    // The default user's password, as Redis shows and takes it: an empty
    // value means none. Clients already connected stay as they are (an
    // authenticated one stays so); new ones must AUTH with the new one.
    Setting {
        name: "requirepass",
        get: |s| s.cfg.conns.password().unwrap_or_default(),
        set: Some((
            |_| Ok(()),
            |s, v| {
                if let Ok(mut p) = s.cfg.conns.requirepass.write() {
                    *p = (!v.is_empty()).then(|| v.to_string());
                }
                tracing::info!(set = !v.is_empty(), "requirepass set");
            },
        )),
    },
    // What redis-benchmark and Sentinel read: no RDB snapshots; every
    // acknowledged write durable under sync durability, as appendfsync
    // always.
    Setting {
        name: "save",
        get: |_| String::new(),
        set: None,
    },
    Setting {
        name: "appendonly",
        get: |s| yes_no(s.cfg.durability == Durability::Sync),
        set: None,
    },
    Setting {
        name: "databases",
        get: |_| "1".into(),
        set: None,
    },
    // SLOWLOG and LATENCY.
    Setting {
        name: "slowlog-log-slower-than",
        get: |s| s.slowlog.slower_than.load(Relaxed).to_string(),
        set: Some((
            |v| integer_in(v, -1),
            |s, v| {
                s.slowlog
                    .slower_than
                    .store(v.parse().unwrap_or(-1), Relaxed)
            },
        )),
    },
    Setting {
        name: "slowlog-max-len",
        get: |s| s.slowlog.max_len.load(Relaxed).to_string(),
        set: Some((
            |v| integer_in(v, 0),
            |s, v| s.slowlog.max_len.store(v.parse().unwrap_or(0), Relaxed),
        )),
    },
    Setting {
        name: "latency-monitor-threshold",
        get: |s| s.slowlog.latency_threshold.load(Relaxed).to_string(),
        set: Some((
            |v| integer_in(v, 0),
            |s, v| (s.slowlog.latency_threshold).store(v.parse().unwrap_or(0), Relaxed),
        )),
    },
];

/// Other names of settings (Redis 7's aliases): CONFIG GET lists an alias
/// a pattern matches, CONFIG SET takes it.
const ALIASES: &[(&str, &str)] = &[("slave-ignore-maxmemory", "replica-ignore-maxmemory")];

/// The setting a name means, an alias followed.
fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, to)| to)
}

/// Redis's check of an integer setting from `min` to `i64::MAX`.
fn integer_in(v: &str, min: i64) -> Result<(), String> {
    integer_between(v, min, i64::MAX).map(drop)
}

/// Redis's check of an integer setting from `min` to `max`; the value.
fn integer_between(v: &str, min: i64, max: i64) -> Result<i64, String> {
    match v.parse::<i64>() {
        Err(_) => Err("argument couldn't be parsed into an integer".into()),
        Ok(n) if n < min || n > max => Err(format!(
            "argument must be between {min} and {max} inclusive"
        )),
        Ok(n) => Ok(n),
    }
}

/// The value of setting `name` now, as CONFIG GET shows it.
pub(super) fn value(shared: &Shared, name: &str) -> Option<String> {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .map(|s| (s.get)(shared))
}

/// Redis's check of a yes/no setting.
fn yes_or_no(v: &str) -> Result<(), String> {
    if v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("no") {
        Ok(())
    } else {
        Err("argument must be 'yes' or 'no'".into())
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// Redis's memory values: a number of bytes, with k/m/g (powers of 1000)
/// or kb/mb/gb (powers of 1024), in any case.
fn memory_value(v: &str) -> Option<u64> {
    let v = v.to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// `CONFIG GET pattern...`: the settings whose names match any pattern, as
/// name/value pairs.
pub(super) fn get(o: &mut Vec<u8>, shared: &Shared, patterns: &[&[u8]]) {
    let matches = |name: &str| {
        patterns
            .iter()
            .any(|p| super::pattern::glob(p, name.as_bytes()))
    };
    // Each name that matches, an alias as well as its setting's own, as
    // Redis 7 lists them.
    let aliases = ALIASES.iter().filter_map(|(alias, to)| {
        let s = SETTINGS.iter().find(|s| s.name == *to)?;
        Some((*alias, s))
    });
    let found: Vec<(&str, &Setting)> = (SETTINGS.iter().map(|s| (s.name, s)))
        .chain(aliases)
        .filter(|(name, _)| matches(name))
        .collect();
    resp::array(o, 2 * found.len());
    for (name, s) in found {
        resp::bulk(o, name.as_bytes());
        resp::bulk(o, (s.get)(shared).as_bytes());
    }
}

/// `CONFIG SET name value [name value ...]`: all or nothing, as Redis 7.
pub(super) fn set(shared: &Shared, pairs: &[&[u8]]) -> Result<(), String> {
    let mut todo = Vec::new();
    for pair in pairs.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(pair[1]).to_string();
        match SETTINGS.iter().find(|s| s.name == canonical(&name)) {
            Some(Setting { set: Some(f), .. }) => todo.push((name, *f, value)),
            _ => return Err(strings::config_set_unknown(pair[0])),
        }
    }
    // Every value is checked before any takes effect.
    for (name, (check, _), value) in &todo {
        if let Err(e) = check(value) {
            return Err(strings::config_set_failed(name, &e));
        }
    }
    for (_, (_, apply), value) in todo {
        apply(shared, &value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_values_as_redis_reads_them() {
        assert_eq!(memory_value("100"), Some(100));
        assert_eq!(memory_value("10mb"), Some(10 << 20));
        assert_eq!(memory_value("10M"), Some(10_000_000));
        assert_eq!(memory_value("1GB"), Some(1 << 30));
        assert_eq!(memory_value("abc"), None);
        assert_eq!(memory_value("10tb"), None);
        assert_eq!(memory_value(""), None);
    }
}
