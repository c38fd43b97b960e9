//! Connection statistics: lock-free counters updated by the I/O thread, read as a snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::heartbeat::LatencyTracker;
use crate::state::State;

/// A snapshot of a connection's statistics, from
/// [`SyncWebSocket::stats`](crate::SyncWebSocket::stats).
///
/// Counters cover the handle's whole life, across reconnects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The state when the snapshot was taken.
    pub state: State,
    /// Data messages written to the socket.
    pub messages_sent: u64,
    /// Data messages read from the socket (before dedup and overflow drops).
    pub messages_received: u64,
    /// Payload bytes of the messages sent.
    pub bytes_sent: u64,
    /// Payload bytes of the messages received.
    pub bytes_received: u64,
    /// Connection attempts started (first connect and reconnects).
    pub connect_attempts: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// When the current connection was established, if connected.
    pub connected_since: Option<SystemTime>,
    /// The latest heartbeat round trip.
    pub latency: Option<Duration>,
    /// The mean of the last 16 heartbeat round trips.
    pub average_latency: Option<Duration>,
    /// Messages waiting in the inbound buffer.
    pub queued: usize,
    /// The inbound buffer's capacity.
    pub buffer_capacity: usize,
    /// `queued / buffer_capacity`, from 0.0 to 1.0.
    pub buffer_fill: f64,
    /// Messages dropped by the overflow policy.
    pub dropped: u64,
    /// Messages dropped as duplicates.
    pub deduplicated: u64,
    /// Messages waiting in the send queue.
    pub send_queued: usize,
    /// Events not delivered to a subscriber or callback that had fallen too far behind.
    pub events_dropped: u64,
    /// Typed messages skipped because they did not parse (lenient JSON mode).
    pub parse_failures: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) connect_attempts: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) deduplicated: AtomicU64,
    pub(crate) parse_failures: AtomicU64,
    pub(crate) connected_since: Mutex<Option<SystemTime>>,
    pub(crate) latency: Mutex<LatencyTracker>,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
