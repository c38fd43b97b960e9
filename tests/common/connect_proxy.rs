//! `ConnectProxy`: a small HTTP CONNECT proxy for the proxy tests. It records each request
//! head, can demand credentials or refuse with a fixed status, and pipes bytes both ways.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::base::{lock, ConnTicket, Core};
use super::http::{read_http_head, reason_phrase};

/// How the proxy answers `CONNECT`.
#[derive(Clone, Debug)]
pub enum ProxyMode {
    /// Open every tunnel.
    Open,
    /// Demand `Proxy-Authorization: Basic <b64>`; answer 407 otherwise.
    RequireAuth(String),
    /// Refuse every tunnel with this status.
    Refuse(u16),
}

struct State {
    mode: ProxyMode,
    requests: Mutex<Vec<String>>,
}

/// An HTTP CONNECT proxy on 127.0.0.1:0.
pub struct ConnectProxy {
    core: Core,
    state: Arc<State>,
}

impl ConnectProxy {
    /// Starts a proxy answering as `mode` says.
    pub fn start(mode: ProxyMode) -> ConnectProxy {
        let state = Arc::new(State {
            mode,
            requests: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        let core = Core::start(
            "cproxy",
            Arc::new(move |stream: TcpStream, ticket: ConnTicket| serve(stream, ticket, &st)),
        );
        ConnectProxy { core, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.core.addr())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.core.accepted()
    }

    /// The request heads received, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state.requests).clone()
    }
}

fn serve(mut client: TcpStream, _ticket: ConnTicket, state: &State) {
    let head = String::from_utf8_lossy(&read_http_head(&mut client)).into_owned();
    lock(&state.requests).push(head.clone());
    let mut words = head.split_whitespace();
    let (method, authority) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let refuse = |client: &mut TcpStream, code: u16| {
        let _ = write!(
            client,
            "HTTP/1.1 {code} {}\r\nContent-Length: 0\r\n\r\n",
            reason_phrase(code)
        );
    };
    if method != "CONNECT" {
        return refuse(&mut client, 405);
    }
    match &state.mode {
        ProxyMode::Refuse(code) => return refuse(&mut client, *code),
        ProxyMode::RequireAuth(expected) => {
            let wanted = format!(
                "proxy-authorization: basic {}",
                expected.to_ascii_lowercase()
            );
            if !head
                .to_ascii_lowercase()
                .lines()
                .any(|l| l.trim() == wanted)
            {
                return refuse(&mut client, 407);
            }
        }
        ProxyMode::Open => {}
    }
    let upstream = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).ok());
    let Some(upstream) = upstream else {
        return refuse(&mut client, 502);
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = thread::Builder::new()
        .name("tk-cproxy-pipe".into())
        .spawn(move || pipe(c2, u2))
        .expect("spawn pipe thread");
    pipe(upstream, client);
    let _ = up.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
