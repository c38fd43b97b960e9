//! [`ConnectionPool`]: reusable connections by URL, shared by any number of threads.
//!
//! The pool keeps connections that were handed back and are still healthy, and hands them
//! out again for the same URL. Acquiring and releasing are lock-and-go; one maintenance
//! thread per pool (started the first time a connection is handed back) closes idle
//! connections after `max_idle_time`, runs the health checks and does the blocking close
//! handshakes, so neither `acquire` nor dropping a [`PooledConnection`] waits on the network
//! for a connection it gives up.

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::client::{Builder, SyncWebSocket};
use crate::error::{Error, Result};
use crate::state::State;

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// The limits and timers of a [`ConnectionPool`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use jetsocket::ConnectionPoolConfig;
///
/// let config = ConnectionPoolConfig::default()
///     .max_connections(4)
///     .max_idle_time(Duration::from_secs(60))
///     .acquire_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_connections, 4);
/// assert_eq!(config.health_check_interval, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnectionPoolConfig {
    /// Connections open at most, in use, idle or being dialled together. Defaults to 10.
    pub max_connections: usize,
    /// An idle connection is closed after this long unused. Defaults to 300 s.
    pub max_idle_time: Duration,
    /// How often idle connections are checked (those no longer
    /// [`Connected`](State::Connected) are closed). Defaults to 30 s.
    pub health_check_interval: Duration,
    /// How long [`acquire`](ConnectionPool::acquire) waits for a free slot. Defaults to 10 s.
    pub acquire_timeout: Duration,
}

impl Default for ConnectionPoolConfig {
    fn default() -> Self {
        ConnectionPoolConfig {
            max_connections: 10,
            max_idle_time: Duration::from_secs(300),
            health_check_interval: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectionPoolConfig {
    /// The defaults: 10 connections, 300 s idle time, health checks every 30 s, 10 s to
    /// acquire.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections open at most. Defaults to 10.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// How long a connection may stay idle before it is closed. Defaults to 300 s.
    pub fn max_idle_time(mut self, time: Duration) -> Self {
        self.max_idle_time = time;
        self
    }

    /// How often idle connections are checked. Defaults to 30 s.
    pub fn health_check_interval(mut self, interval: Duration) -> Self {
        self.health_check_interval = interval;
        self
    }

    /// How long `acquire` waits for a free slot. Defaults to 10 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(Error::config("max_connections must be at least 1"));
        }
        if self.max_idle_time.is_zero() {
            return Err(Error::config("max_idle_time must be above zero"));
        }
        if self.health_check_interval.is_zero() {
            return Err(Error::config("health_check_interval must be above zero"));
        }
        Ok(())
    }
}

/// Makes the builder for a URL: the pool's connection options.
type Template = Arc<dyn Fn(&str) -> Builder + Send + Sync>;

/// A connection waiting in the pool.
struct Idle {
    id: u64,
    url: String,
    ws: SyncWebSocket,
    since: Instant,
}

struct PoolState {
    /// Idle connections, oldest release first.
    idle: Vec<Idle>,
    /// Every connection the pool owns, idle or in use.
    live: HashMap<u64, SyncWebSocket>,
    /// Slots held by dials in progress.
    dialling: usize,
    /// Connections given up, waiting for the maintenance thread to close them.
    closing: Vec<SyncWebSocket>,
    closed: bool,
    next_id: u64,
    next_health_check: Instant,
    maintainer: Option<JoinHandle<()>>,
    /// The maintenance thread waits without a deadline (nothing idle).
    maintainer_parked: bool,
}

impl PoolState {
    fn in_use(&self) -> usize {
        self.live.len() + self.dialling
    }
}

struct PoolShared {
    id: u64,
    config: ConnectionPoolConfig,
    base: String,
    template: Template,
    state: Mutex<PoolState>,
    /// Acquirers waiting for a slot.
    available: Condvar,
    /// The maintenance thread's wake-up.
    maintain: Condvar,
    created: AtomicU64,
    closed: AtomicU64,
    reused: AtomicU64,
    /// Messages of connections that left the pool.
    retired_sent: AtomicU64,
    retired_received: AtomicU64,
}

impl PoolShared {
    /// Removes a connection from the pool's books and hands it to the maintenance thread
    /// to close. Frees its slot.
    fn retire(&self, st: &mut PoolState, id: u64) {
        if let Some(ws) = st.live.remove(&id) {
            self.count_retired(&ws);
            st.closing.push(ws);
        }
    }

