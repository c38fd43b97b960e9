//! Lifecycle events, their fan-out to subscribers, and the dispatcher thread that runs
//! callbacks (never on the I/O thread).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};

use crate::buffer::OverflowPolicy;
use crate::error::Error;
use crate::message::{CloseFrame, Message};
use crate::state::State;

/// Something that happened to a connection.
///
/// Receive them from [`SyncWebSocket::events`](crate::SyncWebSocket::events) or run a callback
/// with [`SyncWebSocket::on`](crate::SyncWebSocket::on). For one connection, events arrive in
/// the order they happened. A reconnect looks like:
///
/// ```text
/// StateChanged(Connected→Disconnected), Disconnected,
/// StateChanged(Disconnected→Reconnecting), Reconnecting { attempt: 1, delay },
/// StateChanged(Reconnecting→BackingOff), StateChanged(BackingOff→Connecting), Connecting,
/// StateChanged(Connecting→Connected), Connected, Reconnected { attempts: 1, downtime }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An attempt started (1 for the first connect, then counting reconnect attempts).
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// The handshake completed.
    Connected {
        /// The subprotocol the server chose, if any.
        subprotocol: Option<String>,
    },
    /// The connection dropped or the peer closed it.
    Disconnected {
        /// The peer's close frame, when it sent one.
        close: Option<CloseFrame>,
        /// The error that ended the connection, when it was not a clean close.
        error: Option<Error>,
    },
    /// A reconnect attempt is scheduled.
    Reconnecting {
        /// The 1-based attempt number since the last stable connection.
        attempt: u32,
        /// How long the engine waits before dialling.
        delay: Duration,
    },
    /// A reconnect succeeded.
    Reconnected {
        /// How many attempts it took.
        attempts: u32,
        /// How long the connection was down.
        downtime: Duration,
    },
    /// A data message arrived (also delivered to `recv`/`messages()`).
    Message(Message),
    /// Something failed: a connect attempt, a hook, a callback, or a fatal error.
    Error(Error),
    /// The connection reached a terminal state and its I/O thread is ending.
    Closed {
        /// The close frame that ended it, if any.
        close: Option<CloseFrame>,
    },
    /// The state changed.
    StateChanged {
        /// The previous state.
        from: State,
        /// The new state.
        to: State,
    },
    /// A heartbeat ping was sent.
    Ping,
    /// A heartbeat pong arrived.
    Pong {
        /// The round-trip time of this ping.
        latency: Duration,
    },
    /// Incoming messages were dropped because the buffer was full.
    BufferOverflow {
        /// How many were dropped in this batch.
        dropped: u64,
        /// The policy that dropped them.
        policy: OverflowPolicy,
    },
    /// After a reconnect, the replay hook is about to be called.
    ReplayStarted {
        /// The last sequence id seen before the drop.
        last_sequence_id: u64,
    },
    /// The replay hook returned.
    ReplayCompleted {
        /// The sequence id that was handed to the hook.
        last_sequence_id: u64,
    },
}

/// The kind of an [`Event`], for [`SyncWebSocket::on`](crate::SyncWebSocket::on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Connecting`]
    Connecting,
    /// [`Event::Connected`]
    Connected,
    /// [`Event::Disconnected`]
    Disconnected,
    /// [`Event::Reconnecting`]
    Reconnecting,
    /// [`Event::Reconnected`]
    Reconnected,
    /// [`Event::Message`]
    Message,
    /// [`Event::Error`]
    Error,
    /// [`Event::Closed`]
    Closed,
    /// [`Event::StateChanged`]
    StateChanged,
    /// [`Event::Ping`]
    Ping,
    /// [`Event::Pong`]
    Pong,
    /// [`Event::BufferOverflow`]
    BufferOverflow,
    /// [`Event::ReplayStarted`]
    ReplayStarted,
    /// [`Event::ReplayCompleted`]
    ReplayCompleted,
}

