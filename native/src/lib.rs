//! The library behind the `dama-native` binary: training machinery (optimizer, schedule) and
//! the commands. Kept as a library so integration tests can drive the same code.

pub mod commands;
pub mod demo;
pub mod device;
pub mod hub;
pub mod optim;
pub mod plots;
pub mod ref_cache;
pub mod schedule;
pub mod train;
