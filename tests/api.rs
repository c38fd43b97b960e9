//! Checks the public API's promises: the handle, its builder, errors, events, messages, stats,
//! states and every configuration value are `Send + Sync` and have a useful `Debug`, and
//! secrets (header values, URL credentials, TLS keys) never appear in `Debug`, errors or logs.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::*;
use jetsocket::{
    BackoffConfig, BufferConfig, Builder, CloseCode, CloseFrame, ConnectOptions, Error, Event,
    EventKind, HeartbeatConfig, Message, Messages, OverflowPolicy, ReplayConfig, SendFullPolicy,
    SendQueueConfig, State, Stats, SyncWebSocket, Timeout, TlsConfig, Utf8Bytes, WeakSyncWebSocket,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_clone<T: Clone>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync_static::<SyncWebSocket>();
    assert_send_sync_static::<WeakSyncWebSocket>();
    assert_send_sync_static::<Builder>();
    assert_send_sync_static::<Error>();
    assert_send_sync_static::<Event>();
    assert_send_sync_static::<EventKind>();
    assert_send_sync_static::<Message>();
    assert_send_sync_static::<Utf8Bytes>();
    assert_send_sync_static::<Stats>();
    assert_send_sync_static::<State>();
    assert_send_sync_static::<Timeout>();
    assert_send_sync_static::<CloseCode>();
    assert_send_sync_static::<CloseFrame>();
    assert_send_sync_static::<BackoffConfig>();
    assert_send_sync_static::<HeartbeatConfig>();
    assert_send_sync_static::<BufferConfig>();
    assert_send_sync_static::<OverflowPolicy>();
    assert_send_sync_static::<SendQueueConfig>();
    assert_send_sync_static::<SendFullPolicy>();
    assert_send_sync_static::<TlsConfig>();
    assert_send_sync_static::<ReplayConfig>();
    assert_send_sync_static::<ConnectOptions>();
    assert_send_sync::<Messages<'static>>();
    assert_send_sync_static::<crossbeam_channel::Receiver<Event>>();
}

#[test]
fn value_types_are_clone_and_error_is_a_std_error() {
    assert_clone::<SyncWebSocket>();
    assert_clone::<WeakSyncWebSocket>();
    assert_clone::<Error>();
    assert_clone::<Event>();
    assert_clone::<Message>();
    assert_clone::<Stats>();
    assert_clone::<HeartbeatConfig>();
    assert_clone::<TlsConfig>();
    assert_clone::<ReplayConfig>();
    assert_error::<Error>();
}

#[test]
fn debug_output_is_useful() {
    let cases: Vec<(String, &str)> = vec![
        (format!("{:?}", Message::text("hello")), "hello"),
        (format!("{:?}", Message::binary(vec![1u8, 2])), "Binary"),
        (format!("{:?}", State::BackingOff), "BackingOff"),
        (format!("{:?}", EventKind::Reconnected), "Reconnected"),
        (
            format!(
                "{:?}",
                Event::Reconnecting {
                    attempt: 3,
                    delay: Duration::from_millis(250)
                }
            ),
            "attempt: 3",
        ),
        (
            format!(
                "{:?}",
                Error::Http {
                    status: 401,
                    body: String::new()
                }
            ),
            "401",
        ),
        (format!("{:?}", Timeout::Connect), "Connect"),
        (format!("{:?}", CloseCode::from(4000)), "4000"),
        (format!("{:?}", CloseFrame::new(1000, "bye")), "bye"),
        (
            format!("{:?}", BackoffConfig::default().max_attempts(7)),
            "max_attempts: 7",
        ),
        (
            format!(
                "{:?}",
                HeartbeatConfig::new(Duration::from_secs(3), Duration::from_secs(2))
            ),
            "interval",
        ),
        (format!("{:?}", BufferConfig::new(42)), "42"),
        (format!("{:?}", SendQueueConfig::new(17)), "17"),
        (format!("{:?}", TlsConfig::new()), "TlsConfig"),
        (
            format!("{:?}", ReplayConfig::sequence_id(|_, _| Ok(()))),
            "ReplayConfig",
        ),
        (
            format!("{:?}", SyncWebSocket::builder("ws://127.0.0.1:1/x")),
            "ws://127.0.0.1:1/x",
        ),
        (
            format!(
                "{:?}",
                SyncWebSocket::builder("ws://127.0.0.1:1/").options()
            ),
            "connect_timeout",
        ),
    ];
    for (debug, needle) in cases {
        assert!(debug.contains(needle), "{debug:?} lacks {needle:?}");
    }
    // Display texts are meaningful too.
    let e = Error::Timeout(Timeout::Connect);
    assert!(e.to_string().contains("connect"), "{e}");
    assert!(!Error::AlreadyClosed.to_string().is_empty());
}

