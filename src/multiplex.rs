//! [`Multiplex`]: many logical subscriptions over one connection, each with its own queue.
//!
//! Routing runs on the connection's I/O thread (no extra thread): for each incoming message
//! a router extracts the channel and pushes the message into that subscription's bounded
//! queue, or lets it fall through to the connection's inbound buffer, which is the
//! catch-all for unroutable messages. A stacked `on_open` hook resubscribes every active
//! channel after each reconnect, before queued sends go out.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::client::{Builder, SyncWebSocket, WeakSyncWebSocket};
use crate::error::{Error, Result, Timeout};
use crate::event::panic_message;
use crate::hooks::Opened;
use crate::message::Message;
use crate::state::State;
use crate::stats::Stats;

/// Default capacity of each subscription's queue.
const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// How long `subscribe`/`unsubscribe` wait for room in the send queue.
const CONTROL_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping the last handle waits for room to queue the unsubscribe message.
const DROP_SEND_TIMEOUT: Duration = Duration::from_secs(1);

type Extractor = Arc<dyn Fn(&Message) -> Option<String> + Send + Sync>;
type MessageFor = Arc<dyn Fn(&str) -> Message + Send + Sync>;
type BatchMessageFor = Arc<dyn Fn(&[&str]) -> Message + Send + Sync>;

/// How the channel of an incoming message is found.
#[derive(Clone)]
enum Route {
    Extractor(Extractor),
    #[cfg(feature = "json")]
    Key(Arc<[String]>),
}

impl Route {
    fn channel<'m>(&self, msg: &'m Message) -> Option<Cow<'m, str>> {
        match self {
            Route::Extractor(extract) => extract(msg).map(Cow::Owned),
            #[cfg(feature = "json")]
            Route::Key(path) => json_key::field(msg.as_bytes(), path),
        }
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Extractor(_) => f.write_str("Extractor(..)"),
            #[cfg(feature = "json")]
            Route::Key(path) => write!(f, "Key({:?})", path.join(".")),
        }
    }
}

// ----- one channel's queue -------------------------------------------------------------

/// A subscribed channel: its bounded queue and counters. Shared by the routing table, the
/// router on the I/O thread and every [`Subscription`] handle of the channel.
struct Channel {
    name: String,
    /// Creation order, so resubscription follows the order of `subscribe` calls.
    seq: u64,
    capacity: usize,
    queue: Mutex<ChannelQueue>,
    ready: Condvar,
    /// Live `Subscription` handles.
    handles: AtomicUsize,
    received: AtomicU64,
    dropped: AtomicU64,
}

struct ChannelQueue {
    items: VecDeque<Message>,
    waiters: usize,
    /// Unsubscribed or the connection is over: no more messages will come.
    ended: bool,
}

