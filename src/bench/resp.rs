//! The client side of RESP2: request encoding and an incremental reply
//! parser.
//!
//! The parser is stateless: [`parse`] looks at the unconsumed bytes of a
//! connection and either returns the first complete reply and its length, or
//! `None` when more bytes are needed. Callers append what the socket gives
//! them and retry; only header lines are ever re-scanned, never bulk payloads,
//! so a large value arriving in many reads costs no more than one arriving in
//! one read.

use std::fmt;

/// Arrays nested deeper than this are rejected rather than recursed into.
const MAX_DEPTH: usize = 32;

/// One reply from the server, borrowing the connection's input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`: a simple string, without its type byte and CRLF.
    Simple(&'a [u8]),
    /// `-ERR ...`: an error, without its type byte and CRLF.
    Error(&'a [u8]),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nabc`: the payload of a bulk string.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`: a missing value.
    Nil,
    /// `*n`: an array of `n` replies. The elements (arrays included) are
    /// checked and consumed, but not returned: a benchmark never needs them.
    Array(usize),
}

/// The server sent bytes that are not RESP2. The connection is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError(pub(super) &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Parses the first reply in `buf`.
///
/// Returns the reply and the number of bytes it occupies, `None` if `buf`
/// holds only part of a reply, or an error if `buf` does not start with a
/// valid reply.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

/// Parses the reply starting at `pos`; on success, returns it with the
/// position just past it.
fn parse_at(
    buf: &[u8],
    pos: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(line_end) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let line = &buf[pos + 1..line_end];
    let next = line_end + 2;
    match tag {
        b'+' => Ok(Some((Reply::Simple(line), next))),
        b'-' => Ok(Some((Reply::Error(line), next))),
        b':' => Ok(Some((Reply::Integer(parse_int(line)?), next))),
        b'$' => parse_bulk(buf, parse_int(line)?, next),
        b'*' => parse_array(buf, parse_int(line)?, next, depth),
        _ => Err(ProtocolError("unknown reply type byte")),
    }
}

/// The payload of a bulk string of `len` bytes starting at `start`.
fn parse_bulk(
    buf: &[u8],
    len: i64,
    start: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(len) = length(len)? else {
        return Ok(Some((Reply::Nil, start)));
    };
    let end = start
        .checked_add(len)
        .ok_or(ProtocolError("bulk length overflows"))?;
    let Some(terminator) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    if terminator != b"\r\n" {
        return Err(ProtocolError("bulk string not terminated by CRLF"));
    }
    Ok(Some((Reply::Bulk(&buf[start..end]), end + 2)))
}

/// Skips the `count` elements of an array starting at `start`.
fn parse_array(
    buf: &[u8],
    count: i64,
    start: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(count) = length(count)? else {
        return Ok(Some((Reply::Nil, start)));
    };
    if depth == MAX_DEPTH {
        return Err(ProtocolError("arrays nested too deeply"));
    }
    let mut pos = start;
    for _ in 0..count {
        match parse_at(buf, pos, depth + 1)? {
            Some((_, end)) => pos = end,
            None => return Ok(None),
        }
    }
    Ok(Some((Reply::Array(count), pos)))
}

/// A bulk or array length: `None` for -1 (nil), an error below that.
fn length(len: i64) -> Result<Option<usize>, ProtocolError> {
    match len {
        -1 => Ok(None),
        _ => usize::try_from(len)
            .map(Some)
            .map_err(|_| ProtocolError("negative length")),
    }
}

/// Position of the first CRLF at or after `from`.
pub(super) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    rest.windows(2)
        .position(|w| w == b"\r\n")
        .map(|offset| from + offset)
}

/// A signed decimal integer, as in `:` replies and `$`/`*` headers.
fn parse_int(text: &[u8]) -> Result<i64, ProtocolError> {
    const BAD: ProtocolError = ProtocolError("malformed integer");
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(BAD);
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(BAD);
        }
        let digit = i64::from(d - b'0');
        // Accumulate negatively so that i64::MIN parses too.
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(digit))
            .ok_or(BAD)?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(BAD)
    }
}

/// Appends `GET key` to `out`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"*2\r\n$3\r\nGET\r\n");
    encode_bulk(out, key);
}

/// Appends `SET key value` to `out`.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
    encode_bulk(out, key);
    encode_bulk(out, value);
}

/// Appends `$<len>\r\n<bytes>\r\n`.
fn encode_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal, without going through `fmt`.
pub(super) fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses every reply of `buf` in order, asserting that nothing is left.
    fn parse_all(buf: &[u8]) -> Vec<Reply<'_>> {
        let mut replies = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let (reply, used) = parse(&buf[pos..]).unwrap().expect("complete reply");
            replies.push(reply);
            pos += used;
        }
        replies
    }

    #[test]
    fn every_reply_type() {
        let input = b"+OK\r\n-ERR no such key\r\n:-42\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n*-1\r\n";
        assert_eq!(
            parse_all(input),
            [
                Reply::Simple(b"OK"),
                Reply::Error(b"ERR no such key"),
                Reply::Integer(-42),
                Reply::Bulk(b"hello"),
                Reply::Bulk(b""),
                Reply::Nil,
                Reply::Nil,
            ]
        );
    }

    #[test]
    fn bulk_payload_may_contain_crlf() {
        assert_eq!(parse_all(b"$4\r\n\r\n\r\n\r\n"), [Reply::Bulk(b"\r\n\r\n")]);
    }

    #[test]
    fn nested_arrays_are_consumed_whole() {
        let input = b"*3\r\n*2\r\n:1\r\n*1\r\n$-1\r\n$2\r\nab\r\n*0\r\n+OK\r\n";
        assert_eq!(parse_all(input), [Reply::Array(3), Reply::Simple(b"OK")]);
    }

    #[test]
    fn every_split_point_is_incomplete_until_the_end() {
        let reply = b"*2\r\n$3\r\nabc\r\n*1\r\n:7\r\n";
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(reply), Ok(Some((Reply::Array(2), reply.len()))));
    }

    #[test]
    fn pipelined_replies_fed_byte_by_byte() {
        let stream = b"+OK\r\n$3\r\nabc\r\n$-1\r\n:5\r\n-OOM\r\n";
        let mut buffered = Vec::new();
        let mut got = Vec::new();
        for &byte in stream {
            buffered.push(byte);
            while let Some((reply, used)) = parse(&buffered).unwrap() {
                got.push(format!("{reply:?}"));
                buffered.drain(..used);
            }
        }
        assert!(buffered.is_empty());
        assert_eq!(
            got,
            [
                "Simple([79, 75])",
                "Bulk([97, 98, 99])",
                "Nil",
                "Integer(5)",
                "Error([79, 79, 77])"
            ]
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"?\r\n"[..],
            b":12x\r\n",
            b":\r\n",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            parse(b":-9223372036854775808\r\n").unwrap().unwrap().0,
            Reply::Integer(i64::MIN)
        );
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn requests_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_get(&mut out, b"k:0:1");
        encode_set(&mut out, b"k", &[b'x'; 12]);
        assert_eq!(
            out,
            b"*2\r\n$3\r\nGET\r\n$5\r\nk:0:1\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$12\r\nxxxxxxxxxxxx\r\n"
        );
        let mut zero = Vec::new();
        push_decimal(&mut zero, 0);
        assert_eq!(zero, b"0");
    }
}
