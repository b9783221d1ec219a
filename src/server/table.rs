//! The command table: every command nvkv knows, with its arity and whether
//! a client may send it before AUTH. Dispatch (`command/mod.rs`), `COMMAND
//! COUNT`, INFO's commandstats and /metrics read this one table (as
//! Garnet's RespCommand.cs is read); a command's place in it is its index
//! in the per-command statistics. Below it, what COMMAND INFO and COMMAND
//! DOCS say of each command ([`META`]).

use crate::resp::{self, Proto};

/// A command nvkv knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cmd {
    Get,
    Mget,
    Exists,
    Dbsize,
    Ping,
    Echo,
    Select,
    Quit,
    Command,
    Info,
    Client,
    Set,
    Mset,
    Del,
    Expire,
    Pexpire,
    Ttl,
    Pttl,
    Persist,
    Setnx,
    Setex,
    Psetex,
    Getset,
    Getdel,
    Auth,
    Config,
    Incr,
    Decr,
    Incrby,
    Decrby,
    // Connection and server commands.
    Hello,
    Time,
    Lastsave,
    Save,
    Bgsave,
    // Strings and TTLs.
    Incrbyfloat,
    Append,
    Strlen,
    Getrange,
    Lcs,
    Substr,
    Setrange,
    Getex,
    Msetnx,
    Expireat,
    Pexpireat,
    Expiretime,
    Pexpiretime,
    // Transactions.
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    // Key space: the per-key commands.
    Type,
    Touch,
    Unlink,
    Object,
    Memory,
    Rename,
    Renamenx,
    Copy,
    Dump,
    Restore,
    // Pub/sub and server administration.
    Publish,
    Spublish,
    Subscribe,
    Ssubscribe,
    Psubscribe,
    Unsubscribe,
    Sunsubscribe,
    Punsubscribe,
    Pubsub,
    Slowlog,
    Latency,
    Shutdown,
    Reset,
    // Key space: iteration and flushing.
    Scan,
    Keys,
    Randomkey,
    Flushdb,
    Flushall,
    // Replication.
    Replicaof,
    Slaveof,
    Role,
    Replconf,
    Psync,
    Wait,
}

/// One entry of the table.
#[derive(Debug)]
pub(super) struct Spec {
    pub cmd: Cmd,
    /// The name, upper case.
    pub name: &'static str,
    /// Redis-style: `n` exactly n arguments (the command name included),
    /// `-n` at least n.
    pub arity: i32,
    /// A client may send it before it has authenticated.
    pub before_auth: bool,
}

impl Spec {
    /// Whether `n` arguments (the name included) fit the arity.
    pub fn arity_fits(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity > 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }
}

const fn spec(cmd: Cmd, name: &'static str, arity: i32) -> Spec {
    Spec {
        cmd,
        name,
        arity,
        before_auth: false,
    }
}

/// Every command, in the order INFO and /metrics list them.
pub(super) const COMMANDS: &[Spec] = &[
    spec(Cmd::Get, "GET", 2),
    spec(Cmd::Mget, "MGET", -2),
    spec(Cmd::Exists, "EXISTS", -2),
    spec(Cmd::Dbsize, "DBSIZE", 1),
    spec(Cmd::Ping, "PING", -1),
    spec(Cmd::Echo, "ECHO", 2),
    spec(Cmd::Select, "SELECT", 2),
    Spec {
        before_auth: true,
        ..spec(Cmd::Quit, "QUIT", -1)
    },
    spec(Cmd::Command, "COMMAND", -1),
    spec(Cmd::Info, "INFO", -1),
    spec(Cmd::Client, "CLIENT", -2),
    spec(Cmd::Set, "SET", -3),
    spec(Cmd::Mset, "MSET", -3),
    spec(Cmd::Del, "DEL", -2),
    spec(Cmd::Expire, "EXPIRE", -3),
    spec(Cmd::Pexpire, "PEXPIRE", -3),
    spec(Cmd::Ttl, "TTL", 2),
    spec(Cmd::Pttl, "PTTL", 2),
    spec(Cmd::Persist, "PERSIST", 2),
    spec(Cmd::Setnx, "SETNX", 3),
    spec(Cmd::Setex, "SETEX", 4),
    spec(Cmd::Psetex, "PSETEX", 4),
    spec(Cmd::Getset, "GETSET", 3),
    spec(Cmd::Getdel, "GETDEL", 2),
    Spec {
        before_auth: true,
        ..spec(Cmd::Auth, "AUTH", -2)
    },
    spec(Cmd::Config, "CONFIG", -2),
    spec(Cmd::Incr, "INCR", 2),
    spec(Cmd::Decr, "DECR", 2),
    spec(Cmd::Incrby, "INCRBY", 3),
    spec(Cmd::Decrby, "DECRBY", 3),
    // Connection and server commands.
    Spec {
        before_auth: true,
        ..spec(Cmd::Hello, "HELLO", -1)
    },
    spec(Cmd::Time, "TIME", 1),
    spec(Cmd::Lastsave, "LASTSAVE", 1),
    spec(Cmd::Save, "SAVE", 1),
    spec(Cmd::Bgsave, "BGSAVE", -1),
    // Strings and TTLs.
    spec(Cmd::Incrbyfloat, "INCRBYFLOAT", 3),
    spec(Cmd::Append, "APPEND", 3),
    spec(Cmd::Strlen, "STRLEN", 2),
    spec(Cmd::Getrange, "GETRANGE", 4),
    spec(Cmd::Lcs, "LCS", -3),
    spec(Cmd::Substr, "SUBSTR", 4),
    spec(Cmd::Setrange, "SETRANGE", 4),
    spec(Cmd::Getex, "GETEX", -2),
    spec(Cmd::Msetnx, "MSETNX", -3),
    spec(Cmd::Expireat, "EXPIREAT", -3),
    spec(Cmd::Pexpireat, "PEXPIREAT", -3),
    spec(Cmd::Expiretime, "EXPIRETIME", 2),
    spec(Cmd::Pexpiretime, "PEXPIRETIME", 2),
    // Transactions.
    spec(Cmd::Multi, "MULTI", 1),
    spec(Cmd::Exec, "EXEC", 1),
    spec(Cmd::Discard, "DISCARD", 1),
    spec(Cmd::Watch, "WATCH", -2),
    spec(Cmd::Unwatch, "UNWATCH", 1),
    // Key space: the per-key commands.
    spec(Cmd::Type, "TYPE", 2),
    spec(Cmd::Touch, "TOUCH", -2),
    spec(Cmd::Unlink, "UNLINK", -2),
    spec(Cmd::Object, "OBJECT", -2),
    spec(Cmd::Memory, "MEMORY", -2),
    spec(Cmd::Rename, "RENAME", 3),
    spec(Cmd::Renamenx, "RENAMENX", 3),
    spec(Cmd::Copy, "COPY", -3),
    spec(Cmd::Dump, "DUMP", 2),
    spec(Cmd::Restore, "RESTORE", -4),
    // Pub/sub and server administration.
    spec(Cmd::Publish, "PUBLISH", 3),
    spec(Cmd::Subscribe, "SUBSCRIBE", -2),
    spec(Cmd::Psubscribe, "PSUBSCRIBE", -2),
    spec(Cmd::Unsubscribe, "UNSUBSCRIBE", -1),
    spec(Cmd::Punsubscribe, "PUNSUBSCRIBE", -1),
    spec(Cmd::Pubsub, "PUBSUB", -2),
    spec(Cmd::Spublish, "SPUBLISH", 3),
    spec(Cmd::Ssubscribe, "SSUBSCRIBE", -2),
    spec(Cmd::Sunsubscribe, "SUNSUBSCRIBE", -1),
    spec(Cmd::Slowlog, "SLOWLOG", -2),
    spec(Cmd::Latency, "LATENCY", -2),
    spec(Cmd::Shutdown, "SHUTDOWN", -1),
    Spec {
        before_auth: true,
        ..spec(Cmd::Reset, "RESET", 1)
    },
    // Key space: iteration and flushing.
    spec(Cmd::Scan, "SCAN", -2),
    spec(Cmd::Keys, "KEYS", 2),
    spec(Cmd::Randomkey, "RANDOMKEY", 1),
    spec(Cmd::Flushdb, "FLUSHDB", -1),
    spec(Cmd::Flushall, "FLUSHALL", -1),
    // Replication.
    spec(Cmd::Replicaof, "REPLICAOF", 3),
    spec(Cmd::Slaveof, "SLAVEOF", 3),
    spec(Cmd::Role, "ROLE", 1),
    spec(Cmd::Replconf, "REPLCONF", -1),
    spec(Cmd::Psync, "PSYNC", -3),
    spec(Cmd::Wait, "WAIT", 3),
];