impl Event {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Connecting { .. } => EventKind::Connecting,
            Event::Connected { .. } => EventKind::Connected,
            Event::Disconnected { .. } => EventKind::Disconnected,
            Event::Reconnecting { .. } => EventKind::Reconnecting,
            Event::Reconnected { .. } => EventKind::Reconnected,
            Event::Message(_) => EventKind::Message,
            Event::Error(_) => EventKind::Error,
            Event::Closed { .. } => EventKind::Closed,
            Event::StateChanged { .. } => EventKind::StateChanged,
            Event::Ping => EventKind::Ping,
            Event::Pong { .. } => EventKind::Pong,
            Event::BufferOverflow { .. } => EventKind::BufferOverflow,
            Event::ReplayStarted { .. } => EventKind::ReplayStarted,
            Event::ReplayCompleted { .. } => EventKind::ReplayCompleted,
        }
    }
}

/// A callback registered with `on`.
pub(crate) type Handler = Arc<dyn Fn(&Event) + Send + Sync>;

/// A subscriber whose queue holds this many [`Event::Message`]s gets no more of them until it
/// catches up (counted in `Stats::events_dropped`), so a subscriber that only watches
/// lifecycle events never grows memory without bound.
pub(crate) const MESSAGE_EVENT_BACKLOG: usize = 1024;
/// Past this backlog, a subscriber misses lifecycle events too.
pub(crate) const EVENT_BACKLOG: usize = 65_536;

/// Fans events out to `events()` subscribers and to the dispatcher thread.
pub(crate) struct EventHub {
    subscribers: Mutex<Vec<Sender<Event>>>,
    handlers: RwLock<Vec<(EventKind, Handler)>>,
    dispatch: Mutex<Option<Sender<Event>>>,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    dispatcher_id: Mutex<Option<ThreadId>>,
    /// Whether anyone wants `Event::Message` (checked per message without locking).
    wants_messages: AtomicBool,
    /// One bit per [`EventKind`] that has at least one callback.
    handler_kinds: AtomicU32,
    finished: AtomicBool,
    dropped: AtomicU64,
    name: String,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.subscribers.lock().len())
            .field("handlers", &self.handlers.read().len())
            .finish()
    }
}

fn admit(tx: &Sender<Event>, event: &Event) -> bool {
    let limit = if matches!(event, Event::Message(_)) {
        MESSAGE_EVENT_BACKLOG
    } else {
        EVENT_BACKLOG
    };
    tx.len() < limit
}

impl EventHub {
    pub(crate) fn new(name: String) -> Self {
        EventHub {
            subscribers: Mutex::new(Vec::new()),
            handlers: RwLock::new(Vec::new()),
            dispatch: Mutex::new(None),
            dispatcher: Mutex::new(None),
            dispatcher_id: Mutex::new(None),
            wants_messages: AtomicBool::new(false),
            handler_kinds: AtomicU32::new(0),
            finished: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            name,
        }
    }

    /// Whether a message event would reach anyone.
    pub(crate) fn wants_messages(&self) -> bool {
        self.wants_messages.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A new subscriber that receives every later event. Disconnected once the connection
    /// has ended and the `Closed` event was delivered.
    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut subs = self.subscribers.lock();
        if !self.finished.load(Ordering::Acquire) {
            subs.push(tx);
            self.wants_messages.store(true, Ordering::Relaxed);
        }
        rx
    }

    /// Registers a callback, starting the dispatcher thread on first use.
    pub(crate) fn on(self: &Arc<Self>, kind: EventKind, handler: Handler) {
        if kind == EventKind::Message {
            self.wants_messages.store(true, Ordering::Relaxed);
        }
        self.handlers.write().push((kind, handler));
        self.handler_kinds
            .fetch_or(1 << kind as u32, Ordering::Release);
        self.ensure_dispatcher();
    }

    fn ensure_dispatcher(self: &Arc<Self>) {
        let mut dispatch = self.dispatch.lock();
        if dispatch.is_some() || self.finished.load(Ordering::Acquire) {
            return;
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Event>();
        let hub = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("jetsocket-events-{}", self.name))
            .spawn(move || hub.run_dispatcher(rx));
        match spawned {
            Ok(handle) => {
                *self.dispatcher_id.lock() = Some(handle.thread().id());
                *self.dispatcher.lock() = Some(handle);
                *dispatch = Some(tx);
            }
            Err(e) => log::error!("could not start the event dispatcher thread: {e}"),
        }
    }

