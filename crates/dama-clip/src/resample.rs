//! Pillow's `Image.resize` for 8-bit images (libImaging/Resample.c), reproduced operation by
//! operation so that the result is bit-identical to PIL's:
//!
//! - separable convolution, horizontal pass first, into an 8-bit intermediate image that covers
//!   only the rows the vertical pass reads;
//! - on downscaling the filter support widens by the scale factor (PIL's antialiasing);
//! - coefficients are computed in f64, normalised to sum 1, then converted to fixed point with
//!   22 fractional bits, rounded half away from zero;
//! - each output is `(Σ pixel·coeff + 2^21) >> 22` clamped to 0..=255.
//!
//! Only the filters CLIP's processors use are provided (bicubic with a = −0.5, bilinear).

/// PIL's resampling filters that we reproduce; the numbers are PIL's enum values, which HF's
/// `resample` field stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `PIL.Image.BILINEAR` (2).
    Bilinear,
    /// `PIL.Image.BICUBIC` (3), what every CLIP processor uses.
    Bicubic,
}

impl Filter {
    pub fn from_pil(value: i64) -> Option<Self> {
        match value {
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point coefficients of one pass: for output index i, the taps start at input
/// `bounds[i].0` and there are `bounds[i].1` of them, at `coeffs[i * ksize..]`.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    coeffs: Vec<i32>,
}

/// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` to `out_size`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut coeffs = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero; both ends are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut coeffs[xx * ksize..(xx + 1) * ksize];
        for (x, c) in row.iter_mut().enumerate().take(n) {
            let w = if ww != 0.0 { k[x] / ww } else { k[x] };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            *c = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        coeffs,
    }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// An interleaved 8-bit image: `data[(y * width + x) * channels + c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// `PIL.Image.resize((width, height), filter)` of an 8-bit image.
pub fn resize(src: &Image8, width: usize, height: usize, filter: Filter) -> Image8 {
    assert!(width > 0 && height > 0, "resize to an empty image");
    let need_h = width != src.width;
    let need_v = height != src.height;
    let vert = precompute(src.height, height, filter);
    let ch = src.channels;

    // Horizontal pass over the rows the vertical pass will read (PIL's ybox_first..ybox_last).
    let (tmp, row_offset) = if need_h {
        let first = vert.bounds[0].0;
        let last = vert.bounds[height - 1].0 + vert.bounds[height - 1].1;
        let (first, last) = if need_v {
            (first, last)
        } else {
            (0, src.height)
        };
        let horiz = precompute(src.width, width, filter);
        let mut out = vec![0u8; (last - first) * width * ch];
        for y in first..last {
            let src_row = &src.data[y * src.width * ch..(y + 1) * src.width * ch];
            let dst_row = &mut out[(y - first) * width * ch..(y - first + 1) * width * ch];
            for (xx, &(xmin, n)) in horiz.bounds.iter().enumerate() {
                let k = &horiz.coeffs[xx * horiz.ksize..xx * horiz.ksize + n];
                for c in 0..ch {
                    let mut ss: i32 = 1 << (PRECISION_BITS - 1);
                    for (x, &kx) in k.iter().enumerate() {
                        ss += src_row[(xmin + x) * ch + c] as i32 * kx;
                    }
                    dst_row[xx * ch + c] = clip8(ss);
                }
            }
        }
        (
            Image8 {
                width,
                height: last - first,
                channels: ch,
                data: out,
            },
            first,
        )
    } else {
        (src.clone(), 0)
    };
    if !need_v {
        return tmp;
    }
    let mut out = vec![0u8; width * height * ch];
    let row_len = width * ch;
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.coeffs[yy * vert.ksize..yy * vert.ksize + n];
        let ymin = ymin - row_offset;
        let dst = &mut out[yy * row_len..(yy + 1) * row_len];
        for (i, d) in dst.iter_mut().enumerate() {
            let mut ss: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &ky) in k.iter().enumerate() {
                ss += tmp.data[(ymin + y) * row_len + i] as i32 * ky;
            }
            *d = clip8(ss);
        }
    }
    Image8 {
        width,
        height,
        channels: ch,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Image8 {
        let data = (0..w * h).map(|i| ((i * 37) % 256) as u8).collect();
        Image8 {
            width: w,
            height: h,
            channels: 1,
            data,
        }
    }

    #[test]
    fn same_size_is_identity() {
        let im = ramp(7, 5);
        assert_eq!(resize(&im, 7, 5, Filter::Bicubic), im);
    }

    #[test]
    fn constant_images_stay_constant() {
        // The normalised fixed-point taps of every output sum to 2^22 ± rounding, so a flat
        // image must come back flat at any scale.
        for (w, h) in [(3, 2), (40, 9), (101, 77)] {
            let im = Image8 {
                width: 17,
                height: 13,
                channels: 3,
                data: vec![200; 17 * 13 * 3],
            };
            let out = resize(&im, w, h, Filter::Bicubic);
            assert!(out.data.iter().all(|&v| v == 200), "{w}x{h}");
        }
    }

    #[test]
    fn downscale_support_widens() {
        let c = precompute(100, 10, Filter::Bicubic);
        // support 2 · scale 10 = 20 on each side: 41 taps at most.
        assert_eq!(c.ksize, 41);
        let c = precompute(10, 100, Filter::Bicubic);
        assert_eq!(c.ksize, 5);
        // The first output's window is clamped at the left edge.
        assert_eq!(c.bounds[0].0, 0);
    }
}
