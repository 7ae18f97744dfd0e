//! Parameter gradients handed over the moment they are final, inside the backward.
//!
//! Data-parallel training sums every rank's gradients. Done after `loss.backward()` returns,
//! the communication waits for the whole backward; done per layer while the backward goes on
//! (PyTorch DDP's bucketed all-reduce), it hides behind the earlier layers' backward. candle's
//! backward gives no hook for that, but the layers of [`crate::with_backward`] compute their
//! parameters' gradients themselves, so they can say when one is final:
//!
//! - while [`GradTracker::record`] runs (the forward), every such layer registers the
//!   parameters it needs a gradient for with the tracker: a parameter read by two layer nodes
//!   (a layer run twice in one forward) is registered twice;
//! - in the backward, each node hands its gradients to the tracker instead of candle's
//!   [`candle_core::backprop::GradStore`] (they are not in the store, so nothing is kept
//!   twice); the tracker sums a parameter's contributions and, once its last node has
//!   delivered, gives the parameter and its whole gradient to the hook installed with
//!   [`on_ready`] on this thread, or queues them for [`GradTracker::take_ready`] when none is.
//!
//! Parameters that only candle's own ops read (embeddings, a head) still land in the store.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use candle_core::{Result, Tensor, TensorId, bail};

/// What a hook receives: the parameter (as the layer read it) and its final gradient.
pub type ReadyHook<'a> = dyn FnMut(&Tensor, Tensor) -> Result<()> + 'a;

#[derive(Default)]
struct Entry {
    /// Layer nodes that registered the parameter and have not delivered yet.
    left: usize,
    /// When the parameter was first registered (the order of partial sums handed back).
    order: usize,
    param: Option<Tensor>,
    sum: Option<Tensor>,
}

#[derive(Default)]
pub(crate) struct State {
    entries: HashMap<TensorId, Entry>,
    /// Final gradients that found no hook installed, in the order they became final.
    ready: Vec<(Tensor, Tensor)>,
    /// Parameters registered so far (each entry's `order`).
    registered: usize,
}

/// Collects the gradients of the layers built while [`GradTracker::record`] runs.
#[derive(Clone, Default)]
pub struct GradTracker {
    state: Arc<Mutex<State>>,
}

thread_local! {
    /// The tracker layers register with during a forward (see [`GradTracker::record`]).
    static RECORDING: RefCell<Option<GradTracker>> = const { RefCell::new(None) };
    /// The hook of [`on_ready`], valid while its call runs (see the safety note there).
    static HOOK: Cell<Option<NonNull<ReadyHook<'static>>>> = const { Cell::new(None) };
}

