//! The GPU engine: NCCL through cudarc (the bindings candle's `nccl` feature brings), one
//! process per GPU, on the training stream (candle's stream of the device), so a collective
//! is ordered after the kernels that produced its input with no extra synchronisation.
//!
//! The communicator is created with `ncclCommInitRank` from the unique id rank 0 made and
//! sent over the watchdog's connection. cudarc's safe `Comm` hides its handle, which
//! `ncclCommGetAsyncError` needs, so this engine holds the raw handle and calls cudarc's
//! `result` functions. Each collective then waits for its own completion, polling NCCL's
//! asynchronous error while it waits: a failed collective is an error naming the rank and
//! the operation (the communicator is aborted), and a collective that never completes keeps
//! the rank inside it, where the watchdog sees it.
//!
//! Two ranks on one GPU (tests on a single-GPU machine) need NCCL ≥ 2.30 and
//! `NCCL_MULTI_RANK_GPU_ENABLE=1`.

use std::ffi::c_void;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::cudarc::nccl::{result, sys};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};
use half::{bf16, f16};

use super::{Collectives, DistError, PendingSum, Result};

/// An NCCL communicator of one rank.
pub struct Nccl {
    comm: sys::ncclComm_t,
    device: CudaDevice,
    stream: Arc<CudaStream>,
    /// NCCL's own stream for the sums started inside the backward, made on first use (a
    /// second stream turns on cudarc's per-buffer event tracking, which a run that never
    /// overlaps need not pay for).
    side: OnceLock<Arc<CudaStream>>,
    rank: usize,
    world: usize,
}

// The handle is used from the thread that created it only (the trainer's main thread); the
// trait object needs no Send.
impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl(rank {} of {})", self.rank, self.world)
    }
}

fn engine_err(what: impl Into<String>) -> DistError {
    DistError::Engine {
        engine: "nccl",
        what: what.into(),
    }
}

impl Nccl {
    /// A fresh unique id (rank 0 makes it; with `NCCL_COMM_ID` set every rank gets the same).
    pub fn unique_id() -> Result<Vec<u8>> {
        let id =
            result::get_uniqueid().map_err(|e| engine_err(format!("ncclGetUniqueId: {e:?}")))?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    }

