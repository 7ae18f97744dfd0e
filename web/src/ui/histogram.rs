//! The overview: histograms of δ and α_D with the quartile bands, and the dataset's numbers.

use leptos::prelude::*;

use super::state::AppState;
use crate::format::{count, fixed};
use crate::histogram::{Histogram, Quantity, histogram_with};

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD: f64 = 28.0;
/// Room above the plot for the count, so it never sits on the bars.
const TOP: f64 = 26.0;
const BINS: usize = 24;

#[component]
pub fn Overview() -> impl IntoView {
    let state = expect_context::<AppState>();
    let numbers = move || {
        state.stats.with(|st| {
            let st = st.as_ref()?;
            let b = st.bands?;
            Some(format!(
                "δ̄ = {} over {} kept scored pairs · Q1 {} · median {} · Q3 {} · edge cases {}",
                fixed(st.delta_mean, 4),
                count(st.scored),
                fixed(Some(b.q1), 3),
                fixed(Some(b.median), 3),
                fixed(Some(b.q3), 3),
                st.edge_counts.total()
            ))
        })
    };
    let chart = move |q: Quantity| {
        let h = Memo::new(move |_| {
            state.stats.with(|st| {
                let st = st.as_ref()?;
                state
                    .with_session(|s| histogram_with(s, st, q, BINS))
                    .flatten()
            })
        });
        move || h.get().map(|h| view! { <Chart h=h/> })
    };
    view! {
        <section id="overview" class="overview">
            <p id="overview-numbers" class="numbers">
                {move || numbers().unwrap_or_else(|| "Load a dataset and a model, then press Score.".into())}
            </p>
            <div class="charts">
                <figure>{chart(Quantity::Delta)}<figcaption>"δ = ΣP_w − ΣP_l (Eq. 5): bottom quarter hard, top quarter easy"</figcaption></figure>
                <figure>{chart(Quantity::AlphaD)}<figcaption>"α_D = σ(δ)/σ(δ̄) (Eq. 6): the factor on β"</figcaption></figure>
            </div>
            <p class="legend"><span class="sw hard"></span>"hard (δ < Q1)" <span class="sw normal"></span>"normal" <span class="sw easy"></span>"easy (δ > Q3)"</p>
        </section>
    }
}

/// One histogram as SVG.
#[component]
pub fn Chart(h: Histogram) -> impl IntoView {
    let x = |v: f64| PAD + h.position(v) * (W - 2.0 * PAD);
    let base = H - PAD;
    let top = TOP;
    let max = h.max_count().max(1) as f64;
    let bw = (W - 2.0 * PAD) / h.counts.len() as f64;
    let bars = h
        .counts
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let height = (base - top) * c as f64 / max;
            view! { <rect class="hbar" x=PAD + k as f64 * bw + 1.0 y=base - height width=(bw - 2.0).max(1.0) height=height><title>{c}</title></rect> }
        })
        .collect_view();
    let (x_lo, x_q1, x_q3, x_hi) = (x(h.lo), x(h.q1), x(h.q3), x(h.hi));
    let mean = x(h.mean);
    let label = h.quantity.label();
    view! {
        <svg class="hist" data-quantity=label data-n=h.n.to_string() viewBox=format!("0 0 {W} {H}") width=W height=H>
            <rect class="band hard" x=x_lo y=top width=(x_q1 - x_lo).max(0.0) height=base - top/>
            <rect class="band normal" x=x_q1 y=top width=(x_q3 - x_q1).max(0.0) height=base - top/>
            <rect class="band easy" x=x_q3 y=top width=(x_hi - x_q3).max(0.0) height=base - top/>
            {bars}
            <line class="mean" x1=mean x2=mean y1=top y2=base/>
            <line class="axis" x1=PAD x2=W - PAD y1=base y2=base/>
            <text x=PAD y=H - 8.0 class="tick">{fixed(Some(h.lo), 3)}</text>
            <text x=W - PAD y=H - 8.0 class="tick end">{fixed(Some(h.hi), 3)}</text>
            <text x=mean y=H - 8.0 class="tick mid">{format!("{label} {}", if label == "δ" { "δ̄" } else { "=1" })}</text>
            <text x=W - PAD y=16.0 class="tick end count">{format!("n = {}", count(h.n))}</text>
        </svg>
    }
}
