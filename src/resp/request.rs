//! The server's side of RESP: an incremental request parser.
//!
//! The parser reads one command at a time from the front of a connection's
//! input buffer without copying: it returns the byte ranges of the
//! arguments and how many bytes the command took, or `None` while the
//! command is incomplete. Both the multibulk form that clients send
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and the inline form typed into telnet
//! (`GET k\r\n`) are accepted; an inline line is split as Redis splits it
//! (`sdssplitargs`: `"…"` with C escapes and `\xHH`, `'…'` with `\'`), the
//! way redis-cli and telnet users quote. Every length is checked against
//! [`Limits`] before anything is allocated.

use std::ops::Range;

use super::{find_crlf, parse_int, ProtocolError};

/// Bounds on what one request may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (argument) in bytes.
    pub max_bulk: usize,
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest inline command line.
    pub max_inline: usize,
    /// The limits are those of a client that has not authenticated yet:
    /// errors say so, as Redis's do.
    pub unauthenticated: bool,
}

impl Limits {
    /// What a client may send before AUTH when a password is set: small
    /// requests only (Redis's pre-auth limits), so that an unauthenticated
    /// client cannot make the server buffer large ones.
    pub fn pre_auth() -> Self {
        Limits {
            max_bulk: 16384,
            max_args: 10,
            unauthenticated: true,
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
            unauthenticated: false,
        }
    }
}

/// Reads the header line `<prefix><int>\r\n` at `pos`: its integer and
/// where the line ends. `Ok(None)` when the line is incomplete; `invalid`
/// is the error for a line that is not a length.
fn header(
    buf: &[u8],
    pos: usize,
    prefix: u8,
    invalid: &'static str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    if pos >= buf.len() {
        return Ok(None);
    }
    if buf[pos] != prefix {
        return Err(format!(
            "expected '{}', got '{}'",
            prefix as char,
            buf[pos].escape_ascii()
        )
        .into());
    }
    match find_crlf(buf, pos + 1) {
        Ok(None) if buf.len() - pos > 32 => Err(ProtocolError::new(invalid)),
        Ok(None) => Ok(None),
        Err(_) => Err(ProtocolError::new(invalid)),
        Ok(Some(cr)) => match parse_int(&buf[pos + 1..cr]) {
            Some(n) => Ok(Some((n, cr + 2))),
            None => Err(ProtocolError::new(invalid)),
        },
    }
}

/// Where the parse of an incomplete multibulk command stopped, so that
/// the next attempt, with more bytes, goes on from there instead of
/// reading the arguments again from the start (which is quadratic for a
/// command of many arguments that arrives in small pieces).
#[derive(Debug, Default)]
pub struct Resume {
    /// The command's argument count, once its header is read.
    count: Option<usize>,
    /// Offset of the next argument's header.
    pos: usize,
    /// The arguments read so far; all of them once a command is complete.
    /// For an inline command with quotes, the spans of its words (the
    /// arguments themselves, unquoted, are in `unquoted`).
    pub args: Vec<Range<usize>>,
    /// After a parse that needed more input: the bytes the command needs
    /// at least, when the header of the bulk it stopped in said so (0:
    /// unknown). A reader sizes its buffer for a large argument with it.
    pub wants: usize,
    /// After a parse that stopped in a bulk whose header it read: where
    /// that bulk's bytes start.
    bulk_at: usize,
    /// The arguments of an inline command that had quotes, unquoted;
    /// empty otherwise.
    pub unquoted: Vec<Vec<u8>>,
}

impl Resume {
    /// After a parse that stopped in a bulk of a multibulk command, past
    /// the bulk's header: the command's argument count, where the bulk's
    /// bytes start and how many there are. The arguments before it are
    /// in `args`.
    pub fn in_bulk(&self) -> Option<(usize, usize, usize)> {
        let count = self.count?;
        (self.wants > 0 && self.unquoted.is_empty())
            .then(|| (count, self.bulk_at, self.wants - 2 - self.bulk_at))
    }