    fn run_dispatcher(&self, rx: Receiver<Event>) {
        for event in rx {
            let kind = event.kind();
            let handlers: Vec<Handler> = self
                .handlers
                .read()
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, h)| Arc::clone(h))
                .collect();
            for handler in handlers {
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| handler(&event))) {
                    let what = panic_message(&*panic);
                    log::error!("an event handler for {kind:?} panicked: {what}");
                    if kind != EventKind::Error {
                        let err =
                            Error::Hook(format!("event handler for {kind:?} panicked: {what}"));
                        self.emit(Event::Error(err));
                    }
                }
            }
        }
    }

    /// Delivers an event to every subscriber and to the dispatcher.
    pub(crate) fn emit(&self, event: Event) {
        {
            let mut subs = self.subscribers.lock();
            if !subs.is_empty() {
                subs.retain(|tx| {
                    if !admit(tx, &event) {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        return true;
                    }
                    tx.send(event.clone()).is_ok()
                });
                if subs.is_empty() {
                    self.refresh_wants_messages(&subs);
                }
            }
        }
        if self.handler_kinds.load(Ordering::Acquire) & (1 << event.kind() as u32) == 0 {
            return;
        }
        if let Some(tx) = self.dispatch.lock().as_ref() {
            if admit(tx, &event) {
                let _ = tx.send(event);
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn refresh_wants_messages(&self, subs: &[Sender<Event>]) {
        let handler_wants = self
            .handlers
            .read()
            .iter()
            .any(|(k, _)| *k == EventKind::Message);
        self.wants_messages
            .store(handler_wants || !subs.is_empty(), Ordering::Relaxed);
    }

    /// No more events: subscribers see their channel disconnect after what is queued, and the
    /// dispatcher ends after running the remaining callbacks.
    pub(crate) fn finish(&self) {
        let mut subs = self.subscribers.lock();
        self.finished.store(true, Ordering::Release);
        subs.clear();
        drop(subs);
        self.dispatch.lock().take();
    }

    /// Waits for the dispatcher thread to end, unless called from it (a callback that closes
    /// its own connection).
    pub(crate) fn join_dispatcher(&self) {
        let current = std::thread::current().id();
        if *self.dispatcher_id.lock() == Some(current) {
            return;
        }
        let handle = self.dispatcher.lock().take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// Removes all callbacks (so closures that captured a handle release it).
    pub(crate) fn clear_handlers(&self) {
        self.handlers.write().clear();
        self.handler_kinds.store(0, Ordering::Release);
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_later_events_and_end_on_finish() {
        let hub = Arc::new(EventHub::new("t".into()));
        hub.emit(Event::Ping);
        let rx = hub.subscribe();
        hub.emit(Event::Pong {
            latency: Duration::from_millis(1),
        });
        hub.finish();
        let got: Vec<_> = rx.iter().map(|e| e.kind()).collect();
        assert_eq!(got, [EventKind::Pong]);
        assert!(hub.subscribe().recv().is_err());
    }

    #[test]
    fn message_backlog_is_bounded() {
        let hub = Arc::new(EventHub::new("t".into()));
        let rx = hub.subscribe();
        for _ in 0..MESSAGE_EVENT_BACKLOG + 10 {
            hub.emit(Event::Message(Message::text("x")));
        }
        hub.emit(Event::Ping);
        assert_eq!(rx.len(), MESSAGE_EVENT_BACKLOG + 1);
        assert_eq!(hub.dropped(), 10);
    }

    #[test]
    fn callbacks_run_on_dispatcher_and_survive_panics() {
        let hub = Arc::new(EventHub::new("t".into()));
        let (tx, rx) = crossbeam_channel::unbounded();
        hub.on(EventKind::Ping, Arc::new(|_| panic!("boom")));
        let tx2 = tx.clone();
        hub.on(
            EventKind::Error,
            Arc::new(move |e| {
                let _ = tx2.send(format!("{e:?}"));
            }),
        );
        hub.on(
            EventKind::Ping,
            Arc::new(move |_| {
                let _ = tx.send(std::thread::current().name().unwrap_or("").to_owned());
            }),
        );
        hub.emit(Event::Ping);
        let mut got: Vec<String> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        got.sort();
        assert!(got[0].contains("boom"), "{got:?}");
        assert_eq!(got[1], "jetsocket-events-t");
        hub.finish();
        hub.join_dispatcher();
    }
}
