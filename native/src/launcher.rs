//! `train --nproc N`: starts N local ranks of this very command and waits for them.
//!
//! On the CPU the ranks need an MPI world, so they are started through `mpirun` (OpenMPI or
//! MPICH, found on PATH), with OpenMPI told to allow root, oversubscription and no core
//! binding (set through its environment variables, so the command line stays the same for
//! MPICH). On CUDA the ranks use NCCL and are started by this process itself, one per GPU,
//! with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`). Either way each rank finds `DAMA_NPROC_CHILD=1` in its environment (it is
//! one of the ranks, not a launcher) and the same arguments.
//!
//! The own launcher watches its ranks as torchrun does: the first that fails is named with
//! its status or signal, the others get a grace period to stop by themselves (their watchdog
//! names the failed rank too) and are then killed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

/// Set in every rank `--nproc` starts.
pub const CHILD_VAR: &str = "DAMA_NPROC_CHILD";

/// Whether this process is one of the ranks `--nproc` started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_VAR).is_some_and(|v| v == "1")
}

/// How `--nproc` starts the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LauncherKind {
    /// mpirun on the CPU, this process on CUDA.
    Auto,
    /// `mpirun -n N` (ranks use MPI).
    Mpirun,
    /// N child processes with torchrun's variables (ranks use NCCL).
    Spawn,
}

/// The MPI launcher on PATH, if any.
pub fn find_mpirun() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["mpirun", "mpiexec"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs `args` (this process's own arguments) as `n` ranks; returns the job's exit status.
pub fn run(n: usize, kind: LauncherKind, cuda: bool, args: &[OsString]) -> Result<i32> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let kind = match kind {
        LauncherKind::Auto if cuda => LauncherKind::Spawn,
        LauncherKind::Auto => LauncherKind::Mpirun,
        k => k,
    };
    match kind {
        LauncherKind::Mpirun => {
            let Some(mpirun) = find_mpirun() else {
                bail!(
                    "--nproc {n} on the CPU starts the ranks with mpirun, which is not on PATH: install OpenMPI or MPICH (apt-get install openmpi-bin), or launch the ranks yourself"
                );
            };
            eprintln!("starting {n} ranks: {} -n {n} …", mpirun.display());
            let status = Command::new(&mpirun)
                .arg("-n")
                .arg(n.to_string())
                .arg(&exe)
                .args(args)
                .env(CHILD_VAR, "1")
                // OpenMPI: as root, more ranks than cores, no pinning; MPICH ignores these.
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
                .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
                .env("OMPI_MCA_hwloc_base_binding_policy", "none")
                .env("OMPI_MCA_mca_base_env_list", CHILD_VAR)
                .status()
                .with_context(|| format!("running {}", mpirun.display()))?;
            if !status.success() {
                eprintln!("{} ended with {}", mpirun.display(), describe(status));
            }
            Ok(status.code().unwrap_or(1))
        }
        _ => spawn(n, &exe, args),
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal 9 (SIGKILL: killed, or out of memory)".into(),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

/// A free TCP port on this machine for rank 0 to listen on.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn spawn(n: usize, exe: &PathBuf, args: &[OsString]) -> Result<i32> {
    let port = free_port()?;
    eprintln!("starting {n} ranks (rank 0 listens on 127.0.0.1:{port})");
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    for r in 0..n {
        let child = Command::new(exe)
            .args(args)
            .env(CHILD_VAR, "1")
            .env("RANK", r.to_string())
            .env("LOCAL_RANK", r.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .with_context(|| format!("starting rank {r}"))?;
        children.push(Some(child));
    }
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        for (r, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait()? {
                let pid = child.id();
                *slot = None;
                if !status.success() && first_failure.is_none() {
                    eprintln!(
                        "rank {r} (pid {pid}) ended with {}: stopping the other ranks",
                        describe(status)
                    );
                    first_failure = Some((r, status));
                    deadline = Some(Instant::now() + Duration::from_secs(10));
                }
            }
        }
        if children.iter().all(Option::is_none) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            for (r, slot) in children.iter_mut().enumerate() {
                if let Some(child) = slot {
                    eprintln!("rank {r} (pid {}) did not stop: killing it", child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    *slot = None;
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(match first_failure {
        None => 0,
        Some((_, status)) => status.code().filter(|&c| c != 0).unwrap_or(1),
    })
}
