//! The command table: every command nvkv knows, with its arity and whether
//! a client may send it before AUTH. Dispatch (`command.rs`), `COMMAND
//! COUNT`, INFO's commandstats and /metrics read this one table (as
//! Garnet's RespCommand.cs is read); a command's place in it is its index
//! in the per-command statistics.

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
    // Strings and TTLs.
    Incrbyfloat,
    Append,
    Strlen,
    Getrange,
    Substr,
    Setrange,
    Getex,
    Msetnx,
    Expireat,
    Pexpireat,
    Expiretime,
    Pexpiretime,
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
    // Strings and TTLs.
    spec(Cmd::Incrbyfloat, "INCRBYFLOAT", 3),
    spec(Cmd::Append, "APPEND", 3),
    spec(Cmd::Strlen, "STRLEN", 2),
    spec(Cmd::Getrange, "GETRANGE", 4),
    spec(Cmd::Substr, "SUBSTR", 4),
    spec(Cmd::Setrange, "SETRANGE", 4),
    spec(Cmd::Getex, "GETEX", -2),
    spec(Cmd::Msetnx, "MSETNX", -3),
    spec(Cmd::Expireat, "EXPIREAT", -3),
    spec(Cmd::Pexpireat, "PEXPIREAT", -3),
    spec(Cmd::Expiretime, "EXPIRETIME", 2),
    spec(Cmd::Pexpiretime, "PEXPIRETIME", 2),
];

/// The command called `name` (in any case), and its index in [`COMMANDS`].
pub(super) fn lookup(name: &[u8]) -> Option<(u16, &'static Spec)> {
    let i = COMMANDS
        .iter()
        .position(|s| s.name.as_bytes().eq_ignore_ascii_case(name))?;
    Some((i as u16, &COMMANDS[i]))
}

/// The CLIENT subcommands and their arity (`CLIENT` and the subcommand
/// included), as Redis's.
pub(super) const CLIENT_SUBCOMMANDS: &[(&str, usize)] = &[
    ("SETNAME", 3),
    ("SETINFO", 4),
    ("NO-EVICT", 3),
    ("NO-TOUCH", 3),
    ("REPLY", 3),
    ("GETNAME", 2),
    ("ID", 2),
];

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
        assert_eq!(open, ["QUIT", "AUTH"]);
    }

    #[test]
    fn arity() {
        let (_, get) = lookup(b"GET").unwrap();
        assert!(get.arity_fits(2) && !get.arity_fits(1) && !get.arity_fits(3));
        let (_, set) = lookup(b"SET").unwrap();
        assert!(!set.arity_fits(2) && set.arity_fits(3) && set.arity_fits(9));
    }
}
