//! The no-argument demo of `dama-native`: synthetic data, a tiny random LLaVA, DAMA against DPO.

pub mod eval;
pub mod synthetic;
