//! Property tests of the DAMA maths: invariants docs/SPEC.md implies, on random batches.

use dama_core::{
    Combine, DamaConfig, DamaState, Estimator, Filter, Mode, Preset, Sampling, StepInput,
    StepOutcome, alpha_d, default_keep, delta, masked_dpo_loss, step,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Batch {
    pc: Vec<f64>,
    pr: Vec<f64>,
    rc: Vec<f64>,
    rr: Vec<f64>,
    ad: Vec<f64>,
}

/// Log-prob sums of N pairs (answers of tens to hundreds of tokens) and α_D in a plausible range.
fn batch(n: std::ops::Range<usize>) -> impl Strategy<Value = Batch> {
    n.prop_flat_map(|n| {
        let lp = || prop::collection::vec(-400.0f64..-1.0, n);
        (
            lp(),
            lp(),
            lp(),
            lp(),
            prop::collection::vec(0.3f64..2.5, n),
        )
            .prop_map(|(pc, pr, rc, rr, ad)| Batch { pc, pr, rc, rr, ad })
    })
}

fn run(cfg: &DamaConfig<f64>, ema: f64, seed: u64, b: &Batch) -> StepOutcome<f64> {
    let mut state = DamaState::new(seed);
    state.ema_gap = ema;
    let input = StepInput {
        policy_chosen: &b.pc,
        policy_rejected: &b.pr,
        ref_chosen: &b.rc,
        ref_rejected: &b.rr,
        alpha_d: Some(&b.ad),
        forced_mask: None,
    };
    step(cfg, &mut state, &input).unwrap()
}

fn any_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Dpo),
        Just(Mode::D2po),
        Just(Mode::Mdpo),
        Just(Mode::Dama)
    ]
}
fn any_preset() -> impl Strategy<Value = Preset> {
    prop_oneof![Just(Preset::Official), Just(Preset::Paper)]
}
fn any_filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        Just(Filter::None),
        Just(Filter::Bottom),
        Just(Filter::Top),
        Just(Filter::Both)
    ]
}
fn any_combine() -> impl Strategy<Value = Combine<f64>> {
    prop_oneof![
        Just(Combine::Product),
        (0.0f64..=1.0).prop_map(Combine::WeightedSum)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn delta_lies_in_minus_one_one(
        w in prop::collection::vec(-200.0f64..200.0, 0..8),
        l in prop::collection::vec(-200.0f64..200.0, 0..8),
    ) {
        let d = delta(&w, &l, Estimator::Probs).unwrap().delta;
        prop_assert!((-1.0..=1.0).contains(&d), "{d}");
        let d32 = delta(&w.iter().map(|&x| x as f32).collect::<Vec<_>>(), &l.iter().map(|&x| x as f32).collect::<Vec<_>>(), Estimator::Probs).unwrap().delta;
        prop_assert!((-1.0..=1.0).contains(&d32), "{d32}");
    }

    #[test]
    fn alpha_d_is_one_at_the_mean_and_monotone(dbar in -1.0f64..1.0, d in -1.0f64..1.0) {
        prop_assert!((alpha_d(dbar, dbar) - 1.0).abs() < 1e-15);
        prop_assert_eq!(alpha_d(d, dbar) > 1.0, d > dbar);
    }

    #[test]
    fn mode_dpo_is_plain_dpo(b in batch(1..40), beta in 0.0001f64..2.0, ema in -5.0f64..5.0,
                             preset in any_preset(), filter in any_filter(), seed in any::<u64>()) {
        let cfg = DamaConfig { mode: Mode::Dpo, preset, filter, beta, ..DamaConfig::default() };
        let out = run(&cfg, ema, seed, &b);
        let n = b.pc.len() as f64;
        let mut loss = 0.0;
        for i in 0..b.pc.len() {
            let h = (b.pc[i] - b.rc[i]) - (b.pr[i] - b.rr[i]);
            let x = beta * h;
            // −log σ(x) = softplus(−x), written on the side that does not overflow.
            loss += if x > 0.0 { (-x).exp().ln_1p() } else { -x + x.exp().ln_1p() };
            let grad = -beta / (1.0 + x.exp()) / n;
            prop_assert!((out.grad_margins[i] - grad).abs() <= 1e-12 * grad.abs() + 1e-300);
            prop_assert_eq!(out.beta[i], beta);
        }
        prop_assert!((out.loss - loss / n).abs() <= 1e-9 * (loss / n) + 1e-12, "{} vs {}", out.loss, loss / n);
        prop_assert!(out.keep_mask.iter().all(|&m| m));
        prop_assert_eq!(out.stats.clamped, 0);
    }

    #[test]
    fn kept_count_is_k(b in batch(1..64), k_frac in 0.0f64..1.0, ema in -3.0f64..3.0,
                       preset in any_preset(), filter in prop_oneof![Just(Filter::Bottom), Just(Filter::Top), Just(Filter::Both)],
                       seed in any::<u64>()) {
        let n = b.pc.len();
        let keep = 1 + ((n - 1) as f64 * k_frac) as usize;
        let cfg = DamaConfig { mode: Mode::Dama, preset, filter, keep: Some(keep), ..DamaConfig::default() };
        let out = run(&cfg, ema, seed, &b);
        if out.sampling == Sampling::UniformWithReplacement {
            prop_assert_eq!(out.drawn.len(), keep);
            prop_assert!(out.stats.kept <= keep);
        } else {
            prop_assert_eq!(out.stats.kept, keep);
            prop_assert_eq!(out.drawn.len(), keep);
        }
        let default = run(&DamaConfig { keep: None, ..cfg }, ema, seed, &b);
        if default.sampling != Sampling::UniformWithReplacement {
            prop_assert_eq!(default.stats.kept, default_keep(n));
        }
    }

    #[test]
    fn loss_is_non_negative_and_finite(b in batch(1..32), mode in any_mode(), preset in any_preset(),
                                       filter in any_filter(), combine in any_combine(),
                                       beta in 0.0001f64..1.0, ema in -3.0f64..3.0, seed in any::<u64>()) {
        let cfg = DamaConfig { mode, preset, filter, combine, beta, ..DamaConfig::default() };
        let out = run(&cfg, ema, seed, &b);
        prop_assert!(out.loss >= 0.0 && out.loss.is_finite());
        prop_assert!(out.grad_margins.iter().all(|g| *g <= 0.0 && g.is_finite()));
        let floor = if mode == Mode::Dpo { beta } else { 1e-3 };
        prop_assert!(out.beta.iter().all(|&x| x >= floor));
    }

    #[test]
    fn grad_margins_is_the_derivative_of_the_loss(b in batch(1..12), mode in any_mode(), preset in any_preset(),
                                                  filter in any_filter(), ema in -2.0f64..2.0, seed in any::<u64>()) {
        // β and M carry no gradient: differentiate the loss with them held at the step's values.
        let cfg = DamaConfig { mode, preset, filter, beta: 0.05, ..DamaConfig::default() };
        let out = run(&cfg, ema, seed, &b);
        let eps = 1e-4;
        for i in 0..b.pc.len() {
            let mut h = out.margins.clone();
            h[i] += eps;
            let up = masked_dpo_loss(&h, &out.beta, &out.keep_mask).0;
            h[i] -= 2.0 * eps;
            let down = masked_dpo_loss(&h, &out.beta, &out.keep_mask).0;
            let fd = (up - down) / (2.0 * eps);
            prop_assert!((fd - out.grad_margins[i]).abs() < 1e-8, "pair {}: {} vs {}", i, fd, out.grad_margins[i]);
        }
    }

    #[test]
    fn d2po_gradient_matches_finite_differences_through_the_whole_step(b in batch(1..10), ema in -2.0f64..2.0) {
        // In d2po β_D depends only on α_D and nothing is masked, so the step's loss is a
        // function of the policy log-probs alone and can be differentiated end to end.
        let cfg = DamaConfig { mode: Mode::D2po, beta: 0.1, ..DamaConfig::default() };
        let out = run(&cfg, ema, 0, &b);
        let eps = 1e-5;
        for i in 0..b.pc.len() {
            let mut plus = b.clone();
            plus.pc[i] += eps;
            let mut minus = b.clone();
            minus.pc[i] -= eps;
            let fd = (run(&cfg, ema, 0, &plus).loss - run(&cfg, ema, 0, &minus).loss) / (2.0 * eps);
            prop_assert!((fd - out.grad_margins[i]).abs() < 1e-8, "{} vs {}", fd, out.grad_margins[i]);
        }
    }

    #[test]
    fn same_seed_same_step_and_state(b in batch(2..40), seed in any::<u64>(), ema in -1.0f64..1.0) {
        let cfg = DamaConfig::<f64>::default();
        let mut s1 = DamaState::new(seed);
        let mut s2 = DamaState::new(seed);
        s1.ema_gap = ema;
        s2.ema_gap = ema;
        let input = StepInput { policy_chosen: &b.pc, policy_rejected: &b.pr, ref_chosen: &b.rc, ref_rejected: &b.rr, alpha_d: Some(&b.ad), forced_mask: None };
        for _ in 0..3 {
            prop_assert_eq!(step(&cfg, &mut s1, &input).unwrap(), step(&cfg, &mut s2, &input).unwrap());
        }
        prop_assert_eq!(&s1, &s2);
        prop_assert_eq!(s1.steps, 3);
    }

    #[test]
    fn stable_in_f32_at_extreme_margins(signs in prop::collection::vec(prop_oneof![Just(-1.0f32), Just(1.0f32)], 1..32),
                                        mode in any_mode(), preset in any_preset(), filter in any_filter(),
                                        ema in prop_oneof![Just(0.0f32), Just(1e3f32), Just(-1.0f32)]) {
        // h_i = ±1e4: policy moved 1e4 nats on one answer.
        let n = signs.len();
        let pc: Vec<f32> = signs.iter().map(|s| -100.0 + s * 1e4).collect();
        let minus100 = vec![-100.0f32; n];
        let ad = vec![1.0f32; n];
        let cfg = DamaConfig::<f32> { mode, preset, filter, ..DamaConfig::default() };
        let mut state = DamaState::<f32>::new(1);
        state.ema_gap = ema;
        let input = StepInput { policy_chosen: &pc, policy_rejected: &minus100, ref_chosen: &minus100, ref_rejected: &minus100, alpha_d: Some(&ad), forced_mask: None };
        let out = step(&cfg, &mut state, &input).unwrap();
        prop_assert!(out.loss.is_finite() && out.loss >= 0.0);
        prop_assert!(out.grad_margins.iter().all(|g| g.is_finite()));
        prop_assert!(out.beta.iter().all(|b| b.is_finite()));
        prop_assert!(state.ema_gap.is_finite());
    }
}

#[test]
fn a_failed_step_leaves_the_state_untouched() {
    let cfg = DamaConfig::<f64> {
        keep: Some(5),
        ..DamaConfig::default()
    };
    let mut state = DamaState::new(3);
    let before = state.clone();
    let x = [-1.0, -2.0];
    let input = StepInput {
        policy_chosen: &x,
        policy_rejected: &x,
        ref_chosen: &x,
        ref_rejected: &x,
        alpha_d: Some(&[1.0, 1.0]),
        forced_mask: None,
    };
    assert!(step(&cfg, &mut state, &input).is_err());
    assert_eq!(state, before);
}
