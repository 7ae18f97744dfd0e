//! The no-argument demo of `dama-native`: synthetic data (`dama_world`), a tiny random LLaVA,
//! DAMA against DPO.

pub mod eval;
