//! Interoperability with WebSocket servers written by others: the Python `websockets`
//! library (`tests/interop/server.py`) and Node's `ws` package (`tests/interop/server.js`),
//! each run as a child process on 127.0.0.1.
//!
//! Every test runs once against each server: echo of text and binary messages from 0 B to
//! 16 MiB, a fragmented message, a server ping, close codes and reasons, subprotocol
//! negotiation, extra handshake headers, TLS with a CA made at test time, and reconnecting
//! after the server process dies and comes back on the same port.
//!
//! permessage-deflate runs against each server in four modes (see [`Compression`]): echo of
//! compressible and incompressible messages around the compression threshold and up to
//! 16 MiB (1 MiB with compression off), the compression stats, context takeover as seen in the wire sizes, the
//! client asking for no context takeover, the client declining compression, and a fresh
//! negotiation after the server restarts. The other tests run with each server's own
//! default: compression on for `websockets` (12-bit windows), off for `ws`.
//!
//! The servers need `.ci/install-interop` (a `.venv` with `websockets`, and `npm ci` in
//! `tests/interop`). A missing interpreter or package fails the test with that hint; set
//! `JETSOCKET_SKIP_INTEROP=1` to skip these tests instead.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use jetsocket::{
    BackoffConfig, CloseCode, CloseFrame, Error, Event, Message, State, SyncWebSocket,
};

/// How long to wait for anything in these tests (generous: debug builds, 2 cores, 16 MiB).
const WAIT: Duration = Duration::from_secs(30);

/// Protocols every server is started with, in the server's order of preference. The
/// servers pick the first one the *client* offers that is in this list.
const SERVER_SUBPROTOCOLS: &[&str] = &["v2.chat", "v1.chat"];

const INSTALL_HINT: &str = "run `.ci/install-interop` from the repository root \
     (or set JETSOCKET_SKIP_INTEROP=1 to skip the interop tests)";

/// Which third-party server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    /// Python `websockets` (asyncio).
    Python,
    /// Node `ws`.
    Node,
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn interop_dir() -> PathBuf {
    repo_root().join("tests").join("interop")
}

/// Whether the interop tests are switched off (`JETSOCKET_SKIP_INTEROP=1`); prints a note.
fn skipped() -> bool {
    let skip = std::env::var("JETSOCKET_SKIP_INTEROP").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("note: JETSOCKET_SKIP_INTEROP=1, skipping this interop test");
    }
    skip
}

impl Impl {
    /// The interpreter and script that run this server.
    fn command(self) -> Command {
        match self {
            Impl::Python => {
                let venv = repo_root().join(".venv").join("bin").join("python");
                let python = if venv.exists() {
                    venv.into_os_string()
                } else {
                    "python3".into()
                };
                let mut cmd = Command::new(python);
                cmd.arg(interop_dir().join("server.py"));
                cmd
            }
            Impl::Node => {
                let ws = interop_dir()
                    .join("node_modules")
                    .join("ws")
                    .join("package.json");
                assert!(
                    ws.exists(),
                    "the Node `ws` package is not installed (no {}): {INSTALL_HINT}",
                    ws.display()
                );
                let mut cmd = Command::new("node");
                cmd.arg(interop_dir().join("server.js"));
                cmd
            }
        }
    }
}

/// A permessage-deflate mode of the servers (`--compression`, documented in both scripts).
// Without the `deflate` feature only the modes that need no compression are tested.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    /// Declined.
    Off,
    /// Plain `permessage-deflate`: context takeover both ways, 32 KiB windows.
    Default,
    /// `server_no_context_takeover; client_no_context_takeover`.
    NoContextTakeover,
    /// `server_max_window_bits=10; client_max_window_bits=9`.
    SmallWindow,
}

impl Compression {
    fn arg(self) -> &'static str {
        match self {
            Compression::Off => "off",
            Compression::Default => "default",
            Compression::NoContextTakeover => "no-context-takeover",
            Compression::SmallWindow => "small-window",
        }
    }

    /// The server's `Sec-WebSocket-Extensions` answer to our default offer, as sorted
    /// parameters (see [`extension_params`]).
    fn answer(self) -> Vec<&'static str> {
        let mut params = match self {
            Compression::Off => vec![],
            Compression::Default => vec!["permessage-deflate"],
            Compression::NoContextTakeover => vec![
                "permessage-deflate",
                "server_no_context_takeover",
                "client_no_context_takeover",
            ],
            Compression::SmallWindow => vec![
                "permessage-deflate",
                "server_max_window_bits=10",
                "client_max_window_bits=9",
            ],
        };
        params.sort_unstable();
        params
    }
}

