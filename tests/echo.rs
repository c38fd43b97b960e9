//! Checks round trips against in-process servers: text and binary echo at frame-size
//! boundaries and 1 MiB, many threads sharing one handle (per-thread order kept), the end of
//! `messages()` when the server closes, fairness under a server flood, server pings answered
//! while the client is idle, greetings sent right after the handshake, and handshake details
//! (headers, path, query, subprotocol).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jetsocket::{BufferConfig, Error, Event, Message, OverflowPolicy, State, SyncWebSocket};
use tungstenite::Message as WsMsg;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn text_and_binary_echo_at_frame_size_boundaries() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 65_537] {
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send_text(text.clone()).expect("send text");
        let got = ws.recv_timeout(TIMEOUT).expect("text echo");
        assert_eq!(got, Message::text(text), "text of {len} bytes");

        ws.send_binary(pattern(len)).expect("send binary");
        let got = ws.recv_timeout(TIMEOUT).expect("binary echo");
        assert!(
            got.is_binary(),
            "binary of {len} bytes came back as {got:?}"
        );
        assert_eq!(got.as_bytes(), &pattern(len)[..], "binary of {len} bytes");
    }
    // Multi-byte UTF-8 survives.
    assert_echo(&ws, "grüße, 世界 🦀");
    ws.close().expect("close");
}

#[test]
fn one_mebibyte_echo() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let big = pattern(1 << 20);
    ws.send(Message::binary(big.clone())).expect("send");
    let got = ws.recv_timeout(TIMEOUT).expect("echo");
    assert_eq!(got.len(), big.len());
    assert_eq!(got.as_bytes(), &big[..]);

    let text = "x".repeat(1 << 20);
    ws.send_text(text.clone()).expect("send");
    assert_eq!(ws.recv_timeout(TIMEOUT).expect("echo"), Message::text(text));
    let stats = ws.stats();
    assert_eq!(stats.messages_sent, 2);
    assert_eq!(stats.messages_received, 2);
    assert_eq!(stats.bytes_sent, 2 << 20);
    assert_eq!(stats.bytes_received, 2 << 20);
    ws.close().expect("close");
}

#[test]
fn eight_threads_share_one_handle_and_keep_their_order() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 10_000;
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let ws = ws.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    ws.send_text(format!("{t}:{i}")).expect("send");
                }
            });
        }
    });
    let total = THREADS * PER_THREAD;
    let got = server.wait_for_messages(total, Duration::from_secs(60));
    assert_eq!(got.len(), total, "all messages delivered");
    let mut next: HashMap<usize, usize> = HashMap::new();
    for m in &got {
        let WsMsg::Text(t) = m else {
            panic!("unexpected {m:?}")
        };
        let (t, i) = t.split_once(':').expect("tagged message");
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        let expected = next.entry(t).or_insert(0);
        assert_eq!(i, *expected, "thread {t}: out of order");
        *expected += 1;
    }
    assert_eq!(next.len(), THREADS);
    assert!(next.values().all(|&n| n == PER_THREAD));
    assert!(wait_until(TIMEOUT, || ws.stats().messages_sent == total as u64));
    ws.close().expect("close");
}

#[test]
fn messages_iterator_ends_when_the_server_closes() {
    let server = WsServer::start(|mut conn| {
        for i in 0..5 {
            conn.send_text(&format!("m{i}"));
        }
        conn.close(1000, "done");
        while conn.read().is_some() {}
    });
    let ws = SyncWebSocket::builder(server.url())
        .reconnect(false)
        .heartbeat(None)
        .connect()
        .expect("connect");
    let ws2 = ws.clone();
    let got: Vec<String> = within(TIMEOUT, "messages()", move || {
        ws2.messages()
            .map(|m| m.as_text().unwrap_or_default().to_owned())
            .collect()
    });
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(ws.state(), State::Closed);
    assert!(ws.is_closed());
    match ws.recv_timeout(TIMEOUT) {
        Err(Error::ConnectionClosed(Some(frame))) => {
            assert_eq!(frame.code.as_u16(), 1000);
            assert_eq!(frame.reason, "done");
        }
        other => panic!("expected ConnectionClosed(1000), got {other:?}"),
    }
    assert!(matches!(ws.send_text("late"), Err(Error::AlreadyClosed)));
    assert_eq!(
        server.connections(),
        1,
        "no reconnect with reconnect(false)"
    );
}

