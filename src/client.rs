//! [`SyncWebSocket`], the shareable handle, and its [`Builder`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::backoff::BackoffConfig;
use crate::buffer::BufferConfig;
use crate::config::{
    check_header, redacted_headers, EndHook, HeaderProvider, OpenHook, Router, SendFullPolicy,
    SendQueueConfig, SequenceExtractor, Settings,
};
use crate::deflate::DeflateConfig;
use crate::error::{Error, Result, Timeout};
use crate::event::{Event, EventKind, Handler};
use crate::heartbeat::HeartbeatConfig;
use crate::hooks::{Opened, ReplayConfig};
use crate::io::command::Control;
use crate::io::engine::WAKER;
use crate::message::{CloseCode, CloseFrame, Message, Utf8Bytes};
use crate::permits::Acquired;
use crate::proxy::Proxy;
use crate::shared::Shared;
use crate::state::State;
use crate::stats::{Counters, Stats};
use crate::tls::TlsConfig;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Configures and opens a [`SyncWebSocket`]. Start with [`SyncWebSocket::builder`].
///
/// Every setting has a default (stated on each method), so `builder(url).connect()` is a
/// complete program. Settings are checked once, in [`build`](Builder::build) or
/// [`connect`](Builder::connect): a bad value is an [`Error::InvalidConfig`], never a panic.
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// # let url = server.url();
/// use std::time::Duration;
/// use jetsocket::{BackoffConfig, BufferConfig, HeartbeatConfig, OverflowPolicy, SyncWebSocket};
///
/// let ws = SyncWebSocket::builder(&url)
///     .backoff(BackoffConfig::default().base(Duration::from_millis(500)).cap(Duration::from_secs(30)))
///     .heartbeat(HeartbeatConfig::new(Duration::from_secs(20), Duration::from_secs(10)))
///     .buffer(BufferConfig::new(10_000).overflow_policy(OverflowPolicy::DropOldest))
///     .header("Authorization", "Bearer token")
///     .on_open(|conn| conn.send_text(r#"{"op":"subscribe","args":["trades"]}"#))
///     .connect()?;
/// // The echo server sends the subscription back.
/// let first = ws.recv_timeout(Duration::from_secs(10))?;
/// assert_eq!(first.as_text(), Some(r#"{"op":"subscribe","args":["trades"]}"#));
/// ws.close()?;
/// # Ok::<(), jetsocket::Error>(())
/// ```
pub struct Builder {
    url: String,
    headers: Vec<(String, String)>,
    header_provider: Option<HeaderProvider>,
    subprotocols: Vec<String>,
    connect_timeout: Duration,
    close_timeout: Duration,
    max_message_size: usize,
    max_frame_size: usize,
    read_buffer_size: usize,
    tls: TlsConfig,
    nodelay: bool,
    busy_poll: Duration,
    compression: bool,
    deflate: DeflateConfig,
    proxy: Option<String>,
    proxy_from_env: bool,
    reconnect: bool,
    backoff: BackoffConfig,
    heartbeat: Option<HeartbeatConfig>,
    max_connection_age: Option<Duration>,
    buffer: BufferConfig,
    send_queue: SendQueueConfig,
    on_open: Vec<OpenHook>,
    router: Option<Router>,
    on_end: Option<EndHook>,
    sequence_id: Option<SequenceExtractor>,
    replay: Option<ReplayConfig>,
    handlers: Vec<(EventKind, Handler)>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &crate::url::redact(&self.url))
            .field("headers", &redacted_headers(&self.headers))
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("tls", &self.tls)
            .field("nodelay", &self.nodelay)
            .field("busy_poll", &self.busy_poll)
            .field("compression", &self.compression)
            .field("compression_threshold", &self.deflate.threshold)
            .field("compression_level", &self.deflate.level)
            .field(
                "compression_no_context_takeover",
                &self.deflate.no_context_takeover,
            )
            .field(
                "proxy",
                &self
                    .proxy
                    .as_ref()
                    .map(|p| Proxy::new(p).map_err(|_| "<invalid>")),
            )
            .field("proxy_from_env", &self.proxy_from_env)
            .field("reconnect", &self.reconnect)
            .field("backoff", &self.backoff)
            .field("heartbeat", &self.heartbeat)
            .field("max_connection_age", &self.max_connection_age)
            .field("buffer", &self.buffer)
            .field("send_queue", &self.send_queue)
            .field("on_open_hooks", &self.on_open.len())
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl Builder {
    fn new(url: &str) -> Self {
        Builder {
            url: url.to_owned(),
            headers: Vec::new(),
            header_provider: None,
            subprotocols: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            max_message_size: 64 << 20,
            max_frame_size: 16 << 20,
            read_buffer_size: 128 * 1024,
            tls: TlsConfig::default(),
            nodelay: true,
            busy_poll: Duration::ZERO,
            compression: cfg!(feature = "deflate"),
            deflate: DeflateConfig::default(),
            proxy: None,
            proxy_from_env: false,
            reconnect: true,
            backoff: BackoffConfig::default(),
            heartbeat: Some(HeartbeatConfig::default()),
            max_connection_age: None,
            buffer: BufferConfig::default(),
            send_queue: SendQueueConfig::default(),
            on_open: Vec::new(),
            router: None,
            on_end: None,
            sequence_id: None,
            replay: None,
            handlers: Vec::new(),
        }
    }

    /// Adds a header to the handshake request (repeat for several). Values never appear in
    /// logs or `Debug` output. Names and values are checked when the connection is built.
    /// Defaults to none.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Calls `provider` before every attempt for fresh headers (a refreshed token, say); they
    /// replace static [`header`](Self::header)s of the same name. Defaults to none.
    pub fn header_provider(
        mut self,
        provider: impl Fn() -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Self {
        self.header_provider = Some(Arc::new(provider));
        self
    }

    /// Offers a subprotocol (repeat for several, in order of preference); the server's choice
    /// is [`SyncWebSocket::subprotocol`]. Defaults to none.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocols.push(protocol.into());
        self
    }

    /// Limit for one attempt: DNS, TCP, TLS and the handshake together. Defaults to 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `close()` waits for the peer's close frame. Defaults to 5 s.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// The largest incoming message, in bytes; larger ones fail the connection with
    /// [`Error::MessageTooLarge`]. Defaults to 64 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The largest incoming frame, in bytes. Defaults to 16 MiB.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// The socket read buffer, in bytes: larger is faster under load, smaller saves memory
    /// with many connections. Defaults to 128 KiB.
    pub fn read_buffer_size(mut self, bytes: usize) -> Self {
        self.read_buffer_size = bytes;
        self
    }

    /// TLS settings for `wss://`. Defaults to [`TlsConfig::default`]: system roots, full
    /// verification, TLS 1.2 or newer.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// Sets TCP_NODELAY (no Nagle delay on small messages). Defaults to `true`.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Trades CPU for latency: for up to this long after traffic, the I/O thread polls the
    /// socket and the send queue without sleeping, and `recv` on an empty buffer spins
    /// before it sleeps. Each hand-over between threads then skips a wake-up, which costs
    /// tens of microseconds on many machines. Worth it for request/response traffic where
    /// every microsecond counts (order entry); wasteful for idle or bulk connections, since
    /// each message can burn up to this much CPU on two threads. Defaults to zero (off); at
    /// most 10 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use jetsocket::SyncWebSocket;
    /// # let server = jetsocket::__doc_server();
    /// # let url = server.url();
    /// let ws = SyncWebSocket::builder(&url)
    ///     .busy_poll(Duration::from_micros(100))
    ///     .connect()?;
    /// ws.send_text("ping")?;
    /// assert_eq!(ws.recv()?.as_text(), Some("ping"));
    /// ws.close()?;
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    pub fn busy_poll(mut self, spin: Duration) -> Self {
        self.busy_poll = spin;
        self
    }

    /// Offers permessage-deflate compression (RFC 7692) in every handshake. When the server
    /// accepts, outgoing messages of at least [`compression_threshold`](Self::compression_threshold)
    /// bytes are compressed and compressed incoming messages are inflated, within
    /// [`max_message_size`](Self::max_message_size) (a message that would inflate past it is
    /// refused with [`Error::MessageTooLarge`] before it is inflated). A server that declines
    /// gets plain frames. [`Stats::compression`](crate::Stats) counts the bytes saved.
    ///
    /// Defaults to `true` with the `deflate` feature (a default feature); `true` without the
    /// feature is an [`Error::InvalidConfig`] when the connection is built.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "deflate")] {
    /// use jetsocket::SyncWebSocket;
    /// # let server = jetsocket::__doc_server();
    /// # let url = server.url();
    /// let ws = SyncWebSocket::builder(&url)
    ///     .compression(true)
    ///     .compression_threshold(256)
    ///     .connect()?;
    /// ws.send_text("x".repeat(10_000))?;
    /// assert_eq!(ws.recv()?.as_text().map(str::len), Some(10_000));
    /// // Whether the server took the offer: the test server here does not.
    /// let compression = ws.stats().compression;
    /// assert!(!compression.active);
    /// ws.close()?;
    /// # }
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    pub fn compression(mut self, enable: bool) -> Self {
        self.compression = enable;
        self
    }

    /// Outgoing messages smaller than this many bytes are sent uncompressed (deflate barely
    /// shrinks them, and costs CPU). `0` compresses every message. Defaults to 128.
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.deflate.threshold = bytes;
        self
    }

    /// The compression level, from 0 (store only) to 9 (smallest output, most CPU).
    /// Defaults to 1, the fastest level: on JSON market data it sends 34% of the plain bytes
    /// for about 3 µs of CPU per 800-byte message, where level 6 sends 22% for about 21 µs
    /// (see BENCHMARKS.md). Checked when the connection is built.
    pub fn compression_level(mut self, level: u32) -> Self {
        self.deflate.level = level;
        self
    }

    /// Asks the server to compress every message on its own (`server_no_context_takeover`,
    /// `client_no_context_takeover`): a worse ratio on repetitive streams, but no history
    /// shared between messages. A server that accepts compression without agreeing fails the
    /// handshake, as RFC 7692 requires. Defaults to `false`.
    pub fn compression_no_context_takeover(mut self, enable: bool) -> Self {
        self.deflate.no_context_takeover = enable;
        self
    }

    /// Connects through an HTTP proxy with `CONNECT`: `http://[user:password@]host[:port]`.
    /// `wss://` stays end-to-end TLS through the tunnel. The URL is checked when the
    /// connection is built; credentials never appear in logs or `Debug`. A 407 answer is
    /// fatal; 403, 502 and other refusals are retried. Defaults to none.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Takes the proxy from `HTTPS_PROXY` (for `wss://`) or `HTTP_PROXY` (for `ws://`),
    /// upper or lower case, falling back to `ALL_PROXY`, unless `NO_PROXY` lists the host.
    /// An explicit [`proxy`](Self::proxy) wins. Read when the connection is built. Defaults
    /// to `false`.
    pub fn proxy_from_env(mut self, enable: bool) -> Self {
        self.proxy_from_env = enable;
        self
    }

    /// Whether to reconnect after a drop or a retriable error. With `false`, the first drop
    /// ends the connection: [`State::Closed`] after a clean close by the server,
    /// [`State::Failed`] after an error. Defaults to `true`.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Reconnection delays and limits. Defaults to [`BackoffConfig::default`].
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.backoff = backoff;
        self
    }

    /// Heartbeats, or `None` for none. Defaults to [`HeartbeatConfig::default`] (a ping frame
    /// every 30 s, 10 s to answer).
    pub fn heartbeat(mut self, heartbeat: impl Into<Option<HeartbeatConfig>>) -> Self {
        self.heartbeat = heartbeat.into();
        self
    }

    /// Closes (code 1000) and reopens the connection when it reaches this age, without backoff
    /// and keeping queued sends (some exchanges cut connections at 24 h). Defaults to `None`.
    pub fn max_connection_age(mut self, age: impl Into<Option<Duration>>) -> Self {
        self.max_connection_age = age.into();
        self
    }

    /// The inbound buffer. Defaults to [`BufferConfig::default`] (1000 messages, drop oldest).
    pub fn buffer(mut self, buffer: BufferConfig) -> Self {
        self.buffer = buffer;
        self
    }

    /// The outgoing queue. Defaults to [`SendQueueConfig::default`] (1024 messages, fail when
    /// full while away).
    pub fn send_queue(mut self, queue: SendQueueConfig) -> Self {
        self.send_queue = queue;
        self
    }

    /// Runs `hook` on the I/O thread after every successful handshake (the first connection
    /// and each reconnect), before any queued message is sent; what it sends goes out first.
    /// If it returns an error or panics, the attempt counts as failed. Calling it again adds
    /// another hook; hooks run in the order added. Defaults to none.
    pub fn on_open(
        mut self,
        hook: impl Fn(&mut Opened<'_>) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.on_open.push(Arc::new(hook));
        self
    }

    /// Installs the I/O-thread message router (multiplexing). Crate-internal.
    pub(crate) fn router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    /// Installs the hook run when the connection has ended for good. Crate-internal.
    pub(crate) fn on_end(mut self, hook: EndHook) -> Self {
        self.on_end = Some(hook);
        self
    }

    /// Extracts a sequence id from incoming messages, for dedup
    /// ([`BufferConfig::dedup`]) and replay ([`ReplayConfig`]). Defaults to none.
    pub fn sequence_id(
        mut self,
        extract: impl Fn(&Message) -> Option<u64> + Send + Sync + 'static,
    ) -> Self {
        self.sequence_id = Some(Arc::new(extract));
        self
    }

    /// Replay after reconnects. Defaults to none.
    pub fn replay(mut self, replay: ReplayConfig) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Registers an event callback before anything happens, so even the first `Connecting`
    /// is seen. Same as [`SyncWebSocket::on`].
    pub fn on(mut self, kind: EventKind, handler: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.handlers.push((kind, Arc::new(handler)));
        self
    }

    /// The settings as they stand, for inspection and logging (header values left out).
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::SyncWebSocket;
    /// let options = SyncWebSocket::builder("ws://127.0.0.1:9/").reconnect(false).options();
    /// assert!(!options.reconnect);
    /// assert_eq!(options.buffer.capacity, 1000);
    /// ```
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            url: crate::url::redact(&self.url),
            header_names: self.headers.iter().map(|(n, _)| n.clone()).collect(),
            subprotocols: self.subprotocols.clone(),
            connect_timeout: self.connect_timeout,
            close_timeout: self.close_timeout,
            max_message_size: self.max_message_size,
            max_frame_size: self.max_frame_size,
            read_buffer_size: self.read_buffer_size,
            nodelay: self.nodelay,
            busy_poll: self.busy_poll,
            compression: self.compression,
            compression_threshold: self.deflate.threshold,
            compression_level: self.deflate.level,
            compression_no_context_takeover: self.deflate.no_context_takeover,
            reconnect: self.reconnect,
            backoff: self.backoff,
            heartbeat: self.heartbeat.clone(),
            max_connection_age: self.max_connection_age,
            buffer: self.buffer,
            send_queue: self.send_queue,
        }
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        for p in &self.subprotocols {
            let token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c);
            if p.is_empty() || !p.chars().all(token) {
                return Err(Error::config(format!("invalid subprotocol {p:?}")));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("connect_timeout must be above zero"));
        }
        if self.max_message_size == 0 || self.max_frame_size == 0 {
            return Err(Error::config(
                "maximum message and frame sizes must be above zero",
            ));
        }
        if self.max_frame_size > self.max_message_size {
            return Err(Error::config(format!(
                "max_frame_size ({}) must not exceed max_message_size ({})",
                self.max_frame_size, self.max_message_size
            )));
        }
        if self.busy_poll > Duration::from_millis(10) {
            return Err(Error::config("busy_poll must be at most 10 ms"));
        }
        if self.compression && !cfg!(feature = "deflate") {
            return Err(Error::config(
                "compression needs the `deflate` feature of jetsocket",
            ));
        }
        if self.deflate.level > 9 {
            return Err(Error::config(format!(
                "compression_level must be 0 to 9, got {}",
                self.deflate.level
            )));
        }
        if self.read_buffer_size < 4096 {
            return Err(Error::config("read_buffer_size must be at least 4096"));
        }
        if let Some(age) = self.max_connection_age {
            if age < Duration::from_secs(1) {
                return Err(Error::config("max_connection_age must be at least 1 s"));
            }
        }
        if self.buffer.enable_dedup && self.sequence_id.is_none() {
            log::warn!(
                "dedup is on but no sequence id extractor is set (Builder::sequence_id): \
                 nothing will be deduplicated"
            );
        }
        if self.replay.is_some() && self.sequence_id.is_none() {
            return Err(Error::config(
                "replay needs a sequence id extractor: set Builder::sequence_id",
            ));
        }
        self.backoff.validate()?;
        if let Some(hb) = &self.heartbeat {
            hb.validate()?;
        }
        self.buffer.validate()?;
        self.send_queue.validate()?;
        Ok(())
    }

    /// Checks the settings and starts the I/O thread, without dialling: the state is
    /// [`State::Idle`] until [`SyncWebSocket::connect`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], [`Error::InvalidConfig`], [`Error::TlsUnavailable`], or
    /// [`Error::Io`] if the thread or the readiness poller cannot be created.
    pub fn build(self) -> Result<SyncWebSocket> {
        let target = crate::url::parse(&self.url)?;
        self.validate()?;
        let tls = if target.tls {
            Some(crate::tls::build_connector(&self.tls)?)
        } else {
            None
        };
        let proxy = match (&self.proxy, self.proxy_from_env) {
            (Some(url), _) => Some(Proxy::new(url)?),
            (None, true) => crate::proxy::from_env(&target)?,
            (None, false) => None,
        };
        let ws_config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_frame_size))
            .read_buffer_size(self.read_buffer_size);
        let settings = Arc::new(Settings {
            url: crate::url::redact(&self.url),
            target,
            headers: self.headers,
            header_provider: self.header_provider,
            subprotocols: self.subprotocols,
            connect_timeout: self.connect_timeout,
            close_timeout: self.close_timeout,
            ws_config,
            tls,
            nodelay: self.nodelay,
            busy_poll: self.busy_poll,
            deflate: self.compression.then_some(DeflateConfig {
                max_message_size: Some(self.max_message_size),
                max_frame_size: Some(self.max_frame_size),
                ..self.deflate
            }),
            proxy,
            reconnect: self.reconnect,
            backoff: self.backoff,
            heartbeat: self.heartbeat,
            max_connection_age: self.max_connection_age,
            buffer: self.buffer,
            send_queue: self.send_queue,
            on_open: self.on_open,
            router: self.router,
            on_end: self.on_end,
            sequence_id: self.sequence_id,
            replay: self.replay.map(|r| r.hook),
        });
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared::new(
            id.to_string(),
            &settings.buffer,
            settings.send_queue.capacity,
            settings.busy_poll,
            waker,
        ));
        for (kind, handler) in self.handlers {
            shared.events.on(kind, handler);
        }
        // Unbounded, so that it allocates only while messages wait; `send_permits` bounds it.
        let (data_tx, data_rx) = crossbeam_channel::unbounded();
        let (ctrl_tx, ctrl_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let thread = crate::io::spawn(
            Arc::clone(&settings),
            Arc::clone(&shared),
            poll,
            data_rx,
            ctrl_rx,
            done_tx,
        )?;
        let io_thread_id = thread.thread().id();
        Ok(SyncWebSocket {
            inner: Arc::new(Inner {
                settings,
                shared,
                data_tx,
                ctrl_tx,
                done_rx,
                io_thread: Mutex::new(Some(thread)),
                io_thread_id,
            }),
        })
    }

    /// Builds and connects, returning once [`State::Connected`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build); then the error that made the first attempt fail: refused,
    /// [`Error::Timeout`] after the connect timeout, [`Error::Http`] for a rejected
    /// handshake, [`Error::Certificate`], and so on. Nothing keeps running after an error.
    pub fn connect(self) -> Result<SyncWebSocket> {
        let ws = self.build()?;
        ws.connect()?;
        Ok(ws)
    }
}

