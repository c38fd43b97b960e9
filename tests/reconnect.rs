//! Checks reconnection through a fault-injecting proxy: a drop mid-stream reconnects with the
//! documented events; 100 drop/reconnect cycles leak nothing; sends made while the server is
//! down are delivered in order after the `on_open` hook's; a black-holed peer is detected by
//! the heartbeat; fatal close codes and a 401 on reconnect end in `Failed` without another
//! attempt; `max_attempts` ends in `RetriesExhausted`; reconnection off ends in a terminal
//! state; the header provider runs before every attempt; `close()` and `connect()` cut a
//! backoff short; and the maximum connection age reopens the connection keeping queued sends.
//!
//! Every test takes `LOCK` first (and so drops it last): the leak test counts process-wide
//! threads and fds. Test names start with `rc_` so harness threads can be told apart.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::http::{drain, read_http_head};
use common::*;
use crossbeam_channel::Receiver;
use jetsocket::{
    BackoffConfig, CloseCode, Error, Event, EventKind, HeartbeatConfig, Message, State,
    SyncWebSocket, Timeout,
};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle connected to `url` with `backoff` (heartbeat off), and its events.
fn connect_with_backoff(url: &str, backoff: BackoffConfig) -> (SyncWebSocket, Receiver<Event>) {
    let ws = SyncWebSocket::builder(url)
        .heartbeat(None)
        .backoff(backoff)
        .connect()
        .expect("connect");
    let events = ws.events();
    (ws, events)
}

fn is_reconnected(e: &Event) -> bool {
    matches!(e, Event::Reconnected { .. })
}

fn is_closed(e: &Event) -> bool {
    matches!(e, Event::Closed { .. })
}

/// Threads that are neither the main thread nor a harness thread.
fn counted_threads() -> Vec<String> {
    thread_names()
        .into_iter()
        .filter(|n| !n.starts_with("rc_") && !n.starts_with("reconnect"))
        .collect()
}

#[test]
fn rc_drop_mid_stream_reconnects_with_documented_events() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    let first = events_until(&events, |e| matches!(e, Event::Connected { .. }));
    let kinds: Vec<String> = first.iter().map(|e| format!("{e:?}")).collect();
    assert!(
        matches!(
            first.as_slice(),
            [
                Event::StateChanged {
                    from: State::Idle,
                    to: State::Connecting
                },
                Event::Connecting { attempt: 1 },
                Event::StateChanged {
                    from: State::Connecting,
                    to: State::Connected
                },
                Event::Connected { subprotocol: None },
            ]
        ),
        "first connect: {kinds:?}"
    );
    assert_echo(&ws, "before");

    proxy.reset_all();
    let seen: Vec<Event> = events_until(&events, is_reconnected)
        .into_iter()
        .filter(|e| !matches!(e, Event::Message(_)))
        .collect();
    let shown: Vec<String> = seen.iter().map(|e| format!("{e:?}")).collect();
    assert!(
        matches!(
            seen.as_slice(),
            [
                Event::StateChanged {
                    from: State::Connected,
                    to: State::Disconnected
                },
                Event::Disconnected {
                    close: None,
                    error: Some(_)
                },
                Event::StateChanged {
                    from: State::Disconnected,
                    to: State::Reconnecting
                },
                Event::Reconnecting { attempt: 1, .. },
                Event::StateChanged {
                    from: State::Reconnecting,
                    to: State::BackingOff
                },
                Event::StateChanged {
                    from: State::BackingOff,
                    to: State::Connecting
                },
                Event::Connecting { attempt: 1 },
                Event::StateChanged {
                    from: State::Connecting,
                    to: State::Connected
                },
                Event::Connected { .. },
                Event::Reconnected { attempts: 1, .. },
            ]
        ),
        "reconnect events out of the documented order: {shown:#?}"
    );
    match &seen[3] {
        Event::Reconnecting { delay, .. } => assert_eq!(*delay, Duration::from_millis(5)),
        _ => unreachable!(),
    }
    assert_eq!(ws.state(), State::Connected);
    assert_echo(&ws, "after");
    let stats = ws.stats();
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.connect_attempts, 2);
    assert_eq!(server.handshakes(), 2);
    ws.close().expect("close");
}