#[test]
fn client_sends_get_through_while_the_server_floods() {
    const CLIENT_MESSAGES: usize = 2_000;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let server = WsServer::start(move |mut conn| {
        // A writer thread floods pre-encoded text frames without pause on a clone of the
        // socket, while this thread reads (and records) what the client sends. Nothing else
        // writes until the close, so the frames never interleave.
        let mut raw = match conn.tcp().try_clone() {
            Ok(s) => s,
            Err(_) => return,
        };
        let stop3 = Arc::clone(&stop2);
        let writer = std::thread::Builder::new()
            .name("tk-flood".into())
            .spawn(move || {
                let mut burst = Vec::new();
                for _ in 0..256 {
                    burst.extend_from_slice(&[0x81, 64]);
                    burst.extend_from_slice(&[b'f'; 64]);
                }
                while !stop3.load(Ordering::SeqCst) {
                    if std::io::Write::write_all(&mut raw, &burst).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn flood writer");
        while conn.read().is_some() {}
        stop2.store(true, Ordering::SeqCst);
        let _ = conn.tcp().shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
    });
    let ws = connect_without_heartbeat(&server.url());
    // The flood is under way before the client sends anything.
    assert!(
        wait_until(TIMEOUT, || ws.stats().messages_received >= 10_000),
        "no flood: {:?}",
        ws.stats()
    );
    let before = ws.stats().messages_received;
    for i in 0..CLIENT_MESSAGES {
        ws.send_text(format!("c{i}")).expect("send");
    }
    let got = server.wait_for_messages(CLIENT_MESSAGES, TIMEOUT);
    assert_eq!(
        got.len(),
        CLIENT_MESSAGES,
        "client messages starved by the flood: {:?}",
        ws.stats()
    );
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &WsMsg::text(format!("c{i}")));
    }
    // The client kept reading the flood while its sends went out.
    assert!(
        wait_until(TIMEOUT, || ws.stats().messages_received > before + 10_000),
        "{:?}",
        ws.stats()
    );
    stop.store(true, Ordering::SeqCst);
    server.drop_all();
    drop(ws);
}

#[test]
fn server_ping_is_answered_while_the_client_is_idle() {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let server = WsServer::start(move |mut conn| {
        let _ = conn.tcp().set_read_timeout(Some(TIMEOUT));
        if conn
            .ws_mut()
            .send(WsMsg::Ping(b"are-you-there".to_vec().into()))
            .is_err()
        {
            return;
        }
        loop {
            match conn.ws_mut().read() {
                Ok(WsMsg::Pong(p)) => {
                    let _ = tx.send(p.to_vec());
                }
                Ok(WsMsg::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    // Heartbeats off and nothing sent or received: only the engine can answer.
    let ws = connect_without_heartbeat(&server.url());
    let pong = rx
        .recv_timeout(TIMEOUT)
        .expect("the idle client never answered the server's ping");
    assert_eq!(pong, b"are-you-there");
    ws.close().expect("close");
}

#[test]
fn greeting_sent_right_after_the_handshake_is_delivered() {
    let server = WsServer::start(|mut conn| {
        // Sent back to back with the 101 response, so it may arrive in the same segment.
        conn.send_text("welcome-1");
        conn.send_text("welcome-2");
        conn.serve(true);
    });
    for _ in 0..20 {
        let ws = connect_without_heartbeat(&server.url());
        assert_eq!(
            ws.recv_timeout(TIMEOUT).expect("greeting").as_text(),
            Some("welcome-1")
        );
        assert_eq!(
            ws.recv_timeout(TIMEOUT).expect("greeting").as_text(),
            Some("welcome-2")
        );
        ws.close().expect("close");
    }
}

#[test]
fn handshake_carries_path_query_headers_and_subprotocol() {
    let server = WsServer::builder().subprotocol("v2").echo();
    let url = format!("ws://127.0.0.1:{}/stream/x?token=abc&n=1", server.port());
    let events_seen;
    let ws = {
        let ws = SyncWebSocket::builder(&url)
            .header("X-Api-Key", "k1")
            .subprotocol("v1")
            .subprotocol("v2")
            .heartbeat(None)
            .build()
            .expect("build");
        assert_eq!(ws.state(), State::Idle);
        let events = ws.events();
        ws.connect().expect("connect");
        events_seen = events;
        ws
    };
    let req = server.last_request().expect("request");
    assert_eq!(req.path, "/stream/x?token=abc&n=1");
    assert_eq!(req.header("x-api-key"), Some("k1"));
    assert_eq!(req.offered_subprotocols(), ["v1", "v2"]);
    assert_eq!(ws.subprotocol().as_deref(), Some("v2"));
    let connected = loop {
        match events_seen.recv_timeout(TIMEOUT).expect("event") {
            Event::Connected { subprotocol } => break subprotocol,
            _ => continue,
        }
    };
    assert_eq!(connected.as_deref(), Some("v2"));
    assert_echo(&ws, "hi");
    ws.close().expect("close");
}

#[test]
fn recv_variants_and_try_recv() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    assert!(matches!(ws.try_recv(), Ok(None)));
    assert!(matches!(
        ws.recv_timeout(Duration::from_millis(20)),
        Err(Error::Timeout(jetsocket::Timeout::Recv))
    ));
    ws.send("a").expect("send");
    ws.send(vec![1u8, 2, 3]).expect("send");
    assert_eq!(ws.recv_timeout(TIMEOUT).expect("a"), Message::text("a"));
    assert_eq!(
        ws.recv_deadline(std::time::Instant::now() + TIMEOUT)
            .expect("b"),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.send("c").expect("send");
    assert!(wait_until(TIMEOUT, || ws.stats().queued == 1));
    assert_eq!(ws.try_recv().expect("try_recv"), Some(Message::text("c")));
    ws.close().expect("close");
}

#[test]
fn huge_recv_timeout_does_not_panic() {
    // crossbeam's recv_timeout treats an unrepresentable deadline as "no deadline"; the
    // handle's recv_timeout is documented with the same names and should behave alike.
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    ws.send_text("x").expect("send");
    let ws2 = ws.clone();
    let got = within(TIMEOUT, "recv_timeout(Duration::MAX)", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ws2.recv_timeout(Duration::MAX)
                .map(|m| m.as_text().map(str::to_owned))
        }))
    });
    match got {
        Ok(Ok(Some(text))) => assert_eq!(text, "x"),
        Ok(other) => panic!("recv_timeout(Duration::MAX) returned {other:?}"),
        Err(_) => panic!("recv_timeout(Duration::MAX) panicked"),
    }
    ws.close().expect("close");
}

#[test]
fn concurrent_connect_calls_all_return_once_connected() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .build()
        .expect("build");
    let results: Vec<_> = within(TIMEOUT, "concurrent connect()", {
        let ws = ws.clone();
        move || {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let ws = ws.clone();
                        s.spawn(move || ws.connect())
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("connect thread"))
                    .collect()
            })
        }
    });
    for r in results {
        r.expect("connect");
    }
    assert_eq!(server.handshakes(), 1, "one connection for all callers");
    ws.connect()
        .expect("connect on a connected handle returns at once");
    assert_eq!(server.connections(), 1);
    ws.close().expect("close");
}

