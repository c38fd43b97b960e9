//! Reconnection delays: capped exponential backoff with optional full jitter. Pure logic.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long to wait between reconnect attempts.
///
/// The delay before attempt `n` (counting from 0) is `min(base · multiplierⁿ, cap)`; with
/// jitter on, a uniformly random duration in `[0, delay]` ("full jitter", which spreads
/// reconnecting clients apart). The attempt counter starts again from 0 once a connection
/// has stayed up for `reset_after`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use jetsocket::BackoffConfig;
///
/// let backoff = BackoffConfig::default()
///     .base(Duration::from_millis(500))
///     .cap(Duration::from_secs(30))
///     .max_attempts(10);
/// assert_eq!(backoff.delay_for(0), Duration::from_millis(500));
/// assert_eq!(backoff.delay_for(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay_for(20), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The delay before the first reconnect attempt.
    pub base: Duration,
    /// The factor by which the delay grows per attempt.
    pub multiplier: f64,
    /// The largest delay.
    pub cap: Duration,
    /// Whether each delay is drawn uniformly from `[0, delay]`.
    pub jitter: bool,
    /// Failed reconnect attempts in a row before giving up; 0 retries forever.
    pub max_attempts: u32,
    /// Connection time after which the attempt counter resets.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_secs(1),
            multiplier: 2.0,
            cap: Duration::from_secs(60),
            jitter: true,
            max_attempts: 0,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl BackoffConfig {
    /// The default configuration (see each setter).
    pub fn new() -> Self {
        Self::default()
    }

    /// The delay before the first reconnect attempt. Defaults to 1 s.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The factor by which the delay grows per attempt; at least 1. Defaults to 2.0.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The largest delay; at least `base`. Defaults to 60 s.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Whether to randomize each delay uniformly in `[0, delay]`. Defaults to `true`.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// How many failed reconnect attempts in a row before giving up (state
    /// [`Failed`](crate::State::Failed)); 0 retries forever. Defaults to 0.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// After a connection has stayed up this long, the attempt counter resets. Defaults to 60 s.
    pub fn reset_after(mut self, reset_after: Duration) -> Self {
        self.reset_after = reset_after;
        self
    }

    /// The delay before attempt `attempt` (0-based), before jitter.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        let exp = self.multiplier.powi(attempt.min(1024) as i32);
        let secs = self.base.as_secs_f64() * exp;
        let cap = self.cap.as_secs_f64();
        if !secs.is_finite() || secs >= cap {
            self.cap
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the multiplier is below 1 or not finite, or the cap is
    /// below the base.
    pub fn validate(&self) -> Result<()> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(Error::config(format!(
                "backoff multiplier must be a finite number >= 1, got {}",
                self.multiplier
            )));
        }
        if self.cap < self.base {
            return Err(Error::config(format!(
                "backoff cap ({:?}) must not be below base ({:?})",
                self.cap, self.base
            )));
        }
        Ok(())
    }
}

/// Source of uniform random numbers in `[0, 1)`, injectable for deterministic tests.
pub(crate) type Jitter = Box<dyn FnMut() -> f64 + Send>;

pub(crate) fn thread_jitter() -> Jitter {
    Box::new(rand::random::<f64>)
}