impl Channel {
    fn new(name: String, seq: u64, capacity: usize) -> Self {
        Channel {
            name,
            seq,
            capacity,
            queue: Mutex::new(ChannelQueue {
                items: VecDeque::new(),
                waiters: 0,
                ended: false,
            }),
            ready: Condvar::new(),
            handles: AtomicUsize::new(1),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a message, dropping the oldest when full; never blocks beyond the lock.
    /// Gives the message back if the channel has ended. `routed` is counted under the lock,
    /// so whoever takes the message also sees it counted.
    fn push(&self, msg: Message, routed: &AtomicU64) -> std::result::Result<(), Message> {
        let mut q = self.queue.lock();
        if q.ended {
            return Err(msg);
        }
        if q.items.len() >= self.capacity {
            q.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.items.push_back(msg);
        self.received.fetch_add(1, Ordering::Relaxed);
        routed.fetch_add(1, Ordering::Relaxed);
        let wake = q.waiters > 0;
        drop(q);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    fn end(&self) {
        self.queue.lock().ended = true;
        self.ready.notify_all();
    }

    fn is_ended(&self) -> bool {
        self.queue.lock().ended
    }

    fn len(&self) -> usize {
        self.queue.lock().items.len()
    }

    /// Takes the next message, waiting until `deadline` (`None`: without limit).
    /// `connection_over` is asked once, without the queue lock, whether the connection ended
    /// before this channel could be ended by the connection's end hook (a channel created
    /// just as the connection ended); after that, the end hook wakes every waiter.
    fn pop(
        &self,
        deadline: Option<Instant>,
        connection_over: impl Fn() -> bool,
    ) -> Result<Message> {
        let mut checked = false;
        let mut q = self.queue.lock();
        loop {
            if let Some(msg) = q.items.pop_front() {
                return Ok(msg);
            }
            if q.ended {
                return Err(Error::AlreadyClosed);
            }
            if !checked {
                checked = true;
                // Never hold the queue lock here: the check may drop the last handle of the
                // connection, which joins the I/O thread, which may be routing into us.
                if MutexGuard::unlocked(&mut q, &connection_over) {
                    q.ended = true;
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(Timeout::Recv));
            }
            q.waiters += 1;
            match deadline {
                Some(d) => {
                    self.ready.wait_until(&mut q, d);
                }
                None => self.ready.wait(&mut q),
            }
            q.waiters -= 1;
        }
    }
}

// ----- shared state --------------------------------------------------------------------

/// What the router and the resubscribe hook (both on the I/O thread) share with the handles.
/// It never holds the connection itself, so there is no reference cycle.
struct MuxShared {
    channels: RwLock<HashMap<String, Arc<Channel>>>,
    route: Route,
    subscribe: Option<MessageFor>,
    unsubscribe: Option<MessageFor>,
    batch: Option<(usize, BatchMessageFor)>,
    queue_capacity: usize,
    created: AtomicU64,
    routed: AtomicU64,
    unroutable: AtomicU64,
}

impl MuxShared {
    /// The router: runs on the I/O thread for every incoming message. Never blocks.
    fn route(&self, msg: Message) -> Option<Message> {
        let channel = match catch_unwind(AssertUnwindSafe(|| {
            let name = self.route.channel(&msg)?;
            self.channels.read().get(name.as_ref()).cloned()
        })) {
            Ok(channel) => channel,
            Err(panic) => {
                log::error!(
                    "the multiplex channel extractor panicked: {}",
                    panic_message(&*panic)
                );
                None
            }
        };
        let Some(channel) = channel else {
            self.unroutable.fetch_add(1, Ordering::Relaxed);
            return Some(msg);
        };
        match channel.push(msg, &self.routed) {
            Ok(()) => None,
            Err(msg) => {
                // Unsubscribed a moment ago.
                self.unroutable.fetch_add(1, Ordering::Relaxed);
                Some(msg)
            }
        }
    }

    /// The `on_open` hook: subscribes every active channel on the new connection, in the
    /// order they were subscribed, before any queued message goes out.
    fn resubscribe(&self, conn: &mut Opened<'_>) -> Result<()> {
        if self.subscribe.is_none() && self.batch.is_none() {
            return Ok(());
        }
        let mut active: Vec<(u64, String)> = self
            .channels
            .read()
            .values()
            .map(|c| (c.seq, c.name.clone()))
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        active.sort_unstable_by_key(|(seq, _)| *seq);
        log::debug!(
            "{} {} channel(s)",
            if conn.is_reconnect() {
                "resubscribing"
            } else {
                "subscribing"
            },
            active.len()
        );
        if let Some((max, build)) = &self.batch {
            let names: Vec<&str> = active.iter().map(|(_, n)| n.as_str()).collect();
            for group in names.chunks(*max) {
                conn.send(build(group))?;
            }
        } else if let Some(build) = &self.subscribe {
            for (_, name) in &active {
                conn.send(build(name))?;
            }
        }
        Ok(())
    }

    /// The connection is over: end every channel (queued messages stay readable).
    fn finish(&self) {
        let channels: Vec<Arc<Channel>> = self.channels.write().drain().map(|(_, c)| c).collect();
        for channel in channels {
            channel.end();
        }
    }
}

/// What every [`Subscription`] shares with the [`Multiplex`]: the shared state, a weak
/// handle to the connection, and the lock that orders subscribe/unsubscribe messages.
struct MuxCore {
    shared: Arc<MuxShared>,
    ws: WeakSyncWebSocket,
    /// Held (by caller threads only, never by the I/O thread) from a change of the routing
    /// table until its subscribe or unsubscribe message is queued, so the messages reach
    /// the server in the same order as the changes.
    control: Mutex<()>,
}

impl MuxCore {
    /// Whether the connection is over; if so, ends every channel.
    fn connection_over(&self) -> bool {
        let over = match self.ws.upgrade() {
            None => true,
            Some(ws) => ws.is_closed(),
        };
        if over {
            self.shared.finish();
        }
        over
    }

    fn subscribe(self: &Arc<Self>, ws: &SyncWebSocket, name: String) -> Result<Subscription> {
        let msg = match (&self.shared.subscribe, &self.shared.batch) {
            (Some(build), _) => Some(build(&name)),
            (None, Some((_, build))) => Some(build(&[name.as_str()])),
            (None, None) => None,
        };
        let _order = self.control.lock();
        if ws.is_closed() {
            self.shared.finish();
            return Err(Error::AlreadyClosed);
        }
        let (channel, send) = {
            let mut channels = self.shared.channels.write();
            if let Some(existing) = channels.get(&name) {
                existing.handles.fetch_add(1, Ordering::AcqRel);
                return Ok(Subscription {
                    channel: Arc::clone(existing),
                    core: Arc::clone(self),
                });
            }
            let seq = self.shared.created.fetch_add(1, Ordering::Relaxed);
            let channel = Arc::new(Channel::new(name.clone(), seq, self.shared.queue_capacity));
            channels.insert(name, Arc::clone(&channel));
            // Read under the table lock, after the insert: see `send_decision`.
            (channel, send_decision(ws.state()))
        };
        if let (true, Some(msg)) = (send, msg) {
            if let Err(e) = ws.send_timeout(msg, CONTROL_SEND_TIMEOUT) {
                let mut channels = self.shared.channels.write();
                if channels
                    .get(&channel.name)
                    .is_some_and(|c| Arc::ptr_eq(c, &channel))
                {
                    channels.remove(&channel.name);
                }
                drop(channels);
                channel.end();
                return Err(e);
            }
        }
        Ok(Subscription {
            channel,
            core: Arc::clone(self),
        })
    }

    fn unsubscribe(&self, ws: &SyncWebSocket, name: &str) -> Result<bool> {
        let _order = self.control.lock();
        let Some(channel) = self.shared.channels.write().remove(name) else {
            return Ok(false);
        };
        channel.end();
        self.send_unsubscribe(ws, name, CONTROL_SEND_TIMEOUT)?;
        Ok(true)
    }

    /// Queues the unsubscribe message if the server may know the channel: only while a
    /// connection is open or opening. A connection that is away forgot it anyway, and the
    /// next resubscription leaves it out.
    fn send_unsubscribe(&self, ws: &SyncWebSocket, name: &str, timeout: Duration) -> Result<()> {
        let Some(build) = &self.shared.unsubscribe else {
            return Ok(());
        };
        if !matches!(ws.state(), State::Connecting | State::Connected) {
            return Ok(());
        }
        match ws.send_timeout(build(name), timeout) {
            Ok(()) | Err(Error::AlreadyClosed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether `subscribe()` queues the subscribe message itself, given the state read after
/// the new channel is in the table (under the table lock, which the resubscribe hook also
/// takes, so the two are ordered):
///
/// * `Connected`: the hook of this connection has run: queue it.
/// * `Connecting`: the hook of this attempt may have run already (it runs just before the
///   state becomes `Connected`), or may run next and include the new channel. Queue it: at
///   worst the server sees the subscribe message twice, never zero times.
/// * anything else (`Idle`, away, closing): no connection is open or past its hook, so the
///   next hook runs after the insert and sends it. Queueing too would send it twice.
fn send_decision(state: State) -> bool {
    matches!(state, State::Connecting | State::Connected)
}

/// Owned by the [`Multiplex`] clones; dropping the last one ends every subscription and then
/// closes the connection.
struct MuxOwner {
    ws: SyncWebSocket,
    core: Arc<MuxCore>,
}

impl Drop for MuxOwner {
    fn drop(&mut self) {
        self.core.shared.finish();
    }
}

// ----- the public API ------------------------------------------------------------------

/// Configures a [`Multiplex`]: the connection options (any [`Builder`]), how to find a
/// message's channel, and the subscribe and unsubscribe messages. Start with
/// [`Multiplex::builder`] or [`Multiplex::from_builder`].
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// use std::time::Duration;
/// use jetsocket::{HeartbeatConfig, Multiplex, SyncWebSocket};
///
/// let options = SyncWebSocket::builder(server.url())
///     .heartbeat(HeartbeatConfig::new(Duration::from_secs(20), Duration::from_secs(5)));
/// let mux = Multiplex::from_builder(options)
///     .channel_extractor(|msg| Some(msg.as_text()?.split_once(':')?.0.to_owned()))
///     .subscribe_message(|channel| format!("subscribe:{channel}"))
///     .unsubscribe_message(|channel| format!("unsubscribe:{channel}"))
///     .queue_capacity(10_000)
///     .connect()?;
/// # let _ = mux;
/// # Ok::<(), jetsocket::Error>(())
/// ```
pub struct MultiplexBuilder {
    builder: Builder,
    route: Option<Route>,
    subscribe: Option<MessageFor>,
    unsubscribe: Option<MessageFor>,
    batch: Option<(usize, BatchMessageFor)>,
    queue_capacity: usize,
}

impl fmt::Debug for MultiplexBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiplexBuilder")
            .field("builder", &self.builder)
            .field("route", &self.route)
            .field("subscribe_message", &self.subscribe.is_some())
            .field("unsubscribe_message", &self.unsubscribe.is_some())
            .field("subscribe_batch", &self.batch.as_ref().map(|(max, _)| *max))
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl MultiplexBuilder {
    /// Routes by the JSON field `key` of each message (text or binary): a top-level field
    /// such as `"stream"` (Binance) or `"topic"` (Bybit), or a dotted path into nested
    /// objects such as `"arg.channel"` (OKX). The field's value must be a string or an
    /// integer. Messages that are not JSON objects or lack the field are unroutable. The
    /// field is found without building a JSON tree and, for unescaped strings, without
    /// copying; parsing stops at the field.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use std::time::Duration;
    /// use jetsocket::Multiplex;
    ///
    /// let mux = Multiplex::builder(server.url())
    ///     .channel_key("stream")
    ///     .connect()?;
    /// let trades = mux.subscribe("btcusdt@trade")?;
    /// // The echo server sends it back; a real exchange would publish it.
    /// mux.connection().send_text(r#"{"stream":"btcusdt@trade","data":{"p":"1.5"}}"#)?;
    /// let msg = trades.recv_timeout(Duration::from_secs(10))?;
    /// assert!(msg.as_text().unwrap().contains(r#""p":"1.5""#));
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn channel_key(mut self, key: impl AsRef<str>) -> Self {
        let path: Vec<String> = key.as_ref().split('.').map(str::to_owned).collect();
        self.route = Some(Route::Key(path.into()));
        self
    }

    /// Routes by what `extract` returns for each message: the channel's name, or `None`
    /// for an unroutable message. It runs on the I/O thread for every message, so it must
    /// be quick and must not block; a panic counts the message as unroutable.
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::Multiplex;
    /// // "trades|{...}" belongs to the channel "trades".
    /// let builder = Multiplex::builder("ws://127.0.0.1:9/")
    ///     .channel_extractor(|msg| Some(msg.as_text()?.split_once('|')?.0.to_owned()));
    /// # let _ = builder;
    /// ```
    pub fn channel_extractor(
        mut self,
        extract: impl Fn(&Message) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.route = Some(Route::Extractor(Arc::new(extract)));
        self
    }

    /// The message that subscribes to a channel: sent by
    /// [`subscribe`](Multiplex::subscribe) and, for every active channel, after each
    /// (re)connect. Defaults to none: subscribing only adds a route (for servers that
    /// choose the streams from the URL).
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::Multiplex;
    /// let builder = Multiplex::builder("ws://127.0.0.1:9/")
    ///     .channel_extractor(|msg| Some(msg.as_text()?.to_owned()))
    ///     .subscribe_message(|channel| {
    ///         format!(r#"{{"method":"SUBSCRIBE","params":["{channel}"],"id":1}}"#)
    ///     });
    /// # let _ = builder;
    /// ```
    pub fn subscribe_message<M: Into<Message>>(
        mut self,
        build: impl Fn(&str) -> M + Send + Sync + 'static,
    ) -> Self {
        self.subscribe = Some(Arc::new(move |channel| build(channel).into()));
        self
    }

    /// The message that unsubscribes from a channel: sent by
    /// [`unsubscribe`](Multiplex::unsubscribe) or when the last [`Subscription`] handle of
    /// the channel is dropped, while a connection is open. Defaults to none.
    pub fn unsubscribe_message<M: Into<Message>>(
        mut self,
        build: impl Fn(&str) -> M + Send + Sync + 'static,
    ) -> Self {
        self.unsubscribe = Some(Arc::new(move |channel| build(channel).into()));
        self
    }

    /// Subscribes many channels per message when (re)subscribing after a connect: active
    /// channels go out in groups of at most `max_channels`, one message per group, instead
    /// of one [`subscribe_message`](Self::subscribe_message) each. Exchanges limit the
    /// messages a client may send per second, so a reconnect with many channels needs
    /// this. Later single subscriptions use `subscribe_message`, or this with one channel
    /// if that is not set. Defaults to none.
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::Multiplex;
    /// let builder = Multiplex::builder("ws://127.0.0.1:9/")
    ///     .channel_extractor(|msg| Some(msg.as_text()?.to_owned()))
    ///     .subscribe_message(|ch| format!(r#"{{"op":"subscribe","args":["{ch}"]}}"#))
    ///     // Bybit accepts at most 10 topics per request.
    ///     .subscribe_batch(10, |chs| {
    ///         let args: Vec<String> = chs.iter().map(|c| format!("\"{c}\"")).collect();
    ///         format!(r#"{{"op":"subscribe","args":[{}]}}"#, args.join(","))
    ///     });
    /// # let _ = builder;
    /// ```
    pub fn subscribe_batch<M: Into<Message>>(
        mut self,
        max_channels: usize,
        build: impl Fn(&[&str]) -> M + Send + Sync + 'static,
    ) -> Self {
        self.batch = Some((max_channels, Arc::new(move |chs| build(chs).into())));
        self
    }

    /// The capacity of each subscription's queue; when a queue is full the oldest message
    /// is dropped (counted in [`SubscriptionStats::dropped`]), so a slow consumer never
    /// stalls the connection or the other subscriptions. Defaults to 1000.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Checks the settings and starts the connection's I/O thread without dialling:
    /// subscribe first, then [`connect`](Multiplex::connect), and the first connection
    /// subscribes everything.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] without a channel key or extractor, with a queue capacity
    /// or batch size of zero; otherwise as [`Builder::build`].
    pub fn build(self) -> Result<Multiplex> {
        let route = self.route.ok_or_else(|| {
            Error::config("a multiplex needs a channel key or a channel extractor")
        })?;
        if self.queue_capacity == 0 {
            return Err(Error::config("queue_capacity must be at least 1"));
        }
        if self.batch.as_ref().is_some_and(|(max, _)| *max == 0) {
            return Err(Error::config(
                "subscribe_batch needs at least 1 channel per message",
            ));
        }
        let shared = Arc::new(MuxShared {
            channels: RwLock::new(HashMap::new()),
            route,
            subscribe: self.subscribe,
            unsubscribe: self.unsubscribe,
            batch: self.batch,
            queue_capacity: self.queue_capacity,
            created: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            unroutable: AtomicU64::new(0),
        });
        let router = Arc::clone(&shared);
        let hook = Arc::clone(&shared);
        let ender = Arc::clone(&shared);
        let ws = self
            .builder
            .router(Arc::new(move |msg| router.route(msg)))
            .on_open(move |conn| hook.resubscribe(conn))
            // However the connection ends, blocked receivers wake at once.
            .on_end(Arc::new(move || ender.finish()))
            .build()?;
        let core = Arc::new(MuxCore {
            shared,
            ws: ws.downgrade(),
            control: Mutex::new(()),
        });
        Ok(Multiplex {
            owner: Arc::new(MuxOwner { ws, core }),
        })
    }

    /// Builds and connects, returning once connected.
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build), then as [`Multiplex::connect`].
    pub fn connect(self) -> Result<Multiplex> {
        let mux = self.build()?;
        mux.connect()?;
        Ok(mux)
    }
}

/// Many logical subscriptions over one [`SyncWebSocket`].
///
/// Every incoming message is routed on the connection's I/O thread, without an extra
/// thread: its channel is found by a JSON field
/// ([`channel_key`](MultiplexBuilder::channel_key), `json` feature) or an extractor function
/// ([`channel_extractor`](MultiplexBuilder::channel_extractor)), and the message goes to that
/// channel's [`Subscription`], which has its own bounded queue. Messages whose channel cannot
/// be found or is not subscribed are counted as unroutable and kept in the connection's
/// inbound buffer: read them with [`recv_unroutable`](Self::recv_unroutable) (subscription
/// acknowledgements and errors from the server end up there).
///
/// After every reconnect, all active channels are subscribed again (after any `on_open`
/// hook of the builder, such as authentication) before queued messages go out.
///
/// `Multiplex` is `Clone + Send + Sync`; clones share the connection. Dropping the last
/// clone, or [`close`](Self::close), closes the connection and ends every subscription
/// (messages already queued stay readable).
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// use std::time::Duration;
/// use jetsocket::Multiplex;
///
/// // A line protocol: "<channel>:<payload>".
/// let mux = Multiplex::builder(server.url())
///     .channel_extractor(|msg| Some(msg.as_text()?.split_once(':')?.0.to_owned()))
///     .connect()?;
/// let trades = mux.subscribe("trades")?;
/// let quotes = mux.subscribe("quotes")?;
///
/// // The echo server sends these back; a real server would publish them.
/// for line in ["trades:1", "quotes:2", "news:3", "trades:4"] {
///     mux.connection().send_text(line)?;
/// }
/// let t = Duration::from_secs(10);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         assert_eq!(trades.recv_timeout(t).unwrap().as_text(), Some("trades:1"));
///         assert_eq!(trades.recv_timeout(t).unwrap().as_text(), Some("trades:4"));
///     });
///     s.spawn(|| assert_eq!(quotes.recv_timeout(t).unwrap().as_text(), Some("quotes:2")));
/// });
/// // Nobody subscribed to "news".
/// assert_eq!(mux.recv_unroutable_timeout(t)?.as_text(), Some("news:3"));
/// assert_eq!(mux.stats().unroutable, 1);
/// mux.close()?;
/// # Ok::<(), jetsocket::Error>(())
/// ```
#[derive(Clone)]
pub struct Multiplex {
    owner: Arc<MuxOwner>,
}

impl fmt::Debug for Multiplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Multiplex")
            .field("connection", &self.owner.ws)
            .field("route", &self.owner.core.shared.route)
            .field("subscriptions", &self.subscriptions())
            .finish()
    }
}

impl Multiplex {
    /// Starts configuring a multiplex over a connection to `url` with default options.
    pub fn builder(url: impl AsRef<str>) -> MultiplexBuilder {
        Self::from_builder(SyncWebSocket::builder(url))
    }

    /// Starts configuring a multiplex over a connection with the options of `builder`
    /// (headers, TLS, backoff, heartbeat, `on_open` hooks, ...). The builder's `on_open`
    /// hooks run before the multiplex subscribes, so authenticate there.
    pub fn from_builder(builder: Builder) -> MultiplexBuilder {
        MultiplexBuilder {
            builder,
            route: None,
            subscribe: None,
            unsubscribe: None,
            batch: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }

    /// Connects a multiplex made with [`MultiplexBuilder::build`], returning once connected
    /// (the subscribe messages for channels subscribed before are out by then).
    ///
    /// # Errors
    ///
    /// As [`SyncWebSocket::connect`].
    pub fn connect(&self) -> Result<()> {
        self.owner.ws.connect()
    }

    /// Subscribes to `channel` and returns a handle with its own queue.
    ///
    /// The subscribe message (if one is configured) is queued now while a connection is
    /// open or opening, and otherwise sent by the next connect; either way it goes out
    /// once per connection. Subscribing to a channel that is already subscribed sends
    /// nothing and returns another handle to the same queue (each message then goes to
    /// one of the handles, as with any shared queue).
    ///
    /// While a connection attempt is in progress the server may receive the subscribe
    /// message twice (once from the resubscription that opens the connection and once
    /// from this call); it never receives it zero times.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use std::time::Duration;
    /// use jetsocket::Multiplex;
    ///
    /// let mux = Multiplex::builder(server.url())
    ///     .channel_extractor(|msg| Some(msg.as_text()?.split_once(':')?.0.to_owned()))
    ///     .subscribe_message(|channel| format!("sub:{channel}"))
    ///     .build()?;
    /// let ticks = mux.subscribe("ticks")?;   // before connecting: sent by connect()
    /// mux.connect()?;
    /// // The echo server returns our subscribe message, which belongs to channel "sub".
    /// assert_eq!(mux.recv_unroutable_timeout(Duration::from_secs(10))?.as_text(), Some("sub:ticks"));
    /// mux.connection().send_text("ticks:42")?;
    /// assert_eq!(ticks.recv_timeout(Duration::from_secs(10))?.as_text(), Some("ticks:42"));
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyClosed`] once the connection has ended; the error of
    /// [`SyncWebSocket::send_timeout`] if the subscribe message could not be queued within
    /// 10 s (the channel is then not subscribed).
    pub fn subscribe(&self, channel: impl Into<String>) -> Result<Subscription> {
        self.owner.core.subscribe(&self.owner.ws, channel.into())
    }

    /// Unsubscribes from `channel`: its handles stop receiving (their queued messages stay
    /// readable), and the unsubscribe message (if configured) is queued while a connection
    /// is open or opening. Returns whether the channel was subscribed.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use jetsocket::Multiplex;
    /// let mux = Multiplex::builder(server.url())
    ///     .channel_extractor(|msg| Some(msg.as_text()?.to_owned()))
    ///     .connect()?;
    /// let sub = mux.subscribe("a")?;
    /// assert!(mux.unsubscribe("a")?);
    /// assert!(!sub.is_active());
    /// assert!(!mux.unsubscribe("a")?);
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The error of [`SyncWebSocket::send_timeout`] if the unsubscribe message could not be
    /// queued within 10 s; the channel is unsubscribed locally all the same.
    pub fn unsubscribe(&self, channel: &str) -> Result<bool> {
        self.owner.core.unsubscribe(&self.owner.ws, channel)
    }

    /// The subscribed channels, in the order they were subscribed.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut active: Vec<(u64, String)> = self
            .owner
            .core
            .shared
            .channels
            .read()
            .values()
            .map(|c| (c.seq, c.name.clone()))
            .collect();
        active.sort_unstable_by_key(|(seq, _)| *seq);
        active.into_iter().map(|(_, name)| name).collect()
    }

    /// Whether `channel` is subscribed.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.owner.core.shared.channels.read().contains_key(channel)
    }

    /// Takes the next unroutable message (its channel could not be found or is not
    /// subscribed), waiting as long as it takes. This is the connection's own inbound
    /// buffer ([`SyncWebSocket::recv`]), with its capacity and overflow policy.
    ///
    /// # Errors
    ///
    /// As [`SyncWebSocket::recv`]: once the connection has ended and the buffer is drained,
    /// why it ended.
    pub fn recv_unroutable(&self) -> Result<Message> {
        self.owner.ws.recv()
    }

    /// Takes the next unroutable message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`SyncWebSocket::recv_timeout`].
    pub fn recv_unroutable_timeout(&self, timeout: Duration) -> Result<Message> {
        self.owner.ws.recv_timeout(timeout)
    }

    /// Takes the next unroutable message if one is waiting.
    ///
    /// # Errors
    ///
    /// As [`SyncWebSocket::try_recv`].
    pub fn try_recv_unroutable(&self) -> Result<Option<Message>> {
        self.owner.ws.try_recv()
    }

    /// The underlying connection: send any message, watch its state and events, read its
    /// statistics. Its `recv` family reads the unroutable messages.
    pub fn connection(&self) -> &SyncWebSocket {
        &self.owner.ws
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        self.owner.ws.state()
    }

    /// A snapshot of the routing statistics and the connection's [`Stats`].
    pub fn stats(&self) -> MultiplexStats {
        let shared = &self.owner.core.shared;
        MultiplexStats {
            subscriptions_total: shared.created.load(Ordering::Relaxed),
            subscriptions_active: shared.channels.read().len(),
            messages_routed: shared.routed.load(Ordering::Relaxed),
            unroutable: shared.unroutable.load(Ordering::Relaxed),
            connection: self.owner.ws.stats(),
        }
    }

    /// Closes the connection (see [`SyncWebSocket::close`]) and ends every subscription;
    /// messages already queued stay readable.
    ///
    /// # Errors
    ///
    /// As [`SyncWebSocket::close`].
    pub fn close(&self) -> Result<()> {
        let result = self.owner.ws.close();
        self.owner.core.shared.finish();
        result
    }
}

/// One channel of a [`Multiplex`], with its own bounded queue; from
/// [`Multiplex::subscribe`].
///
/// `Subscription` is `Clone + Send + Sync`: clones share the queue, and different
/// subscriptions can be consumed on different threads. Dropping the last handle of a
/// channel unsubscribes it (sending the unsubscribe message, waiting at most 1 s for room
/// in the send queue). A subscription does not keep the connection open: once the
/// [`Multiplex`] is closed or dropped, the receive calls return what is queued, then
/// [`Error::AlreadyClosed`].
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// use jetsocket::Multiplex;
///
/// let mux = Multiplex::builder(server.url())
///     .channel_extractor(|msg| Some(msg.as_text()?.split_once(':')?.0.to_owned()))
///     .connect()?;
/// let sub = mux.subscribe("trades")?;
/// mux.connection().send_text("trades:1")?;
/// mux.connection().send_text("trades:2")?;
///
/// // Consume on another thread. Without `take`, the loop would run until the channel is
/// // unsubscribed or the multiplex closed.
/// let worker = std::thread::spawn(move || {
///     sub.messages().take(2).map(|m| m.as_text().unwrap().to_owned()).collect::<Vec<_>>()
/// });
/// assert_eq!(worker.join().unwrap(), ["trades:1", "trades:2"]);
/// mux.close()?;
/// # Ok::<(), jetsocket::Error>(())
/// ```
pub struct Subscription {
    channel: Arc<Channel>,
    core: Arc<MuxCore>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel.name)
            .field("queued", &self.channel.len())
            .field("ended", &self.channel.is_ended())
            .finish()
    }
}

impl Clone for Subscription {
    fn clone(&self) -> Self {
        // This handle keeps the count at 1 or more, so no drop can race it to zero.
        self.channel.handles.fetch_add(1, Ordering::AcqRel);
        Subscription {
            channel: Arc::clone(&self.channel),
            core: Arc::clone(&self.core),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Not the last handle: nothing else to do.
        let mut n = self.channel.handles.load(Ordering::Acquire);
        while n > 1 {
            match self.channel.handles.compare_exchange_weak(
                n,
                n - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => n = now,
            }
        }
        // Possibly the last: order this with subscribe() and unsubscribe(), which may add a
        // handle under the same locks.
        let order = self.core.control.lock();
        let removed = {
            let mut channels = self.core.shared.channels.write();
            if self.channel.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
                return;
            }
            let ours = channels
                .get(&self.channel.name)
                .is_some_and(|c| Arc::ptr_eq(c, &self.channel));
            if ours {
                channels.remove(&self.channel.name);
            }
            ours
        };
        self.channel.end();
        if !removed {
            return;
        }
        let Some(ws) = self.core.ws.upgrade() else {
            return;
        };
        if let Err(e) = self
            .core
            .send_unsubscribe(&ws, &self.channel.name, DROP_SEND_TIMEOUT)
        {
            log::warn!(
                "could not queue the unsubscribe message for {:?}: {e}",
                self.channel.name
            );
        }
        drop(order);
        // If the multiplex was dropped meanwhile, this closes the connection: no lock held.
        drop(ws);
    }
}

impl Subscription {
    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.channel.name
    }

    fn pop(&self, deadline: Option<Instant>) -> Result<Message> {
        self.channel.pop(deadline, || self.core.connection_over())
    }

    /// Takes the next message of this channel, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyClosed`] once the channel was unsubscribed or the connection has
    /// ended, and the queue is drained.
    pub fn recv(&self) -> Result<Message> {
        self.pop(None)
    }

    /// Takes the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] ([`Timeout::Recv`]) if nothing arrived in time; otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message> {
        self.pop(Some(crate::later(Instant::now(), timeout)))
    }

    /// Takes the next message, waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Message> {
        self.pop(Some(deadline))
    }

    /// Takes the next message if one is waiting: `Ok(None)` if none is.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), without waiting.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        match self.pop(Some(Instant::now())) {
            Ok(msg) => Ok(Some(msg)),
            Err(Error::Timeout(Timeout::Recv)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A blocking iterator over this channel's messages. It ends once the channel was
    /// unsubscribed or the connection has ended, and the queue is drained.
    pub fn messages(&self) -> SubscriptionMessages<'_> {
        SubscriptionMessages { sub: self }
    }

    /// Whether the channel is still subscribed and the connection has not ended.
    pub fn is_active(&self) -> bool {
        !self.channel.is_ended() && !self.core.connection_over()
    }

    /// Unsubscribes this channel, as [`Multiplex::unsubscribe`] does, for every handle.
    ///
    /// # Errors
    ///
    /// As [`Multiplex::unsubscribe`]; [`Error::AlreadyClosed`] if the multiplex is gone.
    pub fn unsubscribe(&self) -> Result<()> {
        let ws = self.core.ws.upgrade().ok_or(Error::AlreadyClosed)?;
        let result = {
            let _order = self.core.control.lock();
            let mut channels = self.core.shared.channels.write();
            let ours = channels
                .get(&self.channel.name)
                .is_some_and(|c| Arc::ptr_eq(c, &self.channel));
            if ours {
                channels.remove(&self.channel.name);
            }
            drop(channels);
            self.channel.end();
            if ours {
                self.core
                    .send_unsubscribe(&ws, &self.channel.name, CONTROL_SEND_TIMEOUT)
            } else {
                Ok(())
            }
        };
        drop(ws);
        result
    }

    /// A snapshot of this subscription's counters.
    pub fn stats(&self) -> SubscriptionStats {
        SubscriptionStats {
            messages_received: self.channel.received.load(Ordering::Relaxed),
            queued: self.channel.len(),
            capacity: self.channel.capacity,
            dropped: self.channel.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A blocking iterator over a subscription's messages; see [`Subscription::messages`].
#[derive(Debug)]
pub struct SubscriptionMessages<'a> {
    sub: &'a Subscription,
}

impl Iterator for SubscriptionMessages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.sub.recv().ok()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = Message;
    type IntoIter = SubscriptionMessages<'a>;

    fn into_iter(self) -> SubscriptionMessages<'a> {
        self.messages()
    }
}

/// A snapshot of a [`Multiplex`]'s statistics, from [`Multiplex::stats`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MultiplexStats {
    /// Channels subscribed over the multiplex's life (a channel subscribed again after an
    /// unsubscribe counts again).
    pub subscriptions_total: u64,
    /// Channels subscribed now.
    pub subscriptions_active: usize,
    /// Messages delivered to a subscription's queue.
    pub messages_routed: u64,
    /// Messages whose channel could not be found or was not subscribed; they went to the
    /// catch-all ([`Multiplex::recv_unroutable`]).
    pub unroutable: u64,
    /// The connection's statistics.
    pub connection: Stats,
}

/// A snapshot of a [`Subscription`]'s statistics, from [`Subscription::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Messages routed to this channel (including any dropped later).
    pub messages_received: u64,
    /// Messages waiting in the queue.
    pub queued: usize,
    /// The queue's capacity.
    pub capacity: usize,
    /// Messages dropped because the queue was full (the oldest go first).
    pub dropped: u64,
}

