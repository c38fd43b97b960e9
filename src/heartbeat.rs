//! Heartbeats: when to ping, when the peer counts as dead, and measured latency. Pure logic.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::message::Message;

/// Recognises the reply to an application-level ping.
pub(crate) type PongMatcher = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

/// Keep-alive settings: ping every `interval`, and treat the connection as dead (and
/// reconnect) when no pong arrives within `timeout` of a ping.
///
/// By default the ping is a WebSocket ping frame, which every server answers. Some services
/// (Bybit, OKX, many JSON-RPC feeds) want an application message instead; see
/// [`application`](HeartbeatConfig::application). Turn heartbeats off with
/// [`Builder::heartbeat(None)`](crate::Builder::heartbeat).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use jetsocket::{HeartbeatConfig, Message};
///
/// let frames = HeartbeatConfig::new(Duration::from_secs(20), Duration::from_secs(10));
/// assert_eq!(frames.interval, Duration::from_secs(20));
///
/// // Bybit-style: {"op":"ping"} answered by a message containing "pong".
/// let app = HeartbeatConfig::default().application(
///     Message::text(r#"{"op":"ping"}"#),
///     |m: &Message| m.as_text().is_some_and(|t| t.contains(r#""op":"pong""#)),
/// );
/// assert!(app.is_application());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HeartbeatConfig {
    /// Time between pings. Defaults to 30 s.
    pub interval: Duration,
    /// How long to wait for the pong before the connection counts as dead. Defaults to 10 s.
    pub timeout: Duration,
    pub(crate) app: Option<(Message, PongMatcher)>,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            app: None,
        }
    }
}

impl fmt::Debug for HeartbeatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HeartbeatConfig");
        d.field("interval", &self.interval)
            .field("timeout", &self.timeout);
        match &self.app {
            Some((payload, _)) => d.field("application_ping", payload),
            None => d.field("application_ping", &None::<Message>),
        };
        d.finish()
    }
}

impl HeartbeatConfig {
    /// Pings every `interval` and waits `timeout` for each pong.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        HeartbeatConfig {
            interval,
            timeout,
            app: None,
        }
    }

    /// Time between pings. Defaults to 30 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long to wait for a pong. Defaults to 10 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `payload` as an ordinary message instead of a ping frame, and treats any incoming
    /// message for which `is_pong` returns `true` as the pong. Matched pongs are consumed: they
    /// are not delivered to `recv` or `messages()`. Defaults to WebSocket ping frames.
    pub fn application(
        mut self,
        payload: impl Into<Message>,
        is_pong: impl Fn(&Message) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.app = Some((payload.into(), Arc::new(is_pong)));
        self
    }

    /// Whether pings are application messages rather than ping frames.
    pub fn is_application(&self) -> bool {
        self.app.is_some()
    }

    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the interval or timeout is zero.
    pub fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::config("heartbeat interval must be above zero"));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("heartbeat timeout must be above zero"));
        }
        Ok(())
    }
}

/// What the engine should do for the heartbeat right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing is due.
    Idle,
    /// Send a ping now.
    Ping,
    /// The pong is overdue: the connection is dead.
    Dead,
}

/// Last and average round-trip times.
#[derive(Debug, Default, Clone)]
pub(crate) struct LatencyTracker {
    samples: VecDeque<Duration>,
}

/// How many recent samples the moving average covers.
const LATENCY_WINDOW: usize = 16;

impl LatencyTracker {
    pub(crate) fn record(&mut self, rtt: Duration) {
        if self.samples.len() == LATENCY_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(rtt);
    }

    pub(crate) fn last(&self) -> Option<Duration> {
        self.samples.back().copied()
    }

    pub(crate) fn average(&self) -> Option<Duration> {
        let n = u32::try_from(self.samples.len()).ok().filter(|&n| n > 0)?;
        Some(self.samples.iter().sum::<Duration>() / n)
    }
}

/// The ping schedule of one live connection.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Option<Instant>,
    /// When the outstanding ping was sent.
    outstanding: Option<Instant>,
    seq: u64,
}