    /// Joins the communicator `id` as `rank` of `world` on `device` (a CUDA device).
    pub fn new(device: &Device, rank: usize, world: usize, id: &[u8]) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            return Err(engine_err(format!(
                "rank {rank}: NCCL needs a CUDA device, this rank runs on the CPU (use --device cuda, or the MPI engine)"
            )));
        };
        if id.len() != 128 {
            return Err(engine_err(format!(
                "rank {rank}: the unique id from rank 0 has {} bytes, not 128",
                id.len()
            )));
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, &s) in internal.iter_mut().zip(id) {
            *d = s as std::ffi::c_char;
        }
        let stream = dev.cuda_stream();
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| engine_err(format!("rank {rank}: binding the CUDA context: {e:?}")))?;
        let mut comm = std::mem::MaybeUninit::uninit();
        let comm = unsafe {
            result::comm_init_rank(
                comm.as_mut_ptr(),
                world as i32,
                sys::ncclUniqueId { internal },
                rank as i32,
            )
            .map_err(|e| engine_err(format!("rank {rank}: ncclCommInitRank: {e:?}")))?;
            comm.assume_init()
        };
        Ok(Self {
            comm,
            device: dev.clone(),
            stream,
            side: OnceLock::new(),
            rank,
            world,
        })
    }

    fn err(&self, op: &'static str, what: impl Into<String>) -> DistError {
        DistError::Collective {
            rank: self.rank,
            op,
            what: what.into(),
        }
    }

    /// NCCL's asynchronous error, if it has one (the communicator is aborted then).
    fn async_error(&self, op: &'static str) -> Result<()> {
        let mut state = sys::ncclResult_t::ncclSuccess;
        unsafe { sys::ncclCommGetAsyncError(self.comm, &mut state) };
        if state != sys::ncclResult_t::ncclSuccess && state != sys::ncclResult_t::ncclInProgress {
            unsafe {
                let _ = result::comm_abort(self.comm);
            }
            return Err(self.err(op, format!("NCCL asynchronous error {state:?}")));
        }
        Ok(())
    }

    fn side_stream(&self) -> Result<&Arc<CudaStream>> {
        if let Some(s) = self.side.get() {
            return Ok(s);
        }
        let s = self
            .stream
            .fork()
            .map_err(|e| self.err("start_all_reduce_sum", format!("creating a stream: {e:?}")))?;
        Ok(self.side.get_or_init(|| s))
    }

    /// Waits for the stream's work so far, checking NCCL's asynchronous error meanwhile.
    fn complete(&self, op: &'static str) -> Result<()> {
        let event = self
            .stream
            .record_event(None)
            .map_err(|e| self.err(op, format!("recording an event: {e:?}")))?;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(self.err(op, format!("CUDA: {e:?}"))),
            }
            self.async_error(op)?;
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// `t` on this rank's GPU, contiguous.
    fn on_gpu(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(&Device::Cuda(self.device.clone()))?
            .flatten_all()?
            .contiguous()?)
    }

    /// Runs `call(send, recv, nccl dtype)` on the device pointers of `t`'s elements and of a
    /// fresh buffer of `out_len` elements of its dtype, and waits for it; returns that buffer
    /// as a 1-D tensor.
    fn run(
        &self,
        op: &'static str,
        t: &Tensor,
        out_len: usize,
        call: impl FnOnce(
            *const c_void,
            *mut c_void,
            sys::ncclDataType_t,
        ) -> Result<(), result::NcclError>,
    ) -> Result<Tensor> {
        let out = self.launch(op, &self.on_gpu(t)?, out_len, &self.stream, call)?;
        self.complete(op)?;
        Ok(out)
    }

    /// [`Nccl::run`]'s call enqueued on `on` (the training stream, or NCCL's own after the
    /// training stream's work so far), without waiting. The buffer is made on the training
    /// stream, which owns it afterwards; `t` must be on this rank's GPU, contiguous.
    fn launch(
        &self,
        op: &'static str,
        t: &Tensor,
        out_len: usize,
        on: &CudaStream,
        call: impl FnOnce(
            *const c_void,
            *mut c_void,
            sys::ncclDataType_t,
        ) -> Result<(), result::NcclError>,
    ) -> Result<Tensor> {
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cuda(cs) = &*storage else {
            return Err(self.err(op, "the tensor is not on the GPU"));
        };
        let start = layout.start_offset();
        let n = t.elem_count();
        let side = !std::ptr::eq(on, &*self.stream);
        macro_rules! typed {
            ($ty:ty, $nt:expr) => {{
                let src = cs.as_cuda_slice::<$ty>()?.slice(start..start + n);
                let mut dst: CudaSlice<$ty> = self
                    .stream
                    .alloc_zeros::<$ty>(out_len)
                    .map_err(|e| self.err(op, format!("allocating {out_len} elements: {e:?}")))?;
                if side {
                    on.join(&self.stream)
                        .map_err(|e| self.err(op, format!("ordering the streams: {e:?}")))?;
                }
                {
                    let (s, _s) = src.device_ptr(on);
                    let (d, _d) = dst.device_ptr_mut(on);
                    call(s as *const c_void, d as *mut c_void, $nt)
                        .map_err(|e| self.err(op, format!("{e:?}")))?;
                }
                CudaStorage::wrap_cuda_slice(dst, self.device.clone())
            }};
        }
        use sys::ncclDataType_t as T;
        let out = match t.dtype() {
            DType::F32 => typed!(f32, T::ncclFloat32),
            DType::F64 => typed!(f64, T::ncclFloat64),
            DType::BF16 => typed!(bf16, T::ncclBfloat16),
            DType::F16 => typed!(f16, T::ncclFloat16),
            DType::U32 => typed!(u32, T::ncclUint32),
            DType::U8 => typed!(u8, T::ncclUint8),
            DType::I64 => typed!(i64, T::ncclInt64),
            other => return Err(self.err(op, format!("cannot move {other:?} tensors"))),
        };
        drop(storage);
        Ok(Tensor::from_storage(
            Storage::Cuda(out),
            out_len,
            BackpropOp::none(),
            false,
        ))
    }

    fn cu_stream(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as sys::cudaStream_t
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        unsafe {
            let _ = result::comm_destroy(self.comm);
        }
    }
}

