//! `HttpResponder` (canned HTTP answers / silence) and `RawServer` (scripted raw TCP).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::base::{lock, wait_cond, ConnTicket, Core};

/// Upper bound on the request head the responder reads.
const MAX_HEAD: usize = 64 * 1024;

/// Standard reason phrase for a status code ("Unknown" if not listed).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Reads an HTTP request head (through `\r\n\r\n`), stopping early on EOF, error or 64 KiB.
pub fn read_http_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// Reads and discards until EOF or error (used to hold a socket open until the peer leaves).
pub fn drain(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

enum Mode {
    Fixed(Vec<u8>),
    Silent,
}

struct HttpShared {
    requests: Mutex<Vec<String>>,
    cond: Condvar,
}

/// Raw TCP server that reads one HTTP request head and answers with fixed bytes (then
/// closes), or never answers (`silent`).
pub struct HttpResponder {
    shared: Arc<HttpShared>,
    core: Core,
}

impl HttpResponder {
    /// Answers `HTTP/1.1 <code> <reason>\r\nContent-Length: 0\r\n\r\n`.
    pub fn status(code: u16) -> HttpResponder {
        Self::response(code, &[], b"")
    }

    /// Answers with `code`, extra `headers` and `body` (Content-Length added automatically).
    pub fn response(code: u16, headers: &[(&str, &str)], body: &[u8]) -> HttpResponder {
        let mut out = format!("HTTP/1.1 {code} {}\r\n", reason_phrase(code));
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        Self::raw(bytes)
    }

    /// Answers with exactly these bytes, then closes.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> HttpResponder {
        Self::launch(Mode::Fixed(bytes.into()))
    }

    /// Reads the request but never answers; keeps the socket open until the client leaves
    /// or the responder is dropped (the client's handshake hangs).
    pub fn silent() -> HttpResponder {
        Self::launch(Mode::Silent)
    }

    fn launch(mode: Mode) -> HttpResponder {
        let shared = Arc::new(HttpShared {
            requests: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        });
        let sh = Arc::clone(&shared);
        let on_conn = move |mut tcp: TcpStream, _ticket: ConnTicket| {
            let head = read_http_head(&mut tcp);
            if !head.is_empty() {
                lock(&sh.requests).push(String::from_utf8_lossy(&head).into_owned());
                sh.cond.notify_all();
            }
            match &mode {
                Mode::Fixed(bytes) => {
                    if let Err(e) = tcp.write_all(bytes).and_then(|_| tcp.flush()) {
                        eprintln!("[test-http] write failed: {e}");
                        return;
                    }
                    // Half-close and wait (bounded) for the client to go away, so unread
                    // client bytes never turn our close into an RST that eats the response.
                    let _ = tcp.shutdown(Shutdown::Write);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    drain(&mut tcp);
                }
                Mode::Silent => drain(&mut tcp),
            }
        };
        let core = Core::start("http", Arc::new(on_conn));
        HttpResponder { shared, core }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.accepted()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_accepted(n, timeout)
    }

    /// Connections currently open.
    pub fn live(&self) -> usize {
        self.core.live()
    }

    /// Request heads received so far (lossy UTF-8, including the final blank line).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Waits until at least `n` request heads arrived; returns all so far.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<String> {
        wait_cond(&self.shared.requests, &self.shared.cond, timeout, |r| {
            r.len() >= n
        })
        .0
        .clone()
    }

    /// Abruptly closes every open connection.
    pub fn drop_all(&self) {
        self.core.shutdown_all();
    }
}

/// Raw TCP server running `handler(stream)` per connection on its own thread.
///
/// The server keeps a clone of each socket (to shut it down on drop), so dropping the
/// stream inside the handler does NOT close the connection until the handler returns;
/// call `stream.shutdown(Shutdown::Both)` to close early.
pub struct RawServer {
    core: Core,
}

impl RawServer {
    /// Starts the server; the handler must return once its socket is shut down.
    pub fn start<F>(handler: F) -> RawServer
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let on_conn = move |tcp: TcpStream, _ticket: ConnTicket| handler(tcp);
        RawServer {
            core: Core::start("raw", Arc::new(on_conn)),
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port())
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.accepted()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_accepted(n, timeout)
    }

    /// Connections whose handler is still running.
    pub fn live(&self) -> usize {
        self.core.live()
    }

    /// Waits until exactly `n` handlers are running.
    pub fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_live(n, timeout)
    }

    /// `shutdown(Both)` on every open connection.
    pub fn drop_all(&self) {
        self.core.shutdown_all();
    }
}
