//! Steps of driving a jetsocket client that many tests share: connecting without heartbeat
//! traffic, a backoff that reconnects within milliseconds, an echo round trip, and waits for
//! the events that end or pause a connection.

use std::net::SocketAddr;
use std::time::Duration;

use crossbeam_channel::Receiver;
use jetsocket::{BackoffConfig, Error, Event, State, SyncWebSocket};

use super::{events_until, within, FaultProxy, TIMEOUT};

/// Connects to `url` with the heartbeat off (no ping traffic to account for), failing the
/// test if that fails.
pub fn connect_without_heartbeat(url: &str) -> SyncWebSocket {
    SyncWebSocket::builder(url)
        .heartbeat(None)
        .connect()
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// Reconnects within milliseconds: 5 ms doubling up to 50 ms, no jitter.
pub fn fast_backoff() -> BackoffConfig {
    BackoffConfig::default()
        .base(Duration::from_millis(5))
        .cap(Duration::from_millis(50))
        .jitter(false)
}

/// Sends `text` and asserts that an echo server sends the same text back.
pub fn assert_echo(ws: &SyncWebSocket, text: &str) {
    ws.send_text(text.to_owned()).expect("send");
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("echo").as_text(),
        Some(text)
    );
}

/// Calls `ws.close()` on another thread and returns its result, failing the test (with
/// `what`) if it takes longer than `limit`.
pub fn close_within(ws: &SyncWebSocket, limit: Duration, what: &str) -> jetsocket::Result<()> {
    let ws = ws.clone();
    within(limit, what, move || ws.close())
}

/// Collects events up to and including the `Closed` event that ends a connection.
pub fn wait_closed(events: &Receiver<Event>) -> Vec<Event> {
    events_until(events, |e| matches!(e, Event::Closed { .. }))
}

/// Connects `ws` to a server that sends the text message "before" and then something bad:
/// asserts that "before" arrives and returns the error the next `recv` fails with. `case`
/// names the script in failure messages.
pub fn connect_then_error_after_before(ws: &SyncWebSocket, case: &str) -> Error {
    ws.connect()
        .unwrap_or_else(|e| panic!("{case}: handshake failed: {e}"));
    let first = ws
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("{case}: the message before the bad frame was lost: {e}"));
    assert_eq!(first.as_text(), Some("before"), "{case}");
    match ws.recv_timeout(TIMEOUT) {
        Ok(m) => panic!("{case}: got a message instead of an error: {m:?}"),
        Err(e) => e,
    }
}

/// A handle connected to `upstream` through a new [`FaultProxy`] whose connection the proxy
/// has just reset: it is backing off with a fixed 60 s delay, so it stays in
/// [`State::BackingOff`] for the rest of the test. Returns the proxy, the handle and its
/// events (subscribed before the reset).
pub fn backing_off_handle(upstream: SocketAddr) -> (FaultProxy, SyncWebSocket, Receiver<Event>) {
    let proxy = FaultProxy::start(upstream);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_secs(60))
                .cap(Duration::from_secs(60))
                .jitter(false),
        )
        .connect()
        .expect("connect");
    let events = ws.events();
    proxy.reset_all();
    events_until(&events, |e| {
        matches!(
            e,
            Event::StateChanged {
                to: State::BackingOff,
                ..
            }
        )
    });
    (proxy, ws, events)
}
