//! Self-test of the shared test-server toolkit in `tests/common/`.
//!
//! Every test takes `LOCK` first (and therefore drops it last), so servers of one test
//! never overlap with another test's thread/fd measurements. Test names start with `st_`
//! so harness threads can be told apart from toolkit threads.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn text(s: &str) -> Message {
    Message::Text(s.to_string().into())
}

/// Reads until a data or close message arrives (skipping pings/pongs).
fn next_msg<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    loop {
        match ws.read().expect("client read") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

fn client_tcp(ws: &ClientWs) -> &TcpStream {
    match ws.get_ref() {
        tungstenite::stream::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain only"),
    }
}

/// Asserts that nothing arrives on `ws` within `quiet` (the read times out), then restores
/// the usual read timeout.
fn assert_silent_for(ws: &mut ClientWs, quiet: Duration) {
    client_tcp(ws).set_read_timeout(Some(quiet)).unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e)) => {
            assert!(matches!(
                e.kind(),
                ErrorKind::WouldBlock | ErrorKind::TimedOut
            ))
        }
        other => panic!("expected silence for {quiet:?}, got {other:?}"),
    }
    client_tcp(ws).set_read_timeout(Some(TIMEOUT)).unwrap();
}

/// Names of threads that are neither the main thread nor a harness thread (harness threads
/// are named after the `st_*` tests). A freshly spawned harness thread briefly carries the
/// main thread's name, so callers wait for this to become empty rather than snapshotting it.
fn foreign_threads() -> Vec<String> {
    let pid = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy() != pid)
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim_end().to_string())
        .filter(|n| !n.starts_with("st_"))
        .collect()
}

#[test]
fn st_echo_roundtrip_and_counters() {
    let _g = serial();
    let server = WsServer::echo();
    assert!(server.url().starts_with("ws://127.0.0.1:"));
    assert_eq!(server.addr().port(), server.port());
    assert!(!server.wait_for_connections(1, Duration::from_millis(50)));
    let mut ws = ws_client(&server.url());
    assert!(server.wait_for_connections(1, TIMEOUT));
    assert!(server.wait_for_handshakes(1, TIMEOUT));
    assert_eq!(server.connections(), 1);

    ws.send(text("hello")).unwrap();
    assert_eq!(next_msg(&mut ws), text("hello"));
    ws.send(Message::Binary(vec![1u8, 2, 3].into())).unwrap();
    assert_eq!(next_msg(&mut ws), Message::Binary(vec![1u8, 2, 3].into()));

    ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"hb"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(server.wait_for_pings(1, TIMEOUT));

    ws.close(Some(close_frame(1000, "bye"))).unwrap();
    // The server replies to the close; the client then sees the connection end.
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Ok(m) => panic!("unexpected {m:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(server.wait_for_close(TIMEOUT), Some((1000, "bye".into())));
    assert!(server.wait_for_live(0, TIMEOUT));
    assert_eq!(server.texts(), vec!["hello".to_string()]);
    assert_eq!(server.received().len(), 2);
}

#[test]
fn st_recording_keeps_order_and_close_frames() {
    let _g = serial();
    let server = WsServer::recording();
    let mut ws = ws_client(&server.url());
    for i in 0..5 {
        ws.send(text(&format!("m{i}"))).unwrap();
    }
    ws.send(Message::Binary(vec![9u8].into())).unwrap();
    let got = server.wait_for_messages(6, TIMEOUT);
    assert_eq!(got.len(), 6);
    for (i, m) in got.iter().take(5).enumerate() {
        assert_eq!(*m, text(&format!("m{i}")));
    }
    assert_eq!(got[5], Message::Binary(vec![9u8].into()));
    // Nothing is echoed: a short read must time out.
    assert_silent_for(&mut ws, Duration::from_millis(200));
    ws.close(Some(close_frame(4000, "custom"))).unwrap();
    let _ = ws.read();
    assert_eq!(
        server.wait_for_close(TIMEOUT),
        Some((4000, "custom".into()))
    );
    assert_eq!(server.close_frames(), vec![(4000, "custom".to_string())]);
    server.clear_log();
    assert!(server.received().is_empty());
}

#[test]
fn st_headers_path_and_subprotocol() {
    let _g = serial();
    let server = WsServer::builder()
        .subprotocol("chat.v2")
        .response_header("x-server", "toolkit")
        .echo();
    let mut req = format!("{}room/7?token=abc", server.url())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-custom", "forty-two".parse().unwrap());
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v1, chat.v2".parse().unwrap(),
    );
    let (mut ws, resp) = tungstenite::connect(req).unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "chat.v2"
    );
    assert_eq!(resp.headers().get("x-server").unwrap(), "toolkit");
    assert!(server.wait_for_handshakes(1, TIMEOUT));
    let r = server.last_request().unwrap();
    assert_eq!(r.path, "/room/7?token=abc");
    assert_eq!(r.header("X-Custom"), Some("forty-two"));
    assert_eq!(r.offered_subprotocols(), vec!["chat.v1", "chat.v2"]);
    assert_eq!(server.requests().len(), 1);
    ws.send(text("x")).unwrap();
    assert_eq!(next_msg(&mut ws), text("x"));

    // Not offered -> no subprotocol in the answer.
    let (_ws2, resp2) = tungstenite::connect(server.url()).unwrap();
    assert!(resp2.headers().get("sec-websocket-protocol").is_none());
}