/// Options for starting a server.
#[derive(Debug, Default, Clone)]
struct Opts {
    /// A fixed port (for restarts); 0 picks a free one.
    port: u16,
    /// TLS certificate and key files.
    tls: Option<(PathBuf, PathBuf)>,
    /// The compression mode; `None` leaves the library's default.
    compression: Option<Compression>,
}

impl Opts {
    fn compression(mode: Compression) -> Opts {
        Opts {
            compression: Some(mode),
            ..Opts::default()
        }
    }
}

/// A running third-party server; killed and reaped on drop.
struct Server {
    kind: Impl,
    child: Child,
    /// Held open: the server exits by itself once this is closed.
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    port: u16,
    tls: bool,
    /// Whether stderr was already shown in a failure message.
    reported: bool,
}

impl Server {
    fn start(kind: Impl, opts: &Opts) -> Server {
        let mut cmd = kind.command();
        cmd.arg("--port").arg(opts.port.to_string());
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        for p in SERVER_SUBPROTOCOLS {
            cmd.arg("--subprotocol").arg(p);
        }
        if let Some(mode) = opts.compression {
            cmd.arg("--compression").arg(mode.arg());
        }
        cmd.current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start the {kind:?} interop server ({:?}): {e}; {INSTALL_HINT}",
                cmd.get_program()
            )
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");

        // Collect stderr for failure messages; drain stdout so the server never blocks.
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let (stderr_done_tx, stderr_done) = crossbeam_channel::bounded::<()>(0);
        std::thread::spawn(move || {
            let _done = stderr_done_tx; // disconnects at end of file
            let mut pipe = stderr_pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut s = sink.lock().unwrap_or_else(PoisonError::into_inner);
                if s.len() < 64 * 1024 {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let (line_tx, line_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            for _ in lines {}
        });

        let mut server = Server {
            kind,
            child,
            stdin,
            stderr,
            port: 0,
            tls: opts.tls.is_some(),
            reported: false,
        };
        let first = line_rx.recv_timeout(WAIT);
        let port = match &first {
            Ok(Some(Ok(line))) => line
                .strip_prefix("PORT ")
                .and_then(|p| p.trim().parse::<u16>().ok()),
            _ => None,
        };
        match port {
            Some(port) => server.port = port,
            None => {
                // Stop the child (if it still runs) and collect all it wrote to stderr.
                let _ = server.child.kill();
                let _ = server.child.wait();
                let _ = stderr_done.recv_timeout(Duration::from_secs(5));
                server.reported = true;
                panic!(
                    "the {kind:?} interop server did not report its port (first line {first:?}); \
                     {INSTALL_HINT}\n--- server stderr ---\n{}",
                    server.stderr_text()
                );
            }
        }
        server
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `ws://127.0.0.1:PORT/path` (`wss://localhost:PORT/path` with TLS).
    fn url(&self, path: &str) -> String {
        if self.tls {
            format!("wss://localhost:{}{path}", self.port)
        } else {
            format!("ws://127.0.0.1:{}{path}", self.port)
        }
    }

    /// Waits for the process to exit by itself (after `/exit`).
    fn wait_exit(mut self) {
        let child = &mut self.child;
        let exited = common::wait_until(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
        assert!(
            exited,
            "the {:?} server did not exit after /exit",
            self.kind
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- {:?} server stderr ---\n{}",
                self.kind,
                self.stderr_text()
            );
        }
    }
}

#[cfg(feature = "native-tls")]
/// A temporary directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

#[cfg(feature = "native-tls")]
impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};

        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "jetsocket-interop-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }
}

