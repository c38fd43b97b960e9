//! Plain / TLS WebSocket test server built on blocking tungstenite.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::base::{lock, wait_cond, ConnTicket, Core, Counter};
use super::tls::ServerCert;

/// How often [`ServerConn::read`] wakes up to run queued server-side commands.
const COMMAND_POLL: Duration = Duration::from_millis(10);

/// The byte stream under a server-side WebSocket: plain TCP or server-side TLS.
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (native-tls) over TCP.
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The underlying TCP socket (for timeouts, shutdown, peer address).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ServerStream::Plain(s) => s,
            ServerStream::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for ServerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.read(buf),
            ServerStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ServerStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Plain(s) => s.write(buf),
            ServerStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.flush(),
            ServerStream::Tls(s) => s.flush(),
        }
    }
}

/// The client's handshake request as seen by the server.
#[derive(Clone, Debug, Default)]
pub struct HandshakeRequest {
    /// Request target: path plus `?query` if any (e.g. `/chat?room=1`).
    pub path: String,
    /// Every request header in arrival order (names lower-case), duplicates kept.
    pub headers: Vec<(String, String)>,
}

impl HandshakeRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Subprotocols offered by the client (`Sec-WebSocket-Protocol`, split on commas).
    pub fn offered_subprotocols(&self) -> Vec<String> {
        self.header_all("sec-websocket-protocol")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Commands a test can push to live connections (executed by [`ServerConn::read`]).
#[derive(Debug)]
enum Command {
    Send(Message),
    Close(u16, String),
}

#[derive(Default)]
struct Log {
    messages: Vec<Message>,
    closes: Vec<(u16, String)>,
    pings: usize,
    pongs: usize,
}

struct WsShared {
    log: Mutex<Log>,
    log_cond: Condvar,
    requests: Mutex<Vec<HandshakeRequest>>,
    handshakes: Counter,
    controls: Mutex<HashMap<u64, Sender<Command>>>,
}

impl WsShared {
    fn record(&self, msg: &Message) {
        let mut log = lock(&self.log);
        match msg {
            Message::Text(_) | Message::Binary(_) => log.messages.push(msg.clone()),
            Message::Close(cf) => log.closes.push(close_tuple(cf.as_ref())),
            Message::Ping(_) => log.pings += 1,
            Message::Pong(_) => log.pongs += 1,
            Message::Frame(_) => {}
        }
        drop(log);
        self.log_cond.notify_all();
    }
}

fn close_tuple(cf: Option<&CloseFrame>) -> (u16, String) {
    match cf {
        Some(cf) => (u16::from(cf.code), cf.reason.to_string()),
        None => (1005, String::new()),
    }
}

/// Builds a close frame from a numeric code and reason.
pub fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One accepted, handshaken server-side WebSocket connection handed to a handler.
pub struct ServerConn {
    ws: WebSocket<ServerStream>,
    request: HandshakeRequest,
    subprotocol: Option<String>,
    commands: Receiver<Command>,
    shared: Arc<WsShared>,
    ticket: ConnTicket,
}

impl ServerConn {
    /// The tungstenite socket.
    pub fn ws(&self) -> &WebSocket<ServerStream> {
        &self.ws
    }

    /// The tungstenite socket, mutably (raw `read`/`send` bypass recording and commands).
    pub fn ws_mut(&mut self) -> &mut WebSocket<ServerStream> {
        &mut self.ws
    }

    /// The underlying TCP socket.
    pub fn tcp(&self) -> &TcpStream {
        self.ws.get_ref().tcp()
    }

    /// The captured handshake request.
    pub fn request(&self) -> &HandshakeRequest {
        &self.request
    }

    /// Request path plus query.
    pub fn path(&self) -> &str {
        &self.request.path
    }

    /// First value of a request header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.header(name)
    }

    /// Subprotocol the server answered with, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Per-server connection id.
    pub fn id(&self) -> u64 {
        self.ticket.id()
    }

    /// Reads the next message (text, binary, ping, pong or close), recording it in the
    /// server log and executing queued `send_all`/`close_all` commands while waiting.
    /// Pongs and close replies are sent automatically. Returns `None` once the connection
    /// is closed or broken. The socket is blocking again when this returns.
    pub fn read(&mut self) -> Option<Message> {
        let _ = self.tcp().set_read_timeout(Some(COMMAND_POLL));
        let result = self.read_inner();
        let _ = self.tcp().set_read_timeout(None);
        result
    }

    fn read_inner(&mut self) -> Option<Message> {
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                let res = match cmd {
                    Command::Send(m) => self.ws.send(m),
                    Command::Close(code, reason) => self.ws.close(Some(close_frame(code, &reason))),
                };
                if let Err(e) = res {
                    if !matches!(e, tungstenite::Error::Io(ref io) if is_timeout(io)) {
                        return None;
                    }
                }
            }
            match self.ws.read() {
                Ok(msg) => {
                    self.shared.record(&msg);
                    return Some(msg);
                }
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends (and flushes) a message; false if the connection is gone.
    pub fn send(&mut self, msg: Message) -> bool {
        self.ws.send(msg).is_ok()
    }

    /// Sends a text message; false if the connection is gone.
    pub fn send_text(&mut self, text: &str) -> bool {
        self.send(Message::Text(text.to_string().into()))
    }

    /// Starts a close handshake with `code`/`reason` (keep calling `read` to finish it).
    pub fn close(&mut self, code: u16, reason: &str) -> bool {
        self.ws.close(Some(close_frame(code, reason))).is_ok()
    }

    /// Reads until the connection ends; echoes text/binary back when `echo` is true.
    pub fn serve(mut self, echo: bool) {
        while let Some(msg) = self.read() {
            if echo && (msg.is_text() || msg.is_binary()) && !self.send(msg) {
                break;
            }
        }
    }
}

impl Drop for ServerConn {
    fn drop(&mut self) {
        lock(&self.shared.controls).remove(&self.ticket.id());
    }
}

type Handler = Arc<dyn Fn(ServerConn) + Send + Sync + 'static>;

/// Configures a [`WsServer`] before starting it.
#[derive(Default)]
pub struct WsServerBuilder {
    subprotocols: Vec<String>,
    response_headers: Vec<(String, String)>,
    config: Option<WebSocketConfig>,
    tls: Option<ServerCert>,
}

impl WsServerBuilder {
    /// Supports subprotocol `p`: answered if the client offers it (first offered match wins).
    pub fn subprotocol(mut self, p: &str) -> Self {
        self.subprotocols.push(p.to_string());
        self
    }

    /// Adds a header to every handshake response.
    pub fn response_header(mut self, name: &str, value: &str) -> Self {
        self.response_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Uses this tungstenite config for accepted sockets (size limits etc.).
    pub fn config(mut self, config: WebSocketConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Serves TLS with this certificate (see [`super::tls::TestCa`]); `url()` becomes `wss://localhost:PORT/`.
    pub fn tls(mut self, cert: ServerCert) -> Self {
        self.tls = Some(cert);
        self
    }

    /// Starts the server running `handler` once per connection, on its own thread.
    pub fn start<F>(self, handler: F) -> WsServer
    where
        F: Fn(ServerConn) + Send + Sync + 'static,
    {
        WsServer::launch(self, Arc::new(handler))
    }

    /// Starts an echo server (records everything, echoes text/binary, auto pong/close).
    pub fn echo(self) -> WsServer {
        self.start(|conn| conn.serve(true))
    }

    /// Starts a recording server (records everything, sends nothing but pongs/close replies).
    pub fn recording(self) -> WsServer {
        self.start(|conn| conn.serve(false))
    }
}

/// An in-process WebSocket server on 127.0.0.1:0; dropping it stops and joins everything.
pub struct WsServer {
    shared: Arc<WsShared>,
    tls: bool,
    core: Core,
}

impl WsServer {
    /// Builder for subprotocols, response headers, config and TLS.
    pub fn builder() -> WsServerBuilder {
        WsServerBuilder::default()
    }

    /// Plain server running `handler` per connection (on its own thread).
    pub fn start<F>(handler: F) -> WsServer
    where
        F: Fn(ServerConn) + Send + Sync + 'static,
    {
        Self::builder().start(handler)
    }

    /// Plain echo server (also records what it receives).
    pub fn echo() -> WsServer {
        Self::builder().echo()
    }

    /// Plain recording server (records, never echoes).
    pub fn recording() -> WsServer {
        Self::builder().recording()
    }

    fn launch(b: WsServerBuilder, handler: Handler) -> WsServer {
        let shared = Arc::new(WsShared {
            log: Mutex::new(Log::default()),
            log_cond: Condvar::new(),
            requests: Mutex::new(Vec::new()),
            handshakes: Counter::default(),
            controls: Mutex::new(HashMap::new()),
        });
        let tls = b.tls.is_some();
        let acceptor = b.tls.as_ref().map(|cert| {
            Arc::new(native_tls::TlsAcceptor::new(cert.identity()).expect("TlsAcceptor::new"))
        });
        let subprotocols = Arc::new(b.subprotocols);
        let extra = Arc::new(b.response_headers);
        let config = b.config;
        let sh = Arc::clone(&shared);
        let on_conn = move |tcp: TcpStream, ticket: ConnTicket| {
            let stream = match &acceptor {
                None => ServerStream::Plain(tcp),
                Some(acc) => match acc.accept(tcp) {
                    Ok(s) => ServerStream::Tls(Box::new(s)),
                    Err(e) => {
                        eprintln!("[test-server] TLS handshake failed: {e}");
                        return;
                    }
                },
            };
            let mut captured = HandshakeRequest::default();
            let mut chosen: Option<String> = None;
            let (tx, rx) = crossbeam_channel::unbounded();
            let id = ticket.id();
            let sh_cb = Arc::clone(&sh);
            // ErrorResponse is tungstenite's type; its size is not ours to change.
            #[allow(clippy::result_large_err)]
            let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                captured.path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| req.uri().path().to_string());
                captured.headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                chosen = captured
                    .offered_subprotocols()
                    .into_iter()
                    .find(|p| subprotocols.contains(p));
                let headers = resp.headers_mut();
                if let Some(p) = &chosen {
                    if let Ok(v) = HeaderValue::from_str(p) {
                        headers.insert("sec-websocket-protocol", v);
                    }
                }
                for (k, v) in extra.iter() {
                    match (
                        tungstenite::http::HeaderName::from_bytes(k.as_bytes()),
                        HeaderValue::from_str(v),
                    ) {
                        (Ok(k), Ok(v)) => {
                            headers.append(k, v);
                        }
                        _ => eprintln!("[test-server] invalid response header {k}: {v}"),
                    }
                }
                // Register before the response goes out, so that once the client's
                // connect returns, `handshakes()`, `requests()` and `send_all` see it.
                lock(&sh_cb.requests).push(captured.clone());
                lock(&sh_cb.controls).insert(id, tx);
                sh_cb.handshakes.incr();
                Ok(resp)
            };
            let ws = match tungstenite::accept_hdr_with_config(stream, callback, config) {
                Ok(ws) => ws,
                Err(e) => {
                    lock(&sh.controls).remove(&id);
                    eprintln!("[test-server] WebSocket handshake failed: {e}");
                    return;
                }
            };
            let conn = ServerConn {
                ws,
                request: captured,
                subprotocol: chosen,
                commands: rx,
                shared: Arc::clone(&sh),
                ticket,
            };
            handler(conn);
        };
        let tag = if tls { "wss" } else { "ws" };
        let core = Core::start(tag, Arc::new(on_conn));
        WsServer { shared, tls, core }
    }

    /// `ws://127.0.0.1:PORT/`, or `wss://localhost:PORT/` for TLS servers.
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}/", self.port())
        } else {
            format!("ws://127.0.0.1:{}/", self.port())
        }
    }

    /// Like `url()` but always with the IP host (`wss://127.0.0.1:PORT/` for TLS; the test cert covers it).
    pub fn ip_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/", self.port())
    }

    /// Whether this server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Listening address (127.0.0.1:PORT).
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// TCP connections accepted so far (including ones that failed the handshake).
    pub fn connections(&self) -> usize {
        self.core.accepted()
    }

    /// Waits until at least `n` TCP connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_accepted(n, timeout)
    }

    /// WebSocket handshakes accepted so far (counted just before the 101 response is sent).
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.get()
    }

    /// Waits until at least `n` WebSocket handshakes completed.
    pub fn wait_for_handshakes(&self, n: usize, timeout: Duration) -> bool {
        self.shared.handshakes.wait_for(n, timeout)
    }

    /// Connections currently open (their server thread is still running).
    pub fn live(&self) -> usize {
        self.core.live()
    }

    /// Waits until exactly `n` connections are open (e.g. 0 after the client went away).
    pub fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_live(n, timeout)
    }

    /// Handshake requests of all connections so far, in handshake order.
    pub fn requests(&self) -> Vec<HandshakeRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The most recent handshake request.
    pub fn last_request(&self) -> Option<HandshakeRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// All text/binary messages received (over all connections), in order.
    pub fn received(&self) -> Vec<Message> {
        lock(&self.shared.log).messages.clone()
    }

    /// Received text messages only, as strings.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.shared.log)
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(t.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Waits until at least `n` text/binary messages were received; returns all received so far.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let (log, _) = wait_cond(&self.shared.log, &self.shared.log_cond, timeout, |l| {
            l.messages.len() >= n
        });
        log.messages.clone()
    }

    /// [`wait_for_messages`](Self::wait_for_messages) as strings (a message that is not
    /// UTF-8 as an empty one).
    pub fn wait_for_texts(&self, n: usize, timeout: Duration) -> Vec<String> {
        self.wait_for_messages(n, timeout)
            .iter()
            .map(|m| m.to_text().unwrap_or_default().to_owned())
            .collect()
    }

    /// Close frames received from clients as (code, reason); 1005 if the frame had no code.
    pub fn close_frames(&self) -> Vec<(u16, String)> {
        lock(&self.shared.log).closes.clone()
    }

    /// Waits for the first close frame from any client.
    pub fn wait_for_close(&self, timeout: Duration) -> Option<(u16, String)> {
        let (log, _) = wait_cond(&self.shared.log, &self.shared.log_cond, timeout, |l| {
            !l.closes.is_empty()
        });
        log.closes.first().cloned()
    }

    /// Pings received so far (each was answered with a pong automatically).
    pub fn pings(&self) -> usize {
        lock(&self.shared.log).pings
    }

    /// Waits until at least `n` pings were received.
    pub fn wait_for_pings(&self, n: usize, timeout: Duration) -> bool {
        wait_cond(&self.shared.log, &self.shared.log_cond, timeout, |l| {
            l.pings >= n
        })
        .1
    }

    /// Pongs received so far.
    pub fn pongs(&self) -> usize {
        lock(&self.shared.log).pongs
    }

    /// Forgets everything recorded so far (messages, closes, pings, pongs).
    pub fn clear_log(&self) {
        *lock(&self.shared.log) = Log::default();
    }

    /// Abruptly kills every live connection (`shutdown(Both)` on the TCP sockets, no close frame).
    pub fn drop_all(&self) {
        self.core.shutdown_all();
    }

    /// Politely closes every live connection with a close frame; returns how many were asked.
    /// Only works for handlers that read via [`ServerConn::read`] (echo/recording do).
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.broadcast(|| Command::Close(code, reason.to_string()))
    }

    /// Sends `msg` to every live connection; returns how many were asked.
    /// Only works for handlers that read via [`ServerConn::read`] (echo/recording do).
    pub fn send_all(&self, msg: Message) -> usize {
        self.broadcast(|| Command::Send(msg.clone()))
    }

    fn broadcast(&self, make: impl Fn() -> Command) -> usize {
        lock(&self.shared.controls)
            .values()
            .filter(|tx| tx.send(make()).is_ok())
            .count()
    }
}
