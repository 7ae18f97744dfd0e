//! README's "what fits where" table, from the memory planner: LLaVA-1.5-7B and -13B full
//! fine-tuning on 1, 4 and 8 GPUs of 80 GB, ZeRO stages 0, 1, 2, for three optimizer layouts.
//!
//! ```text
//! cargo run -p dama-train --example plan_table
//! ```
//!
//! Every run: bf16 weights, the paper's global batch of 16 pairs split over the GPUs (16, 4
//! or 2 per GPU, one micro-batch each: no gradient accumulation), conversations of 832 tokens
//! (576 image tokens, a 64-token prompt, a 192-token answer; shared prefix), activation
//! checkpointing on, on CUDA (the runtime's 1 GiB included).

use std::path::Path;

use dama_llava::LlavaConfig;
use dama_train::plan::{PlanSettings, Sequence, ZeroStage, plan};
use dama_train::{OptimMaster, OptimState, Precision};

const GPU: u64 = 80_000_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plan/configs");
    let layouts = [
        ("f32 master, f32 moments", OptimMaster::F32, OptimState::F32),
        ("bf16-sr, f32 moments", OptimMaster::Bf16Sr, OptimState::F32),
        (
            "bf16-sr, 8-bit moments",
            OptimMaster::Bf16Sr,
            OptimState::Dynamic8,
        ),
    ];
    println!(
        "| model | optimizer | ZeRO | 1 GPU (16 pairs) | 4 GPUs (4 pairs each) | 8 GPUs (2 pairs each) |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for name in ["llava-1.5-7b", "llava-1.5-13b"] {
        let cfg = LlavaConfig::from_file(&dir.join(format!("{name}.json")))?;
        for (what, master, state) in layouts {
            for zero in [ZeroStage::Zero0, ZeroStage::Zero1, ZeroStage::Zero2] {
                let mut cells = Vec::new();
                for world in [1usize, 4, 8] {
                    if world == 1 && zero != ZeroStage::Zero0 {
                        cells.push("–".to_string());
                        continue;
                    }
                    let pairs = 16 / world;
                    let settings = PlanSettings {
                        precision: Precision::Bf16,
                        master,
                        state,
                        lora: None,
                        batch_size: pairs,
                        micro_batch: pairs,
                        sequence: Sequence {
                            prefix: cfg.num_image_tokens() + 64,
                            answer: 192,
                        },
                        shared_prefix: true,
                        recompute_activations: true,
                        world_size: world,
                        zero,
                        reference_resident: false,
                        cuda: true,
                    };
                    let p = plan(&cfg, &settings)?;
                    let mark = if p.fits(GPU) { "fits" } else { "**no**" };
                    cells.push(format!("{:.1} GB {mark}", p.peak as f64 / 1e9));
                }
                println!("| {name} | {what} | {zero} | {} |", cells.join(" | "));
            }
        }
    }
    Ok(())
}