/// Commands nvkv refuses on purpose, with what it says instead of
/// `unknown command` (they are not in [`COMMANDS`]: COMMAND does not list
/// them).
pub(super) const REFUSED: &[(&str, &str)] = &[
    ("EVAL", SCRIPTING),
    ("EVAL_RO", SCRIPTING),
    ("EVALSHA", SCRIPTING),
    ("EVALSHA_RO", SCRIPTING),
    ("SCRIPT", SCRIPTING),
    ("FUNCTION", SCRIPTING),
    ("FCALL", SCRIPTING),
    ("FCALL_RO", SCRIPTING),
];

const SCRIPTING: &str = "ERR scripting is not supported by nvkv: EVAL, EVALSHA, SCRIPT, FUNCTION and FCALL are refused; nvkv runs string commands only (see COMMAND LIST)";

/// What nvkv says instead of running `name`, if it refuses it.
pub(super) fn refused(name: &[u8]) -> Option<&'static str> {
    (REFUSED.iter())
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|&(_, msg)| msg)
}

/// The command called `name` (in any case), and its index in [`COMMANDS`].
pub(super) fn lookup(name: &[u8]) -> Option<(u16, &'static Spec)> {
    let i = COMMANDS
        .iter()
        .position(|s| s.name.as_bytes().eq_ignore_ascii_case(name))?;
    Some((i as u16, &COMMANDS[i]))
}

/// Where command statistics are kept: a slot per command, and one per
/// subcommand of a container command (CONFIG, CLIENT, OBJECT, …), as
/// Redis 7's INFO commandstats (`cmdstat_config|get`).
pub(super) struct StatSlots {
    /// The first slot of each command of [`COMMANDS`] (its own); its
    /// subcommands' follow, in [`Meta::subcommands`]' order.
    first: Vec<u16>,
    /// Each slot's name as INFO shows it (`get`, `config|get`).
    names: Vec<String>,
}

impl StatSlots {
    /// The slots.
    pub fn get() -> &'static StatSlots {
        static SLOTS: std::sync::OnceLock<StatSlots> = std::sync::OnceLock::new();
        SLOTS.get_or_init(|| {
            let mut first = Vec::with_capacity(COMMANDS.len());
            let mut names = Vec::new();
            for spec in COMMANDS {
                first.push(names.len() as u16);
                names.push(spec.name.to_ascii_lowercase());
                let subs = meta_of(spec.name.as_bytes()).map_or(&[][..], |m| m.subcommands);
                names.extend(subs.iter().map(|m| m.name.to_ascii_lowercase()));
            }
            StatSlots { first, names }
        })
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// The slot of command `index` of [`COMMANDS`], and of its
    /// subcommand `sub` (1-based position; 0: the command itself).
    pub fn of(&self, index: u16, sub: u32) -> u16 {
        self.first[index as usize] + sub as u16
    }

    /// Whether command `index` of [`COMMANDS`] has subcommands.
    pub fn container(&self, index: u16) -> bool {
        let i = index as usize;
        let end = self
            .first
            .get(i + 1)
            .map_or(self.names.len(), |&n| n as usize);
        end - self.first[i] as usize > 1
    }

    /// Slot `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
}

// ---------------------------------------------------------------------
// COMMAND INFO, COMMAND DOCS, COMMAND LIST and COMMAND GETKEYS read what
// follows: for each command of [`COMMANDS`] (and the subcommands nvkv has),
// Redis 7's description of the same command, so that clients that read it
// (redis-cli's hints, cluster clients' key positions) see what they see
// against Redis. The data is Redis 7.0's own (`COMMAND INFO` and `COMMAND
// DOCS` of redis-server 7.0), CLIENT NO-TOUCH and SETINFO's from 7.2.

/// What `COMMAND INFO` and `COMMAND DOCS` say about a command.
#[derive(Debug)]
pub(super) struct Meta {
    /// Lower case; `client|list` for a subcommand.
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end), step.
    pub keys: (i32, i32, i32),
    pub acl: &'static [&'static str],
    pub tips: &'static [&'static str],
    pub key_specs: &'static [KeySpec],
    pub summary: &'static str,
    pub since: &'static str,
    pub group: &'static str,
    pub complexity: Option<&'static str>,
    pub doc_flags: &'static [&'static str],
    pub deprecated_since: Option<&'static str>,
    pub replaced_by: Option<&'static str>,
    /// (version, change).
    pub history: &'static [(&'static str, &'static str)],
    pub args: &'static [Arg],
    pub subcommands: &'static [Meta],
}

/// Where a command's keys are (Redis's key specs).
#[derive(Debug)]
pub(super) struct KeySpec {
    pub notes: Option<&'static str>,
    pub flags: &'static [&'static str],
    pub begin: Begin,
    pub find: Find,
}

#[derive(Debug)]
pub(super) enum Begin {
    Index(i32),
    #[allow(dead_code)] // none of nvkv's commands has one yet
    Keyword {
        keyword: &'static str,
        startfrom: i32,
    },
}

#[derive(Debug)]
pub(super) enum Find {
    Range {
        lastkey: i32,
        keystep: i32,
        limit: i32,
    },
    #[allow(dead_code)] // none of nvkv's commands has one yet
    Keynum {
        keynumidx: i32,
        firstkey: i32,
        keystep: i32,
    },
}

/// One argument in `COMMAND DOCS`.
#[derive(Debug)]
pub(super) struct Arg {
    pub name: &'static str,
    /// `key`, `string`, `integer`, `pure-token`, `oneof`, `block`, …
    pub kind: &'static str,
    pub key_spec_index: Option<i32>,
    pub token: Option<&'static str>,
    pub since: Option<&'static str>,
    pub deprecated_since: Option<&'static str>,
    /// `optional`, `multiple`, `multiple_token`.
    pub flags: &'static [&'static str],
    pub args: &'static [Arg],
}

const fn arg(name: &'static str, kind: &'static str) -> Arg {
    Arg {
        name,
        kind,
        key_spec_index: None,
        token: None,
        since: None,
        deprecated_since: None,
        flags: &[],
        args: &[],
    }
}

const fn meta(
    name: &'static str,
    arity: i32,
    summary: &'static str,
    since: &'static str,
    group: &'static str,
) -> Meta {
    Meta {
        name,
        arity,
        flags: &[],
        keys: (0, 0, 0),
        acl: &[],
        tips: &[],
        key_specs: &[],
        summary,
        since,
        group,
        complexity: None,
        doc_flags: &[],
        deprecated_since: None,
        replaced_by: None,
        history: &[],
        args: &[],
        subcommands: &[],
    }
}

/// The description of command `name` (any case; `client|list` for a
/// subcommand). A command of [`COMMANDS`] without one gets a bare one
/// ([`Meta::bare`]).
pub(super) fn meta_of(name: &[u8]) -> Option<&'static Meta> {
    let (cmd, sub) = match name.iter().position(|&b| b == b'|') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    let top = META
        .iter()
        .find(|m| m.name.as_bytes().eq_ignore_ascii_case(cmd))?;
    match sub {
        None => Some(top),
        Some(sub) => subcommand(top, sub),
    }
}