#[cfg(feature = "native-tls")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Text of exactly `len` bytes mixing 1- to 4-byte UTF-8 characters, so that frame and read
/// boundaries fall inside multi-byte characters.
fn text_of(len: usize) -> String {
    const CHARS: [char; 6] = ['a', 'é', '✓', '𝄞', ' ', 'Z'];
    let mut s = String::with_capacity(len);
    let mut i = 0usize;
    while s.len() < len {
        let c = CHARS[(i * 7 + i / 5) % CHARS.len()];
        if s.len() + c.len_utf8() > len {
            s.push('.');
        } else {
            s.push(c);
        }
        i += 1;
    }
    s
}

/// `len` pseudo-random bytes (xorshift), different for every length.
fn bytes_of(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The text the servers send on `/fragmented?size=N`.
fn alphabet_of(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// Asserts two payloads are equal without printing megabytes.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {} bytes, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

fn recv(ws: &SyncWebSocket, what: &str) -> Message {
    ws.recv_timeout(WAIT)
        .unwrap_or_else(|e| panic!("{what}: no message: {e} (state {:?})", ws.state()))
}

fn expect_text(ws: &SyncWebSocket, want: &str, what: &str) {
    let msg = recv(ws, what);
    let got = msg
        .as_text()
        .unwrap_or_else(|| panic!("{what}: expected text, got binary of {} bytes", msg.len()));
    assert_same(got.as_bytes(), want.as_bytes(), what);
}

fn echo_text(ws: &SyncWebSocket, text: &str) {
    ws.send_text(text).expect("send text");
    expect_text(ws, text, &format!("echo of {} bytes of text", text.len()));
}

/// Waits for the first event matching `pred`, panicking with what was seen on timeout.
fn wait_event(events: &Receiver<Event>, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match events.recv_deadline(deadline) {
            Ok(e) if pred(&e) => return e,
            Ok(e) => seen.push(e),
            Err(err) => panic!("waiting for {what}: {err}; events seen: {seen:#?}"),
        }
    }
}

const SIZES: [usize; 8] = [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20];

/// Every message of [`SIZES`] went out and came back.
fn assert_echo_stats(ws: &SyncWebSocket) {
    let stats = ws.stats();
    let total: usize = SIZES.iter().sum();
    assert_eq!(stats.messages_sent, SIZES.len() as u64, "{stats:?}");
    assert_eq!(stats.messages_received, SIZES.len() as u64, "{stats:?}");
    assert_eq!(stats.bytes_sent, total as u64, "{stats:?}");
    assert_eq!(stats.bytes_received, total as u64, "{stats:?}");
}

fn text_echo(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let ws = SyncWebSocket::connect_url(server.url("/echo")).expect("connect");
    for len in SIZES {
        echo_text(&ws, &text_of(len));
    }
    assert_echo_stats(&ws);
    ws.close().expect("close");
}

fn binary_echo(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let ws = SyncWebSocket::connect_url(server.url("/echo")).expect("connect");
    for len in SIZES {
        let data = bytes_of(len);
        ws.send_binary(data.clone()).expect("send binary");
        let what = format!("echo of {len} bytes of binary");
        let msg = recv(&ws, &what);
        assert!(msg.is_binary(), "{what}: expected binary, got {msg:?}");
        assert_same(msg.as_bytes(), &data, &what);
    }
    assert_echo_stats(&ws);
    ws.close().expect("close");
}

fn fragmented(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    for size in [1, 10, 100_003, (1 << 20) + 7] {
        let ws = SyncWebSocket::connect_url(server.url(&format!("/fragmented?size={size}")))
            .expect("connect");
        expect_text(
            &ws,
            &alphabet_of(size),
            &format!("fragmented message of {size} bytes"),
        );
        echo_text(&ws, "after the fragments");
        ws.close().expect("close");
    }
}

fn server_ping(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let ws = SyncWebSocket::connect_url(server.url("/ping")).expect("connect");
    expect_text(
        &ws,
        "pong-received",
        "the server's report that our pong arrived",
    );
    echo_text(&ws, "after the ping");
    ws.close().expect("close");
}

fn close_codes(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    for code in [1000u16, 1001, 1008, 4000] {
        let reason = format!("bye {code}");
        let want = CloseFrame::new(code, reason.clone());
        let url = server.url(&format!("/close?code={code}&reason=bye%20{code}"));
        let fatal = CloseCode::from(code).is_fatal();
        // 1008 must end the connection even with reconnection on.
        let ws = SyncWebSocket::builder(&url)
            .reconnect(fatal)
            .build()
            .expect("build");
        let events = ws.events();
        // The server closes right after the handshake; connect() may see either.
        match ws.connect() {
            Ok(()) => {}
            Err(Error::ConnectionClosed(Some(f))) => assert_eq!(f, want),
            Err(e) if fatal && e.is_fatal() => {}
            Err(e) => panic!("close {code}: connect failed: {e:?}"),
        }
        let what = format!("close {code}");
        let disconnected = wait_event(&events, &what, |e| matches!(e, Event::Disconnected { .. }));
        let Event::Disconnected { close, error } = disconnected else {
            unreachable!()
        };
        assert_eq!(close.as_ref(), Some(&want), "{what}: Disconnected.close");
        assert!(error.is_none(), "{what}: Disconnected.error {error:?}");
        let closed = wait_event(&events, &what, |e| matches!(e, Event::Closed { .. }));
        let Event::Closed { close } = closed else {
            unreachable!()
        };
        assert_eq!(close.as_ref(), Some(&want), "{what}: Closed.close");

        let err = ws
            .recv_timeout(WAIT)
            .expect_err("no message was sent, so recv reports the ending");
        if fatal {
            assert_eq!(ws.state(), State::Failed, "{what}");
            assert!(err.is_fatal(), "{what}: {err:?} should be fatal");
        } else {
            assert_eq!(ws.state(), State::Closed, "{what}");
            assert!(!err.is_fatal(), "{what}: {err:?} should not be fatal");
            match err {
                Error::ConnectionClosed(Some(f)) => assert_eq!(f, want, "{what}"),
                other => panic!("{what}: recv returned {other:?}"),
            }
        }
        ws.close().expect("close");
    }
}

fn subprotocols(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["v0.unknown", "v1.chat", "v2.chat"], Some("v1.chat")),
        (&["v2.chat"], Some("v2.chat")),
        (&[], None),
        (&["nope"], None),
    ];
    for (offer, want) in cases {
        let mut builder = SyncWebSocket::builder(server.url("/echo"));
        for p in offer {
            builder = builder.subprotocol(*p);
        }
        let ws = builder.build().expect("build");
        let events = ws.events();
        ws.connect()
            .unwrap_or_else(|e| panic!("offer {offer:?}: {e}"));
        assert_eq!(ws.subprotocol().as_deref(), want, "offer {offer:?}");
        let connected = wait_event(&events, "Connected", |e| {
            matches!(e, Event::Connected { .. })
        });
        let Event::Connected { subprotocol } = connected else {
            unreachable!()
        };
        assert_eq!(subprotocol.as_deref(), want, "offer {offer:?}: event");
        echo_text(&ws, "negotiated");
        ws.close().expect("close");
    }
}

