//! The send queue's capacity, kept apart from the queue itself.
//!
//! The queue is an unbounded crossbeam channel, which allocates small blocks only while
//! messages are in it; a bounded channel would allocate all of its slots up front, which is
//! most of an idle connection's memory. [`SendPermits`] bounds it instead: a sender takes a
//! permit before queueing, the I/O thread gives one back for each message it takes out.
//! Waiting for a permit also wakes on every state change, so a sender can give up when the
//! connection goes away.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// How a wait for a permit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// A permit was taken: queue the message.
    Yes,
    /// The caller's condition said to stop waiting.
    Cancelled,
    /// The deadline passed first.
    TimedOut,
}

/// A counting semaphore for the send queue's slots.
#[derive(Debug)]
pub(crate) struct SendPermits {
    capacity: usize,
    used: AtomicUsize,
    /// Senders inside [`acquire`](Self::acquire); releases skip the lock when there are none.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    room: Condvar,
}

impl SendPermits {
    pub(crate) fn new(capacity: usize) -> Self {
        SendPermits {
            capacity,
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            room: Condvar::new(),
        }
    }

    /// Takes a permit if one is free.
    pub(crate) fn try_acquire(&self) -> bool {
        self.used
            .fetch_update(SeqCst, SeqCst, |used| {
                (used < self.capacity).then_some(used + 1)
            })
            .is_ok()
    }

    /// Takes a permit, waiting for one until `deadline` (`None`: as long as it takes).
    /// `cancelled` is asked before each wait and after each wake-up (a release or a
    /// [`wake_all`](Self::wake_all)), with the internal lock held: it must not block.
    pub(crate) fn acquire(
        &self,
        deadline: Option<Instant>,
        cancelled: impl Fn() -> bool,
    ) -> Acquired {
        if self.try_acquire() {
            return Acquired::Yes;
        }
        let mut guard = self.lock.lock();
        // Announced before the re-check: a release that misses the announcement happened
        // before it, so the re-check sees its permit.
        self.waiters.fetch_add(1, SeqCst);
        let outcome = loop {
            if self.try_acquire() {
                break Acquired::Yes;
            }
            if cancelled() {
                break Acquired::Cancelled;
            }
            match deadline {
                None => self.room.wait(&mut guard),
                Some(d) => {
                    if self.room.wait_until(&mut guard, d).timed_out() {
                        break if self.try_acquire() {
                            Acquired::Yes
                        } else {
                            Acquired::TimedOut
                        };
                    }
                }
            }
        };
        self.waiters.fetch_sub(1, SeqCst);
        outcome
    }

    /// Gives back `n` permits (messages taken out of the queue, or a send that failed).
    pub(crate) fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, SeqCst);
        if self.waiters.load(SeqCst) > 0 {
            self.wake_all();
        }
    }

    /// Wakes every waiting sender to re-check its `cancelled` condition (a state change).
    pub(crate) fn wake_all(&self) {
        let _guard = self.lock.lock();
        self.room.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn permits_are_bounded_and_returned() {
        let p = SendPermits::new(2);
        assert!(p.try_acquire());
        assert!(p.try_acquire());
        assert!(!p.try_acquire());
        p.release(1);
        assert!(p.try_acquire());
        assert!(!p.try_acquire());
    }

    #[test]
    fn a_waiter_gets_a_released_permit() {
        let p = Arc::new(SendPermits::new(1));
        assert!(p.try_acquire());
        let waiter = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.acquire(None, || false))
        };
        // Released whether or not the waiter is already waiting: it must not be missed.
        p.release(1);
        assert_eq!(waiter.join().unwrap(), Acquired::Yes);
        assert!(!p.try_acquire());
    }

    #[test]
    fn a_waiter_stops_when_cancelled_or_out_of_time() {
        let p = Arc::new(SendPermits::new(1));
        assert!(p.try_acquire());
        let past = Instant::now();
        assert_eq!(p.acquire(Some(past), || false), Acquired::TimedOut);
        assert_eq!(p.acquire(None, || true), Acquired::Cancelled);
        let stop = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (p, stop) = (Arc::clone(&p), Arc::clone(&stop));
            std::thread::spawn(move || {
                p.acquire(Some(Instant::now() + Duration::from_secs(60)), || {
                    stop.load(SeqCst)
                })
            })
        };
        stop.store(true, SeqCst);
        p.wake_all();
        assert_eq!(waiter.join().unwrap(), Acquired::Cancelled);
    }
}
