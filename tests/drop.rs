//! Checks that dropping the last handle closes the connection (the server sees a close frame),
//! returns promptly in every state, and joins the handle's threads: thread and file-descriptor
//! counts return to their baseline after many connect/drop cycles, and callbacks or hooks that
//! hold a weak handle do not keep a connection alive.
//!
//! Every test takes `LOCK` first (and so drops it last): thread and fd counts are
//! process-wide. Test names start with `drop_` so harness threads can be told apart.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use jetsocket::{BackoffConfig, Event, EventKind, HeartbeatConfig, State, SyncWebSocket};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Threads that are neither the main thread nor a harness thread (both are named after this
/// binary or a `drop_*` test, as are threads they spawn without a name).
fn counted_threads() -> Vec<String> {
    thread_names()
        .into_iter()
        .filter(|n| !n.starts_with("drop"))
        .collect()
}

/// Live threads of jetsocket itself (`jetsocket-io-N`, `jetsocket-events-N`).
fn jetsocket_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("jetsocket"))
        .count()
}

fn assert_no_jetsocket_threads() {
    assert!(
        wait_until(TIMEOUT, || jetsocket_threads() == 0),
        "jetsocket threads still running: {:?}",
        thread_names()
    );
}

#[test]
fn drop_closes_the_connection_and_joins_its_thread() {
    let _g = serial();
    let server = WsServer::recording();
    let ws = SyncWebSocket::connect_url(server.url()).expect("connect");
    assert!(jetsocket_threads() >= 1);
    within(TIMEOUT, "drop", move || drop(ws));
    assert_eq!(
        server.wait_for_close(TIMEOUT),
        Some((1000, String::new())),
        "dropping the last handle sends a close frame"
    );
    // `drop` returned after joining: no wait needed, but allow the kernel to catch up.
    assert_no_jetsocket_threads();
    assert!(server.wait_for_live(0, TIMEOUT));
}

#[test]
fn drop_of_a_clone_keeps_the_connection() {
    let _g = serial();
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let clone = ws.clone();
    drop(clone);
    assert_echo(&ws, "still here");
    assert!(server.close_frames().is_empty());
    drop(ws);
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
}

#[test]
fn drop_fifty_cycles_leak_no_threads_or_fds() {
    let _g = serial();
    let server = WsServer::echo();
    let cycle = |i: usize| {
        let mut builder = SyncWebSocket::builder(server.url()).heartbeat(HeartbeatConfig::new(
            Duration::from_secs(30),
            Duration::from_secs(10),
        ));
        if i % 2 == 1 {
            // Odd cycles also start the dispatcher thread and an event subscriber.
            builder = builder.on(EventKind::Connected, |_| {});
        }
        let ws = builder.connect().expect("connect");
        let _events = ws.events();
        assert_echo(&ws, &format!("c{i}"));
        drop(ws);
    };
    // Warm up once (lazy process-wide initialisation), then measure.
    cycle(0);
    assert!(server.wait_for_live(0, TIMEOUT));
    assert_no_jetsocket_threads();
    let threads = counted_threads();
    let fds = open_fds();
    for i in 1..=50 {
        cycle(i);
    }
    assert!(server.wait_for_live(0, TIMEOUT));
    assert_no_jetsocket_threads();
    assert_no_thread_or_fd_leak(counted_threads, &threads, fds);
    assert_eq!(
        server.close_frames().len(),
        51,
        "every drop sent a close frame"
    );
}

#[test]
fn drop_frees_a_handle_whose_callbacks_hold_a_weak_handle() {
    let _g = serial();
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let weak = ws.downgrade();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = Arc::clone(&calls);
    ws.on(EventKind::Message, move |_| {
        if let Some(ws) = weak.upgrade() {
            calls2.fetch_add(1, Ordering::SeqCst);
            let _ = ws.state();
        }
    });
    let weak_probe = ws.downgrade();
    ws.send_text("trigger").expect("send");
    assert!(wait_until(TIMEOUT, || calls.load(Ordering::SeqCst) == 1));
    within(TIMEOUT, "drop", move || drop(ws));
    assert!(weak_probe.upgrade().is_none(), "the handle is freed");
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
    assert_no_jetsocket_threads();
}