fn headers(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let ws = SyncWebSocket::builder(server.url("/headers"))
        .header("X-Jetsocket-Test", "interop-42")
        .header("Authorization", "Bearer s3cr3t")
        .connect()
        .expect("connect");
    let msg = recv(&ws, "the server's view of the request headers");
    let json = msg.as_text().expect("headers arrive as text");
    // Both servers send compact JSON with lower-case names.
    for pair in [
        r#""x-jetsocket-test":"interop-42""#,
        r#""authorization":"Bearer s3cr3t""#,
        r#""sec-websocket-version":"13""#,
        r#""upgrade":"websocket""#,
    ] {
        assert!(json.contains(pair), "{pair} not in {json}");
    }
    echo_text(&ws, "after the headers");
    ws.close().expect("close");
}

#[cfg(feature = "native-tls")]
fn tls(kind: Impl) {
    use jetsocket::TlsConfig;

    let ca = common::TestCa::new();
    let leaf = ca.issue_localhost();
    let dir = TempDir::new();
    let cert = dir.0.join("server.crt");
    let key = dir.0.join("server.key");
    std::fs::write(&cert, &leaf.cert_pem).expect("write cert");
    std::fs::write(&key, &leaf.key_pem).expect("write key");
    let server = Server::start(
        kind,
        &Opts {
            tls: Some((cert, key)),
            ..Opts::default()
        },
    );

    // Not trusted without the test CA: a fatal certificate error.
    let err = SyncWebSocket::builder(server.url("/echo"))
        .connect()
        .expect_err("the test CA is not trusted by default");
    assert!(
        matches!(err, Error::Certificate(_)) && err.is_fatal(),
        "untrusted server: {err:?}"
    );

    let ws = SyncWebSocket::builder(server.url("/echo"))
        .tls(TlsConfig::new().add_root_certificate_pem(ca.cert_pem()))
        .connect()
        .expect("connect over TLS");
    for len in [0, 126, 65_536, (1 << 20) + 3] {
        echo_text(&ws, &text_of(len));
        let data = bytes_of(len);
        ws.send_binary(data.clone()).expect("send binary");
        let what = format!("TLS echo of {len} bytes of binary");
        assert_same(recv(&ws, &what).as_bytes(), &data, &what);
    }
    ws.close().expect("close");
}

