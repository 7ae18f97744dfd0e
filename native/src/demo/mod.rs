//! The no-argument demo of `dama-native`: a world with exact ground truth (`dama_world`), a
//! CLIP and an SFT model trained on it, preference pairs sampled from the SFT model, real CLIP
//! hardness, DAMA against DPO, CHAIR of their answers.

pub mod cache;
pub mod chair;
pub mod clip;
pub mod data;
pub mod eval;
pub mod preference;
pub mod sft;
pub mod web;
