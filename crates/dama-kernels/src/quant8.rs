//! Block-wise dynamic 8-bit quantisation as bitsandbytes does it for its 8-bit optimizers
//! (Dettmers et al., "8-bit Optimizers via Block-wise Quantization", ICLR 2022): what
//! [`crate::adamw`]'s 8-bit states ([`crate::adamw::StateFormat::Dynamic8`]) are stored in.
//!
//! Why block-wise and dynamic: Adam's second moment spans many decades within one tensor (a
//! rarely-hit embedding row next to a busy one), so a linear 8-bit grid with one scale per
//! tensor rounds most of it to zero and the update `m / (√v + ε)` blows up. The dynamic map
//! spends its 8 bits like a tiny float (7 decades of exponent, a fraction whose precision
//! grows with the magnitude), and one absmax per block of [`BLOCK`] values confines an outlier's
//! damage to its own block.
//!
//! The map ([`dynamic_map`]): for each exponent e = 0..6 the midpoints of a linear grid on
//! [0.1, 1] (2^e + 1 points signed, 2^(e+1) + 1 unsigned) times 10^(e−6), the signed map with
//! their negatives too, then 0 and 1; sorted, 256 distinct values: [−0.993, 1] signed (the
//! first moment) and [0, 1] unsigned (the second). The grid is computed in f32 in the order of
//! torch's `linspace` ([`linspace_f32`]). A block is stored as one f32 absmax (max |x|) and,
//! per value, the index of the map value nearest to x / absmax ([`nearest`], ties to the lower
//! index; 0 when the block is all zero); it reads back as `map[code] · absmax`.
//!
//! Golden values: `scripts/golden_quant8.py`, an independent numpy implementation (bitsandbytes
//! itself needs torch), writes `tests/fixtures/quant8.json` and `kernels/qmap8.cuh`; the tests
//! below reproduce its maps, codes, absmaxes and dequantised values bit for bit.

use std::sync::OnceLock;

/// Values per quantisation block (bitsandbytes' block-wise optimizers use 2048).
pub const BLOCK: usize = 2048;

/// Tensors with fewer values keep 32-bit optimizer states (bitsandbytes' `min_8bit_size`): the
/// bytes saved are negligible and small tensors (norm scales, biases) are the sensitive ones.
pub const MIN_8BIT_SIZE: usize = 4096;

/// Which of the two dynamic maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QMap {
    /// [−0.993, 1]: the first moment.
    Signed,
    /// [0, 1]: the second moment.
    Unsigned,
}

impl QMap {
    /// The 256 values, ascending.
    pub fn values(self) -> &'static [f32; 256] {
        static SIGNED: OnceLock<[f32; 256]> = OnceLock::new();
        static UNSIGNED: OnceLock<[f32; 256]> = OnceLock::new();
        match self {
            QMap::Signed => SIGNED.get_or_init(|| dynamic_map(true)),
            QMap::Unsigned => UNSIGNED.get_or_init(|| dynamic_map(false)),
        }
    }

    /// The code of 0 (what a fresh, all-zero state holds).
    pub fn zero_code(self) -> u8 {
        match self {
            QMap::Signed => 127,
            QMap::Unsigned => 0,
        }
    }
}

/// `points` values from `start` to `end` in f32, as torch's CPU `linspace` computes them: the
/// first half `start + step·k`, the second `end − step·(points − 1 − k)`, with
/// `step = (end − start) / (points − 1)`.
pub fn linspace_f32(start: f32, end: f32, points: usize) -> Vec<f32> {
    let step = (end - start) / (points - 1) as f32;
    let half = points / 2;
    (0..points)
        .map(|k| {
            if k < half {
                start + step * k as f32
            } else {
                end - step * (points - 1 - k) as f32
            }
        })
        .collect()
}

/// bitsandbytes' `create_dynamic_map(signed)` with its defaults (7 exponent bits, 8 bits in
/// all), sorted ascending.
pub fn dynamic_map(signed: bool) -> [f32; 256] {
    // 10^(e−6) as f64 literals (correctly rounded), then to f32 as torch's scalar multiply does
    const SCALES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut values = Vec::with_capacity(256);
    for (e, &scale) in SCALES.iter().enumerate() {
        let points = if signed {
            (1 << e) + 1
        } else {
            (1 << (e + 1)) + 1
        };
        let grid = linspace_f32(0.1, 1.0, points);
        let scale = scale as f32;
        for w in grid.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            values.push(mean * scale);
            if signed {
                values.push(mean * -scale);
            }
        }
    }
    values.extend([0.0, 1.0]);
    values.sort_by(f32::total_cmp);
    values
        .try_into()
        .expect("the dynamic map has 256 values by construction")
}

/// The index of the map value nearest to `x` (ties to the lower index; below the first value
/// 0, above the last 255; NaN 0): a branch-free binary search for the last value ≤ x, then
/// the closer of it and the next.
#[inline(always)]
pub fn nearest(map: &[f32; 256], x: f32) -> u8 {
    let mut j = 0usize;
    let mut step = 128;
    while step > 0 {
        if j + step < 256 && map[j + step] <= x {
            j += step;
        }
        step >>= 1;
    }
    if j < 255 && (map[j + 1] - x) < (x - map[j]) {
        j += 1;
    }
    j as u8
}