#[test]
fn rc_server_close_with_a_normal_code_reconnects() {
    let _g = serial();
    let server = WsServer::echo();
    let (ws, events) = connect_with_backoff(&server.url(), fast_backoff());
    for (code, n) in [(1000u16, 2usize), (1001, 3), (1012, 4), (4000, 5)] {
        assert_eq!(server.close_all(code, "restart"), 1);
        let seen = events_until(&events, is_reconnected);
        let disconnected = seen
            .iter()
            .find_map(|e| match e {
                Event::Disconnected { close, error } => Some((close.clone(), error.clone())),
                _ => None,
            })
            .expect("Disconnected event");
        assert_eq!(
            disconnected.0.map(|f| f.code.as_u16()),
            Some(code),
            "{seen:?}"
        );
        assert!(
            disconnected.1.is_none(),
            "a clean close is not an error: {seen:?}"
        );
        assert!(server.wait_for_handshakes(n, TIMEOUT));
        assert_echo(&ws, &format!("after {code}"));
    }
    ws.close().expect("close");
}

#[test]
fn rc_hundred_drop_reconnect_cycles_leak_nothing() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(HeartbeatConfig::new(
            Duration::from_secs(30),
            Duration::from_secs(10),
        ))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(1))
                .cap(Duration::from_millis(2))
                .jitter(false),
        )
        .connect()
        .expect("connect");
    let events = ws.events();
    assert_echo(&ws, "warm-up");
    let threads = counted_threads();
    let fds = open_fds();
    for i in 0..100 {
        proxy.reset_all();
        events_until(&events, is_reconnected);
        if i % 10 == 0 {
            assert_echo(&ws, &format!("cycle {i}"));
        }
    }
    assert_eq!(ws.state(), State::Connected);
    assert_echo(&ws, "done");
    assert_eq!(ws.stats().reconnects, 100);
    assert!(proxy.wait_for_live(1, TIMEOUT));
    assert!(server.wait_for_live(1, TIMEOUT));
    assert_no_thread_or_fd_leak(counted_threads, &threads, fds);
    ws.close().expect("close");
}

#[test]
fn rc_sends_while_down_arrive_in_order_after_the_on_open_messages() {
    let _g = serial();
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let opens = Arc::new(AtomicUsize::new(0));
    let opens2 = Arc::clone(&opens);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .on_open(move |conn| {
            let n = opens2.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(conn.is_reconnect(), n > 1);
            conn.send_text(format!("auth {n}"))?;
            conn.send_text(format!("subscribe {n}"))
        })
        .connect()
        .expect("connect");
    let events = ws.events();
    assert_eq!(server.wait_for_messages(2, TIMEOUT).len(), 2);

    proxy.set_refuse(true);
    proxy.reset_all();
    events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    for i in 0..100 {
        ws.send_text(format!("m{i}")).expect("queued while away");
    }
    // At least one attempt hit the refusing proxy: the messages really waited.
    assert!(wait_until(TIMEOUT, || proxy.refused() >= 1));
    assert!(ws.stats().send_queued > 0 || ws.state() != State::Connected);
    proxy.set_refuse(false);
    events_until(&events, is_reconnected);

    let texts = server.wait_for_texts(104, TIMEOUT);
    let mut expected = vec![
        "auth 1".to_owned(),
        "subscribe 1".to_owned(),
        "auth 2".to_owned(),
        "subscribe 2".to_owned(),
    ];
    expected.extend((0..100).map(|i| format!("m{i}")));
    assert_eq!(texts, expected);
    ws.close().expect("close");
}

