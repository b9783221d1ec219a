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

/// A reply read whole and owned, arrays with their elements: what the
/// replication link reads (an in-process connection's replies, and the
/// primary's stream of commands, arrays of bulk strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    /// A command's arguments: an array of bulk strings.
    pub fn into_args(self) -> Option<Vec<Vec<u8>>> {
        match self {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Bulk(b) => Some(b),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// Parses the first reply in `buf` whole, as [`parse_reply`] checks it:
/// the value and its length, `None` if `buf` holds only part of it.
pub fn parse_value(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some((_, len)) = parse_reply(buf)? else {
        return Ok(None);
    };
    let (value, end) = build(buf, 0);
    debug_assert_eq!(end, len);
    Ok(Some((value, len)))
}

/// The value at `pos` of a buffer [`parse_reply`] accepted, and where it
/// ends.
fn build(buf: &[u8], pos: usize) -> (Value, usize) {
    const CHECKED: &str = "checked by parse_reply";
    let (reply, end) = parse_at(buf, pos, 0).expect(CHECKED).expect(CHECKED);
    let value = match reply {
        Reply::Simple(s) => Value::Simple(s.to_vec()),
        Reply::Error(e) => Value::Error(e.to_vec()),
        Reply::Integer(n) => Value::Integer(n),
        Reply::Bulk(b) => Value::Bulk(b.to_vec()),
        Reply::Nil => Value::Nil,
        Reply::Array(n) => {
            // The elements start after the header line.
            let mut at = find_crlf(buf, pos + 1).expect(CHECKED).expect(CHECKED) + 2;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let (item, next) = build(buf, at);
                items.push(item);
                at = next;
            }
            Value::Array(items)
        }
    };
    (value, end)
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
    fn values_are_read_whole() {
        let buf = b"*3\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$-1\r\n+OK\r\n:5\r\n-ERR x\r\n";
        let (v, n) = parse_value(buf).unwrap().unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Bulk(b"0".to_vec()),
                Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Nil]),
                Value::Simple(b"OK".to_vec()),
            ])
        );
        assert_eq!(
            parse_value(&buf[n..]).unwrap().unwrap().0,
            Value::Integer(5)
        );
        assert_eq!(
            parse_value(&buf[n + 4..]).unwrap().unwrap().0,
            Value::Error(b"ERR x".to_vec())
        );
        for cut in 0..n {
            assert_eq!(parse_value(&buf[..cut]), Ok(None), "{cut}");
        }
        assert!(parse_value(b"$1\r\nab\r\n").is_err());
        let args = parse_value(b"*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(args.into_args(), Some(vec![b"DEL".to_vec(), b"k".to_vec()]));
        let not_args = parse_value(b"*1\r\n:1\r\n").unwrap().unwrap().0;
        assert_eq!(not_args.into_args(), None);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse_reply(&deep).is_err());
    }
}
