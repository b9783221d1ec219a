//! Deterministic keys and values of a loaded data set.
//!
//! `nvkv load` writes record `i` with the key and value derived from
//! `(seed, i)` alone, so `nvkv bench` regenerates both on another machine and
//! checks every value it reads without any file copied from the server.

use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Appends the key of record `i` of the data set `seed` to `out`.
///
/// Keys look like `k:<seed>:<i>`, which keeps them readable in `redis-cli`.
pub fn write_key(seed: u64, i: u64, out: &mut Vec<u8>) {
    // `k:{seed}:{i}`, without the formatter's machinery: a load of small
    // values makes tens of millions of keys.
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"k:");
    out.extend_from_slice(digits.format(seed).as_bytes());
    out.push(b':');
    out.extend_from_slice(digits.format(i).as_bytes());
}

/// The key of record `i` of the data set `seed`.
pub fn key(seed: u64, i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    write_key(seed, i, &mut k);
    k
}

fn rng(seed: u64, i: u64) -> Xoshiro256PlusPlus {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..].copy_from_slice(&i.to_le_bytes());
    Xoshiro256PlusPlus::seed_from_u64(xxhash_rust::xxh3::xxh3_64(&s))
}

/// The value of record `i`: its length uniform in `[min, max]`, its bytes
/// pseudo-random.
pub struct ValueGen {
    rng: Xoshiro256PlusPlus,
    len: usize,
}

impl ValueGen {
    pub fn new(seed: u64, i: u64, min: usize, max: usize) -> Self {
        let mut rng = rng(seed, i);
        let len = rng.gen_range(min..=max.max(min));
        ValueGen { rng, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `out` (exactly `len()` bytes) with the value's contents.
    pub fn fill(mut self, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.len);
        self.rng.fill_bytes(out);
    }
}

/// The value of record `i` as a vector.
pub fn value(seed: u64, i: u64, min: usize, max: usize) -> Vec<u8> {
    let g = ValueGen::new(seed, i, min, max);
    let mut v = vec![0; g.len()];
    g.fill(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        for i in 0..1000 {
            let a = value(7, i, 10, 20);
            assert_eq!(a, value(7, i, 10, 20));
            assert!((10..=20).contains(&a.len()));
        }
        assert_ne!(value(7, 1, 100, 100), value(8, 1, 100, 100));
        assert_eq!(key(3, 42), b"k:3:42");
    }
}