/// A read-only snapshot of a [`Builder`]'s settings, from [`Builder::options`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The URL (user information removed).
    pub url: String,
    /// Names of the extra handshake headers (values are never exposed).
    pub header_names: Vec<String>,
    /// Offered subprotocols.
    pub subprotocols: Vec<String>,
    /// See [`Builder::connect_timeout`].
    pub connect_timeout: Duration,
    /// See [`Builder::close_timeout`].
    pub close_timeout: Duration,
    /// See [`Builder::max_message_size`].
    pub max_message_size: usize,
    /// See [`Builder::max_frame_size`].
    pub max_frame_size: usize,
    /// See [`Builder::read_buffer_size`].
    pub read_buffer_size: usize,
    /// See [`Builder::nodelay`].
    pub nodelay: bool,
    /// See [`Builder::busy_poll`].
    pub busy_poll: Duration,
    /// See [`Builder::compression`].
    pub compression: bool,
    /// See [`Builder::compression_threshold`].
    pub compression_threshold: usize,
    /// See [`Builder::compression_level`].
    pub compression_level: u32,
    /// See [`Builder::compression_no_context_takeover`].
    pub compression_no_context_takeover: bool,
    /// See [`Builder::reconnect`].
    pub reconnect: bool,
    /// See [`Builder::backoff`].
    pub backoff: BackoffConfig,
    /// See [`Builder::heartbeat`].
    pub heartbeat: Option<HeartbeatConfig>,
    /// See [`Builder::max_connection_age`].
    pub max_connection_age: Option<Duration>,
    /// See [`Builder::buffer`].
    pub buffer: BufferConfig,
    /// See [`Builder::send_queue`].
    pub send_queue: SendQueueConfig,
}

