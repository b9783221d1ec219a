//! RESP2: an incremental request parser and reply encoders.
//!
//! The parser reads one command at a time from the front of a connection's
//! input buffer without copying: it returns the byte ranges of the
//! arguments and how many bytes the command took, or `None` while the
//! command is incomplete. Both the multibulk form that clients send
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and the inline form typed into telnet
//! (`GET k\r\n`) are accepted. Every length is checked against [`Limits`]
//! before anything is allocated.

use std::ops::Range;

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

/// A malformed request. The connection is answered with
/// `-ERR Protocol error: <msg>` and closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Finds `\r\n` at or after `from`; returns the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let nl = buf[from..].iter().position(|&b| b == b'\n')? + from;
    (nl > from && buf[nl - 1] == b'\r')
        .then_some(nl - 1)
        .or(Some(usize::MAX))
}

/// Parses a decimal integer line such as the `3` of `$3`: `None` unless it
/// is an optional `-` and 1 to 19 digits whose value fits an `i64` (a
/// longer or larger number is refused, never wrapped).
fn parse_int(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((d - b'0') as i64)?;
    }
    Some(if neg { -v } else { v })
}

/// Reads the header line `<prefix><int>\r\n` at `pos`.
/// `Ok(None)` when the line is incomplete.
fn header(
    buf: &[u8],
    pos: usize,
    prefix: u8,
    what: &str,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    if pos >= buf.len() {
        return Ok(None);
    }
    if buf[pos] != prefix {
        return perr(format!(
            "expected '{}', got '{}'",
            prefix as char,
            buf[pos].escape_ascii()
        ));
    }
    match find_crlf(buf, pos + 1) {
        None if buf.len() - pos > 32 => perr(format!("invalid {what} length")),
        None => Ok(None),
        Some(usize::MAX) => perr(format!("invalid {what} length")),
        Some(cr) => match parse_int(&buf[pos + 1..cr]) {
            Some(n) => Ok(Some((n, cr + 2))),
            None => perr(format!("invalid {what} length")),
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
    pub args: Vec<Range<usize>>,
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
    }
    let r = match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits, st),
        Some(_) => parse_inline(buf, limits, &mut st.args),
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
            let Some((n, pos)) = header(buf, 0, b'*', "multibulk")? else {
                return Ok(None);
            };
            if n > limits.max_args as i64 {
                return perr(match limits.unauthenticated {
                    true => "unauthenticated multibulk length",
                    false => "invalid multibulk length",
                });
            }
            st.pos = pos;
            *st.count.insert(n.max(0) as usize)
        }
    };
    while st.args.len() < n {
        let Some((len, start)) = header(buf, st.pos, b'$', "bulk")? else {
            return Ok(None);
        };
        if len < 0 {
            return perr("invalid bulk length");
        }
        if len > limits.max_bulk as i64 {
            return perr(match limits.unauthenticated {
                true => "unauthenticated bulk length",
                false => "invalid bulk length",
            });
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return perr("bulk string not terminated by CRLF");
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
) -> Result<Option<usize>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline {
            return perr("too big inline request");
        }
        return Ok(None);
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let mut i = 0;
    while i < line_end {
        while i < line_end && buf[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < line_end && !buf[i].is_ascii_whitespace() {
            i += 1;
        }
        if i > start {
            if args.len() == limits.max_args {
                return perr("too many arguments in inline request");
            }
            args.push(start..i);
        }
    }
    Ok(Some(nl + 1))
}

/// Appends `+<s>\r\n`.
/// An integer as Redis reads one from a string (its `string2ll`): an
/// optional `-`, then digits without a leading zero (or `0` alone), at most
/// 20 bytes, in `i64`. No `+`, no spaces.
pub fn parse_redis_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    if b == b"0" {
        return Some(0);
    }
    let (neg, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, b),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `-<msg>\r\n` (line breaks in `msg` become spaces).
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Appends `:<n>\r\n`.
pub fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    out.extend_from_slice(itoa(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a bulk string.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    bulk_header(out, b.len());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Appends `$<len>\r\n`: the caller appends the bytes and `\r\n`.
pub fn bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    out.extend_from_slice(itoa(len as i64).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the nil bulk string `$-1\r\n`.
pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends `*<n>\r\n`.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    out.extend_from_slice(itoa(n as i64).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn itoa(n: i64) -> String {
    n.to_string()
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
            assert_eq!(e.0, "invalid multibulk length");
            let e = parse(format!("*1\r\n${n}\r\n").as_bytes()).unwrap_err();
            assert_eq!(e.0, "invalid bulk length");
        }
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775807"), Some(-i64::MAX));
        assert_eq!(parse_int(b"-"), None);
        assert!(parse(b"*1\r\n$x\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$1\r\nab\r\n").is_err());
        assert!(parse(b"*1\r\n+OK\r\n").is_err());
        assert!(parse(b"*1\n").is_err());
        assert!(parse(&[b'*'; 100]).is_err());
        assert!(parse(&vec![b'a'; 100_000]).is_err());
    }

    #[test]
    fn encoders() {
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
}