#[test]
fn st_custom_handler_send_all_and_close_all() {
    let _g = serial();
    let server = WsServer::start(|mut conn| {
        let greeting = format!("hi {}", conn.path());
        if !conn.send_text(&greeting) {
            return;
        }
        while conn.read().is_some() {}
    });
    let mut ws = ws_client(&format!("{}greet", server.url()));
    assert_eq!(next_msg(&mut ws), text("hi /greet"));
    assert!(server.wait_for_handshakes(1, TIMEOUT));
    assert_eq!(server.send_all(text("pushed")), 1);
    assert_eq!(next_msg(&mut ws), text("pushed"));
    assert_eq!(server.close_all(4001, "go away"), 1);
    match next_msg(&mut ws) {
        Message::Close(Some(cf)) => {
            assert_eq!(u16::from(cf.code), 4001);
            assert_eq!(cf.reason.as_str(), "go away");
        }
        other => panic!("expected close, got {other:?}"),
    }
    // tungstenite replied to the close; the server records the reply.
    let _ = ws.flush();
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(4001));
    assert!(server.wait_for_live(0, TIMEOUT));
}

#[test]
fn st_drop_all_kills_connections() {
    let _g = serial();
    let server = WsServer::echo();
    let mut a = ws_client(&server.url());
    let mut b = ws_client(&server.url());
    assert!(server.wait_for_handshakes(2, TIMEOUT));
    assert_eq!(server.live(), 2);
    server.drop_all();
    for ws in [&mut a, &mut b] {
        match ws.read() {
            Err(tungstenite::Error::Protocol(_))
            | Err(tungstenite::Error::Io(_))
            | Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("expected dead connection, got {other:?}"),
        }
    }
    assert!(server.wait_for_live(0, TIMEOUT));
    // The server still accepts new connections.
    let mut c = ws_client(&server.url());
    c.send(text("again")).unwrap();
    assert_eq!(next_msg(&mut c), text("again"));
}

#[test]
fn st_tls_trusted_and_untrusted() {
    let _g = serial();
    let server = TlsWsServer::echo();
    assert!(server.url().starts_with("wss://localhost:"));
    assert!(server.is_tls());
    let ca = server.ca_cert_pem();
    assert!(String::from_utf8_lossy(&ca).contains("BEGIN CERTIFICATE"));

    // A stalled client (TCP only, no TLS hello) must not block accepting others.
    let stalled = TcpStream::connect(server.addr()).unwrap();
    assert!(server.wait_for_connections(1, TIMEOUT));

    for url in [server.url(), server.ip_url()] {
        let mut ws = tls_client(&url, Some(&ca)).expect("trusted TLS connect");
        ws.send(text("secure")).unwrap();
        assert_eq!(next_msg(&mut ws), text("secure"));
    }
    // Through the fault proxy (TLS is end-to-end; the proxy only moves bytes).
    let proxy = FaultProxy::start(server.addr());
    let mut ws = tls_client(&proxy.wss_url(), Some(&ca)).expect("TLS via proxy");
    ws.send(text("proxied")).unwrap();
    assert_eq!(next_msg(&mut ws), text("proxied"));
    drop(ws);
    drop(proxy);

    // Without the CA the certificate is untrusted.
    let err = tls_client(&server.url(), None).expect_err("must be untrusted");
    assert!(err.contains("tls handshake"), "{err}");

    // A self-signed server is rejected even when the client trusts the (other) CA.
    let bad = TlsWsServer::untrusted_echo();
    let err = tls_client(&bad.url(), Some(&bad.ca_cert_pem())).expect_err("untrusted");
    assert!(err.contains("tls handshake"), "{err}");
    // ...but accepted when its own certificate is trusted directly.
    let mut ok = tls_client(&bad.url(), Some(&bad.server_cert().cert_pem)).expect("pinned");
    ok.send(text("pinned")).unwrap();
    assert_eq!(next_msg(&mut ok), text("pinned"));

    // Builder path with subprotocol over TLS.
    let sp = TlsWsServer::build(|b| b.subprotocol("p1").recording());
    let mut req = sp.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "p1".parse().unwrap());
    let mut ws = tls_client_req(req, &sp.ca_cert_pem());
    ws.send(text("rec")).unwrap();
    assert_eq!(sp.wait_for_messages(1, TIMEOUT), vec![text("rec")]);
    drop(stalled);
}

