//! The server's gate for work that spans pollers: transactions across
//! pollers pass it shared (any number at once), or alone while replicas
//! are fed (so that every poller commits their parts in one order); a
//! census of the key space (KEYS, DBSIZE, a SCAN step, RANDOMKEY with
//! several pollers, `poller/census.rs`) passes it alone, so that it
//! looks at the store while no such transaction is between its first
//! claim and its outcome.
//!
//! Whoever waits is queued in arrival order, and a shared pass waits
//! behind a waiting sole one (else a stream of transactions could keep a
//! census out for ever). A waiter is told by a step on its poller's ring
//! when it holds the gate ([`Gate::pass`] returns whom to tell).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::msg::ConnRef;

/// A transaction across pollers or a census: its first part's poller and
/// its id (its connection and reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Holder {
    pub poller: usize,
    pub id: (ConnRef, u64),
    pub kind: HolderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HolderKind {
    /// A transaction across pollers (told by `CrossStep::Gate`).
    Txn,
    /// A census (told by `CensusStep::Gate`).
    Census,
}

/// How a holder passes: with others, or alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Shared,
    Alone,
}

#[derive(Debug, Default)]
struct State {
    /// Holders passing shared.
    shared: usize,
    /// A holder passing alone.
    alone: bool,
    waiting: VecDeque<(Mode, Holder)>,
}

#[derive(Debug, Default)]
pub(super) struct Gate {
    state: Mutex<State>,
}

impl Gate {
    /// `who` asks to pass in `mode`: whether it holds the gate now; if not
    /// it waits, and is returned by the [`Gate::pass`] that lets it in.
    pub(super) fn take(&self, mode: Mode, who: Holder) -> bool {
        let mut s = self.lock();
        let free = s.waiting.is_empty()
            && !s.alone
            && match mode {
                Mode::Shared => true,
                Mode::Alone => s.shared == 0,
            };
        if !free {
            s.waiting.push_back((mode, who));
            return false;
        }
        match mode {
            Mode::Shared => s.shared += 1,
            Mode::Alone => s.alone = true,
        }
        true
    }

    /// A holder that passed in `mode` is through: the waiters that hold
    /// the gate now, in order.
    pub(super) fn pass(&self, mode: Mode) -> Vec<Holder> {
        let mut s = self.lock();
        match mode {
            Mode::Shared => s.shared -= 1,
            Mode::Alone => s.alone = false,
        }
        let mut let_in = Vec::new();
        while let Some(&(mode, who)) = s.waiting.front() {
            match mode {
                _ if s.alone => break,
                Mode::Shared => s.shared += 1,
                Mode::Alone if s.shared > 0 => break,
                Mode::Alone => s.alone = true,
            }
            s.waiting.pop_front();
            let_in.push(who);
        }
        let_in
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: u64) -> Holder {
        Holder {
            poller: 0,
            id: (ConnRef::NONE, n),
            kind: HolderKind::Txn,
        }
    }

    #[test]
    fn shared_holders_pass_together_and_one_alone_waits_for_them() {
        let g = Gate::default();
        assert!(g.take(Mode::Shared, who(1)));
        assert!(g.take(Mode::Shared, who(2)));
        assert!(!g.take(Mode::Alone, who(3)));
        // A shared one after a waiting sole one waits too.
        assert!(!g.take(Mode::Shared, who(4)));
        assert!(!g.take(Mode::Shared, who(5)));
        assert!(g.pass(Mode::Shared).is_empty());
        assert_eq!(g.pass(Mode::Shared), vec![who(3)]);
        assert_eq!(g.pass(Mode::Alone), vec![who(4), who(5)]);
        assert!(!g.take(Mode::Alone, who(6)));
        assert!(g.pass(Mode::Shared).is_empty());
        assert_eq!(g.pass(Mode::Shared), vec![who(6)]);
        assert!(g.pass(Mode::Alone).is_empty());
        assert!(g.take(Mode::Alone, who(7)));
    }

    #[test]
    fn sole_holders_pass_one_at_a_time_in_order() {
        let g = Gate::default();
        assert!(g.take(Mode::Alone, who(1)));
        assert!(!g.take(Mode::Alone, who(2)));
        assert!(!g.take(Mode::Shared, who(3)));
        assert!(!g.take(Mode::Alone, who(4)));
        assert_eq!(g.pass(Mode::Alone), vec![who(2)]);
        assert_eq!(g.pass(Mode::Alone), vec![who(3)]);
        assert_eq!(g.pass(Mode::Shared), vec![who(4)]);
    }
}
