//! What the server says to clients: every fixed reply and every error text
//! of the connection side, in one place (as Garnet's CmdStrings.cs). The
//! wording is Redis's, so that clients that match on it (NOAUTH, WRONGPASS,
//! DENIED) behave as they do against Redis; texts that carry a value are
//! functions. The pollers' replies for what the store refused (its typed
//! errors) are here too.

use crate::resp::ProtocolError;

/// `+OK`.
pub(super) const OK: &str = "OK";
/// PING's reply without an argument.
pub(super) const PONG: &str = "PONG";

pub(super) const SYNTAX: &str = "ERR syntax error";
/// An argument that must be an integer (Redis's `string2ll`) is not, or
/// does not fit an `i64`.
pub(super) const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
/// `DECRBY key -9223372036854775808`: the decrement cannot be negated.
pub(super) const DECREMENT_OVERFLOW: &str = "ERR decrement would overflow";
/// `SELECT` of any database but 0.
pub(super) const DB_INDEX: &str = "ERR DB index is out of range";

/// The reply to every command but AUTH and QUIT before a successful AUTH.
pub(super) const NOAUTH: &str = "NOAUTH Authentication required.";
/// The reply to AUTH with a wrong user name or password.
pub(super) const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// The reply to `AUTH <password>` when no password is configured.
pub(super) const NO_PASSWORD: &str = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// What a client over `--max-clients` is sent before it is closed.
pub(super) const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
/// What a non-local client is sent in protected mode before it is closed
/// (Redis's text, with nvkv's flags in place of Redis's configuration).
pub(super) const DENIED: &[u8] = b"-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to nvkv you may adopt one of the following solutions: 1) Restart the server with the '--requirepass <password>' option to set up an authentication password for the default user. 2) If you started the server manually just for testing, restart it with the '--protected-mode no' option, however MAKE SURE nvkv is not publicly accessible from the internet if you do so. NOTE: You only need to do one of the above things in order for the server to start accepting connections from the outside.\r\n";

/// A request that is not RESP (the connection closes after it).
pub(super) fn protocol_error(e: &ProtocolError) -> String {
    format!("ERR {e}")
}

/// A request that has grown past `--max-query-buffer` without ending (the
/// connection closes after it).
pub(super) const QUERY_BUFFER: &str = "ERR Protocol error: request larger than --max-query-buffer";

/// Bytes of a client's argument an error message echoes at most, as Redis
/// (a 100 MB command name does not come back in a 100 MB error).
const ECHO_MAX: usize = 128;

/// At most [`ECHO_MAX`] bytes of `b`, escaped for an error line.
fn echo(b: &[u8]) -> String {
    b[..b.len().min(ECHO_MAX)].escape_ascii().to_string()
}

/// `ERR unknown command`: the name and the first arguments, at most
/// [`ECHO_MAX`] bytes of each (and of the arguments together), as Redis.
pub(super) fn unknown_command(args: &[&[u8]]) -> String {
    let mut echoed = 0;
    let mut rest = String::new();
    for a in &args[1..] {
        if echoed >= ECHO_MAX {
            break;
        }
        let take = a.len().min(ECHO_MAX - echoed);
        echoed += take;
        rest.push_str(&format!("'{}' ", echo(&a[..take])));
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {rest}",
        echo(args[0])
    )
}

/// A command called with a number of arguments its arity refuses (`name`
/// in any case; `config|get` for a subcommand).
pub(super) fn wrong_arity(name: &str) -> String {
    format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )
}

/// A subcommand `sub` that `cmd` (CONFIG, CLIENT) does not have.
pub(super) fn unknown_subcommand(sub: &[u8], cmd: &str) -> String {
    format!("ERR unknown subcommand '{}'. Try {cmd} HELP.", echo(sub))
}

/// An expiry time that is not positive, or past `i64` in ms (`cmd` in any
/// case).
pub(super) fn invalid_expire_time(cmd: &str) -> String {
    format!(
        "ERR invalid expire time in '{}' command",
        cmd.to_ascii_lowercase()
    )
}

// Connection and server commands.

/// HELLO with a protocol version that is not an integer.
pub(super) const HELLO_PROTO_NOT_INT: &str =
    "ERR Protocol version is not an integer or out of range";
