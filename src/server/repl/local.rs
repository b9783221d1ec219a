//! An in-process client connection: a socket pair whose other end a
//! connection thread serves like any client's. The primary reads its keys
//! for a full copy through it, and a replica applies its primary's stream
//! through it (flagged as the primary's link: writes pass on a read-only
//! replica), so both go through the one command path.

use std::io::{self, Write};
use std::os::unix::net::UnixStream;

use super::super::Shared;
use super::reader::Reader;
use crate::resp;
use crate::resp::Value;

/// One end of an in-process connection.
pub(super) struct Local {
    out: UnixStream,
    pub(super) replies: Reader<UnixStream>,
}

impl Local {
    /// A new connection, served by connection thread 0; `master`: it
    /// carries the primary's stream.
    pub(super) fn open(sh: &Shared, master: bool) -> io::Result<Local> {
        Local::open_on(sh, master, 0)
    }

    /// The same, served by connection thread `i` (modulo their number).
    pub(super) fn open_on(sh: &Shared, master: bool, i: usize) -> io::Result<Local> {
        let (mine, theirs) = UnixStream::pair()?;
        let t = &sh.conns[i % sh.conns.len()];
        t.incoming_local.push((theirs, master));
        t.ring();
        Ok(Local {
            replies: Reader::new(mine.try_clone()?),
            out: mine,
        })
    }

    /// Sends bytes (whole commands).
    pub(super) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Runs one command and returns its reply.
    pub(super) fn call(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let mut out = Vec::new();
        resp::encode::command(&mut out, args);
        self.send(&out)?;
        Ok(self.replies.next()?.0)
    }

    /// The writing half, for a thread of its own.
    pub(super) fn writer(&self) -> io::Result<UnixStream> {
        self.out.try_clone()
    }
}
