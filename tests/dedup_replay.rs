//! Checks dedup and replay across a reconnect: repeats a server resends after a drop are
//! dropped exactly (counted in `Stats::deduplicated`), and the replay hook gets the last
//! sequence id, is framed by `ReplayStarted`/`ReplayCompleted`, and what it sends reaches the
//! server after the `on_open` hook's message and before messages queued while away.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use jetsocket::{BackoffConfig, BufferConfig, Event, Message, ReplayConfig, SyncWebSocket};

fn seq_text(n: u64) -> String {
    format!("seq:{n}")
}

/// The sequence-id extractor: `seq:N` messages carry id N; anything else has none.
fn seq_of(msg: &Message) -> Option<u64> {
    msg.as_text()?.strip_prefix("seq:")?.parse().ok()
}

/// Reconnects within milliseconds.
fn fast_backoff() -> BackoffConfig {
    BackoffConfig::default()
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(50))
}

/// Takes `n` messages and returns their sequence ids.
fn recv_seqs(ws: &SyncWebSocket, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let msg = ws
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
            seq_of(&msg).unwrap_or_else(|| panic!("message {i} has no sequence id: {msg:?}"))
        })
        .collect()
}

fn wait_received(ws: &SyncWebSocket, n: u64) {
    let ok = wait_until(TIMEOUT, || ws.stats().messages_received >= n);
    assert!(ok, "fewer than {n} messages arrived: {:?}", ws.stats());
    assert_eq!(ws.stats().messages_received, n);
}

/// First connection: sends seq 1..=50. Later ones: resend 41..=60, then echo.
fn resending_server() -> WsServer {
    let connections = AtomicUsize::new(0);
    WsServer::start(move |mut conn| {
        let range = if connections.fetch_add(1, Ordering::SeqCst) == 0 {
            1..=50
        } else {
            41..=60
        };
        for n in range {
            if !conn.send_text(&seq_text(n)) {
                return;
            }
        }
        conn.serve(true);
    })
}

/// A handle (with dedup on or off) to a [`resending_server`] that has received the first 50
/// messages, lost its connection and reconnected: the server is resending 41..=60.
fn reconnected_to_a_resending_server(dedup: bool) -> (WsServer, SyncWebSocket) {
    let server = resending_server();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .sequence_id(seq_of)
        .buffer(BufferConfig::default().dedup(dedup))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    wait_received(&ws, 50);
    server.drop_all();
    events_until(&events, |e| matches!(e, Event::Reconnected { .. }));
    (server, ws)
}

#[test]
fn dedup_drops_exactly_the_repeats_resent_after_a_reconnect() {
    let (_server, ws) = reconnected_to_a_resending_server(true);
    assert_eq!(recv_seqs(&ws, 60), (1..=60).collect::<Vec<u64>>());
    // All 20 resent messages were read; the 10 repeats among them were dropped.
    wait_received(&ws, 70);
    // The server answers in order, so the echo comes after anything still in flight.
    ws.send_text("done").expect("send");
    let next = ws.recv_timeout(TIMEOUT).expect("echo");
    assert_eq!(next.as_text(), Some("done"), "a repeat got through");
    let s = ws.stats();
    assert_eq!(s.deduplicated, 10);
    assert_eq!(s.reconnects, 1);
    assert_eq!(s.dropped, 0);
    ws.close().expect("close");
}

#[test]
fn without_dedup_repeats_are_delivered() {
    let (_server, ws) = reconnected_to_a_resending_server(false);
    let expected: Vec<u64> = (1..=50).chain(41..=60).collect();
    assert_eq!(recv_seqs(&ws, 70), expected);
    assert_eq!(ws.stats().deduplicated, 0);
    ws.close().expect("close");
}

