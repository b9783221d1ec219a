//! The client's side of RESP: an incremental reply parser.
//!
//! The parser is stateless: [`parse_reply`] looks at the unconsumed bytes
//! of a connection and either returns the first complete reply and its
//! length, or `None` when more bytes are needed. Callers append what the
//! socket gives them and retry; only header lines are ever re-scanned,
//! never bulk payloads, so a large value arriving in many reads costs no
//! more than one arriving in one read.

use super::{find_crlf, parse_int, ProtocolError};

/// Aggregates nested deeper than this are rejected rather than recursed
/// into.
pub const MAX_DEPTH: usize = 32;

/// One reply from a server, borrowing the connection's input buffer.
///
/// RESP2's kinds. RESP3's become variants here, each parsed by one arm of
/// [`parse_reply`]'s `match` on the type byte: `Null` (`_`, which RESP2
/// spells as [`Reply::Nil`]), `Double` and `BigNumber` (their text, as
/// [`Reply::Simple`] carries it), `Boolean`, `BulkError` and `Verbatim`
/// (payloads, read as [`Reply::Bulk`] is), and the aggregates `Map`, `Set`
/// and `Push` (element counts, skipped as [`Reply::Array`]'s are).
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

/// Parses the first reply in `buf`.
///
/// Returns the reply and the number of bytes it occupies, `None` if `buf`
/// holds only part of a reply, or an error if `buf` does not start with a
/// valid reply.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

const MALFORMED_INTEGER: ProtocolError = ProtocolError::new("malformed integer");

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
    let Some(line_end) = find_crlf(buf, pos + 1)? else {
        return Ok(None);
    };
    let line = &buf[pos + 1..line_end];
    let next = line_end + 2;
    let int = || parse_int(line).ok_or(MALFORMED_INTEGER);
    match tag {
        b'+' => Ok(Some((Reply::Simple(line), next))),
        b'-' => Ok(Some((Reply::Error(line), next))),
        b':' => Ok(Some((Reply::Integer(int()?), next))),
        b'$' => parse_bulk(buf, int()?, next),
        b'*' => parse_array(buf, int()?, next, depth),
        _ => Err(ProtocolError::new("unknown reply type byte")),
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
        .ok_or(ProtocolError::new("bulk length overflows"))?;
    let Some(terminator) = buf.get(end..end + 2) else {
        return Ok(None);
    };
    if terminator != b"\r\n" {
        return Err(ProtocolError::new("bulk string not terminated by CRLF"));
    }
    Ok(Some((Reply::Bulk(&buf[start..end]), end + 2)))
}

/// An array of `count` elements starting at `start`.
fn parse_array(
    buf: &[u8],
    count: i64,
    start: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(count) = length(count)? else {
        return Ok(Some((Reply::Nil, start)));
    };
    Ok(skip_elements(buf, count, start, depth)?.map(|end| (Reply::Array(count), end)))
}

/// Checks and skips the `count` elements of an aggregate starting at
/// `start`: where they end, or `None` if they are not all in `buf` yet.
fn skip_elements(
    buf: &[u8],
    count: usize,
    start: usize,
    depth: usize,
) -> Result<Option<usize>, ProtocolError> {
    if depth == MAX_DEPTH {
        return Err(ProtocolError::new("arrays nested too deeply"));
    }
    let mut pos = start;
    for _ in 0..count {
        match parse_at(buf, pos, depth + 1)? {
            Some((_, end)) => pos = end,
            None => return Ok(None),
        }
    }
    Ok(Some(pos))
}

/// A bulk or array length: `None` for -1 (nil), an error below that.
fn length(len: i64) -> Result<Option<usize>, ProtocolError> {
    match len {
        -1 => Ok(None),
        _ => usize::try_from(len)
            .map(Some)
            .map_err(|_| ProtocolError::new("negative length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses every reply of `buf` in order, asserting that nothing is left.
    fn parse_all(buf: &[u8]) -> Vec<Reply<'_>> {
        let mut replies = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let (reply, used) = parse_reply(&buf[pos..]).unwrap().expect("complete reply");
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
            assert_eq!(parse_reply(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_reply(reply), Ok(Some((Reply::Array(2), reply.len()))));
    }

    #[test]
    fn pipelined_replies_fed_byte_by_byte() {
        let stream = b"+OK\r\n$3\r\nabc\r\n$-1\r\n:5\r\n-OOM\r\n";
        let mut buffered = Vec::new();
        let mut got = Vec::new();
        for &byte in stream {
            buffered.push(byte);
            while let Some((reply, used)) = parse_reply(&buffered).unwrap() {
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
            b"+O\nK\r\n",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_reply(b":-9223372036854775808\r\n")
                .unwrap()
                .unwrap()
                .0,
            Reply::Integer(i64::MIN)
        );
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse_reply(&deep).is_err());
    }
}