#[test]
fn rc_black_holed_peer_is_detected_by_the_heartbeat() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let interval = Duration::from_millis(200);
    let timeout = Duration::from_millis(200);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(HeartbeatConfig::new(interval, timeout))
        .connect_timeout(Duration::from_secs(1))
        .backoff(fast_backoff())
        .connect()
        .expect("connect");
    let events = ws.events();
    // Pongs arrive while the path is clear.
    events_until(&events, |e| matches!(e, Event::Pong { .. }));

    proxy.set_black_hole(true);
    let started = Instant::now();
    let seen = events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    let detected = started.elapsed();
    match seen.last() {
        Some(Event::Disconnected {
            error: Some(Error::Timeout(Timeout::Heartbeat)),
            ..
        }) => {}
        other => panic!("expected a heartbeat timeout, got {other:?}"),
    }
    // Generous: interval + timeout plus a wide margin for a loaded machine.
    assert!(
        detected < interval + timeout + Duration::from_secs(5),
        "detection took {detected:?}"
    );
    proxy.set_black_hole(false);
    events_until(&events, is_reconnected);
    assert_echo(&ws, "alive again");
    ws.close().expect("close");
}

#[test]
fn rc_fatal_close_codes_fail_without_another_attempt() {
    let _g = serial();
    for code in [1008u16, 4401, 4403] {
        let server = WsServer::echo();
        let (ws, events) = connect_with_backoff(&server.url(), fast_backoff());
        assert_eq!(server.close_all(code, "go away"), 1);
        let seen = wait_closed(&events);
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
            "{code}: retried: {seen:?}"
        );
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Error(e) if e.is_fatal())),
            "{code}: no fatal Error event: {seen:?}"
        );
        assert_eq!(ws.state(), State::Failed, "{code}");
        match ws.recv_timeout(TIMEOUT) {
            Err(e @ Error::ConnectionClosed(Some(_))) => {
                assert!(e.is_fatal());
                assert!(
                    matches!(&e, Error::ConnectionClosed(Some(f)) if f.code == CloseCode::from(code))
                );
            }
            other => panic!("{code}: expected ConnectionClosed({code}), got {other:?}"),
        }
        // Negative check: let a would-be retry (1 ms backoff) happen before counting.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            server.connections(),
            1,
            "{code}: no further connection attempt"
        );
    }
}

#[test]
fn rc_http_401_on_reconnect_fails_without_another_attempt() {
    let _g = serial();
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepted2 = Arc::clone(&accepted);
    // The first connection is a WebSocket; later ones are refused with 401.
    let server = RawServer::start(move |mut tcp| {
        if accepted2.fetch_add(1, Ordering::SeqCst) == 0 {
            let Ok(mut ws) = tungstenite::accept(tcp) else {
                return;
            };
            while ws.read().is_ok() {}
        } else {
            read_http_head(&mut tcp);
            let _ = tcp.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
            let _ = tcp.shutdown(Shutdown::Write);
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            drain(&mut tcp);
        }
    });
    let (ws, events) = connect_with_backoff(&server.url(), fast_backoff());
    server.drop_all();
    let seen = wait_closed(&events);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Error(Error::Http { status: 401, .. }))),
        "{seen:?}"
    );
    assert_eq!(ws.state(), State::Failed);
    assert!(matches!(
        ws.recv_timeout(TIMEOUT),
        Err(Error::Http { status: 401, .. })
    ));
    // Negative check: give a would-be retry (5 ms backoff) time to happen.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.connections(), 2, "no attempt after the 401");
}

