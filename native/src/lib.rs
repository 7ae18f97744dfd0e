//! The library behind the `dama-native` binary: its flags, progress display, plots and
//! commands; the training itself is `dama_train`'s. Kept as a library so integration tests can
//! drive the same code.

pub mod answers_file;
pub mod args;
pub mod commands;
pub mod demo;
pub mod device;
pub mod generator;
pub mod hub;
pub mod launcher;
pub mod plots;
pub mod progress;
pub mod questions;
pub mod report;
