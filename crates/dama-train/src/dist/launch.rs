//! Who started this process, and as which rank: read from the environment the way each
//! launcher sets it, then checked.
//!
//! - torchrun (and `dama-native train --nproc` when it starts the ranks itself): `RANK`,
//!   `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`;
//! - OpenMPI's `mpirun`: `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
//!   `OMPI_COMM_WORLD_LOCAL_RANK`; MPICH's and Intel MPI's hydra: `PMI_RANK`, `PMI_SIZE`;
//! - SLURM's `srun`: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`.
//!
//! Launchers nest: torchrun inside a SLURM job starts several processes per SLURM task, so
//! its `RANK` differs from `SLURM_PROCID` and rightly wins (the innermost launcher is the one
//! that started this process: torchrun, then MPI, then SLURM). Two launchers of the same
//! processes must agree: `mpirun` under SLURM sets both OpenMPI's and SLURM's variables, and
//! different ranks there mean a broken environment, which is refused naming both variables.

use std::fmt;

use super::{DistError, Result};

/// The launcher whose variables gave the rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process, rank 0 of 1.
    None,
    /// `RANK` / `WORLD_SIZE` (torchrun, or dama's own `--nproc` launcher).
    Torchrun,
    /// `OMPI_COMM_WORLD_*` (OpenMPI's mpirun).
    OpenMpi,
    /// `PMI_RANK` / `PMI_SIZE` (MPICH's or Intel MPI's hydra).
    Pmi,
    /// `SLURM_PROCID` / `SLURM_NTASKS` (srun).
    Slurm,
}

impl Launcher {
    /// Started by an MPI launcher, whose processes can join an MPI world.
    pub fn is_mpi(self) -> bool {
        matches!(self, Launcher::OpenMpi | Launcher::Pmi | Launcher::Slurm)
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Launcher::None => "no launcher",
            Launcher::Torchrun => "torchrun-style RANK/WORLD_SIZE",
            Launcher::OpenMpi => "OpenMPI's mpirun",
            Launcher::Pmi => "an MPI launcher (PMI_RANK)",
            Launcher::Slurm => "SLURM's srun",
        })
    }
}

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine (picks the GPU).
    pub local_rank: usize,
    /// `MASTER_ADDR` and `MASTER_PORT`, where rank 0 listens for the others (required by the
    /// NCCL engine; the MPI engine finds rank 0 through MPI itself).
    pub master: Option<(String, u16)>,
}

impl Launch {
    /// One process, no launcher.
    pub fn single() -> Self {
        Self {
            launcher: Launcher::None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master: None,
        }
    }

    /// Reads the process's environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `var` (the environment, or a test's table).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let sources = [
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", Some("LOCAL_RANK")),
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                Some("OMPI_COMM_WORLD_LOCAL_RANK"),
            ),
            (Launcher::Pmi, "PMI_RANK", "PMI_SIZE", None),
            (
                Launcher::Slurm,
                "SLURM_PROCID",
                "SLURM_NTASKS",
                Some("SLURM_LOCALID"),
            ),
        ];
        let mut found: Vec<Found> = Vec::new();
        for (launcher, rank_var, size_var, local_var) in sources {
            let (rank, size) = (var(rank_var), var(size_var));
            let (rank, size) = match (rank, size) {
                (None, None) => continue,
                (Some(_), None) => return Err(missing(size_var, rank_var, launcher)),
                (None, Some(_)) => return Err(missing(rank_var, size_var, launcher)),
                (Some(r), Some(s)) => (number(rank_var, &r)?, number(size_var, &s)?),
            };
            if size == 0 {
                return Err(DistError::Launch(format!(
                    "{size_var}=0: a job has at least one rank"
                )));
            }
            if rank >= size {
                return Err(DistError::Launch(format!(
                    "{rank_var}={rank} is not below {size_var}={size}: ranks are 0..{size}"
                )));
            }
            let local = match local_var.and_then(|v| var(v).map(|x| (v, x))) {
                Some((v, x)) => Some(number(v, &x)?),
                None => None,
            };
            if let (Some(l), Some(v)) = (local, local_var)
                && l > rank
            {
                return Err(DistError::Launch(format!(
                    "{v}={l} is above {rank_var}={rank}: a local rank counts the ranks of one machine"
                )));
            }
            found.push(Found {
                launcher,
                rank_var,
                rank,
                size_var,
                size,
                local,
            });
        }
        // Launchers of the same processes must agree; torchrun starts processes of its own.
        let mpi_like: Vec<_> = found.iter().filter(|f| f.launcher.is_mpi()).collect();
        for pair in mpi_like.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.rank != b.rank || a.size != b.size {
                return Err(DistError::Launch(format!(
                    "{}={} {}={} ({}) but {}={} {}={} ({}): two launchers describe this process differently",
                    a.rank_var,
                    a.rank,
                    a.size_var,
                    a.size,
                    a.launcher,
                    b.rank_var,
                    b.rank,
                    b.size_var,
                    b.size,
                    b.launcher
                )));
            }
        }
        let master = master(&var)?;
        // MASTER_ADDR without a rank is harmless (a shell that exports it for every job).
        let Some(f) = found.first() else {
            return Ok(Self::single());
        };
        Ok(Self {
            launcher: f.launcher,
            rank: f.rank,
            world_size: f.size,
            local_rank: f.local.unwrap_or(f.rank),
            master,
        })
    }

    /// Checks `--nproc` against the environment: a process that a launcher already started
    /// must not start ranks of its own (unless it is one of the ranks `--nproc` started, which
    /// `child_of_nproc` says, and then the counts must agree).
    pub fn check_nproc(&self, nproc: Option<usize>, child_of_nproc: bool) -> Result<()> {
        match nproc {
            Some(0) => Err(DistError::Launch(
                "--nproc 0: a job has at least one rank".into(),
            )),
            Some(n) if child_of_nproc && n != self.world_size => Err(DistError::Launch(format!(
                "--nproc {n} but this rank was started as one of {} ({})",
                self.world_size, self.launcher
            ))),
            Some(n) if !child_of_nproc && self.launcher != Launcher::None => {
                Err(DistError::Launch(format!(
                    "--nproc {n} in a process that {} already started as rank {} of {}: use one launcher (drop --nproc, or start one process)",
                    self.launcher, self.rank, self.world_size
                )))
            }
            _ => Ok(()),
        }
    }
}

