//! INCRBYFLOAT's numbers, computed as Redis computes them on x86-64: a C
//! `long double` (the x87 80-bit format: a 64-bit significand, exponents
//! down to subnormals of 2^-16445), read as glibc's `strtold` reads it
//! (correctly rounded; hexadecimal, `inf` and `infinity` accepted), added
//! with rounding to nearest even, and written as `%.17Lf` with the
//! trailing zeros cut (Redis's `ld2string` in its human mode). A `f64`
//! would print `0.1` as `0.10000000000000001`; this prints `0.1`, as Redis.
//!
//! In software, so that it needs no x87 instructions and gives the same
//! digits on any machine (Redis itself prints other digits where `long
//! double` is another format, on arm64 say).

/// A `long double`: zero, infinity, or `mant × 2^exp` (no NaN: every
/// path that would make one is refused before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LongDouble {
    Zero {
        neg: bool,
    },
    Inf {
        neg: bool,
    },
    /// `mant` has its top bit set, except for subnormals (`exp` ==
    /// [`MIN_EXP`]).
    Finite {
        neg: bool,
        mant: u64,
        exp: i32,
    },
}

/// The exponent of the smallest normal number's unit (and of subnormals):
/// 2^-16382 with 63 fraction bits.
const MIN_EXP: i64 = -16445;
/// The exponent of the largest finite number's unit: 2^16383 with 63
/// fraction bits.
const MAX_EXP: i64 = 16320;
/// Redis's `MAX_LONG_DOUBLE_CHARS`: a string of this length or more is not
/// read as a number.
const MAX_CHARS: usize = 5 * 1024;

impl LongDouble {
    /// An integer (exact: every `i64` fits the significand).
    pub fn from_i64(n: i64) -> LongDouble {
        round(n < 0, n.unsigned_abs() as u128, 0, false)
    }

    pub fn is_finite(&self) -> bool {
        !matches!(self, LongDouble::Inf { .. })
    }

    /// `self + other`, rounded to nearest even; `None` for NaN (infinities
    /// of opposite signs).
    pub fn add(self, other: LongDouble) -> Option<LongDouble> {
        use LongDouble::*;
        match (self, other) {
            (Inf { neg: a }, Inf { neg: b }) if a != b => None,
            (Inf { neg }, _) | (_, Inf { neg }) => Some(Inf { neg }),
            (Zero { neg: a }, Zero { neg: b }) => Some(Zero { neg: a && b }),
            (Zero { .. }, x) | (x, Zero { .. }) => Some(x),
            (
                Finite {
                    neg: na,
                    mant: ma,
                    exp: ea,
                },
                Finite {
                    neg: nb,
                    mant: mb,
                    exp: eb,
                },
            ) => {
                // Normalized, so (exp, mant) orders magnitudes.
                let (neg, (big_m, big_e), (small_m, small_e)) = if (ea, ma) >= (eb, mb) {
                    (na, (ma, ea), (mb, eb))
                } else {
                    (nb, (mb, eb), (ma, ea))
                };
                // 62 guard bits: a sum stays below 2^127.
                let big = (big_m as u128) << 62;
                let d = (big_e - small_e) as u32;
                let full = (small_m as u128) << 62;
                let (small, sticky) = if d >= 127 {
                    (0, full != 0)
                } else {
                    (full >> d, full & ((1u128 << d) - 1) != 0)
                };
                let exp = big_e as i64 - 62;
                Some(if na == nb {
                    round(neg, big + small, exp, sticky)
                } else if sticky {
                    // The small operand is a little more than `small`.
                    round(neg, big - small - 1, exp, true)
                } else if big == small {
                    Zero { neg: false }
                } else {
                    round(neg, big - small, exp, false)
                })
            }
        }
    }

