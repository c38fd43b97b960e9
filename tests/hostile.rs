//! Hostile servers: raw-TCP scripts that answer the upgrade request with garbage, with heads
//! that are wrong, oversized or never end, or that complete a valid handshake and then send
//! invalid frames (reserved bits and opcodes, masked frames, oversized or fragmented control
//! frames, messages over the size limits, invalid UTF-8, invalid close frames).
//!
//! Every case must end in a typed error ([`Error::Handshake`], [`Error::Http`],
//! [`Error::Protocol`], [`Error::MessageTooLarge`] or [`Error::Timeout`]) and, with
//! reconnection off, in [`State::Failed`]. Where a connection was open, the client must tell
//! the server why with the close code RFC 6455 asks for (1002 protocol error, 1007 invalid
//! data, 1009 too big), in a masked close frame. Messages that arrived before the bad frame
//! stay readable. Nothing may panic, and after each case a normal echo connection still works.
//!
//! The last tests replay inputs that the fuzz targets in `fuzz/` found mishandled.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::http::read_http_head;
use common::*;
use crossbeam_channel::Sender;
use jetsocket::{Error, Event, State, SyncWebSocket, Timeout};

/// The client's limits in the frame cases: small, so that oversized input is cheap to send.
const MAX_MESSAGE: usize = 1024;
const MAX_FRAME: usize = 512;

// ----- helpers --------------------------------------------------------------------------

/// A server frame (unmasked unless `mask` is given) with the first byte given in full:
/// FIN, RSV1-3 and the opcode.
fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