fn reconnect_after_restart(kind: Impl) {
    let server = Server::start(kind, &Opts::default());
    let port = server.port;
    let ws = SyncWebSocket::builder(server.url("/echo"))
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(50))
                .cap(Duration::from_millis(500)),
        )
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    echo_text(&ws, "before the crash");

    // The server process dies without closing anything.
    let _ = tungstenite::connect(server.url("/exit"));
    server.wait_exit();
    wait_event(&events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });

    let server = Server::start(
        kind,
        &Opts {
            port,
            ..Opts::default()
        },
    );
    assert_eq!(server.port, port);
    wait_event(&events, "Reconnected", |e| {
        matches!(e, Event::Reconnected { .. })
    });
    assert!(ws.is_connected());
    echo_text(&ws, "after the restart");
    ws.close().expect("close");
}

/// JSON-like text of exactly `len` bytes with some 2- and 3-byte characters. Compressible,
/// and every repetition lies within a few dozen bytes, so even a 512-byte window finds it.
fn json_of(len: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(len + 128);
    let mut id = 0u64;
    while s.len() < len {
        let _ = write!(
            s,
            r#"{{"id":{id},"sensor":"tür-{}","ok":{},"state":"✓","temp":{}.{}}},"#,
            id % 7,
            id % 3 == 0,
            20 + id % 9,
            id % 10
        );
        id += 1;
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    while s.len() < len {
        s.push('.');
    }
    s
}

/// `len` bytes of 24-byte binary records: compressible within a 512-byte window.
fn records_of(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 24);
    let mut id = 0u32;
    while out.len() < len {
        out.extend_from_slice(b"JSK\0");
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(u64::from(id) * 1000).to_be_bytes());
        out.extend_from_slice(&[0xA5; 6]);
        out.extend_from_slice(&((id % 5) as u16).to_le_bytes());
        id += 1;
    }
    out.truncate(len);
    out
}

/// The kinds of message the compression tests echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// Text from [`json_of`].
    Json,
    /// Binary from [`records_of`].
    Records,
    /// Binary from [`bytes_of`]: deflate cannot shrink it.
    Random,
}

impl Payload {
    fn message(self, len: usize) -> Message {
        match self {
            Payload::Json => Message::text(json_of(len)),
            Payload::Records => Message::binary(records_of(len)),
            Payload::Random => Message::binary(bytes_of(len)),
        }
    }
}

/// Sizes around the client's default compression threshold and beyond; each test adds its
/// largest size.
const COMPRESSION_SIZES: [usize; 7] = [0, 1, 127, 128, 129, 1024, 65_536];

/// The client's default `compression_threshold`.
const THRESHOLD: usize = 128;

/// Sends `msg` and checks the echo is the same message.
fn echo(ws: &SyncWebSocket, msg: Message, what: &str) {
    ws.send(msg.clone())
        .unwrap_or_else(|e| panic!("{what}: send: {e}"));
    let got = recv(ws, what);
    assert_eq!(got.is_text(), msg.is_text(), "{what}: message type");
    assert_same(got.as_bytes(), msg.as_bytes(), what);
}