#[test]
fn rc_max_attempts_ends_in_retries_exhausted() {
    let _g = serial();
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let ws = SyncWebSocket::builder(format!("ws://127.0.0.1:{port}/"))
        .backoff(fast_backoff().max_attempts(3))
        .build()
        .expect("build");
    let events = ws.events();
    let err = ws.connect().expect_err("refused");
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    let seen = wait_closed(&events);
    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3], "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Error(Error::RetriesExhausted { attempts: 3, .. }))),
        "{seen:?}"
    );
    assert_eq!(ws.state(), State::Failed);
    assert_eq!(
        ws.stats().connect_attempts,
        4,
        "the first attempt plus 3 retries"
    );
    match ws.recv_timeout(TIMEOUT) {
        Err(e @ Error::RetriesExhausted { .. }) => {
            assert!(e.is_fatal());
            match e {
                Error::RetriesExhausted { attempts, last } => {
                    assert_eq!(attempts, 3);
                    assert!(matches!(*last, Error::Io(_)), "{last:?}");
                }
                _ => unreachable!(),
            }
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[test]
fn rc_reconnect_off_makes_a_drop_terminal() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .reconnect(false)
        .connect()
        .expect("connect");
    let events = ws.events();
    proxy.reset_all();
    let seen = wait_closed(&events);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{seen:?}"
    );
    assert_eq!(ws.state(), State::Failed, "a drop is an error: Failed");
    assert!(ws.is_closed());
    let err = ws.recv_timeout(TIMEOUT).expect_err("ended");
    assert!(!matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(matches!(ws.send_text("x"), Err(Error::AlreadyClosed)));
    // Negative check: nothing dials again.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proxy.connections(), 1);
}

#[test]
fn rc_header_provider_runs_before_every_attempt() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = Arc::clone(&calls);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .header("X-Token", "static")
        .header("X-Static", "kept")
        .header_provider(move || {
            let n = calls2.fetch_add(1, Ordering::SeqCst) + 1;
            vec![("X-Token".to_owned(), format!("token-{n}"))]
        })
        .connect()
        .expect("connect");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let events = ws.events();
    proxy.reset_all();
    events_until(&events, is_reconnected);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        calls.load(Ordering::SeqCst) as u64,
        ws.stats().connect_attempts
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for (i, req) in requests.iter().enumerate() {
        assert_eq!(
            req.header_all("x-token"),
            [format!("token-{}", i + 1)],
            "the fresh value replaces the static one"
        );
        assert_eq!(req.header("x-static"), Some("kept"));
    }
    ws.close().expect("close");
}

#[test]
fn rc_close_during_backing_off_returns_promptly() {
    let _g = serial();
    let server = WsServer::echo();
    let (proxy, ws, events) = backing_off_handle(server.addr());
    assert_eq!(ws.state(), State::BackingOff);
    let started = Instant::now();
    close_within(&ws, Duration::from_secs(5), "close() while backing off").expect("close");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(ws.state(), State::Closed);
    wait_closed(&events);
    assert_eq!(proxy.connections(), 1, "no attempt was made");
}

#[test]
fn rc_connect_during_backing_off_skips_the_delay() {
    let _g = serial();
    let server = WsServer::echo();
    let (_proxy, ws, _events) = backing_off_handle(server.addr());
    let ws2 = ws.clone();
    within(
        Duration::from_secs(5),
        "connect() while backing off",
        move || ws2.connect(),
    )
    .expect("connect now");
    assert_eq!(ws.state(), State::Connected);
    assert_echo(&ws, "back");
    ws.close().expect("close");
}

#[test]
fn rc_max_connection_age_reopens_and_keeps_queued_sends() {
    let _g = serial();
    let server = WsServer::recording();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .max_connection_age(Duration::from_secs(1))
        .build()
        .expect("build");
    // Sends made from the moment the old connection starts closing are queued while the
    // engine reconnects: none may be lost.
    let weak = ws.downgrade();
    ws.on(EventKind::StateChanged, move |e| {
        if let Event::StateChanged {
            to: State::Disconnecting,
            ..
        } = e
        {
            if let Some(ws) = weak.upgrade() {
                for i in 0..50 {
                    ws.send_text(format!("during {i}")).expect("queued send");
                }
            }
        }
    });
    let events = ws.events();
    ws.connect().expect("connect");
    ws.send_text("first").expect("send");
    let seen = events_until(&events, is_reconnected);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::StateChanged {
                from: State::Connected,
                to: State::Disconnecting
            }
        )),
        "{seen:?}"
    );
    match seen
        .iter()
        .find(|e| matches!(e, Event::Reconnecting { .. }))
    {
        Some(Event::Reconnecting { delay, .. }) => {
            assert_eq!(*delay, Duration::ZERO, "an age reconnect skips the backoff")
        }
        _ => panic!("no Reconnecting event: {seen:?}"),
    }
    let (code, _reason) = server.wait_for_close(TIMEOUT).expect("close frame");
    assert_eq!(code, 1000);
    assert!(server.wait_for_handshakes(2, TIMEOUT));
    ws.send_text("last").expect("send");
    let texts = server.wait_for_texts(52, TIMEOUT);
    let mut expected = vec!["first".to_owned()];
    expected.extend((0..50).map(|i| format!("during {i}")));
    expected.push("last".to_owned());
    assert_eq!(texts, expected);
    assert_eq!(ws.stats().reconnects, 1);
    ws.close().expect("close");
}

