//! Connection statistics: lock-free counters updated by the I/O thread, read as a snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::deflate::DeflateStats;
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
    /// What permessage-deflate did, both ways.
    pub compression: CompressionStats,
}

/// Byte counts of permessage-deflate (see [`Builder::compression`](crate::Builder::compression)),
/// part of [`Stats`].
///
/// Only compressed messages are counted here; messages below the threshold, and all messages
/// on connections where the server declined compression, show only in the plain counters.
///
/// # Examples
///
/// ```
/// use jetsocket::CompressionStats;
/// let mut c = CompressionStats::default();
/// assert_eq!(c.sent_ratio(), None);
/// (c.sent_messages, c.sent_bytes, c.sent_wire_bytes) = (1, 1000, 250);
/// assert_eq!(c.sent_ratio(), Some(0.25));
/// assert_eq!(c.received_ratio(), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressionStats {
    /// Whether the current connection negotiated compression.
    pub active: bool,
    /// Messages sent compressed.
    pub sent_messages: u64,
    /// Their payload bytes before compression.
    pub sent_bytes: u64,
    /// Their payload bytes on the wire, after compression.
    pub sent_wire_bytes: u64,
    /// Compressed messages received.
    pub received_messages: u64,
    /// Their payload bytes on the wire, before inflating.
    pub received_wire_bytes: u64,
    /// Their payload bytes after inflating.
    pub received_bytes: u64,
}

impl CompressionStats {
    /// Wire bytes per payload byte of the compressed messages sent (smaller is better), or
    /// `None` before the first one.
    pub fn sent_ratio(&self) -> Option<f64> {
        ratio(self.sent_wire_bytes, self.sent_bytes)
    }

    /// Wire bytes per payload byte of the compressed messages received (smaller is better),
    /// or `None` before the first one.
    pub fn received_ratio(&self) -> Option<f64> {
        ratio(self.received_wire_bytes, self.received_bytes)
    }
}

fn ratio(wire: u64, plain: u64) -> Option<f64> {
    (plain > 0).then(|| wire as f64 / plain as f64)
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
    /// Shared with each connection's compression layer.
    pub(crate) deflate: Arc<DeflateStats>,
    pub(crate) compression_active: AtomicBool,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub(crate) fn compression(&self) -> CompressionStats {
        let d = self.deflate.snapshot();
        CompressionStats {
            active: self.compression_active.load(Relaxed),
            sent_messages: d.sent_messages,
            sent_bytes: d.sent_plain_bytes,
            sent_wire_bytes: d.sent_compressed_bytes,
            received_messages: d.received_messages,
            received_wire_bytes: d.received_compressed_bytes,
            received_bytes: d.received_plain_bytes,
        }
    }
}
