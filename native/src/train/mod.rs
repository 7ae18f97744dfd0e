//! DAMA training: data order, the global step, metrics, checkpoints.

pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod order;
pub mod reference;
pub mod report;
pub mod run;
pub mod step;
