//! YCSB's scrambled zipfian key distribution.
//!
//! [`Zipfian`] is the `ZipfianGenerator` of YCSB (Gray et al., "Quickly
//! Generating Billion-Record Synthetic Databases", SIGMOD 1994): rank `r` in
//! `[0, n)` is drawn with probability proportional to `1 / (r + 1)^theta`.
//! [`ScrambledZipfian`] then hashes the rank with 64-bit FNV-1a, as YCSB's
//! `ScrambledZipfianGenerator` does, so that the popular keys are spread over
//! the key space instead of being `0, 1, 2, ...`.
//!
//! One difference from YCSB: YCSB draws ranks from a fixed space of 10^10
//! items before hashing them modulo `n`; here the ranks span exactly `n`
//! items, so `theta` means the same thing for every data set size.

use rand::Rng;

/// Terms of the zeta sum computed exactly; the rest is integrated.
const EXACT_ZETA_TERMS: u64 = 1 << 16;

/// Ranks in `[0, n)`, rank `r` with probability proportional to
/// `1 / (r + 1)^theta`.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    /// `1 + 0.5^theta`: below this, `u * zetan` falls on rank 1.
    second_threshold: f64,
}

impl Zipfian {
    /// A generator over `items` ranks; `theta` must be in `[0, 1)`.
    pub fn new(items: u64, theta: f64) -> Self {
        assert!(items > 0, "zipfian needs at least one item");
        assert!(
            (0.0..1.0).contains(&theta),
            "zipfian theta must be in [0, 1)"
        );
        let zetan = zeta(items, theta);
        let zeta2 = zeta(2, theta);
        // `items` is far below 2^53 in any real run; rounding is harmless.
        let n = items as f64;
        Zipfian {
            items,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
            second_threshold: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// Draws a rank; 0 is the most popular.
    pub fn next_rank<R: Rng>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.second_threshold {
            return 1.min(self.items - 1);
        }
        let spread = (self.eta * u - self.eta + 1.0).powf(self.alpha);
        // Truncation towards zero is the algorithm; the float-to-int cast
        // saturates, and the `min` keeps rounding at the top end in range.
        ((self.items as f64 * spread) as u64).min(self.items - 1)
    }
}

/// [`Zipfian`] ranks scattered over `[0, n)` by a hash.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    ranks: Zipfian,
}

impl ScrambledZipfian {
    /// A generator over `[0, items)` with skew `theta` in `[0, 1)`.
    pub fn new(items: u64, theta: f64) -> Self {
        ScrambledZipfian {
            ranks: Zipfian::new(items, theta),
        }
    }

    /// Draws an item in `[0, items)`.
    pub fn next<R: Rng>(&self, rng: &mut R) -> u64 {
        fnv1a_64(self.ranks.next_rank(rng)) % self.ranks.items
    }
}

/// 64-bit FNV-1a over the eight bytes of `value`, low byte first, as YCSB's
/// `Utils.fnvhash64`.
fn fnv1a_64(mut value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(PRIME);
        value >>= 8;
    }
    hash
}

/// `sum(1 / i^theta for i in 1..=n)`, exactly for the first
/// [`EXACT_ZETA_TERMS`] terms and by the midpoint rule beyond, which makes
/// building a generator over a billion keys instantaneous. The tail's
/// relative error is below 1e-9.
fn zeta(n: u64, theta: f64) -> f64 {
    let exact_terms = n.min(EXACT_ZETA_TERMS);
    let head: f64 = (1..=exact_terms).map(|i| (i as f64).powf(-theta)).sum();
    if n == exact_terms {
        return head;
    }
    // Sum of f(i) for i in (m, n] ≈ integral of f over [m + 1/2, n + 1/2].
    let antiderivative = |x: f64| x.powf(1.0 - theta) / (1.0 - theta);
    head + antiderivative(n as f64 + 0.5) - antiderivative(exact_terms as f64 + 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn counts(items: u64, theta: f64, draws: usize) -> (ScrambledZipfian, Vec<u64>) {
        let gen = ScrambledZipfian::new(items, theta);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut counts = vec![0u64; items as usize];
        for _ in 0..draws {
            let item = gen.next(&mut rng);
            assert!(item < items);
            counts[item as usize] += 1;
        }
        (gen, counts)
    }

    #[test]
    fn values_stay_in_range() {
        for items in [1, 2, 3, 10, 1000] {
            counts(items, 0.99, 10_000);
            counts(items, 0.5, 10_000);
            counts(items, 0.0, 10_000);
        }
    }

    #[test]
    fn skewed_towards_rank_zero() {
        let draws = 200_000;
        let (_, counts) = counts(1000, 0.99, draws);
        let hottest = (fnv1a_64(0) % 1000) as usize;
        assert_eq!(counts.iter().max(), Some(&counts[hottest]));
        // P(rank 0) = 1 / zeta(1000, 0.99) ≈ 0.13; uniform would be 0.001.
        let share = counts[hottest] as f64 / draws as f64;
        assert!((0.11..0.15).contains(&share), "hottest share {share}");
        // The hottest tenth of the keys takes most of the load.
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = sorted[..100].iter().sum();
        assert!(top as f64 > 0.6 * draws as f64, "top 10% got {top}");
    }

    #[test]
    fn theta_zero_is_nearly_uniform() {
        let draws = 100_000;
        let (_, counts) = counts(100, 0.0, draws);
        let max = *counts.iter().max().unwrap() as f64;
        // Hashing maps some ranks to the same item; the worst item gets a few.
        assert!(max < 0.05 * draws as f64, "max {max}");
    }

    #[test]
    fn zeta_tail_approximation_is_accurate() {
        for theta in [0.5, 0.99] {
            let n = 1_000_000u64;
            let exact: f64 = (1..=n).map(|i| (i as f64).powf(-theta)).sum();
            let approx = zeta(n, theta);
            assert!(
                ((approx - exact) / exact).abs() < 1e-9,
                "{approx} vs {exact}"
            );
        }
    }

    #[test]
    fn fnv_matches_ycsb() {
        // FNV-1a of eight zero bytes.
        assert_eq!(fnv1a_64(0), 0xa8c7_f832_281a_39c5);
    }
}
