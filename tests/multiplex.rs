//! Checks `Multiplex`: Binance-style (`{"stream": ..}`) and Bybit-style (`{"topic": ..}`)
//! routing against a server that honours subscribe and unsubscribe, subscriptions consumed
//! on different threads, resubscription after a forced drop (before queued sends), the
//! unroutable count and catch-all, queue overflow, unsubscribing by dropping the last
//! handle, and subscriptions ending when the connection ends.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jetsocket::{
    BackoffConfig, Error, Event, Message, Multiplex, MultiplexBuilder, Subscription, SyncWebSocket,
};
use serde_json::{json, Value};

/// A tiny exchange: keeps the subscriptions of each connection and publishes only to
/// subscribed channels. Both Binance and Bybit dialects:
///
/// * `{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[..],"id":n}` → `{"result":null,"id":n}`;
///   `{"method":"PUBLISH","stream":s,"data":d}` → `{"stream":s,"data":d}` if subscribed.
/// * `{"op":"subscribe"|"unsubscribe","args":[..]}` → `{"success":true,"op":..}`;
///   `{"op":"publish","topic":t,"data":d}` → `{"topic":t,"type":"snapshot","data":d}` if
///   subscribed.
///
/// A publish to a channel that is not subscribed is answered with `{"skipped":channel}`.
fn exchange() -> WsServer {
    WsServer::start(|mut conn| {
        let mut subs: HashSet<String> = HashSet::new();
        while let Some(msg) = conn.read() {
            let Ok(text) = msg.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let names = |key: &str| -> Vec<String> {
                v[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let reply = match (v["method"].as_str(), v["op"].as_str()) {
                (Some("SUBSCRIBE"), _) => {
                    subs.extend(names("params"));
                    json!({"result": null, "id": v["id"]})
                }
                (Some("UNSUBSCRIBE"), _) => {
                    for n in names("params") {
                        subs.remove(&n);
                    }
                    json!({"result": null, "id": v["id"]})
                }
                (Some("PUBLISH"), _) => {
                    let s = v["stream"].as_str().unwrap_or_default();
                    if subs.contains(s) {
                        json!({"stream": s, "data": v["data"]})
                    } else {
                        json!({ "skipped": s })
                    }
                }
                (_, Some(op @ ("subscribe" | "unsubscribe"))) => {
                    for n in names("args") {
                        if op == "subscribe" {
                            subs.insert(n);
                        } else {
                            subs.remove(&n);
                        }
                    }
                    json!({"success": true, "op": op})
                }
                (_, Some("publish")) => {
                    let t = v["topic"].as_str().unwrap_or_default();
                    if subs.contains(t) {
                        json!({"topic": t, "type": "snapshot", "data": v["data"]})
                    } else {
                        json!({ "skipped": t })
                    }
                }
                _ => continue,
            };
            if !conn.send_text(&reply.to_string()) {
                break;
            }
        }
    })
}

/// Fast reconnects, no heartbeat noise.
fn options(url: &str) -> jetsocket::Builder {
    SyncWebSocket::builder(url).heartbeat(None).backoff(
        BackoffConfig::default()
            .base(Duration::from_millis(20))
            .cap(Duration::from_millis(100)),
    )
}

/// Binance dialect: subscribe/unsubscribe messages with increasing ids.
fn binance(mux: MultiplexBuilder) -> MultiplexBuilder {
    let id = Arc::new(AtomicU64::new(1));
    let id2 = Arc::clone(&id);
    mux.subscribe_message(move |s| {
        let n = id.fetch_add(1, Ordering::Relaxed);
        json!({"method": "SUBSCRIBE", "params": [s], "id": n}).to_string()
    })
    .unsubscribe_message(move |s| {
        let n = id2.fetch_add(1, Ordering::Relaxed);
        json!({"method": "UNSUBSCRIBE", "params": [s], "id": n}).to_string()
    })
}

/// Bybit dialect, with batched resubscription.
fn bybit(mux: MultiplexBuilder) -> MultiplexBuilder {
    mux.subscribe_message(|t| json!({"op": "subscribe", "args": [t]}).to_string())
        .unsubscribe_message(|t| json!({"op": "unsubscribe", "args": [t]}).to_string())
        .subscribe_batch(10, |ts| json!({"op": "subscribe", "args": ts}).to_string())
}

/// Routes by a top-level JSON field, parsed with serde_json (works without the `json`
/// feature).
fn by_field(key: &'static str) -> impl Fn(&Message) -> Option<String> + Send + Sync + 'static {
    move |m| {
        let v: Value = serde_json::from_slice(m.as_bytes()).ok()?;
        v.get(key)?.as_str().map(str::to_owned)
    }
}

/// A Binance-dialect multiplex connected to `server`, routing on the `stream` field.
fn binance_mux(server: &WsServer) -> Multiplex {
    binance(Multiplex::from_builder(options(&server.url())))
        .channel_extractor(by_field("stream"))
        .connect()
        .expect("connect")
}

fn publish_binance(mux: &Multiplex, stream: &str, data: Value) {
    mux.connection()
        .send_text(json!({"method": "PUBLISH", "stream": stream, "data": data}).to_string())
        .expect("publish");
}

fn publish_bybit(mux: &Multiplex, topic: &str, data: Value) {
    mux.connection()
        .send_text(json!({"op": "publish", "topic": topic, "data": data}).to_string())
        .expect("publish");
}

fn recv_json(sub: &Subscription) -> Value {
    let msg = sub
        .recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", sub.channel()));
    serde_json::from_slice(msg.as_bytes()).expect("JSON")
}

#[cfg(feature = "json")]
fn unroutable_json(mux: &Multiplex) -> Value {
    let msg = mux.recv_unroutable_timeout(TIMEOUT).expect("unroutable");
    serde_json::from_slice(msg.as_bytes()).expect("JSON")
}

/// Texts the server received so far that contain `needle`.
fn seen(server: &WsServer, needle: &str) -> usize {
    server.texts().iter().filter(|t| t.contains(needle)).count()
}

fn wait_seen(server: &WsServer, needle: &str, n: usize) {
    assert!(
        wait_until(TIMEOUT, || seen(server, needle) >= n),
        "server saw {needle:?} {} times, wanted {n}: {:?}",
        seen(server, needle),
        server.texts()
    );
}

#[test]
fn multiplex_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<Multiplex>();
    check::<Subscription>();
    check::<MultiplexBuilder>();
    check::<jetsocket::MultiplexStats>();
    check::<jetsocket::SubscriptionStats>();
}

#[cfg(feature = "json")]
#[test]
fn binance_style_routing_with_subscribe_and_unsubscribe() {
    let server = exchange();
    let mux = binance(Multiplex::from_builder(options(&server.url())))
        .channel_key("stream")
        .connect()
        .expect("connect");
    let trades = mux.subscribe("btcusdt@trade").expect("subscribe");
    let depth = mux.subscribe("btcusdt@depth").expect("subscribe");
    assert_eq!(mux.subscriptions(), ["btcusdt@trade", "btcusdt@depth"]);

    publish_binance(&mux, "btcusdt@trade", json!({"p": "1"}));
    publish_binance(&mux, "btcusdt@depth", json!({"b": [1]}));
    publish_binance(&mux, "ethusdt@trade", json!({"p": "2"})); // not subscribed
    publish_binance(&mux, "btcusdt@trade", json!({"p": "3"}));

    assert_eq!(recv_json(&trades)["data"]["p"], "1");
    assert_eq!(recv_json(&trades)["data"]["p"], "3");
    assert_eq!(recv_json(&depth)["data"]["b"][0], 1);
    // Acknowledgements and the server's refusal land in the catch-all.
    assert_eq!(unroutable_json(&mux)["id"], 1);
    assert_eq!(unroutable_json(&mux)["id"], 2);
    assert_eq!(unroutable_json(&mux)["skipped"], "ethusdt@trade");

    // Unsubscribe: the server is told and stops publishing.
    assert!(mux.unsubscribe("btcusdt@depth").expect("unsubscribe"));
    wait_seen(&server, "UNSUBSCRIBE", 1);
    assert!(!depth.is_active());
    assert!(matches!(
        depth.recv_timeout(TIMEOUT),
        Err(Error::AlreadyClosed)
    ));
    publish_binance(&mux, "btcusdt@depth", json!({"b": [2]}));
    assert_eq!(unroutable_json(&mux)["id"], 3);
    assert_eq!(unroutable_json(&mux)["skipped"], "btcusdt@depth");
    assert_eq!(mux.subscriptions(), ["btcusdt@trade"]);

    let stats = mux.stats();
    assert_eq!(stats.subscriptions_total, 2);
    assert_eq!(stats.subscriptions_active, 1);
    assert_eq!(stats.messages_routed, 3);
    assert_eq!(stats.unroutable, 5);
    let t = trades.stats();
    assert_eq!((t.messages_received, t.queued, t.dropped), (2, 0, 0));
    mux.close().expect("close");
    assert!(!trades.is_active());
}

#[cfg(feature = "json")]
#[test]
fn bybit_style_routing_with_subscriptions_made_before_connecting() {
    let server = exchange();
    let mux = bybit(Multiplex::from_builder(options(&server.url())))
        .channel_key("topic")
        .build()
        .expect("build");
    // Subscribed while idle: the first connection sends them, in one batch.
    let book = mux.subscribe("orderbook.1.BTCUSDT").expect("subscribe");
    let trades = mux.subscribe("publicTrade.BTCUSDT").expect("subscribe");
    assert_eq!(mux.state(), jetsocket::State::Idle);
    mux.connect().expect("connect");
    wait_seen(
        &server,
        r#"{"args":["orderbook.1.BTCUSDT","publicTrade.BTCUSDT"],"op":"subscribe"}"#,
        1,
    );
    // A later single subscription uses the single message.
    let tickers = mux.subscribe("tickers.BTCUSDT").expect("subscribe");
    publish_bybit(&mux, "publicTrade.BTCUSDT", json!([{"p": "10"}]));
    publish_bybit(&mux, "tickers.BTCUSDT", json!({"lastPrice": "11"}));
    publish_bybit(&mux, "orderbook.1.BTCUSDT", json!({"b": [["9", "1"]]}));

    let msg = recv_json(&trades);
    assert_eq!(
        (msg["type"].as_str(), msg["data"][0]["p"].as_str()),
        (Some("snapshot"), Some("10"))
    );
    assert_eq!(recv_json(&tickers)["data"]["lastPrice"], "11");
    assert_eq!(recv_json(&book)["data"]["b"][0][0], "9");
    assert_eq!(unroutable_json(&mux)["op"], "subscribe");
    assert_eq!(unroutable_json(&mux)["op"], "subscribe");
    assert_eq!(
        server
            .texts()
            .iter()
            .filter(|t| t.contains(r#""op":"subscribe""#))
            .count(),
        2,
        "each channel subscribed exactly once: {:?}",
        server.texts()
    );

    // Dropping the last handle unsubscribes.
    drop(tickers);
    wait_seen(
        &server,
        r#"{"args":["tickers.BTCUSDT"],"op":"unsubscribe"}"#,
        1,
    );
    assert!(!mux.is_subscribed("tickers.BTCUSDT"));
    mux.close().expect("close");
}

#[test]
fn two_subscriptions_consumed_on_two_threads() {
    const N: usize = 500;
    let server = exchange();
    let mux = binance_mux(&server);
    let a = mux.subscribe("a").expect("subscribe");
    let b = mux.subscribe("b").expect("subscribe");
    let consume = |sub: Subscription| {
        std::thread::spawn(move || {
            (0..N)
                .map(|_| recv_json(&sub)["data"].as_u64().expect("number"))
                .collect::<Vec<u64>>()
        })
    };
    let (ta, tb) = (consume(a), consume(b));
    for i in 0..N as u64 {
        publish_binance(&mux, "a", json!(i));
        publish_binance(&mux, "b", json!(i + 1_000_000));
    }
    let got_a = ta.join().expect("thread a");
    let got_b = tb.join().expect("thread b");
    assert_eq!(got_a, (0..N as u64).collect::<Vec<_>>());
    assert_eq!(
        got_b,
        (0..N as u64).map(|i| i + 1_000_000).collect::<Vec<_>>()
    );
    assert_eq!(mux.stats().messages_routed, 2 * N as u64);
}

#[test]
fn resubscribes_after_a_forced_drop_before_queued_sends() {
    let server = exchange();
    let mux = bybit(Multiplex::from_builder(options(&server.url())))
        .channel_extractor(by_field("topic"))
        .build()
        .expect("build");
    let x = mux.subscribe("x").expect("subscribe");
    mux.connect().expect("connect");
    let y = mux.subscribe("y").expect("subscribe");
    wait_seen(&server, r#"{"args":["x"],"op":"subscribe"}"#, 1);
    wait_seen(&server, r#"{"args":["y"],"op":"subscribe"}"#, 1);
    publish_bybit(&mux, "x", json!(1));
    assert_eq!(recv_json(&x)["data"], 1);

    let events = mux.connection().events();
    server.drop_all();
    // Wait until the client noticed, then queue a publish while it is away (or, if it is
    // already back, just after): the resubscription must reach the server before it.
    events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    publish_bybit(&mux, "y", json!(2));
    assert!(server.wait_for_handshakes(2, TIMEOUT));
    // Both channels again, in one batch, in subscription order.
    wait_seen(&server, r#"{"args":["x","y"],"op":"subscribe"}"#, 1);
    assert_eq!(
        recv_json(&y)["data"],
        2,
        "routing resumed, publish honoured"
    );
    publish_bybit(&mux, "x", json!(3));
    assert_eq!(recv_json(&x)["data"], 3);
    assert!(x.is_active() && y.is_active());
    assert_eq!(mux.stats().connection.reconnects, 1);
}

#[test]
fn single_resubscribe_messages_without_a_batch_builder() {
    let server = exchange();
    let mux = binance_mux(&server);
    let a = mux.subscribe("a").expect("subscribe");
    let b = mux.subscribe("b").expect("subscribe");
    wait_seen(&server, "SUBSCRIBE", 2);
    server.drop_all();
    assert!(server.wait_for_handshakes(2, TIMEOUT));
    wait_seen(&server, r#""params":["a"]"#, 2);
    wait_seen(&server, r#""params":["b"]"#, 2);
    publish_binance(&mux, "b", json!("back"));
    assert_eq!(recv_json(&b)["data"], "back");
    assert!(a.is_active());
}

#[test]
fn unroutable_messages_are_counted_and_kept() {
    let server = WsServer::echo();
    let mux = Multiplex::from_builder(options(&server.url()))
        .channel_extractor(|m| {
            if m.as_text() == Some("boom") {
                panic!("extractor panics on purpose");
            }
            by_field("stream")(m)
        })
        .connect()
        .expect("connect");
    let known = mux.subscribe("known").expect("subscribe");
    let ws = mux.connection();
    for text in [
        "not json",
        r#"{"no_stream": 1}"#,
        r#"{"stream": "unknown"}"#,
        "boom",
        r#"{"stream": "known", "n": 1}"#,
    ] {
        ws.send_text(text).expect("send");
    }
    ws.send_binary(&b"\x00\x01"[..]).expect("send");
    assert_eq!(recv_json(&known)["n"], 1);
    let mut caught = Vec::new();
    for _ in 0..5 {
        caught.push(mux.recv_unroutable_timeout(TIMEOUT).expect("unroutable"));
    }
    assert_eq!(
        caught,
        [
            Message::text("not json"),
            Message::text(r#"{"no_stream": 1}"#),
            Message::text(r#"{"stream": "unknown"}"#),
            Message::text("boom"),
            Message::binary(&b"\x00\x01"[..]),
        ]
    );
    assert_eq!(mux.try_recv_unroutable().expect("try_recv"), None);
    let stats = mux.stats();
    assert_eq!((stats.unroutable, stats.messages_routed), (5, 1));
    assert!(
        mux.connection().is_connected(),
        "a panicking extractor does not kill the connection"
    );
}

#[test]
fn full_queues_drop_the_oldest() {
    let server = WsServer::echo();
    let mux = Multiplex::from_builder(options(&server.url()))
        .channel_extractor(|m| Some(m.as_text()?.split_once(':')?.0.to_owned()))
        .queue_capacity(3)
        .connect()
        .expect("connect");
    let sub = mux.subscribe("c").expect("subscribe");
    for i in 0..10 {
        mux.connection().send_text(format!("c:{i}")).expect("send");
    }
    assert!(wait_until(TIMEOUT, || mux.stats().messages_routed == 10));
    let s = sub.stats();
    assert_eq!(
        (s.messages_received, s.queued, s.capacity, s.dropped),
        (10, 3, 3, 7)
    );
    let got: Vec<Message> = (0..3).map(|_| sub.try_recv().unwrap().unwrap()).collect();
    assert_eq!(
        got,
        [
            Message::text("c:7"),
            Message::text("c:8"),
            Message::text("c:9")
        ]
    );
    assert_eq!(sub.try_recv().expect("try_recv"), None);
}

#[test]
fn handles_share_a_channel_and_the_last_drop_unsubscribes() {
    let server = exchange();
    let mux = binance_mux(&server);
    let first = mux.subscribe("s").expect("subscribe");
    let second = mux.subscribe("s").expect("subscribe again");
    let third = first.clone();
    assert_eq!(mux.stats().subscriptions_total, 1);
    publish_binance(&mux, "s", json!(1));
    assert_eq!(
        recv_json(&third)["data"],
        1,
        "one queue behind every handle"
    );
    drop(first);
    drop(second);
    assert!(mux.is_subscribed("s"));
    assert!(third.is_active());
    drop(third);
    wait_seen(&server, "UNSUBSCRIBE", 1);
    assert_eq!(seen(&server, r#""method":"SUBSCRIBE""#), 1);
    assert!(mux.subscriptions().is_empty());

    // Subscribing again after the unsubscribe is a new subscription.
    let again = mux.subscribe("s").expect("subscribe after unsubscribe");
    wait_seen(&server, r#""method":"SUBSCRIBE""#, 2);
    publish_binance(&mux, "s", json!(2));
    assert_eq!(recv_json(&again)["data"], 2);
    again.unsubscribe().expect("unsubscribe");
    wait_seen(&server, "UNSUBSCRIBE", 2);
    assert!(!again.is_active());
    assert_eq!(mux.stats().subscriptions_total, 2);
}

#[test]
fn subscriptions_end_when_the_multiplex_closes_or_is_dropped() {
    let server = exchange();
    let mux = binance_mux(&server);
    let a = mux.subscribe("a").expect("subscribe");
    publish_binance(&mux, "a", json!("kept"));
    assert!(wait_until(TIMEOUT, || a.stats().queued == 1));
    let waiter = std::thread::spawn(move || {
        let got: Vec<Message> = a.messages().collect();
        (got.len(), a.recv())
    });
    mux.close().expect("close");
    let (n, after) = waiter.join().expect("waiter");
    assert_eq!(n, 1, "queued messages stay readable");
    assert!(matches!(after, Err(Error::AlreadyClosed)));
    assert!(matches!(mux.subscribe("b"), Err(Error::AlreadyClosed)));

    // Dropping the multiplex ends a blocked receiver too.
    let mux = binance_mux(&server);
    let b = mux.subscribe("b").expect("subscribe");
    let waiter = std::thread::spawn(move || b.recv());
    drop(mux);
    assert!(matches!(
        waiter.join().expect("waiter"),
        Err(Error::AlreadyClosed)
    ));
}

#[test]
fn subscriptions_end_when_the_connection_fails() {
    let server = exchange();
    let mux = binance(Multiplex::from_builder(
        options(&server.url()).reconnect(false),
    ))
    .channel_extractor(by_field("stream"))
    .connect()
    .expect("connect");
    let a = mux.subscribe("a").expect("subscribe");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(a.recv());
    });
    server.drop_all();
    let ended = rx.recv_timeout(TIMEOUT).expect("the blocked recv returns");
    assert!(matches!(ended, Err(Error::AlreadyClosed)), "{ended:?}");
    assert!(mux.connection().is_closed());
    assert!(mux.subscriptions().is_empty());
}

#[test]
fn a_batch_builder_alone_also_subscribes_single_channels() {
    let server = exchange();
    let mux = Multiplex::from_builder(options(&server.url()))
        .channel_extractor(by_field("topic"))
        .subscribe_batch(2, |ts| json!({"op": "subscribe", "args": ts}).to_string())
        .build()
        .expect("build");
    let subs: Vec<Subscription> = ["a", "b", "c"]
        .iter()
        .map(|t| mux.subscribe(*t).expect("subscribe"))
        .collect();
    mux.connect().expect("connect");
    // Groups of at most two, in subscription order.
    wait_seen(&server, r#"{"args":["a","b"],"op":"subscribe"}"#, 1);
    wait_seen(&server, r#"{"args":["c"],"op":"subscribe"}"#, 1);
    let d = mux.subscribe("d").expect("subscribe while connected");
    wait_seen(&server, r#"{"args":["d"],"op":"subscribe"}"#, 1);
    publish_bybit(&mux, "d", json!("d"));
    assert_eq!(recv_json(&d)["data"], "d");
    publish_bybit(&mux, "a", json!("a"));
    assert_eq!(recv_json(&subs[0])["data"], "a");
}