    /// The arguments of the command just parsed from `buf` (the same bytes
    /// the parse saw).
    pub fn arguments<'a>(&'a self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        if self.unquoted.is_empty() {
            self.args.iter().map(|r| &buf[r.clone()]).collect()
        } else {
            self.unquoted.iter().map(Vec::as_slice).collect()
        }
    }
}

/// Parses one command from the front of `buf` into `args` (cleared first).
/// Returns the bytes consumed, or `None` if more input is needed.
pub fn parse_command(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ProtocolError> {
    let mut st = Resume {
        args: std::mem::take(args),
        ..Resume::default()
    };
    let r = parse_resumable(buf, limits, &mut st);
    *args = st.args;
    r
}

/// Parses one command from the front of `buf` into `st.args`, going on
/// from where the last call with the same `st` stopped (`Ok(None)`: more
/// input is needed). `buf` must start where it did then, with the bytes
/// seen then unchanged; after `Ok(Some(n))` or an error, the next call
/// starts a new command.
pub fn parse_resumable(
    buf: &[u8],
    limits: &Limits,
    st: &mut Resume,
) -> Result<Option<usize>, ProtocolError> {
    if st.count.is_none() {
        st.args.clear();
        st.unquoted.clear();
    }
    st.wants = 0;
    let r = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, st),
        Some(_) => parse_inline(buf, limits, &mut st.args, &mut st.unquoted),
    };
    if !matches!(r, Ok(None)) {
        st.count = None;
        st.pos = 0;
    }
    r
}

fn parse_multibulk(
    buf: &[u8],
    limits: &Limits,
    st: &mut Resume,
) -> Result<Option<usize>, ProtocolError> {
    let n = match st.count {
        Some(n) => n,
        None => {
            let Some((n, pos)) = header(buf, 0, b'*', "invalid multibulk length")? else {
                return Ok(None);
            };
            if n > limits.max_args as i64 {
                return Err(ProtocolError::new(match limits.unauthenticated {
                    true => "unauthenticated multibulk length",
                    false => "invalid multibulk length",
                }));
            }
            st.pos = pos;
            *st.count.insert(n.max(0) as usize)
        }
    };
    while st.args.len() < n {
        let Some((len, start)) = header(buf, st.pos, b'$', "invalid bulk length")? else {
            return Ok(None);
        };
        if len < 0 {
            return Err(ProtocolError::new("invalid bulk length"));
        }
        if len > limits.max_bulk as i64 {
            return Err(ProtocolError::new(match limits.unauthenticated {
                true => "unauthenticated bulk length",
                false => "invalid bulk length",
            }));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            st.wants = end + 2;
            st.bulk_at = start;
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::new("bulk string not terminated by CRLF"));
        }
        st.args.push(start..end);
        st.pos = end + 2;
    }
    Ok(Some(st.pos))
}

fn parse_inline(
    buf: &[u8],
    limits: &Limits,
    args: &mut Vec<Range<usize>>,
    unquoted: &mut Vec<Vec<u8>>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return Err(ProtocolError::new("too big inline request"));
        }
        return Ok(None);
    };
    let mut line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    // Redis splits the line as a C string: a NUL ends it.
    if let Some(nul) = buf[..line_end].iter().position(|&b| b == 0) {
        line_end = nul;
    }
    let line = &buf[..line_end];
    if line.iter().any(|&b| b == b'"' || b == b'\'') {
        *unquoted = split_quoted(line).ok_or(ProtocolError::new("unbalanced quotes in request"))?;
        if unquoted.len() > limits.max_args {
            return Err(ProtocolError::new("too many arguments in inline request"));
        }
        // Placeholders: the count is what callers look at.
        args.extend(std::iter::repeat_n(0..0, unquoted.len()));
        return Ok(Some(nl + 1));
    }
    let mut i = 0;
    while i < line_end {
        while i < line_end && is_space(buf[i]) {
            i += 1;
        }
        let start = i;
        while i < line_end && !ends_word(buf[i]) {
            i += 1;
        }
        if i > start {
            if args.len() == limits.max_args {
                return Err(ProtocolError::new("too many arguments in inline request"));
            }
            args.push(start..i);
        }
    }
    Ok(Some(nl + 1))
}

