//! Starting a rank's engine and watchdog from its launch, and the [`Dist`] the trainer talks
//! to: the engine's collectives, each one announced to the watchdog.

#[cfg(any(feature = "mpi", feature = "nccl"))]
use std::net::TcpListener;
use std::time::Duration;

use candle_core::{Device, Tensor};

use super::launch::Launch;
use super::watchdog::{FaultHandler, Watchdog, WatchdogConfig, exit_on_fault};
use super::{Collectives, DistError, Result, Single};

/// Which engine moves the data (`--dist-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// NCCL on a CUDA device, MPI on the CPU.
    #[default]
    Auto,
    Mpi,
    Nccl,
}

dama_core::named!(Engine, "collectives engine", {
    Auto => "auto",
    Mpi => "mpi",
    Nccl => "nccl",
});

/// How the ranks are connected.
#[derive(Clone)]
pub struct DistOptions {
    pub engine: Engine,
    /// The watchdog's timeout: how long a rank may keep the others waiting.
    pub timeout: Duration,
    /// What a rank does when the job must stop; `None` for [`exit_on_fault`].
    pub on_fault: Option<FaultHandler>,
}

impl Default for DistOptions {
    fn default() -> Self {
        Self {
            engine: Engine::Auto,
            timeout: Duration::from_secs(600),
            on_fault: None,
        }
    }
}

/// A rank's collectives with its watchdog; one rank alone when not launched as several.
pub struct Dist {
    launch: Launch,
    engine: Box<dyn Collectives>,
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dist(rank {} of {}, {})",
            self.launch.rank,
            self.launch.world_size,
            self.engine.engine()
        )
    }
}

fn engine_unavailable(engine: &'static str, feature: &str) -> DistError {
    DistError::Engine {
        engine,
        what: format!("this build has no {engine} engine: rebuild with `--features {feature}`"),
    }
}

impl Dist {
    /// One rank, no communication.
    pub fn single() -> Self {
        Self {
            launch: Launch::single(),
            engine: Box::new(Single),
            watchdog: None,
        }
    }

