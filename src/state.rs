//! Connection states and the one table of allowed transitions.

use std::fmt;

/// The state of a connection.
///
/// ```text
///                 connect()
///        Idle ─────────────► Connecting ──────────► Connected
///         │                   │  ▲  │ fatal            │   │ close() / max age
///         │ close()           │  │  └──────► Failed ◄┐ │   ▼
///         ▼                   │  │ (terminal)        │ │  Disconnecting ──► Closed
///       Closed ◄──────────────┤  │                   │ │   │                (terminal)
///      (terminal)   close()   │  │                   │ ▼   ▼
///                             │  └── BackingOff ◄── Reconnecting ◄── Disconnected
///                             └─ retriable ─────────────┘   ▲ drop, peer close,
///                                failure                    │ heartbeat timeout
/// ```
///
/// Every edge is listed in [`State::can_transition_to`]; the engine refuses any other
/// transition. [`Failed`](State::Failed) and [`Closed`](State::Closed) are terminal. Any
/// non-terminal state may go to `Closed` on a user close, and any active state to `Failed`
/// on a fatal error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum State {
    /// Built, nothing dialled yet.
    Idle,
    /// Resolving, connecting TCP, TLS and the WebSocket handshake.
    Connecting,
    /// Open: messages flow.
    Connected,
    /// Our close frame is out; waiting for the peer's (bounded by the close timeout).
    Disconnecting,
    /// The connection dropped or was closed by the peer; deciding what next.
    Disconnected,
    /// About to retry: the attempt number and delay are chosen.
    Reconnecting,
    /// Waiting out the backoff delay before the next attempt.
    BackingOff,
    /// Gave up: a fatal error or exhausted retries. Terminal.
    Failed,
    /// Closed by the user, or by the peer with reconnection off. Terminal.
    Closed,
}

impl State {
    pub(crate) const ALL: [State; 9] = [
        State::Idle,
        State::Connecting,
        State::Connected,
        State::Disconnecting,
        State::Disconnected,
        State::Reconnecting,
        State::BackingOff,
        State::Failed,
        State::Closed,
    ];

    /// Whether `self → next` is a documented transition.
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::State;
    /// assert!(State::Idle.can_transition_to(State::Connecting));
    /// assert!(!State::Closed.can_transition_to(State::Connecting));
    /// ```
    pub fn can_transition_to(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Idle, Connecting)
                | (Idle, Closed)
                | (Connecting, Connected)
                | (Connecting, Reconnecting)
                | (Connecting, Failed)
                | (Connecting, Closed)
                | (Connected, Disconnecting)
                | (Connected, Disconnected)
                | (Connected, Failed)
                | (Connected, Closed)
                | (Disconnecting, Disconnected)
                | (Disconnecting, Closed)
                | (Disconnecting, Failed)
                | (Disconnected, Reconnecting)
                | (Disconnected, Failed)
                | (Disconnected, Closed)
                | (Reconnecting, BackingOff)
                | (Reconnecting, Failed)
                | (Reconnecting, Closed)
                | (BackingOff, Connecting)
                | (BackingOff, Closed)
        )
    }

    /// Whether the state is final: [`Failed`](State::Failed) or [`Closed`](State::Closed).
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Failed | State::Closed)
    }

    /// Whether the connection is away and sends are being queued: `Connecting`,
    /// `Disconnected`, `Reconnecting` or `BackingOff`.
    pub fn is_reconnecting(self) -> bool {
        matches!(
            self,
            State::Connecting | State::Disconnected | State::Reconnecting | State::BackingOff
        )
    }

    pub(crate) fn as_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> State {
        State::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(State::Failed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Disconnecting => "disconnecting",
            State::Disconnected => "disconnected",
            State::Reconnecting => "reconnecting",
            State::BackingOff => "backing_off",
            State::Failed => "failed",
            State::Closed => "closed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::State::{self, *};

    #[test]
    fn seed_edges_are_present() {
        let seed = [
            (Idle, Connecting),
            (Connecting, Connected),
            (Connected, Disconnecting),
            (Disconnecting, Disconnected),
            (Disconnecting, Closed),
            (Connecting, Reconnecting),
            (Reconnecting, BackingOff),
            (BackingOff, Connecting),
        ];
        for (a, b) in seed {
            assert!(a.can_transition_to(b), "{a} -> {b}");
        }
    }

    #[test]
    fn terminal_states_have_no_exit() {
        for t in [Failed, Closed] {
            assert!(t.is_terminal());
            for s in State::ALL {
                assert!(!t.can_transition_to(s), "{t} -> {s}");
            }
        }
    }

    #[test]
    fn every_live_state_can_be_closed_or_reach_closed() {
        for s in State::ALL.into_iter().filter(|s| !s.is_terminal()) {
            // Reconnecting is transient; it reaches Closed directly too.
            assert!(s.can_transition_to(Closed) || s == Disconnecting, "{s}");
        }
        assert!(Disconnecting.can_transition_to(Closed));
    }

    #[test]
    fn no_self_loops_and_no_undocumented_edges() {
        for s in State::ALL {
            assert!(!s.can_transition_to(s));
        }
        assert!(!Idle.can_transition_to(Connected));
        assert!(!BackingOff.can_transition_to(Connected));
        assert!(!Connected.can_transition_to(Connecting));
    }

    #[test]
    fn u8_round_trip() {
        for s in State::ALL {
            assert_eq!(State::from_u8(s.as_u8()), s);
        }
    }
}