/// Subcommand `sub` (any case) of `top`.
pub(super) fn subcommand(top: &'static Meta, sub: &[u8]) -> Option<&'static Meta> {
    top.subcommands.iter().find(|m| {
        m.name
            .split_once('|')
            .is_some_and(|(_, s)| s.as_bytes().eq_ignore_ascii_case(sub))
    })
}

/// A description for a command of the table that has none in [`META`]:
/// its name and arity, no keys known.
static BARE: std::sync::OnceLock<Vec<Meta>> = std::sync::OnceLock::new();

impl Meta {
    /// Every command's description, in the table's order.
    pub(super) fn all() -> Vec<&'static Meta> {
        let bare = BARE.get_or_init(|| {
            (COMMANDS.iter())
                .filter(|s| meta_of(s.name.as_bytes()).is_none())
                .map(|s| Meta {
                    name: s.name.to_ascii_lowercase().leak(),
                    ..meta("", s.arity, "", "", "")
                })
                .collect()
        });
        (COMMANDS.iter())
            .map(|s| {
                meta_of(s.name.as_bytes())
                    .or_else(|| bare.iter().find(|m| m.name.eq_ignore_ascii_case(s.name)))
                    .expect("every command has a description")
            })
            .collect()
    }

    /// The positions of the keys in `args` (the command name first), as
    /// `COMMAND GETKEYS` finds them: from the first key to the last by
    /// step (a negative last counts from the end).
    pub(super) fn key_positions(&self, argc: usize) -> Vec<usize> {
        let (first, last, step) = self.keys;
        if first <= 0 || step <= 0 {
            return Vec::new();
        }
        let last = if last < 0 { argc as i32 + last } else { last };
        (first..=last.min(argc as i32 - 1))
            .step_by(step as usize)
            .map(|i| i as usize)
            .collect()
    }

    /// The arity nvkv takes the command with: its table's for a command
    /// (where nvkv lacks options of Redis's, it may differ from Redis's),
    /// Redis's for a subcommand.
    /// Whether the command has key arguments, as Redis's
    /// `doesCommandHaveKeys`: a key spec not marked `not_key` (shard
    /// channels are keys to Redis Cluster only).
    pub(super) fn has_keys(&self) -> bool {
        self.keys.0 != 0 && !self.key_specs.iter().all(|k| k.flags.contains(&"not_key"))
    }

    pub(super) fn arity(&self) -> i32 {
        match lookup(self.name.as_bytes()) {
            Some((_, spec)) => spec.arity,
            None => self.arity,
        }
    }

    /// Appends this command's `COMMAND INFO` entry.
    pub(super) fn write_info(&self, o: &mut Vec<u8>, p: Proto) {
        resp::array(o, 10);
        resp::bulk(o, self.name.as_bytes());
        resp::int(o, self.arity() as i64);
        simple_set(o, self.flags, p);
        resp::int(o, self.keys.0 as i64);
        resp::int(o, self.keys.1 as i64);
        resp::int(o, self.keys.2 as i64);
        simple_set(o, self.acl, p);
        resp::set(o, self.tips.len(), p);
        for t in self.tips {
            resp::bulk(o, t.as_bytes());
        }
        resp::set(o, self.key_specs.len(), p);
        for k in self.key_specs {
            k.write(o, p);
        }
        // As Redis: an empty set when there are none, else an array.
        match self.subcommands.len() {
            0 => resp::set(o, 0, p),
            n => resp::array(o, n),
        }
        for s in self.subcommands {
            s.write_info(o, p);
        }
    }

    /// Appends this command's `COMMAND DOCS` entry (the map after its
    /// name).
    pub(super) fn write_docs(&self, o: &mut Vec<u8>, p: Proto) {
        let n = 3
            + usize::from(self.complexity.is_some())
            + usize::from(!self.doc_flags.is_empty())
            + usize::from(self.deprecated_since.is_some())
            + usize::from(self.replaced_by.is_some())
            + usize::from(!self.history.is_empty())
            + usize::from(!self.args.is_empty())
            + usize::from(!self.subcommands.is_empty());
        resp::map(o, n, p);
        pair(o, "summary", self.summary);
        pair(o, "since", self.since);
        pair(o, "group", self.group);
        if let Some(c) = self.complexity {
            pair(o, "complexity", c);
        }
        if !self.doc_flags.is_empty() {
            resp::bulk(o, b"doc_flags");
            simple_set(o, self.doc_flags, p);
        }
        if let Some(v) = self.deprecated_since {
            pair(o, "deprecated_since", v);
        }
        if let Some(v) = self.replaced_by {
            pair(o, "replaced_by", v);
        }
        if !self.history.is_empty() {
            resp::bulk(o, b"history");
            resp::set(o, self.history.len(), p);
            for (version, change) in self.history {
                resp::array(o, 2);
                resp::bulk(o, version.as_bytes());
                resp::bulk(o, change.as_bytes());
            }
        }
        if !self.args.is_empty() {
            resp::bulk(o, b"arguments");
            write_args(o, self.args, p);
        }
        if !self.subcommands.is_empty() {
            resp::bulk(o, b"subcommands");
            resp::map(o, self.subcommands.len(), p);
            for s in self.subcommands {
                resp::bulk(o, s.name.as_bytes());
                s.write_docs(o, p);
            }
        }
    }
}

impl KeySpec {
    fn write(&self, o: &mut Vec<u8>, p: Proto) {
        resp::map(o, 3 + usize::from(self.notes.is_some()), p);
        if let Some(n) = self.notes {
            pair(o, "notes", n);
        }
        resp::bulk(o, b"flags");
        simple_set(o, self.flags, p);
        resp::bulk(o, b"begin_search");
        resp::map(o, 2, p);
        match self.begin {
            Begin::Index(i) => {
                pair(o, "type", "index");
                resp::bulk(o, b"spec");
                resp::map(o, 1, p);
                int_pair(o, "index", i);
            }
            Begin::Keyword { keyword, startfrom } => {
                pair(o, "type", "keyword");
                resp::bulk(o, b"spec");
                resp::map(o, 2, p);
                pair(o, "keyword", keyword);
                int_pair(o, "startfrom", startfrom);
            }
        }
        resp::bulk(o, b"find_keys");
        resp::map(o, 2, p);
        match self.find {
            Find::Range {
                lastkey,
                keystep,
                limit,
            } => {
                pair(o, "type", "range");
                resp::bulk(o, b"spec");
                resp::map(o, 3, p);
                int_pair(o, "lastkey", lastkey);
                int_pair(o, "keystep", keystep);
                int_pair(o, "limit", limit);
            }
            Find::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                pair(o, "type", "keynum");
                resp::bulk(o, b"spec");
                resp::map(o, 3, p);
                int_pair(o, "keynumidx", keynumidx);
                int_pair(o, "firstkey", firstkey);
                int_pair(o, "keystep", keystep);
            }
        }
    }
}

fn write_args(o: &mut Vec<u8>, args: &[Arg], p: Proto) {
    resp::array(o, args.len());
    for a in args {
        let n = 2
            + usize::from(a.key_spec_index.is_some())
            + usize::from(a.token.is_some())
            + usize::from(a.since.is_some())
            + usize::from(a.deprecated_since.is_some())
            + usize::from(!a.flags.is_empty())
            + usize::from(!a.args.is_empty());
        resp::map(o, n, p);
        pair(o, "name", a.name);
        pair(o, "type", a.kind);
        if let Some(i) = a.key_spec_index {
            int_pair(o, "key_spec_index", i);
        }
        if let Some(t) = a.token {
            pair(o, "token", t);
        }
        if let Some(s) = a.since {
            pair(o, "since", s);
        }
        if let Some(s) = a.deprecated_since {
            pair(o, "deprecated_since", s);
        }
        if !a.flags.is_empty() {
            resp::bulk(o, b"flags");
            simple_set(o, a.flags, p);
        }
        if !a.args.is_empty() {
            resp::bulk(o, b"arguments");
            write_args(o, a.args, p);
        }
    }
}

/// A set of simple strings (command flags, ACL categories).
fn simple_set(o: &mut Vec<u8>, items: &[&str], p: Proto) {
    resp::set(o, items.len(), p);
    for i in items {
        resp::simple(o, i);
    }
}

fn pair(o: &mut Vec<u8>, k: &str, v: &str) {
    resp::bulk(o, k.as_bytes());
    resp::bulk(o, v.as_bytes());
}

fn int_pair(o: &mut Vec<u8>, k: &str, v: i32) {
    resp::bulk(o, k.as_bytes());
    resp::int(o, v as i64);
}

/// CLIENT's subcommands from Redis 7.2, which 7.0 lacks.
const CLIENT_NO_TOUCH: Meta = Meta {
    flags: &["noscript", "loading", "stale"],
    acl: &["@slow", "@connection"],
    complexity: Some("O(1)"),
    args: &[Arg {
        args: &[
            Arg {
                token: Some("ON"),
                ..arg("on", "pure-token")
            },
            Arg {
                token: Some("OFF"),
                ..arg("off", "pure-token")
            },
        ],
        ..arg("enabled", "oneof")
    }],
    ..meta(
        "client|no-touch",
        3,
        "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
        "7.2.0",
        "connection",
    )
};

const CLIENT_SETINFO: Meta = Meta {
    flags: &["noscript", "loading", "stale"],
    acl: &["@slow", "@connection"],
    complexity: Some("O(1)"),
    args: &[Arg {
        args: &[
            Arg {
                token: Some("LIB-NAME"),
                ..arg("libname", "string")
            },
            Arg {
                token: Some("LIB-VER"),
                ..arg("libver", "string")
            },
        ],
        ..arg("attr", "oneof")
    }],
    ..meta(
        "client|setinfo",
        4,
        "Sets information specific to the client or connection.",
        "7.2.0",
        "connection",
    )
};