/// HELLO with a version other than 2 and 3.
pub(super) const NOPROTO: &str = "NOPROTO unsupported protocol version";
/// HELLO before AUTH, without its AUTH option.
pub(super) const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
/// A HELLO option HELLO does not know, or lacking its values.
pub(super) fn hello_syntax(opt: &[u8]) -> String {
    format!("ERR Syntax error in HELLO option '{}'", echo(opt))
}
/// CLIENT SETNAME (or HELLO SETNAME) with a byte outside `!`..`~`.
pub(super) const CLIENT_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";
/// CLIENT KILL in the old form (an address) that found no client.
pub(super) const NO_SUCH_CLIENT: &str = "ERR No such client";
/// CLIENT KILL ID with an id that is not a positive integer.
pub(super) const CLIENT_ID_POSITIVE: &str = "ERR client-id should be greater than 0";
/// CLIENT LIST ID with an id that is not a positive integer.
pub(super) const INVALID_CLIENT_ID: &str = "ERR Invalid client ID";
/// CLIENT LIST TYPE / CLIENT KILL TYPE with a type Redis does not have.
pub(super) fn unknown_client_type(t: &[u8]) -> String {
    format!("ERR Unknown client type '{}'", echo(t))
}
/// CLIENT KILL USER with a user other than `default`.
pub(super) fn no_such_user(u: &[u8]) -> String {
    format!("ERR No such user '{}'", echo(u))
}
/// CLIENT SETINFO with an attribute other than LIB-NAME and LIB-VER.
pub(super) fn unrecognized_option(o: &[u8]) -> String {
    format!("ERR Unrecognized option '{}'", echo(o))
}
/// COMMAND GETKEYS of a command nvkv does not have.
pub(super) const GETKEYS_INVALID: &str = "ERR Invalid command specified";
/// COMMAND GETKEYS of a command without keys.
pub(super) const GETKEYS_NO_KEYS: &str = "ERR The command has no key arguments";
/// COMMAND GETKEYS with arguments the command's arity refuses.
pub(super) const GETKEYS_ARITY: &str = "ERR Invalid number of arguments specified for command";

/// A key of `len` bytes, over `--max-key-size`.
pub(super) fn key_too_large(len: usize, limit: u64) -> String {
    format!("ERR key of {len} bytes is over the limit of {limit} (--max-key-size)")
}

/// A value of `len` bytes, over `--max-value-size`.
pub(super) fn value_too_large(len: usize, limit: u64) -> String {
    format!("ERR value of {len} bytes is over the limit of {limit} (--max-value-size)")
}

/// `CONFIG SET` of a setting that does not exist or cannot be changed.
pub(super) fn config_set_unknown(name: &[u8]) -> String {
    format!(
        "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
        String::from_utf8_lossy(name)
    )
}

/// `CONFIG SET` of a value the setting refuses, and why.
pub(super) fn config_set_failed(name: &str, why: &str) -> String {
    format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {why}")
}

/// No free segment for a write, and none that compaction or eviction can
/// make.
pub(super) const STORE_FULL: &str = "OOM the store is full: no free segment for writes";
/// A write waited for compaction longer than it may.
pub(super) const COMPACTION_BEHIND: &str = "OOM no free segment: compaction is behind";
/// Redis's refusal of a command that adds data past `maxmemory`.
pub(super) const OVER_MAXMEMORY: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// A record that would not fit in a segment.
pub(super) const RECORD_TOO_LARGE: &str = "ERR record larger than a segment";

/// No memory to read a large value into.
pub(super) fn no_memory_for_value(len: u64) -> String {
    format!("ERR out of memory for a value of {len} bytes")
}
/// INCR and its kin on a value that would overflow.
pub(super) const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";

// Strings and TTLs.

/// INCRBYFLOAT of a value or an increment that is not a number.
pub(super) const NOT_A_FLOAT: &str = "ERR value is not a valid float";
/// INCRBYFLOAT whose sum is not finite.
pub(super) const FLOAT_NAN_OR_INF: &str = "ERR increment would produce NaN or Infinity";
/// SETRANGE at a negative offset.
pub(super) const OFFSET_OUT_OF_RANGE: &str = "ERR offset is out of range";
/// APPEND or SETRANGE past Redis's `proto-max-bulk-len` (512 MiB).
pub(super) const STRING_TOO_LONG: &str =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
/// EXPIRE … NX with XX, GT or LT.
pub(super) const EXPIRE_NX_AND_OTHERS: &str =
    "ERR NX and XX, GT or LT options at the same time are not compatible";
/// EXPIRE … GT LT.
pub(super) const EXPIRE_GT_AND_LT: &str =
    "ERR GT and LT options at the same time are not compatible";
/// Redis Cluster's answer to a multi-key command whose keys are on
/// different pollers (MSETNX).
pub(super) const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// An EXPIRE option that is none of NX, XX, GT, LT (Redis prints it as a
/// C string: up to a NUL).
pub(super) fn unsupported_option(opt: &[u8]) -> String {
    let opt = &opt[..opt.iter().position(|&b| b == 0).unwrap_or(opt.len())];
    format!("ERR Unsupported option {}", String::from_utf8_lossy(opt))
}

