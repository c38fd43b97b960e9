//! The inbound buffer's policy and the dedup window. Pure logic.

use std::collections::{HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::message::Message;

/// What happens when a message arrives and the inbound buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Drop the oldest queued message to make room (keeps the freshest data). The default.
    #[default]
    DropOldest,
    /// Drop the incoming message (keeps the oldest data).
    DropNewest,
    /// Drop the incoming message and make the next `recv` return
    /// [`Error::BufferOverflow`] with the number dropped; delivery then continues.
    Error,
    /// Lose nothing: stop reading the socket while the buffer is full, so TCP flow control
    /// pushes back on the server. Outgoing messages, pongs and the close handshake still go out.
    Block,
}

/// The buffer between the I/O thread and the consumers (`recv`, `messages()`).
///
/// # Examples
///
/// ```
/// use jetsocket::{BufferConfig, OverflowPolicy};
///
/// let buffer = BufferConfig::new(10_000)
///     .overflow_policy(OverflowPolicy::Block)
///     .dedup(true)
///     .dedup_window(500);
/// assert_eq!(buffer.capacity, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BufferConfig {
    /// Messages held at most. Defaults to 1000.
    pub capacity: usize,
    /// What to do when full. Defaults to [`OverflowPolicy::DropOldest`].
    pub overflow_policy: OverflowPolicy,
    /// Whether to drop messages whose sequence id was seen recently (needs a
    /// [`Builder::sequence_id`](crate::Builder::sequence_id) extractor). Defaults to `false`.
    pub enable_dedup: bool,
    /// How many recent sequence ids are remembered for dedup. Defaults to 100.
    pub dedup_window: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            capacity: 1000,
            overflow_policy: OverflowPolicy::DropOldest,
            enable_dedup: false,
            dedup_window: 100,
        }
    }
}

impl BufferConfig {
    /// A buffer of `capacity` messages with the other defaults.
    pub fn new(capacity: usize) -> Self {
        BufferConfig {
            capacity,
            ..Self::default()
        }
    }

    /// Messages held at most. Defaults to 1000.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// What to do when full. Defaults to [`OverflowPolicy::DropOldest`].
    pub fn overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.overflow_policy = policy;
        self
    }

    /// Whether to drop repeated sequence ids. Defaults to `false`.
    pub fn dedup(mut self, enable: bool) -> Self {
        self.enable_dedup = enable;
        self
    }

    /// How many recent sequence ids dedup remembers. Defaults to 100.
    pub fn dedup_window(mut self, window: usize) -> Self {
        self.dedup_window = window;
        self
    }

    /// Checks the values.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero capacity, or dedup on with a zero window.
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::config("buffer capacity must be at least 1"));
        }
        if self.enable_dedup && self.dedup_window == 0 {
            return Err(Error::config("dedup window must be at least 1"));
        }
        Ok(())
    }
}

/// What became of a pushed message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued without loss.
    Queued,
    /// Queued after dropping the oldest message.
    DroppedOldest,
    /// Not queued: the buffer is full and the policy drops the newcomer.
    DroppedNewest,
}

/// The queue itself: a bounded deque applying an overflow policy.
#[derive(Debug)]
pub(crate) struct InboundBuffer {
    queue: VecDeque<Message>,
    capacity: usize,
    policy: OverflowPolicy,
    /// Dropped under `OverflowPolicy::Error` and not yet reported to a consumer.
    unreported: u64,
}

impl InboundBuffer {
    pub(crate) fn new(config: &BufferConfig) -> Self {
        InboundBuffer {
            queue: VecDeque::with_capacity(config.capacity.min(1024)),
            capacity: config.capacity,
            policy: config.overflow_policy,
            unreported: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn free(&self) -> usize {
        self.capacity.saturating_sub(self.queue.len())
    }

    /// Adds a message. Under `Block` the caller must not push past the capacity (it reads no
    /// more than [`free`](Self::free) messages); should it happen anyway, the message is kept.
    pub(crate) fn push(&mut self, msg: Message) -> Pushed {
        if self.queue.len() < self.capacity || self.policy == OverflowPolicy::Block {
            self.queue.push_back(msg);
            return Pushed::Queued;
        }
        match self.policy {
            OverflowPolicy::DropOldest => {
                self.queue.pop_front();
                self.queue.push_back(msg);
                Pushed::DroppedOldest
            }
            OverflowPolicy::Error => {
                self.unreported += 1;
                Pushed::DroppedNewest
            }
            _ => Pushed::DroppedNewest,
        }
    }

    /// Adds every message of `batch` (leaving it empty) and returns how many were dropped.
    pub(crate) fn push_all(&mut self, batch: &mut Vec<Message>) -> u64 {
        if self.policy == OverflowPolicy::Block || batch.len() <= self.free() {
            // Nothing can be dropped: one bulk move instead of a policy check per message.
            self.queue.extend(batch.drain(..));
            return 0;
        }
        let mut dropped = 0;
        for msg in batch.drain(..) {
            if self.push(msg) != Pushed::Queued {
                dropped += 1;
            }
        }
        dropped
    }

    /// Takes the next message; under `OverflowPolicy::Error` a pending overflow is reported
    /// first, once.
    pub(crate) fn pop(&mut self) -> Option<Result<Message>> {
        if self.unreported > 0 {
            let dropped = std::mem::take(&mut self.unreported);
            return Some(Err(Error::BufferOverflow { dropped }));
        }
        self.queue.pop_front().map(Ok)
    }

    /// Whether `pop` would return something.
    pub(crate) fn has_item(&self) -> bool {
        self.unreported > 0 || !self.queue.is_empty()
    }
}

/// Remembers the last `window` sequence ids.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    seen: HashSet<u64>,
    order: VecDeque<u64>,
    window: usize,
}

impl DedupWindow {
    pub(crate) fn new(window: usize) -> Self {
        DedupWindow {
            seen: HashSet::with_capacity(window.min(1 << 16)),
            order: VecDeque::with_capacity(window.min(1 << 16)),
            window: window.max(1),
        }
    }

