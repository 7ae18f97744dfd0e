//! The CPU update loops (rayon): f32 moments in chunks of [`CHUNK`], 8-bit moments one
//! quantisation block per task.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, bail};
use half::{bf16, f16};
use rayon::prelude::*;

use super::state::Args;
use super::{AdamWStep, sr_bits, stochastic_bf16};
use crate::quant8::{self, BLOCK, QMap};

/// A CPU element type: read as f32, written from f32 (round to nearest even).
pub(super) trait Io: Copy + Send + Sync {
    fn get(self) -> f32;
    fn put(x: f32) -> Self;
}

impl Io for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        x
    }
}

impl Io for f64 {
    #[inline(always)]
    fn get(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        x as f64
    }
}

impl Io for bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Io for f16 {
    #[inline(always)]
    fn get(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// Elements per rayon task.
pub(super) const CHUNK: usize = 1 << 14;

fn contiguous<'a, T>(s: &'a [T], l: &Layout, n: usize, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) if b - a == n => Ok(&s[a..b]),
        _ => bail!("adamw: {what} must be contiguous"),
    }
}

/// The gradient, as a slice of its dtype.
#[derive(Clone, Copy)]
enum Grad<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
    F64(&'a [f64]),
}

/// Calls `$f(g, ...)` with the gradient slice of its own type.
macro_rules! with_grad {
    ($g:expr, $f:ident ( $($arg:expr),* )) => {
        match $g {
            Grad::F32(g) => $f(g, $($arg),*),
            Grad::Bf16(g) => $f(g, $($arg),*),
            Grad::F16(g) => $f(g, $($arg),*),
            Grad::F64(g) => $f(g, $($arg),*),
        }
    };
}

/// One update on the CPU: checks the buffers' sizes and dispatches on the dtypes and the
/// layout (f32 or 8-bit moments, master or not, stochastic rounding).
pub(super) fn update(
    (state, sl): (&mut CpuStorage, &Layout),
    (grad, gl): (&CpuStorage, &Layout),
    codes: Option<(&mut CpuStorage, &Layout)>,
    (p, pl): (&mut CpuStorage, &Layout),
    args: &Args<'_>,
) -> Result<()> {
    let n = pl.shape().elem_count();
    let moments = if codes.is_some() {
        2 * quant8::blocks(n)
    } else {
        2 * n
    };
    let len = moments + if args.has_master { n } else { 0 };
    let CpuStorage::F32(state) = state else {
        bail!("adamw: the state buffer is f32")
    };
    let Some((a, b)) = sl.contiguous_offsets().filter(|(a, b)| b - a == len) else {
        bail!("adamw: the state buffer must be contiguous, {len} elements")
    };
    let state = &mut state[a..b];
    let codes = match codes {
        Some((CpuStorage::U8(c), cl)) => match cl.contiguous_offsets() {
            Some((a, b)) if b - a == 2 * n => Some(&mut c[a..b]),
            _ => bail!("adamw: the codes must be contiguous, 2·n elements"),
        },
        Some(_) => bail!("adamw: 8-bit codes are u8"),
        None => None,
    };
    let Some((pa, pb)) = pl.contiguous_offsets() else {
        bail!("adamw: the variable must be contiguous")
    };
    let grad = match grad {
        CpuStorage::F32(g) => Grad::F32(contiguous(g, gl, n, "gradient")?),
        CpuStorage::BF16(g) => Grad::Bf16(contiguous(g, gl, n, "gradient")?),
        CpuStorage::F16(g) => Grad::F16(contiguous(g, gl, n, "gradient")?),
        CpuStorage::F64(g) => Grad::F64(contiguous(g, gl, n, "gradient")?),
        other => bail!(
            "adamw: gradients of dtype {:?} are not supported",
            other.dtype()
        ),
    };
    let s = args.step;
    let has_master = args.has_master;
    if let Some(key) = args.sr_key {
        let CpuStorage::BF16(p) = p else {
            bail!("adamw: stochastic rounding needs a bf16 variable")
        };
        let p = &mut p[pa..pb];
        let store = |x: f32, i: u64| stochastic_bf16(x, sr_bits(key, i));
        match codes {
            Some(codes) => with_grad!(grad, run8(p, state, codes, s, false, store)),
            None => with_grad!(grad, run_sr(p, state, s, key)),
        }
        return Ok(());
    }
    macro_rules! go {
        ($p:expr) => {{
            let p = $p;
            match codes {
                Some(codes) => with_grad!(grad, run8(p, state, codes, s, has_master, put)),
                None => with_grad!(grad, run(p, state, s, has_master)),
            }
        }};
    }
    match p {
        CpuStorage::F32(p) => go!(&mut p[pa..pb]),
        CpuStorage::BF16(p) => go!(&mut p[pa..pb]),
        CpuStorage::F16(p) => go!(&mut p[pa..pb]),
        CpuStorage::F64(p) => go!(&mut p[pa..pb]),
        other => bail!(
            "adamw: variables of dtype {:?} are not supported",
            other.dtype()
        ),
    }
    Ok(())
}