/// First connection: sends seq 1..=50. Every connection answers `replay-from:K` with
/// seq K..=K+4 and records everything it receives.
fn replaying_server() -> WsServer {
    let connections = AtomicUsize::new(0);
    WsServer::start(move |mut conn| {
        if connections.fetch_add(1, Ordering::SeqCst) == 0 {
            for n in 1..=50 {
                if !conn.send_text(&seq_text(n)) {
                    return;
                }
            }
        }
        while let Some(msg) = conn.read() {
            let from = msg
                .to_text()
                .ok()
                .and_then(|t| t.strip_prefix("replay-from:"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(from) = from {
                for n in from..from + 5 {
                    if !conn.send_text(&seq_text(n)) {
                        return;
                    }
                }
            }
        }
    })
}

#[test]
fn replay_hook_gets_the_last_id_and_is_sent_between_on_open_and_queued_messages() {
    let server = replaying_server();
    let proxy = FaultProxy::start(server.addr());
    let replayed = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&replayed);
    let ws = SyncWebSocket::builder(proxy.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .sequence_id(seq_of)
        .on_open(|conn| conn.send_text("auth"))
        .replay(ReplayConfig::sequence_id(move |conn, last| {
            seen.lock().unwrap().push(last);
            conn.send_text(format!("replay-from:{}", last + 1))
        }))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    wait_received(&ws, 50);
    assert_eq!(server.wait_for_messages(1, TIMEOUT).len(), 1, "no auth");

    // Drop the connection and keep the client away while it queues two messages.
    proxy.set_refuse(true);
    proxy.reset_all();
    events_until(&events, |e| matches!(e, Event::Disconnected { .. }));
    assert!(
        wait_until(TIMEOUT, || proxy.refused() >= 1),
        "no reconnect attempt was refused"
    );
    assert!(!ws.is_connected());
    ws.send_text("queued-1").expect("queue while away");
    ws.send_text("queued-2").expect("queue while away");
    proxy.set_refuse(false);

    let lifecycle = events_until(&events, |e| matches!(e, Event::Reconnected { .. }));
    let replay_events: Vec<&Event> = lifecycle
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::ReplayStarted { .. } | Event::ReplayCompleted { .. }
            )
        })
        .collect();
    assert!(
        matches!(
            replay_events[..],
            [
                Event::ReplayStarted {
                    last_sequence_id: 50
                },
                Event::ReplayCompleted {
                    last_sequence_id: 50
                }
            ]
        ),
        "{replay_events:?}"
    );
    assert_eq!(
        *replayed.lock().unwrap(),
        [50],
        "the hook runs on reconnects only"
    );

    // The second connection got the hook's messages first, then the queued ones.
    let texts = |msgs: Vec<tungstenite::Message>| -> Vec<String> {
        msgs.iter()
            .map(|m| m.to_text().expect("text").to_owned())
            .collect()
    };
    assert_eq!(
        texts(server.wait_for_messages(5, TIMEOUT)),
        ["auth", "auth", "replay-from:51", "queued-1", "queued-2"]
    );
    // And the server's answer to the replay request fills the gap.
    assert_eq!(recv_seqs(&ws, 55), (1..=55).collect::<Vec<u64>>());
    ws.close().expect("close");
}

#[test]
fn replay_is_skipped_until_a_sequence_id_was_seen() {
    // The server sends nothing with a sequence id.
    let server = WsServer::start(|mut conn| {
        if conn.send_text("hello") {
            conn.serve(true);
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&calls);
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .backoff(fast_backoff())
        .sequence_id(seq_of)
        .replay(ReplayConfig::sequence_id(move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("hello").as_text(),
        Some("hello")
    );
    server.drop_all();
    // The replay events come before `Reconnected`, so none can follow it.
    let lifecycle = events_until(&events, |e| matches!(e, Event::Reconnected { .. }));
    assert!(
        !lifecycle.iter().any(|e| matches!(
            e,
            Event::ReplayStarted { .. } | Event::ReplayCompleted { .. }
        )),
        "{lifecycle:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("hello again").as_text(),
        Some("hello")
    );
    ws.close().expect("close");
}