/// The reply to a read that got no buffer from the engine (SPDK's DMA
/// memory ran out).
pub(super) const NO_IO_BUFFER: &str = "ERR out of I/O buffer memory";

// Transactions.

/// A command queued between MULTI and EXEC.
pub(super) const QUEUED: &str = "QUEUED";
pub(super) const MULTI_NESTED: &str = "ERR MULTI calls can not be nested";
pub(super) const EXEC_WITHOUT_MULTI: &str = "ERR EXEC without MULTI";
pub(super) const DISCARD_WITHOUT_MULTI: &str = "ERR DISCARD without MULTI";
pub(super) const WATCH_IN_MULTI: &str = "ERR WATCH inside MULTI is not allowed";
/// EXEC of a transaction in which a command was refused while queued.
pub(super) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// SAVE, or BGSAVE without SCHEDULE, while a BGSAVE runs.
pub(super) const BGSAVE_RUNNING: &str = "ERR Background save already in progress";
/// BGSAVE's replies.
pub(super) const BGSAVE_STARTED: &str = "Background saving started";
pub(super) const BGSAVE_SCHEDULED: &str = "Background saving scheduled";
/// A command Redis refuses in a transaction (its `no_multi` flag).
pub(super) const NO_MULTI: &str = "ERR Command not allowed inside a transaction";
/// EXEC itself refused (its arity, subscribed mode): the transaction ends.
pub(super) fn exec_abort_because(msg: &str) -> String {
    let msg = msg.strip_prefix("ERR ").unwrap_or(msg);
    format!("EXECABORT Transaction discarded because of: {msg}")
}
// Key space: the per-key commands (TYPE, OBJECT, MEMORY, RENAME, COPY,
// DUMP, RESTORE).

/// TYPE's answers: nvkv holds strings only.
pub(super) const TYPE_STRING: &str = "string";
pub(super) const TYPE_NONE: &str = "none";
/// COPY … DB with a number past 32 bits.
pub(super) const INT_OUT_OF_RANGE: &str =
    "ERR value is out of range, value must between -2147483648 and 2147483647";
/// RENAME of a missing key.
pub(super) const NO_SUCH_KEY: &str = "ERR no such key";
/// COPY of a key onto itself.
pub(super) const SAME_OBJECT: &str = "ERR source and destination objects are the same";
/// RESTORE of a key that exists, without REPLACE.
pub(super) const BUSYKEY: &str = "BUSYKEY Target key name already exists.";
pub(super) const RESTORE_BAD_TTL: &str = "ERR Invalid TTL value, must be >= 0";
pub(super) const RESTORE_BAD_IDLETIME: &str = "ERR Invalid IDLETIME value, must be >= 0";
pub(super) const RESTORE_BAD_FREQ: &str = "ERR Invalid FREQ value, must be >= 0 and <= 255";
pub(super) const DUMP_VERSION_OR_CHECKSUM: &str = "ERR DUMP payload version or checksum are wrong";
pub(super) const DUMP_BAD_FORMAT: &str = "ERR Bad data format";
/// OBJECT IDLETIME under an LFU policy, and OBJECT FREQ under any other.
pub(super) const OBJECT_LFU_SELECTED: &str = "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
pub(super) const OBJECT_LFU_NOT_SELECTED: &str = "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";
/// OBJECT ENCODING's answers for a string, as Redis chooses them.
pub(super) const ENCODING_INT: &str = "int";
pub(super) const ENCODING_EMBSTR: &str = "embstr";
pub(super) const ENCODING_RAW: &str = "raw";
/// OBJECT HELP and MEMORY HELP, after Redis's header line and before its
/// footer (those nvkv has of MEMORY's subcommands only).
pub(super) const OBJECT_HELP: &[&str] = &[
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
];
pub(super) const MEMORY_HELP: &[&str] = &[
    "USAGE <key> [SAMPLES <count>]",
    "    Return memory in bytes used by <key> and its value. Nested values are",
    "    sampled up to <count> times (default: 5, 0 means sample all).",
];
/// The footer of Redis's help replies.
pub(super) const HELP_FOOTER: [&str; 2] = ["HELP", "    Prints this help."];

/// The header of Redis's help replies for `cmd` (upper case).
pub(super) fn help_header(cmd: &str) -> String {
    format!("{cmd} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
}

// Pub/sub and server administration.

/// A subcommand called with arguments its command refuses (`PUBSUB
/// CHANNELS a b`, `SLOWLOG GET 1 2`): `sub` as the client wrote it.
pub(super) fn subcommand_syntax(sub: &[u8], cmd: &str) -> String {
    format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try {cmd} HELP.",
        echo(sub)
    )
}