pub(super) const META: &[Meta] = &[
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@read", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("get", 2, "Get the value of a key", "1.0.0", "string") },
    Meta { flags: &["readonly", "fast"], keys: (1, -1, 1), acl: &["@read", "@string", "@fast"], tips: &["request_policy:multi_shard"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of keys to retrieve."), args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("mget", -2, "Get the values of all the given keys", "1.0.0", "string") },
    Meta { flags: &["readonly", "fast"], keys: (1, -1, 1), acl: &["@keyspace", "@read", "@fast"], tips: &["request_policy:multi_shard", "response_policy:agg_sum"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of keys to check."), history: &[("3.0.3", "Accepts multiple `key` arguments.")], args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("exists", -2, "Determine if a key exists", "1.0.0", "generic") },
    Meta { flags: &["readonly", "fast"], acl: &["@keyspace", "@read", "@fast"], tips: &["request_policy:all_shards", "response_policy:agg_sum"], complexity: Some("O(1)"), ..meta("dbsize", 1, "Return the number of keys in the selected database", "1.0.0", "server") },
    Meta { flags: &["fast"], acl: &["@fast", "@connection"], tips: &["request_policy:all_shards", "response_policy:all_succeeded"], complexity: Some("O(1)"), args: &[Arg { flags: &["optional"], ..arg("message", "string") }], ..meta("ping", -1, "Ping the server", "1.0.0", "connection") },
    Meta { flags: &["loading", "stale", "fast"], acl: &["@fast", "@connection"], complexity: Some("O(1)"), args: &[arg("message", "string")], ..meta("echo", 2, "Echo the given string", "1.0.0", "connection") },
    Meta { flags: &["loading", "stale", "fast"], acl: &["@fast", "@connection"], complexity: Some("O(1)"), args: &[arg("index", "integer")], ..meta("select", 2, "Change the selected database for the current connection", "1.0.0", "connection") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], acl: &["@fast", "@connection"], complexity: Some("O(1)"), ..meta("quit", -1, "Close the connection", "1.0.0", "connection") },
    Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], tips: &["nondeterministic_output_order"], complexity: Some("O(N) where N is the total number of Redis commands"), subcommands: &[Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(1)"), ..meta("command|count", 2, "Get total number of Redis commands", "2.8.13", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], tips: &["nondeterministic_output_order"], complexity: Some("O(N) where N is the number of commands to look up"), history: &[("7.0.0", "Allowed to be called with no argument to get info on all commands.")], args: &[Arg { flags: &["optional", "multiple"], ..arg("command-name", "string") }], ..meta("command|info", -2, "Get array of specific Redis command details, or all when no argument is given.", "2.8.13", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], tips: &["nondeterministic_output_order"], complexity: Some("O(N) where N is the number of commands to look up"), args: &[Arg { flags: &["optional", "multiple"], ..arg("command-name", "string") }], ..meta("command|docs", -2, "Get array of specific Redis command documentation", "7.0.0", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], tips: &["nondeterministic_output_order"], complexity: Some("O(N) where N is the total number of Redis commands"), args: &[Arg { token: Some("FILTERBY"), flags: &["optional"], args: &[Arg { token: Some("MODULE"), ..arg("module-name", "string") }, Arg { token: Some("ACLCAT"), ..arg("category", "string") }, Arg { token: Some("PATTERN"), ..arg("pattern", "pattern") }], ..arg("filterby", "oneof") }], ..meta("command|list", -2, "Get an array of Redis command names", "7.0.0", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(N) where N is the number of arguments to the command"), ..meta("command|getkeys", -4, "Extract keys given a full Redis command", "2.8.13", "server") }], ..meta("command", -1, "Get array of Redis command details", "2.8.13", "server") },
    Meta { flags: &["loading", "stale"], acl: &["@slow", "@dangerous"], tips: &["nondeterministic_output", "request_policy:all_shards", "response_policy:special"], complexity: Some("O(1)"), history: &[("7.0.0", "Added support for taking multiple section arguments.")], args: &[Arg { flags: &["optional", "multiple"], ..arg("section", "string") }], ..meta("info", -1, "Get information and statistics about the server", "1.0.0", "server") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["noscript", "loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(1)"), ..meta("client|id", 2, "Returns the client ID for the current connection", "5.0.0", "connection") }, Meta { flags: &["noscript", "loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(1)"), args: &[arg("connection-name", "string")], ..meta("client|setname", 3, "Set the current connection name", "2.6.9", "connection") }, Meta { flags: &["noscript", "loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(1)"), ..meta("client|getname", 2, "Get the current connection name", "2.6.9", "connection") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous", "@connection"], tips: &["nondeterministic_output"], complexity: Some("O(N) where N is the number of client connections"), history: &[("2.8.12", "Added unique client `id` field."), ("5.0.0", "Added optional `TYPE` filter."), ("6.0.0", "Added `user` field."), ("6.2.0", "Added `argv-mem`, `tot-mem`, `laddr` and `redir` fields and the optional `ID` filter."), ("7.0.0", "Added `resp`, `multi-mem`, `rbs` and `rbp` fields."), ("7.0.3", "Added `ssub` field.")], args: &[Arg { token: Some("TYPE"), since: Some("5.0.0"), flags: &["optional"], args: &[Arg { token: Some("NORMAL"), ..arg("normal", "pure-token") }, Arg { token: Some("MASTER"), ..arg("master", "pure-token") }, Arg { token: Some("REPLICA"), ..arg("replica", "pure-token") }, Arg { token: Some("PUBSUB"), ..arg("pubsub", "pure-token") }], ..arg("normal_master_replica_pubsub", "oneof") }, Arg { token: Some("ID"), since: Some("6.2.0"), flags: &["optional"], args: &[Arg { flags: &["multiple"], ..arg("client-id", "integer") }], ..arg("id", "block") }], ..meta("client|list", -2, "Get the list of client connections", "2.4.0", "connection") }, Meta { flags: &["noscript", "loading", "stale"], acl: &["@slow", "@connection"], tips: &["nondeterministic_output"], complexity: Some("O(1)"), ..meta("client|info", 2, "Returns information about the current client connection.", "6.2.0", "connection") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous", "@connection"], complexity: Some("O(N) where N is the number of client connections"), history: &[("2.8.12", "Added new filter format."), ("2.8.12", "`ID` option."), ("3.2.0", "Added `master` type in for `TYPE` option."), ("5.0.0", "Replaced `slave` `TYPE` with `replica`. `slave` still supported for backward compatibility."), ("6.2.0", "`LADDR` option.")], args: &[Arg { args: &[Arg { deprecated_since: Some("2.8.12"), ..arg("ip:port", "string") }, Arg { flags: &["multiple"], args: &[Arg { token: Some("ID"), since: Some("2.8.12"), flags: &["optional"], ..arg("client-id", "integer") }, Arg { token: Some("TYPE"), since: Some("2.8.12"), flags: &["optional"], args: &[Arg { token: Some("NORMAL"), ..arg("normal", "pure-token") }, Arg { token: Some("MASTER"), since: Some("3.2.0"), ..arg("master", "pure-token") }, Arg { token: Some("SLAVE"), ..arg("slave", "pure-token") }, Arg { token: Some("REPLICA"), since: Some("5.0.0"), ..arg("replica", "pure-token") }, Arg { token: Some("PUBSUB"), ..arg("pubsub", "pure-token") }], ..arg("normal_master_slave_pubsub", "oneof") }, Arg { token: Some("USER"), flags: &["optional"], ..arg("username", "string") }, Arg { token: Some("ADDR"), flags: &["optional"], ..arg("ip:port", "string") }, Arg { token: Some("LADDR"), since: Some("6.2.0"), flags: &["optional"], ..arg("ip:port", "string") }, Arg { token: Some("SKIPME"), flags: &["optional"], ..arg("yes/no", "string") }], ..arg("new-format", "oneof") }], ..arg("filter", "oneof") }], ..meta("client|kill", -3, "Kill the connection of a client", "2.4.0", "connection") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous", "@connection"], complexity: Some("O(1)"), args: &[Arg { args: &[Arg { token: Some("ON"), ..arg("on", "pure-token") }, Arg { token: Some("OFF"), ..arg("off", "pure-token") }], ..arg("enabled", "oneof") }], ..meta("client|no-evict", 3, "Set client eviction mode for the current connection", "7.0.0", "connection") }, Meta { flags: &["noscript", "loading", "stale"], acl: &["@slow", "@connection"], complexity: Some("O(1)"), args: &[Arg { args: &[Arg { token: Some("ON"), ..arg("on", "pure-token") }, Arg { token: Some("OFF"), ..arg("off", "pure-token") }, Arg { token: Some("SKIP"), ..arg("skip", "pure-token") }], ..arg("on_off_skip", "oneof") }], ..meta("client|reply", 3, "Instruct the server whether to reply to commands", "3.2.0", "connection") }, CLIENT_NO_TOUCH, CLIENT_SETINFO], ..meta("client", -2, "A container for client connection commands", "2.4.0", "connection") },
    Meta { flags: &["write", "denyoom"], keys: (1, 1, 1), acl: &["@write", "@string", "@slow"], key_specs: &[KeySpec { notes: Some("RW and ACCESS due to the optional `GET` argument"), flags: &["RW", "access", "update", "variable_flags"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("2.6.12", "Added the `EX`, `PX`, `NX` and `XX` options."), ("6.0.0", "Added the `KEEPTTL` option."), ("6.2.0", "Added the `GET`, `EXAT` and `PXAT` option."), ("7.0.0", "Allowed the `NX` and `GET` options to be used together.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string"), Arg { since: Some("2.6.12"), flags: &["optional"], args: &[Arg { token: Some("NX"), ..arg("nx", "pure-token") }, Arg { token: Some("XX"), ..arg("xx", "pure-token") }], ..arg("condition", "oneof") }, Arg { token: Some("GET"), since: Some("6.2.0"), flags: &["optional"], ..arg("get", "pure-token") }, Arg { flags: &["optional"], args: &[Arg { token: Some("EX"), since: Some("2.6.12"), ..arg("seconds", "integer") }, Arg { token: Some("PX"), since: Some("2.6.12"), ..arg("milliseconds", "integer") }, Arg { token: Some("EXAT"), since: Some("6.2.0"), ..arg("unix-time-seconds", "unix-time") }, Arg { token: Some("PXAT"), since: Some("6.2.0"), ..arg("unix-time-milliseconds", "unix-time") }, Arg { token: Some("KEEPTTL"), since: Some("6.0.0"), ..arg("keepttl", "pure-token") }], ..arg("expiration", "oneof") }], ..meta("set", -3, "Set the string value of a key", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom"], keys: (1, -1, 2), acl: &["@write", "@string", "@slow"], tips: &["request_policy:multi_shard", "response_policy:all_succeeded"], key_specs: &[KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 2, limit: 0 } }], complexity: Some("O(N) where N is the number of keys to set."), args: &[Arg { flags: &["multiple"], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string")], ..arg("key_value", "block") }], ..meta("mset", -3, "Set multiple keys to multiple values", "1.0.1", "string") },
    Meta { flags: &["write"], keys: (1, -1, 1), acl: &["@keyspace", "@write", "@slow"], tips: &["request_policy:multi_shard", "response_policy:agg_sum"], key_specs: &[KeySpec { notes: None, flags: &["RM", "delete"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of keys that will be removed. When a key to remove holds a value other than a string, the individual complexity for this key is O(M) where M is the number of elements in the list, set, sorted set or hash. Removing a single key that holds a string value is O(1)."), args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("del", -2, "Delete a key", "1.0.0", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("7.0.0", "Added options: `NX`, `XX`, `GT` and `LT`.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("seconds", "integer"), Arg { since: Some("7.0.0"), flags: &["optional"], args: &[Arg { token: Some("NX"), ..arg("nx", "pure-token") }, Arg { token: Some("XX"), ..arg("xx", "pure-token") }, Arg { token: Some("GT"), ..arg("gt", "pure-token") }, Arg { token: Some("LT"), ..arg("lt", "pure-token") }], ..arg("condition", "oneof") }], ..meta("expire", -3, "Set a key's time to live in seconds", "1.0.0", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("7.0.0", "Added options: `NX`, `XX`, `GT` and `LT`.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("milliseconds", "integer"), Arg { since: Some("7.0.0"), flags: &["optional"], args: &[Arg { token: Some("NX"), ..arg("nx", "pure-token") }, Arg { token: Some("XX"), ..arg("xx", "pure-token") }, Arg { token: Some("GT"), ..arg("gt", "pure-token") }, Arg { token: Some("LT"), ..arg("lt", "pure-token") }], ..arg("condition", "oneof") }], ..meta("pexpire", -3, "Set a key's time to live in milliseconds", "2.6.0", "generic") },
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@fast"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("2.8.0", "Added the -2 reply.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("ttl", 2, "Get the time to live for a key in seconds", "1.0.0", "generic") },
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@fast"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("2.8.0", "Added the -2 reply.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("pttl", 2, "Get the time to live for a key in milliseconds", "2.6.0", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("persist", 2, "Remove the expiration from a key", "2.2.0", "generic") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["OW", "insert"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string")], ..meta("setnx", 3, "Set the value of a key, only if the key does not exist", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom"], keys: (1, 1, 1), acl: &["@write", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("seconds", "integer"), arg("value", "string")], ..meta("setex", 4, "Set the value and expiration of a key", "2.0.0", "string") },
    Meta { flags: &["write", "denyoom"], keys: (1, 1, 1), acl: &["@write", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("milliseconds", "integer"), arg("value", "string")], ..meta("psetex", 4, "Set the value and expiration in milliseconds of a key", "2.6.0", "string") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), doc_flags: &["deprecated"], deprecated_since: Some("6.2.0"), replaced_by: Some("`SET` with the `!GET` argument"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string")], ..meta("getset", 3, "Set the string value of a key and return its old value", "1.0.0", "string") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "delete"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("getdel", 2, "Get the value of a key and delete the key", "6.2.0", "string") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], acl: &["@fast", "@connection"], complexity: Some("O(N) where N is the number of passwords defined for the user"), history: &[("6.0.0", "Added ACL style (username and password).")], args: &[Arg { since: Some("6.0.0"), flags: &["optional"], ..arg("username", "string") }, arg("password", "string")], ..meta("auth", -2, "Authenticate to the server", "1.0.0", "connection") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(N) when N is the number of configuration parameters provided"), history: &[("7.0.0", "Added the ability to pass multiple pattern parameters in one call")], args: &[Arg { flags: &["multiple"], args: &[arg("parameter", "string")], ..arg("parameter", "block") }], ..meta("config|get", -3, "Get the values of configuration parameters", "2.0.0", "server") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["request_policy:all_nodes", "response_policy:all_succeeded"], complexity: Some("O(N) when N is the number of configuration parameters provided"), history: &[("7.0.0", "Added the ability to set multiple parameters in one call.")], args: &[Arg { flags: &["multiple"], args: &[arg("parameter", "string"), arg("value", "string")], ..arg("parameter_value", "block") }], ..meta("config|set", -4, "Set configuration parameters to the given values", "2.0.0", "server") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), ..meta("config|resetstat", 2, "Reset the stats returned by INFO", "2.0.0", "server") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), ..meta("config|rewrite", 2, "Rewrite the configuration file with the in memory configuration", "2.8.0", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow"], complexity: Some("O(1)"), ..meta("config|help", 2, "Show helpful text about the different subcommands", "5.0.0", "server") }], ..meta("config", -2, "A container for server configuration commands", "2.0.0", "server") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("incr", 2, "Increment the integer value of a key by one", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("decr", 2, "Decrement the integer value of a key by one", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("increment", "integer")], ..meta("incrby", 3, "Increment the integer value of a key by the given amount", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("decrement", "integer")], ..meta("decrby", 3, "Decrement the integer value of a key by the given number", "1.0.0", "string") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], acl: &["@fast", "@connection"], complexity: Some("O(1)"), history: &[("6.2.0", "`protover` made optional; when called without arguments the command reports the current connection's context.")], args: &[Arg { flags: &["optional"], args: &[arg("protover", "integer"), Arg { token: Some("AUTH"), flags: &["optional"], args: &[arg("username", "string"), arg("password", "string")], ..arg("username_password", "block") }, Arg { token: Some("SETNAME"), flags: &["optional"], ..arg("clientname", "string") }], ..arg("arguments", "block") }], ..meta("hello", -1, "Handshake with Redis", "6.0.0", "connection") },
    Meta { flags: &["loading", "stale", "fast"], acl: &["@fast"], tips: &["nondeterministic_output"], complexity: Some("O(1)"), ..meta("time", 1, "Return the current server time", "2.6.0", "server") },
    Meta { flags: &["loading", "stale", "fast"], acl: &["@admin", "@fast", "@dangerous"], tips: &["nondeterministic_output"], complexity: Some("O(1)"), ..meta("lastsave", 1, "Get the UNIX time stamp of the last successful save to disk", "1.0.0", "server") },
    Meta { flags: &["admin", "noscript", "no_async_loading", "no_multi"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(N) where N is the total number of keys in all databases"), ..meta("save", 1, "Synchronously save the dataset to disk", "1.0.0", "server") },
    Meta { flags: &["admin", "noscript", "no_async_loading"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), history: &[("3.2.2", "Added the `SCHEDULE` option.")], args: &[Arg { token: Some("SCHEDULE"), since: Some("3.2.2"), flags: &["optional"], ..arg("schedule", "pure-token") }], ..meta("bgsave", -1, "Asynchronously save the dataset to disk", "1.0.0", "server") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("increment", "double")], ..meta("incrbyfloat", 3, "Increment the float value of a key by the given amount", "2.6.0", "string") },
    Meta { flags: &["write", "denyoom", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "insert"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1). The amortized time complexity is O(1) assuming the appended value is small and the already present value is of any size, since the dynamic string library used by Redis will double the free space available on every reallocation."), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string")], ..meta("append", 3, "Append a value to a key", "2.0.0", "string") },
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@read", "@string", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("strlen", 2, "Get the length of the value stored in a key", "2.2.0", "string") },
    Meta { flags: &["readonly"], keys: (1, 1, 1), acl: &["@read", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings."), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("start", "integer"), arg("end", "integer")], ..meta("getrange", 4, "Get a substring of the string stored at a key", "2.4.0", "string") },
    Meta { flags: &["readonly"], keys: (1, 2, 1), acl: &["@read", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 1, keystep: 1, limit: 0 } }], complexity: Some("O(N*M) where N and M are the lengths of s1 and s2, respectively"), args: &[Arg { key_spec_index: Some(0), ..arg("key1", "key") }, Arg { key_spec_index: Some(0), ..arg("key2", "key") }, Arg { token: Some("LEN"), flags: &["optional"], ..arg("len", "pure-token") }, Arg { token: Some("IDX"), flags: &["optional"], ..arg("idx", "pure-token") }, Arg { token: Some("MINMATCHLEN"), flags: &["optional"], ..arg("len", "integer") }, Arg { token: Some("WITHMATCHLEN"), flags: &["optional"], ..arg("withmatchlen", "pure-token") }], ..meta("lcs", -3, "Find longest common substring", "7.0.0", "string") },
    Meta { flags: &["readonly"], keys: (1, 1, 1), acl: &["@read", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the length of the returned string. The complexity is ultimately determined by the returned length, but because creating a substring from an existing string is very cheap, it can be considered O(1) for small strings."), doc_flags: &["deprecated"], deprecated_since: Some("2.0.0"), replaced_by: Some("`GETRANGE`"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("start", "integer"), arg("end", "integer")], ..meta("substr", 4, "Get a substring of the string stored at a key", "1.0.0", "string") },
    Meta { flags: &["write", "denyoom"], keys: (1, 1, 1), acl: &["@write", "@string", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1), not counting the time taken to copy the new string in place. Usually, this string is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being the length of the value argument."), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("offset", "integer"), arg("value", "string")], ..meta("setrange", 4, "Overwrite part of a string at key starting at the specified offset", "2.2.0", "string") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@write", "@string", "@fast"], key_specs: &[KeySpec { notes: Some("RW and UPDATE because it changes the TTL"), flags: &["RW", "access", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, Arg { flags: &["optional"], args: &[Arg { token: Some("EX"), ..arg("seconds", "integer") }, Arg { token: Some("PX"), ..arg("milliseconds", "integer") }, Arg { token: Some("EXAT"), ..arg("unix-time-seconds", "unix-time") }, Arg { token: Some("PXAT"), ..arg("unix-time-milliseconds", "unix-time") }, Arg { token: Some("PERSIST"), ..arg("persist", "pure-token") }], ..arg("expiration", "oneof") }], ..meta("getex", -2, "Get the value of a key and optionally set its expiration", "6.2.0", "string") },
    Meta { flags: &["write", "denyoom"], keys: (1, -1, 2), acl: &["@write", "@string", "@slow"], tips: &["request_policy:multi_shard", "response_policy:agg_min"], key_specs: &[KeySpec { notes: None, flags: &["OW", "insert"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 2, limit: 0 } }], complexity: Some("O(N) where N is the number of keys to set."), args: &[Arg { flags: &["multiple"], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("value", "string")], ..arg("key_value", "block") }], ..meta("msetnx", -3, "Set multiple keys to multiple values, only if none of the keys exist", "1.0.1", "string") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("7.0.0", "Added options: `NX`, `XX`, `GT` and `LT`.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("unix-time-seconds", "unix-time"), Arg { since: Some("7.0.0"), flags: &["optional"], args: &[Arg { token: Some("NX"), ..arg("nx", "pure-token") }, Arg { token: Some("XX"), ..arg("xx", "pure-token") }, Arg { token: Some("GT"), ..arg("gt", "pure-token") }, Arg { token: Some("LT"), ..arg("lt", "pure-token") }], ..arg("condition", "oneof") }], ..meta("expireat", -3, "Set the expiration for a key as a UNIX timestamp", "1.2.0", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("7.0.0", "Added options: `NX`, `XX`, `GT` and `LT`.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("unix-time-milliseconds", "unix-time"), Arg { since: Some("7.0.0"), flags: &["optional"], args: &[Arg { token: Some("NX"), ..arg("nx", "pure-token") }, Arg { token: Some("XX"), ..arg("xx", "pure-token") }, Arg { token: Some("GT"), ..arg("gt", "pure-token") }, Arg { token: Some("LT"), ..arg("lt", "pure-token") }], ..arg("condition", "oneof") }], ..meta("pexpireat", -3, "Set the expiration for a key as a UNIX timestamp specified in milliseconds", "2.6.0", "generic") },
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("expiretime", 2, "Get the expiration Unix timestamp for a key", "7.0.0", "generic") },
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("pexpiretime", 2, "Get the expiration Unix timestamp for a key in milliseconds", "7.0.0", "generic") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "allow_busy"], acl: &["@fast", "@transaction"], complexity: Some("O(1)"), ..meta("multi", 1, "Mark the start of a transaction block", "1.2.0", "transactions") },
    Meta { flags: &["noscript", "loading", "stale", "skip_slowlog"], acl: &["@slow", "@transaction"], complexity: Some("Depends on commands in the transaction"), ..meta("exec", 1, "Execute all commands issued after MULTI", "1.2.0", "transactions") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "allow_busy"], acl: &["@fast", "@transaction"], complexity: Some("O(N), when N is the number of queued commands"), ..meta("discard", 1, "Discard all commands issued after MULTI", "2.0.0", "transactions") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "allow_busy"], keys: (1, -1, 1), acl: &["@fast", "@transaction"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(1) for every key."), args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("watch", -2, "Watch the given keys to determine execution of the MULTI/EXEC block", "2.2.0", "transactions") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "allow_busy"], acl: &["@fast", "@transaction"], complexity: Some("O(1)"), ..meta("unwatch", 1, "Forget about all watched keys", "2.2.0", "transactions") },
    // Key space: the per-key commands.
    Meta { flags: &["readonly", "fast"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("type", 2, "Determine the type stored at key", "1.0.0", "generic") },
    Meta { flags: &["readonly", "fast"], keys: (1, -1, 1), acl: &["@keyspace", "@read", "@fast"], tips: &["request_policy:multi_shard", "response_policy:agg_sum"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of keys that will be touched."), args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("touch", -2, "Alters the last access time of a key(s). Returns the number of existing keys specified.", "3.2.1", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, -1, 1), acl: &["@keyspace", "@write", "@fast"], tips: &["request_policy:multi_shard", "response_policy:agg_sum"], key_specs: &[KeySpec { notes: None, flags: &["RM", "delete"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(1) for each key removed regardless of its size. Then the command does O(N) work in a different thread in order to reclaim memory, where N is the number of allocations the deleted objects where composed of."), args: &[Arg { key_spec_index: Some(0), flags: &["multiple"], ..arg("key", "key") }], ..meta("unlink", -2, "Delete a key asynchronously in another thread. Otherwise it is just as DEL, but non blocking.", "4.0.0", "generic") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["readonly"], keys: (2, 2, 1), acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("object|encoding", 3, "Inspect the internal encoding of a Redis object", "2.2.3", "generic") }, Meta { flags: &["readonly"], keys: (2, 2, 1), acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("object|idletime", 3, "Get the time since a Redis object was last accessed", "2.2.3", "generic") }, Meta { flags: &["loading", "stale"], acl: &["@keyspace", "@slow"], complexity: Some("O(1)"), ..meta("object|help", 2, "Show helpful text about the different subcommands", "6.2.0", "generic") }, Meta { flags: &["readonly"], keys: (2, 2, 1), acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("object|freq", 3, "Get the logarithmic access frequency counter of a Redis object", "4.0.0", "generic") }, Meta { flags: &["readonly"], keys: (2, 2, 1), acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("object|refcount", 3, "Get the number of references to the value of the key", "2.2.3", "generic") }], ..meta("object", -2, "A container for object introspection commands", "2.2.3", "generic") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["loading", "stale"], acl: &["@slow"], complexity: Some("O(1)"), ..meta("memory|help", 2, "Show helpful text about the different subcommands", "4.0.0", "server") }, Meta { flags: &["readonly"], keys: (2, 2, 1), acl: &["@read", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RO"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of samples."), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, Arg { token: Some("SAMPLES"), flags: &["optional"], ..arg("count", "integer") }], ..meta("memory|usage", -3, "Estimate the memory usage of a key", "4.0.0", "server") }], ..meta("memory", -2, "A container for memory diagnostics commands", "4.0.0", "server") },
    Meta { flags: &["write"], keys: (1, 2, 1), acl: &["@keyspace", "@write", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "delete"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }, KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, Arg { key_spec_index: Some(1), ..arg("newkey", "key") }], ..meta("rename", 3, "Rename a key", "1.0.0", "generic") },
    Meta { flags: &["write", "fast"], keys: (1, 2, 1), acl: &["@keyspace", "@write", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["RW", "access", "delete"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }, KeySpec { notes: None, flags: &["OW", "insert"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1)"), history: &[("3.2.0", "The command no longer returns an error when source and destination names are the same.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, Arg { key_spec_index: Some(1), ..arg("newkey", "key") }], ..meta("renamenx", 3, "Rename a key, only if the new key does not exist", "1.0.0", "generic") },
    Meta { flags: &["write", "denyoom"], keys: (1, 2, 1), acl: &["@keyspace", "@write", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }, KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(2), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(N) worst case for collections, where N is the number of nested items. O(1) for string values."), args: &[Arg { key_spec_index: Some(0), ..arg("source", "key") }, Arg { key_spec_index: Some(1), ..arg("destination", "key") }, Arg { token: Some("DB"), flags: &["optional"], ..arg("destination-db", "integer") }, Arg { token: Some("REPLACE"), flags: &["optional"], ..arg("replace", "pure-token") }], ..meta("copy", -3, "Copy a key", "6.2.0", "generic") },
    Meta { flags: &["readonly"], keys: (1, 1, 1), acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output"], key_specs: &[KeySpec { notes: None, flags: &["RO", "access"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1) to access the key and additional O(N*M) to serialize it, where N is the number of Redis objects composing the value and M their average size. For small string values the time complexity is thus O(1)+O(1*M) where M is small, so simply O(1)."), args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }], ..meta("dump", 2, "Return a serialized version of the value stored at the specified key.", "2.6.0", "generic") },
    Meta { flags: &["write", "denyoom"], keys: (1, 1, 1), acl: &["@keyspace", "@write", "@slow", "@dangerous"], key_specs: &[KeySpec { notes: None, flags: &["OW", "update"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(1) to create the new key and additional O(N*M) to reconstruct the serialized value, where N is the number of Redis objects composing the value and M their average size. For small string values the time complexity is thus O(1)+O(1*M) where M is small, so simply O(1). However for sorted set values the complexity is O(N*M*log(N)) because inserting values into sorted sets is O(log(N))."), history: &[("3.0.0", "Added the `REPLACE` modifier."), ("5.0.0", "Added the `ABSTTL` modifier."), ("5.0.0", "Added the `IDLETIME` and `FREQ` options.")], args: &[Arg { key_spec_index: Some(0), ..arg("key", "key") }, arg("ttl", "integer"), arg("serialized-value", "string"), Arg { token: Some("REPLACE"), since: Some("3.0.0"), flags: &["optional"], ..arg("replace", "pure-token") }, Arg { token: Some("ABSTTL"), since: Some("5.0.0"), flags: &["optional"], ..arg("absttl", "pure-token") }, Arg { token: Some("IDLETIME"), since: Some("5.0.0"), flags: &["optional"], ..arg("seconds", "integer") }, Arg { token: Some("FREQ"), since: Some("5.0.0"), flags: &["optional"], ..arg("frequency", "integer") }], ..meta("restore", -4, "Create a key using the provided serialized value, previously obtained using DUMP.", "2.6.0", "generic") },
    // Pub/sub and server administration.
    Meta { flags: &["pubsub", "loading", "stale", "fast"], acl: &["@pubsub", "@fast"], complexity: Some("O(N+M) where N is the number of clients subscribed to the receiving channel and M is the total number of subscribed patterns (by any client)."), args: &[arg("channel", "string"), arg("message", "string")], ..meta("publish", 3, "Post a message to a channel", "2.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) where N is the number of channels to subscribe to."), args: &[Arg { flags: &["multiple"], ..arg("channel", "string") }], ..meta("subscribe", -2, "Listen for messages published to the given channels", "2.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) where N is the number of patterns the client is already subscribed to."), args: &[Arg { flags: &["multiple"], args: &[arg("pattern", "pattern")], ..arg("pattern", "block") }], ..meta("psubscribe", -2, "Listen for messages published to channels matching the given patterns", "2.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) where N is the number of clients already subscribed to a channel."), args: &[Arg { flags: &["optional", "multiple"], ..arg("channel", "string") }], ..meta("unsubscribe", -1, "Stop listening for messages posted to the given channels", "2.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N+M) where N is the number of patterns the client is already subscribed and M is the number of total patterns subscribed in the system (by any client)."), args: &[Arg { flags: &["optional", "multiple"], ..arg("pattern", "pattern") }], ..meta("punsubscribe", -1, "Stop listening for messages posted to channels matching the given patterns", "2.0.0", "pubsub") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["pubsub", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) where N is the number of active channels, and assuming constant time pattern matching (relatively short channels and patterns)"), args: &[Arg { flags: &["optional"], ..arg("pattern", "pattern") }], ..meta("pubsub|channels", -2, "List active channels", "2.8.0", "pubsub") }, Meta { flags: &["pubsub", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) for the NUMSUB subcommand, where N is the number of requested channels"), args: &[Arg { flags: &["optional", "multiple"], ..arg("channel", "string") }], ..meta("pubsub|numsub", -2, "Get the count of subscribers for channels", "2.8.0", "pubsub") }, Meta { flags: &["pubsub", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) where N is the number of active shard channels, and assuming constant time pattern matching (relatively short shard channels)."), args: &[Arg { flags: &["optional"], ..arg("pattern", "pattern") }], ..meta("pubsub|shardchannels", -2, "List active shard channels", "7.0.0", "pubsub") }, Meta { flags: &["pubsub", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(N) for the SHARDNUMSUB subcommand, where N is the number of requested shard channels"), args: &[Arg { flags: &["optional", "multiple"], ..arg("shardchannel", "string") }], ..meta("pubsub|shardnumsub", -2, "Get the count of subscribers for shard channels", "7.0.0", "pubsub") }, Meta { flags: &["pubsub", "loading", "stale"], acl: &["@pubsub", "@slow"], complexity: Some("O(1)"), ..meta("pubsub|numpat", 2, "Get the count of unique patterns pattern subscriptions", "2.8.0", "pubsub") }, Meta { flags: &["loading", "stale"], acl: &["@slow"], complexity: Some("O(1)"), ..meta("pubsub|help", 2, "Show helpful text about the different subcommands", "6.2.0", "pubsub") }], ..meta("pubsub", -2, "A container for Pub/Sub commands", "2.8.0", "pubsub") },
    Meta { flags: &["pubsub", "loading", "stale", "fast"], keys: (1, 1, 1), acl: &["@pubsub", "@fast"], key_specs: &[KeySpec { notes: None, flags: &["not_key"], begin: Begin::Index(1), find: Find::Range { lastkey: 0, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of clients subscribed to the receiving shard channel."), args: &[arg("shardchannel", "string"), arg("message", "string")], ..meta("spublish", 3, "Post a message to a shard channel", "7.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], keys: (1, -1, 1), acl: &["@pubsub", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["not_key"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of shard channels to subscribe to."), args: &[Arg { flags: &["multiple"], ..arg("shardchannel", "string") }], ..meta("ssubscribe", -2, "Listen for messages published to the given shard channels", "7.0.0", "pubsub") },
    Meta { flags: &["pubsub", "noscript", "loading", "stale"], keys: (1, -1, 1), acl: &["@pubsub", "@slow"], key_specs: &[KeySpec { notes: None, flags: &["not_key"], begin: Begin::Index(1), find: Find::Range { lastkey: -1, keystep: 1, limit: 0 } }], complexity: Some("O(N) where N is the number of clients already subscribed to a shard channel."), args: &[Arg { flags: &["optional", "multiple"], ..arg("shardchannel", "string") }], ..meta("sunsubscribe", -1, "Stop listening for messages posted to the given shard channels", "7.0.0", "pubsub") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["admin", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["request_policy:all_nodes", "nondeterministic_output"], complexity: Some("O(N) where N is the number of entries returned"), history: &[("4.0.0", "Added client IP address, port and name to the reply.")], args: &[Arg { flags: &["optional"], ..arg("count", "integer") }], ..meta("slowlog|get", -2, "Get the slow log's entries", "2.2.12", "server") }, Meta { flags: &["admin", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["request_policy:all_nodes", "response_policy:agg_sum", "nondeterministic_output"], complexity: Some("O(1)"), ..meta("slowlog|len", 2, "Get the slow log's length", "2.2.12", "server") }, Meta { flags: &["admin", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["request_policy:all_nodes", "response_policy:all_succeeded"], complexity: Some("O(N) where N is the number of entries in the slowlog"), ..meta("slowlog|reset", 2, "Clear all entries from the slow log", "2.2.12", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow"], complexity: Some("O(1)"), ..meta("slowlog|help", 2, "Show helpful text about the different subcommands", "6.2.0", "server") }], ..meta("slowlog", -2, "A container for slow log commands", "2.2.12", "server") },
    Meta { acl: &["@slow"], complexity: Some("Depends on subcommand."), subcommands: &[Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"], complexity: Some("O(1)"), args: &[arg("event", "string")], ..meta("latency|history", 3, "Return timestamp-latency samples for the event.", "2.8.13", "server") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["nondeterministic_output", "request_policy:all_nodes", "response_policy:special"], complexity: Some("O(1)"), ..meta("latency|latest", 2, "Return the latest latency samples for all events.", "2.8.13", "server") }, Meta { flags: &["admin", "noscript", "loading", "stale"], acl: &["@admin", "@slow", "@dangerous"], tips: &["request_policy:all_nodes", "response_policy:all_succeeded"], complexity: Some("O(1)"), args: &[Arg { flags: &["optional", "multiple"], ..arg("event", "string") }], ..meta("latency|reset", -2, "Reset latency data for one or more events.", "2.8.13", "server") }, Meta { flags: &["loading", "stale"], acl: &["@slow"], complexity: Some("O(1)"), ..meta("latency|help", 2, "Show helpful text about the different subcommands.", "2.8.13", "server") }], ..meta("latency", -2, "A container for latency diagnostics commands", "2.8.13", "server") },
    Meta { flags: &["admin", "noscript", "loading", "stale", "no_multi", "allow_busy"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(N) when saving, where N is the total number of keys in all databases when saving data, otherwise O(1)"), history: &[("7.0.0", "Added the `NOW`, `FORCE` and `ABORT` modifiers.")], args: &[Arg { flags: &["optional"], args: &[Arg { token: Some("NOSAVE"), ..arg("nosave", "pure-token") }, Arg { token: Some("SAVE"), ..arg("save", "pure-token") }], ..arg("nosave_save", "oneof") }, Arg { token: Some("NOW"), since: Some("7.0.0"), flags: &["optional"], ..arg("now", "pure-token") }, Arg { token: Some("FORCE"), since: Some("7.0.0"), flags: &["optional"], ..arg("force", "pure-token") }, Arg { token: Some("ABORT"), since: Some("7.0.0"), flags: &["optional"], ..arg("abort", "pure-token") }], ..meta("shutdown", -1, "Synchronously save the dataset to disk and then shut down the server", "1.0.0", "server") },
    Meta { flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"], acl: &["@fast", "@connection"], complexity: Some("O(1)"), ..meta("reset", 1, "Reset the connection", "6.2.0", "connection") },
    // Key space: iteration and flushing.
    Meta { flags: &["readonly"], acl: &["@keyspace", "@read", "@slow"], tips: &["nondeterministic_output", "request_policy:special"], complexity: Some("O(1) for every call. O(N) for a complete iteration, including enough command calls for the cursor to return back to 0. N is the number of elements inside the collection."), history: &[("6.0.0", "Added the `TYPE` subcommand.")], args: &[arg("cursor", "integer"), Arg { token: Some("MATCH"), flags: &["optional"], ..arg("pattern", "pattern") }, Arg { token: Some("COUNT"), flags: &["optional"], ..arg("count", "integer") }, Arg { token: Some("TYPE"), since: Some("6.0.0"), flags: &["optional"], ..arg("type", "string") }], ..meta("scan", -2, "Incrementally iterate the keys space", "2.8.0", "generic") },
    Meta { flags: &["readonly"], acl: &["@keyspace", "@read", "@slow", "@dangerous"], tips: &["request_policy:all_shards", "nondeterministic_output_order"], complexity: Some("O(N) with N being the number of keys in the database, under the assumption that the key names in the database and the given pattern have limited length."), args: &[arg("pattern", "pattern")], ..meta("keys", 2, "Find all keys matching the given pattern", "1.0.0", "generic") },
    Meta { flags: &["readonly"], acl: &["@keyspace", "@read", "@slow"], tips: &["request_policy:all_shards", "nondeterministic_output"], complexity: Some("O(1)"), ..meta("randomkey", 1, "Return a random key from the keyspace", "1.0.0", "generic") },
    Meta { flags: &["write"], acl: &["@keyspace", "@write", "@slow", "@dangerous"], tips: &["request_policy:all_shards", "response_policy:all_succeeded"], complexity: Some("O(N) where N is the number of keys in the selected database"), history: &[("4.0.0", "Added the `ASYNC` flushing mode modifier."), ("6.2.0", "Added the `SYNC` flushing mode modifier.")], args: &[Arg { flags: &["optional"], args: &[Arg { token: Some("ASYNC"), since: Some("4.0.0"), ..arg("async", "pure-token") }, Arg { token: Some("SYNC"), since: Some("6.2.0"), ..arg("sync", "pure-token") }], ..arg("async", "oneof") }], ..meta("flushdb", -1, "Remove all keys from the current database", "1.0.0", "server") },
    Meta { flags: &["write"], acl: &["@keyspace", "@write", "@slow", "@dangerous"], tips: &["request_policy:all_shards", "response_policy:all_succeeded"], complexity: Some("O(N) where N is the total number of keys in all databases"), history: &[("4.0.0", "Added the `ASYNC` flushing mode modifier."), ("6.2.0", "Added the `SYNC` flushing mode modifier.")], args: &[Arg { flags: &["optional"], args: &[Arg { token: Some("ASYNC"), since: Some("4.0.0"), ..arg("async", "pure-token") }, Arg { token: Some("SYNC"), since: Some("6.2.0"), ..arg("sync", "pure-token") }], ..arg("async", "oneof") }], ..meta("flushall", -1, "Remove all keys from all databases", "1.0.0", "server") },
    // Replication.
    Meta { flags: &["admin", "noscript", "stale", "no_async_loading"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), args: REPLICAOF_ARGS, ..meta("replicaof", 3, "Make the server a replica of another instance, or promote it as master.", "5.0.0", "server") },
    Meta { flags: &["admin", "noscript", "stale", "no_async_loading"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), doc_flags: &["deprecated"], deprecated_since: Some("5.0.0"), replaced_by: Some("`REPLICAOF`"), args: REPLICAOF_ARGS, ..meta("slaveof", 3, "Make the server a replica of another instance, or promote it as master.", "1.0.0", "server") },
    Meta { flags: &["noscript", "loading", "stale", "fast"], acl: &["@admin", "@fast", "@dangerous"], complexity: Some("O(1)"), ..meta("role", 1, "Return the role of the instance in the context of replication", "2.8.12", "server") },
    Meta { flags: &["admin", "noscript", "loading", "stale", "allow_busy"], acl: &["@admin", "@slow", "@dangerous"], complexity: Some("O(1)"), doc_flags: &["syscmd"], ..meta("replconf", -1, "An internal command for configuring the replication stream", "3.0.0", "server") },
    Meta { flags: &["admin", "noscript", "no_async_loading", "no_multi"], acl: &["@admin", "@slow", "@dangerous"], args: &[arg("replicationid", "string"), arg("offset", "integer")], ..meta("psync", -3, "Internal command used for replication", "2.8.0", "server") },
    Meta { flags: &["noscript"], acl: &["@slow", "@connection"], tips: &["request_policy:all_shards", "response_policy:agg_min"], complexity: Some("O(1)"), args: &[arg("numreplicas", "integer"), arg("timeout", "integer")], ..meta("wait", 3, "Wait for the synchronous replication of all the write commands sent in the context of the current connection", "3.0.0", "generic") },
];

/// REPLICAOF's and SLAVEOF's arguments.
const REPLICAOF_ARGS: &[Arg] = &[Arg {
    args: &[
        Arg {
            args: &[arg("host", "string"), arg("port", "integer")],
            ..arg("host-port", "block")
        },
        Arg {
            args: &[
                Arg {
                    token: Some("NO"),
                    ..arg("no", "pure-token")
                },
                Arg {
                    token: Some("ONE"),
                    ..arg("one", "pure-token")
                },
            ],
            ..arg("no-one", "block")
        },
    ],
    ..arg("args", "oneof")
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_knows_every_command_once() {
        assert_eq!(lookup(b"get").map(|(i, s)| (i, s.cmd)), Some((0, Cmd::Get)));
        assert_eq!(lookup(b"DeCrBy").map(|(_, s)| s.cmd), Some(Cmd::Decrby));
        assert!(lookup(b"GETX").is_none());
        for (i, s) in COMMANDS.iter().enumerate() {
            assert_eq!(lookup(s.name.as_bytes()).map(|(j, _)| j), Some(i as u16));
            assert_eq!(COMMANDS.iter().filter(|t| t.cmd == s.cmd).count(), 1);
        }
        let open: Vec<&str> = (COMMANDS.iter())
            .filter(|s| s.before_auth)
            .map(|s| s.name)
            .collect();
        assert_eq!(open, ["QUIT", "AUTH", "HELLO", "RESET"]);
    }

    #[test]
    fn descriptions_agree_with_the_table() {
        for s in COMMANDS {
            let m = meta_of(s.name.as_bytes()).expect(s.name);
            assert_eq!(m.name, s.name.to_ascii_lowercase());
            // Redis's arity, unless nvkv's (which COMMAND shows) differs.
            assert_eq!(m.arity(), s.arity, "{}", s.name);
        }
        for m in META {
            assert!(
                lookup(m.name.as_bytes()).is_some(),
                "{} is not a command",
                m.name
            );
            for sub in m.subcommands {
                assert!(sub.name.starts_with(&format!("{}|", m.name)));
            }
        }
        let list = meta_of(b"CLIENT|List").unwrap();
        assert_eq!(list.name, "client|list");
        assert_eq!(meta_of(b"mset").unwrap().key_positions(5), [1, 3]);
        assert!(refused(b"evalsha").is_some() && lookup(b"EVAL").is_none());
        assert!(
            super::super::pattern::glob(b"cl*", b"client|list")
                && !super::super::pattern::glob(b"x*", b"client")
        );
    }

    #[test]
    fn arity() {
        let (_, get) = lookup(b"GET").unwrap();
        assert!(get.arity_fits(2) && !get.arity_fits(1) && !get.arity_fits(3));
        let (_, set) = lookup(b"SET").unwrap();
        assert!(!set.arity_fits(2) && set.arity_fits(3) && set.arity_fits(9));
    }
}
