//! The crate's own seeded PRNG: xoshiro256** seeded through SplitMix64.
//!
//! The `official` preset samples the kept pairs at random. Its stream must be the same on every
//! platform (x86, ARM, wasm32), on every data-parallel rank, and after a resume from a
//! checkpoint, so it is integer-only, has no dependency that could change its output between
//! versions, and its whole state is four `u64` a checkpoint can save.

use serde::{Deserialize, Serialize};

/// xoshiro256** (Blackman & Vigna). Construct with [`Xoshiro256::seed_from`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Xoshiro256 {
    /// The state is the first four SplitMix64 outputs from `seed`, never all zero.
    pub fn seed_from(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: core::array::from_fn(|_| splitmix64(&mut sm)),
        }
    }

    /// Restores a state saved with [`Xoshiro256::state`].
    pub fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }

    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on (0, 1] with 53 random bits; never 0, so `ln` of it is finite.
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n`, unbiased (Lemire's multiply-and-reject). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let mut m = self.next_u64() as u128 * n as u128;
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = self.next_u64() as u128 * n as u128;
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_stream_of_splitmix64() {
        // SplitMix64 from seed 0, published reference values.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut s), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let mut a = Xoshiro256::seed_from(42);
        for _ in 0..10 {
            a.next_u64();
        }
        let mut b = Xoshiro256::from_state(a.state());
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn open01_and_below_stay_in_range() {
        let mut r = Xoshiro256::seed_from(7);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            let u = r.open01();
            assert!(u > 0.0 && u <= 1.0);
            counts[r.below(3) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