/// TLS client with a prepared request (used to send a subprotocol header).
fn tls_client_req(
    req: tungstenite::handshake::client::Request,
    ca: &[u8],
) -> WebSocket<native_tls::TlsStream<TcpStream>> {
    let port = req.uri().port_u16().unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut b = native_tls::TlsConnector::builder();
    b.add_root_certificate(native_tls::Certificate::from_pem(ca).unwrap());
    let tls = b.build().unwrap().connect("localhost", tcp).unwrap();
    let (ws, resp) = tungstenite::client(req, tls).unwrap();
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "p1");
    ws
}

#[test]
fn st_http_responder_status_raw_and_silent() {
    let _g = serial();
    let r401 = HttpResponder::status(401);
    match tungstenite::connect(r401.url()) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected HTTP 401, got {:?}", other.map(|_| ())),
    }
    assert!(r401.wait_for_connections(1, TIMEOUT));
    let reqs = r401.wait_for_requests(1, TIMEOUT);
    assert!(reqs[0].starts_with("GET / HTTP/1.1\r\n"), "{}", reqs[0]);
    assert!(reqs[0].to_ascii_lowercase().contains("upgrade: websocket"));

    let custom = HttpResponder::response(429, &[("Retry-After", "3")], b"slow down");
    let mut s = TcpStream::connect(custom.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{out}"
    );
    assert!(out.contains("Retry-After: 3\r\n"));
    assert!(out.ends_with("\r\n\r\nslow down"));

    let raw = HttpResponder::raw(&b"garbage\r\n\r\n"[..]);
    let mut s = TcpStream::connect(raw.addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"garbage\r\n\r\n");

    let silent = HttpResponder::silent();
    let mut s = TcpStream::connect(silent.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(silent.wait_for_requests(1, TIMEOUT).len(), 1);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("silent server must not answer");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(silent.live(), 1);
    // Dropping the responder (with the client still connected) must not hang.
}

#[test]
fn st_raw_server_scripts_bytes() {
    let _g = serial();
    let server = RawServer::start(|mut s| {
        let _ = s.write_all(b"\x81\x05hel");
        let _ = s.shutdown(Shutdown::Both);
    });
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"\x81\x05hel");
    assert!(server.wait_for_connections(1, TIMEOUT));
    assert!(server.wait_for_live(0, TIMEOUT));

    // A handler that blocks on its socket is unblocked by drop.
    let blocking = RawServer::start(|mut s| {
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let _c = TcpStream::connect(blocking.addr()).unwrap();
    assert!(blocking.wait_for_live(1, TIMEOUT));
    drop(blocking);
}

#[test]
fn st_fault_proxy_forward_reset_refuse() {
    let _g = serial();
    let upstream = WsServer::echo();
    let proxy = FaultProxy::start(upstream.addr());
    assert!(proxy.url().starts_with("ws://127.0.0.1:"));
    let mut ws = ws_client(&proxy.url());
    ws.send(text("via proxy")).unwrap();
    assert_eq!(next_msg(&mut ws), text("via proxy"));
    assert!(proxy.wait_for_connections(1, TIMEOUT));
    assert_eq!(proxy.live(), 1);
    assert_eq!(proxy.proxied(), 1);

    proxy.reset_all();
    match ws.read() {
        Err(tungstenite::Error::Protocol(_))
        | Err(tungstenite::Error::Io(_))
        | Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected dead connection, got {other:?}"),
    }
    assert!(proxy.wait_for_live(0, TIMEOUT));
    assert!(upstream.wait_for_live(0, TIMEOUT));

    // Reconnect works after a reset.
    let mut ws = ws_client(&proxy.url());
    ws.send(text("again")).unwrap();
    assert_eq!(next_msg(&mut ws), text("again"));
    drop(ws);

    proxy.set_refuse(true);
    assert!(tungstenite::connect(proxy.url()).is_err());
    assert_eq!(proxy.refused(), 1);
    assert_eq!(
        upstream.connections(),
        2,
        "refused connection reached upstream"
    );
    proxy.set_refuse(false);
    let mut ws = ws_client(&proxy.url());
    ws.send(text("open again")).unwrap();
    assert_eq!(next_msg(&mut ws), text("open again"));
    assert_eq!(proxy.connections(), 4);
}

#[test]
fn st_fault_proxy_black_hole_and_delay() {
    let _g = serial();
    let upstream = WsServer::echo();
    let proxy = FaultProxy::start(upstream.addr());
    let mut ws = ws_client(&proxy.url());
    ws.send(text("before")).unwrap();
    assert_eq!(next_msg(&mut ws), text("before"));

    proxy.set_black_hole(true);
    ws.send(text("lost")).unwrap();
    assert_silent_for(&mut ws, Duration::from_millis(300));
    assert_eq!(upstream.texts(), vec!["before".to_string()]);
    assert_eq!(proxy.live(), 1, "black hole must keep the socket open");
    proxy.set_black_hole(false);
    drop(ws);

    proxy.set_delay(Duration::from_millis(150));
    let mut ws = ws_client(&proxy.url());
    let start = Instant::now();
    ws.send(text("slow")).unwrap();
    assert_eq!(next_msg(&mut ws), text("slow"));
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    proxy.set_delay(Duration::ZERO);
    // Drop with a connection open while a delay was configured: must not hang.
}

#[test]
fn st_blackhole_addr_connect_hangs() {
    let _g = serial();
    let hole = blackhole_addr();
    assert!(hole.fillers() > 0);
    assert!(hole.url().starts_with("ws://127.0.0.1:"));
    for _ in 0..2 {
        let start = Instant::now();
        let err = TcpStream::connect_timeout(&hole.addr(), Duration::from_millis(500))
            .expect_err("connect must hang");
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(450));
    }
}

