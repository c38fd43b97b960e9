//! Checks `wss://` against an in-process TLS server with a certificate generated at test time:
//! echo (small, large, greeting right after the handshake) with the test CA trusted, by host
//! name and by IP; an untrusted certificate is a fatal `Error::Certificate`; accepting invalid
//! certificates connects anyway; TLS to a plain server fails cleanly; close and reconnect work
//! over TLS. Without the `native-tls` feature, `wss://` fails with `Error::TlsUnavailable`.

#![cfg_attr(not(feature = "native-tls"), allow(dead_code, unused_imports))]

mod common;

use std::time::Duration;

use common::*;
use jetsocket::{
    BackoffConfig, BufferConfig, Error, Event, Message, State, SyncWebSocket, TlsConfig,
};

fn trusting(server: &TlsWsServer) -> TlsConfig {
    TlsConfig::new().add_root_certificate_pem(server.ca_cert_pem())
}

#[test]
#[cfg(feature = "native-tls")]
fn wss_echo_with_the_test_ca() {
    let server = TlsWsServer::echo();
    assert!(server.url().starts_with("wss://localhost:"));
    let ws = SyncWebSocket::builder(server.url())
        .tls(trusting(&server))
        .heartbeat(None)
        // Room for the whole burst below: the default buffer would drop the oldest echoes.
        .buffer(BufferConfig::new(10_000))
        .connect()
        .expect("wss connect");
    for len in [0usize, 5, 125, 126, 65_536] {
        let text = "t".repeat(len);
        ws.send_text(text.clone()).expect("send");
        assert_eq!(ws.recv_timeout(TIMEOUT).expect("echo"), Message::text(text));
    }
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 253) as u8).collect();
    ws.send_binary(big.clone()).expect("send 1 MiB");
    let got = ws.recv_timeout(TIMEOUT).expect("1 MiB echo");
    assert_eq!(got.as_bytes(), &big[..]);
    // Many small messages in a burst (TLS records batched by the engine).
    for i in 0..2_000 {
        ws.send_text(format!("b{i}")).expect("send");
    }
    for i in 0..2_000 {
        assert_eq!(
            ws.recv_timeout(TIMEOUT).expect("burst echo"),
            Message::text(format!("b{i}"))
        );
    }
    assert_eq!(ws.stats().dropped, 0);
    ws.close().expect("close");
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
}

#[test]
#[cfg(feature = "native-tls")]
fn wss_by_ip_address() {
    let server = TlsWsServer::echo();
    let ws = SyncWebSocket::builder(server.ip_url())
        .tls(trusting(&server))
        .heartbeat(None)
        .connect()
        .expect("wss by IP");
    assert_echo(&ws, "ip");
    ws.close().expect("close");
}

#[test]
#[cfg(feature = "native-tls")]
fn wss_greeting_right_after_the_handshake_is_delivered() {
    let server = TlsWsServer::start(|mut conn| {
        conn.send_text("welcome");
        conn.serve(true);
    });
    for _ in 0..5 {
        let ws = SyncWebSocket::builder(server.url())
            .tls(trusting(&server))
            .heartbeat(None)
            .connect()
            .expect("connect");
        assert_eq!(
            ws.recv_timeout(TIMEOUT).expect("greeting").as_text(),
            Some("welcome")
        );
        ws.close().expect("close");
    }
}

#[test]
#[cfg(feature = "native-tls")]
fn untrusted_certificate_is_fatal() {
    let server = TlsWsServer::untrusted_echo();
    // Neither the system roots nor the (unrelated) CA we trust signed it.
    match SyncWebSocket::builder(server.url())
        .tls(trusting(&server))
        .connect()
    {
        Err(e @ Error::Certificate(_)) => assert!(e.is_fatal()),
        other => panic!("expected Error::Certificate, got {other:?}"),
    }
    match SyncWebSocket::builder(server.url()).connect() {
        Err(Error::Certificate(_)) => {}
        other => panic!("system roots: expected Error::Certificate, got {other:?}"),
    }

    let before = server.connections();
    let ws = SyncWebSocket::builder(server.url())
        .tls(trusting(&server))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(5))
                .jitter(false),
        )
        .build()
        .expect("build");
    let events = ws.events();
    let err = ws.connect().expect_err("untrusted");
    assert!(matches!(err, Error::Certificate(_)), "{err:?}");
    let seen = wait_closed(&events);
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "a rejected certificate was retried: {seen:?}"
    );
    assert_eq!(ws.state(), State::Failed);
    assert_eq!(server.connections(), before + 1, "one attempt only");
    assert!(matches!(
        ws.recv_timeout(TIMEOUT),
        Err(Error::Certificate(_))
    ));
}

