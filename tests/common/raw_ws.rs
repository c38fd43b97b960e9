//! The server side of a WebSocket connection written by hand on a raw socket, for scripts
//! that must send frames no real server library would (reserved bits, hand-built payloads,
//! broken fragmentation) and read exactly what the client sends back.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::http::read_http_head;
use super::TIMEOUT;

/// The FIN bit of a frame's first byte.
pub const FIN: u8 = 0x80;
/// RSV1: "compressed" under permessage-deflate.
pub const RSV1: u8 = 0x40;
/// RSV2.
pub const RSV2: u8 = 0x20;
/// Continuation opcode.
pub const CONTINUATION: u8 = 0x0;
/// Text opcode.
pub const TEXT: u8 = 0x1;
/// Binary opcode.
pub const BINARY: u8 = 0x2;
/// Close opcode.
pub const CLOSE: u8 = 0x8;
/// Ping opcode.
pub const PING: u8 = 0x9;
/// Pong opcode.
pub const PONG: u8 = 0xA;

/// Reads the upgrade request and answers `101` with the right `Sec-WebSocket-Accept` and
/// the `extra` header lines. Sets a read timeout of [`TIMEOUT`] on the socket. Returns the
/// request head, or `None` if it carried no key or the answer could not be written.
pub fn accept_upgrade(tcp: &mut TcpStream, extra: &[(&str, &str)]) -> Option<String> {
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let head = String::from_utf8_lossy(&read_http_head(tcp)).into_owned();
    let key = request_header(&head, "sec-websocket-key")?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    for (name, value) in extra {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    tcp.write_all(response.as_bytes()).ok()?;
    Some(head)
}

/// The first value of header `name` (case-insensitive) in a request head, trimmed.
pub fn request_header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// An unmasked (server to client) frame; `first` is the whole first byte: FIN, RSV1-3 and
/// the opcode.
pub fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// A frame as the client sent it, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    pub fin: bool,
    pub rsv1: bool,
    pub rsv2: bool,
    pub rsv3: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl ClientFrame {
    /// The status code of a close frame that has one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one whole frame from the client. `None` at the end of the stream, on a socket
/// error or timeout, or for a frame announcing more than `max_len` payload bytes.
pub fn read_client_frame(tcp: &mut TcpStream, max_len: usize) -> Option<ClientFrame> {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let len = usize::try_from(len).ok().filter(|&l| l <= max_len)?;
    let masked = head[1] & 0x80 != 0;
    let mut key = [0u8; 4];
    if masked {
        tcp.read_exact(&mut key).ok()?;
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some(ClientFrame {
        fin: head[0] & 0x80 != 0,
        rsv1: head[0] & 0x40 != 0,
        rsv2: head[0] & 0x20 != 0,
        rsv3: head[0] & 0x10 != 0,
        opcode: head[0] & 0x0f,
        masked,
        payload,
    })
}

/// Reads frames until the client closes the connection (or a read fails or times out).
pub fn read_client_frames_until_eof(tcp: &mut TcpStream, max_len: usize) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    while let Some(f) = read_client_frame(tcp, max_len) {
        frames.push(f);
    }
    frames
}