    /// Starts this rank's engine (MPI or NCCL, by `opts.engine` and the device) and its
    /// watchdog; a launch of one rank needs neither.
    pub fn init(launch: Launch, opts: &DistOptions, device: &Device) -> Result<Self> {
        if launch.world_size == 1 {
            return Ok(Self {
                launch,
                ..Self::single()
            });
        }
        let engine = match opts.engine {
            Engine::Auto if device.is_cuda() => Engine::Nccl,
            Engine::Auto => Engine::Mpi,
            e => e,
        };
        let cfg = WatchdogConfig::with_timeout(opts.timeout);
        let handler = opts
            .on_fault
            .clone()
            .unwrap_or_else(|| exit_on_fault(launch.rank));
        match engine {
            Engine::Mpi => Self::init_mpi(launch, cfg, handler),
            _ => Self::init_nccl(launch, cfg, handler, device),
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn init_mpi(_: Launch, _: WatchdogConfig, _: FaultHandler) -> Result<Self> {
        Err(engine_unavailable("mpi", "mpi"))
    }

    #[cfg(feature = "mpi")]
    fn init_mpi(launch: Launch, cfg: WatchdogConfig, handler: FaultHandler) -> Result<Self> {
        use super::mpi::Mpi;
        if !launch.launcher.is_mpi() {
            return Err(DistError::Launch(format!(
                "rank {} of {} was started by {}; the MPI engine needs ranks that an MPI launcher started (mpirun -n {n}, srun --mpi=pmix, or dama-native train --nproc {n})",
                launch.rank,
                launch.world_size,
                launch.launcher,
                n = launch.world_size
            )));
        }
        let mpi = Mpi::init()?;
        if (mpi.rank(), mpi.world_size()) != (launch.rank, launch.world_size) {
            return Err(DistError::Launch(format!(
                "{} says rank {} of {}, but MPI sees rank {} of {}: the launcher and the MPI library do not belong together (srun needs --mpi=pmix for OpenMPI)",
                launch.launcher,
                launch.rank,
                launch.world_size,
                mpi.rank(),
                mpi.world_size()
            )));
        }
        // Rank 0 listens on a free port and tells the others where through MPI itself.
        let mut buf = [0u8; 256];
        let listener = if launch.rank == 0 {
            let l = TcpListener::bind("0.0.0.0:0").map_err(|e| DistError::Watchdog {
                rank: 0,
                what: format!("listening for the other ranks: {e}"),
            })?;
            let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
            let host = launch
                .master
                .as_ref()
                .map_or_else(Mpi::processor_name, |(a, _)| a.clone());
            let text = format!("{host} {port}");
            let n = text.len().min(buf.len());
            buf[..n].copy_from_slice(&text.as_bytes()[..n]);
            Some(l)
        } else {
            None
        };
        mpi.broadcast_bytes(&mut buf, 0);
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches('\0');
        let (host, port) = text.rsplit_once(' ').ok_or_else(|| DistError::Watchdog {
            rank: launch.rank,
            what: format!("rank 0 sent the address {text:?}"),
        })?;
        let watchdog = match listener {
            Some(l) => Watchdog::host(l, launch.world_size, cfg, b"", handler)?,
            None => {
                let host = if host == Mpi::processor_name() {
                    "127.0.0.1"
                } else {
                    host
                };
                Watchdog::join(
                    &format!("{host}:{port}"),
                    launch.rank,
                    launch.world_size,
                    cfg,
                    handler,
                )?
                .0
            }
        };
        Ok(Self {
            launch,
            engine: Box::new(mpi),
            watchdog: Some(watchdog),
        })
    }

    #[cfg(not(feature = "nccl"))]
    fn init_nccl(_: Launch, _: WatchdogConfig, _: FaultHandler, _: &Device) -> Result<Self> {
        Err(engine_unavailable("nccl", "nccl"))
    }

    #[cfg(feature = "nccl")]
    fn init_nccl(
        launch: Launch,
        cfg: WatchdogConfig,
        handler: FaultHandler,
        device: &Device,
    ) -> Result<Self> {
        use super::nccl::Nccl;
        let Some((addr, port)) = launch.master.clone() else {
            return Err(DistError::Launch(format!(
                "rank {} of {} ({}) has no MASTER_ADDR/MASTER_PORT: the NCCL engine needs them to find rank 0 (torchrun and --nproc set them)",
                launch.rank, launch.world_size, launch.launcher
            )));
        };
        let (watchdog, id) = if launch.rank == 0 {
            let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| DistError::Watchdog {
                rank: 0,
                what: format!("listening on MASTER_PORT={port}: {e}"),
            })?;
            let id = Nccl::unique_id()?;
            (Watchdog::host(l, launch.world_size, cfg, &id, handler)?, id)
        } else {
            Watchdog::join(
                &format!("{addr}:{port}"),
                launch.rank,
                launch.world_size,
                cfg,
                handler,
            )?
        };
        let nccl = Nccl::new(device, launch.rank, launch.world_size, &id)?;
        Ok(Self {
            launch,
            engine: Box::new(nccl),
            watchdog: Some(watchdog),
        })
    }

    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// This rank failed with `message` and is about to exit: the other ranks stop with it
    /// (they would otherwise wait for it in their next collective until the timeout).
    pub fn fail(&self, message: &str) {
        if let Some(w) = &self.watchdog {
            w.fail(message);
        }
    }

    /// The job ended well: a last barrier, then the watchdog says goodbye (and the engine is
    /// shut down: MPI finalized).
    pub fn finish(mut self) -> Result<()> {
        if self.launch.world_size > 1 {
            self.barrier()?;
        }
        if let Some(w) = self.watchdog.take() {
            w.finish();
        }
        Ok(())
    }

    fn watched<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(w) = &self.watchdog {
            w.enter(op);
        }
        let out = f();
        if let Some(w) = &self.watchdog {
            w.leave();
        }
        out
    }
}

impl Collectives for Dist {
    fn rank(&self) -> usize {
        self.engine.rank()
    }
    fn world_size(&self) -> usize {
        self.engine.world_size()
    }
    fn engine(&self) -> &'static str {
        self.engine.engine()
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.watched("all_reduce_sum", || self.engine.all_reduce_sum(t))
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        self.watched("all_gather", || self.engine.all_gather(t))
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        self.watched("broadcast", || self.engine.broadcast(t, root))
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        self.watched("reduce_scatter_sum", || self.engine.reduce_scatter_sum(t))
    }
    fn barrier(&self) -> Result<()> {
        self.watched("barrier", || self.engine.barrier())
    }
    fn phase(&self, what: &str) {
        if let Some(w) = &self.watchdog {
            w.phase(what);
        }
    }
}