    /// Records `id`; returns `false` if it was already in the window (a duplicate).
    pub(crate) fn insert(&mut self, id: u64) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        if self.order.len() == self.window {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(cap: usize, policy: OverflowPolicy) -> InboundBuffer {
        InboundBuffer::new(&BufferConfig::new(cap).overflow_policy(policy))
    }

    fn texts(b: &mut InboundBuffer) -> Vec<String> {
        std::iter::from_fn(|| b.pop())
            .map(|r| match r {
                Ok(m) => m.as_text().unwrap_or_default().to_owned(),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_batch_follows_the_policy_like_single_pushes() {
        let batch = |from: usize, to: usize| -> Vec<Message> {
            (from..to).map(|i| Message::text(i.to_string())).collect()
        };
        // (policy, dropped by the overflowing batch, what is left)
        for (policy, dropped, left) in [
            (OverflowPolicy::DropOldest, 2, vec!["2", "3", "4"]),
            (OverflowPolicy::DropNewest, 2, vec!["0", "1", "2"]),
            (OverflowPolicy::Block, 0, vec!["0", "1", "2", "3", "4"]),
        ] {
            let mut b = buf(3, policy);
            // Fits: nothing dropped.
            let mut first = batch(0, 2);
            assert_eq!(b.push_all(&mut first), 0, "{policy:?}");
            assert!(first.is_empty());
            let mut second = batch(2, 5);
            assert_eq!(b.push_all(&mut second), dropped, "{policy:?}");
            assert!(second.is_empty());
            assert_eq!(texts(&mut b), left, "{policy:?}");
        }
        let mut b = buf(3, OverflowPolicy::Error);
        assert_eq!(b.push_all(&mut batch(0, 5)), 2);
        assert_eq!(
            texts(&mut b),
            [
                Error::BufferOverflow { dropped: 2 }.to_string().as_str(),
                "0",
                "1",
                "2"
            ]
        );
    }

    #[test]
    fn drop_oldest_keeps_newest() {
        let mut b = buf(3, OverflowPolicy::DropOldest);
        for i in 0..5 {
            b.push(Message::text(i.to_string()));
        }
        assert_eq!(texts(&mut b), ["2", "3", "4"]);
    }

    #[test]
    fn drop_newest_keeps_oldest() {
        let mut b = buf(3, OverflowPolicy::DropNewest);
        let outcomes: Vec<_> = (0..5)
            .map(|i| b.push(Message::text(i.to_string())))
            .collect();
        assert_eq!(outcomes[4], Pushed::DroppedNewest);
        assert_eq!(texts(&mut b), ["0", "1", "2"]);
    }

    #[test]
    fn error_policy_reports_exact_count_once() {
        let mut b = buf(2, OverflowPolicy::Error);
        for i in 0..7 {
            b.push(Message::text(i.to_string()));
        }
        assert!(matches!(
            b.pop(),
            Some(Err(Error::BufferOverflow { dropped: 5 }))
        ));
        assert_eq!(texts(&mut b), ["0", "1"]);
        assert!(!b.has_item());
    }

    #[test]
    fn block_never_drops_and_reports_free_space() {
        let mut b = buf(2, OverflowPolicy::Block);
        assert_eq!(b.free(), 2);
        b.push(Message::text("a"));
        b.push(Message::text("b"));
        assert_eq!(b.free(), 0);
        assert_eq!(b.push(Message::text("c")), Pushed::Queued);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn dedup_window_forgets_old_ids() {
        let mut d = DedupWindow::new(3);
        assert!(d.insert(1));
        assert!(d.insert(2));
        assert!(!d.insert(1));
        assert!(d.insert(3));
        assert!(d.insert(4)); // evicts 1
        assert!(d.insert(1));
        assert!(!d.insert(4));
    }

    #[test]
    fn validation() {
        assert!(BufferConfig::default().validate().is_ok());
        assert!(BufferConfig::new(0).validate().is_err());
        assert!(BufferConfig::default()
            .dedup(true)
            .dedup_window(0)
            .validate()
            .is_err());
    }
}
