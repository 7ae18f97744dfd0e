//! One module per subcommand: its arguments and its `run`.

pub mod demo;
pub mod eval;
pub mod generate;
pub mod init_tiny;
pub mod plan;
pub mod ref_logps;
pub mod score;
pub mod sft;
pub mod train;
