//! Walking and triaging pairs from the keyboard, and the actions behind it (the pair view's
//! buttons call the same ones). Keys are ignored while typing in a field.
//!
//! ← / p previous, → / n next (in the table's order and filter), h the hardest pair nobody has
//! reviewed yet, k keep, d drop (both mark the pair reviewed), s swap, r reviewed on/off.

use dama_data::Status;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::state::{AppState, View};
use crate::navigate::{Cursor, hardest_unreviewed};

/// The legend the pair view shows.
pub const LEGEND: &str =
    "keys: ← → previous / next · h hardest unreviewed · k keep · d drop · s swap · r reviewed";

pub fn install(state: AppState) {
    let _ = window_event_listener(leptos::ev::keydown, move |ev: web_sys::KeyboardEvent| {
        if ev.ctrl_key() || ev.meta_key() || ev.alt_key() || typing(&ev) {
            return;
        }
        let in_pair = state.view.get_untracked() == View::Pair;
        match ev.key().as_str() {
            "h" => state.hardest_unreviewed(),
            "ArrowRight" | "n" if in_pair => state.step(1),
            "ArrowLeft" | "p" if in_pair => state.step(-1),
            "k" if in_pair => state.decide(Status::Keep),
            "d" if in_pair => state.decide(Status::Drop),
            "s" if in_pair => state.swap_current(),
            "r" if in_pair => state.toggle_reviewed(),
            _ => return,
        }
        ev.prevent_default();
    });
}

fn typing(ev: &web_sys::KeyboardEvent) -> bool {
    let Some(el) = ev
        .target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
    else {
        return false;
    };
    matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
        || el.has_attribute("contenteditable")
}

impl AppState {
    /// Opens the pair at `place` of the table's order.
    pub fn open_place(self, place: usize) {
        if let Some(c) = self.order.with_untracked(|o| Cursor::at(o, place)) {
            self.cursor.set(c);
            self.view.set(View::Pair);
        }
    }

    /// ◀ ▶: the previous or next pair in the table's order.
    pub fn step(self, by: isize) {
        let next = self
            .order
            .with_untracked(|o| self.cursor.get_untracked().step(o, by));
        match next {
            Some(c) => self.cursor.set(c),
            None => self.info(if by > 0 {
                "this is the last pair of the table's order"
            } else {
                "this is the first pair of the table's order"
            }),
        }
    }

    /// The hardest kept pair in the table's filter that nobody has reviewed.
    pub fn hardest_unreviewed(self) {
        let current =
            (self.view.get_untracked() == View::Pair).then(|| self.cursor.get_untracked().pair);
        let next = self.order.with_untracked(|o| {
            self.with_session(|s| hardest_unreviewed(s, o, current))
                .flatten()
        });
        match next {
            Some(c) => {
                self.cursor.set(c);
                self.view.set(View::Pair);
            }
            None => self.info("every kept pair in the table's filter has been reviewed"),
        }
    }

    fn current(self) -> Option<usize> {
        let i = self.cursor.get_untracked().pair;
        (self.with_session(|s| i < s.len()) == Some(true)).then_some(i)
    }

    /// Keep or drop the pair shown, and mark it reviewed.
    pub fn decide(self, status: Status) {
        if let Some(i) = self.current() {
            self.curate(i, |s| {
                s.set_status(i, status);
                s.set_reviewed(i, true);
            });
        }
    }

    pub fn swap_current(self) {
        if let Some(i) = self.current()
            && let Some(Err(e)) = self.curate(i, |s| s.swap(i))
        {
            self.error(format!("swap: {e}"));
        }
    }

    pub fn toggle_reviewed(self) {
        if let Some(i) = self.current() {
            self.curate(i, |s| {
                let r = !s.pairs[i].annotation.reviewed;
                s.set_reviewed(i, r)
            });
        }
    }
}