    /// Reads a number as Redis's `string2ld` does: `strtold`, refusing a
    /// leading space, anything left over (a NUL included),
    /// NaN, and what overflows or underflows to zero. `None` when refused.
    pub fn parse(b: &[u8]) -> Option<LongDouble> {
        if b.is_empty() || b.len() >= MAX_CHARS {
            return None;
        }
        // strtold stops at a NUL, and Redis checks that it read every byte.
        let s = b;
        if s.contains(&0) {
            return None;
        }
        if matches!(s[0], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            return None;
        }
        let (neg, s) = match s[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let lower = s.to_ascii_lowercase();
        if lower == b"inf" || lower == b"infinity" {
            return Some(LongDouble::Inf { neg });
        }
        if lower.starts_with(b"0x") {
            if let Some(v) = parse_hex(neg, &s[2..]) {
                return v;
            }
        }
        parse_decimal(neg, s)
    }

    /// `%.17Lf` with the trailing zeros (and a trailing point) removed,
    /// and `-0` written `0`: Redis's `ld2string(…, LD_STR_HUMAN)`.
    pub fn to_redis_string(self) -> String {
        let (neg, mant, exp) = match self {
            LongDouble::Zero { .. } => return "0".into(),
            LongDouble::Inf { neg } => return if neg { "-inf" } else { "inf" }.into(),
            LongDouble::Finite { neg, mant, exp } => (neg, mant, exp),
        };
        let sign = if neg { "-" } else { "" };
        if exp >= 0 {
            let mut n = Big::from_u128(mant as u128);
            n.shl(exp as u32);
            return format!("{sign}{}", n.to_decimal());
        }
        // mant × 10^17 < 2^121: the scaled value fits a u128.
        let scaled = mant as u128 * 10u128.pow(17);
        let shift = (-exp) as u32;
        let r = if shift > 121 {
            0
        } else {
            let q = scaled >> shift;
            let rem = scaled & ((1u128 << shift) - 1);
            let half = 1u128 << (shift - 1);
            q + (rem > half || (rem == half && q & 1 == 1)) as u128
        };
        let digits = format!("{r:018}");
        let (int, frac) = digits.split_at(digits.len() - 17);
        let frac = frac.trim_end_matches('0');
        let out = if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        };
        if out == "-0" {
            "0".into()
        } else {
            out
        }
    }
}

/// The nearest `long double` to `neg × (m + ε) × 2^exp`, where ε is in
/// (0, 1) when `sticky` (bits below `m` were cut) and 0 otherwise. With
/// `sticky`, `m` must have at least 66 significant bits.
fn round(neg: bool, m: u128, exp: i64, sticky: bool) -> LongDouble {
    if m == 0 {
        return LongDouble::Zero { neg };
    }
    let bits = 128 - m.leading_zeros() as i64;
    let mut e = (exp + bits - 64).max(MIN_EXP);
    let shift = e - exp;
    let mut q = if shift <= 0 {
        debug_assert!(!sticky, "a sticky value with too few bits");
        m << (-shift)
    } else {
        let (q, rbit, rest) = if shift > 128 {
            (0, false, true)
        } else if shift == 128 {
            (0, m >> 127 == 1, m & (u128::MAX >> 1) != 0)
        } else {
            let s = shift as u32;
            let rbit = (m >> (s - 1)) & 1 == 1;
            (m >> s, rbit, m & ((1u128 << (s - 1)) - 1) != 0)
        };
        q + (rbit && (rest || sticky || q & 1 == 1)) as u128
    };
    if q == 1u128 << 64 {
        q >>= 1;
        e += 1;
    }
    if e > MAX_EXP {
        LongDouble::Inf { neg }
    } else if q == 0 {
        LongDouble::Zero { neg }
    } else {
        LongDouble::Finite {
            neg,
            mant: q as u64,
            exp: e as i32,
        }
    }
}

/// A value strtold read: refused when it overflowed, or underflowed to
/// zero from a nonzero input (`ERANGE` with zero or `HUGE_VALL`).
fn accepted(v: LongDouble, exact_zero: bool) -> Option<LongDouble> {
    match v {
        LongDouble::Inf { .. } => None,
        LongDouble::Zero { .. } if !exact_zero => None,
        v => Some(v),
    }
}

/// Reads the digits of `s` in `radix` up to the first other byte: the
/// digits (without leading zeros), how many came after a point, and the
/// bytes consumed. `None` when there is no digit at all.
fn mantissa(s: &[u8], radix: u32) -> Option<(Vec<u8>, i64, usize)> {
    let mut digits = Vec::new();
    let mut after_point = 0i64;
    let mut seen_point = false;
    let mut any = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = (c as char).to_digit(radix) {
            any = true;
            if !(digits.is_empty() && d == 0) {
                digits.push(d as u8);
            }
            if seen_point {
                after_point += 1;
            }
        } else {
            break;
        }
        i += 1;
    }
    any.then_some((digits, after_point, i))
}

/// Reads an exponent (`e` or `p` already matched at `s[0]`): its value
/// (saturated far outside any range that matters) and the bytes consumed,
/// or `None` when no digit follows (strtold then leaves the letter).
fn exponent(s: &[u8]) -> Option<(i64, usize)> {
    let mut i = 1;
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut v: i64 = 0;
    while let Some(c @ b'0'..=b'9') = s.get(i) {
        v = (v * 10 + (c - b'0') as i64).min(1 << 40);
        i += 1;
    }
    (i > start).then_some((if neg { -v } else { v }, i))
}