fn text(payload: &[u8]) -> Vec<u8> {
    frame(FIN | TEXT, None, payload)
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A frame the client sent, as the server read it.
#[derive(Debug)]
struct ClientFrame {
    opcode: u8,
    masked: bool,
    payload: Vec<u8>,
}

impl ClientFrame {
    fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Splits what the client sent into frames (a truncated last frame is left out).
fn parse_client_frames(mut buf: &[u8]) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    while buf.len() >= 2 {
        let (b0, b1) = (buf[0], buf[1]);
        let masked = b1 & 0x80 != 0;
        let (len, mut at) = match b1 & 0x7f {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => (
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        let key = if masked {
            if buf.len() < at + 4 {
                break;
            }
            at += 4;
            Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
        } else {
            None
        };
        let Ok(len) = usize::try_from(len) else { break };
        if buf.len() < at + len {
            break;
        }
        let payload = buf[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, b)| key.map_or(*b, |k| b ^ k[i % 4]))
            .collect();
        frames.push(ClientFrame {
            opcode: b0 & 0x0f,
            masked,
            payload,
        });
        buf = &buf[at + len..];
    }
    frames
}

/// Reads what the client sends until it closes the connection (or a generous timeout).
fn read_until_eof(tcp: &mut TcpStream) -> Vec<u8> {
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = tcp.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// Reads the upgrade request and answers it correctly.
fn accept_upgrade(tcp: &mut TcpStream) -> bool {
    let head = read_http_head(tcp);
    let head = String::from_utf8_lossy(&head);
    let Some(key) = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    }) else {
        return false;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(response.as_bytes()).is_ok()
}

/// The key the client sent in an upgrade request head.
fn request_key(head: &[u8]) -> String {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A plain echo connection still works: the process is healthy after a hostile case.
fn echo_still_works(case: &str) {
    let server = WsServer::echo();
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .connect()
        .unwrap_or_else(|e| panic!("{case}: a normal connection failed afterwards: {e}"));
    ws.send_text("still alive").expect("send");
    let got = ws.recv_timeout(TIMEOUT).expect("echo after a hostile case");
    assert_eq!(got.as_text(), Some("still alive"), "{case}");
    ws.close().expect("close");
}

/// No event reports a panic of the I/O thread or of anything else.
fn assert_no_panic_events(case: &str, events: &crossbeam_channel::Receiver<Event>) {
    for event in events.try_iter() {
        if let Event::Error(e) = &event {
            assert!(
                !matches!(e, Error::WorkerPanicked(_)) && !e.to_string().contains("panicked"),
                "{case}: {e:?}"
            );
        }
    }
}

// ----- handshake cases ------------------------------------------------------------------

/// What a hostile server does after reading the upgrade request.
type Script = dyn Fn(&mut TcpStream, &[u8]) + Send + Sync;

/// Connects (reconnection off) to a raw server running `script`, expects `check` to accept
/// the error, and the state to be Failed.
fn handshake_case(
    case: &str,
    connect_timeout: Duration,
    script: impl Fn(&mut TcpStream, &[u8]) + Send + Sync + 'static,
    check: impl Fn(&Error) -> bool,
) {
    let script: Box<Script> = Box::new(script);
    let server = RawServer::start(move |mut tcp| {
        let head = read_http_head(&mut tcp);
        script(&mut tcp, &head);
    });
    let ws = SyncWebSocket::builder(server.url())
        .reconnect(false)
        .heartbeat(None)
        .connect_timeout(connect_timeout)
        .build()
        .expect("build");
    let events = ws.events();
    let handle = ws.clone();
    let result = within(
        connect_timeout + Duration::from_secs(30),
        &format!("{case}: connect"),
        move || handle.connect(),
    );
    let err = match result {
        Ok(()) => panic!("{case}: the handshake was accepted"),
        Err(e) => e,
    };
    assert!(check(&err), "{case}: unexpected error {err:?}");
    // The state is final by the time connect() returns (see
    // `connect_returns_after_the_state_is_final` for that race); here, wait for it.
    assert!(
        wait_until(TIMEOUT, || ws.state() == State::Failed),
        "{case}: state {} after {err}",
        ws.state()
    );
    assert!(ws.is_closed(), "{case}");
    // The failure is final: recv reports it too, and nothing is retried.
    match ws.try_recv() {
        Err(e) => assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&err),
            "{case}: recv reports {e:?}, connect reported {err:?}"
        ),
        Ok(other) => panic!("{case}: recv after the failure gave {other:?}"),
    }
    assert_eq!(
        server.connections(),
        1,
        "{case}: retried despite reconnect(false)"
    );
    ws.close().expect("closing a failed handle");
    assert_no_panic_events(case, &events);
    drop(ws);
    drop(server);
    echo_still_works(case);
}

fn is_handshake(e: &Error) -> bool {
    matches!(e, Error::Handshake(_))
}

/// Writes `bytes`, then waits for the client to go away.
fn answer(bytes: &'static [u8]) -> impl Fn(&mut TcpStream, &[u8]) + Send + Sync + 'static {
    move |tcp, _head| {
        if tcp.write_all(bytes).is_ok() {
            read_until_eof(tcp);
        }
    }
}

/// Answers `101` with the header lines `headers` and the right `Sec-WebSocket-Accept`, then
/// waits for the client to go away.
fn answer_101_with(
    headers: &'static str,
) -> impl Fn(&mut TcpStream, &[u8]) + Send + Sync + 'static {
    move |tcp, head| {
        let accept = tungstenite::handshake::derive_accept_key(request_key(head).as_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\n{headers}Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let _ = tcp.write_all(response.as_bytes());
        read_until_eof(tcp);
    }
}

#[test]
fn garbage_instead_of_an_http_response() {
    let cases: [(&str, &'static [u8]); 4] = [
        ("binary garbage", b"\x00\x01\x02garbage\xff\xfe\r\n\r\n"),
        ("another protocol", b"SSH-2.0-OpenSSH_9.6\r\n"),
        ("no status code", b"HTTP/1.1 abc Switching\r\n\r\n"),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ];
    for (case, bytes) in cases {
        handshake_case(case, TIMEOUT, answer(bytes), is_handshake);
    }
    // The server closes without answering at all.
    handshake_case(
        "closed without an answer",
        TIMEOUT,
        |_tcp, _head| {},
        is_handshake,
    );
}

#[test]
fn response_without_upgrade_or_with_a_wrong_accept_key() {
    handshake_case(
        "101 without Upgrade",
        TIMEOUT,
        answer_101_with("Connection: Upgrade\r\n"),
        |e| matches!(e, Error::Handshake(m) if m.contains("Upgrade")),
    );
    handshake_case(
        "101 without Connection: Upgrade",
        TIMEOUT,
        answer_101_with("Upgrade: websocket\r\n"),
        |e| matches!(e, Error::Handshake(m) if m.contains("Connection")),
    );
    handshake_case(
        "wrong Sec-WebSocket-Accept",
        TIMEOUT,
        answer(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        ),
        |e| matches!(e, Error::Handshake(m) if m.contains("Accept")),
    );
    handshake_case(
        "accept key of another request",
        TIMEOUT,
        |tcp, head| {
            let mut key = request_key(head);
            key.push('x');
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let _ = tcp.write_all(response.as_bytes());
            read_until_eof(tcp);
        },
        |e| matches!(e, Error::Handshake(m) if m.contains("Accept")),
    );
    handshake_case(
        "missing Sec-WebSocket-Accept",
        TIMEOUT,
        answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        |e| matches!(e, Error::Handshake(m) if m.contains("Accept")),
    );
    handshake_case(
        "200 OK instead of 101",
        TIMEOUT,
        answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        |e| matches!(e, Error::Http { status: 200, body } if body == "hello"),
    );
}

/// Writes `chunk` until the client goes away (a write fails).
fn write_forever(tcp: &mut TcpStream, start: &[u8], chunk: &[u8]) {
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(60)));
    if tcp.write_all(start).is_err() {
        return;
    }
    while tcp.write_all(chunk).is_ok() {}
}

#[test]
fn response_heads_that_never_end() {
    // Headers forever: rejected by the header count limit long before the size limit.
    handshake_case(
        "headers forever",
        TIMEOUT,
        |tcp, _head| {
            let chunk: String = (0..256)
                .map(|i| format!("X-Filler-{i}: aaaa\r\n"))
                .collect();
            write_forever(
                tcp,
                b"HTTP/1.1 101 Switching Protocols\r\n",
                chunk.as_bytes(),
            );
        },
        is_handshake,
    );
    // One header line that never ends: rejected once the head passes 64 KiB.
    handshake_case(
        "one endless header line",
        TIMEOUT,
        |tcp, _head| {
            write_forever(
                tcp,
                b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ",
                &[b'a'; 8192],
            )
        },
        |e| matches!(e, Error::Handshake(m) if m.contains("larger than")),
    );
    // Empty lines forever (HTTP parsers skip empty lines before the status line).
    handshake_case(
        "empty lines forever",
        TIMEOUT,
        |tcp, _head| write_forever(tcp, b"", &b"\r\n".repeat(4096)),
        |e| matches!(e, Error::Handshake(m) if m.contains("larger than")),
    );
    // An endless status line.
    handshake_case(
        "endless status line",
        TIMEOUT,
        |tcp, _head| write_forever(tcp, b"HTTP/1.1 101 ", &[b'x'; 8192]),
        |e| matches!(e, Error::Handshake(m) if m.contains("larger than")),
    );
    // A head that stops before its blank line and then stays silent: connect_timeout ends it.
    handshake_case(
        "head without its blank line, then silence",
        Duration::from_millis(500),
        |tcp, _head| {
            let _ = tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
            read_until_eof(tcp);
        },
        |e| matches!(e, Error::Timeout(Timeout::Connect)),
    );
    // Nothing at all.
    handshake_case(
        "silence",
        Duration::from_millis(500),
        |tcp, _head| {
            read_until_eof(tcp);
        },
        |e| matches!(e, Error::Timeout(Timeout::Connect)),
    );
}

// ----- frame cases ----------------------------------------------------------------------

/// What the client is expected to report and send back.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Protocol,
    TooLarge,
}