/// One launcher's variables, as read.
struct Found {
    launcher: Launcher,
    rank_var: &'static str,
    rank: usize,
    size_var: &'static str,
    size: usize,
    local: Option<usize>,
}

fn missing(absent: &str, present: &str, launcher: Launcher) -> DistError {
    DistError::Launch(format!(
        "{present} is set but {absent} is not: {launcher} sets both"
    ))
}

fn number(name: &str, value: &str) -> Result<usize> {
    value.trim().parse().map_err(|_| {
        DistError::Launch(format!(
            "{name}={value:?} is not a non-negative whole number"
        ))
    })
}

fn master(var: &impl Fn(&str) -> Option<String>) -> Result<Option<(String, u16)>> {
    match (var("MASTER_ADDR"), var("MASTER_PORT")) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(missing("MASTER_PORT", "MASTER_ADDR", Launcher::Torchrun)),
        (None, Some(_)) => Err(missing("MASTER_ADDR", "MASTER_PORT", Launcher::Torchrun)),
        (Some(addr), Some(port)) => {
            let p: u16 = port.trim().parse().map_err(|_| {
                DistError::Launch(format!("MASTER_PORT={port:?} is not a port (1..65535)"))
            })?;
            if p == 0 {
                return Err(DistError::Launch(
                    "MASTER_PORT=0: rank 0 needs a fixed port the others can reach".into(),
                ));
            }
            if addr.trim().is_empty() {
                return Err(DistError::Launch("MASTER_ADDR is empty".into()));
            }
            Ok(Some((addr.trim().to_owned(), p)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Launch> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    fn err(vars: &[(&str, &str)]) -> String {
        parse(vars).unwrap_err().to_string()
    }

    #[test]
    fn no_launcher_is_one_rank() {
        assert_eq!(parse(&[]).unwrap(), Launch::single());
        assert_eq!(
            parse(&[("MASTER_ADDR", "h"), ("MASTER_PORT", "1")])
                .unwrap()
                .world_size,
            1
        );
    }

    #[test]
    fn each_launcher_is_read() {
        let t = parse(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(
            t,
            Launch {
                launcher: Launcher::Torchrun,
                rank: 3,
                world_size: 8,
                local_rank: 1,
                master: Some(("node0".into(), 29500)),
            }
        );
        let o = parse(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ])
        .unwrap();
        assert_eq!(
            (o.launcher, o.rank, o.world_size),
            (Launcher::OpenMpi, 1, 2)
        );
        let s = parse(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ])
        .unwrap();
        assert_eq!(
            (s.launcher, s.rank, s.world_size, s.local_rank),
            (Launcher::Slurm, 5, 8, 1)
        );
        let p = parse(&[("PMI_RANK", "0"), ("PMI_SIZE", "3")]).unwrap();
        assert_eq!((p.launcher, p.local_rank), (Launcher::Pmi, 0));
    }

    #[test]
    fn nested_launchers_take_the_innermost_and_mpi_under_slurm_must_agree() {
        // torchrun on each node of a 2-task SLURM job
        let t = parse(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("RANK", "6"),
            ("WORLD_SIZE", "8"),
        ])
        .unwrap();
        assert_eq!((t.launcher, t.rank), (Launcher::Torchrun, 6));
        // mpirun inside an allocation: the same numbers twice
        let m = parse(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ])
        .unwrap();
        assert_eq!(m.launcher, Launcher::OpenMpi);
        let e = err(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ]);
        assert!(
            e.contains("OMPI_COMM_WORLD_RANK=1") && e.contains("SLURM_PROCID=0"),
            "{e}"
        );
    }

    #[test]
    fn broken_environments_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[("RANK", "0")], "WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "2")], "RANK is not"),
            (&[("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (
                &[("RANK", "2"), ("WORLD_SIZE", "2")],
                "RANK=2 is not below WORLD_SIZE=2",
            ),
            (&[("RANK", "0"), ("WORLD_SIZE", "0")], "WORLD_SIZE=0"),
            (
                &[("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "3")],
                "LOCAL_RANK=3 is above RANK=1",
            ),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
                "MASTER_PORT is not",
            ),
            (
                &[("MASTER_ADDR", "h"), ("MASTER_PORT", "http")],
                "MASTER_PORT=\"http\"",
            ),
        ];
        for (vars, want) in cases {
            let e = err(vars);
            assert!(e.contains(want), "{vars:?}: {e}");
        }
    }

    #[test]
    fn nproc_conflicts_with_another_launcher() {
        let mpi = parse(&[("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2")]).unwrap();
        let e = mpi.check_nproc(Some(2), false).unwrap_err().to_string();
        assert!(e.contains("--nproc 2") && e.contains("mpirun"), "{e}");
        mpi.check_nproc(Some(2), true).unwrap();
        let e = mpi.check_nproc(Some(3), true).unwrap_err().to_string();
        assert!(e.contains("--nproc 3") && e.contains("one of 2"), "{e}");
        Launch::single().check_nproc(Some(4), false).unwrap();
        assert!(Launch::single().check_nproc(Some(0), false).is_err());
    }
}
