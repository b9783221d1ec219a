//! The client side of memcached's text protocol, for measuring peers
//! (memcached with extstore) with the same client: `get` and `set`
//! requests, and a stateless incremental reply parser that maps replies onto
//! RESP's [`Reply`] so that the rest of the client judges them alike.
//!
//! `VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n` is a value and `END`
//! alone a miss; `STORED` reads as `+OK`; `ERROR`, `CLIENT_ERROR …` and
//! `SERVER_ERROR …` are error replies. Other lines (`NOT_STORED`, …) come
//! back as simple strings.

use crate::resp::{find_crlf, push_decimal, ProtocolError, Reply};

/// Appends `get <key>` to `out`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    out.extend_from_slice(b"get ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> 0 0 <bytes>` and the value to `out`.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" 0 0 ");
    push_decimal(out, value.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses the first reply in `buf`: the reply and its length in bytes,
/// `None` when `buf` holds only part of one, or an error.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply<'_>, usize)>, ProtocolError> {
    let Some(end) = find_crlf(buf, 0)? else {
        return Ok(None);
    };
    let line = &buf[..end];
    let next = end + 2;
    if line == b"END" {
        return Ok(Some((Reply::Nil, next)));
    }
    if line == b"STORED" {
        return Ok(Some((Reply::Simple(b"OK"), next)));
    }
    if line == b"ERROR" {
        return Ok(Some((Reply::Error(line), next)));
    }
    if line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR") {
        return Ok(Some((Reply::Error(line), next)));
    }
    let Some(header) = line.strip_prefix(b"VALUE ") else {
        return Ok(Some((Reply::Simple(line), next)));
    };
    // VALUE <key> <flags> <bytes> [<cas>]
    let bytes = header
        .split(|&b| b == b' ')
        .nth(2)
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse::<usize>().ok())
        .ok_or(ProtocolError::new("malformed VALUE line"))?;
    let data_end = next
        .checked_add(bytes)
        .ok_or(ProtocolError::new("value length overflows"))?;
    const TRAILER: &[u8] = b"\r\nEND\r\n";
    if buf.len() < data_end + TRAILER.len() {
        return Ok(None);
    }
    if &buf[data_end..data_end + TRAILER.len()] != TRAILER {
        return Err(ProtocolError::new("value not followed by END"));
    }
    Ok(Some((
        Reply::Bulk(&buf[next..data_end]),
        data_end + TRAILER.len(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_misses_and_stores() {
        let buf = b"VALUE k:0:1 0 3\r\nabc\r\nEND\r\nEND\r\nSTORED\r\n";
        let (r, n) = parse(buf).unwrap().unwrap();
        assert_eq!(r, Reply::Bulk(b"abc"));
        let (r, m) = parse(&buf[n..]).unwrap().unwrap();
        assert_eq!(r, Reply::Nil);
        let (r, _) = parse(&buf[n + m..]).unwrap().unwrap();
        assert_eq!(r, Reply::Simple(b"OK"));
    }

    #[test]
    fn partial_replies_wait_for_more() {
        let full = b"VALUE k 5 10\r\n0123456789\r\nEND\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(full).unwrap(),
            Some((Reply::Bulk(b"0123456789"), full.len()))
        );
    }

    #[test]
    fn values_may_hold_crlf() {
        let buf = b"VALUE k 0 4\r\n\r\n\r\n\r\nEND\r\n";
        assert_eq!(parse(buf).unwrap().unwrap().0, Reply::Bulk(b"\r\n\r\n"));
    }

    #[test]
    fn errors_are_error_replies_and_garbage_is_an_error() {
        assert_eq!(
            parse(b"SERVER_ERROR out of memory\r\n").unwrap().unwrap().0,
            Reply::Error(b"SERVER_ERROR out of memory")
        );
        assert_eq!(
            parse(b"ERROR\r\n").unwrap().unwrap().0,
            Reply::Error(b"ERROR")
        );
        assert!(parse(b"VALUE k 0 x\r\n").is_err());
        assert!(parse(b"VALUE k 0 1\r\nab\r\nEND\r\n").is_err());
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        encode_get(&mut out, b"k:1:2");
        encode_set(&mut out, b"k", b"v\r\n");
        assert_eq!(out, b"get k:1:2\r\nset k 0 0 3\r\nv\r\n\r\n");
    }
}
