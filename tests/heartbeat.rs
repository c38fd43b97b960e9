//! Checks heartbeats: ping frames produce `Ping`/`Pong` events and latency in `stats()` and
//! `latency()`; application-level pings (`{"op":"ping"}` answered by `{"op":"pong"}`) measure
//! latency without delivering the pongs to `recv`; a server that never answers makes the
//! client reconnect; heartbeats off send nothing.

mod common;

use std::time::Duration;

use common::*;
use jetsocket::{
    BackoffConfig, Error, Event, HeartbeatConfig, Message, State, SyncWebSocket, Timeout,
};
use tungstenite::Message as WsMsg;

const PING: &str = r#"{"op":"ping"}"#;
const PONG: &str = r#"{"op":"pong"}"#;

fn app_heartbeat(interval: Duration, timeout: Duration) -> HeartbeatConfig {
    HeartbeatConfig::new(interval, timeout)
        .application(Message::text(PING), |m: &Message| m.as_text() == Some(PONG))
}

/// A server that answers `{"op":"ping"}` with `{"op":"pong"}` and echoes everything else.
fn app_ping_server() -> WsServer {
    WsServer::start(|mut conn| {
        while let Some(msg) = conn.read() {
            let reply = match &msg {
                WsMsg::Text(t) if t.as_str() == PING => WsMsg::text(PONG),
                WsMsg::Text(_) | WsMsg::Binary(_) => msg,
                _ => continue,
            };
            if !conn.send(reply) {
                break;
            }
        }
    })
}

#[test]
fn ping_frames_measure_latency() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(50),
            Duration::from_secs(5),
        ))
        .build()
        .expect("build");
    assert_eq!(ws.latency(), None);
    let events = ws.events();
    ws.connect().expect("connect");
    let mut pongs = 0;
    let seen = events_until(&events, |e| {
        if matches!(e, Event::Pong { .. }) {
            pongs += 1;
        }
        pongs == 3
    });
    let pings = seen.iter().filter(|e| matches!(e, Event::Ping)).count();
    assert!(pings >= 3, "every pong answers a ping: {seen:?}");
    for e in &seen {
        if let Event::Pong { latency } = e {
            assert!(*latency < TIMEOUT, "{latency:?}");
        }
    }
    assert!(server.wait_for_pings(3, TIMEOUT));
    let latency = ws.latency().expect("latency after pongs");
    let stats = ws.stats();
    assert_eq!(stats.latency, Some(latency));
    assert!(stats.average_latency.is_some());
    // Pongs are not messages.
    assert!(matches!(ws.try_recv(), Ok(None)));
    assert_eq!(stats.messages_received, 0);
    ws.close().expect("close");
}

#[test]
fn application_heartbeat_consumes_pongs_and_measures_latency() {
    let server = app_ping_server();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(app_heartbeat(
            Duration::from_millis(50),
            Duration::from_secs(5),
        ))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    let mut pongs = 0;
    events_until(&events, |e| {
        if matches!(e, Event::Pong { .. }) {
            pongs += 1;
        }
        pongs == 3
    });
    assert!(ws.latency().is_some());
    assert!(ws.stats().average_latency.is_some());
    // Our own messages still come back; the pongs never reach recv.
    for i in 0..3 {
        ws.send_text(format!("data {i}")).expect("send");
    }
    for i in 0..3 {
        let got = ws.recv_timeout(TIMEOUT).expect("echo");
        assert_eq!(got.as_text(), Some(format!("data {i}").as_str()));
    }
    // More pongs after the data: still none reaches recv.
    let mut more = 0;
    events_until(&events, |e| {
        if matches!(e, Event::Pong { .. }) {
            more += 1;
        }
        more == 2
    });
    while let Some(m) = ws.try_recv().expect("try_recv") {
        assert_ne!(m.as_text(), Some(PONG), "an application pong reached recv");
    }
    // The server saw application pings, not ping frames.
    let pings = server.texts().iter().filter(|t| t.as_str() == PING).count();
    assert!(pings >= 5, "{pings}");
    assert_eq!(
        server.pings(),
        0,
        "no ping frames with an application heartbeat"
    );
    ws.close().expect("close");
}

/// Waits for the next `Reconnected` event, asserting that the connection before it was
/// dropped for a heartbeat timeout; returns the events up to it.
fn reconnected_after_heartbeat_timeout(events: &crossbeam_channel::Receiver<Event>) -> Vec<Event> {
    let seen = events_until(events, |e| matches!(e, Event::Reconnected { .. }));
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Disconnected {
                error: Some(Error::Timeout(Timeout::Heartbeat)),
                ..
            }
        )),
        "{seen:?}"
    );
    seen
}

#[test]
fn unanswered_application_ping_reconnects() {
    // A recording server answers ping frames (automatically) but never the application ping.
    let server = WsServer::recording();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(app_heartbeat(
            Duration::from_millis(100),
            Duration::from_millis(200),
        ))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(5))
                .jitter(false),
        )
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    let seen = reconnected_after_heartbeat_timeout(&events);
    assert!(!seen.iter().any(|e| matches!(e, Event::Pong { .. })));
    assert!(server.wait_for_handshakes(2, TIMEOUT));
    assert!(server.texts().iter().any(|t| t.as_str() == PING));
    ws.close().expect("close");
}

#[test]
fn unanswered_ping_frames_reconnect() {
    // The server completes the handshake, then never reads: no pong ever comes back.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let server = RawServer::start(move |tcp| {
        let Ok(_ws) = tungstenite::accept(tcp) else {
            return;
        };
        let _ = stop_rx.recv_timeout(TIMEOUT * 3);
    });
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(100),
            Duration::from_millis(200),
        ))
        // The server never answers our close frame either.
        .close_timeout(Duration::from_millis(300))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(5))
                .jitter(false),
        )
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    reconnected_after_heartbeat_timeout(&events);
    assert!(server.wait_for_connections(2, TIMEOUT));
    ws.close().expect("close");
    drop(stop_tx);
}

#[test]
fn heartbeat_keeps_a_busy_connection_alive() {
    // Pings interleave with a steady stream of data in both directions without false alarms.
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(HeartbeatConfig::new(
            Duration::from_millis(20),
            Duration::from_secs(5),
        ))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    let mut pongs = 0;
    let mut sent = 0;
    while pongs < 10 {
        assert_echo(&ws, &format!("d{sent}"));
        sent += 1;
        while let Ok(e) = events.try_recv() {
            match e {
                Event::Pong { .. } => pongs += 1,
                Event::Disconnected { .. } => panic!("false heartbeat alarm: {e:?}"),
                _ => {}
            }
        }
        if sent % 100 == 0 {
            // Nothing to wait on but the next pong: block for it.
            events_until(&events, |e| matches!(e, Event::Pong { .. }));
            pongs += 1;
        }
    }
    assert_eq!(ws.state(), State::Connected);
    assert_eq!(ws.stats().reconnects, 0);
    ws.close().expect("close");
}

#[test]
fn heartbeat_off_sends_no_pings() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let events = ws.events();
    // Negative check: give a (wrongly) running heartbeat time to fire.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.pings(), 0);
    assert!(events.try_iter().all(|e| !matches!(e, Event::Ping)));
    assert_eq!(ws.latency(), None);
    ws.close().expect("close");
}
