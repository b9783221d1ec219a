//! Appending RESP to a buffer: the server's replies, and the client's
//! requests (an array of bulk strings, [`command`]).
//!
//! Each function is named for the kind it writes; the bytes are RESP2's.

use super::{push_decimal, push_int};

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

/// Appends the header `*<n>\r\n` of an array of `n` elements; the caller
/// appends the elements.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as u64);
    out.extend_from_slice(b"\r\n");
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
    fn requests() {
        let mut o = Vec::new();
        command(&mut o, &[b"SET", b"k", b""]);
        assert_eq!(o, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }
}
