//! State shared by the handles, the I/O thread and the dispatcher: the inbound queue, the
//! state, counters, and the wake-up protocol.

use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::buffer::{BufferConfig, InboundBuffer, OverflowPolicy};
use crate::error::{Error, Result, Timeout};
use crate::event::EventHub;
use crate::message::Message;
use crate::permits::SendPermits;
use crate::state::State;
use crate::stats::Counters;

/// The inbound queue between the I/O thread and consumers.
#[derive(Debug)]
pub(crate) struct Inbound {
    inner: Mutex<InboundState>,
    ready: Condvar,
    pub(crate) capacity: usize,
    pub(crate) policy: OverflowPolicy,
    /// How long `pop` spins on an empty queue before sleeping (busy polling).
    spin: Duration,
}

#[derive(Debug)]
struct InboundState {
    buf: InboundBuffer,
    /// Set once the connection is over: what `recv` returns after the last message.
    end: Option<Error>,
    waiters: usize,
}

/// The result of handing a batch to the queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub(crate) dropped: u64,
}

impl Inbound {
    pub(crate) fn new(config: &BufferConfig, spin: Duration) -> Self {
        Inbound {
            spin,
            inner: Mutex::new(InboundState {
                buf: InboundBuffer::new(config),
                end: None,
                waiters: 0,
            }),
            ready: Condvar::new(),
            capacity: config.capacity,
            policy: config.overflow_policy,
        }
    }

    /// Adds a batch under one lock and wakes consumers only if one is waiting.
    pub(crate) fn push_batch(&self, batch: &mut Vec<Message>) -> Delivered {
        if batch.is_empty() {
            return Delivered::default();
        }
        let mut inner = self.inner.lock();
        let dropped = inner.buf.push_all(batch);
        let waiters = inner.waiters;
        drop(inner);
        if waiters > 0 {
            self.ready.notify_all();
        }
        Delivered { dropped }
    }

    /// Room left before the capacity.
    pub(crate) fn free(&self) -> usize {
        self.inner.lock().buf.free()
    }

    pub(crate) fn len(&self) -> usize {
        self.inner.lock().buf.len()
    }

    /// The connection is over; consumers get `end` once the queue is drained.
    pub(crate) fn finish(&self, end: Error) {
        let mut inner = self.inner.lock();
        if inner.end.is_none() {
            inner.end = Some(end);
        }
        drop(inner);
        self.ready.notify_all();
    }

    /// Takes the next message, waiting until `deadline` (`None`: forever; a past instant: no
    /// wait). Returns the queue length left, for the Block policy's wake-up.
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> (Result<Message>, usize) {
        let mut spin_until: Option<Instant> = None;
        let mut inner = self.inner.lock();
        loop {
            if let Some(item) = inner.buf.pop() {
                return (item, inner.buf.len());
            }
            if let Some(end) = &inner.end {
                return (Err(end.clone()), 0);
            }
            if !self.spin.is_zero() {
                let now = Instant::now();
                let until = *spin_until.get_or_insert_with(|| {
                    let until = crate::later(now, self.spin);
                    deadline.map_or(until, |d| d.min(until))
                });
                if now < until {
                    // Let the I/O thread in, then look again.
                    MutexGuard::unlocked(&mut inner, std::hint::spin_loop);
                    continue;
                }
            }
            inner.waiters += 1;
            let timed_out = match deadline {
                None => {
                    self.ready.wait(&mut inner);
                    false
                }
                Some(d) => self.ready.wait_until(&mut inner, d).timed_out(),
            };
            inner.waiters -= 1;
            if timed_out && !inner.buf.has_item() && inner.end.is_none() {
                return (Err(Error::Timeout(Timeout::Recv)), 0);
            }
        }
    }
}

/// Shared between the handles and the I/O thread.
pub(crate) struct Shared {
    pub(crate) name: String,
    state: AtomicU8,
    pub(crate) inbound: Inbound,
    pub(crate) events: Arc<EventHub>,
    pub(crate) counters: Counters,
    waker: Arc<mio::Waker>,
    /// The I/O thread is parked and wants a wake-up when a message is queued.
    io_wants_data: AtomicBool,
    /// The I/O thread stopped reading (Block policy) and wants a wake-up when there is room.
    io_wants_space: AtomicBool,
    /// `close()` was called: sends are refused from now on.
    pub(crate) closing: AtomicBool,
    pub(crate) subprotocol: Mutex<Option<String>>,
    /// The send queue's capacity.
    pub(crate) send_permits: SendPermits,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        name: String,
        buffer: &BufferConfig,
        send_capacity: usize,
        busy_poll: Duration,
        waker: mio::Waker,
    ) -> Self {
        Shared {
            events: Arc::new(EventHub::new(name.clone())),
            name,
            state: AtomicU8::new(State::Idle.as_u8()),
            inbound: Inbound::new(buffer, busy_poll),
            counters: Counters::default(),
            waker: Arc::new(waker),
            io_wants_data: AtomicBool::new(false),
            io_wants_space: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            subprotocol: Mutex::new(None),
            send_permits: SendPermits::new(send_capacity),
        }
    }

    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Only the I/O thread changes the state (through the engine's checked transition).
    pub(crate) fn store_state(&self, state: State) {
        self.state.store(state.as_u8(), Ordering::Release);
        // Senders waiting for room re-check whether to give up.
        self.send_permits.wake_all();
    }

    /// The I/O thread's waker, for helper threads that report back to it.
    pub(crate) fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    /// Wakes the I/O thread unconditionally (control commands, which are rare).
    pub(crate) fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            log::error!("could not wake the I/O thread: {e}");
        }
    }

    /// After queueing a message: wake the I/O thread only if it is parked waiting for one.
    /// Pairs with [`park_for_data`](Self::park_for_data): push, fence, read the flag.
    pub(crate) fn notify_data(&self) {
        fence(Ordering::SeqCst);
        if self.io_wants_data.load(Ordering::Relaxed)
            && self.io_wants_data.swap(false, Ordering::AcqRel)
        {
            self.wake();
        }
    }

    /// Before parking: publish "parked", fence; the caller then re-checks the queue.
    pub(crate) fn park_for_data(&self, wants: bool) {
        self.io_wants_data.store(wants, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The I/O thread stopped reading for lack of room (Block policy).
    pub(crate) fn park_for_space(&self) {
        self.io_wants_space.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn unpark(&self) {
        self.io_wants_data.store(false, Ordering::Relaxed);
        self.io_wants_space.store(false, Ordering::Relaxed);
    }

    /// After a consumer took a message: resume a reader paused by the Block policy once the
    /// queue is down to half its capacity.
    pub(crate) fn notify_space(&self, left: usize) {
        if self.inbound.policy != OverflowPolicy::Block || left > self.inbound.capacity / 2 {
            return;
        }
        fence(Ordering::SeqCst);
        if self.io_wants_space.load(Ordering::Relaxed)
            && self.io_wants_space.swap(false, Ordering::AcqRel)
        {
            self.wake();
        }
    }

    /// Takes the next message for a consumer.
    pub(crate) fn recv(&self, deadline: Option<Instant>) -> Result<Message> {
        let (item, left) = self.inbound.pop(deadline);
        if item.is_ok() {
            self.notify_space(left);
        }
        item
    }
}