/// What every clone of a handle shares. Dropping the last one closes the connection.
struct Inner {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    data_tx: Sender<Message>,
    ctrl_tx: Sender<Control>,
    done_rx: Receiver<()>,
    io_thread: Mutex<Option<JoinHandle<()>>>,
    io_thread_id: ThreadId,
}

impl Inner {
    /// Asks the I/O thread to close and waits until it has ended and its threads are joined.
    fn shut_down(&self, frame: CloseFrame) {
        self.shared.closing.store(true, Ordering::Release);
        if self.ctrl_tx.send(Control::Close(frame)).is_ok() {
            self.shared.wake();
        }
        let on_io_thread = std::thread::current().id() == self.io_thread_id;
        if !on_io_thread {
            // The I/O thread bounds its own close handshake by the close timeout.
            let _ = self.done_rx.recv();
            if let Some(handle) = self.io_thread.lock().take() {
                let _ = handle.join();
            }
        }
        // The dispatcher ends once it has run the callbacks for every event up to `Closed`.
        if !on_io_thread {
            self.shared.events.join_dispatcher();
        }
        // Callbacks may hold clones of the handle: release them to break the cycle.
        self.shared.events.clear_handlers();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down(CloseFrame::new(CloseCode::NORMAL, ""));
    }
}

