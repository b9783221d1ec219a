//! Whole RESP values read from a blocking socket (the crate's codec,
//! [`resp::parse_value`], does the parsing): the replies of the
//! in-process connection, the primary's stream, a replica's
//! acknowledgements.

use std::io::{Error, ErrorKind, Read};

use crate::resp::{self, Value};

/// Reads whole values from a blocking socket.
pub(super) struct Reader<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
}

/// Bytes read per call.
const CHUNK: usize = 64 << 10;

/// Most bytes one value may take: past the largest value a store holds
/// (`--max-bulk`'s ceiling), what is coming is not a value of ours.
const MAX_VALUE: usize = 600 << 20;

impl<R: Read> Reader<R> {
    pub(super) fn new(src: R) -> Self {
        Reader {
            src,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The next value and the bytes it took. Bytes that are not RESP are
    /// an `InvalidData` error; so is a value longer than [`MAX_VALUE`].
    pub(super) fn next(&mut self) -> std::io::Result<(Value, usize)> {
        loop {
            match resp::parse_value(&self.buf[self.pos..]) {
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
            if len > MAX_VALUE {
                return Err(Error::new(
                    ErrorKind::InvalidData,
                    format!("a value longer than {MAX_VALUE} bytes"),
                ));
            }
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

    /// The last `n` bytes parsed: those of the value [`Reader::next`] just
    /// returned, with `n` its length.
    pub(super) fn last(&self, n: usize) -> &[u8] {
        &self.buf[self.pos - n..self.pos]
    }

    /// The next line (`+FULLRESYNC …`), without its CRLF; an error reply
    /// is an error.
    pub(super) fn line(&mut self) -> std::io::Result<Vec<u8>> {
        match self.next()?.0 {
            Value::Simple(l) => Ok(l),
            Value::Error(e) => Err(Error::other(String::from_utf8_lossy(&e).into_owned())),
            v => Err(Error::new(
                ErrorKind::InvalidData,
                format!("expected a status line, got {v:?}"),
            )),
        }
    }

    /// The next byte that is not a newline (what a Redis primary sends to
    /// keep the link alive while it prepares an RDB file), without taking
    /// it; the newlines are taken.
    pub(super) fn peek_past_newlines(&mut self) -> std::io::Result<u8> {
        loop {
            while self.buf.get(self.pos) == Some(&b'\n') {
                self.pos += 1;
            }
            if let Some(&b) = self.buf.get(self.pos) {
                return Ok(b);
            }
            self.buf.clear();
            self.pos = 0;
            self.buf.resize(CHUNK, 0);
            let got = self.src.read(&mut self.buf);
            self.buf.truncate(*got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed")),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
