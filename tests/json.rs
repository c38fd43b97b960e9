#![cfg(feature = "json")]
//! Checks typed JSON messages: `send_json`/`recv_json` round trips, strict `typed()` (bad input
//! is an error carrying the raw payload, then delivery goes on) and lenient `typed_lenient()`
//! (skipped and counted), dedup by a JSON field across a reconnect, and a JSON heartbeat whose
//! pongs are consumed and measured.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use jetsocket::{
    BackoffConfig, BufferConfig, Error, Event, HeartbeatConfig, Message, SyncWebSocket,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    side: String,
    price: f64,
}

fn order(id: u64) -> Order {
    Order {
        id,
        side: if id % 2 == 0 { "buy" } else { "sell" }.to_owned(),
        price: 100.25 + id as f64,
    }
}

/// Waits until `n` messages sit in the buffer, so the blocking calls that follow cannot hang.
fn wait_queued(ws: &SyncWebSocket, n: usize) {
    assert!(
        wait_until(TIMEOUT, || ws.stats().queued >= n),
        "fewer than {n} messages arrived: {:?}",
        ws.stats()
    );
}

#[test]
fn send_json_and_recv_json_round_trip() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .on_open(|conn| conn.send_json(&json!({"op": "subscribe", "args": ["orders"]})))
        .connect()
        .expect("connect");

    // The hook's JSON comes back first.
    let sub: serde_json::Value = ws.recv_json_timeout(TIMEOUT).expect("subscription");
    assert_eq!(sub, json!({"op": "subscribe", "args": ["orders"]}));

    ws.send_json(&order(1)).expect("send_json");
    let back: Order = ws.recv_json_timeout(TIMEOUT).expect("recv_json_timeout");
    assert_eq!(back, order(1));

    ws.send_json(&order(2)).expect("send_json");
    wait_queued(&ws, 1);
    let back: Order = ws.recv_json().expect("recv_json");
    assert_eq!(back, order(2));

    // A message that does not parse is an error carrying it.
    ws.send_text("not json").expect("send");
    match ws.recv_json_timeout::<Order>(TIMEOUT) {
        Err(Error::Json { raw, .. }) => assert_eq!(raw, Message::text("not json")),
        other => panic!("expected Error::Json, got {other:?}"),
    }
    // Valid JSON of the wrong shape too.
    ws.send_json(&json!({"id": "seven"})).expect("send_json");
    match ws.recv_json_timeout::<Order>(TIMEOUT) {
        Err(Error::Json { raw, .. }) => assert_eq!(raw.as_text(), Some(r#"{"id":"seven"}"#)),
        other => panic!("expected Error::Json, got {other:?}"),
    }
    // Binary messages holding JSON parse as well.
    ws.send_binary(serde_json::to_vec(&order(3)).expect("to_vec"))
        .expect("send");
    let back: Order = ws.recv_json_timeout(TIMEOUT).expect("binary JSON");
    assert_eq!(back, order(3));

    // Nothing arrives: the timeout says so.
    match ws.recv_json_timeout::<Order>(Duration::from_millis(50)) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }

    // A value that cannot be serialized is an error, and nothing is sent.
    let sent = ws.stats().messages_sent;
    let bad: BTreeMap<Vec<u8>, u8> = BTreeMap::from([(vec![1, 2], 3)]);
    assert!(matches!(ws.send_json(&bad), Err(Error::Json { .. })));
    assert_echo(&ws, "still fine");
    assert_eq!(ws.stats().messages_sent, sent + 1);
    ws.close().expect("close");
}