impl Heartbeat {
    pub(crate) fn new(config: &HeartbeatConfig) -> Self {
        Heartbeat {
            interval: config.interval,
            timeout: config.timeout,
            next_ping: None,
            outstanding: None,
            seq: 0,
        }
    }

    /// A connection opened at `now`: the first ping is due one interval later.
    pub(crate) fn start(&mut self, now: Instant) {
        self.next_ping = Some(crate::later(now, self.interval));
        self.outstanding = None;
    }

    /// The connection is gone: nothing is due.
    pub(crate) fn stop(&mut self) {
        self.next_ping = None;
        self.outstanding = None;
    }

    /// The next instant at which [`poll`](Self::poll) has something to do.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.outstanding {
            Some(sent) => Some(crate::later(sent, self.timeout)),
            None => self.next_ping,
        }
    }

    pub(crate) fn poll(&mut self, now: Instant) -> Beat {
        if let Some(sent) = self.outstanding {
            return if now >= crate::later(sent, self.timeout) {
                Beat::Dead
            } else {
                Beat::Idle
            };
        }
        match self.next_ping {
            Some(due) if now >= due => Beat::Ping,
            _ => Beat::Idle,
        }
    }

    /// Records that a ping went out at `now`; returns the payload for a ping frame.
    pub(crate) fn ping_sent(&mut self, now: Instant) -> [u8; 8] {
        self.outstanding = Some(now);
        self.seq = self.seq.wrapping_add(1);
        self.seq.to_be_bytes()
    }

    /// Whether a ping-frame pong payload answers our outstanding ping.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        self.outstanding.is_some() && payload == self.seq.to_be_bytes()
    }

    /// A pong arrived at `now`: returns the round trip if a ping was outstanding, and
    /// schedules the next ping.
    pub(crate) fn pong(&mut self, now: Instant) -> Option<Duration> {
        let sent = self.outstanding.take()?;
        self.next_ping = Some(crate::later(sent, self.interval));
        Some(now.saturating_duration_since(sent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(interval: u64, timeout: u64) -> Heartbeat {
        Heartbeat::new(&HeartbeatConfig::new(
            Duration::from_secs(interval),
            Duration::from_secs(timeout),
        ))
    }

    #[test]
    fn pings_every_interval_while_pongs_arrive() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = hb(20, 10);
        assert_eq!(h.deadline(), None);
        h.start(t0);
        assert_eq!(h.deadline(), Some(t0 + s(20)));
        assert_eq!(h.poll(t0 + s(19)), Beat::Idle);
        assert_eq!(h.poll(t0 + s(20)), Beat::Ping);
        let payload = h.ping_sent(t0 + s(20));
        assert!(h.matches(&payload));
        assert!(!h.matches(b"other"));
        assert_eq!(h.deadline(), Some(t0 + s(30)));
        assert_eq!(h.pong(t0 + s(21)), Some(s(1)));
        assert_eq!(h.deadline(), Some(t0 + s(40)));
        assert_eq!(h.pong(t0 + s(22)), None, "unsolicited pong");
    }

    #[test]
    fn missing_pong_means_dead() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = hb(5, 3);
        h.start(t0);
        h.ping_sent(t0 + s(5));
        assert_eq!(h.poll(t0 + s(7)), Beat::Idle);
        assert_eq!(h.poll(t0 + s(8)), Beat::Dead);
        h.stop();
        assert_eq!(h.poll(t0 + s(100)), Beat::Idle);
        assert_eq!(h.deadline(), None);
    }

    #[test]
    fn latency_average_over_window() {
        let mut l = LatencyTracker::default();
        assert_eq!(l.average(), None);
        for ms in 1..=20 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.last(), Some(Duration::from_millis(20)));
        // The window holds 5..=20, whose mean is 12.5 ms.
        assert_eq!(l.average(), Some(Duration::from_micros(12_500)));
    }

    #[test]
    fn validation() {
        assert!(HeartbeatConfig::default().validate().is_ok());
        assert!(HeartbeatConfig::default()
            .interval(Duration::ZERO)
            .validate()
            .is_err());
        assert!(HeartbeatConfig::default()
            .timeout(Duration::ZERO)
            .validate()
            .is_err());
    }
}