impl GradTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` (a forward) with this tracker recording: the layers `f` builds deliver their
    /// parameter gradients here in their backward.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        let previous = RECORDING.with(|r| r.replace(Some(self.clone())));
        struct Restore(Option<GradTracker>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                RECORDING.with(|r| *r.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        f()
    }

    /// Gradients that became final with no hook installed, and the partial sums of
    /// parameters whose nodes did not all run their backward (nodes whose output never
    /// reached the loss); the tracker is empty afterwards.
    pub fn take_ready(&self) -> Vec<(Tensor, Tensor)> {
        let mut state = self.state.lock().expect("gradient tracker lock");
        let mut out = std::mem::take(&mut state.ready);
        let mut partial: Vec<(usize, Tensor, Tensor)> = state
            .entries
            .drain()
            .filter_map(|(_, e)| Some((e.order, e.param?, e.sum?)))
            .collect();
        // The map's order is arbitrary; callers see the forward's.
        partial.sort_by_key(|(order, _, _)| *order);
        out.extend(partial.into_iter().map(|(_, p, g)| (p, g)));
        out
    }

    /// Whether any registered parameter still waits for a node's gradient.
    pub fn is_pending(&self) -> bool {
        let state = self.state.lock().expect("gradient tracker lock");
        state.entries.values().any(|e| e.left > 0)
    }
}

/// The tracker of the forward running on this thread, if any.
pub(crate) fn recording() -> Option<Arc<Mutex<State>>> {
    RECORDING.with(|r| r.borrow().as_ref().map(|t| t.state.clone()))
}

/// Registers one layer node's parameters with `state`.
pub(crate) fn register(state: &Mutex<State>, params: &[&Tensor]) {
    let mut state = state.lock().expect("gradient tracker lock");
    for p in params {
        let order = state.registered;
        state.registered += 1;
        let e = state.entries.entry(p.id()).or_insert_with(|| Entry {
            order,
            ..Entry::default()
        });
        e.left += 1;
        e.param.get_or_insert_with(|| (*p).clone());
    }
}

/// One layer node's gradients for `params` (aligned); calls the hook for each parameter
/// whose last node this was.
pub(crate) fn deliver(state: &Mutex<State>, params: &[&Tensor], grads: Vec<Tensor>) -> Result<()> {
    let mut finished = Vec::new();
    {
        let mut state = state.lock().expect("gradient tracker lock");
        for (p, g) in params.iter().zip(grads) {
            let Some(e) = state.entries.get_mut(&p.id()) else {
                bail!("a tracked layer delivered a gradient for a parameter it never registered")
            };
            // Summed in the gradient's dtype, as candle's store sums a parameter's parts.
            e.sum = Some(match e.sum.take() {
                None => g,
                Some(s) => (s + g)?,
            });
            e.left = e.left.saturating_sub(1);
            if e.left == 0 {
                let e = state.entries.remove(&p.id()).expect("just found");
                finished.push((e.param.expect("registered"), e.sum.expect("just set")));
            }
        }
    }
    // The lock is released: the hook may take its time (communication).
    for (param, grad) in finished {
        match HOOK.take() {
            Some(mut hook) => {
                // SAFETY: see `on_ready`: the pointer is live while its call runs, and it was
                // taken out of the cell, so this is its only use until it is put back.
                let result = unsafe { hook.as_mut() }(&param, grad);
                HOOK.set(Some(hook));
                result?;
            }
            None => state
                .lock()
                .expect("gradient tracker lock")
                .ready
                .push((param, grad)),
        }
    }
    Ok(())
}

/// Runs `f` (a backward) with `hook` receiving each tracked parameter's final gradient, on
/// this thread, as soon as its last layer node has computed it. An error of the hook stops
/// the backward with that error.
pub fn on_ready<R>(hook: &mut ReadyHook<'_>, f: impl FnOnce() -> R) -> R {
    // SAFETY: the lifetime is erased only to store the pointer in a thread-local; the guard
    // below removes it before `hook`'s borrow ends (also when `f` unwinds), it is read only
    // on this thread inside `f`, and `deliver` takes it out of the cell while calling it, so
    // a reentrant call never aliases it.
    let ptr: NonNull<ReadyHook<'static>> =
        unsafe { std::mem::transmute::<NonNull<ReadyHook<'_>>, _>(NonNull::from(hook)) };
    let previous = HOOK.replace(Some(ptr));
    struct Restore(Option<NonNull<ReadyHook<'static>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOOK.set(self.0.take());
        }
    }
    let _restore = Restore(previous);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recompute;
    use crate::testing::{Rng, objective, rel_err};
    use candle_core::{DType, Var};

    /// `x · a · b` with a residual, the weights read tracked or detached.
    fn layer(a: &Var, b: &Var) -> Arc<crate::Recompute> {
        let (a, b) = (a.as_tensor().clone(), b.as_tensor().clone());
        Arc::new(move |x: &Tensor, track: bool| {
            let (a, b) = if track {
                (a.clone(), b.clone())
            } else {
                (a.detach(), b.detach())
            };
            x + x.matmul(&a)?.tanh()?.matmul(&b)?
        })
    }

    /// Layer 1 (weights a, b) runs twice, layer 2 (c, d) once after it; `e` is read by a
    /// plain op after the layers (like a head).
    fn forward(x: &Var, w: &[Var; 5]) -> Result<Tensor> {
        let [a, b, c, d, e] = w;
        let first = [a.as_tensor().clone(), b.as_tensor().clone()];
        let h = recompute(x.as_tensor(), &first, layer(a, b))?;
        let h = recompute(&h, &first, layer(a, b))?;
        let h = recompute(
            &h,
            &[c.as_tensor().clone(), d.as_tensor().clone()],
            layer(c, d),
        )?;
        h.matmul(e.as_tensor())
    }

    fn setup() -> (Var, [Var; 5], Tensor) {
        let mut rng = Rng::new(7);
        let x = rng.var(&[4, 6], 1.0, DType::F32).unwrap();
        let w = [
            rng.var(&[6, 5], 0.4, DType::F32).unwrap(),
            rng.var(&[5, 6], 0.4, DType::F32).unwrap(),
            rng.var(&[6, 5], 0.4, DType::F32).unwrap(),
            rng.var(&[5, 6], 0.4, DType::F32).unwrap(),
            rng.var(&[6, 3], 0.4, DType::F32).unwrap(),
        ];
        let c = rng.randn(&[4, 3], 1.0, DType::F32).unwrap();
        (x, w, c)
    }

    /// The gradients without a tracker: what candle's store holds.
    fn untracked_grads(x: &Var, w: &[Var; 5], c: &Tensor) -> candle_core::backprop::GradStore {
        objective(&forward(x, w).unwrap(), c)
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn each_layer_parameter_arrives_once_whole_and_last_layer_first() {
        let (x, w, c) = setup();
        let plain = untracked_grads(&x, &w, &c);

        let tracker = GradTracker::new();
        let y = tracker.record(|| forward(&x, &w)).unwrap();
        let loss = objective(&y, &c).unwrap();
        let mut got: Vec<(TensorId, Tensor)> = Vec::new();
        let mut hook = |p: &Tensor, g: Tensor| {
            got.push((p.id(), g));
            Ok(())
        };
        let store = on_ready(&mut hook, || loss.backward()).unwrap();

        let order: Vec<TensorId> = got.iter().map(|(id, _)| *id).collect();
        let ids: Vec<TensorId> = w.iter().map(|v| v.as_tensor().id()).collect();
        // layer 2's weights are final before layer 1's (its backward comes first); the head's
        // weight is not tracked
        assert_eq!(order.len(), 4, "a, b, c, d, each once");
        let pos = |i: usize| order.iter().position(|id| *id == ids[i]).unwrap();
        assert!(pos(2) < pos(0) && pos(3) < pos(0) && pos(2) < pos(1) && pos(3) < pos(1));
        for (i, var) in w.iter().enumerate().take(4) {
            let g = &got[pos(i)].1;
            // bit for bit what candle's store holds without the tracker
            assert_eq!(
                rel_err(g, plain.get(var.as_tensor()).unwrap()),
                0.0,
                "weight {i}"
            );
            assert!(
                store.get(var.as_tensor()).is_none(),
                "weight {i} kept twice"
            );
        }
        // what is not a layer's parameter is in the store as before
        let e = w[4].as_tensor();
        assert_eq!(rel_err(store.get(e).unwrap(), plain.get(e).unwrap()), 0.0);
        assert_eq!(
            rel_err(
                store.get(x.as_tensor()).unwrap(),
                plain.get(x.as_tensor()).unwrap()
            ),
            0.0
        );
        assert!(!tracker.is_pending());
        assert!(tracker.take_ready().is_empty());
    }

    #[test]
    fn without_a_hook_the_gradients_wait_in_the_tracker() {
        let (x, w, c) = setup();
        let plain = untracked_grads(&x, &w, &c);
        let tracker = GradTracker::new();
        let y = tracker.record(|| forward(&x, &w)).unwrap();
        objective(&y, &c).unwrap().backward().unwrap();
        let ready = tracker.take_ready();
        assert_eq!(ready.len(), 4);
        for (p, g) in &ready {
            assert_eq!(rel_err(g, plain.get(p).unwrap()), 0.0);
        }
    }

    #[test]
    fn a_hooks_error_stops_the_backward() {
        let (x, w, c) = setup();
        let tracker = GradTracker::new();
        let y = tracker.record(|| forward(&x, &w)).unwrap();
        let loss = objective(&y, &c).unwrap();
        let mut hook = |_: &Tensor, _: Tensor| Err(candle_core::Error::Msg("rank 1 died".into()));
        let err = on_ready(&mut hook, || loss.backward()).unwrap_err();
        assert!(err.to_string().contains("rank 1 died"), "{err}");
    }

    #[test]
    fn a_forward_outside_record_is_untracked() {
        let (x, w, c) = setup();
        let tracker = GradTracker::new();
        let y = forward(&x, &w).unwrap();
        let mut calls = 0;
        let mut hook = |_: &Tensor, _: Tensor| {
            calls += 1;
            Ok(())
        };
        let store = on_ready(&mut hook, || objective(&y, &c).unwrap().backward()).unwrap();
        assert_eq!(calls, 0);
        assert!(store.get(w[0].as_tensor()).is_some());
        assert!(tracker.take_ready().is_empty());
    }
}