/// Completes a valid handshake, sends a text message "before" and then `hostile`, and checks
/// that the client delivers "before", then fails with the expected error in state Failed,
/// after sending a masked close frame with `close_code`.
fn frame_case(case: &str, hostile: Vec<u8>, expect: Expect, close_code: u16) {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<ClientFrame>>(1);
    let tx: Sender<Vec<ClientFrame>> = tx;
    let server = RawServer::start(move |mut tcp| {
        if !accept_upgrade(&mut tcp) {
            return;
        }
        let mut bytes = text(b"before");
        bytes.extend_from_slice(&hostile);
        if tcp.write_all(&bytes).is_err() {
            return;
        }
        let reply = read_until_eof(&mut tcp);
        let _ = tx.send(parse_client_frames(&reply));
    });
    let ws = SyncWebSocket::builder(server.url())
        .reconnect(false)
        .heartbeat(None)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_FRAME)
        .build()
        .expect("build");
    let events = ws.events();
    let err = connect_then_error_after_before(&ws, case);
    let variant_ok = match expect {
        Expect::Protocol => matches!(err, Error::Protocol(_)),
        Expect::TooLarge => matches!(err, Error::MessageTooLarge(_)),
    };
    assert!(variant_ok, "{case}: expected {expect:?}, got {err:?}");
    assert_eq!(ws.state(), State::Failed, "{case}: state after {err}");

    let frames = rx
        .recv_timeout(TIMEOUT * 2)
        .unwrap_or_else(|_| panic!("{case}: the server never saw the client leave"));
    assert!(
        frames.iter().all(|f| f.masked),
        "{case}: the client sent an unmasked frame: {frames:?}"
    );
    let codes: Vec<u16> = frames.iter().filter_map(ClientFrame::close_code).collect();
    assert_eq!(
        codes,
        [close_code],
        "{case}: close codes sent by the client (frames {frames:?})"
    );
    ws.close().expect("closing a failed handle");
    assert_no_panic_events(case, &events);
    drop(ws);
    drop(server);
    echo_still_works(case);
}