    fn count_retired(&self, ws: &SyncWebSocket) {
        let stats = ws.stats();
        self.retired_sent
            .fetch_add(stats.messages_sent, Ordering::Relaxed);
        self.retired_received
            .fetch_add(stats.messages_received, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Retires idle connections unused for `max_idle_time`.
    fn evict_expired(&self, st: &mut PoolState, now: Instant) -> bool {
        let max_idle = self.config.max_idle_time;
        let expired: Vec<u64> = st
            .idle
            .iter()
            .filter(|i| now.saturating_duration_since(i.since) >= max_idle)
            .map(|i| i.id)
            .collect();
        for id in &expired {
            log::debug!(
                "pool {}: closing a connection idle for {max_idle:?}",
                self.id
            );
            st.idle.retain(|i| i.id != *id);
            self.retire(st, *id);
        }
        !expired.is_empty()
    }

    /// Retires idle connections that are no longer healthy.
    fn check_idle_health(&self, st: &mut PoolState) -> bool {
        let sick: Vec<u64> = st
            .idle
            .iter()
            .filter(|i| !healthy(&i.ws))
            .map(|i| i.id)
            .collect();
        for id in &sick {
            log::debug!(
                "pool {}: dropping an idle connection that is not connected",
                self.id
            );
            st.idle.retain(|i| i.id != *id);
            self.retire(st, *id);
        }
        !sick.is_empty()
    }

    /// Starts the maintenance thread if it is not running, or wakes it if it waits without
    /// a deadline. Call after adding something for it to do.
    fn poke_maintainer(self: &Arc<Self>, st: &mut PoolState) {
        if st.closed {
            return;
        }
        if st.maintainer.is_none() {
            let shared = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("jetsocket-pool-{}", self.id))
                .spawn(move || shared.maintain());
            match spawned {
                Ok(handle) => st.maintainer = Some(handle),
                Err(e) => log::error!("could not start the pool maintenance thread: {e}"),
            }
        } else if st.maintainer_parked || !st.closing.is_empty() {
            self.maintain.notify_one();
        }
    }

    /// The maintenance thread: closes given-up connections, evicts idle ones, runs the
    /// health checks, and sleeps until the next deadline (without one when nothing is
    /// idle).
    fn maintain(&self) {
        let mut st = self.state.lock();
        loop {
            if !st.closing.is_empty() {
                let closing = std::mem::take(&mut st.closing);
                MutexGuard::unlocked(&mut st, || close_all(closing));
                if st.closed {
                    self.available.notify_all();
                }
                continue;
            }
            if st.closed {
                break;
            }
            let now = Instant::now();
            let mut freed = self.evict_expired(&mut st, now);
            if now >= st.next_health_check {
                freed |= self.check_idle_health(&mut st);
                st.next_health_check = crate::later(now, self.config.health_check_interval);
            }
            if freed {
                // Slots are free again.
                self.available.notify_all();
                continue;
            }
            let next_expiry = st
                .idle
                .iter()
                .map(|i| i.since + self.config.max_idle_time)
                .min();
            match next_expiry {
                Some(expiry) => {
                    let deadline = expiry.min(st.next_health_check);
                    st.maintainer_parked = false;
                    self.maintain.wait_until(&mut st, deadline);
                }
                None => {
                    st.maintainer_parked = true;
                    self.maintain.wait(&mut st);
                    st.maintainer_parked = false;
                    // Health checks are due one interval after something became idle.
                    st.next_health_check = st.next_health_check.max(crate::later(
                        Instant::now(),
                        self.config.health_check_interval,
                    ));
                }
            }
        }
    }

    /// Takes a connection back from a guard.
    fn release(self: &Arc<Self>, id: u64, url: String, ws: SyncWebSocket, discard: bool) {
        let mut st = self.state.lock();
        if st.closed || !st.live.contains_key(&id) {
            // The pool was closed (and closed this connection) meanwhile.
            return;
        }
        if discard || !healthy(&ws) {
            self.retire(&mut st, id);
        } else {
            st.idle.push(Idle {
                id,
                url,
                ws,
                since: Instant::now(),
            });
        }
        self.poke_maintainer(&mut st);
        drop(st);
        self.available.notify_one();
    }

    /// Takes a connection out of the pool for good.
    fn detach(&self, id: u64) {
        let mut st = self.state.lock();
        if let Some(ws) = st.live.remove(&id) {
            self.count_retired(&ws);
        }
        drop(st);
        self.available.notify_one();
    }
}

/// A pooled connection is healthy while it is [`Connected`](State::Connected). Liveness
/// comes from the connection's own heartbeat (on by default): a peer that stops answering
/// pings within the heartbeat timeout takes the connection out of `Connected`, and from
/// then on the pool treats it as dead.
fn healthy(ws: &SyncWebSocket) -> bool {
    ws.state() == State::Connected
}

/// Closes connections one after the other (each bounded by its close timeout).
fn close_all(connections: Vec<SyncWebSocket>) {
    for ws in connections {
        let _ = ws.close();
    }
}

/// Throws away what a previous user left unread, so a reused connection starts clean.
fn drain(ws: &SyncWebSocket) {
    loop {
        match ws.try_recv() {
            Ok(Some(_)) | Err(Error::BufferOverflow { .. }) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Joins a path to the base URL: an absolute `ws://`/`wss://` URL is used as is, `/path`
/// replaces the base's path, and `path` is appended to it. The base's query is not kept.
fn resolve(base: &str, path_or_url: &str) -> String {
    let target = path_or_url.trim();
    if target.contains("://") {
        return target.to_owned();
    }
    let base = base.trim();
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if target.is_empty() {
        return base.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("ws", base));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    if let Some(absolute) = target.strip_prefix('/') {
        return format!("{scheme}://{authority}/{absolute}");
    }
    let path = path.trim_end_matches('/');
    format!("{scheme}://{authority}{path}/{target}")
}

/// Owned by the [`ConnectionPool`] clones: dropping the last one closes the pool.
struct PoolOwner {
    shared: Arc<PoolShared>,
}

impl Drop for PoolOwner {
    fn drop(&mut self) {
        close_pool(&self.shared);
    }
}

fn close_pool(shared: &Arc<PoolShared>) {
    let (connections, maintainer) = {
        let mut st = shared.state.lock();
        if !st.closed {
            log::debug!("pool {}: closing", shared.id);
        }
        st.closed = true;
        st.idle.clear();
        let live: Vec<SyncWebSocket> = st.live.drain().map(|(_, ws)| ws).collect();
        for ws in &live {
            shared.count_retired(ws);
        }
        let mut all = std::mem::take(&mut st.closing);
        all.extend(live);
        (all, st.maintainer.take())
    };
    shared.available.notify_all();
    shared.maintain.notify_all();
    close_all(connections);
    if let Some(handle) = maintainer {
        let _ = handle.join();
    }
}

/// A pool of connections that any number of threads can share.
///
/// [`acquire`](Self::acquire) hands out a connection to a URL (a path joined to the base
/// URL, or an absolute URL) as a [`PooledConnection`] guard, which derefs to
/// [`SyncWebSocket`] and gives the connection back when dropped. A connection handed back
/// healthy is reused for the same URL (most recently used first); what a previous user
/// left unread is thrown away first. At most
/// [`max_connections`](ConnectionPoolConfig::max_connections) connections are open; when all
/// are in use, `acquire` waits for one to come back, up to the acquire timeout, then fails
/// with [`Error::PoolExhausted`]. When the limit is reached with idle connections to other
/// URLs, the least recently used of those is closed to make room.
///
/// One maintenance thread (`jetsocket-pool-<id>`, started the first time a connection is
/// handed back) closes connections idle for
/// [`max_idle_time`](ConnectionPoolConfig::max_idle_time), checks idle connections every
/// [`health_check_interval`](ConnectionPoolConfig::health_check_interval), and performs the
/// close handshakes of connections the pool gives up; it sleeps without a timer when
/// nothing is idle. Every connection also checks itself: a healthy connection is one in
/// state [`Connected`](State::Connected), and the connection's heartbeat (on by default)
/// takes a connection whose peer stops answering out of that state. Connections that are
/// not `Connected` (failed, closed, reconnecting, unresponsive) are never handed out.
///
/// `ConnectionPool` is `Clone + Send + Sync`; clones share the pool. [`close`](Self::close)
/// or dropping the last clone closes every connection, including those in use.
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// # let base_url = server.url();
/// use std::time::Duration;
/// use jetsocket::{ConnectionPool, ConnectionPoolConfig};
///
/// let pool = ConnectionPool::new(ConnectionPoolConfig::default().max_connections(4), &base_url)?;
/// std::thread::scope(|s| -> jetsocket::Result<()> {
///     let workers: Vec<_> = (0..8)
///         .map(|i| {
///             let pool = &pool;
///             s.spawn(move || -> jetsocket::Result<()> {
///                 let conn = pool.acquire("echo")?;      // ws://host:port/echo
///                 conn.send_text(format!("job {i}"))?;
///                 let reply = conn.recv_timeout(Duration::from_secs(10))?;
///                 assert_eq!(reply.as_text(), Some(format!("job {i}").as_str()));
///                 Ok(())
///             })                                         // the guard drops: back to the pool
///         })
///         .collect();
///     for worker in workers {
///         worker.join().expect("worker panicked")?;
///     }
///     Ok(())
/// })?;
/// let stats = pool.stats();
/// assert!(stats.total_connections <= 4);
/// assert_eq!(stats.active_connections, 0);
/// pool.close();
/// # Ok::<(), jetsocket::Error>(())
/// ```
#[derive(Clone)]
pub struct ConnectionPool {
    owner: Arc<PoolOwner>,
}

impl fmt::Debug for ConnectionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.owner.shared;
        let st = shared.state.lock();
        f.debug_struct("ConnectionPool")
            .field("id", &shared.id)
            .field("base_url", &crate::url::redact(&shared.base))
            .field("config", &shared.config)
            .field("live", &st.live.len())
            .field("idle", &st.idle.len())
            .field("closed", &st.closed)
            .finish()
    }
}

impl ConnectionPool {
    /// A pool of connections below `base_url`, each with the default options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a bad configuration (`max_connections`, `max_idle_time`
    /// or `health_check_interval` of zero), [`Error::InvalidUrl`] for a bad base URL.
    pub fn new(config: ConnectionPoolConfig, base_url: impl AsRef<str>) -> Result<Self> {
        Self::with_options(config, base_url, |url| SyncWebSocket::builder(url))
    }

    /// A pool whose connections are made from `options`, which gets each connection's URL
    /// and returns its [`Builder`]: headers, TLS, heartbeat, backoff, presets, `on_open`
    /// hooks, ... It is called for every new connection.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use std::time::Duration;
    /// use jetsocket::{ConnectionPool, ConnectionPoolConfig, HeartbeatConfig, SyncWebSocket};
    ///
    /// let pool = ConnectionPool::with_options(ConnectionPoolConfig::default(), server.url(), |url| {
    ///     SyncWebSocket::builder(url)
    ///         .header("Authorization", "Bearer token")
    ///         .heartbeat(HeartbeatConfig::new(Duration::from_secs(10), Duration::from_secs(5)))
    /// })?;
    /// let conn = pool.acquire("/v1/stream")?;
    /// assert!(conn.is_connected());
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_options(
        config: ConnectionPoolConfig,
        base_url: impl AsRef<str>,
        options: impl Fn(&str) -> Builder + Send + Sync + 'static,
    ) -> Result<Self> {
        config.validate()?;
        let base = base_url.as_ref().trim().to_owned();
        crate::url::parse(&base)?;
        let shared = Arc::new(PoolShared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            config,
            base,
            template: Arc::new(options),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                live: HashMap::new(),
                dialling: 0,
                closing: Vec::new(),
                closed: false,
                next_id: 1,
                next_health_check: crate::later(Instant::now(), config.health_check_interval),
                maintainer: None,
                maintainer_parked: false,
            }),
            available: Condvar::new(),
            maintain: Condvar::new(),
            created: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            retired_sent: AtomicU64::new(0),
            retired_received: AtomicU64::new(0),
        });
        Ok(ConnectionPool {
            owner: Arc::new(PoolOwner { shared }),
        })
    }

