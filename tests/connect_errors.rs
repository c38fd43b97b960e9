//! Checks how connecting fails: rejected handshakes (fatal 401/403/404/410 after exactly one
//! attempt, retriable 5xx), malformed handshake responses, refused connections, connect
//! timeouts, bad URLs and invalid configuration — each the right `Error` variant, never a
//! panic.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use common::http::{drain, read_http_head};
use common::*;
use jetsocket::{
    BackoffConfig, BufferConfig, Error, Event, HeartbeatConfig, ReplayConfig, SendQueueConfig,
    State, SyncWebSocket, Timeout, TlsConfig,
};

fn fast_retry() -> BackoffConfig {
    BackoffConfig::default()
        .base(Duration::from_millis(5))
        .cap(Duration::from_millis(20))
        .jitter(false)
}

/// A raw server that reads the upgrade request and answers with `respond(accept)`, where
/// `accept` is the correct `Sec-WebSocket-Accept` for the request, then closes.
fn scripted(respond: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> RawServer {
    RawServer::start(move |mut tcp| {
        let head = String::from_utf8_lossy(&read_http_head(&mut tcp)).into_owned();
        let key = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let _ = tcp.write_all(&respond(&accept));
        let _ = tcp.shutdown(Shutdown::Write);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        drain(&mut tcp);
    })
}

/// A [`scripted`] server that answers a correct `101` carrying the extra header line `extra`.
fn upgrade_with(extra: &'static str) -> RawServer {
    scripted(move |accept| {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n\r\n")
            .into_bytes()
    })
}

fn expect_handshake_error(server: &RawServer, what: &str) {
    expect_handshake_error_from(SyncWebSocket::builder(server.url()), what);
}

fn expect_handshake_error_from(builder: jetsocket::Builder, what: &str) {
    let result = builder.connect_timeout(Duration::from_secs(5)).connect();
    match result {
        Err(e @ Error::Handshake(_)) => assert!(!e.is_fatal(), "{what}: {e}"),
        other => panic!("{what}: expected Error::Handshake, got {other:?}"),
    }
}

#[test]
fn fatal_http_statuses_fail_after_one_attempt() {
    for status in [401u16, 403, 404, 410] {
        let responder = HttpResponder::status(status);
        match SyncWebSocket::builder(responder.url()).connect() {
            Err(e @ Error::Http { .. }) => {
                assert!(matches!(e, Error::Http { status: s, .. } if s == status));
                assert!(e.is_fatal(), "{status} must be fatal");
            }
            other => panic!("{status}: expected Error::Http, got {other:?}"),
        }
        assert_eq!(responder.connections(), 1);

        // Built, then connected: the handle fails for good after one attempt.
        let responder = HttpResponder::status(status);
        let ws = SyncWebSocket::builder(responder.url())
            .reconnect(true)
            .backoff(fast_retry())
            .build()
            .expect("build");
        let events = ws.events();
        let err = ws.connect().expect_err("rejected");
        assert!(matches!(err, Error::Http { status: s, .. } if s == status));
        let seen = wait_closed(&events);
        assert!(
            !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
            "{status}: a fatal status was retried: {seen:?}"
        );
        assert_eq!(ws.state(), State::Failed);
        assert_eq!(responder.connections(), 1, "{status}: one attempt only");
        assert_eq!(ws.stats().connect_attempts, 1);
        assert!(
            matches!(ws.recv_timeout(TIMEOUT), Err(Error::Http { status: s, .. }) if s == status)
        );
        assert!(matches!(ws.send_text("x"), Err(Error::AlreadyClosed)));
        assert!(matches!(ws.connect(), Err(Error::AlreadyClosed)));
    }
}

#[test]
fn http_error_carries_the_response_body() {
    let responder = HttpResponder::response(401, &[("Content-Type", "text/plain")], b"bad token");
    match SyncWebSocket::builder(responder.url()).connect() {
        Err(Error::Http { status: 401, body }) => assert_eq!(body, "bad token"),
        other => panic!("expected Http 401, got {other:?}"),
    }
}

#[test]
fn server_errors_are_retried() {
    for status in [500u16, 503] {
        let responder = HttpResponder::status(status);
        match SyncWebSocket::builder(responder.url()).connect() {
            Err(e @ Error::Http { .. }) => {
                assert!(matches!(e, Error::Http { status: s, .. } if s == status));
                assert!(!e.is_fatal(), "{status} must be retriable");
            }
            other => panic!("{status}: expected Error::Http, got {other:?}"),
        }

        let responder = HttpResponder::status(status);
        let ws = SyncWebSocket::builder(responder.url())
            .reconnect(true)
            .backoff(fast_retry())
            .build()
            .expect("build");
        let err = ws.connect().expect_err("rejected");
        assert!(!err.is_fatal());
        assert!(
            responder.wait_for_connections(3, TIMEOUT),
            "{status}: not retried ({} connections)",
            responder.connections()
        );
        assert!(!ws.state().is_terminal(), "{:?}", ws.state());
        ws.close().expect("close");
        assert_eq!(ws.state(), State::Closed);

        // With reconnection off, the first failure is final.
        let responder = HttpResponder::status(status);
        let ws = SyncWebSocket::builder(responder.url())
            .reconnect(false)
            .build()
            .expect("build");
        let events = ws.events();
        assert!(ws.connect().is_err());
        wait_closed(&events);
        assert_eq!(ws.state(), State::Failed);
        assert_eq!(responder.connections(), 1);
    }
}

#[test]
fn bad_urls_are_invalid_url_errors() {
    let cases = [
        "",
        "127.0.0.1:80/",
        "localhost",
        "http://127.0.0.1/",
        "https://127.0.0.1/",
        "ftp://127.0.0.1/",
        "ws://",
        "ws:///path",
        "ws://:80/",
        "ws://host:abc/",
        "ws://host:99999",
        "ws://host:0/",
        "ws://host:-1/",
        "ws://ho st/",
        "ws://host/#frag",
        "ws://[::1/",
        "ws://user:pw@host/",
        "wss://",
        "ws://host\r\n/",
        "ws://\u{00e9}xample.com/",
    ];
    for url in cases {
        match SyncWebSocket::builder(url).build() {
            Err(e @ Error::InvalidUrl { .. }) => assert!(e.is_fatal(), "{url:?}"),
            other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
        }
        match SyncWebSocket::connect_url(url) {
            Err(Error::InvalidUrl { .. }) => {}
            other => panic!("{url:?}: connect_url: expected InvalidUrl, got {other:?}"),
        }
    }
}

fn expect_invalid_config(what: &str, builder: jetsocket::Builder) {
    match builder.build() {
        Err(e @ Error::InvalidConfig(_)) => assert!(e.is_fatal(), "{what}"),
        other => panic!("{what}: expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn invalid_configuration_is_rejected_when_building() {
    let url = "ws://127.0.0.1:9/";
    let b = || SyncWebSocket::builder(url);
    let ms = Duration::from_millis;
    expect_invalid_config(
        "multiplier < 1",
        b().backoff(BackoffConfig::default().multiplier(0.5)),
    );
    expect_invalid_config(
        "multiplier NaN",
        b().backoff(BackoffConfig::default().multiplier(f64::NAN)),
    );
    expect_invalid_config(
        "multiplier infinite",
        b().backoff(BackoffConfig::default().multiplier(f64::INFINITY)),
    );
    expect_invalid_config(
        "cap < base",
        b().backoff(BackoffConfig::default().base(ms(500)).cap(ms(100))),
    );
    expect_invalid_config("busy poll over 10 ms", b().busy_poll(ms(11)));
    expect_invalid_config("zero buffer capacity", b().buffer(BufferConfig::new(0)));
    expect_invalid_config(
        "zero dedup window",
        b().buffer(BufferConfig::new(10).dedup(true).dedup_window(0)),
    );
    expect_invalid_config(
        "zero send queue capacity",
        b().send_queue(SendQueueConfig::new(0)),
    );
    expect_invalid_config("zero connect_timeout", b().connect_timeout(Duration::ZERO));
    expect_invalid_config(
        "max_frame_size > max_message_size",
        b().max_message_size(1024).max_frame_size(2048),
    );
    expect_invalid_config("zero max_message_size", b().max_message_size(0));
    expect_invalid_config("tiny read buffer", b().read_buffer_size(16));
    expect_invalid_config(
        "max_connection_age below 1 s",
        b().max_connection_age(ms(500)),
    );
    expect_invalid_config(
        "zero heartbeat interval",
        b().heartbeat(HeartbeatConfig::new(Duration::ZERO, ms(100))),
    );
    expect_invalid_config(
        "zero heartbeat timeout",
        b().heartbeat(HeartbeatConfig::new(ms(100), Duration::ZERO)),
    );
    expect_invalid_config("header name with a space", b().header("Bad Name", "v"));
    expect_invalid_config("empty header name", b().header("", "v"));
    expect_invalid_config("header name with a colon", b().header("X-A:", "v"));
    expect_invalid_config(
        "header value with CRLF",
        b().header("X-Ok", "a\r\nInjected: 1"),
    );
    expect_invalid_config("header value with LF", b().header("X-Ok", "a\nb"));
    expect_invalid_config("header value with NUL", b().header("X-Ok", "a\0b"));
    expect_invalid_config("reserved Host header", b().header("Host", "evil"));
    expect_invalid_config(
        "reserved Sec-WebSocket-Key header",
        b().header("sec-websocket-key", "x"),
    );
    expect_invalid_config("empty subprotocol", b().subprotocol(""));
    expect_invalid_config("subprotocol with a space", b().subprotocol("a b"));
    expect_invalid_config(
        "replay without a sequence id",
        b().replay(ReplayConfig::sequence_id(|_, _| Ok(()))),
    );
    let garbage_tls = [
        (
            "garbage root certificate",
            TlsConfig::new().add_root_certificate_pem(b"not a certificate".to_vec()),
        ),
        (
            "garbage client identity",
            TlsConfig::new().identity_pem(b"x".to_vec(), b"y".to_vec()),
        ),
    ];
    for (what, tls) in garbage_tls {
        let builder = SyncWebSocket::builder("wss://127.0.0.1:9/").tls(tls);
        if cfg!(feature = "native-tls") {
            expect_invalid_config(what, builder);
        } else {
            // Without a TLS library there is nothing to check the PEM with.
            assert!(
                matches!(builder.build(), Err(Error::TlsUnavailable)),
                "{what}"
            );
        }
    }
}

#[test]
fn header_provider_with_an_invalid_header_fails_without_dialling() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .header_provider(|| vec![("X-Token".to_owned(), "a\r\nInjected: 1".to_owned())])
        .backoff(fast_retry())
        .build()
        .expect("build");
    let events = ws.events();
    match ws.connect() {
        Err(e @ Error::InvalidConfig(_)) => assert!(e.is_fatal()),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    wait_closed(&events);
    assert_eq!(ws.state(), State::Failed);
    assert_eq!(
        server.connections(),
        0,
        "nothing may be sent with a bad header"
    );
}

#[test]
fn garbage_response_is_a_handshake_error() {
    let server = scripted(|_| b"garbage\r\n\r\n".to_vec());
    expect_handshake_error(&server, "garbage");
    let server = scripted(|_| b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    expect_handshake_error(&server, "not HTTP");
}

#[test]
fn response_without_upgrade_is_a_handshake_error() {
    let server = scripted(|accept| {
        format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            .into_bytes()
    });
    expect_handshake_error(&server, "no Upgrade header");
    let server = scripted(|accept| {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
            .into_bytes()
    });
    expect_handshake_error(&server, "no Connection header");
    let server = scripted(|accept| {
        format!("HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes()
    });
    match SyncWebSocket::builder(server.url()).connect() {
        Err(Error::Http { status: 200, .. }) => {}
        other => panic!("a 200 answer: expected Http 200, got {other:?}"),
    }
}

#[test]
fn wrong_accept_key_is_a_handshake_error() {
    let server = scripted(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec()
    });
    expect_handshake_error(&server, "wrong accept");
    let server = scripted(|_| {
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec()
    });
    expect_handshake_error(&server, "missing accept");
}

#[test]
fn unoffered_subprotocol_or_extension_is_a_handshake_error() {
    let server = upgrade_with("Sec-WebSocket-Protocol: chat");
    expect_handshake_error(&server, "subprotocol not offered");
    let server = upgrade_with("Sec-WebSocket-Extensions: x-webkit-deflate-frame");
    expect_handshake_error(&server, "extension not offered");
    // With compression turned off, permessage-deflate is not offered either.
    let server = upgrade_with("Sec-WebSocket-Extensions: permessage-deflate");
    expect_handshake_error_from(
        SyncWebSocket::builder(server.url()).compression(false),
        "compression not offered",
    );
}

#[test]
fn connection_closed_during_the_handshake_is_a_handshake_error() {
    // The server reads the request and hangs up without a word.
    let server = scripted(|_| Vec::new());
    expect_handshake_error(&server, "closed without an answer");
}

#[test]
fn truncated_response_then_eof_is_a_handshake_error() {
    // Half a response head, then the server hangs up: the client must not wait for the
    // connect timeout (it would report Timeout(Connect) after 5 s).
    let server =
        scripted(|_| b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".to_vec());
    expect_handshake_error(&server, "truncated head then EOF");
}

#[test]
fn oversized_response_head_is_a_handshake_error() {
    let server = scripted(|_| {
        let mut head = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for i in 0..2_000 {
            head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
        }
        head
    });
    expect_handshake_error(&server, "oversized head");
}

#[test]
fn refused_connection_is_a_retriable_io_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    match SyncWebSocket::connect_url(format!("ws://127.0.0.1:{port}/")) {
        Err(e @ Error::Io(_)) => {
            assert!(!e.is_fatal(), "refused must be retriable");
            let io = e.into_io();
            assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused, "{io}");
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn connect_timeout_against_a_black_hole() {
    let hole = blackhole_addr();
    match SyncWebSocket::builder(hole.url())
        .connect_timeout(Duration::from_millis(300))
        .connect()
    {
        Err(e @ Error::Timeout(Timeout::Connect)) => {
            assert!(!e.is_fatal());
            assert!(e.is_timeout());
        }
        other => panic!("expected Timeout(Connect), got {other:?}"),
    }
}

#[test]
fn connect_timeout_covers_a_hanging_handshake() {
    let silent = HttpResponder::silent();
    match SyncWebSocket::builder(silent.url())
        .connect_timeout(Duration::from_millis(300))
        .connect()
    {
        Err(Error::Timeout(Timeout::Connect)) => {}
        other => panic!("expected Timeout(Connect), got {other:?}"),
    }
    assert_eq!(silent.wait_for_requests(1, TIMEOUT).len(), 1);
    // The abandoned socket is closed.
    assert!(wait_until(TIMEOUT, || silent.live() == 0));
}

// ----- huge durations: a setting may mean "no limit", but it must never crash the engine ----

#[test]
fn huge_connect_timeout_does_not_crash_the_engine() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .connect_timeout(Duration::MAX)
        .connect()
        .expect("connect_timeout(Duration::MAX) should connect or be InvalidConfig");
    assert_echo(&ws, "ping");
    ws.close().expect("close");
}

#[test]
fn huge_close_timeout_does_not_crash_the_engine() {
    let server = WsServer::recording();
    let ws = SyncWebSocket::builder(server.url())
        .close_timeout(Duration::MAX)
        .connect()
        .expect("connect");
    let events = ws.events();
    ws.close().expect("close");
    let seen = wait_closed(&events);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Error(_))),
        "close with close_timeout(MAX) reported an error: {seen:?}"
    );
    assert_eq!(ws.state(), State::Closed);
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
}

#[test]
fn huge_heartbeat_interval_does_not_crash_the_engine() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(HeartbeatConfig::new(Duration::MAX, Duration::MAX))
        .connect()
        .expect("a huge heartbeat interval should connect or be InvalidConfig");
    assert_echo(&ws, "ping");
    ws.close().expect("close");
}

#[test]
fn huge_max_connection_age_does_not_crash_the_engine() {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .max_connection_age(Duration::MAX)
        .connect()
        .expect("a huge max_connection_age should connect or be InvalidConfig");
    assert_echo(&ws, "ping");
    ws.close().expect("close");
}

#[test]
fn huge_backoff_delay_does_not_crash_the_engine() {
    let server = WsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.url())
        .backoff(
            BackoffConfig::default()
                .base(Duration::MAX)
                .cap(Duration::MAX)
                .jitter(false),
        )
        .heartbeat(None)
        .connect()
        .expect("connect");
    let events = ws.events();
    proxy.reset_all();
    loop {
        match events.recv_timeout(TIMEOUT) {
            Ok(Event::StateChanged {
                to: State::BackingOff,
                ..
            }) => break,
            Ok(Event::Error(e)) => panic!("the engine failed while scheduling a reconnect: {e:?}"),
            Ok(_) => continue,
            Err(e) => panic!("never backed off: {e}, state {:?}", ws.state()),
        }
    }
    ws.close().expect("close");
    assert_eq!(
        ws.state(),
        State::Closed,
        "the engine did not survive scheduling a Duration::MAX backoff: {:?}",
        ws.recv_timeout(Duration::ZERO)
    );
}

#[test]
fn host_names_resolve_off_the_io_thread() {
    // A name, not an IP literal: the lookup runs on its own thread and the attempt goes on
    // when it answers.
    let server = WsServer::echo();
    let url = format!("ws://localhost:{}/", server.port());
    let ws = SyncWebSocket::builder(&url).connect().expect("connect");
    ws.send_text("via a name").expect("send");
    let msg = ws.recv_timeout(TIMEOUT).expect("echo");
    assert_eq!(msg.as_text(), Some("via a name"));
    ws.close().expect("close");
}

#[test]
fn unresolvable_host_is_a_dns_error() {
    // `.invalid` never resolves (RFC 6761). Where no resolver answers at all, the lookup is
    // cut off by the connect timeout instead; both are typed errors, neither hangs.
    let result = SyncWebSocket::builder("ws://no-such-host.invalid/")
        .connect_timeout(Duration::from_secs(20))
        .reconnect(false)
        .connect();
    match result {
        Err(Error::Dns { host, .. }) => assert_eq!(host, "no-such-host.invalid"),
        Err(Error::Timeout(Timeout::Connect)) => {}
        other => panic!("expected a DNS error, got {other:?}"),
    }
}