#[test]
fn reserved_bits_and_reserved_opcodes() {
    frame_case(
        "RSV1",
        frame(FIN | 0x40 | TEXT, None, b"x"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "RSV2",
        frame(FIN | 0x20 | TEXT, None, b"x"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "RSV3",
        frame(FIN | 0x10 | BINARY, None, b"x"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "RSV1 on a ping",
        frame(FIN | 0x40 | PING, None, b""),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "data opcode 0x3",
        frame(FIN | 0x3, None, b"x"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "data opcode 0x7",
        frame(FIN | 0x7, None, b""),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "control opcode 0xB",
        frame(FIN | 0xB, None, b""),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "control opcode 0xF",
        frame(FIN | 0xF, None, b"x"),
        Expect::Protocol,
        1002,
    );
}

#[test]
fn masked_and_malformed_control_frames() {
    frame_case(
        "masked frame from the server",
        frame(FIN | TEXT, Some([1, 2, 3, 4]), b"masked"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "ping with 126 bytes",
        frame(FIN | PING, None, &[b'p'; 126]),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "close with 200 bytes",
        frame(FIN | CLOSE, None, &close_payload(1000, &[b'r'; 198])),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "fragmented ping",
        [
            frame(PING, None, b"a"),
            frame(FIN | CONTINUATION, None, b"b"),
        ]
        .concat(),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "fragmented close",
        frame(CLOSE, None, &close_payload(1000, b"")),
        Expect::Protocol,
        1002,
    );
}

#[test]
fn broken_fragmentation() {
    frame_case(
        "continuation without a start",
        frame(FIN | CONTINUATION, None, b"x"),
        Expect::Protocol,
        1002,
    );
    frame_case(
        "new message inside a fragmented one",
        [frame(TEXT, None, b"a"), frame(FIN | TEXT, None, b"b")].concat(),
        Expect::Protocol,
        1002,
    );
}

#[test]
fn messages_and_frames_over_the_limits() {
    // One frame over max_frame_size (but under max_message_size).
    frame_case(
        "frame over max_frame_size",
        frame(FIN | BINARY, None, &[0u8; MAX_FRAME + 1]),
        Expect::TooLarge,
        1009,
    );
    // One frame over both limits.
    frame_case(
        "frame over max_message_size",
        frame(FIN | TEXT, None, &[b'a'; 2 * MAX_MESSAGE]),
        Expect::TooLarge,
        1009,
    );
    // Frames within the frame limit that add up to more than max_message_size.
    let part = [b'a'; MAX_FRAME];
    frame_case(
        "fragments adding up past max_message_size",
        [
            frame(TEXT, None, &part),
            frame(CONTINUATION, None, &part),
            frame(FIN | CONTINUATION, None, &part),
        ]
        .concat(),
        Expect::TooLarge,
        1009,
    );
    // A header announcing an absurd length: rejected before anything is allocated.
    let mut huge = vec![FIN | BINARY, 127];
    huge.extend_from_slice(&0x7fff_ffff_ffff_ffffu64.to_be_bytes());
    frame_case("length 2^63 - 1", huge, Expect::TooLarge, 1009);
}

#[test]
fn invalid_utf8() {
    frame_case(
        "invalid UTF-8 text",
        text(b"ok \xff\xfe"),
        Expect::Protocol,
        1007,
    );
    frame_case(
        "overlong encoding",
        text(b"\xc0\xaf"),
        Expect::Protocol,
        1007,
    );
    frame_case(
        "surrogate half",
        text(b"\xed\xa0\x80"),
        Expect::Protocol,
        1007,
    );
    frame_case(
        "truncated sequence at the end",
        text("grüß".as_bytes().split_last().expect("non-empty").1),
        Expect::Protocol,
        1007,
    );
    frame_case(
        "invalid UTF-8 across fragments",
        [
            frame(TEXT, None, b"ok \xe2\x82"),
            frame(FIN | CONTINUATION, None, b"\x28"),
        ]
        .concat(),
        Expect::Protocol,
        1007,
    );
    frame_case(
        "invalid UTF-8 in a close reason",
        frame(FIN | CLOSE, None, &close_payload(1000, b"\xff")),
        Expect::Protocol,
        1007,
    );
}

#[test]
fn close_frames_with_invalid_codes() {
    for code in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        frame_case(
            &format!("close code {code}"),
            frame(FIN | CLOSE, None, &close_payload(code, b"")),
            Expect::Protocol,
            1002,
        );
    }
    frame_case(
        "close frame with a 1-byte payload",
        frame(FIN | CLOSE, None, &[0x03]),
        Expect::Protocol,
        1002,
    );
}

/// `connect()` reports a failed attempt only once the state says how it ended: with
/// reconnection off, [`State::Failed`] is already visible when the error is returned.
#[test]
fn connect_returns_after_the_state_is_final() {
    let server = HttpResponder::raw(&b"SSH-2.0-OpenSSH_9.6\r\n"[..]);
    let mut early = Vec::new();
    for attempt in 0..500 {
        let ws = SyncWebSocket::builder(server.url())
            .reconnect(false)
            .heartbeat(None)
            .build()
            .expect("build");
        let err = ws.connect().expect_err("garbage was accepted");
        assert!(matches!(err, Error::Handshake(_)), "{err:?}");
        let state = ws.state();
        if state != State::Failed {
            early.push((attempt, state));
        }
        assert!(wait_until(TIMEOUT, || ws.state() == State::Failed));
    }
    assert!(
        early.is_empty(),
        "connect() returned its error before the state was final: (attempt, state) {early:?}"
    );
}

// ----- inputs found by fuzzing ----------------------------------------------------------

/// A URL whose host holds a colon outside IPv6 brackets is not a valid URL (found by the
/// `url` fuzz target: `ws://host:0:443/` was taken as host `host:0`, port 443, which skipped
/// the host character check and produced a `Host` header that does not parse).
#[test]
fn url_with_a_colon_in_an_unbracketed_host_is_rejected() {
    for url in [
        "ws://host:0:443/",
        "ws://evil.example:80:443/",
        "ws://ho%st:1:2/",
        "wss://a]:b:1/",
    ] {
        match SyncWebSocket::builder(url).build() {
            Err(Error::InvalidUrl { .. }) => {}
            Err(other) => panic!("{url}: expected InvalidUrl, got {other:?}"),
            Ok(ws) => panic!("{url}: accepted as {:?}", ws.url()),
        }
    }
}

/// An application-level JSON pong is recognised however the server encodes the value (found by
/// the `json` fuzz target: the pong matcher's quick text search missed values written with
/// JSON escapes, such as `"\u0070ong"` for `"pong"`, and empty values).
#[cfg(feature = "json")]
#[test]
fn json_pong_written_with_escapes_is_recognised() {
    use jetsocket::HeartbeatConfig;

    fn pong_seen(reply: &'static str, value: &str) -> bool {
        let server = WsServer::start(move |mut conn| {
            while let Some(msg) = conn.read() {
                if msg.is_text() && !conn.send_text(reply) {
                    break;
                }
            }
        });
        let heartbeat = HeartbeatConfig::new(Duration::from_millis(50), Duration::from_secs(60))
            .json(&serde_json::json!({"op": "ping"}), "op", value)
            .expect("heartbeat");
        let ws = SyncWebSocket::builder(server.url())
            .heartbeat(heartbeat)
            .build()
            .expect("build");
        let events = ws.events();
        ws.connect().expect("connect");
        let deadline = std::time::Instant::now() + TIMEOUT;
        let seen = loop {
            match events.recv_deadline(deadline) {
                Ok(Event::Pong { .. }) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        ws.close().expect("close");
        seen
    }

    // The plain spelling works (a control for the cases below).
    assert!(pong_seen(r#"{"op":"pong"}"#, "pong"), "plain pong missed");
    let mut missed = Vec::new();
    for (reply, value) in [
        (r#"{"op":"\u0070ong"}"#, "pong"),
        (r#"{"op":"po\u006eg"}"#, "pong"),
        (r#"{"op":""}"#, ""),
    ] {
        if !pong_seen(reply, value) {
            missed.push(reply);
        }
    }
    assert!(missed.is_empty(), "pongs not recognised: {missed:?}");
}