// ----- JSON channel keys ---------------------------------------------------------------

/// Finds one field of a JSON object without building a tree: keys are compared in place,
/// other values are skipped, and parsing stops as soon as the field is found.
#[cfg(feature = "json")]
mod json_key {
    use std::borrow::Cow;
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// The string or integer at `path` (one key per level) of the JSON object in `bytes`.
    pub(super) fn field<'m>(bytes: &'m [u8], path: &[String]) -> Option<Cow<'m, str>> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' || path.is_empty() {
            return None;
        }
        let out = Cell::new(None);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        // Finding the field aborts the parse with an error on purpose; `out` tells.
        let _ = Field { path, out: &out }.deserialize(&mut de);
        out.into_inner()
    }

    type Out<'c, 'm> = &'c Cell<Option<Cow<'m, str>>>;

    /// The value at `path` below the current position.
    struct Field<'p, 'c, 'm> {
        path: &'p [String],
        out: Out<'c, 'm>,
    }

    impl<'m> DeserializeSeed<'m> for Field<'_, '_, 'm> {
        type Value = ();

        fn deserialize<D: Deserializer<'m>>(self, d: D) -> Result<(), D::Error> {
            match self.path.split_first() {
                Some((key, rest)) => d.deserialize_map(Object {
                    key,
                    rest,
                    out: self.out,
                }),
                None => d.deserialize_any(Leaf { out: self.out }),
            }
        }
    }

    struct Object<'p, 'c, 'm> {
        key: &'p str,
        rest: &'p [String],
        out: Out<'c, 'm>,
    }

    impl<'m> Visitor<'m> for Object<'_, '_, 'm> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'m>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(matched) = map.next_key_seed(KeyIs(self.key))? {
                if matched {
                    return map.next_value_seed(Field {
                        path: self.rest,
                        out: self.out,
                    });
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }

    /// Compares a key with the wanted one without copying it.
    struct KeyIs<'p>(&'p str);

    impl<'m> DeserializeSeed<'m> for KeyIs<'_> {
        type Value = bool;

        fn deserialize<D: Deserializer<'m>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for KeyIs<'_> {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object key")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }

    /// The channel itself: a string (borrowed when it has no escapes) or an integer. Stores
    /// it and stops the parse.
    struct Leaf<'c, 'm> {
        out: Out<'c, 'm>,
    }

    impl<'m> Leaf<'_, 'm> {
        fn found<E: de::Error>(self, value: Cow<'m, str>) -> Result<(), E> {
            self.out.set(Some(value));
            Err(E::custom("found"))
        }
    }

    impl<'m> Visitor<'m> for Leaf<'_, 'm> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an integer")
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'m str) -> Result<(), E> {
            self.found(Cow::Borrowed(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.found(Cow::Owned(v.to_owned()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.found(Cow::Owned(v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.found(Cow::Owned(v.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn handles_are_send_sync() {
        assert_send_sync::<Multiplex>();
        assert_send_sync::<Subscription>();
        assert_send_sync::<MultiplexBuilder>();
        assert_send_sync::<MultiplexStats>();
    }

    #[test]
    fn queue_drops_oldest_and_counts() {
        let ch = Channel::new("a".into(), 0, 2);
        let routed = AtomicU64::new(0);
        for i in 0..5 {
            ch.push(Message::text(i.to_string()), &routed).unwrap();
        }
        assert_eq!(routed.load(Ordering::Relaxed), 5);
        assert_eq!(ch.received.load(Ordering::Relaxed), 5);
        assert_eq!(ch.dropped.load(Ordering::Relaxed), 3);
        let never = || false;
        assert_eq!(
            ch.pop(Some(Instant::now()), never).unwrap(),
            Message::text("3")
        );
        assert_eq!(
            ch.pop(Some(Instant::now()), never).unwrap(),
            Message::text("4")
        );
        assert!(matches!(
            ch.pop(Some(Instant::now()), never),
            Err(Error::Timeout(Timeout::Recv))
        ));
        ch.push(Message::text("5"), &routed).unwrap();
        ch.end();
        assert!(ch.push(Message::text("6"), &routed).is_err());
        assert_eq!(ch.pop(None, never).unwrap(), Message::text("5"));
        assert!(matches!(ch.pop(None, never), Err(Error::AlreadyClosed)));
    }

    #[test]
    fn a_blocked_receiver_notices_the_end() {
        let ch = Channel::new("a".into(), 0, 2);
        assert!(matches!(ch.pop(None, || true), Err(Error::AlreadyClosed)));
    }

    #[test]
    fn send_decisions() {
        for s in State::ALL {
            let expected = matches!(s, State::Connected | State::Connecting);
            assert_eq!(send_decision(s), expected, "{s}");
        }
    }

    #[test]
    fn builder_needs_a_route() {
        let err = Multiplex::builder("ws://127.0.0.1:9/").build().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        let err = Multiplex::builder("ws://127.0.0.1:9/")
            .channel_extractor(|_| None)
            .queue_capacity(0)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        let err = Multiplex::builder("ws://127.0.0.1:9/")
            .channel_extractor(|_| None)
            .subscribe_batch(0, |_| "x")
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_keys() {
        let key = |s: &str| -> Vec<String> { s.split('.').map(str::to_owned).collect() };
        let f = |json: &str, path: &str| {
            json_key::field(json.as_bytes(), &key(path)).map(|c| c.into_owned())
        };
        let binance = r#"{"stream":"btcusdt@trade","data":{"e":"trade","p":"1.0"}}"#;
        assert_eq!(f(binance, "stream").as_deref(), Some("btcusdt@trade"));
        let bybit = r#" {"type":"snapshot","data":[1,2,{"x":null}],"topic":"orderbook.1.BTCUSDT"}"#;
        assert_eq!(f(bybit, "topic").as_deref(), Some("orderbook.1.BTCUSDT"));
        let okx = r#"{"arg":{"instId":"BTC-USDT","channel":"trades"},"data":[]}"#;
        assert_eq!(f(okx, "arg.channel").as_deref(), Some("trades"));
        assert_eq!(f(r#"{"id":42}"#, "id").as_deref(), Some("42"));
        assert_eq!(f(r#"{"id":-1}"#, "id").as_deref(), Some("-1"));
        assert_eq!(f(r#"{"s":"a\"b"}"#, "s").as_deref(), Some("a\"b"));
        // Borrowed when unescaped.
        let b = json_key::field(binance.as_bytes(), &key("stream")).unwrap();
        assert!(matches!(b, Cow::Borrowed(_)));
        // Absent, wrong type, not an object, not JSON, truncated.
        assert_eq!(f(r#"{"result":null,"id":1}"#, "stream"), None);
        assert_eq!(f(r#"{"stream":{"a":1}}"#, "stream"), None);
        assert_eq!(f(r#"{"stream":1.5}"#, "stream"), None);
        assert_eq!(f(r#"["stream"]"#, "stream"), None);
        assert_eq!(f("stream", "stream"), None);
        assert_eq!(f(r#"{"a":1,"#, "stream"), None);
        assert_eq!(f(r#"{"arg":"x"}"#, "arg.channel"), None);
        // The key is found before a malformed tail: parsing stopped there.
        assert_eq!(
            f(r#"{"stream":"s","data":"#, "stream").as_deref(),
            Some("s")
        );
    }
}