#[test]
fn handle_debug_and_stats_are_useful() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let debug = format!("{ws:?}");
    assert!(debug.contains("SyncWebSocket"), "{debug}");
    assert!(debug.contains(&server.url()), "{debug}");
    assert!(debug.contains("Connected"), "{debug}");
    let weak = format!("{:?}", ws.downgrade());
    assert!(!weak.is_empty());
    let stats = ws.stats();
    assert_eq!(stats.state, State::Connected);
    let stats_debug = format!("{stats:?}");
    assert!(stats_debug.contains("messages_sent"), "{stats_debug}");
    assert!(format!("{:?}", ws.messages()).contains("Messages"));
    assert_eq!(ws.url(), server.url());
    ws.close().expect("close");
}

#[test]
fn header_values_never_appear_in_debug() {
    let builder = SyncWebSocket::builder("ws://127.0.0.1:9/")
        .header("Authorization", "Bearer SECRET")
        .header("X-Api-Key", "SECRET-KEY-2")
        .header_provider(|| vec![("X-Token".to_owned(), "SECRET-3".to_owned())]);
    let debug = format!("{builder:?}");
    assert!(
        !debug.contains("SECRET"),
        "Builder Debug leaks a header value: {debug}"
    );
    assert!(
        debug.contains("Authorization"),
        "header names are useful: {debug}"
    );
    let options = format!("{:?}", builder.options());
    assert!(!options.contains("SECRET"), "{options}");

    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .header("Authorization", "Bearer SECRET")
        .heartbeat(None)
        .connect()
        .expect("connect");
    let debug = format!("{ws:?}");
    assert!(
        !debug.contains("SECRET"),
        "SyncWebSocket Debug leaks: {debug}"
    );
    // The header did reach the server.
    let req = server.last_request().expect("handshake request");
    assert_eq!(req.header("authorization"), Some("Bearer SECRET"));
    ws.close().expect("close");
}

#[test]
fn credentials_never_appear_in_errors_or_debug() {
    let builder = SyncWebSocket::builder("ws://user:SECRET@127.0.0.1:9/");
    let debug = format!("{builder:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    let err = builder
        .build()
        .expect_err("credentials in URLs are rejected");
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");
    assert!(!err.to_string().contains("SECRET"), "{err}");

    let err = SyncWebSocket::builder("ws://127.0.0.1:9/")
        .header("X-Bad", "SECRET\r\nInjected: 1")
        .build()
        .expect_err("CRLF in a header value is rejected");
    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    assert!(!format!("{err:?}").contains("SECRET"), "{err:?}");

    let tls = TlsConfig::new().identity_pem(b"CERT".to_vec(), b"SECRETKEY".to_vec());
    assert!(!format!("{tls:?}").contains("SECRETKEY"));

    let builder =
        SyncWebSocket::builder("ws://127.0.0.1:9/").proxy("http://user:SECRETPW@127.0.0.1:3128");
    let debug = format!("{builder:?}");
    assert!(
        !debug.contains("SECRETPW"),
        "proxy credentials leak: {debug}"
    );
    let ws = builder.build().expect("build with a proxy");
    assert!(!format!("{ws:?}").contains("SECRETPW"));
}

/// A logger that keeps every record (trace level included) for inspection.
struct Capture {
    lines: Mutex<Vec<String>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.target(), record.args());
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture {
    lines: Mutex::new(Vec::new()),
};

#[test]
fn header_values_never_reach_the_log() {
    // Only this test installs a logger in this test binary.
    log::set_logger(&CAPTURE).expect("set logger");
    log::set_max_level(log::LevelFilter::Trace);

    // A successful handshake, a rejected one and a close all log something.
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .header("Authorization", "Bearer SECRET")
        .header_provider(|| vec![("X-Token".to_owned(), "SECRET-2".to_owned())])
        .heartbeat(None)
        .connect()
        .expect("connect");
    ws.send_text("hi").expect("send");
    assert_eq!(ws.recv_timeout(TIMEOUT).expect("echo"), Message::text("hi"));
    ws.close().expect("close");

    let rejecting = HttpResponder::status(401);
    let err = SyncWebSocket::builder(rejecting.url())
        .header("Authorization", "Bearer SECRET")
        .connect()
        .expect_err("401");
    assert!(matches!(err, Error::Http { status: 401, .. }), "{err:?}");

    let lines = CAPTURE
        .lines
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(!lines.is_empty(), "the engine logs something");
    for line in &lines {
        assert!(
            !line.contains("SECRET"),
            "a header value reached the log: {line}"
        );
    }
}
