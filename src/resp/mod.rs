//! RESP, the Redis protocol: one codec for the server and the bench client.
//!
//! - [`request`]: the server's incremental request parser (the multibulk
//!   form clients send and the inline form typed into telnet), bounded by
//!   [`Limits`].
//! - [`reply`]: the client's incremental reply parser, into [`Reply`]
//!   (borrowed, aggregates skipped) or [`Value`] (owned, whole: the
//!   replication link's).
//! - [`encode`]: replies (server) and requests (client) appended to a
//!   buffer.
//! - Here, what both directions share: the end of a line, the integer of a
//!   header line or an integer reply, Redis's `string2ll` for integers in
//!   arguments, decimal output, and [`ProtocolError`].
//!
//! RESP2, and RESP3 after `HELLO 3`. RESP3 adds kinds, each with a type
//! byte of its own: null `_`, double `,`, boolean `#`, big number `(`, bulk
//! error `!`, verbatim string `=`, map `%`, set `~`, attribute `|` and push
//! `>`. The server writes those its replies need (null, map, set, verbatim
//! string): each encoder of such a kind takes the connection's [`Proto`]
//! and writes RESP2's form under RESP2 (`encode::null` is `$-1` there, a
//! map a flat array), so a handler writes a reply once for both. The reply
//! parser (the bench client's) reads RESP2: it dispatches on the type byte
//! in one `match`, so a RESP3 kind is one more arm and one more [`Reply`]
//! variant.

use std::borrow::Cow;
use std::fmt;

pub mod encode;
pub mod reply;
pub mod request;

pub use encode::{
    array, bulk, bulk_header, error, int, lines, map, nil, null, null_array, set, simple, verbatim,
    Proto,
};
pub use reply::{parse_reply, parse_value, Reply, Value};
pub use request::{parse_command, parse_resumable, Limits, Resume};

/// Bytes that are not RESP. A server answers `-ERR Protocol error: <msg>`
/// and closes the connection, as Redis does; a client drops the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(Cow<'static, str>);

impl ProtocolError {
    /// An error with a fixed message.
    pub const fn new(msg: &'static str) -> Self {
        ProtocolError(Cow::Borrowed(msg))
    }

    /// What is wrong, without the `Protocol error: ` prefix.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl From<String> for ProtocolError {
    fn from(msg: String) -> Self {
        ProtocolError(Cow::Owned(msg))
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Where the line that starts at `from` ends: `Ok(Some(i))` with
/// `buf[i..i + 2] == b"\r\n"`, `Ok(None)` while no `\n` has arrived. A
/// first `\n` without its `\r` (a bare LF) is an error: RESP lines end in
/// CRLF. A `\r` alone is part of the line.
pub fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    match rest.iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(nl) if nl > 0 && rest[nl - 1] == b'\r' => Ok(Some(from + nl - 1)),
        Some(_) => Err(ProtocolError::new("line not terminated by CRLF")),
    }
}

/// The integer of a header line or of an integer reply (the `3` of `$3`,
/// the `-1` of `$-1`, the `42` of `:42`): an optional `-` and 1 to 19
/// digits whose value fits an `i64`, `i64::MIN` included. A longer or
/// larger number is refused, never wrapped. Leading zeros and `-0` are
/// read, as nvkv always has; Redis reads these lines with `string2ll`
/// ([`parse_redis_int`]), which refuses both.
pub fn parse_int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // Accumulated below zero, so that i64::MIN is read too.
        v = v.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// An integer as Redis reads one from a string (its `string2ll`): an
/// optional `-`, then digits without a leading zero (or `0` alone), at most
/// 20 bytes, in `i64`. No `+`, no spaces. For integers in arguments and
/// values (INCRBY's increment, EXPIRE's time, a counter's value).
pub fn parse_redis_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    if b == b"0" {
        return Some(0);
    }
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Appends `n` in decimal, without going through `fmt`.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a single digit, so the narrowing cannot lose anything.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `n` in decimal, with its sign.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_decimal(out, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends() {
        assert_eq!(find_crlf(b"+OK\r\n", 1), Ok(Some(3)));
        assert_eq!(find_crlf(b"+\r\n", 1), Ok(Some(1)));
        assert_eq!(find_crlf(b"+a\rb\r\n", 1), Ok(Some(4)));
        assert_eq!(find_crlf(b"+OK\r", 1), Ok(None));
        assert_eq!(find_crlf(b"+OK", 9), Ok(None));
        assert!(find_crlf(b"+O\nK\r\n", 1).is_err());
        assert!(find_crlf(b"*\n", 1).is_err());
    }

    #[test]
    fn header_integers() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"007"), Some(7));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775807"), Some(-i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1x",
            b"9223372036854775808",
            b"99999999999999999999",
            b"00000000000000000001",
        ] {
            assert_eq!(parse_int(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }

    #[test]
    fn redis_integers() {
        assert_eq!(parse_redis_int(b"0"), Some(0));
        assert_eq!(parse_redis_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_redis_int(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"-0", b"05", b"+5", b" 5", b"9223372036854775808"] {
            assert_eq!(parse_redis_int(bad), None);
        }
    }

    #[test]
    fn decimals() {
        let mut o = Vec::new();
        push_decimal(&mut o, 0);
        o.push(b' ');
        push_decimal(&mut o, u64::MAX);
        o.push(b' ');
        push_int(&mut o, i64::MIN);
        o.push(b' ');
        push_int(&mut o, -3);
        assert_eq!(o, b"0 18446744073709551615 -9223372036854775808 -3");
    }

    #[test]
    fn protocol_error_text() {
        let e = ProtocolError::new("invalid bulk length");
        assert_eq!(e.to_string(), "Protocol error: invalid bulk length");
        assert_eq!(e.message(), "invalid bulk length");
    }
}
