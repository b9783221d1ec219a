//! `LCS key1 key2 [LEN] [IDX] [MINMATCHLEN n] [WITHMATCHLEN]`: the longest
//! common subsequence of two strings, as Redis 7 computes and answers it
//! (its dynamic-programming table, its walk back through it, its ranges
//! and errors). The values are read as MGET reads them (`Combine::Lcs`);
//! the answer is computed on the connection thread once both are in.

use super::msg::Reply;
use super::strings;
use crate::resp::{self, Proto};

/// What an LCS asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    /// The length only.
    pub len: bool,
    /// The matching ranges and the length.
    pub idx: bool,
    /// Ranges shorter than this are left out (0: none).
    pub min_len: u64,
    /// Each range with its length.
    pub with_len: bool,
    /// Most bytes the table may take (Redis's `proto-max-bulk-len`:
    /// `--max-value-size`).
    pub limit: u64,
}

/// The options after the two keys, checked as Redis checks them.
pub(super) fn parse(opts: &[&[u8]], limit: u64) -> Result<Ask, &'static str> {
    let mut ask = Ask {
        len: false,
        idx: false,
        min_len: 0,
        with_len: false,
        limit,
    };
    let mut i = 0;
    while i < opts.len() {
        let o = opts[i];
        let more = opts.len() - 1 - i;
        if o.eq_ignore_ascii_case(b"IDX") {
            ask.idx = true;
        } else if o.eq_ignore_ascii_case(b"LEN") {
            ask.len = true;
        } else if o.eq_ignore_ascii_case(b"WITHMATCHLEN") {
            ask.with_len = true;
        } else if o.eq_ignore_ascii_case(b"MINMATCHLEN") && more > 0 {
            let n = resp::parse_redis_int(opts[i + 1]).ok_or(strings::NOT_AN_INTEGER)?;
            ask.min_len = n.max(0) as u64;
            i += 1;
        } else {
            return Err(strings::SYNTAX);
        }
        i += 1;
    }
    if ask.len && ask.idx {
        return Err(LEN_AND_IDX);
    }
    Ok(ask)
}

const LEN_AND_IDX: &str = "ERR If you want both the length and indexes, please just use IDX.";
const TOO_LONG: &str = "ERR String too long for LCS";
const TABLE_TOO_LARGE: &str =
    "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len";

/// The value a GET's reply holds: empty for a missing key; `Err` with the
/// reply itself when it is not a value (an error).
fn value(r: &Reply) -> Result<&[u8], &Reply> {
    match r {
        Reply::Nil => Ok(&[]),
        Reply::Encoded(b) if b.first() == Some(&b'$') => {
            let body = b
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |e| e + 1);
            Ok(&b[body..b.len().saturating_sub(2).max(body)])
        }
        other => Err(other),
    }
}