/// A WebSocket connection that any number of threads can share.
///
/// Cloning is cheap and every clone is the same connection. One background thread,
/// `jetsocket-io-<id>`, owns the socket: it connects, reads, writes, answers pings, sends
/// heartbeats and reconnects. Your threads talk to it through queues:
///
/// * **sending** (`send`, `try_send`, `send_timeout`, `send_text`, ...) puts the message on a
///   bounded queue and wakes the I/O thread only if it is parked. Messages from one thread go
///   out in the order sent; while the connection is away they wait and go out after the next
///   handshake, behind whatever the [`on_open`](Builder::on_open) hook sends.
/// * **receiving** (`recv`, `recv_timeout`, `try_recv`, [`messages`](Self::messages)) takes
///   from the inbound buffer ([`BufferConfig`]). Each message goes to exactly one receiver;
///   several consumer threads share the stream.
/// * **events** ([`events`](Self::events), [`on`](Self::on)) are lifecycle notifications.
///   Callbacks run on a separate dispatcher thread, `jetsocket-events-<id>`, never on the I/O
///   thread, so a slow callback cannot stall the socket, and a callback may call any method of
///   the handle.
///
/// No lock is held across I/O, and no caller ever touches the socket. Dropping the last
/// clone closes the connection (as [`close`](Self::close) does) and joins its threads.
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// # let url = server.url();
/// use std::time::Duration;
/// use jetsocket::{Message, SyncWebSocket};
///
/// let ws = SyncWebSocket::connect_url(&url)?;
/// std::thread::scope(|s| {
///     s.spawn(|| ws.send_text("hello"));
/// });
/// let reply = ws.recv_timeout(Duration::from_secs(10))?;
/// assert_eq!(reply, Message::text("hello"));
/// ws.close()?;
/// # Ok::<(), jetsocket::Error>(())
/// ```
#[derive(Clone)]
pub struct SyncWebSocket {
    inner: Arc<Inner>,
}