/// Connects to `/extensions` and checks the server's answer to our offer.
fn connect_extensions(
    server: &Server,
    builder: jetsocket::Builder,
    want: &[&str],
) -> SyncWebSocket {
    let ws = builder.connect().expect("connect");
    let msg = recv(&ws, "the server's Sec-WebSocket-Extensions");
    let answer = msg.as_text().expect("the answer arrives as text");
    assert_eq!(
        extension_params(answer),
        want,
        "{:?} server answered {answer:?}",
        server.kind
    );
    ws
}

/// The `;`-separated parts of one `Sec-WebSocket-Extensions` element, trimmed and sorted
/// (the libraries order the parameters differently).
fn extension_params(value: &str) -> Vec<&str> {
    let mut params: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    params.sort_unstable();
    params
}

/// Echoes every payload kind at every size (plus `largest`) against a server in `mode`,
/// checking the compression stats message by message.
fn compression_echo(kind: Impl, mode: Compression, largest: usize) {
    let server = Server::start(kind, &Opts::compression(mode));
    let ws = connect_extensions(
        &server,
        SyncWebSocket::builder(server.url("/extensions")),
        &mode.answer(),
    );
    let active = mode != Compression::Off;
    let start = ws.stats();
    assert_eq!(start.compression.active, active, "{mode:?}: {start:?}");

    let mut sent = 0u64;
    let mut sent_bytes = 0u64;
    for len in COMPRESSION_SIZES.into_iter().chain([largest]) {
        for payload in [Payload::Json, Payload::Records, Payload::Random] {
            // Deflating 16 MiB takes seconds in a debug build (the binary records are the
            // slowest); one large text is enough.
            if len > 1 << 20 && payload != Payload::Json {
                continue;
            }
            let what = format!("{mode:?}: echo of {len} bytes of {payload:?}");
            let before = ws.stats().compression;
            echo(&ws, payload.message(len), &what);
            sent += 1;
            sent_bytes += len as u64;
            let after = ws.stats().compression;
            if !active {
                assert_eq!(after, start.compression, "{what}: nothing is compressed");
                continue;
            }
            let d_sent = after.sent_messages - before.sent_messages;
            let d_sent_bytes = after.sent_bytes - before.sent_bytes;
            let d_sent_wire = after.sent_wire_bytes - before.sent_wire_bytes;
            let d_received = after.received_messages - before.received_messages;
            let d_received_bytes = after.received_bytes - before.received_bytes;
            let d_received_wire = after.received_wire_bytes - before.received_wire_bytes;
            // Below the threshold the client sends plain frames; the servers compress all.
            let compressed = len >= THRESHOLD;
            assert_eq!(
                d_sent,
                u64::from(compressed),
                "{what}: sent compressed {after:?}"
            );
            assert_eq!(
                d_sent_bytes,
                if compressed { len as u64 } else { 0 },
                "{what}: {after:?}"
            );
            assert_eq!(d_received, 1, "{what}: received compressed {after:?}");
            assert_eq!(d_received_bytes, len as u64, "{what}: {after:?}");
            if payload != Payload::Random && len >= 1024 {
                assert!(
                    d_sent_wire < d_sent_bytes / 2,
                    "{what}: sent {d_sent_bytes} bytes as {d_sent_wire}"
                );
                assert!(
                    d_received_wire < d_received_bytes / 2,
                    "{what}: received {d_received_bytes} bytes as {d_received_wire}"
                );
            }
        }
    }

    let stats = ws.stats();
    // The `/extensions` answer came first.
    assert_eq!(stats.messages_sent, sent, "{stats:?}");
    assert_eq!(stats.messages_received, sent + 1, "{stats:?}");
    assert_eq!(stats.bytes_sent, sent_bytes, "{stats:?}");
    let c = stats.compression;
    assert_eq!(c.active, active, "{mode:?}: {c:?}");
    if active {
        assert!(c.sent_messages > 0 && c.received_messages > 0, "{c:?}");
        assert!(c.sent_wire_bytes < c.sent_bytes, "{c:?}");
        assert!(c.received_wire_bytes < c.received_bytes, "{c:?}");
        repeated_messages(&ws, mode);
    }
    ws.close().expect("close");
}