/// Quantises one block (at most [`BLOCK`] values) into `codes`; returns its absmax.
#[inline]
pub fn quantize_block(map: &[f32; 256], xs: &[f32], codes: &mut [u8]) -> f32 {
    let absmax = xs.iter().fold(0f32, |a, x| a.max(x.abs()));
    if absmax > 0.0 {
        for (c, &x) in codes.iter_mut().zip(xs) {
            *c = nearest(map, x / absmax);
        }
    } else {
        codes.fill(nearest(map, 0.0));
    }
    absmax
}

/// Number of blocks of `n` values.
pub fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK)
}

/// Quantises `xs` block by block: (codes, one absmax per block).
pub fn quantize(map: QMap, xs: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let map = map.values();
    let mut codes = vec![0u8; xs.len()];
    let absmax = xs
        .chunks(BLOCK)
        .zip(codes.chunks_mut(BLOCK))
        .map(|(x, c)| quantize_block(map, x, c))
        .collect();
    (codes, absmax)
}

/// `map[code] · absmax` of each value.
pub fn dequantize(map: QMap, codes: &[u8], absmax: &[f32]) -> Vec<f32> {
    let map = map.values();
    codes
        .chunks(BLOCK)
        .zip(absmax)
        .flat_map(|(c, &a)| c.iter().map(move |&c| map[c as usize] * a))
        .collect()
}

/// The golden values of `scripts/golden_quant8.py` (base64 of little-endian bytes).
#[cfg(test)]
pub(crate) mod fixture {
    use base64::Engine;
    use serde_json::Value;

    pub(crate) fn load() -> Value {
        serde_json::from_str(include_str!("../tests/fixtures/quant8.json")).unwrap()
    }

    fn bytes(v: &Value) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    pub(crate) fn f32s(v: &Value) -> Vec<f32> {
        bytes(v)
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    pub(crate) fn u8s(v: &Value) -> Vec<u8> {
        bytes(v)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{f32s, load as fixture, u8s};
    use super::*;

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn maps_equal_the_reference_and_the_cuda_header() {
        let g = fixture();
        assert_eq!(g["block"].as_u64().unwrap() as usize, BLOCK);
        let (s, u) = (QMap::Signed.values(), QMap::Unsigned.values());
        assert_eq!(bits(s), bits(&f32s(&g["signed_map"])));
        assert_eq!(bits(u), bits(&f32s(&g["unsigned_map"])));
        // what bitsandbytes documents: sorted, distinct, 0 and 1 included, [-0.993, 1]
        for m in [s, u] {
            assert!(m.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(m[255], 1.0);
        }
        assert_eq!(s[QMap::Signed.zero_code() as usize], 0.0);
        assert_eq!(u[QMap::Unsigned.zero_code() as usize], 0.0);
        assert!((s[0] + 0.993).abs() < 1e-3, "{}", s[0]);
        // the CUDA kernel's copy (kernels/qmap8.cuh, written by the same script)
        let header = include_str!("../kernels/qmap8.cuh");
        let hex: Vec<u32> = header
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter_map(|w| w.strip_prefix("0x"))
            .map(|w| u32::from_str_radix(w.trim_end_matches('u'), 16).unwrap())
            .collect();
        assert_eq!(hex.len(), 512);
        assert_eq!(&hex[..256], bits(s).as_slice());
        assert_eq!(&hex[256..], bits(u).as_slice());
    }

    #[test]
    fn random_blocks_round_trip_as_the_reference() {
        let g = fixture();
        let cases = g["round_trips"].as_array().unwrap();
        assert!(cases.len() >= 6);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let map = if case["signed"].as_bool().unwrap() {
                QMap::Signed
            } else {
                QMap::Unsigned
            };
            let x = f32s(&case["x"]);
            assert_eq!(x.len(), case["n"].as_u64().unwrap() as usize);
            let (codes, absmax) = quantize(map, &x);
            assert_eq!(
                bits(&absmax),
                bits(&f32s(&case["absmax"])),
                "{name}: absmax"
            );
            let want = u8s(&case["codes"]);
            let wrong = codes.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(wrong, 0, "{name}: {wrong} codes differ");
            let back = dequantize(map, &codes, &absmax);
            assert_eq!(bits(&back), bits(&f32s(&case["dequantized"])), "{name}");
        }
    }

    /// Round-trip error in the top decade (values within 10× of the block's absmax): at most
    /// half the map's spacing there, 0.9/64/2 signed and 0.9/128/2 unsigned, i.e. under 8% and
    /// 4% of a value at 0.1·absmax; exact map values survive unchanged.
    #[test]
    fn round_trip_error_is_bounded_and_map_values_are_fixed_points() {
        for map in [QMap::Signed, QMap::Unsigned] {
            let m = map.values();
            for (i, &v) in m.iter().enumerate() {
                assert_eq!(nearest(m, v) as usize, i);
            }
            let xs: Vec<f32> = (0..BLOCK)
                .map(|i| 0.1 + 0.9 * i as f32 / BLOCK as f32)
                .collect();
            let (c, a) = quantize(map, &xs);
            let back = dequantize(map, &c, &a);
            let worst = xs
                .iter()
                .zip(&back)
                .map(|(x, y)| ((x - y) / x).abs())
                .fold(0f32, f32::max);
            let limit = if map == QMap::Signed { 0.08 } else { 0.04 };
            assert!(worst < limit, "{map:?}: {worst}");
        }
        // an all-zero block: absmax 0, zero codes, zeros back
        let (c, a) = quantize(QMap::Signed, &[0.0; 10]);
        assert_eq!(a, [0.0]);
        assert!(c.iter().all(|&c| c == QMap::Signed.zero_code()));
        assert_eq!(nearest(QMap::Signed.values(), f32::NAN), 0);
    }
}