impl fmt::Debug for SyncWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncWebSocket")
            .field("id", &self.inner.shared.name)
            .field("url", &self.inner.settings.url)
            .field("state", &self.state())
            .finish()
    }
}

impl SyncWebSocket {
    /// Starts configuring a connection to `url` (`ws://` or `wss://`).
    pub fn builder(url: impl AsRef<str>) -> Builder {
        Builder::new(url.as_ref())
    }

    /// Connects to `url` with every default.
    ///
    /// # Errors
    ///
    /// As [`Builder::connect`].
    pub fn connect_url(url: impl AsRef<str>) -> Result<SyncWebSocket> {
        Self::builder(url).connect()
    }

    /// Connects a handle made with [`Builder::build`], returning once connected; on a
    /// connected handle, returns at once.
    ///
    /// # Errors
    ///
    /// The error of the attempt that failed. With reconnection on and a retriable error, the
    /// handle keeps trying in the background; check [`Error::is_fatal`].
    /// [`Error::AlreadyClosed`] once closed.
    pub fn connect(&self) -> Result<()> {
        if self.state().is_terminal() {
            return Err(Error::AlreadyClosed);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .ctrl_tx
            .send(Control::Connect(tx))
            .map_err(|_| Error::AlreadyClosed)?;
        self.inner.shared.wake();
        rx.recv().unwrap_or(Err(Error::AlreadyClosed))
    }

    fn check_sendable(&self) -> Result<()> {
        if self.is_ending() {
            return Err(Error::AlreadyClosed);
        }
        Ok(())
    }

    fn queued(&self) {
        self.inner.shared.notify_data();
    }

    /// Queues a message for sending.
    ///
    /// Returns once the message is queued, not when it is written. While connected, a full
    /// queue means the socket is pushing back and `send` waits for room. While the connection
    /// is away, the queue's [`SendFullPolicy`] decides: fail with
    /// [`Error::SendQueueFull`] (the default; also when the connection goes away while
    /// `send` waits) or wait.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// # let ws = jetsocket::SyncWebSocket::connect_url(server.url())?;
    /// use jetsocket::Message;
    /// ws.send(Message::text("hi"))?;
    /// ws.send("also text")?;
    /// ws.send(vec![1u8, 2, 3])?;
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyClosed`] after `close()` or once the connection has ended;
    /// [`Error::SendQueueFull`] as described.
    pub fn send(&self, msg: impl Into<Message>) -> Result<()> {
        self.check_sendable()?;
        let msg = msg.into();
        let permits = &self.inner.shared.send_permits;
        if !permits.try_acquire() {
            let give_up_when_away =
                self.inner.settings.send_queue.when_full == SendFullPolicy::Error;
            if give_up_when_away && self.state() != State::Connected {
                return Err(self.full());
            }
            // The I/O thread may be parked with data waiting: make sure it drains the queue.
            self.queued();
            let outcome = permits.acquire(None, || {
                self.is_ending() || (give_up_when_away && self.state() != State::Connected)
            });
            if outcome != Acquired::Yes {
                self.check_sendable()?;
                return Err(self.full());
            }
        }
        self.enqueue(msg)
    }

    /// Whether the handle is closing or the connection has ended: sends are refused.
    fn is_ending(&self) -> bool {
        self.inner.shared.closing.load(Ordering::Acquire) || self.state().is_terminal()
    }

    /// Queues a message for which a permit was taken.
    fn enqueue(&self, msg: Message) -> Result<()> {
        if self.inner.data_tx.send(msg).is_err() {
            self.inner.shared.send_permits.release(1);
            return Err(Error::AlreadyClosed);
        }
        self.queued();
        Ok(())
    }

    fn full(&self) -> Error {
        Error::SendQueueFull {
            capacity: self.inner.settings.send_queue.capacity,
        }
    }

    /// Queues a message without ever waiting.
    ///
    /// # Errors
    ///
    /// [`Error::SendQueueFull`] when the queue is full, [`Error::AlreadyClosed`] once closed.
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<()> {
        self.check_sendable()?;
        if !self.inner.shared.send_permits.try_acquire() {
            return Err(self.full());
        }
        self.enqueue(msg.into())
    }

    /// Queues a message, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] ([`Timeout::Send`]) if the queue stayed full;
    /// [`Error::AlreadyClosed`] once closed.
    pub fn send_timeout(&self, msg: impl Into<Message>, timeout: Duration) -> Result<()> {
        self.send_deadline(msg, crate::later(Instant::now(), timeout))
    }

    /// Queues a message, waiting until `deadline` at most for room.
    ///
    /// # Errors
    ///
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_deadline(&self, msg: impl Into<Message>, deadline: Instant) -> Result<()> {
        self.check_sendable()?;
        let msg = msg.into();
        let permits = &self.inner.shared.send_permits;
        if !permits.try_acquire() {
            self.queued();
            match permits.acquire(Some(deadline), || self.is_ending()) {
                Acquired::Yes => {}
                Acquired::Cancelled => return Err(Error::AlreadyClosed),
                Acquired::TimedOut => return Err(Error::Timeout(Timeout::Send)),
            }
        }
        self.enqueue(msg)
    }

    /// Queues a text message. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> Result<()> {
        self.send(Message::Text(text.into()))
    }

    /// Queues a binary message. See [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_binary(&self, data: impl Into<bytes::Bytes>) -> Result<()> {
        self.send(Message::Binary(data.into()))
    }

    /// Takes the next message, waiting as long as it takes.
    ///
    /// Messages received before the connection ended stay readable; after the last one,
    /// `recv` returns why it ended.
    ///
    /// # Errors
    ///
    /// Once the connection has ended and the buffer is drained: [`Error::AlreadyClosed`]
    /// after `close()`, [`Error::ConnectionClosed`] if the server closed it (reconnection
    /// off), or the fatal error that made it [`State::Failed`]. With
    /// [`OverflowPolicy::Error`](crate::OverflowPolicy::Error), [`Error::BufferOverflow`]
    /// once per overflow, after which delivery continues.
    pub fn recv(&self) -> Result<Message> {
        self.inner.shared.recv(None)
    }

    /// Takes the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] ([`Timeout::Recv`]) if nothing arrived in time; otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message> {
        self.recv_deadline(crate::later(Instant::now(), timeout))
    }

    /// Takes the next message, waiting until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Message> {
        self.inner.shared.recv(Some(deadline))
    }

    /// Takes the next message if one is waiting: `Ok(None)` if none is.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv), without waiting.
    pub fn try_recv(&self) -> Result<Option<Message>> {
        match self.inner.shared.recv(Some(Instant::now())) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Timeout(Timeout::Recv)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A blocking iterator over incoming messages. It ends when the connection is
    /// [`Closed`](State::Closed) or [`Failed`](State::Failed) and every received message has
    /// been taken. Overflow reports of [`OverflowPolicy::Error`](crate::OverflowPolicy::Error)
    /// are skipped (see [`Stats::dropped`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// # let ws = jetsocket::SyncWebSocket::connect_url(server.url())?;
    /// ws.send_text("one")?;
    /// ws.send_text("two")?;
    /// let got: Vec<String> = ws.messages().take(2).map(|m| m.as_text().unwrap().to_owned()).collect();
    /// assert_eq!(got, ["one", "two"]);
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    pub fn messages(&self) -> Messages<'_> {
        Messages { ws: self }
    }

    /// A new subscriber that receives every later [`Event`]. It disconnects after the
    /// [`Event::Closed`] that ends the connection. A subscriber that falls more than 1024
    /// [`Event::Message`]s behind misses further message events until it catches up
    /// (counted in [`Stats::events_dropped`]), so it never grows memory without bound.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use std::time::Duration;
    /// use jetsocket::{Event, State, SyncWebSocket};
    /// let ws = SyncWebSocket::builder(server.url()).build()?;
    /// let events = ws.events();
    /// ws.connect()?;
    /// let first = events.recv_timeout(Duration::from_secs(10)).unwrap();
    /// assert!(matches!(first, Event::StateChanged { from: State::Idle, to: State::Connecting }));
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    pub fn events(&self) -> Receiver<Event> {
        self.inner.shared.events.subscribe()
    }

    /// Runs `handler` for every later event of `kind`, on the dispatcher thread.
    ///
    /// A handler may call any method of the handle. A panicking handler is caught, logged and
    /// reported as an [`Event::Error`]; the connection keeps running. A handler that captures
    /// a clone of the handle keeps the connection alive until [`close`](Self::close) is
    /// called; capture a [`WeakSyncWebSocket`] ([`downgrade`](Self::downgrade)) to avoid that.
    ///
    /// Message handlers see a clone of each message (cheap: payloads are shared); the
    /// message also goes to the inbound buffer, whose bounded capacity keeps memory in check
    /// when nothing calls `recv`.
    pub fn on(&self, kind: EventKind, handler: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.shared.events.on(kind, Arc::new(handler));
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.inner.shared.state()
    }

    /// Whether the state is [`State::Connected`].
    pub fn is_connected(&self) -> bool {
        self.state() == State::Connected
    }

    /// Whether the connection has ended ([`State::Closed`] or [`State::Failed`]).
    pub fn is_closed(&self) -> bool {
        self.state().is_terminal()
    }

    /// The URL (with any user information removed).
    pub fn url(&self) -> &str {
        &self.inner.settings.url
    }

    /// The subprotocol the server chose on the current or last connection.
    pub fn subprotocol(&self) -> Option<String> {
        self.inner.shared.subprotocol.lock().clone()
    }

    /// The latest heartbeat round trip, if any.
    pub fn latency(&self) -> Option<Duration> {
        self.inner.shared.counters.latency.lock().last()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> Stats {
        let s = &self.inner.shared;
        let c = &s.counters;
        let (latency, average_latency) = {
            let l = c.latency.lock();
            (l.last(), l.average())
        };
        let queued = s.inbound.len();
        Stats {
            state: s.state(),
            messages_sent: Counters::get(&c.messages_sent),
            messages_received: Counters::get(&c.messages_received),
            bytes_sent: Counters::get(&c.bytes_sent),
            bytes_received: Counters::get(&c.bytes_received),
            connect_attempts: Counters::get(&c.connect_attempts),
            reconnects: Counters::get(&c.reconnects),
            connected_since: *c.connected_since.lock(),
            latency,
            average_latency,
            queued,
            buffer_capacity: s.inbound.capacity,
            buffer_fill: queued as f64 / s.inbound.capacity as f64,
            dropped: Counters::get(&c.dropped),
            deduplicated: Counters::get(&c.deduplicated),
            send_queued: self.inner.data_tx.len(),
            events_dropped: s.events.dropped(),
            parse_failures: Counters::get(&c.parse_failures),
            compression: c.compression(),
        }
    }

    /// Closes with code 1000: sends what is queued, then a close frame, waits for the peer's
    /// (at most the close timeout), and returns after the I/O thread has ended. Messages
    /// already received stay readable. Closing a closed handle does nothing.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for reporting a failed close.
    pub fn close(&self) -> Result<()> {
        self.close_with(CloseCode::NORMAL, "")
    }

    /// Closes with the given code and reason. See [`close`](Self::close).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the code may not be sent (1005, 1006, 1015, below 1000,
    /// 5000 and up) or the reason is longer than 123 bytes.
    pub fn close_with(&self, code: impl Into<CloseCode>, reason: impl Into<String>) -> Result<()> {
        let code = code.into();
        let reason = reason.into();
        if !code.is_sendable() {
            return Err(Error::config(format!("close code {code} may not be sent")));
        }
        if reason.len() > 123 {
            return Err(Error::config("a close reason is at most 123 bytes"));
        }
        self.inner.shut_down(CloseFrame::new(code, reason));
        Ok(())
    }

    #[cfg(feature = "json")]
    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.shared.counters
    }

    /// A weak handle that does not keep the connection alive.
    pub fn downgrade(&self) -> WeakSyncWebSocket {
        WeakSyncWebSocket {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

/// A [`SyncWebSocket`] that does not keep the connection open: for callbacks that need the
/// handle without creating a cycle.
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// use jetsocket::{EventKind, SyncWebSocket};
/// let ws = SyncWebSocket::connect_url(server.url())?;
/// let weak = ws.downgrade();
/// ws.on(EventKind::Reconnected, move |_| {
///     if let Some(ws) = weak.upgrade() {
///         let _ = ws.send_text("back");
///     }
/// });
/// # Ok::<(), jetsocket::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct WeakSyncWebSocket {
    inner: Weak<Inner>,
}

impl WeakSyncWebSocket {
    /// The handle, if the connection has not been dropped.
    pub fn upgrade(&self) -> Option<SyncWebSocket> {
        self.inner.upgrade().map(|inner| SyncWebSocket { inner })
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("id", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// A blocking iterator over incoming messages; see [`SyncWebSocket::messages`].
#[derive(Debug)]
pub struct Messages<'a> {
    ws: &'a SyncWebSocket,
}

impl Iterator for Messages<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        loop {
            match self.ws.recv() {
                Ok(m) => return Some(m),
                Err(Error::BufferOverflow { .. }) => continue,
                Err(_) => return None,
            }
        }
    }
}

impl<'a> IntoIterator for &'a SyncWebSocket {
    type Item = Message;
    type IntoIter = Messages<'a>;

    fn into_iter(self) -> Messages<'a> {
        self.messages()
    }
}