/// Sends the same 4 KiB message three times and compares the wire sizes each way: with
/// context takeover the copies shrink to back-references into the first; without it they
/// cost the same; with small windows the first copy is out of reach. A server inflating
/// with a small window also fails on a reference into an earlier message beyond it.
fn repeated_messages(ws: &SyncWebSocket, mode: Compression) {
    // Hex of random bytes: little redundancy inside, so a repeat is what deflate finds.
    let text: String = bytes_of(2048).iter().map(|b| format!("{b:02x}")).collect();
    let mut wire = Vec::new();
    for i in 0..3 {
        let before = ws.stats().compression;
        echo(
            ws,
            Message::text(text.clone()),
            &format!("{mode:?}: copy {i}"),
        );
        let after = ws.stats().compression;
        wire.push((
            after.sent_wire_bytes - before.sent_wire_bytes,
            after.received_wire_bytes - before.received_wire_bytes,
        ));
    }
    let (first_sent, first_received) = wire[0];
    for &(sent, received) in &wire[1..] {
        match mode {
            Compression::NoContextTakeover => {
                assert_eq!((sent, received), wire[0], "{mode:?}: wire sizes {wire:?}");
            }
            // The previous copy lies beyond both windows (512 B ours, 1 KiB the server's).
            Compression::SmallWindow => assert!(
                sent * 2 > first_sent && received * 2 > first_received,
                "{mode:?}: wire sizes {wire:?}"
            ),
            Compression::Default => assert!(
                sent * 10 < first_sent && received * 10 < first_received,
                "{mode:?}: wire sizes {wire:?}"
            ),
            Compression::Off => unreachable!("nothing to compare without compression"),
        }
    }
}

/// The client asks for no context takeover from a server that does not insist on it.
#[cfg(feature = "deflate")]
fn client_no_context_takeover(kind: Impl) {
    let server = Server::start(kind, &Opts::compression(Compression::Default));
    let ws = connect_extensions(
        &server,
        SyncWebSocket::builder(server.url("/extensions")).compression_no_context_takeover(true),
        &Compression::NoContextTakeover.answer(),
    );
    assert!(ws.stats().compression.active);
    for len in [0, 127, 128, 4096, 1 << 20] {
        for payload in [Payload::Json, Payload::Random] {
            echo(
                &ws,
                payload.message(len),
                &format!("echo of {len} bytes of {payload:?}"),
            );
        }
    }
    repeated_messages(&ws, Compression::NoContextTakeover);
    let c = ws.stats().compression;
    assert!(c.active, "{c:?}");
    assert!(c.sent_wire_bytes < c.sent_bytes, "{c:?}");
    assert!(c.received_wire_bytes < c.received_bytes, "{c:?}");
    ws.close().expect("close");
}

/// A client with compression off talks plain to a server that would compress.
fn client_without_compression(kind: Impl) {
    let server = Server::start(kind, &Opts::compression(Compression::Default));
    let ws = connect_extensions(
        &server,
        SyncWebSocket::builder(server.url("/extensions")).compression(false),
        &[],
    );
    let mut sent = 0;
    for len in [0, 128, 4096, 1 << 20] {
        for payload in [Payload::Json, Payload::Records, Payload::Random] {
            echo(
                &ws,
                payload.message(len),
                &format!("echo of {len} bytes of {payload:?}"),
            );
            sent += 1;
        }
    }
    let stats = ws.stats();
    assert_eq!(
        stats.compression,
        jetsocket::CompressionStats::default(),
        "{stats:?}"
    );
    assert_eq!(stats.messages_sent, sent, "{stats:?}");
    // And the `/extensions` answer.
    assert_eq!(stats.messages_received, sent + 1, "{stats:?}");
    ws.close().expect("close");
}

