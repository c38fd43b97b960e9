//! Checks the outgoing queue: sends made while the connection is away are queued up to the
//! configured capacity and delivered in order once connected; a full queue fails `send` with
//! `SendQueueFull` under the default policy, `try_send` never blocks, `send_timeout` gives up
//! with `Timeout(Send)`, a send blocked under `SendFullPolicy::Block` completes once the server
//! is back (or fails once the handle is closed), and a full queue while connected only slows
//! senders down.

mod common;

use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use jetsocket::{
    BackoffConfig, Error, Event, SendFullPolicy, SendQueueConfig, State, SyncWebSocket, Timeout,
};

/// A generous upper bound for calls that must not wait.
const PROMPT: Duration = Duration::from_secs(2);

/// A handle through `proxy` whose connection has just dropped and whose reconnects are
/// refused: it is away until `proxy.set_refuse(false)`.
fn away_handle(proxy: &FaultProxy, queue: SendQueueConfig) -> (SyncWebSocket, Receiver<Event>) {
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .send_queue(queue)
        .backoff(fast_backoff())
        .connect()
        .expect("connect");
    let events = ws.events();
    proxy.set_refuse(true);
    proxy.reset_all();
    events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    assert_ne!(ws.state(), State::Connected);
    (ws, events)
}

#[test]
fn sends_before_connecting_are_queued_up_to_the_capacity() {
    let server = WsServer::recording();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .send_queue(SendQueueConfig::new(4))
        .build()
        .expect("build");
    for i in 0..4 {
        ws.send_text(format!("q{i}")).expect("queued while idle");
    }
    assert_eq!(ws.stats().send_queued, 4);
    let started = Instant::now();
    match ws.send_text("overflow") {
        Err(Error::SendQueueFull { capacity: 4 }) => {}
        other => panic!("expected SendQueueFull, got {other:?}"),
    }
    match ws.try_send("overflow") {
        Err(Error::SendQueueFull { capacity: 4 }) => {}
        other => panic!("expected SendQueueFull, got {other:?}"),
    }
    assert!(
        started.elapsed() < PROMPT,
        "a full queue must not block send"
    );
    match ws.send_timeout("overflow", Duration::from_millis(100)) {
        Err(Error::Timeout(Timeout::Send)) => {}
        other => panic!("expected Timeout(Send), got {other:?}"),
    }
    assert_eq!(ws.stats().send_queued, 4);
    ws.connect().expect("connect");
    assert_eq!(server.wait_for_texts(4, TIMEOUT), ["q0", "q1", "q2", "q3"]);
    assert!(wait_until(TIMEOUT, || ws.stats().send_queued == 0));
    ws.send_text("after").expect("send once connected");
    assert_eq!(
        server.wait_for_texts(5, TIMEOUT).last().map(String::as_str),
        Some("after")
    );
    // Nothing else went out: the rejected messages are gone.
    assert_eq!(server.received().len(), 5);
    ws.close().expect("close");
}

#[test]
fn sends_while_reconnecting_are_queued_and_bounded() {
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) = away_handle(&proxy, SendQueueConfig::new(8));
    for i in 0..8 {
        ws.send_text(format!("m{i}")).expect("queued while away");
    }
    match ws.send_text("m8") {
        Err(Error::SendQueueFull { capacity: 8 }) => {}
        other => panic!("expected SendQueueFull, got {other:?}"),
    }
    assert!(!ws.state().is_terminal());
    proxy.set_refuse(false);
    events_until(&events, |e| matches!(e, Event::Reconnected { .. }));
    assert_eq!(
        server.wait_for_texts(8, TIMEOUT),
        ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7"]
    );
    ws.close().expect("close");
}

#[test]
fn try_send_never_blocks_even_with_the_block_policy() {
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let (ws, _events) = away_handle(
        &proxy,
        SendQueueConfig::new(2).when_full(SendFullPolicy::Block),
    );
    ws.try_send("a").expect("room");
    ws.try_send("b").expect("room");
    let started = Instant::now();
    for _ in 0..100 {
        match ws.try_send("c") {
            Err(Error::SendQueueFull { capacity: 2 }) => {}
            other => panic!("expected SendQueueFull, got {other:?}"),
        }
    }
    assert!(started.elapsed() < PROMPT, "try_send blocked");
    ws.close().expect("close");
}

#[test]
fn send_timeout_gives_up_when_the_queue_stays_full() {
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    for policy in [SendFullPolicy::Error, SendFullPolicy::Block] {
        let (ws, _events) = away_handle(&proxy, SendQueueConfig::new(1).when_full(policy));
        ws.send_timeout("first", Duration::from_millis(100))
            .expect("room for one");
        let started = Instant::now();
        match ws.send_timeout("second", Duration::from_millis(100)) {
            Err(Error::Timeout(Timeout::Send)) => {}
            other => panic!("{policy:?}: expected Timeout(Send), got {other:?}"),
        }
        assert!(started.elapsed() < PROMPT);
        match ws.send_deadline("third", Instant::now() + Duration::from_millis(50)) {
            Err(Error::Timeout(Timeout::Send)) => {}
            other => panic!("{policy:?}: expected Timeout(Send), got {other:?}"),
        }
        ws.close().expect("close");
        proxy.set_refuse(false);
    }
}