#[test]
fn rc_failed_age_reconnect_falls_back_to_backoff() {
    let _g = serial();
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let base = Duration::from_millis(300);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .max_connection_age(Duration::from_secs(1))
        .backoff(
            BackoffConfig::default()
                .base(base)
                .cap(Duration::from_secs(5))
                .jitter(false),
        )
        .connect()
        .expect("connect");
    let events = ws.events();
    // The age reconnect will be refused: the retries after it must back off.
    proxy.set_refuse(true);
    let mut delays = Vec::new();
    let seen = events_until(&events, |e| {
        if let Event::Reconnecting { delay, .. } = e {
            delays.push(*delay);
        }
        delays.len() == 3
    });
    assert_eq!(
        delays[0],
        Duration::ZERO,
        "the age reconnect itself is immediate"
    );
    assert!(
        delays[1] > Duration::ZERO && delays[2] > Duration::ZERO,
        "retries after a failed age reconnect do not back off: {delays:?}; {} refused so \
         far; events {seen:?}",
        proxy.refused()
    );
    ws.close().expect("close");
}

#[test]
fn rc_reconnected_reports_the_attempts_it_took() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) = connect_with_backoff(&proxy.url(), fast_backoff());
    proxy.set_refuse(true);
    proxy.reset_all();
    assert!(wait_until(TIMEOUT, || proxy.refused() >= 2));
    proxy.set_refuse(false);
    let seen = events_until(&events, is_reconnected);
    let last_attempt = seen
        .iter()
        .filter_map(|e| match e {
            Event::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .last()
        .expect("Connecting events");
    match seen.last() {
        Some(Event::Reconnected { attempts, downtime }) => {
            assert!(*attempts >= 3, "{seen:?}");
            assert_eq!(*attempts, last_attempt, "{seen:?}");
            assert!(*downtime > Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
    assert_echo(&ws, "back");
    ws.close().expect("close");
}

#[test]
fn rc_messages_received_before_a_drop_stay_readable() {
    let _g = serial();
    let server = WsServer::recording();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) = connect_with_backoff(&proxy.url(), fast_backoff());
    for i in 0..10 {
        server.send_all(tungstenite::Message::text(format!("s{i}")));
    }
    assert!(wait_until(TIMEOUT, || ws.stats().messages_received == 10));
    proxy.reset_all();
    events_until(&events, is_reconnected);
    for i in 0..10 {
        assert_eq!(
            ws.recv_timeout(TIMEOUT).expect("kept across the reconnect"),
            Message::text(format!("s{i}"))
        );
    }
    ws.close().expect("close");
}

#[test]
fn rc_failing_on_open_hook_is_retried() {
    let _g = serial();
    let server = WsServer::recording();
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = Arc::clone(&calls);
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .on_open(move |conn| match calls2.fetch_add(1, Ordering::SeqCst) {
            0 => Err(Error::Hook("not yet".into())),
            1 => panic!("hook panics on the second attempt"),
            _ => conn.send_text("subscribed"),
        })
        .build()
        .expect("build");
    let events = ws.events();
    match ws.connect() {
        Err(e @ Error::Hook(_)) => assert!(!e.is_fatal()),
        other => panic!("expected the hook's error, got {other:?}"),
    }
    let seen = events_until(&events, |e| matches!(e, Event::Connected { .. }));
    let hook_errors = seen
        .iter()
        .filter(|e| matches!(e, Event::Error(Error::Hook(_))))
        .count();
    assert_eq!(hook_errors, 2, "{seen:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(ws.state(), State::Connected);
    assert_eq!(server.wait_for_messages(1, TIMEOUT).len(), 1);
    assert_eq!(server.texts(), ["subscribed"]);
    ws.close().expect("close");
}

#[test]
fn rc_first_connect_failure_keeps_trying_in_the_background() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    proxy.set_refuse(true);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .build()
        .expect("build");
    let events = ws.events();
    let err = ws.connect().expect_err("refused");
    assert!(!err.is_fatal(), "{err:?}");
    ws.send_text("queued before the first connection")
        .expect("queued while connecting");
    proxy.set_refuse(false);
    let seen = events_until(&events, |e| matches!(e, Event::Connected { .. }));
    assert!(
        seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{seen:?}"
    );
    assert_eq!(ws.state(), State::Connected);
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("echo").as_text(),
        Some("queued before the first connection")
    );
    assert_eq!(
        ws.stats().reconnects,
        0,
        "the first connection is not a reconnect"
    );
    ws.close().expect("close");
}

#[test]
fn rc_reset_after_zero_restarts_attempt_numbering() {
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) =
        connect_with_backoff(&proxy.url(), fast_backoff().reset_after(Duration::ZERO));
    for _ in 0..3 {
        proxy.reset_all();
        let seen = events_until(&events, is_reconnected);
        assert!(
            seen.iter()
                .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. })),
            "{seen:?}"
        );
        assert!(
            matches!(seen.last(), Some(Event::Reconnected { attempts: 1, .. })),
            "{seen:?}"
        );
    }
    ws.close().expect("close");
}