/// A decimal number (what follows the sign).
fn parse_decimal(neg: bool, s: &[u8]) -> Option<LongDouble> {
    let (mut digits, after_point, mut i) = mantissa(s, 10)?;
    let mut exp10 = -after_point;
    if matches!(s.get(i), Some(b'e' | b'E')) {
        if let Some((e, n)) = exponent(&s[i..]) {
            exp10 += e;
            i += n;
        }
    }
    if i != s.len() {
        return None;
    }
    while digits.last() == Some(&0) {
        digits.pop();
        exp10 += 1;
    }
    if digits.is_empty() {
        return Some(LongDouble::Zero { neg });
    }
    // The value lies in [10^(top-1), 10^top): far outside the range it
    // overflows or rounds to zero, and either is refused.
    let top = exp10 + digits.len() as i64;
    if top > 4933 {
        return None;
    }
    if top < -4952 {
        return None;
    }
    let mut n = Big::default();
    for &d in &digits {
        n.mul_add(10, d as u32);
    }
    let v = if exp10 >= 0 {
        n.mul_pow10(exp10 as u32);
        let (m, shift, sticky) = n.top_bits();
        round(neg, m, shift, sticky)
    } else {
        let mut den = Big::from_u128(1);
        den.mul_pow10((-exp10) as u32);
        // Scale so that the quotient has 127 or 128 bits.
        let s = den.bits() as i64 - n.bits() as i64 + 127;
        if s >= 0 {
            n.shl(s as u32);
        } else {
            den.shl((-s) as u32);
        }
        let (q, rem_nonzero) = n.div_small_quotient(&den);
        round(neg, q, -s, rem_nonzero)
    };
    accepted(v, false)
}

/// A hexadecimal number after `0x`; `None` when no hex digit follows
/// (strtold then reads the `0` alone, and the `x` is left over).
fn parse_hex(neg: bool, s: &[u8]) -> Option<Option<LongDouble>> {
    let (digits, after_point, mut i) = mantissa(s, 16)?;
    let mut exp2 = -4 * after_point;
    if matches!(s.get(i), Some(b'p' | b'P')) {
        if let Some((e, n)) = exponent(&s[i..]) {
            exp2 += e;
            i += n;
        }
    }
    if i != s.len() {
        return Some(None);
    }
    if digits.is_empty() {
        return Some(Some(LongDouble::Zero { neg }));
    }
    let mut n = Big::default();
    for &d in &digits {
        n.mul_add(16, d as u32);
    }
    let (m, shift, sticky) = n.top_bits();
    let exp = (exp2 + shift).clamp(-(1 << 42), 1 << 42);
    Some(accepted(round(neg, m, exp, sticky), false))
}