#[test]
fn blocked_send_completes_once_the_server_is_back() {
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) = away_handle(
        &proxy,
        SendQueueConfig::new(2).when_full(SendFullPolicy::Block),
    );
    ws.send_text("m0").expect("room");
    ws.send_text("m1").expect("room");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let sender = ws.clone();
    let thread = std::thread::spawn(move || {
        let _ = done_tx.send(sender.send_text("m2"));
    });
    // Negative check: the third send waits while the server is away.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "send did not block on a full queue with SendFullPolicy::Block"
    );
    proxy.set_refuse(false);
    events_until(&events, |e| matches!(e, Event::Reconnected { .. }));
    let result = done_rx
        .recv_timeout(TIMEOUT)
        .expect("the blocked send completes once connected");
    result.expect("blocked send");
    thread.join().expect("sender thread");
    assert_eq!(server.wait_for_texts(3, TIMEOUT), ["m0", "m1", "m2"]);
    ws.close().expect("close");
}

#[test]
fn blocked_send_fails_once_the_handle_is_closed() {
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let (ws, _events) = away_handle(
        &proxy,
        SendQueueConfig::new(1).when_full(SendFullPolicy::Block),
    );
    ws.send_text("m0").expect("room");
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let sender = ws.clone();
    let thread = std::thread::spawn(move || {
        let _ = done_tx.send(sender.send_text("m1"));
    });
    // Negative check: the send is blocked.
    assert!(done_rx.recv_timeout(Duration::from_millis(200)).is_err());
    ws.close().expect("close");
    match done_rx.recv_timeout(TIMEOUT) {
        Ok(Err(Error::AlreadyClosed)) => {}
        other => panic!("a send blocked across close() should fail with AlreadyClosed: {other:?}"),
    }
    thread.join().expect("sender thread");
}

#[test]
fn a_full_queue_while_connected_only_slows_senders_down() {
    const N: usize = 5_000;
    let server = WsServer::recording();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .send_queue(SendQueueConfig::new(1))
        .connect()
        .expect("connect");
    std::thread::scope(|s| {
        for t in 0..2 {
            let ws = ws.clone();
            s.spawn(move || {
                for i in 0..N {
                    ws.send_text(format!("{t}:{i}"))
                        .expect("send while connected never fails");
                }
            });
        }
    });
    let got = server.wait_for_messages(2 * N, TIMEOUT * 3);
    assert_eq!(got.len(), 2 * N);
    ws.close().expect("close");
}

#[test]
fn huge_send_timeout_does_not_panic() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    let sender = ws.clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sender.send_timeout("x", Duration::MAX)
        }));
        let _ = tx.send(r.map_err(|_| "panicked"));
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(Ok(Ok(()))) => {}
        other => panic!("send_timeout(\"x\", Duration::MAX): {other:?}"),
    }
    assert_eq!(server.wait_for_texts(1, TIMEOUT), ["x"]);
    ws.close().expect("close");
}

#[test]
fn send_waiting_for_room_fails_when_the_connection_goes_away() {
    // Under the default policy a program never hangs on a server that stays down: a send that
    // started waiting because the socket pushed back gives up with SendQueueFull once the
    // connection is gone (and stays gone), instead of waiting for a server that never returns.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepted2 = Arc::clone(&accepted);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    // The first connection completes the handshake and never reads (the socket fills up);
    // later ones are closed at once (the server is down).
    let server = RawServer::start(move |tcp| {
        if accepted2.fetch_add(1, Ordering::SeqCst) == 0 {
            let Ok(_ws) = tungstenite::accept(tcp) else {
                return;
            };
            let _ = stop_rx.recv_timeout(TIMEOUT * 3);
        } else {
            let _ = tcp.shutdown(std::net::Shutdown::Both);
        }
    });
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .send_queue(SendQueueConfig::new(1))
        .close_timeout(Duration::from_millis(200))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(20))
                .cap(Duration::from_millis(100))
                .jitter(false),
        )
        .connect()
        .expect("connect");
    let events = ws.events();
    let (result_tx, result_rx) = crossbeam_channel::unbounded();
    let sender = ws.clone();
    let thread = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        loop {
            let r = sender.send_binary(chunk.clone());
            if r.is_err() {
                let _ = result_tx.send(r);
                return;
            }
        }
    });
    // Wait until the sender is stuck on a full queue while connected.
    assert!(
        wait_until(TIMEOUT, || ws.stats().send_queued == 1
            && ws.stats().bytes_sent > 1 << 20),
        "{:?}",
        ws.stats()
    );
    assert!(result_rx.try_recv().is_err());
    // The server goes away and stays away.
    drop(stop_tx);
    events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    let outcome = result_rx.recv_timeout(Duration::from_secs(5));
    // Unblock the sender whatever happened, then judge.
    ws.close().expect("close");
    thread.join().expect("sender thread");
    match outcome {
        Ok(Err(Error::SendQueueFull { capacity: 1 })) => {}
        other => panic!(
            "a send waiting while the server stays down should fail with SendQueueFull, got \
             {other:?}"
        ),
    }
}
