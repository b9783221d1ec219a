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

/// Redis's `stringmatchlen` as pub/sub uses it: case-sensitive, with its
/// rules for `[` without `]`, escapes inside classes, and the cut-off
/// that keeps `*` from trying longer matches once a shorter one failed
/// past the end of the string.
pub(super) fn glob_exact(p: &[u8], s: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(p, s, &mut skip_longer)
}

fn match_from(mut p: &[u8], mut s: &[u8], skip_longer: &mut bool) -> bool {
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_from(&p[1..], s, skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s = &s[1..];
                }
                *skip_longer = true;
                return false;
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut hit = false;
                loop {
                    match p {
                        [b'\\', c, ..] => {
                            p = &p[1..];
                            hit |= *c == s[0];
                        }
                        [b']', ..] => break,
                        [] => {
                            // No `]`: the class ends with the pattern, as
                            // Redis reads it (one step back, for the step
                            // after the match below).
                            break;
                        }
                        [a, b'-', b, ..] => {
                            let (lo, hi) = ((*a).min(*b), (*a).max(*b));
                            hit |= (lo..=hi).contains(&s[0]);
                            p = &p[2..];
                        }
                        [c, ..] => hit |= *c == s[0],
                    }
                    p = &p[1..];
                }
                if hit == not {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // The class ran to the end of the pattern.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
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

    #[test]
    fn exact_glob_matches_as_redis_stringmatchlen() {
        use super::glob_exact as g;
        assert!(g(b"news.*", b"news.art") && !g(b"News.*", b"news.art"));
        assert!(g(b"h?llo", b"hello") && g(b"h[ae]llo", b"hallo") && !g(b"h[^e]llo", b"hello"));
        assert!(g(b"h[a-b]llo", b"hbllo") && g(b"h[b-a]llo", b"hbllo"));
        assert!(g(b"a\\*", b"a*") && !g(b"a\\*", b"ab"));
        // As Redis: the loop never starts on an empty string.
        assert!(!g(b"*", b"") && g(b"a**", b"a") && !g(b"a*b", b"acd"));
        assert!(g(b"a[b", b"ab") && !g(b"a[b", b"abc"));
    }
}