    /// The pool's configuration.
    pub fn config(&self) -> &ConnectionPoolConfig {
        &self.owner.shared.config
    }

    /// A connection to `path_or_url`, waiting at most the configured acquire timeout for a
    /// free slot. See [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Errors
    ///
    /// As [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire(&self, path_or_url: &str) -> Result<PooledConnection> {
        self.acquire_timeout(path_or_url, self.owner.shared.config.acquire_timeout)
    }

    /// A connection to `path_or_url`, waiting at most `timeout` for a free slot.
    ///
    /// `path_or_url` is an absolute `ws://`/`wss://` URL, a path starting with `/` (which
    /// replaces the base URL's path) or a relative path (appended to the base URL's path);
    /// the base URL's query is not kept. An idle, healthy connection to the same URL is
    /// reused; otherwise a new one is dialled (bounded by its connect timeout, not by
    /// `timeout`).
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// use std::time::Duration;
    /// use jetsocket::{ConnectionPool, ConnectionPoolConfig, Error};
    ///
    /// let pool = ConnectionPool::new(ConnectionPoolConfig::default().max_connections(1), server.url())?;
    /// let first = pool.acquire("a")?;
    /// match pool.acquire_timeout("b", Duration::from_millis(50)) {
    ///     Err(Error::PoolExhausted { max_connections: 1, .. }) => {}
    ///     other => panic!("expected PoolExhausted, got {other:?}"),
    /// }
    /// drop(first);
    /// let second = pool.acquire_timeout("b", Duration::from_secs(10))?;
    /// # let _ = second;
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::PoolExhausted`] if every slot stayed in use for `timeout`;
    /// [`Error::InvalidUrl`] for a bad URL; the connect error if dialling failed
    /// ([`Error::Timeout`], [`Error::Http`], ...); [`Error::AlreadyClosed`] once the pool is
    /// closed.
    pub fn acquire_timeout(
        &self,
        path_or_url: &str,
        timeout: Duration,
    ) -> Result<PooledConnection> {
        let shared = &self.owner.shared;
        let url = resolve(&shared.base, path_or_url);
        crate::url::parse(&url)?;
        let deadline = Instant::now().checked_add(timeout);
        let mut st = shared.state.lock();
        loop {
            if st.closed {
                return Err(Error::AlreadyClosed);
            }
            let now = Instant::now();
            if shared.evict_expired(&mut st, now) {
                shared.poke_maintainer(&mut st);
            }
            // Reuse the most recently released connection to this URL.
            if let Some(pos) = st.idle.iter().rposition(|i| i.url == url) {
                let idle = st.idle.remove(pos);
                if healthy(&idle.ws) {
                    drop(st);
                    drain(&idle.ws);
                    shared.reused.fetch_add(1, Ordering::Relaxed);
                    return Ok(PooledConnection {
                        ws: Some(idle.ws),
                        id: idle.id,
                        url,
                        pool: Arc::clone(shared),
                        discard: false,
                    });
                }
                log::debug!(
                    "pool {}: replacing a connection that is not connected",
                    shared.id
                );
                shared.retire(&mut st, idle.id);
                shared.poke_maintainer(&mut st);
                continue;
            }
            let mut room = st.in_use() < shared.config.max_connections;
            if !room && !st.idle.is_empty() {
                // Full, but some connections to other URLs are idle: close the least
                // recently used.
                let lru = st.idle.remove(0);
                shared.retire(&mut st, lru.id);
                shared.poke_maintainer(&mut st);
                room = true;
            }
            if room {
                st.dialling += 1;
                let id = st.next_id;
                st.next_id += 1;
                drop(st);
                return self.dial(id, url);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::PoolExhausted {
                    max_connections: shared.config.max_connections,
                    timeout,
                });
            }
            match deadline {
                Some(d) => {
                    shared.available.wait_until(&mut st, d);
                }
                None => shared.available.wait(&mut st),
            }
        }
    }

    /// Dials a new connection in a reserved slot.
    fn dial(&self, id: u64, url: String) -> Result<PooledConnection> {
        let shared = &self.owner.shared;
        log::debug!("pool {}: dialling {}", shared.id, crate::url::redact(&url));
        let attempt = catch_unwind(AssertUnwindSafe(|| (shared.template)(&url).connect()));
        let mut st = shared.state.lock();
        st.dialling -= 1;
        let result = match attempt {
            Ok(result) => result,
            Err(panic) => {
                // The options closure panicked: free the slot, then let the panic go on.
                drop(st);
                shared.available.notify_one();
                resume_unwind(panic);
            }
        };
        let ws = match result {
            Ok(ws) => ws,
            Err(e) => {
                drop(st);
                shared.available.notify_one();
                return Err(e);
            }
        };
        if st.closed {
            drop(st);
            let _ = ws.close();
            return Err(Error::AlreadyClosed);
        }
        st.live.insert(id, ws.clone());
        drop(st);
        shared.created.fetch_add(1, Ordering::Relaxed);
        Ok(PooledConnection {
            ws: Some(ws),
            id,
            url,
            pool: Arc::clone(shared),
            discard: false,
        })
    }

    /// A snapshot of the pool's statistics.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.owner.shared;
        let (live, idle, dialling): (Vec<SyncWebSocket>, usize, usize) = {
            let st = shared.state.lock();
            (
                st.live.values().cloned().collect(),
                st.idle.len(),
                st.dialling,
            )
        };
        let (mut sent, mut received) = (
            shared.retired_sent.load(Ordering::Relaxed),
            shared.retired_received.load(Ordering::Relaxed),
        );
        for ws in &live {
            let stats = ws.stats();
            sent += stats.messages_sent;
            received += stats.messages_received;
        }
        PoolStats {
            total_connections: live.len(),
            active_connections: live.len() - idle,
            idle_connections: idle,
            connecting: dialling,
            messages_sent: sent,
            messages_received: received,
            connections_created: shared.created.load(Ordering::Relaxed),
            connections_closed: shared.closed.load(Ordering::Relaxed),
            reused: shared.reused.load(Ordering::Relaxed),
        }
    }

    /// Closes every connection, idle or in use (their guards then hold closed connections),
    /// and stops the maintenance thread. Later `acquire` calls fail with
    /// [`Error::AlreadyClosed`]; waiting ones return it at once. Closing a closed pool
    /// does nothing.
    pub fn close(&self) {
        close_pool(&self.owner.shared);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.owner.shared.state.lock().closed
    }
}

/// A connection borrowed from a [`ConnectionPool`]: derefs to [`SyncWebSocket`] and goes
/// back to the pool when dropped (if it is still healthy; otherwise the pool closes it
/// and frees its slot).
///
/// # Examples
///
/// ```
/// # let server = jetsocket::__doc_server();
/// use std::time::Duration;
/// use jetsocket::{ConnectionPool, ConnectionPoolConfig};
///
/// let pool = ConnectionPool::new(ConnectionPoolConfig::default(), server.url())?;
/// {
///     let conn = pool.acquire("/")?;
///     conn.send_text("ping")?;
///     assert_eq!(conn.recv_timeout(Duration::from_secs(10))?.as_text(), Some("ping"));
/// } // back to the pool
/// let again = pool.acquire("/")?; // the same connection
/// assert_eq!(pool.stats().connections_created, 1);
/// # let _ = again;
/// # Ok::<(), jetsocket::Error>(())
/// ```
pub struct PooledConnection {
    /// Present until `detach` takes it.
    ws: Option<SyncWebSocket>,
    id: u64,
    url: String,
    pool: Arc<PoolShared>,
    discard: bool,
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("pool", &self.pool.id)
            .field("connection", &self.ws)
            .finish()
    }
}