#[test]
fn strict_typed_yields_the_raw_payload_then_continues() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    ws.send_json(&order(1)).expect("send");
    ws.send_text("{broken").expect("send");
    ws.send_json(&json!({"id": 2})).expect("send");
    ws.send_json(&order(4)).expect("send");
    wait_queued(&ws, 4);

    let got: Vec<Result<Order, Error>> = ws.typed::<Order>().take(4).collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].as_ref().expect("first"), &order(1));
    match &got[1] {
        Err(Error::Json { raw, .. }) => assert_eq!(raw, &Message::text("{broken")),
        other => panic!("expected Error::Json, got {other:?}"),
    }
    match &got[2] {
        Err(Error::Json { raw, .. }) => assert_eq!(raw.as_text(), Some(r#"{"id":2}"#)),
        other => panic!("expected Error::Json, got {other:?}"),
    }
    assert_eq!(got[3].as_ref().expect("after the errors"), &order(4));
    // Strict mode counts nothing as skipped.
    assert_eq!(ws.stats().parse_failures, 0);
    ws.close().expect("close");
}

#[test]
fn lenient_typed_skips_bad_messages_and_counts_them() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    ws.send_json(&order(1)).expect("send");
    ws.send_text("garbage").expect("send");
    ws.send_json(&json!({"id": 1, "side": 5})).expect("send");
    ws.send_binary(vec![0xff, 0x00]).expect("send");
    ws.send_json(&order(2)).expect("send");
    wait_queued(&ws, 5);

    let got: Vec<Order> = ws.typed_lenient::<Order>().take(2).collect();
    assert_eq!(got, [order(1), order(2)]);
    let s = ws.stats();
    assert_eq!(s.parse_failures, 3);
    assert_eq!(s.queued, 0);
    ws.close().expect("close");
}

#[test]
fn sequence_field_dedups_json_messages_across_a_reconnect() {
    // First connection: seq 1..=50. Later ones: 41..=60 again, then echo.
    let connections = AtomicUsize::new(0);
    let server = WsServer::start(move |mut conn| {
        let range = if connections.fetch_add(1, Ordering::SeqCst) == 0 {
            1..=50
        } else {
            41..=60
        };
        for n in range {
            let msg = json!({"seq": n, "data": {"price": n * 10}}).to_string();
            if !conn.send_text(&msg) {
                return;
            }
        }
        conn.serve(true);
    });
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(10))
                .cap(Duration::from_millis(50)),
        )
        .sequence_field("seq")
        .buffer(BufferConfig::default().dedup(true))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");

    assert!(wait_until(TIMEOUT, || ws.stats().messages_received >= 50));
    server.drop_all();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match events.recv_deadline(deadline) {
            Ok(Event::Reconnected { .. }) => break,
            Ok(_) => {}
            Err(e) => panic!("no reconnect: {e}"),
        }
    }

    let seqs: Vec<u64> = (0..60)
        .map(|_| {
            let v: serde_json::Value = ws.recv_json_timeout(TIMEOUT).expect("message");
            v["seq"].as_u64().expect("seq")
        })
        .collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
    assert!(wait_until(TIMEOUT, || ws.stats().messages_received >= 70));
    // Messages without the field pass through; the echo follows anything still in flight.
    ws.send_text("done").expect("send");
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("echo").as_text(),
        Some("done"),
        "a repeat got through"
    );
    assert_eq!(ws.stats().deduplicated, 10);
    ws.close().expect("close");
}

#[test]
fn json_heartbeat_pongs_are_consumed_and_measured() {
    // Answers {"op":"ping"} with {"op":"pong"}; echoes everything else.
    let server = WsServer::start(|mut conn| {
        while let Some(msg) = conn.read() {
            let Ok(text) = msg.to_text() else { continue };
            let is_ping =
                serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v["op"] == "ping");
            let reply = if is_ping {
                json!({"op": "pong", "ret_msg": "pong"}).to_string()
            } else if msg.is_text() {
                text.to_owned()
            } else {
                continue;
            };
            if !conn.send_text(&reply) {
                return;
            }
        }
    });
    let heartbeat = HeartbeatConfig::new(Duration::from_millis(50), TIMEOUT)
        .json(&json!({"op": "ping"}), "op", "pong")
        .expect("heartbeat");
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(heartbeat)
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");

    let deadline = Instant::now() + TIMEOUT * 2;
    let mut pongs = 0;
    while pongs < 3 {
        match events.recv_deadline(deadline) {
            Ok(Event::Pong { .. }) => pongs += 1,
            Ok(Event::Disconnected { error, .. }) => panic!("disconnected: {error:?}"),
            Ok(_) => {}
            Err(e) => panic!("only {pongs} pongs: {e}"),
        }
    }
    assert!(ws.latency().is_some());
    let s = ws.stats();
    assert!(s.latency.is_some() && s.average_latency.is_some());
    assert!(server.texts().iter().filter(|t| t.contains("ping")).count() >= 3);

    // Three pongs came in before this echo; none of them was delivered.
    ws.send_text("marker").expect("send");
    let first = ws.recv_timeout(TIMEOUT).expect("echo");
    assert_eq!(first.as_text(), Some("marker"), "a pong was delivered");
    assert_eq!(ws.stats().reconnects, 0);
    ws.close().expect("close");
}
