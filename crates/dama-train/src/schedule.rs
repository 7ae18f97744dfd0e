//! The learning-rate schedule of the paper's runs: linear warm-up, then cosine decay to zero,
//! exactly as transformers' `get_cosine_schedule_with_warmup` with `warmup_ratio` (so that a run
//! here and a run of the authors' HF Trainer see the same learning rate at every step,
//! including lr = 0 on the very first step when there is a warm-up).

/// Cosine schedule with linear warm-up over `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineSchedule {
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl CosineSchedule {
    /// Warm-up of ceil(ratio · total) steps, as the HF Trainer computes it.
    pub fn with_warmup_ratio(base_lr: f64, warmup_ratio: f64, total_steps: u64) -> Self {
        let warmup_steps = (warmup_ratio * total_steps as f64).ceil() as u64;
        Self {
            base_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The multiplier of `base_lr` before optimizer step `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let progress = (step - self.warmup_steps) as f64
            / (self.total_steps.saturating_sub(self.warmup_steps)).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_transformers_cosine_with_warmup() {
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/adamw.json")).unwrap();
        let s = CosineSchedule::with_warmup_ratio(1.0, 0.1, 100);
        assert_eq!(s.warmup_steps, 10);
        for (step, want) in golden["schedule_100_10pct"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let want = want.as_f64().unwrap();
            assert!(
                (s.factor(step as u64) - want).abs() < 1e-12,
                "step {step}: {} vs {want}",
                s.factor(step as u64)
            );
        }
    }

    #[test]
    fn no_warmup_starts_at_base_lr() {
        let s = CosineSchedule::with_warmup_ratio(5e-7, 0.0, 10);
        assert_eq!(s.lr(0), 5e-7);
        assert!(s.lr(9) < s.lr(1));
    }
}
