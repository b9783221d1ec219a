//! RESP2 values read whole: the replies of the in-process connection and
//! the commands of the primary's stream.

use crate::resp;

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Value>),
}

/// Nesting a value may have (SCAN's reply has two levels).
const MAX_DEPTH: usize = 8;

/// Parses the value at the start of `buf`: the value and its length,
/// `Ok(None)` when `buf` holds only part of it, `Err` when it is not RESP2.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Value, usize)>, String> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = resp::find_crlf(buf, pos + 1).map_err(|e| e.message().to_string())? else {
        return Ok(None);
    };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    let int = || resp::parse_int(line).ok_or_else(|| "malformed integer".to_string());
    Ok(Some(match tag {
        b'+' => (Value::Simple(line.to_vec()), next),
        b'-' => (Value::Error(line.to_vec()), next),
        b':' => (Value::Int(int()?), next),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            (Value::Bulk(buf[next..end].to_vec()), end + 2)
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth == MAX_DEPTH {
                return Err("values nested too deep".into());
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((v, after)) => {
                        items.push(v);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            (Value::Array(items), at)
        }
        other => return Err(format!("unexpected byte {other:#04x}")),
    }))
}

impl Value {
    /// A command's arguments: an array of bulk strings.
    pub(super) fn into_args(self) -> Option<Vec<Vec<u8>>> {
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

/// Reads whole values from a blocking socket.
pub(super) struct Reader<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
}

/// Bytes read per call.
const CHUNK: usize = 64 << 10;

impl<R: std::io::Read> Reader<R> {
    pub(super) fn new(src: R) -> Self {
        Reader {
            src,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next value and the bytes it took.
    pub(super) fn next(&mut self) -> std::io::Result<(Value, usize)> {
        use std::io::{Error, ErrorKind};
        loop {
            match parse(&self.buf[self.pos..]) {
                Ok(Some((v, n))) => {
                    self.pos += n;
                    return Ok((v, n));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::new(ErrorKind::InvalidData, e)),
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let got = self.src.read(&mut self.buf[len..]);
            self.buf.truncate(len + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed")),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next line (`+FULLRESYNC …`), without its CRLF.
    pub(super) fn line(&mut self) -> std::io::Result<Vec<u8>> {
        match self.next()?.0 {
            Value::Simple(l) => Ok(l),
            Value::Error(e) => Err(std::io::Error::other(
                String::from_utf8_lossy(&e).into_owned(),
            )),
            v => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected a status line, got {v:?}"),
            )),
        }
    }

    /// Whether input is buffered but not yet parsed.
    pub(super) fn peek_byte(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_values_and_waits_for_the_rest() {
        let buf = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$-1\r\n:5\r\n";
        let (v, n) = parse(buf).unwrap().unwrap();
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Bulk(b"0".to_vec()),
                Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Nil]),
            ])
        );
        assert_eq!(parse(&buf[n..]).unwrap().unwrap().0, Value::Int(5));
        for cut in 0..n {
            assert_eq!(parse(&buf[..cut]).unwrap(), None, "{cut}");
        }
        assert!(parse(b"$1\r\nab\r\n").is_err());
        assert!(parse(b"?x\r\n").is_err());
    }
}
