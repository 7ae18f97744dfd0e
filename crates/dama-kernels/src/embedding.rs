//! Embedding lookup (`table[ids]`) with a scatter-add backward.
//!
//! candle's `index_select` backward is `index_add` into a zero table, whose CUDA kernel gives
//! each of the `d` columns one thread that walks all `n` ids in sequence (a chain of dependent
//! read-modify-writes: milliseconds at n = 5888, d = 2048) and adds in the model dtype. Here the
//! backward accumulates in f32 and rounds once: on the CPU by vocabulary row (ids bucketed
//! first, rows in parallel, deterministic), on CUDA with one f32 atomic add per element.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, bail};
use num_traits::Zero;
use rayon::prelude::*;

use crate::elem::{Elem, dispatch};
use crate::io;

const NAME: &str = "dama-embedding";

/// Rows `ids` (u32, any shape) of `table` `(vocab, d)`: shape `ids.dims() + (d,)`. The
/// gradient of `table` (if it tracks one) is the sum of the output gradients of the rows that
/// read it. On CUDA an id ≥ vocab reads zeros and adds nothing (the CPU returns an error).
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (_, d) = table.dims2()?;
    if ids.dtype() != DType::U32 {
        bail!("{NAME}: ids must be u32, not {:?}", ids.dtype());
    }
    let mut dims = ids.dims().to_vec();
    dims.push(d);
    let flat = ids.flatten_all()?.contiguous()?;
    table
        .contiguous()?
        .apply_op2(&flat, Embedding)?
        .reshape(dims)
}

struct Embedding;

fn ids_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [u32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::U32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => bail!("{NAME}: ids must be a contiguous u32 tensor"),
    }
}

impl CustomOp2 for Embedding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Elem>(
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (v, d) = l1.shape().dims2()?;
            let table = io::slice::<T>(s1, l1, NAME)?;
            let ids = ids_slice(s2, l2)?;
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= v) {
                bail!("{NAME}: id {bad} out of a vocabulary of {v}");
            }
            let mut y = vec![T::zero(); ids.len() * d];
            y.par_chunks_mut(d.max(1))
                .zip(ids.par_iter())
                .for_each(|(row, &i)| {
                    row.copy_from_slice(&table[i as usize * d..(i as usize + 1) * d])
                });
            Ok((T::to_cpu_storage_owned(y), Shape::from((ids.len(), d))))
        }
        dispatch!(NAME, s1.dtype(), run(s1, l1, s2, l2))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::pointwise::embedding_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if !table.track_op() {
            return Ok((None, None));
        }
        let dy = dy.contiguous()?;
        let dt = crate::profile::span(table.device(), "embedding.bwd", || match table.device() {
            Device::Cpu => dispatch!(NAME, table.dtype(), backward_cpu(table, ids, &dy)),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => crate::cuda::pointwise::embedding_bwd(table, ids, &dy),
            d => bail!("{NAME}: no kernel for device {d:?}"),
        })?;
        Ok((Some(dt), None))
    }
}

fn backward_cpu<T: Elem>(table: &Tensor, ids: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (v, d) = table.dims2()?;
    let ids = ids.to_vec1::<u32>()?;
    // bucket the rows by id (CSR): start[i]..start[i + 1] index `order`
    let mut start = vec![0usize; v + 1];
    for &i in &ids {
        start[i as usize + 1] += 1;
    }
    for i in 0..v {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; ids.len()];
    for (r, &i) in ids.iter().enumerate() {
        order[fill[i as usize]] = r;
        fill[i as usize] += 1;
    }
    let mut out = vec![T::zero(); v * d];
    io::with_cpu(dy, NAME, |sg, lg| {
        let g = io::slice::<T>(sg, lg, NAME)?;
        out.par_chunks_mut(d.max(1))
            .enumerate()
            .for_each(|(i, row)| {
                let rows = &order[start[i]..start[i + 1]];
                if rows.is_empty() {
                    return;
                }
                let mut acc = vec![T::Acc::zero(); d];
                for &r in rows {
                    for (a, x) in acc.iter_mut().zip(&g[r * d..(r + 1) * d]) {
                        *a += x.acc();
                    }
                }
                for (o, a) in row.iter_mut().zip(acc) {
                    *o = T::from_acc(a);
                }
            });
        Ok(())
    })?;
    io::cpu_tensor(out, (v, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composed;
    use crate::testing::{Rng, finite_difference_error, grads, objective, rel_err};
    use candle_core::Var;

    fn ids(rng: &mut Rng, n: usize, v: usize) -> Tensor {
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        Tensor::from_vec(ids, (n / 3, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_index_select_with_repeated_ids_in_f32_and_bf16() {
        let mut rng = Rng::new(11);
        let ids = ids(&mut rng, 60, 13); // 60 ids over 13 rows: every row repeats
        for dtype in [DType::F32, DType::BF16] {
            let table = rng.var(&[13, 37], 1.0, dtype).unwrap();
            let c = rng.randn(&[20, 3, 37], 1.0, DType::F64).unwrap();
            let y = embedding(&ids, &table).unwrap();
            let want = composed::embedding(&ids, &table).unwrap();
            assert_eq!(y.dims(), &[20, 3, 37]);
            assert_eq!(rel_err(&y, &want), 0.0);
            let t32 = Var::from_tensor(&table.to_dtype(DType::F32).unwrap()).unwrap();
            let g = grads(&y, &c, &[&table]).unwrap();
            let gw = grads(&composed::embedding(&ids, &t32).unwrap(), &c, &[&t32]).unwrap();
            let tol = if dtype == DType::F32 { 1e-6 } else { 8e-3 };
            assert!(
                rel_err(&g[0], &gw[0]) < tol,
                "{dtype:?} {:e}",
                rel_err(&g[0], &gw[0])
            );
        }
        let frozen = rng.randn(&[13, 4], 1.0, DType::F32).unwrap();
        let y = embedding(&ids, &frozen).unwrap();
        assert!(
            y.sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(&frozen)
                .is_none()
        );
        assert!(embedding(&Tensor::new(&[13u32], &Device::Cpu).unwrap(), &frozen).is_err());
    }

    #[test]
    fn gradient_equals_central_finite_differences_in_f64() {
        let mut rng = Rng::new(12);
        let ids = ids(&mut rng, 12, 5);
        let table = rng.var(&[5, 3], 1.0, DType::F64).unwrap();
        let c = rng.randn(&[4, 3, 3], 1.0, DType::F64).unwrap();
        let loss = || objective(&embedding(&ids, &table)?, &c)?.to_scalar::<f64>();
        let g = grads(&embedding(&ids, &table).unwrap(), &c, &[&table]).unwrap();
        let e = finite_difference_error(&table, &g[0], 6, 1e-6, 1e-2, &loss).unwrap();
        assert!(e < 1e-6, "{e:e}");
    }
}