/// Rounds to nearest: the store of every variable but a stochastically rounded bf16 one.
fn put<P: Io>(x: f32, _: u64) -> P {
    P::put(x)
}

/// The 8-bit update: one rayon task per quantisation block. State `[master | absmax_m |
/// absmax_v]` (no master without `has_master`), codes `[m | v]`; `store` writes the new
/// weight of element `i` (rounding to nearest, or stochastically).
fn run8<G: Io, P: Io>(
    g: &[G],
    p: &mut [P],
    state: &mut [f32],
    codes: &mut [u8],
    s: &AdamWStep,
    has_master: bool,
    store: impl Fn(f32, u64) -> P + Sync,
) {
    let n = p.len();
    let nb = quant8::blocks(n);
    let (master, absmax) = state.split_at_mut(if has_master { n } else { 0 });
    let (am, av) = absmax.split_at_mut(nb);
    let (cm, cv) = codes.split_at_mut(n);
    let masters: Vec<&mut [f32]> = if has_master {
        master.chunks_mut(BLOCK).collect()
    } else {
        (0..nb).map(|_| <&mut [f32]>::default()).collect()
    };
    p.par_chunks_mut(BLOCK)
        .zip(g.par_chunks(BLOCK))
        .zip(cm.par_chunks_mut(BLOCK).zip(cv.par_chunks_mut(BLOCK)))
        .zip(am.par_iter_mut().zip(av.par_iter_mut()))
        .zip(masters)
        .enumerate()
        .for_each(|(b, ((((p, g), (cm, cv)), (am, av)), w))| {
            let (qs, qu) = (QMap::Signed.values(), QMap::Unsigned.values());
            let mut m = [0f32; BLOCK];
            let mut v = [0f32; BLOCK];
            let base = (b * BLOCK) as u64;
            for i in 0..p.len() {
                m[i] = qs[cm[i] as usize] * *am;
                v[i] = qu[cv[i] as usize] * *av;
                let w0 = if has_master { w[i] } else { p[i].get() };
                let x = s.apply(w0, &mut m[i], &mut v[i], g[i].get());
                if has_master {
                    w[i] = x;
                }
                p[i] = store(x, base + i as u64);
            }
            *am = quant8::quantize_block(qs, &m[..p.len()], cm);
            *av = quant8::quantize_block(qu, &v[..p.len()], cv);
        });
}

fn run<G: Io, P: Io>(g: &[G], p: &mut [P], state: &mut [f32], s: &AdamWStep, has_master: bool) {
    let n = p.len();
    if has_master {
        let (master, rest) = state.split_at_mut(n);
        let (m, v) = rest.split_at_mut(n);
        master
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(p.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((((w, m), v), p), g)| {
                for i in 0..w.len() {
                    let x = s.apply(w[i], &mut m[i], &mut v[i], g[i].get());
                    w[i] = x;
                    p[i] = P::put(x);
                }
            });
    } else {
        let (m, v) = state.split_at_mut(n);
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(p.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((m, v), p), g)| {
                for i in 0..m.len() {
                    p[i] = P::put(s.apply(p[i].get(), &mut m[i], &mut v[i], g[i].get()));
                }
            });
    }
}

/// The update of a bf16 variable that is its own master: `[exp_avg | exp_avg_sq]`, the result
/// rounded stochastically with the bits of (`key`, global element index).
fn run_sr<G: Io>(g: &[G], p: &mut [bf16], state: &mut [f32], s: &AdamWStep, key: u64) {
    let n = p.len();
    let (m, v) = state.split_at_mut(n);
    m.par_chunks_mut(CHUNK)
        .zip(v.par_chunks_mut(CHUNK))
        .zip(p.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(c, (((m, v), p), g))| {
            let base = (c * CHUNK) as u64;
            for i in 0..m.len() {
                let x = s.apply(p[i].to_f32(), &mut m[i], &mut v[i], g[i].get());
                p[i] = stochastic_bf16(x, sr_bits(key, base + i as u64));
            }
        });
}