fn sum_only(t: &Tensor) -> bool {
    matches!(
        t.dtype(),
        DType::F32 | DType::F64 | DType::BF16 | DType::F16
    )
}

impl Collectives for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn engine(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        if !sum_only(t) {
            return Err(self.err(
                "all_reduce_sum",
                format!("sums floats, not {:?}", t.dtype()),
            ));
        }
        let n = t.elem_count();
        let out = self.run("all_reduce_sum", t, n, |s, d, ty| unsafe {
            result::all_reduce(
                s,
                d,
                n,
                ty,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.cu_stream(),
            )
            .map(|_| ())
        })?;
        Ok(out.reshape(t.shape())?.to_device(t.device())?)
    }

    /// The sum runs on NCCL's own stream, after the training stream's work so far (which
    /// computed `t`), while the training stream goes on; [`PendingSum::wait`] makes the
    /// training stream wait for it (the host does not) and checks NCCL's asynchronous error.
    fn start_all_reduce_sum(&self, t: &Tensor) -> Result<PendingSum<'_>> {
        const OP: &str = "start_all_reduce_sum";
        if !sum_only(t) {
            return Err(self.err(OP, format!("sums floats, not {:?}", t.dtype())));
        }
        let side = self.side_stream()?.clone();
        let shape = t.shape().clone();
        let t = self.on_gpu(t)?;
        let n = t.elem_count();
        let sum = self
            .launch(OP, &t, n, &side, |s, d, ty| unsafe {
                result::all_reduce(
                    s,
                    d,
                    n,
                    ty,
                    sys::ncclRedOp_t::ncclSum,
                    self.comm,
                    side.cu_stream() as sys::cudaStream_t,
                )
                .map(|_| ())
            })?
            .reshape(shape)?;
        let done = side
            .record_event(None)
            .map_err(|e| self.err(OP, format!("recording an event: {e:?}")))?;
        Ok(PendingSum::later(
            sum,
            Box::new(move || {
                // `t` is NCCL's input until the sum is done: kept alive until here.
                let _input = t;
                self.stream
                    .wait(&done)
                    .map_err(|e| self.err(OP, format!("waiting for the sum: {e:?}")))?;
                self.async_error(OP)
            }),
        ))
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        let out = self.run("all_gather", t, n * self.world, |s, d, ty| unsafe {
            result::all_gather(s, d, n, ty, self.comm, self.cu_stream()).map(|_| ())
        })?;
        Ok(out.to_device(t.device())?)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        let n = t.elem_count();
        let out = self.run("broadcast", t, n, |s, d, ty| unsafe {
            result::broadcast(s, d, n, ty, root as i32, self.comm, self.cu_stream()).map(|_| ())
        })?;
        Ok(out.reshape(t.shape())?.to_device(t.device())?)
    }

    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        let n = t.elem_count();
        if !sum_only(t) || !n.is_multiple_of(self.world) {
            return Err(self.err(
                "reduce_scatter_sum",
                format!(
                    "needs floats in {} equal parts, got {n} {:?}",
                    self.world,
                    t.dtype()
                ),
            ));
        }
        let k = n / self.world;
        let out = self.run("reduce_scatter_sum", t, k, |s, d, ty| unsafe {
            result::reduce_scatter(
                s,
                d,
                k,
                ty,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                self.cu_stream(),
            )
            .map(|_| ())
        })?;
        Ok(out.to_device(t.device())?)
    }

    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: an all-reduce of one element is one.
        let one = Tensor::ones(1, DType::F32, &Device::Cuda(self.device.clone()))?;
        self.all_reduce_sum(&one).map(|_| ())
    }
}