#[test]
fn drop_of_the_last_handle_inside_a_callback() {
    let _g = serial();
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let weak = ws.downgrade();
    let (holding_tx, holding_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    ws.on(EventKind::Message, move |_| {
        if let Some(strong) = weak.upgrade() {
            let _ = holding_tx.send(());
            let _ = release_rx.recv_timeout(TIMEOUT);
            // The user's handle is gone by now: this drop is the last one, and it runs on
            // the dispatcher thread.
            drop(strong);
        }
    });
    let probe = ws.downgrade();
    ws.send_text("go").expect("send");
    holding_rx
        .recv_timeout(TIMEOUT)
        .expect("callback holds a handle");
    drop(ws);
    assert!(probe.upgrade().is_some(), "the callback still holds it");
    release_tx.send(()).expect("release");
    assert_eq!(
        server.wait_for_close(TIMEOUT).map(|c| c.0),
        Some(1000),
        "the last drop, inside a callback, closes the connection"
    );
    assert!(wait_until(TIMEOUT, || probe.upgrade().is_none()));
    assert_no_jetsocket_threads();
}

#[test]
fn drop_callback_with_a_strong_clone_is_released_by_close() {
    let _g = serial();
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let captured = ws.clone();
    ws.on(EventKind::Pong, move |_| {
        let _ = captured.state();
    });
    let probe = ws.downgrade();
    close_within(&ws, TIMEOUT, "close").expect("close");
    drop(ws);
    assert!(
        wait_until(TIMEOUT, || probe.upgrade().is_none()),
        "close() releases the callbacks' handles"
    );
    assert_no_jetsocket_threads();
}

#[test]
fn drop_frees_a_handle_whose_on_open_hook_holds_a_weak_handle() {
    let _g = serial();
    let server = WsServer::echo();
    let slot: Arc<Mutex<Option<jetsocket::WeakSyncWebSocket>>> = Arc::new(Mutex::new(None));
    let slot2 = Arc::clone(&slot);
    let opened = Arc::new(AtomicUsize::new(0));
    let opened2 = Arc::clone(&opened);
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .on_open(move |conn| {
            opened2.fetch_add(1, Ordering::SeqCst);
            let weak = slot2.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(ws) = weak.and_then(|w| w.upgrade()) {
                let _ = ws.stats();
            }
            conn.send_text("hello")
        })
        .connect()
        .expect("connect");
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(ws.downgrade());
    assert_eq!(
        ws.recv_timeout(TIMEOUT)
            .expect("hook message echoed")
            .as_text(),
        Some("hello")
    );
    let probe = ws.downgrade();
    within(TIMEOUT, "drop", move || drop(ws));
    assert!(probe.upgrade().is_none());
    assert_eq!(opened.load(Ordering::SeqCst), 1);
    assert_no_jetsocket_threads();
}

#[test]
fn drop_while_a_handshake_hangs_returns_promptly() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .connect_timeout(Duration::from_secs(60))
        .close_timeout(Duration::from_secs(1))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(1))
                .jitter(false),
        )
        .connect()
        .expect("connect");
    let events = ws.events();
    // The next attempt reaches the proxy, which swallows the handshake.
    proxy.set_black_hole(true);
    proxy.reset_all();
    events_until(&events, |e| matches!(e, Event::Connecting { .. }));
    assert!(proxy.wait_for_connections(2, TIMEOUT));
    assert_eq!(ws.state(), State::Connecting);
    let started = Instant::now();
    within(
        Duration::from_secs(6),
        "drop during a hanging handshake",
        move || drop(ws),
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_no_jetsocket_threads();
}

#[test]
fn drop_while_backing_off_returns_promptly() {
    let _g = serial();
    let server = WsServer::echo();
    let (_proxy, ws, _events) = backing_off_handle(server.addr());
    within(
        Duration::from_secs(5),
        "drop while backing off",
        move || drop(ws),
    );
    assert_no_jetsocket_threads();
}

#[test]
fn drop_waits_at_most_the_close_timeout_for_a_silent_peer() {
    let _g = serial();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let server = RawServer::start(move |tcp| {
        let Ok(_ws) = tungstenite::accept(tcp) else {
            return;
        };
        // Never reads again: our close frame is never answered.
        let _ = stop_rx.recv_timeout(TIMEOUT * 3);
    });
    let close_timeout = Duration::from_millis(300);
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .close_timeout(close_timeout)
        .connect()
        .expect("connect");
    within(close_timeout + Duration::from_secs(5), "drop", move || {
        drop(ws)
    });
    assert_no_jetsocket_threads();
    drop(stop_tx);
}

#[test]
fn drop_of_idle_and_failed_handles() {
    let _g = serial();
    let idle = SyncWebSocket::builder("ws://127.0.0.1:9/")
        .build()
        .expect("build");
    assert_eq!(idle.state(), State::Idle);
    within(TIMEOUT, "drop an idle handle", move || drop(idle));
    assert_no_jetsocket_threads();

    let rejecting = HttpResponder::status(403);
    let failed = SyncWebSocket::builder(rejecting.url())
        .build()
        .expect("build");
    assert!(failed.connect().is_err());
    assert!(wait_until(TIMEOUT, || failed.state() == State::Failed));
    within(TIMEOUT, "drop a failed handle", move || drop(failed));
    assert_no_jetsocket_threads();
}

#[test]
fn drop_joins_the_dispatcher_of_a_never_connected_handle() {
    let _g = serial();
    let ws = SyncWebSocket::builder("ws://127.0.0.1:9/")
        .on(EventKind::Connected, |_| {})
        .build()
        .expect("build");
    // A new thread takes its name from inside itself: wait until both are named.
    assert!(
        wait_until(TIMEOUT, || jetsocket_threads() == 2),
        "{:?}",
        thread_names()
    );
    within(TIMEOUT, "drop", move || drop(ws));
    assert_no_jetsocket_threads();

    // A callback registered after the end starts no thread.
    let server = WsServer::echo();
    let ws = SyncWebSocket::connect_url(server.url()).expect("connect");
    ws.close().expect("close");
    ws.on(EventKind::Message, |_| {});
    assert_no_jetsocket_threads();
    drop(ws);
}