#[test]
fn busy_polling_round_trips_and_backpressure() {
    // Spinning replaces the sleeps between hand-overs; nothing else may change: every round
    // trip answers, in order, sends from another thread still get through, and an idle
    // connection goes back to sleeping (close returns promptly).
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .busy_poll(Duration::from_micros(200))
        // A small buffer that stops reading when full: the burst exercises backpressure.
        .buffer(BufferConfig::new(64).overflow_policy(OverflowPolicy::Block))
        .connect()
        .expect("connect");
    for i in 0..500 {
        let text = format!("round trip {i}");
        ws.send_text(text.as_str()).expect("send");
        let msg = ws.recv_timeout(TIMEOUT).expect("echo");
        assert_eq!(msg.as_text(), Some(text.as_str()));
    }
    let sender = ws.clone();
    let burst = std::thread::spawn(move || {
        for i in 0..5000u32 {
            sender.send_binary(i.to_le_bytes().to_vec()).expect("send");
        }
    });
    for i in 0..5000u32 {
        let msg = ws.recv_timeout(TIMEOUT).expect("burst echo");
        assert!(msg.is_binary(), "message {i}");
        assert_eq!(msg.as_bytes(), &i.to_le_bytes()[..], "message {i}");
    }
    burst.join().expect("sender");
    // A recv on an empty buffer spins, then sleeps, and still honours its timeout.
    assert!(matches!(
        ws.recv_timeout(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    assert_eq!(ws.stats().dropped, 0);
    within(TIMEOUT, "close", move || ws.close()).expect("close");
}
