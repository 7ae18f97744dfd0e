//! Opt-in timing of named spans, with a device synchronisation around each: where a GPU
//! step's time goes, on a machine without a profiler. Off by default, when a span costs one
//! atomic load; on, it serialises the host and the device, so totals run a little above an
//! unprofiled step's.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{Device, Result};

static ON: AtomicBool = AtomicBool::new(false);

/// name → (first-seen rank, calls, total seconds)
static SPANS: Mutex<BTreeMap<&'static str, (usize, usize, f64)>> = Mutex::new(BTreeMap::new());

/// Turns span timing on or off (process-wide).
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Runs `f`; when timing is on, adds its wall time, device work included, to `name`.
pub fn span<T>(dev: &Device, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    if !enabled() {
        return f();
    }
    dev.synchronize()?;
    let t = Instant::now();
    let out = f()?;
    dev.synchronize()?;
    let s = t.elapsed().as_secs_f64();
    let mut spans = SPANS.lock().expect("profile lock");
    let rank = spans.len();
    let e = spans.entry(name).or_insert((rank, 0, 0.0));
    e.1 += 1;
    e.2 += s;
    Ok(out)
}

/// One span's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub name: &'static str,
    pub calls: usize,
    pub ms: f64,
}

/// The totals so far, in the order the spans first ran; clears them.
pub fn take() -> Vec<Span> {
    let spans = std::mem::take(&mut *SPANS.lock().expect("profile lock"));
    let mut out: Vec<(usize, Span)> = spans
        .into_iter()
        .map(|(name, (rank, calls, s))| {
            (
                rank,
                Span {
                    name,
                    calls,
                    ms: s * 1e3,
                },
            )
        })
        .collect();
    out.sort_by_key(|(rank, _)| *rank);
    out.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_count_calls_in_first_seen_order_only_when_enabled() {
        let dev = Device::Cpu;
        span(&dev, "off", || Ok(())).unwrap();
        set_enabled(true);
        for _ in 0..3 {
            span(&dev, "b", || Ok(())).unwrap();
            span(&dev, "a", || {
                std::thread::sleep(std::time::Duration::from_millis(2));
                Ok(())
            })
            .unwrap();
        }
        set_enabled(false);
        let got = take();
        assert_eq!(
            got.iter().map(|s| (s.name, s.calls)).collect::<Vec<_>>(),
            [("b", 3), ("a", 3)]
        );
        assert!(got[1].ms >= 6.0);
        assert!(take().is_empty());
    }
}