/// LCS's reply to `ask`, from the GET replies of its two keys.
pub(super) fn answer(out: &mut Vec<u8>, parts: &[Reply], ask: Ask, proto: Proto) {
    let (a, b) = match (value(&parts[0]), value(&parts[1])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e.encode(out, proto),
    };
    if a.len() as u64 >= u32::MAX as u64 - 1 || b.len() as u64 >= u32::MAX as u64 - 1 {
        return resp::error(out, TOO_LONG);
    }
    let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
    if cells.saturating_mul(4) > ask.limit {
        return resp::error(out, TABLE_TOO_LARGE);
    }
    let (alen, blen) = (a.len(), b.len());
    let w = blen + 1;
    // table[i * w + j]: the length of the LCS of a[..i] and b[..j].
    let mut table = vec![0u32; cells as usize];
    for i in 1..=alen {
        for j in 1..=blen {
            table[i * w + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * w + j - 1] + 1
            } else {
                table[(i - 1) * w + j].max(table[i * w + j - 1])
            };
        }
    }
    let total = table[alen * w + blen];
    if ask.len {
        return resp::int(out, total as i64);
    }
    // Walked back from the end, as Redis walks it: the common bytes from
    // the last, and the ranges where both strings match contiguously.
    let mut common = vec![0u8; total as usize];
    let mut ranges: Vec<[u64; 5]> = Vec::new();
    let (mut i, mut j, mut at) = (alen, blen, total as usize);
    // `a_start == alen`: no range under way.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (alen, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            common[at - 1] = a[i - 1];
            if a_start == alen {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            at -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * w + j] > table[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != alen {
                emit = true;
            }
        }
        if emit {
            // A range is under way whenever one is to be emitted.
            let len = (a_end - a_start + 1) as u64;
            if ask.min_len == 0 || len >= ask.min_len {
                let r = [a_start, a_end, b_start, b_end].map(|x| x as u64);
                ranges.push([r[0], r[1], r[2], r[3], len]);
            }
            a_start = alen;
        }
    }
    if !ask.idx {
        return resp::bulk(out, &common);
    }
    resp::map(out, 2, proto);
    resp::bulk(out, b"matches");
    resp::array(out, ranges.len());
    for r in &ranges {
        resp::array(out, 2 + usize::from(ask.with_len));
        resp::array(out, 2);
        resp::int(out, r[0] as i64);
        resp::int(out, r[1] as i64);
        resp::array(out, 2);
        resp::int(out, r[2] as i64);
        resp::int(out, r[3] as i64);
        if ask.with_len {
            resp::int(out, r[4] as i64);
        }
    }
    resp::bulk(out, b"len");
    resp::int(out, total as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Reply {
        let mut b = Vec::new();
        resp::bulk(&mut b, s);
        Reply::Encoded(b)
    }

    fn lcs(a: &[u8], b: &[u8], opts: &[&[u8]]) -> String {
        let ask = parse(opts, 512 << 20).unwrap();
        let mut out = Vec::new();
        answer(&mut out, &[bulk(a), bulk(b)], ask, Proto::Resp2);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn answers_as_redis_documents() {
        assert_eq!(lcs(b"ohmytext", b"mynewtext", &[]), "$6\r\nmytext\r\n");
        assert_eq!(lcs(b"ohmytext", b"mynewtext", &[b"LEN"]), ":6\r\n");
        assert_eq!(
            lcs(b"ohmytext", b"mynewtext", &[b"IDX"]),
            "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n\
             *2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n"
        );
        assert_eq!(
            lcs(b"ohmytext", b"mynewtext", &[b"IDX", b"MINMATCHLEN", b"4", b"WITHMATCHLEN"]),
            "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n$3\r\nlen\r\n:6\r\n"
        );
        assert_eq!(lcs(b"", b"abc", &[]), "$0\r\n\r\n");
        let mut out = Vec::new();
        let ask = parse(&[], 512 << 20).unwrap();
        answer(&mut out, &[Reply::Nil, bulk(b"x")], ask, Proto::Resp2);
        assert_eq!(out, b"$0\r\n\r\n");
    }

    #[test]
    fn options_are_checked_as_redis_checks_them() {
        assert_eq!(parse(&[b"LEN", b"IDX"], 1), Err(LEN_AND_IDX));
        assert_eq!(parse(&[b"FOO"], 1), Err(strings::SYNTAX));
        assert_eq!(parse(&[b"MINMATCHLEN"], 1), Err(strings::SYNTAX));
        assert_eq!(
            parse(&[b"MINMATCHLEN", b"x"], 1),
            Err(strings::NOT_AN_INTEGER)
        );
        assert_eq!(parse(&[b"minmatchlen", b"-5"], 1).map(|a| a.min_len), Ok(0));
    }

    #[test]
    fn a_table_over_the_limit_is_refused() {
        let ask = parse(&[b"LEN"], 1000).unwrap();
        let mut out = Vec::new();
        answer(
            &mut out,
            &[bulk(&[b'a'; 20]), bulk(&[b'b'; 20])],
            ask,
            Proto::Resp2,
        );
        assert_eq!(out, format!("-{TABLE_TOO_LARGE}\r\n").into_bytes());
    }
}