#[test]
fn st_process_helpers() {
    let _g = serial();
    assert!(thread_count() >= 1);
    assert!(open_fds() >= 3);
    assert!(rss_bytes() > 1024 * 1024);
    assert!(!thread_names().is_empty());
    assert!(wait_until(Duration::from_millis(50), || true));
    let start = Instant::now();
    assert!(!wait_until(Duration::from_millis(60), || false));
    assert!(start.elapsed() >= Duration::from_millis(60));
    let mut n = 0;
    assert!(wait_until(TIMEOUT, || {
        n += 1;
        n >= 5
    }));
}

#[test]
fn st_everything_shuts_down_to_baseline() {
    let _g = serial();
    assert!(
        wait_until(TIMEOUT, || foreign_threads().is_empty()),
        "stray threads before the test: {:?}",
        foreign_threads()
    );
    let fds = open_fds();

    {
        let echo = WsServer::echo();
        let tls = TlsWsServer::echo();
        let http = HttpResponder::silent();
        let raw = RawServer::start(|mut s| {
            let mut buf = [0u8; 64];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        });
        let proxy = FaultProxy::start(echo.addr());
        proxy.set_delay(Duration::from_secs(30));
        let hole = blackhole_addr();

        // Live clients of every kind, plus stalled raw TCP connections.
        let mut ws = ws_client(&echo.url());
        ws.send(text("x")).unwrap();
        assert_eq!(next_msg(&mut ws), text("x"));
        let mut tws = tls_client(&tls.url(), Some(&tls.ca_cert_pem())).unwrap();
        tws.send(text("y")).unwrap();
        assert_eq!(next_msg(&mut tws), text("y"));
        let stalled: Vec<TcpStream> = [echo.addr(), tls.addr(), http.addr(), raw.addr()]
            .iter()
            .map(|a| TcpStream::connect(a).unwrap())
            .collect();
        let mut pws = TcpStream::connect(proxy.addr()).unwrap();
        pws.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // stuck in the 30 s delay
        assert!(echo.wait_for_connections(2, TIMEOUT));
        assert!(tls.wait_for_connections(2, TIMEOUT));
        assert!(http.wait_for_connections(1, TIMEOUT));
        assert!(raw.wait_for_connections(1, TIMEOUT));
        assert!(proxy.wait_for_connections(1, TIMEOUT));
        assert!(wait_until(TIMEOUT, || echo.connections() == 3));
        assert!(toolkit_thread_count() > 0);

        // Drop servers first (with clients still attached), then clients.
        let start = Instant::now();
        drop(proxy);
        drop(echo);
        drop(tls);
        drop(http);
        drop(raw);
        drop(hole);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "drop took {:?}",
            start.elapsed()
        );
        assert!(
            wait_until(TIMEOUT, || toolkit_thread_count() == 0),
            "{:?}",
            thread_names()
        );
        drop((ws, tws, stalled, pws));
    }

    assert!(
        wait_until(TIMEOUT, || foreign_threads().is_empty()),
        "threads left behind: {:?}",
        foreign_threads()
    );
    assert!(
        wait_until(TIMEOUT, || open_fds() <= fds),
        "fds: before {fds}, after {}",
        open_fds()
    );
}