/// C's `isspace`: what Redis skips between words.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// What ends an unquoted word in `sdssplitargs` (a vertical tab or form
/// feed does not).
fn ends_word(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0)
}

/// Redis's `sdssplitargs`: words separated by spaces; `"…"` takes `\xHH`
/// and the escapes `\n \r \t \b \a` (any other escaped byte stands for
/// itself), `'…'` takes `\'`; a quote may open inside a word, and a
/// closing quote must be followed by a space or the end. `None`: unbalanced
/// quotes (or a closing quote followed by something else).
fn split_quoted(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut words = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(words);
        }
        let mut word = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            let c = at(p);
            if dq {
                match (c, at(p + 1)) {
                    (b'\\', b'x') if hex(at(p + 2)).is_some() && hex(at(p + 3)).is_some() => {
                        word.push(hex(at(p + 2))? * 16 + hex(at(p + 3))?);
                        p += 3;
                    }
                    (b'\\', e) if e != 0 => {
                        p += 1;
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    (b'"', next) => {
                        if next != 0 && !is_space(next) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    (0, _) => return None,
                    (c, _) => word.push(c),
                }
            } else if sq {
                match (c, at(p + 1)) {
                    (b'\\', b'\'') => {
                        p += 1;
                        word.push(b'\'');
                    }
                    (b'\'', next) => {
                        if next != 0 && !is_space(next) {
                            return None;
                        }
                        p += 1;
                        break;
                    }
                    (0, _) => return None,
                    (c, _) => word.push(c),
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => dq = true,
                    b'\'' => sq = true,
                    c => word.push(c),
                }
            }
            p += 1;
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = Option<(usize, Vec<Vec<u8>>)>;

    fn parse(b: &[u8]) -> Result<Parsed, ProtocolError> {
        let mut args = Vec::new();
        let r = parse_command(b, &Limits::default(), &mut args)?;
        Ok(r.map(|n| (n, args.iter().map(|r| b[r.clone()].to_vec()).collect())))
    }

    #[test]
    fn multibulk_whole_and_split() {
        let cmd = b"*2\r\n$3\r\nGET\r\n$4\r\nk\r\n1\r\n";
        let (n, args) = parse(cmd).unwrap().unwrap();
        assert_eq!(n, cmd.len());
        assert_eq!(args, vec![b"GET".to_vec(), b"k\r\n1".to_vec()]);
        for cut in 0..cmd.len() {
            assert_eq!(parse(&cmd[..cut]).unwrap(), None, "prefix of {cut} bytes");
        }
        let mut two = cmd.to_vec();
        two.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(parse(&two).unwrap().unwrap().0, cmd.len());
    }

    #[test]
    fn resumed_parse_goes_on_where_it_stopped() {
        let mut cmd = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n".to_vec();
        cmd.extend_from_slice(b"$5\r\nvalue\r\n$2\r\nEX\r\n");
        let mut st = Resume::default();
        let limits = Limits::default();
        let mut at = 0;
        let mut seen = 0;
        for cut in 0..cmd.len() {
            assert_eq!(parse_resumable(&cmd[..cut], &limits, &mut st), Ok(None));
            // Arguments read stay read: never fewer than before.
            assert!(st.args.len() >= seen, "at {cut}");
            seen = st.args.len();
            at = at.max(st.pos);
        }
        assert_eq!(seen, 3);
        assert_eq!(at, cmd.len() - 8);
        // Cut in the last bulk, past its header: the whole command's size.
        assert_eq!(
            parse_resumable(&cmd[..cmd.len() - 2], &limits, &mut st),
            Ok(None)
        );
        assert_eq!(st.wants, cmd.len());
        assert_eq!(parse_resumable(&cmd, &limits, &mut st), Ok(Some(cmd.len())));
        let args: Vec<&[u8]> = st.args.iter().map(|r| &cmd[r.clone()]).collect();
        assert_eq!(args, [&b"SET"[..], b"k", b"value", b"EX"]);
        // The next call starts a new command.
        assert_eq!(
            parse_resumable(b"*1\r\n$4\r\nPING\r\n", &limits, &mut st),
            Ok(Some(14))
        );
        assert_eq!(st.args.as_slice(), &[Range { start: 8, end: 12 }]);
    }

    #[test]
    fn inline() {
        let (n, args) = parse(b"  ping   hello \r\nrest").unwrap().unwrap();
        assert_eq!((n, args), (17, vec![b"ping".to_vec(), b"hello".to_vec()]));
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), (2, vec![]));
        assert_eq!(parse(b"GET").unwrap(), None);
        // A vertical tab does not end a word; a NUL ends the line.
        assert_eq!(
            parse(b"a\x0bb c\0d\n").unwrap().unwrap().1,
            [&b"a\x0bb"[..], b"c"]
        );
    }

    /// An inline line as Redis splits it, through the resumable parser.
    fn inline_words(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut st = Resume::default();
        parse_resumable(line, &Limits::default(), &mut st)?.expect("a whole line");
        Ok(st.arguments(line).iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn inline_quoting_as_sdssplitargs() {
        let w = inline_words(b"SET \"a b\" 'c d'\r\n").unwrap();
        assert_eq!(w, [&b"SET"[..], b"a b", b"c d"]);
        let w = inline_words(b"x \"\\x41\\n\\q\\\"\" 'it\\'s' \"\"\n").unwrap();
        assert_eq!(w, [&b"x"[..], b"A\nq\"", b"it's", b""]);
        // A quote may open inside a word.
        assert_eq!(inline_words(b"a\"b c\"\n").unwrap(), [b"ab c"]);
        // '\\x4' is not a hex escape: the x stands for itself.
        assert_eq!(inline_words(b"\"\\x4\"\n").unwrap(), [b"x4"]);
        for bad in [&b"\"abc\n"[..], b"'abc\n", b"\"a\"b\n", b"'a'b\n"] {
            let e = inline_words(bad).unwrap_err();
            assert_eq!(e.message(), "unbalanced quotes in request");
        }
        // The next command is parsed from the buffer again.
        let mut st = Resume::default();
        let two = b"\"a\"\r\nGET k\r\n";
        assert_eq!(
            parse_resumable(two, &Limits::default(), &mut st),
            Ok(Some(5))
        );
        assert_eq!(
            parse_resumable(&two[5..], &Limits::default(), &mut st),
            Ok(Some(7))
        );
        assert_eq!(st.arguments(&two[5..]), [&b"GET"[..], b"k"]);
    }

    #[test]
    fn malformed_input_is_rejected_without_allocation() {
        assert!(parse(b"*2\r\n$1099511627776\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").is_err());
        // Lengths past i64: refused, not wrapped.
        for n in [
            "9223372036854775808",
            "99999999999999999999",
            "18446744073709551617",
        ] {
            let e = parse(format!("*{n}\r\n").as_bytes()).unwrap_err();
            assert_eq!(e.message(), "invalid multibulk length");
            let e = parse(format!("*1\r\n${n}\r\n").as_bytes()).unwrap_err();
            assert_eq!(e.message(), "invalid bulk length");
        }
        assert!(parse(b"*1\r\n$x\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$1\r\nab\r\n").is_err());
        assert!(parse(b"*1\r\n+OK\r\n").is_err());
        assert!(parse(b"*1\n").is_err());
        assert!(parse(&[b'*'; 100]).is_err());
        assert!(parse(&vec![b'a'; 100_000]).is_err());
    }
}