/// An unsigned big integer, little-endian 32-bit limbs: just what parsing
/// and printing need.
#[derive(Debug, Default, Clone)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(v: u128) -> Big {
        let mut b = Big((0..4).map(|i| (v >> (32 * i)) as u32).collect());
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn bits(&self) -> u32 {
        match self.0.last() {
            None => 0,
            Some(&top) => 32 * self.0.len() as u32 - top.leading_zeros(),
        }
    }

    /// `self = self × m + a`.
    fn mul_add(&mut self, m: u32, a: u32) {
        let mut carry = a as u64;
        for limb in &mut self.0 {
            let v = *limb as u64 * m as u64 + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    /// `self = self × 10^k`.
    fn mul_pow10(&mut self, mut k: u32) {
        while k > 0 {
            let step = k.min(9);
            self.mul_add(10u32.pow(step), 0);
            k -= step;
        }
    }

    fn shl(&mut self, n: u32) {
        let (limbs, bits) = ((n / 32) as usize, n % 32);
        if bits > 0 {
            let mut carry = 0u32;
            for limb in &mut self.0 {
                let v = *limb;
                *limb = (v << bits) | carry;
                carry = v >> (32 - bits);
            }
            if carry > 0 {
                self.0.push(carry);
            }
        }
        self.0.splice(0..0, std::iter::repeat_n(0, limbs));
        self.trim();
    }

    fn bit(&self, i: u32) -> bool {
        self.0
            .get((i / 32) as usize)
            .is_some_and(|l| (l >> (i % 32)) & 1 == 1)
    }

    /// The top 127 bits (all of them if fewer), the exponent of their
    /// unit, and whether any bit below them is set.
    fn top_bits(&self) -> (u128, i64, bool) {
        let bits = self.bits();
        let shift = bits.saturating_sub(127);
        let mut m = 0u128;
        for i in (shift..bits).rev() {
            m = (m << 1) | self.bit(i) as u128;
        }
        let sticky = (0..shift).any(|i| self.bit(i));
        (m, shift as i64, sticky)
    }

    fn cmp_shifted(&self, other: &Big, shift: u32) -> std::cmp::Ordering {
        let mut o = other.clone();
        o.shl(shift);
        self.cmp_big(&o)
    }

    fn cmp_big(&self, other: &Big) -> std::cmp::Ordering {
        (self.0.len().cmp(&other.0.len()))
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }

    fn sub_assign(&mut self, other: &Big) {
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let v = self.0[i] as i64 - *other.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = (v < 0) as i64;
            self.0[i] = v.rem_euclid(1 << 32) as u32;
        }
        self.trim();
    }

    /// `self / den` when the quotient fits 128 bits, and whether the
    /// remainder is nonzero (binary long division).
    fn div_small_quotient(mut self, den: &Big) -> (u128, bool) {
        let mut q = 0u128;
        for i in (0..128).rev() {
            if self.cmp_shifted(den, i) != std::cmp::Ordering::Less {
                let mut d = den.clone();
                d.shl(i);
                self.sub_assign(&d);
                q |= 1 << i;
            }
        }
        (q, !self.0.is_empty())
    }

    /// Decimal digits, by division by 10^9.
    fn to_decimal(&self) -> String {
        let mut n = self.clone();
        let mut chunks = Vec::new();
        while !n.0.is_empty() {
            let mut rem = 0u64;
            for limb in n.0.iter_mut().rev() {
                let v = (rem << 32) | *limb as u64;
                *limb = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            n.trim();
            chunks.push(rem as u32);
        }
        let mut out = match chunks.pop() {
            None => return "0".into(),
            Some(top) => top.to_string(),
        };
        for c in chunks.iter().rev() {
            out.push_str(&format!("{c:09}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(value: &str, by: &str) -> Option<String> {
        let v = LongDouble::parse(value.as_bytes())?;
        let b = LongDouble::parse(by.as_bytes())?;
        let r = v.add(b)?;
        r.is_finite().then(|| r.to_redis_string())
    }

    /// Replies of redis-server 7.0 on x86-64.
    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(incr("10.5", "0.1").as_deref(), Some("10.6"));
        assert_eq!(
            incr("10.6", "5.0e3").as_deref(),
            Some("5010.60000000000000009")
        );
        assert_eq!(incr("0", "0.1").as_deref(), Some("0.1"));
        assert_eq!(incr("0", "-0.0000000000000000001").as_deref(), Some("0"));
        assert_eq!(incr("0", "0x1p3").as_deref(), Some("8"));
        assert_eq!(incr("5", "1.").as_deref(), Some("6"));
        assert_eq!(incr("6", ".5").as_deref(), Some("6.5"));
        assert_eq!(incr("0", "1e-4940").as_deref(), Some("0"));
        assert_eq!(
            incr("0", "3.0000000000000000000000001").as_deref(),
            Some("3")
        );
        assert_eq!(
            incr("0", "1e300").as_deref(),
            Some("1000000000000000000008997324079559193870523944273290747938260082321265646596180935755849152083750497190350372508614274835903592556184672983913096260520748646287327135641843653294084255107606016789726652932370030551382947620994540294772781889620606179267611627097410650567187386105690089424915104006144")
        );
        assert!(incr("0", "1e4000")
            .unwrap()
            .starts_with("999999999999999999996546387309962378493249258350695763130150"));
    }

    #[test]
    fn what_strtold_refuses() {
        for bad in [
            "", " 1", "abc", "1e", "1e+", "0x", ".", "-", "nan", "1 ", "1e5000", "1e-5000",
        ] {
            assert_eq!(LongDouble::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(
            LongDouble::parse(b"inf"),
            Some(LongDouble::Inf { neg: false })
        );
        assert_eq!(
            LongDouble::parse(b"-Infinity"),
            Some(LongDouble::Inf { neg: true })
        );
        assert_eq!(LongDouble::parse(b"1\0junk"), None);
        assert_eq!(LongDouble::parse(b"\x001"), None);
        assert_eq!(incr("inf", "1"), None);
        assert_eq!(
            LongDouble::parse(b"inf")
                .unwrap()
                .add(LongDouble::parse(b"-inf").unwrap()),
            None
        );
    }

    #[test]
    fn integers_are_exact() {
        for n in [0, 1, -1, 42, i64::MAX, i64::MIN, 1 << 53, (1 << 53) + 1] {
            assert_eq!(LongDouble::from_i64(n).to_redis_string(), n.to_string());
            assert_eq!(
                LongDouble::parse(n.to_string().as_bytes()),
                Some(LongDouble::from_i64(n))
            );
        }
        assert_eq!(
            incr("9223372036854775807", "1").as_deref(),
            Some("9223372036854775808")
        );
        assert_eq!(incr("1", "-1").as_deref(), Some("0"));
    }
}