/// After the server process dies and comes back, the new connection negotiates compression
/// again and starts from fresh compression contexts.
#[cfg(feature = "deflate")]
fn compression_after_restart(kind: Impl) {
    let mode = Compression::Default;
    let server = Server::start(kind, &Opts::compression(mode));
    let port = server.port;
    let ws = connect_extensions(
        &server,
        SyncWebSocket::builder(server.url("/extensions")).backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(50))
                .cap(Duration::from_millis(500)),
        ),
        &mode.answer(),
    );
    let events = ws.events();
    // Sent again after the restart: a compressor that kept its history would encode it as
    // a reference to bytes the new server never saw.
    let text: String = bytes_of(4096).iter().map(|b| format!("{b:02x}")).collect();
    echo(&ws, Message::text(text.clone()), "before the crash");
    let before = ws.stats().compression;
    assert!(before.active, "{before:?}");

    let _ = tungstenite::connect(server.url("/exit"));
    server.wait_exit();
    wait_event(&events, "Disconnected", |e| {
        matches!(e, Event::Disconnected { .. })
    });
    assert!(
        !ws.stats().compression.active,
        "no connection, no compression"
    );

    let server = Server::start(
        kind,
        &Opts {
            port,
            ..Opts::compression(mode)
        },
    );
    assert_eq!(server.port, port);
    wait_event(&events, "Reconnected", |e| {
        matches!(e, Event::Reconnected { .. })
    });
    let answer = recv(&ws, "the restarted server's Sec-WebSocket-Extensions");
    assert_eq!(
        extension_params(answer.as_text().expect("text")),
        mode.answer()
    );
    echo(&ws, Message::text(text), "after the restart");
    let after = ws.stats().compression;
    assert!(after.active, "{after:?}");
    assert_eq!(after.sent_messages, before.sent_messages + 1, "{after:?}");
    assert_eq!(
        after.received_messages,
        before.received_messages + 2,
        "{after:?}"
    );
    // The same first-message cost as on the first connection: nothing was carried over.
    assert_eq!(
        after.sent_wire_bytes - before.sent_wire_bytes,
        before.sent_wire_bytes,
        "{before:?} {after:?}"
    );
    ws.close().expect("close");
}

/// One module per server, each with the same tests.
macro_rules! interop_tests {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn text_echo() {
                if !skipped() {
                    super::text_echo($kind);
                }
            }

            #[test]
            fn binary_echo() {
                if !skipped() {
                    super::binary_echo($kind);
                }
            }

            #[test]
            fn fragmented_message_arrives_whole() {
                if !skipped() {
                    super::fragmented($kind);
                }
            }

            #[test]
            fn server_ping_is_answered() {
                if !skipped() {
                    super::server_ping($kind);
                }
            }

            #[test]
            fn close_codes_and_reasons() {
                if !skipped() {
                    super::close_codes($kind);
                }
            }

            #[test]
            fn subprotocol_negotiation() {
                if !skipped() {
                    super::subprotocols($kind);
                }
            }

            #[test]
            fn extra_headers_reach_the_server() {
                if !skipped() {
                    super::headers($kind);
                }
            }

            #[cfg(feature = "native-tls")]
            #[test]
            fn tls_with_test_ca() {
                if !skipped() {
                    super::tls($kind);
                }
            }

            #[test]
            fn reconnects_after_server_restart() {
                if !skipped() {
                    super::reconnect_after_restart($kind);
                }
            }

            #[test]
            fn compression_off() {
                if !skipped() {
                    super::compression_echo($kind, Compression::Off, 1 << 20);
                }
            }

            #[cfg(feature = "deflate")]
            #[test]
            fn compression_default() {
                if !skipped() {
                    super::compression_echo($kind, Compression::Default, 16 << 20);
                }
            }

            #[cfg(feature = "deflate")]
            #[test]
            fn compression_no_context_takeover() {
                if !skipped() {
                    super::compression_echo($kind, Compression::NoContextTakeover, 16 << 20);
                }
            }

            #[cfg(feature = "deflate")]
            #[test]
            fn compression_small_window() {
                if !skipped() {
                    super::compression_echo($kind, Compression::SmallWindow, 16 << 20);
                }
            }

            #[cfg(feature = "deflate")]
            #[test]
            fn client_asks_for_no_context_takeover() {
                if !skipped() {
                    super::client_no_context_takeover($kind);
                }
            }

            #[test]
            fn client_without_compression() {
                if !skipped() {
                    super::client_without_compression($kind);
                }
            }

            #[cfg(feature = "deflate")]
            #[test]
            fn compression_after_server_restart() {
                if !skipped() {
                    super::compression_after_restart($kind);
                }
            }
        }
    )*};
}

interop_tests! {
    python => Impl::Python,
    node => Impl::Node,
}
