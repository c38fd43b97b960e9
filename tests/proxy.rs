//! Connections through an HTTP CONNECT proxy: plain and TLS targets, credentials, refusals
//! (407 fatal, 403/502 retried), and the environment variables with `NO_PROXY`.

mod common;

use std::time::Duration;

use common::{ConnectProxy, ProxyMode, WsServer, TIMEOUT};
use jetsocket::{Error, Event, Message, State, SyncWebSocket};

#[test]
fn ws_through_proxy_echoes() {
    let server = WsServer::echo();
    let proxy = ConnectProxy::start(ProxyMode::Open);
    let ws = SyncWebSocket::builder(server.url())
        .proxy(proxy.url())
        .connect()
        .expect("connect through the proxy");
    ws.send_text("via proxy").unwrap();
    assert_eq!(
        ws.recv_timeout(TIMEOUT).unwrap(),
        Message::text("via proxy")
    );
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1);
    let expected = format!("CONNECT {} HTTP/1.1", server.addr());
    assert!(requests[0].starts_with(&expected), "{}", requests[0]);
    ws.close().unwrap();
}

#[test]
#[cfg(feature = "native-tls")]
fn wss_through_proxy_is_end_to_end_tls() {
    use common::TlsWsServer;
    use jetsocket::TlsConfig;

    let server = TlsWsServer::echo();
    let proxy = ConnectProxy::start(ProxyMode::Open);
    let ws = SyncWebSocket::builder(server.url())
        .tls(TlsConfig::new().add_root_certificate_pem(server.ca_cert_pem()))
        .proxy(proxy.url())
        .connect()
        .expect("wss through the proxy");
    ws.send_binary(vec![1u8, 2, 3]).unwrap();
    assert_eq!(
        ws.recv_timeout(TIMEOUT).unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    // The proxy only saw the target's name and port; the rest was TLS.
    assert!(proxy.requests()[0].starts_with(&format!("CONNECT localhost:{} ", server.port())));
    ws.close().unwrap();
}

#[test]
fn basic_credentials_are_sent_and_never_shown() {
    let server = WsServer::echo();
    // "user:s3cret"
    let proxy = ConnectProxy::start(ProxyMode::RequireAuth("dXNlcjpzM2NyZXQ=".into()));
    let url = format!("http://user:s3cret@{}", proxy.addr());
    let builder = SyncWebSocket::builder(server.url()).proxy(&url);
    assert!(!format!("{builder:?}").contains("s3cret"));
    let ws = builder.connect().expect("authenticated tunnel");
    assert!(!format!("{ws:?}").contains("s3cret"));
    ws.send_text("ok").unwrap();
    assert_eq!(ws.recv_timeout(TIMEOUT).unwrap(), Message::text("ok"));
    ws.close().unwrap();
}

#[test]
fn proxy_407_is_fatal_after_one_attempt() {
    let server = WsServer::echo();
    let proxy = ConnectProxy::start(ProxyMode::RequireAuth("bm9ib2R5Om5vcGU=".into()));
    let ws = SyncWebSocket::builder(server.url())
        .proxy(proxy.url())
        .backoff(jetsocket::BackoffConfig::default().base(Duration::from_millis(1)))
        .build()
        .unwrap();
    let events = ws.events();
    let err = ws.connect().expect_err("407 must fail");
    assert!(matches!(err, Error::Proxy { status: 407, .. }), "{err:?}");
    assert!(err.is_fatal());
    // The engine ends without another attempt.
    let closed = events
        .iter()
        .find(|e| matches!(e, Event::Closed { .. }))
        .is_some();
    assert!(closed);
    assert_eq!(ws.state(), State::Failed);
    assert_eq!(proxy.connections(), 1);
    assert_eq!(server.handshakes(), 0);
}

#[test]
fn proxy_refusals_403_and_502_are_retried() {
    for status in [403, 502] {
        let server = WsServer::echo();
        let proxy = ConnectProxy::start(ProxyMode::Refuse(status));
        let ws = SyncWebSocket::builder(server.url())
            .proxy(proxy.url())
            .backoff(
                jetsocket::BackoffConfig::default()
                    .base(Duration::from_millis(1))
                    .jitter(false)
                    .max_attempts(2),
            )
            .build()
            .unwrap();
        let events = ws.events();
        let err = ws.connect().expect_err("refused");
        assert!(
            matches!(err, Error::Proxy { status: s, .. } if s == status),
            "{err:?}"
        );
        assert!(!err.is_fatal());
        let last = events
            .iter()
            .filter_map(|e| match e {
                Event::Error(e) => Some(e),
                _ => None,
            })
            .last()
            .expect("a final error");
        assert!(
            matches!(last, Error::RetriesExhausted { attempts: 2, .. }),
            "{last:?}"
        );
        assert_eq!(proxy.connections(), 3, "first attempt plus two retries");
    }
}

#[test]
fn invalid_proxy_url_is_a_config_error() {
    let err = SyncWebSocket::builder("ws://127.0.0.1:9/")
        .proxy("socks5://127.0.0.1:1080")
        .build()
        .expect_err("unsupported proxy scheme");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
}

/// All environment cases in one test: the environment is shared by the whole process.
#[test]
fn environment_proxy_and_no_proxy() {
    let server = WsServer::echo();
    let proxy = ConnectProxy::start(ProxyMode::Open);
    std::env::set_var("HTTP_PROXY", proxy.url());
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // Not enabled: the environment is ignored.
    let ws = SyncWebSocket::builder(server.url()).connect().unwrap();
    ws.close().unwrap();
    assert_eq!(proxy.connections(), 0);

    // Enabled: goes through the proxy.
    let ws = SyncWebSocket::builder(server.url())
        .proxy_from_env(true)
        .connect()
        .unwrap();
    ws.send_text("env").unwrap();
    assert_eq!(ws.recv_timeout(TIMEOUT).unwrap(), Message::text("env"));
    ws.close().unwrap();
    assert_eq!(proxy.connections(), 1);

    // NO_PROXY lists the host: direct.
    std::env::set_var("NO_PROXY", "example.com, 127.0.0.1");
    let ws = SyncWebSocket::builder(server.url())
        .proxy_from_env(true)
        .connect()
        .unwrap();
    ws.close().unwrap();
    assert_eq!(proxy.connections(), 1);

    std::env::remove_var("HTTP_PROXY");
    std::env::remove_var("NO_PROXY");
}
