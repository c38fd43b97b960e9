//! Ready-made settings for common workloads. Each returns a [`Builder`], so any setting can
//! be overridden by chaining.
//!
//! | preset | backoff base / cap / attempts | heartbeat | buffer | other |
//! |---|---|---|---|---|
//! | [`trading`] | 0.5 s / 30 s / forever | 20 s | 10,000, dedup | max connection age 23 h 50 min |
//! | [`llm_stream`] | 1 s / 10 s / 5 | 30 s | 500 | max message size 128 MiB |
//! | [`dashboard`] | 2 s / 60 s / forever | 30 s | 100, drop oldest | |
//! | [`minimal`] | defaults (1 s / 60 s / forever) | 30 s | 100 | |
//!
//! # Examples
//!
//! ```
//! # let server = jetsocket::__doc_server();
//! use std::time::Duration;
//! use jetsocket::presets;
//!
//! let ws = presets::trading(server.url())
//!     .heartbeat(jetsocket::HeartbeatConfig::new(Duration::from_secs(15), Duration::from_secs(5)))
//!     .connect()?;
//! assert!(ws.is_connected());
//! # Ok::<(), jetsocket::Error>(())
//! ```

use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::buffer::{BufferConfig, OverflowPolicy};
use crate::client::{Builder, SyncWebSocket};
use crate::heartbeat::HeartbeatConfig;

/// Market data and order flow: reconnect fast and forever, detect dead peers within 30 s,
/// a deep buffer with dedup (give it a [`Builder::sequence_id`] extractor), and a proactive
/// reconnect before the 24 h cut many exchanges make.
pub fn trading(url: impl AsRef<str>) -> Builder {
    SyncWebSocket::builder(url)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(500))
                .cap(Duration::from_secs(30))
                .max_attempts(0),
        )
        .heartbeat(HeartbeatConfig::default().interval(Duration::from_secs(20)))
        .buffer(BufferConfig::new(10_000).dedup(true))
        .max_connection_age(Duration::from_secs(23 * 3600 + 50 * 60))
}

/// Streaming model output: large messages, a handful of quick retries, then give up so the
/// caller can report the failure.
pub fn llm_stream(url: impl AsRef<str>) -> Builder {
    SyncWebSocket::builder(url)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_secs(1))
                .cap(Duration::from_secs(10))
                .max_attempts(5),
        )
        .heartbeat(HeartbeatConfig::default().interval(Duration::from_secs(30)))
        .buffer(BufferConfig::new(500))
        .max_message_size(128 << 20)
}

/// Live dashboards: only the freshest data matters, so a small buffer that drops the oldest,
/// and patient reconnects.
pub fn dashboard(url: impl AsRef<str>) -> Builder {
    SyncWebSocket::builder(url)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_secs(2))
                .cap(Duration::from_secs(60))
                .max_attempts(0),
        )
        .heartbeat(HeartbeatConfig::default().interval(Duration::from_secs(30)))
        .buffer(BufferConfig::new(100).overflow_policy(OverflowPolicy::DropOldest))
}

/// Small defaults: reconnection on, a 30 s heartbeat, a 100-message buffer.
pub fn minimal(url: impl AsRef<str>) -> Builder {
    SyncWebSocket::builder(url)
        .reconnect(true)
        .heartbeat(HeartbeatConfig::default().interval(Duration::from_secs(30)))
        .buffer(BufferConfig::new(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "ws://127.0.0.1:9/";
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn trading_values() {
        let o = trading(URL).options();
        assert_eq!(o.backoff.base, Duration::from_millis(500));
        assert_eq!(o.backoff.cap, S(30));
        assert_eq!(o.backoff.max_attempts, 0);
        assert_eq!(o.heartbeat.as_ref().map(|h| h.interval), Some(S(20)));
        assert_eq!(o.buffer.capacity, 10_000);
        assert!(o.buffer.enable_dedup);
        assert_eq!(o.max_connection_age, Some(S(23 * 3600 + 50 * 60)));
        assert!(o.reconnect);
    }

    #[test]
    fn llm_stream_values() {
        let o = llm_stream(URL).options();
        assert_eq!(
            (o.backoff.base, o.backoff.cap, o.backoff.max_attempts),
            (S(1), S(10), 5)
        );
        assert_eq!(o.heartbeat.as_ref().map(|h| h.interval), Some(S(30)));
        assert_eq!(o.buffer.capacity, 500);
        assert_eq!(o.max_message_size, 128 << 20);
    }

    #[test]
    fn dashboard_values() {
        let o = dashboard(URL).options();
        assert_eq!(
            (o.backoff.base, o.backoff.cap, o.backoff.max_attempts),
            (S(2), S(60), 0)
        );
        assert_eq!(o.heartbeat.as_ref().map(|h| h.interval), Some(S(30)));
        assert_eq!(o.buffer.capacity, 100);
        assert_eq!(o.buffer.overflow_policy, OverflowPolicy::DropOldest);
    }

    #[test]
    fn minimal_values() {
        let o = minimal(URL).options();
        assert!(o.reconnect);
        assert_eq!(o.heartbeat.as_ref().map(|h| h.interval), Some(S(30)));
        assert_eq!(o.buffer.capacity, 100);
    }

    #[test]
    fn presets_can_be_overridden_and_built() {
        let o = trading(URL)
            .buffer(BufferConfig::new(5))
            .reconnect(false)
            .options();
        assert_eq!(o.buffer.capacity, 5);
        assert!(!o.reconnect);
        for b in [trading(URL), llm_stream(URL), dashboard(URL), minimal(URL)] {
            let ws = b.build().expect("preset builds");
            ws.close().expect("close");
        }
    }
}
