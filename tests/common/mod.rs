#![allow(dead_code, unused_imports)] // each test crate uses a different subset of the helpers
//! Shared in-process test servers for the integration tests (`mod common;`).
//!
//! Everything binds 127.0.0.1:0 only. Every server handle stops its accept thread
//! (self-connect trick), shuts down its live sockets and joins all its threads on `Drop`.
//! All toolkit threads are named `tk-*` (see [`toolkit_thread_count`]).

pub mod base;
pub mod blackhole;
pub mod client;
pub mod connect_proxy;
pub mod http;
pub mod proxy;
pub mod raw_ws;
pub mod tls;
pub mod ws;

use std::net::TcpStream;
use std::time::{Duration, Instant};

pub use self::base::Counter;
pub use self::blackhole::{blackhole_addr, Blackhole};
pub use self::client::{
    assert_echo, backing_off_handle, close_within, connect_then_error_after_before,
    connect_without_heartbeat, fast_backoff, wait_closed,
};
pub use self::connect_proxy::{ConnectProxy, ProxyMode};
pub use self::http::{reason_phrase, HttpResponder, RawServer};
pub use self::proxy::FaultProxy;
pub use self::tls::{tls_client, ServerCert, TestCa, TlsWsServer};
pub use self::ws::{
    close_frame, HandshakeRequest, ServerConn, ServerStream, WsServer, WsServerBuilder,
};

/// A generous default timeout for waits in tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `f` on its own thread and returns its result, failing the test if it takes longer
/// than `limit` (for calls that have no timeout of their own).
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

/// Collects events up to and including the first one matching `last`, failing the test if
/// it does not come within [`TIMEOUT`].
pub fn events_until(
    rx: &crossbeam_channel::Receiver<jetsocket::Event>,
    mut last: impl FnMut(&jetsocket::Event) -> bool,
) -> Vec<jetsocket::Event> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_deadline(deadline) {
            Ok(e) => {
                let done = last(&e);
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Err(e) => panic!("expected event did not come ({e}); saw {seen:?}"),
        }
    }
}

fn proc_status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Number of threads in this process (`Threads:` in /proc/self/status).
pub fn thread_count() -> usize {
    proc_status_field("Threads").unwrap_or(0) as usize
}

/// Names of all threads in this process (from /proc/self/task/*/comm, max 15 chars each).
pub fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim_end().to_string())
        .collect()
}

/// Number of live threads started by this toolkit (all named `tk-*`).
pub fn toolkit_thread_count() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("tk-"))
        .count()
}

/// Number of open file descriptors (entries in /proc/self/fd).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Fails the test unless, within [`TIMEOUT`], no more threads (as `counted_threads` lists
/// them) and file descriptors are open than the `threads_before` and `fds_before` taken
/// earlier.
pub fn assert_no_thread_or_fd_leak(
    counted_threads: impl Fn() -> Vec<String>,
    threads_before: &[String],
    fds_before: usize,
) {
    assert!(
        wait_until(TIMEOUT, || counted_threads().len() <= threads_before.len()),
        "threads leaked: before {threads_before:?}, after {:?}",
        counted_threads()
    );
    assert!(
        wait_until(TIMEOUT, || open_fds() <= fds_before),
        "fds leaked: before {fds_before}, after {}",
        open_fds()
    );
}

/// Resident set size in bytes (`VmRSS:` in /proc/self/status).
pub fn rss_bytes() -> u64 {
    proc_status_field("VmRSS").unwrap_or(0) * 1024
}

/// Polls `cond` with a short back-off (1 ms doubling up to 20 ms) until it holds or
/// `timeout` elapses; returns whether it held. Only for conditions with no event to wait on.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Plain blocking tungstenite client socket as returned by [`ws_client`].
pub type ClientWs = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Connects a raw tungstenite client to a `ws://` URL (10 s read/write timeouts), panicking on failure.
pub fn ws_client(url: &str) -> ClientWs {
    let (ws, _resp) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        let _ = s.set_read_timeout(Some(TIMEOUT));
        let _ = s.set_write_timeout(Some(TIMEOUT));
    }
    ws
}
