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

// Key space: iteration and flushing.
/// SCAN's cursor is not an unsigned 64-bit number.
pub(super) const INVALID_CURSOR: &str = "ERR invalid cursor";

/// A flush the store cannot do (`why` from the keyspace's error).
pub(super) fn flush_refused(why: &dyn std::fmt::Display) -> String {
    format!("ERR FLUSHDB refused: {why}")
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
