//! Appending RESP to a buffer: the server's replies, and the client's
//! requests (an array of bulk strings, [`command`]).
//!
//! Each function is named for the kind it writes. The kinds RESP2 and
//! RESP3 write alike (simple strings, errors, integers, bulk strings,
//! arrays) take no protocol; those RESP3 writes with a type byte of its
//! own (null, map, set, verbatim string) take the connection's [`Proto`]
//! and write RESP2's form of them under RESP2, as Redis does.

use super::{push_decimal, push_int};

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    /// The version number HELLO and CLIENT LIST show.
    pub fn version(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// Appends the simple string `+<s>\r\n`.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the error `-<msg>\r\n` (line breaks in `msg` become spaces).
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends the integer `:<n>\r\n`.
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_int(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the bulk string `$<len>\r\n<b>\r\n`.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    bulk_header(out, b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends `$<len>\r\n`: the caller appends the bytes and `\r\n`.
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the missing value: RESP2's nil bulk string `$-1\r\n`.
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends the missing value: RESP3's null `_\r\n`, RESP2's nil bulk
/// string `$-1\r\n` (Redis's `addReplyNull`).
pub fn null(out: &mut Vec<u8>, p: Proto) {
    match p {
        Proto::Resp2 => nil(out),
        Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends the missing array: RESP3's null `_\r\n`, RESP2's `*-1\r\n`
/// (Redis's `addReplyNullArray`).
pub fn null_array(out: &mut Vec<u8>, p: Proto) {
    match p {
        Proto::Resp2 => out.extend_from_slice(b"*-1\r\n"),
        Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// Appends the header of a map of `n` pairs: `%<n>\r\n` in RESP3, an
/// array of `2n` elements in RESP2; the caller appends key, value, key, ….
pub fn map(out: &mut Vec<u8>, n: usize, p: Proto) {
    match p {
        Proto::Resp2 => array(out, 2 * n),
        Proto::Resp3 => header(out, b'%', n),
    }
}

/// Appends the header of a set of `n` elements: `~<n>\r\n` in RESP3, an
/// array in RESP2.
pub fn set(out: &mut Vec<u8>, n: usize, p: Proto) {
    match p {
        Proto::Resp2 => array(out, n),
        Proto::Resp3 => header(out, b'~', n),
    }
}

/// Appends text for people (INFO, CLIENT LIST): RESP3's verbatim string
/// `=<len>\r\ntxt:<text>\r\n`, a bulk string in RESP2.
pub fn verbatim(out: &mut Vec<u8>, text: &[u8], p: Proto) {
    match p {
        Proto::Resp2 => bulk(out, text),
        Proto::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.extend_from_slice(b"txt:");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the header `*<n>\r\n` of an array of `n` elements; the caller
/// appends the elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends an array of simple strings: a HELP reply's lines.
pub fn lines(out: &mut Vec<u8>, lines: &[&str]) {
    array(out, lines.len());
    lines.iter().for_each(|l| simple(out, l));
}

/// Appends a request: the array of the bulk strings `args` (the command
/// name first).
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    array(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let mut o = Vec::new();
        simple(&mut o, "OK");
        error(&mut o, "ERR x\r\ny");
        int(&mut o, -3);
        bulk(&mut o, b"a\r\n");
        nil(&mut o);
        array(&mut o, 2);
        assert_eq!(
            o,
            b"+OK\r\n-ERR x  y\r\n:-3\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n"
        );
    }

    #[test]
    fn resp3_kinds_and_their_resp2_forms() {
        let both = |f: &dyn Fn(&mut Vec<u8>, Proto)| {
            let (mut two, mut three) = (Vec::new(), Vec::new());
            f(&mut two, Proto::Resp2);
            f(&mut three, Proto::Resp3);
            (
                String::from_utf8(two).unwrap(),
                String::from_utf8(three).unwrap(),
            )
        };
        assert_eq!(both(&|o, p| null(o, p)), ("$-1\r\n".into(), "_\r\n".into()));
        assert_eq!(
            both(&|o, p| null_array(o, p)),
            ("*-1\r\n".into(), "_\r\n".into())
        );
        assert_eq!(
            both(&|o, p| map(o, 2, p)),
            ("*4\r\n".into(), "%2\r\n".into())
        );
        assert_eq!(
            both(&|o, p| set(o, 3, p)),
            ("*3\r\n".into(), "~3\r\n".into())
        );
        assert_eq!(
            both(&|o, p| verbatim(o, b"a:1", p)),
            ("$3\r\na:1\r\n".into(), "=7\r\ntxt:a:1\r\n".into())
        );
    }

    #[test]
    fn requests() {
        let mut o = Vec::new();
        command(&mut o, &[b"SET", b"k", b""]);
        assert_eq!(o, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