#[test]
#[cfg(feature = "native-tls")]
fn accepting_invalid_certificates_connects_to_an_untrusted_server() {
    let server = TlsWsServer::untrusted_echo();
    let ws = SyncWebSocket::builder(server.url())
        .tls(TlsConfig::new().danger_accept_invalid_certs(true))
        .heartbeat(None)
        .connect()
        .expect("danger_accept_invalid_certs connects");
    assert_echo(&ws, "insecure");
    ws.close().expect("close");
}

#[test]
#[cfg(feature = "native-tls")]
fn tls_to_a_plain_server_fails_cleanly() {
    let server = WsServer::echo();
    let url = format!("wss://127.0.0.1:{}/", server.port());
    match SyncWebSocket::builder(&url)
        .connect_timeout(Duration::from_secs(5))
        .connect()
    {
        Err(e @ (Error::Tls(_) | Error::Io(_) | Error::Handshake(_))) => {
            assert!(
                !e.is_fatal(),
                "a protocol mix-up is not a certificate problem: {e}"
            )
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}

#[test]
#[cfg(feature = "native-tls")]
fn plain_client_to_a_tls_server_fails_cleanly() {
    let server = TlsWsServer::echo();
    let url = format!("ws://127.0.0.1:{}/", server.port());
    match SyncWebSocket::builder(&url)
        .connect_timeout(Duration::from_secs(5))
        .connect()
    {
        Err(Error::Handshake(_) | Error::Io(_) | Error::Timeout(_)) => {}
        other => panic!("expected a handshake failure, got {other:?}"),
    }
}

#[test]
#[cfg(feature = "native-tls")]
fn wss_reconnects_after_a_drop() {
    let server = TlsWsServer::echo();
    let proxy = FaultProxy::start(server.addr());
    let ws = SyncWebSocket::builder(proxy.wss_url())
        .tls(trusting(&server))
        .heartbeat(None)
        .backoff(fast_backoff())
        .connect()
        .expect("connect");
    let events = ws.events();
    assert_echo(&ws, "before");
    proxy.reset_all();
    loop {
        match events.recv_timeout(TIMEOUT).expect("Reconnected event") {
            Event::Reconnected { .. } => break,
            Event::Closed { .. } => panic!("gave up: {:?}", ws.recv_timeout(TIMEOUT)),
            _ => continue,
        }
    }
    assert_echo(&ws, "after");
    assert_eq!(server.handshakes(), 2);
    ws.close().expect("close");
}

#[test]
#[cfg(feature = "native-tls")]
fn certificate_for_another_host_is_rejected_unless_allowed() {
    let ca = TestCa::new();
    let server = WsServer::builder().tls(ca.issue(&["other.example"])).echo();
    let url = format!("wss://localhost:{}/", server.port());
    let tls = TlsConfig::new().add_root_certificate_pem(ca.cert_pem());
    match SyncWebSocket::builder(&url).tls(tls.clone()).connect() {
        Err(e @ Error::Certificate(_)) => assert!(e.is_fatal()),
        other => panic!("expected Error::Certificate for a host name mismatch, got {other:?}"),
    }
    let ws = SyncWebSocket::builder(&url)
        .tls(tls.danger_accept_invalid_hostnames(true))
        .heartbeat(None)
        .connect()
        .expect("danger_accept_invalid_hostnames connects");
    assert_echo(&ws, "other host");
    ws.close().expect("close");
}

#[test]
#[cfg(not(feature = "native-tls"))]
fn wss_without_the_feature_is_a_typed_error() {
    let server = TlsWsServer::echo();
    match SyncWebSocket::builder(server.url())
        .tls(trusting(&server))
        .connect()
    {
        Err(e @ Error::TlsUnavailable) => assert!(e.is_fatal()),
        other => panic!("wss:// without native-tls: {other:?}"),
    }
}
