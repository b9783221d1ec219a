//! Whole RESP values read from a blocking socket (the crate's codec,
//! [`resp::parse_value`], does the parsing): the replies of the
//! in-process connection, the primary's stream, a replica's
//! acknowledgements.

use std::io::{Error, ErrorKind, Read};
use std::ops::Range;

use crate::resp::{self, Limits, Value};

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
            self.fill()?;
        }
    }

    /// Whole multibulk commands buffered from here on, parsed in place
    /// (no copy, nothing allocated per argument), each handed to `take`
    /// with its arguments' ranges in its bytes: `Ok(true)` takes it,
    /// `Ok(false)` stops before it. Reads from the socket only while
    /// nothing whole is buffered. Returns the bytes of the commands taken,
    /// back to back, and how many they are: none when what comes next is
    /// not a multibulk command or `take` stopped at it (for
    /// [`Reader::next`] to read). Bytes that are not RESP are an
    /// `InvalidData` error.
    pub(super) fn commands(
        &mut self,
        args: &mut Vec<Range<usize>>,
        mut take: impl FnMut(&[u8], &[Range<usize>]) -> std::io::Result<bool>,
    ) -> std::io::Result<(&[u8], u64)> {
        let limits = Limits {
            max_bulk: MAX_VALUE,
            ..Limits::default()
        };
        loop {
            let start = self.pos;
            let mut at = start;
            let mut n = 0;
            let mut stopped = false;
            while self.buf.get(at) == Some(&b'*') {
                match resp::parse_command(&self.buf[at..], &limits, args) {
                    Ok(Some(len)) => {
                        if !take(&self.buf[at..at + len], args)? {
                            stopped = true;
                            break;
                        }
                        at += len;
                        n += 1;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(Error::new(ErrorKind::InvalidData, e)),
                }
            }
            if n > 0 || stopped || at < self.buf.len() && self.buf[at] != b'*' {
                self.pos = at;
                return Ok((&self.buf[start..at], n));
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer, the bytes already taken dropped
    /// first.
    fn fill(&mut self) -> std::io::Result<()> {
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
            Ok(0) => Err(Error::new(ErrorKind::UnexpectedEof, "connection closed")),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
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
