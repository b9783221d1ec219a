//! Patterns as Redis matches them (its `stringmatchlen`).

/// Redis's glob matching (`*`, `?`, `[...]`, `\`), case-insensitive, as
/// CONFIG GET and `COMMAND LIST FILTERBY PATTERN` use it.
pub(super) fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(b'['), Some(&c)) => {
            let Some(end) = p.iter().skip(1).position(|&b| b == b']') else {
                return false;
            };
            let class = &p[1..1 + end];
            let (neg, class) = match class.first() {
                Some(b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let c = c.to_ascii_lowercase();
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    let (a, b) = (
                        class[i].to_ascii_lowercase(),
                        class[i + 2].to_ascii_lowercase(),
                    );
                    hit |= (a.min(b)..=a.max(b)).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i].to_ascii_lowercase() == c;
                    i += 1;
                }
            }
            hit != neg && glob(&p[2 + end..], &s[1..])
        }
        (Some(b'\\'), Some(&c)) if p.len() > 1 => {
            p[1].eq_ignore_ascii_case(&c) && glob(&p[2..], &s[1..])
        }
        (Some(&a), Some(&b)) => a.eq_ignore_ascii_case(&b) && glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_as_redis() {
        assert!(glob(b"maxmemory*", b"maxmemory-policy"));
        assert!(glob(b"*", b"save"));
        assert!(glob(b"MAX?EMORY", b"maxmemory"));
        assert!(glob(b"max[a-m]emory", b"maxmemory"));
        assert!(!glob(b"max[^m]emory", b"maxmemory"));
        assert!(!glob(b"maxmemory", b"maxmemory-policy"));
    }
}
