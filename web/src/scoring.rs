//! Scoring orchestration on the page's side: which pairs go to the worker next, how far a run
//! is, how fast it goes, cancel and resume. The worker scores one batch at a time and the page
//! sends the next only when a result is back, so a cancel stops within one batch and a resume
//! continues with the pairs that still have no scores. Timestamps come from the caller
//! (`performance.now()` in the browser), so this is plain, testable logic.

use std::collections::VecDeque;

use dama_data::PreferencePair;

use crate::protocol::ScoreItem;
use crate::session::subs_key;

/// What the worker needs to score `pair`; `None` without sub-sentences or image bytes.
pub fn item(pair: &PreferencePair) -> Option<ScoreItem> {
    let subs = pair.sub_sentences.as_ref()?;
    Some(ScoreItem {
        id: pair.id.clone(),
        subs_key: subs_key(subs),
        image: pair.image.bytes.clone()?,
        chosen: subs.chosen.clone(),
        rejected: subs.rejected.clone(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunState {
    #[default]
    Idle,
    Running,
    Cancelled,
    Finished,
}

/// How a run stands, for the progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    pub state: RunState,
    pub done: usize,
    pub total: usize,
    /// Pairs per second over the time the run was actually running (cancelled time excluded).
    pub pairs_per_s: Option<f64>,
}

impl Progress {
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.done as f64 / self.total as f64
        }
    }
}

/// The queue of a scoring run, plus urgent single pairs (a person's edit, scored at once, in
/// or outside a run).
#[derive(Debug, Clone)]
pub struct Scheduler {
    batch_size: usize,
    pending: VecDeque<String>,
    urgent: VecDeque<String>,
    /// Batches sent and not answered yet, at most `slots` (one per worker).
    in_flight: Vec<(u64, Vec<String>)>,
    slots: usize,
    next_batch: u64,
    state: RunState,
    done: usize,
    total: usize,
    /// Milliseconds spent running before the current stretch, and when it began.
    run_ms: f64,
    since: Option<f64>,
    done_timed: usize,
}

impl Scheduler {
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            pending: VecDeque::new(),
            urgent: VecDeque::new(),
            in_flight: Vec::new(),
            slots: 1,
            next_batch: 1,
            state: RunState::Idle,
            done: 0,
            total: 0,
            run_ms: 0.0,
            since: None,
            done_timed: 0,
        }
    }

    /// Lets `slots` batches be in flight at once: one per scoring worker.
    pub fn with_slots(mut self, slots: usize) -> Self {
        self.slots = slots.max(1);
        self
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Starts a run over `ids` (the unscored pairs), forgetting any earlier run.
    pub fn start(&mut self, ids: Vec<String>, now_ms: f64) {
        self.total = ids.len();
        self.pending = ids.into();
        self.done = 0;
        self.run_ms = 0.0;
        self.done_timed = 0;
        self.state = if self.total == 0 {
            RunState::Finished
        } else {
            RunState::Running
        };
        self.since = Some(now_ms);
    }

    /// Stops sending batches; the one in flight still lands.
    pub fn cancel(&mut self, now_ms: f64) {
        if self.state == RunState::Running {
            self.state = RunState::Cancelled;
            if let Some(t) = self.since.take() {
                self.run_ms += now_ms - t;
            }
        }
    }

    /// Continues a cancelled run with `ids`, the pairs that still have no scores (a reload or
    /// an edit may have changed them): progress keeps counting from where it stopped.
    pub fn resume(&mut self, ids: Vec<String>, now_ms: f64) {
        if self.state != RunState::Cancelled {
            return self.start(ids, now_ms);
        }
        let in_flight: Vec<&String> = self.in_flight.iter().flat_map(|(_, v)| v).collect();
        self.pending = ids
            .into_iter()
            .filter(|id| !in_flight.contains(&id))
            .collect();
        self.total = self.done + self.pending.len() + in_flight.len();
        self.state = RunState::Running;
        self.since = Some(now_ms);
        if self.pending.is_empty() && self.in_flight.is_empty() {
            self.finish(now_ms);
        }
    }

    /// Scores `id` next, whatever the run is doing.
    pub fn urgent(&mut self, id: String) {
        self.pending.retain(|p| p != &id);
        if !self.urgent.contains(&id) {
            self.urgent.push_back(id);
        }
    }

    /// The next batch to send, if a slot is free and something is due.
    pub fn next_batch(&mut self) -> Option<(u64, Vec<String>)> {
        if self.in_flight.len() >= self.slots {
            return None;
        }
        let mut ids: Vec<String> = self.urgent.drain(..).collect();
        if self.state == RunState::Running {
            while ids.len() < self.batch_size {
                match self.pending.pop_front() {
                    Some(id) => ids.push(id),
                    None => break,
                }
            }
        }
        if ids.is_empty() {
            return None;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.in_flight.push((batch, ids.clone()));
        Some((batch, ids))
    }

    /// A batch came back. Returns false for a batch this scheduler did not send (a result of a
    /// run that was restarted meanwhile), which the caller may still apply.
    pub fn on_result(&mut self, batch: u64, now_ms: f64) -> bool {
        let Some(at) = self.in_flight.iter().position(|(b, _)| *b == batch) else {
            return false;
        };
        let (_, ids) = self.in_flight.remove(at);
        if matches!(self.state, RunState::Running | RunState::Cancelled) {
            // Urgent pairs outside the run's list still count once the run includes them.
            let counted = ids.len().min(self.total - self.done);
            // Sent while running, so its pairs count towards the speed even if a cancel came
            // while they were being scored.
            self.done += counted;
            self.done_timed += counted;
        }
        if self.state == RunState::Running && self.pending.is_empty() && self.in_flight.is_empty() {
            self.finish(now_ms);
        }
        true
    }

    fn finish(&mut self, now_ms: f64) {
        if let Some(t) = self.since.take() {
            self.run_ms += now_ms - t;
        }
        self.state = RunState::Finished;
    }

    /// Forgets what was sent (the worker was replaced): nothing is in flight any more.
    pub fn reset(&mut self) {
        *self = Self::new(self.batch_size).with_slots(self.slots);
    }

    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Nothing in flight and no run going on.
    pub fn is_idle(&self) -> bool {
        !self.busy() && self.state != RunState::Running
    }

    pub fn progress(&self, now_ms: f64) -> Progress {
        let running_ms = self.run_ms + self.since.map_or(0.0, |t| now_ms - t);
        Progress {
            state: self.state,
            done: self.done,
            total: self.total,
            pairs_per_s: (running_ms > 0.0 && self.done_timed > 0)
                .then(|| self.done_timed as f64 * 1000.0 / running_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    #[test]
    fn a_run_goes_batch_by_batch_and_measures_pairs_per_second() {
        let mut s = Scheduler::new(2);
        s.start(ids(5), 0.0);
        let (b1, first) = s.next_batch().unwrap();
        assert_eq!(first, ["p0", "p1"]);
        assert_eq!(s.next_batch(), None, "one batch in flight at a time");
        assert!(s.on_result(b1, 1000.0));
        let p = s.progress(1000.0);
        assert_eq!((p.done, p.total, p.state), (2, 5, RunState::Running));
        assert_eq!(p.pairs_per_s, Some(2.0));
        let (b2, _) = s.next_batch().unwrap();
        assert!(s.on_result(b2, 1500.0));
        let (b3, last) = s.next_batch().unwrap();
        assert_eq!(last, ["p4"]);
        assert!(s.on_result(b3, 2500.0));
        let p = s.progress(9999.0);
        assert_eq!((p.done, p.state), (5, RunState::Finished));
        assert_eq!(
            p.pairs_per_s,
            Some(2.0),
            "the clock stops when the run ends"
        );
        assert_eq!(p.fraction(), 1.0);
        assert!(!s.on_result(b3, 3000.0), "a batch is answered once");
    }

    #[test]
    fn cancel_lets_the_batch_in_flight_land_and_resume_continues() {
        let mut s = Scheduler::new(2);
        s.start(ids(6), 0.0);
        let (b1, _) = s.next_batch().unwrap();
        s.cancel(500.0);
        assert!(s.on_result(b1, 800.0));
        assert_eq!(s.next_batch(), None, "nothing more after a cancel");
        let p = s.progress(10_000.0);
        assert_eq!((p.done, p.state), (2, RunState::Cancelled));
        assert_eq!(
            p.pairs_per_s,
            Some(4.0),
            "time after the cancel does not count"
        );
        // Meanwhile p3 was scored by an edit: resume takes the current unscored list.
        s.resume(vec!["p2".into(), "p4".into(), "p5".into()], 20_000.0);
        assert_eq!(s.progress(20_000.0).total, 5);
        let (b2, batch) = s.next_batch().unwrap();
        assert_eq!(batch, ["p2", "p4"]);
        s.on_result(b2, 21_000.0);
        let (b3, _) = s.next_batch().unwrap();
        s.on_result(b3, 21_500.0);
        let p = s.progress(30_000.0);
        assert_eq!((p.done, p.total, p.state), (5, 5, RunState::Finished));
    }

    #[test]
    fn urgent_pairs_go_first_even_when_idle() {
        let mut s = Scheduler::new(3);
        s.urgent("edited".into());
        assert_eq!(s.next_batch().unwrap().1, ["edited"]);
        assert_eq!(s.progress(0.0).state, RunState::Idle);
        let mut s = Scheduler::new(3);
        s.start(ids(4), 0.0);
        s.urgent("p2".into());
        let (b, batch) = s.next_batch().unwrap();
        assert_eq!(batch, ["p2", "p0", "p1"], "not twice");
        s.on_result(b, 10.0);
        let (b, batch) = s.next_batch().unwrap();
        assert_eq!(batch, ["p3"]);
        s.on_result(b, 20.0);
        assert_eq!(s.progress(20.0).state, RunState::Finished);
    }

    #[test]
    fn several_workers_each_take_a_batch_and_the_run_ends_with_the_last() {
        let mut s = Scheduler::new(2).with_slots(3);
        s.start(ids(9), 0.0);
        let a = s.next_batch().unwrap();
        let b = s.next_batch().unwrap();
        let c = s.next_batch().unwrap();
        assert_eq!(
            (a.1.clone(), b.1.clone(), c.1.clone()),
            (
                vec!["p0".into(), "p1".into()],
                vec!["p2".into(), "p3".into()],
                vec!["p4".into(), "p5".into()]
            )
        );
        assert_eq!(s.next_batch(), None, "every slot is taken");
        assert!(s.on_result(b.0, 100.0), "answers come in any order");
        let d = s.next_batch().unwrap();
        assert_eq!(d.1, ["p6", "p7"]);
        s.on_result(a.0, 150.0);
        let e = s.next_batch().unwrap();
        assert_eq!(e.1, ["p8"]);
        s.on_result(c.0, 200.0);
        s.on_result(e.0, 220.0);
        assert_eq!(
            s.progress(300.0).state,
            RunState::Running,
            "a batch is still out"
        );
        assert!(!s.is_idle());
        s.on_result(d.0, 250.0);
        let p = s.progress(300.0);
        assert_eq!((p.done, p.state), (9, RunState::Finished));
        assert!(s.is_idle());
        s.reset();
        assert_eq!(s.slots(), 3, "a reset keeps the workers");
    }

    #[test]
    fn an_empty_run_is_finished_at_once() {
        let mut s = Scheduler::new(4);
        s.start(vec![], 0.0);
        assert_eq!(s.progress(0.0).state, RunState::Finished);
        assert_eq!(s.next_batch(), None);
    }

    #[test]
    fn items_carry_the_sub_sentence_key() {
        let session = crate::load::demo_session();
        let p = &session.pairs[0];
        let it = item(p).unwrap();
        assert_eq!(it.subs_key, subs_key(p.sub_sentences.as_ref().unwrap()));
        assert!(!it.image.is_empty());
        let mut bare = p.clone();
        bare.image.bytes = None;
        assert_eq!(item(&bare), None);
    }
}