#[test]
fn rc_max_attempts_counts_failed_attempts_only() {
    // `max_attempts` is "failed reconnect attempts in a row": a connection that keeps being
    // dropped but reconnects at the first try every time never exhausts it.
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let (ws, events) = connect_with_backoff(&proxy.url(), fast_backoff().max_attempts(3));
    for cycle in 1..=5 {
        proxy.reset_all();
        let seen = events_until(&events, |e| is_reconnected(e) || is_closed(e));
        assert!(
            is_reconnected(seen.last().expect("events")),
            "drop {cycle}: gave up although every reconnect succeeded at once: {seen:?}"
        );
    }
    assert_eq!(ws.state(), State::Connected);
    ws.close().expect("close");
}

#[test]
fn rc_close_at_every_step_of_a_reconnect() {
    // Closing at any point of the reconnect sequence ends in Closed, promptly, without the
    // engine failing (an undocumented state transition panics the I/O thread in debug builds).
    let _g = serial();
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    for step in 0..10 {
        let (ws, events) = connect_with_backoff(&proxy.url(), fast_backoff());
        proxy.reset_all();
        let mut n = 0;
        events_until(&events, |e| {
            n += 1;
            n > step || is_reconnected(e)
        });
        close_within(&ws, Duration::from_secs(6), "close() during a reconnect").expect("close");
        let rest = wait_closed(&events);
        assert!(
            !rest
                .iter()
                .any(|e| matches!(e, Event::Error(Error::WorkerPanicked(_)))),
            "step {step}: {rest:?}"
        );
        assert_eq!(ws.state(), State::Closed, "step {step}: {rest:?}");
    }
}

#[test]
fn rc_server_and_client_close_at_the_same_time() {
    let _g = serial();
    let server = WsServer::echo();
    for i in 0..20 {
        let ws = SyncWebSocket::builder(server.url())
            .heartbeat(None)
            .backoff(fast_backoff())
            .reconnect(i % 2 == 0)
            .connect()
            .expect("connect");
        let events = ws.events();
        server.close_all(1001, "bye");
        close_within(&ws, Duration::from_secs(6), "close() racing the server's").expect("close");
        let rest = wait_closed(&events);
        assert!(
            !rest
                .iter()
                .any(|e| matches!(e, Event::Error(Error::WorkerPanicked(_)))),
            "{rest:?}"
        );
        assert!(ws.state().is_terminal());
        assert_ne!(ws.state(), State::Failed, "{rest:?}");
    }
}