/// A command other than (un)subscribing, PING, QUIT and RESET in RESP2's
/// subscribed mode (`name` as CLIENT LIST shows it).
/// SSUBSCRIBE run by EXEC (Redis refuses it to a client that may not
/// block).
pub(super) const SSUBSCRIBE_IN_MULTI: &str =
    "ERR SSUBSCRIBE isn't allowed for a DENY BLOCKING client";

pub(super) fn subscribed_mode(name: &str) -> String {
    format!("ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
}

/// The pong of PING in RESP2's subscribed mode.
pub(super) const PONG_SUBSCRIBED: &[u8] = b"pong";

pub(super) const SLOWLOG_COUNT: &str = "ERR count should be greater than or equal to -1";

pub(super) const RESET: &str = "RESET";

pub(super) const NO_CONFIG_FILE: &str = "ERR The server is running without a config file";

/// CONFIG REWRITE could not write the file.
pub(super) fn rewrite_failed(e: &std::io::Error) -> String {
    format!("ERR Rewriting config file: {e}")
}

pub(super) const NO_SHUTDOWN: &str = "ERR No shutdown in progress.";

// Key space: iteration and flushing.
/// SCAN's cursor is not an unsigned 64-bit number.
pub(super) const INVALID_CURSOR: &str = "ERR invalid cursor";

/// A write whose commit failed (`why` from the keyspace's error).
pub(super) fn write_failed(why: &dyn std::fmt::Display) -> String {
    format!("ERR I/O error, {why}")
}

/// A flush the store cannot do (`why` from the keyspace's error).
pub(super) fn flush_refused(why: &dyn std::fmt::Display) -> String {
    format!("ERR FLUSHDB refused: {why}")
}

// Replication.

/// A client's write on a read-only replica.
pub(super) const READONLY: &str = "READONLY You can't write against a read only replica.";
/// REPLICAOF's port is not an integer in 0..=65535.
pub(super) const INVALID_MASTER_PORT: &str = "ERR Invalid master port";
/// REPLICAOF of the primary the replica already follows.
pub(super) const ALREADY_CONNECTED: &str = "OK Already connected to specified master";
/// PSYNC from a replica that does not speak nvkv's stream (a Redis).
pub(super) const REPLICA_NOT_NVKV: &str = "ERR this primary is nvkv: it serves replicas that speak nvkv's replication stream (nvkv servers of the same stream version), not Redis's RDB";
/// PSYNC from a replica of another version of nvkv's stream.
pub(super) fn replica_other_stream(ours: &str, theirs: &[u8]) -> String {
    format!(
        "ERR this primary speaks {}, the replica {}: a replica must run a version of nvkv \
         with the same replication stream",
        ours,
        String::from_utf8_lossy(theirs)
    )
}
/// A command that needs the data set while a replica loads a full copy,
/// as Redis answers it.
pub(super) const LOADING: &str = "LOADING Redis is loading the dataset in memory";
/// PSYNC to a replica whose own link is down, as Redis answers it.
pub(super) const NOMASTERLINK: &str = "NOMASTERLINK Can't SYNC while not connected with my master";
/// PSYNC to a replica: chained replication is not served.
pub(super) const REPLICA_NO_SUBREPLICAS: &str =
    "ERR this server is a replica: nvkv does not serve replicas of replicas yet";
/// WAIT on a replica, as Redis says it.
pub(super) const WAIT_ON_REPLICA: &str = "ERR WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.";

/// WAIT's timeout is not an integer, or negative (Redis's texts).
pub(super) const TIMEOUT_NOT_INTEGER: &str = "ERR timeout is not an integer or out of range";
pub(super) const TIMEOUT_NEGATIVE: &str = "ERR timeout is negative";
/// A write on a primary with fewer good replicas than
/// `--min-replicas-to-write`.
pub(super) const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// REPLCONF with an option Redis does not know.
pub(super) fn unrecognized_replconf(opt: &[u8]) -> String {
    format!(
        "ERR Unrecognized REPLCONF option: {}",
        String::from_utf8_lossy(opt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_arguments_are_bounded_and_escaped() {
        let long = vec![b'x'; 300];
        let msg = unknown_command(&[b"NOPE\r\n", &long, b"more"]);
        assert!(msg.starts_with("ERR unknown command 'NOPE\\r\\n', with args beginning with: 'x"));
        assert_eq!(msg.matches('x').count(), ECHO_MAX);
        assert!(!msg.contains("more"));
        assert_eq!(
            wrong_arity("CONFIG|GET"),
            "ERR wrong number of arguments for 'config|get' command"
        );
    }
}
