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
    /// Bytes read up to `end`; past it, room for the next reads (written
    /// once when the buffer grows, not zeroed again before each read).
    buf: Vec<u8>,
    end: usize,
    pos: usize,
    /// Bytes taken stay in the buffer until [`Reader::take_parsed`]
    /// hands them over (a full copy's batches point into them).
    hold: bool,
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
            end: 0,
            pos: 0,
            hold: false,
        }
    }

    /// From now on (`true`), the bytes taken stay in the buffer, which
    /// grows, until [`Reader::take_parsed`] hands them over; `false`:
    /// they are dropped as more come (the default).
    pub(super) fn hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// The bytes taken so far that the buffer holds: since the last
    /// [`Reader::take_parsed`], while held.
    pub(super) fn taken(&self) -> usize {
        self.pos
    }

    /// Hands over the buffer, which starts with the bytes taken (the
    /// offsets [`Reader::commands`] gave are into it; what follows them is
    /// not to be read), and goes on in `fresh` (its contents dropped, its
    /// memory used) with those not taken yet.
    pub(super) fn take_parsed(&mut self, mut fresh: Vec<u8>) -> Vec<u8> {
        let rest = self.end - self.pos;
        if fresh.len() < rest {
            fresh.resize(rest, 0);
        }
        fresh[..rest].copy_from_slice(&self.buf[self.pos..self.end]);
        (self.pos, self.end) = (0, rest);
        std::mem::replace(&mut self.buf, fresh)
    }

    /// The next value and the bytes it took. Bytes that are not RESP are
    /// an `InvalidData` error; so is a value longer than [`MAX_VALUE`].
    pub(super) fn next(&mut self) -> std::io::Result<(Value, usize)> {
        loop {
            match resp::parse_value(&self.buf[self.pos..self.end]) {
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
    /// with where it starts in the buffer (see [`Reader::take_parsed`])
    /// and its arguments' ranges in its bytes: `Ok(true)` takes it,
    /// `Ok(false)` stops before it. Reads from the socket only while
    /// nothing whole is buffered. Returns the bytes of the commands taken,
    /// back to back, and how many they are: none when what comes next is
    /// not a multibulk command or `take` stopped at it (for
    /// [`Reader::next`] to read). Bytes that are not RESP are an
    /// `InvalidData` error.
    pub(super) fn commands(
        &mut self,
        args: &mut Vec<Range<usize>>,
        mut take: impl FnMut(usize, &[u8], &[Range<usize>]) -> std::io::Result<bool>,
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
            let buf = &self.buf[..self.end];
            while buf.get(at) == Some(&b'*') {
                match resp::parse_command(&buf[at..], &limits, args) {
                    Ok(Some(len)) => {
                        if !take(at, &buf[at..at + len], args)? {
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
            if n > 0 || stopped || at < buf.len() && buf[at] != b'*' {
                self.pos = at;
                return Ok((&self.buf[start..at], n));
            }
            self.fill()?;
        }
    }

    /// Reads more bytes into the buffer, the bytes already taken dropped
    /// first (unless held).
    fn fill(&mut self) -> std::io::Result<()> {
        if self.pos > 0 && !self.hold {
            self.buf.copy_within(self.pos..self.end, 0);
            (self.pos, self.end) = (0, self.end - self.pos);
        }
        if self.end - self.pos > MAX_VALUE {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("a value longer than {MAX_VALUE} bytes"),
            ));
        }
        if self.buf.len() < self.end + CHUNK {
            self.buf.resize(self.end + CHUNK, 0);
        }
        let got = self.src.read(&mut self.buf[self.end..]);
        self.end += *got.as_ref().unwrap_or(&0);
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
            while self.pos < self.end && self.buf[self.pos] == b'\n' {
                self.pos += 1;
            }
            if self.pos < self.end {
                return Ok(self.buf[self.pos]);
            }
            (self.pos, self.end) = (0, 0);
            if self.buf.len() < CHUNK {
                self.buf.resize(CHUNK, 0);
            }
            let got = self.src.read(&mut self.buf);
            self.end = *got.as_ref().unwrap_or(&0);
            match got {
                Ok(0) => return Err(Error::new(ErrorKind::UnexpectedEof, "connection closed")),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn sets(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let (k, v) = (format!("key:{i}"), vec![b'a' + (i % 26) as u8; 100 + i * 7]);
            resp::encode::command(&mut out, &[b"SET", k.as_bytes(), &v]);
        }
        out
    }

    #[test]
    fn held_bytes_stay_where_the_offsets_say_until_taken() {
        let data = sets(300);
        let mut r = Reader::new(Trickle {
            data: &data,
            step: 1000,
        });
        r.hold(true);
        let (mut args, mut got, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        while got.len() + pending.len() < 300 {
            r.commands(&mut args, |at, cmd, args| {
                pending.push((
                    at + args[1].start,
                    args[1].len(),
                    at + args[2].start,
                    args[2].len(),
                ));
                assert_eq!(&cmd[args[0].clone()], b"SET");
                Ok(true)
            })
            .unwrap();
            if r.taken() >= 4096 || got.len() + pending.len() == 300 {
                let buf = r.take_parsed(vec![7; 10]);
                for (ka, kl, va, vl) in pending.drain(..) {
                    got.push((buf[ka..ka + kl].to_vec(), buf[va..va + vl].to_vec()));
                }
                assert_eq!(r.taken(), 0);
            }
        }
        for (i, (k, v)) in got.iter().enumerate() {
            assert_eq!(k, format!("key:{i}").as_bytes());
            assert_eq!(v, &vec![b'a' + (i % 26) as u8; 100 + i * 7]);
        }
    }

    #[test]
    fn values_come_whole_across_short_reads() {
        let data = sets(50);
        let mut r = Reader::new(Trickle {
            data: &data,
            step: 37,
        });
        for i in 0..50 {
            let (v, _) = r.next().unwrap();
            let args = v.into_args().unwrap();
            assert_eq!(args[1], format!("key:{i}").into_bytes());
        }
        assert_eq!(r.next().unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }
}