/// The attempt counter and delay schedule of one connection.
pub(crate) struct Backoff {
    config: BackoffConfig,
    jitter: Jitter,
    /// Attempts since the last stable connection (drives the delay).
    attempts: u32,
    /// Failed attempts in a row (checked against `max_attempts`).
    failures: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig, jitter: Jitter) -> Self {
        Backoff {
            config,
            jitter,
            attempts: 0,
            failures: 0,
            connected_at: None,
        }
    }

    /// The number of reconnect attempts made since the last reset.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Failed attempts in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Schedules the next attempt: its 1-based number and its delay, or `None` when
    /// `max_attempts` are used up.
    pub(crate) fn next_attempt(&mut self, now: Instant) -> Option<(u32, Duration)> {
        self.settle(now);
        self.connected_at = None;
        let max = self.config.max_attempts;
        if max != 0 && self.failures >= max {
            return None;
        }
        let delay = self.config.delay_for(self.attempts);
        let delay = if self.config.jitter {
            let unit = (self.jitter)().clamp(0.0, 1.0);
            delay.mul_f64(unit)
        } else {
            delay
        };
        self.attempts += 1;
        self.failures += 1;
        Some((self.attempts, delay))
    }

    /// Records a successful connection; the counter resets once it has lasted `reset_after`.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.failures = 0;
        if self.config.reset_after.is_zero() {
            self.attempts = 0;
        }
    }

    /// Resets the counter if the current connection has been up long enough.
    pub(crate) fn settle(&mut self, now: Instant) {
        if let Some(deadline) = self
            .connected_at
            .map(|t| crate::later(t, self.config.reset_after))
        {
            if now >= deadline {
                self.attempts = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    fn seeded(seed: u64) -> Jitter {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Box::new(move || rng.random::<f64>())
    }

    fn no_jitter() -> BackoffConfig {
        BackoffConfig::default().jitter(false)
    }

    #[test]
    fn exponential_sequence_then_cap() {
        let mut b = Backoff::new(no_jitter(), seeded(1));
        let now = Instant::now();
        let delays: Vec<u64> = (0..8)
            .map(|_| b.next_attempt(now).unwrap().1.as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn full_jitter_stays_within_bounds_and_varies() {
        let cfg = BackoffConfig::default().cap(Duration::from_secs(10));
        let mut b = Backoff::new(cfg, seeded(42));
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000u32 {
            let (n, d) = b.next_attempt(now).unwrap();
            assert_eq!(n, i + 1);
            assert!(d <= cfg.delay_for(i), "attempt {i}: {d:?}");
            assert!(d <= Duration::from_secs(10));
            seen.insert(d.as_nanos());
        }
        assert!(seen.len() > 900, "jitter should vary: {}", seen.len());
    }

    #[test]
    fn seeded_jitter_is_deterministic() {
        let now = Instant::now();
        let run = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seeded(seed));
            (0..5)
                .map(|_| b.next_attempt(now).unwrap().1)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn max_attempts_stops() {
        let mut b = Backoff::new(no_jitter().max_attempts(3), seeded(1));
        let now = Instant::now();
        assert_eq!(b.next_attempt(now).unwrap().0, 1);
        assert_eq!(b.next_attempt(now).unwrap().0, 2);
        assert_eq!(b.next_attempt(now).unwrap().0, 3);
        assert!(b.next_attempt(now).is_none());
    }

    #[test]
    fn counter_resets_after_stable_connection() {
        let cfg = no_jitter().reset_after(Duration::from_secs(60));
        let mut b = Backoff::new(cfg, seeded(1));
        let t0 = Instant::now();
        b.next_attempt(t0);
        b.next_attempt(t0);
        b.connected(t0);
        // A drop before reset_after keeps counting.
        let (n, d) = b.next_attempt(t0 + Duration::from_secs(10)).unwrap();
        assert_eq!((n, d), (3, Duration::from_secs(4)));
        b.connected(t0);
        let (n, d) = b.next_attempt(t0 + Duration::from_secs(61)).unwrap();
        assert_eq!((n, d), (1, Duration::from_secs(1)));
    }

    #[test]
    fn validation() {
        assert!(BackoffConfig::default().validate().is_ok());
        assert!(BackoffConfig::default().multiplier(0.5).validate().is_err());
        assert!(BackoffConfig::default()
            .multiplier(f64::NAN)
            .validate()
            .is_err());
        let bad = BackoffConfig::default()
            .base(Duration::from_secs(10))
            .cap(Duration::from_secs(1));
        assert!(matches!(bad.validate(), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let cfg = no_jitter().multiplier(10.0);
        assert_eq!(cfg.delay_for(u32::MAX), cfg.cap);
    }
}