impl Deref for PooledConnection {
    type Target = SyncWebSocket;

    fn deref(&self) -> &SyncWebSocket {
        self.ws
            .as_ref()
            .expect("the connection is present until the guard is consumed")
    }
}

impl AsRef<SyncWebSocket> for PooledConnection {
    fn as_ref(&self) -> &SyncWebSocket {
        self
    }
}

impl PooledConnection {
    /// Gives the connection up instead of returning it: the pool closes it (in the
    /// background) and frees its slot. Use it after an error that leaves the connection in
    /// an unknown state.
    pub fn discard(mut self) {
        self.discard = true;
    }

    /// Takes the connection out of the pool: it is yours to keep and close, and its slot
    /// is free for another connection.
    pub fn detach(mut self) -> SyncWebSocket {
        let ws = self
            .ws
            .take()
            .expect("the connection is present until the guard is consumed");
        self.pool.detach(self.id);
        ws
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        if let Some(ws) = self.ws.take() {
            let url = std::mem::take(&mut self.url);
            self.pool.release(self.id, url, ws, self.discard);
        }
    }
}

/// A snapshot of a [`ConnectionPool`]'s statistics, from [`ConnectionPool::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PoolStats {
    /// Open connections the pool owns (in use and idle).
    pub total_connections: usize,
    /// Connections handed out and not yet returned.
    pub active_connections: usize,
    /// Connections waiting to be reused.
    pub idle_connections: usize,
    /// Connections being dialled.
    pub connecting: usize,
    /// Messages sent over the pool's connections, including closed ones.
    pub messages_sent: u64,
    /// Messages received over the pool's connections, including closed ones.
    pub messages_received: u64,
    /// Connections dialled.
    pub connections_created: u64,
    /// Connections closed by the pool (idle too long, unhealthy, discarded, evicted) or
    /// detached from it.
    pub connections_closed: u64,
    /// Acquisitions served by an idle connection.
    pub reused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn pool_types_are_send_sync() {
        assert_send_sync::<ConnectionPool>();
        assert_send_sync::<PooledConnection>();
        assert_send_sync::<ConnectionPoolConfig>();
        assert_send_sync::<PoolStats>();
    }

    #[test]
    fn defaults() {
        let c = ConnectionPoolConfig::default();
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.max_idle_time, Duration::from_secs(300));
        assert_eq!(c.health_check_interval, Duration::from_secs(30));
        assert_eq!(c.acquire_timeout, Duration::from_secs(10));
        assert_eq!(ConnectionPoolConfig::new(), c);
    }

    #[test]
    fn validation() {
        let bad = [
            ConnectionPoolConfig::default().max_connections(0),
            ConnectionPoolConfig::default().max_idle_time(Duration::ZERO),
            ConnectionPoolConfig::default().health_check_interval(Duration::ZERO),
        ];
        for config in bad {
            let err = ConnectionPool::new(config, "ws://127.0.0.1:9/").unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        }
        let err = ConnectionPool::new(ConnectionPoolConfig::default(), "http://x/").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
        // A zero acquire timeout is allowed: try once, never wait.
        assert!(ConnectionPool::new(
            ConnectionPoolConfig::default().acquire_timeout(Duration::ZERO),
            "ws://127.0.0.1:9/"
        )
        .is_ok());
    }

    #[test]
    fn url_resolution() {
        let base = "ws://h:1/api";
        assert_eq!(resolve(base, "stream"), "ws://h:1/api/stream");
        assert_eq!(resolve("ws://h:1/api/", "stream"), "ws://h:1/api/stream");
        assert_eq!(resolve(base, "/other"), "ws://h:1/other");
        assert_eq!(resolve(base, ""), "ws://h:1/api");
        assert_eq!(resolve(base, "wss://x/y"), "wss://x/y");
        assert_eq!(resolve("ws://h:1", "a/b"), "ws://h:1/a/b");
        assert_eq!(resolve("ws://h:1/", "a?x=1"), "ws://h:1/a?x=1");
        assert_eq!(resolve("ws://h:1/p?token=t", "a"), "ws://h:1/p/a");
        assert_eq!(resolve("wss://h", "/"), "wss://h/");
    }

    #[test]
    fn acquire_from_a_closed_pool_fails() {
        let pool =
            ConnectionPool::new(ConnectionPoolConfig::default(), "ws://127.0.0.1:9/").unwrap();
        pool.close();
        assert!(pool.is_closed());
        assert!(matches!(pool.acquire("x"), Err(Error::AlreadyClosed)));
        pool.close();
    }
}
