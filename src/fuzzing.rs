//! Entry points for the fuzz targets in `fuzz/` (internal feature `_fuzz`; unstable, not
//! covered by semver, not for use outside this repository).
//!
//! Each function runs one of the parsers jetsocket implements itself on arbitrary input, and
//! checks the properties its callers rely on. A property that does not hold panics, which the
//! fuzzer reports as a crash; so does any other panic.

use std::io::{self, Read, Write};

use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

use crate::error::Error;
use crate::message::{CloseFrame, Message, Utf8Bytes};

/// The `Sec-WebSocket-Key` of RFC 6455's example; the matching accept value is
/// `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Subprotocols a fuzz input can choose to offer (bit `i` of the selector offers the `i`th).
pub const SUBPROTOCOLS: [&str; 3] = ["chat", "v2.json", "superchat"];

/// The fuzz targets, as named in `fuzz/Cargo.toml` and `fuzz/seeds/`.
pub const TARGETS: [&str; 8] = [
    "url",
    "handshake",
    "proxy",
    "connect_response",
    "json",
    "inbound",
    "inflate",
    "deflate_roundtrip",
];

/// Runs fuzz target `target` on one raw input, decoding it as `fuzz/README.md` describes.
/// Returns `false` for an unknown target (or `json` without the `json` feature, `inflate` and
/// `deflate_roundtrip` without `deflate`).
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "url" => {
            if let Ok(input) = std::str::from_utf8(data) {
                url(input);
            }
        }
        "handshake" => {
            if let Some((&offer, response)) = data.split_first() {
                handshake_response(offer, response);
            }
        }
        "proxy" => {
            let text = String::from_utf8_lossy(data);
            let mut lines = text.splitn(3, '\n');
            let url = lines.next().unwrap_or_default();
            let no_proxy = lines.next().unwrap_or_default();
            let host = lines.next().unwrap_or_default();
            proxy(url, no_proxy, host);
        }
        "connect_response" => connect_response(data),
        #[cfg(feature = "json")]
        "json" => {
            let mut parts = data.splitn(3, |&b| b == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let expected = String::from_utf8_lossy(parts.next().unwrap_or_default());
            json(&path, &expected, parts.next().unwrap_or_default());
        }
        "inbound" => {
            if let [mode, size, frames @ ..] = data {
                let max_message = 64usize << (size & 15);
                let max_frame = max_message >> ((size >> 4) & 3);
                inbound(*mode, max_message, max_frame.max(1), frames);
            }
        }
        #[cfg(feature = "deflate")]
        "inflate" => {
            if let [params, mode, frames @ ..] = data {
                inflate(*params, *mode, frames);
            }
        }
        #[cfg(feature = "deflate")]
        "deflate_roundtrip" => {
            if let [params, config, mode, ops @ ..] = data {
                deflate_roundtrip(*params, *config, *mode, ops);
            }
        }
        _ => return false,
    }
    true
}

/// Parses `input` as a WebSocket URL.
///
/// Properties: an accepted URL has a host, a port other than 0 and a resource starting with
/// `/`, and the URL rebuilt from its parts (with its `Host` header form) parses
/// to the same target. Redacting never panics.
pub fn url(input: &str) {
    let _ = crate::url::redact(input);
    let target = match crate::url::parse(input) {
        Ok(t) => t,
        Err(e) => {
            assert!(
                matches!(e, Error::InvalidUrl { .. }),
                "parse failed with {e:?}"
            );
            let _ = e.to_string();
            return;
        }
    };
    assert!(!target.host.is_empty(), "{input:?}: empty host");
    assert_ne!(target.port, 0, "{input:?}: port 0");
    assert!(
        target.resource.starts_with('/'),
        "{input:?}: resource {:?}",
        target.resource
    );
    let scheme = if target.tls { "wss" } else { "ws" };
    let rebuilt = format!("{scheme}://{}{}", target.host_header(), target.resource);
    match crate::url::parse(&rebuilt) {
        Ok(again) => assert_eq!(again, target, "{input:?} rebuilt as {rebuilt:?}"),
        Err(e) => panic!("{input:?} rebuilt as {rebuilt:?} no longer parses: {e}"),
    }
}

/// Parses `response` as the server's answer to an upgrade request sent with [`KEY`],
/// offering the [`SUBPROTOCOLS`] selected by the low bits of `offer` and permessage-deflate
/// when bit 3 is set (with no context takeover when bit 4 is set too); when it is accepted,
/// the bytes after the head go through the inbound path (as on a TLS connection, where they
/// arrive together with the head).
///
/// Properties: only `Http` and `Handshake` errors; an accepted head lies within the input and
/// names a subprotocol or compression only if it was offered. When compression was agreed
/// on, the frames go through the compression layer as in [`inflate`].
pub fn handshake_response(offer: u8, response: &[u8]) {
    let deflate = (offer & 0b1000 != 0).then(|| crate::deflate::DeflateConfig {
        no_context_takeover: offer & 0b1_0000 != 0,
        ..Default::default()
    });
    let offered: Vec<String> = SUBPROTOCOLS
        .iter()
        .enumerate()
        .filter(|(i, _)| offer & (1 << i) != 0)
        .map(|(_, p)| (*p).to_owned())
        .collect();
    match crate::handshake::parse_response(response, KEY, &offered, deflate.as_ref()) {
        Ok(None) => assert!(
            response.len() < crate::handshake::MAX_RESPONSE_HEAD,
            "an incomplete head of {} bytes was not rejected",
            response.len()
        ),
        Ok(Some((accepted, head))) => {
            assert!(head <= response.len(), "head {head} > {}", response.len());
            if let Some(p) = &accepted.subprotocol {
                assert!(offered.contains(p), "unoffered subprotocol {p:?} accepted");
            }
            if let Some(n) = accepted.deflate {
                let config = deflate.expect("compression accepted without an offer");
                assert!(
                    !config.no_context_takeover
                        || (n.server_no_context_takeover && n.client_no_context_takeover),
                    "no_context_takeover requested but {n:?} accepted"
                );
                #[cfg(feature = "deflate")]
                {
                    let _ = run_inflate(
                        response[head..].to_vec(),
                        &response[head..],
                        offer >> 4,
                        n,
                        1 << 16,
                        1 << 16,
                    );
                    return;
                }
            }
            run_inbound(
                response[head..].to_vec(),
                &response[head..],
                offer >> 4,
                1 << 16,
                1 << 16,
            );
        }
        Err(e) => {
            assert!(
                matches!(e, Error::Http { .. } | Error::Handshake(_)),
                "unexpected error variant {e:?}"
            );
            let _ = (e.to_string(), e.is_fatal());
        }
    }
}

/// Parses `url` as a proxy URL, and checks `NO_PROXY` matching of `host` against
/// `no_proxy`, then builds the `CONNECT` request for `host`.
///
/// Properties: `*` covers every host; a plain host name covers itself; a proxy error is
/// `InvalidConfig`; the request is one well-formed head without the credentials in clear.
pub fn proxy(url: &str, no_proxy: &str, host: &str) {
    let _ = crate::proxy::bypasses(no_proxy, host);
    assert!(crate::proxy::bypasses("*", host), "`*` must cover {host:?}");
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && host.chars().any(|c| c != '.');
    if plain {
        assert!(
            crate::proxy::bypasses(host, host),
            "NO_PROXY={host:?} must cover {host:?}"
        );
    }
    let proxy = match crate::proxy::Proxy::new(url) {
        Ok(p) => p,
        Err(e) => {
            assert!(matches!(e, Error::InvalidConfig(_)), "{e:?}");
            return;
        }
    };
    let _ = format!("{proxy:?}");
    let target = crate::url::parse(&format!("wss://{host}/"))
        .unwrap_or_else(|_| crate::url::parse("wss://example.com/").expect("a valid URL"));
    let request = proxy.connect_request(&target);
    let text = std::str::from_utf8(&request).expect("the CONNECT request is ASCII");
    assert!(text.starts_with("CONNECT "), "{text:?}");
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    assert_eq!(
        text.matches("\r\n\r\n").count(),
        1,
        "the request must be one head: {text:?}"
    );
}

/// Parses `response` as a proxy's answer to `CONNECT`.
///
/// Properties: the answer's length lies within the input; errors are `Proxy` or `Handshake`.
pub fn connect_response(response: &[u8]) {
    match crate::proxy::parse_connect_response(response) {
        Ok(Some(n)) => assert!(n <= response.len(), "{n} > {}", response.len()),
        Ok(None) => {}
        Err(e) => {
            assert!(
                matches!(e, Error::Proxy { .. } | Error::Handshake(_)),
                "unexpected error variant {e:?}"
            );
            let _ = (e.to_string(), e.is_fatal());
        }
    }
}

/// Runs the JSON sequence-id and pong-field extractors on `payload` (as a text message when
/// it is UTF-8, and as a binary one).
///
/// Properties: a sequence id is only found in a JSON document; `field_equals` agrees with a
/// plain reading of the documented rule (a string field compares with the string, any other
/// field with its JSON text).
#[cfg(feature = "json")]
pub fn json(path: &str, expected: &str, payload: &[u8]) {
    let mut messages = vec![Message::binary(payload.to_vec())];
    if let Ok(text) = std::str::from_utf8(payload) {
        messages.push(Message::text(text));
    }
    let parsed = serde_json::from_slice::<serde_json::Value>(payload).ok();
    let reference = parsed.as_ref().is_some_and(|value| {
        match path.split('.').try_fold(value, |v, key| v.get(key)) {
            Some(serde_json::Value::String(s)) => s == expected,
            Some(other) => {
                let text = other.to_string();
                text == expected
            }
            None => false,
        }
    });
    for msg in &messages {
        if crate::json::sequence_at(msg, path).is_some() {
            assert!(parsed.is_some(), "a sequence id in a non-JSON message");
        }
        let got = crate::json::field_equals(msg, path, expected);
        assert_eq!(
            got,
            reference,
            "field_equals(path {path:?}, expected {expected:?}) on {:?}",
            String::from_utf8_lossy(payload)
        );
    }
}

/// Feeds `bytes`, as sent by a server after the handshake, through a client-side tungstenite
/// `WebSocket` over an in-memory stream and converts everything it yields the way the I/O
/// thread does: data messages into [`Message`]s, close frames into [`CloseFrame`]s, errors
/// into [`Error`]s, and answers a protocol error with the close frame the engine would send.
///
/// `mode` shapes the stream: bits 0–1 pick the largest read (1, 7, 64 or 4096 bytes), bit 2
/// makes every other read fail with `WouldBlock` (like a non-blocking socket), bit 3 hands the
/// first bytes to tungstenite as already read (like the bytes behind a TLS handshake head).
/// The size limits are those of [`Builder::max_message_size`](crate::Builder::max_message_size)
/// and [`Builder::max_frame_size`](crate::Builder::max_frame_size).
///
/// Properties: nothing panics (nor loops without progress); no message exceeds the size limit.
pub fn inbound(mode: u8, max_message_size: usize, max_frame_size: usize, bytes: &[u8]) {
    let split = if mode & 8 != 0 { bytes.len() / 2 } else { 0 };
    let max_frame_size = max_frame_size.min(max_message_size);
    run_inbound(
        bytes[..split].to_vec(),
        &bytes[split..],
        mode,
        max_message_size,
        max_frame_size,
    );
}

/// Feeds `bytes`, as sent by a server that agreed to permessage-deflate, through the client's
/// compression layer (`DeflateStream`) under a client-side tungstenite `WebSocket`, the way
/// the I/O thread reads a compressed connection, and handles everything it yields as
/// [`inbound`] does.
///
/// `params` is what the server agreed to: bit 0 `server_no_context_takeover`, bit 1
/// `client_no_context_takeover`, bits 2–4 `client_max_window_bits` (8 plus their value),
/// bits 5–7 `server_max_window_bits` (likewise). `mode` shapes the stream as for [`inbound`]
/// (bit 3 hands the first half of the input to the layer as bytes read with the handshake
/// head) and picks the limits: bits 4–5 the largest message (256 B, 4 KiB, 64 KiB or
/// 1 MiB), bits 6–7 how much smaller the largest frame is (1, 2, 4 or 8 times).
///
/// Properties: nothing panics (nor loops without progress); every error is `Protocol`,
/// `MessageTooLarge` (both with a close code for the peer) or `ConnectionClosed`; no message
/// exceeds the size limit; the layer never hands on more than the limit of inflated data
/// per compressed message (however much the input would inflate to), nor counts more
/// compressed bytes than the input holds.
#[cfg(feature = "deflate")]
pub fn inflate(params: u8, mode: u8, bytes: &[u8]) {
    let negotiated = crate::deflate::Negotiated {
        server_no_context_takeover: params & 1 != 0,
        client_no_context_takeover: params & 2 != 0,
        client_max_window_bits: 8 + ((params >> 2) & 7),
        server_max_window_bits: 8 + ((params >> 5) & 7),
    };
    let max_message_size = [256, 4 << 10, 64 << 10, 1 << 20][usize::from((mode >> 4) & 3)];
    let max_frame_size = max_message_size >> ((mode >> 6) & 3);
    let split = if mode & 8 != 0 { bytes.len() / 2 } else { 0 };
    let _ = run_inflate(
        bytes[..split].to_vec(),
        &bytes[split..],
        mode,
        negotiated,
        max_message_size,
        max_frame_size,
    );
}

/// Returns what [`read_all`] returns.
#[cfg(feature = "deflate")]
fn run_inflate(
    already_read: Vec<u8>,
    rest: &[u8],
    mode: u8,
    negotiated: crate::deflate::Negotiated,
    max_message_size: usize,
    max_frame_size: usize,
) -> (usize, Option<Error>) {
    use std::sync::Arc;

    use crate::deflate::{DeflateConfig, DeflateStats, DeflateStream};

    let input_len = already_read.len() + rest.len();
    // As the engine sets the layer up: the same limits as tungstenite's.
    let config = DeflateConfig {
        max_message_size: Some(max_message_size),
        max_frame_size: Some(max_frame_size),
        ..DeflateConfig::default()
    };
    let stats = Arc::new(DeflateStats::default());
    let layer = DeflateStream::new(
        Wire::new(rest, mode),
        already_read,
        Some(negotiated),
        &config,
        Arc::clone(&stats),
    );
    let ws = WebSocket::from_raw_socket(
        layer,
        Role::Client,
        Some(ws_config(max_message_size, max_frame_size)),
    );
    let (messages, error) = read_all(ws, input_len, max_message_size);
    if let Some(err) = &error {
        match err {
            Error::Protocol(_) | Error::MessageTooLarge(_) => assert!(
                err.close_code().is_some(),
                "{err:?} has no close code for the peer"
            ),
            Error::ConnectionClosed(_) => {}
            other => panic!("unexpected error variant {other:?}"),
        }
    }
    let counts = stats.snapshot();
    assert!(
        counts.received_compressed_bytes <= input_len as u64,
        "{} compressed bytes counted from {input_len} bytes of input",
        counts.received_compressed_bytes
    );
    assert!(
        counts.received_plain_bytes <= counts.received_messages * max_message_size as u64,
        "{} bytes inflated from {} compressed messages, limit {max_message_size} each",
        counts.received_plain_bytes,
        counts.received_messages
    );
    (messages, error)
}

/// An in-memory socket: reads come from the input (in pieces, with `WouldBlock`s if asked);
/// writes are counted and discarded.
struct Wire<'a> {
    data: &'a [u8],
    max_read: usize,
    would_block: bool,
    block_next: bool,
    written: usize,
}

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.would_block {
            self.block_next = !self.block_next;
            if self.block_next && !self.data.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let n = buf.len().min(self.max_read).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> Wire<'a> {
    /// Bits 0–2 of `mode` shape the reads, as [`inbound`] describes.
    fn new(data: &'a [u8], mode: u8) -> Self {
        Wire {
            data,
            max_read: [1, 7, 64, 4096][usize::from(mode & 3)],
            would_block: mode & 4 != 0,
            block_next: false,
            written: 0,
        }
    }
}

/// As the builder configures tungstenite, with the smallest read buffer it allows (faster
/// to fuzz).
fn ws_config(max_message_size: usize, max_frame_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_frame_size))
        .read_buffer_size(4096)
}

fn run_inbound(
    already_read: Vec<u8>,
    rest: &[u8],
    mode: u8,
    max_message_size: usize,
    max_frame_size: usize,
) {
    let wire = Wire::new(rest, mode);
    let config = ws_config(max_message_size, max_frame_size);
    let ws = if already_read.is_empty() {
        WebSocket::from_raw_socket(wire, Role::Client, Some(config))
    } else {
        WebSocket::from_partially_read(wire, already_read, Role::Client, Some(config))
    };
    let _ = read_all(ws, rest.len(), max_message_size);
}

/// Reads messages until the stream ends or fails, handling each result the way the I/O
/// thread does, and checks the message size limit. Returns how many data messages arrived
/// and the error the stream ended with (`None` after a close frame).
fn read_all<S: Read + Write>(
    mut ws: WebSocket<S>,
    input_len: usize,
    max_message_size: usize,
) -> (usize, Option<Error>) {
    let mut messages = 0;
    // Every call consumes input or alternates with a WouldBlock, so this bound is never
    // reached by a working parser; it only turns a livelock into a crash.
    let mut budget = 4 * (input_len + 16);
    loop {
        budget = budget
            .checked_sub(1)
            .expect("the inbound path stopped making progress");
        let msg = match ws.read() {
            Ok(tungstenite::Message::Text(t)) => Message::Text(Utf8Bytes::from_inner(t)),
            Ok(tungstenite::Message::Binary(b)) => Message::Binary(b),
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {
                let _ = ws.flush();
                continue;
            }
            Ok(tungstenite::Message::Frame(_)) => continue,
            Ok(tungstenite::Message::Close(frame)) => {
                let frame = frame.map(CloseFrame::from_tungstenite);
                let err = Error::ConnectionClosed(frame);
                let _ = (err.to_string(), err.is_fatal());
                let _ = ws.flush();
                return (messages, None);
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                let err = Error::from(e);
                let _ = (err.to_string(), err.is_fatal(), err.is_closed());
                if let Some(code) = err.close_code() {
                    let reason = truncate(&err.to_string(), 123).to_owned();
                    let frame = CloseFrame::new(code, reason);
                    let _ = ws.close(Some(frame.to_tungstenite()));
                    let _ = ws.flush();
                }
                return (messages, Some(err));
            }
        };
        assert!(
            msg.len() <= max_message_size,
            "a message of {} bytes passed the limit of {max_message_size}",
            msg.len()
        );
        if msg.is_binary() {
            let _ = msg.to_text();
        }
        messages += 1;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The client's permessage-deflate write path, end to end.
///
/// `params` is what the server agreed to, as for [`inflate`]. `config` is the client's
/// setting: bits 0–1 pick the threshold (0, 1, 128 or 1000 bytes), bits 2–5 the level (their
/// value modulo 10), bit 6 asks for no context takeover (so both `no_context_takeover` flags
/// are negotiated too), bit 7 makes tungstenite hand every frame to the layer at once (a
/// write buffer of 0 bytes). `mode` shapes the client-to-server pipe: bits 0–1 the largest
/// write the pipe takes (any, 4096, 300 or 7 bytes), bits 2–3 how many unread bytes it holds
/// (any, 256 KiB, 16 KiB or 1000), bits 4–5 how often a call on either side fails with
/// `WouldBlock` (never, or about one call in 2, 3 or 16), bits 6–7 the largest read of the
/// server (any, 4096, 97 or 13 bytes).
///
/// `ops` is a list of steps for the client, each led by a byte whose bits 0–1 say what it is:
///
/// * 0 (text) or 1 (binary): a data message. With bit 2 clear, the next byte and bits 6–7
///   give its length (0 to 1023), and that many following bytes are its payload (fewer if the
///   input ends); with bit 3 set as well, it is sent in three fragments cut after the first
///   `a` and the next `b` bytes, `a` and `b` being the two bytes after the length, and bit 4
///   sends a ping between the first two fragments. With bit 2 set (for the first four such
///   messages; later ones are read as if it were clear), the next byte `n` makes it
///   `(32 + n % 32) << (5 + n / 32)` bytes long (1 KiB to 252 KiB) of the next `1 + (op >> 4)`
///   bytes repeated, or of noise seeded by them when bit 3 is set. A text message's payload
///   is made valid UTF-8 by replacing invalid sequences. Messages stop before 640 KiB in all.
/// * 2: a ping with the next `op >> 2` bytes as payload.
/// * 3: a flush: the client writes everything out while the server reads.
///
/// Writes the steps with a client-side tungstenite `WebSocket` over the client's
/// `DeflateStream`, into a pipe read by a server-side `WebSocket` over the server's
/// `DeflateStream` with the same parameters; the server answers pings, the client closes.
///
/// Properties: nothing panics (nor stalls); the server reads every message and ping intact
/// and in order, then the close; the client gets pongs for the pings in order, the last one
/// included. On the wire, every client frame is masked; a message has RSV1 set exactly when
/// its first frame holds at least `threshold` bytes; a message sent plain is passed through
/// byte for byte; a compressed one is split into frames of at most 128 KiB and decodes, with
/// an independent deflate decoder, to the message (after the earlier ones unless
/// `client_no_context_takeover`) with no back-reference beyond the `client_max_window_bits`
/// window. The client's counters hold the compressed messages, their plain bytes and their
/// bytes on the wire, and the server's counters agree. The layer's buffers stay within 1.5 MiB
/// however slowly the pipe drains.
#[cfg(feature = "deflate")]
pub fn deflate_roundtrip(params: u8, config: u8, mode: u8, ops: &[u8]) {
    let _ = roundtrip::run(params, config, mode, ops);
}

#[cfg(feature = "deflate")]
mod roundtrip;

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every input in `fuzz/seeds/` (starting inputs, and the inputs that once found a
    /// bug) on stable Rust, without cargo-fuzz.
    #[test]
    fn seeds_replay_cleanly() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let mut failures = Vec::new();
        let mut count = 0;
        for target in TARGETS {
            let Ok(dir) = std::fs::read_dir(seeds.join(target)) else {
                continue;
            };
            for entry in dir.flatten() {
                let data = std::fs::read(entry.path()).expect("read a seed");
                count += 1;
                let outcome = std::panic::catch_unwind(|| run(target, &data));
                if outcome.is_err() {
                    failures.push(format!("{target}/{}", entry.file_name().to_string_lossy()));
                }
            }
        }
        assert!(count > 0, "no seeds under {}", seeds.display());
        assert!(failures.is_empty(), "seeds that fail: {failures:?}");
    }

    #[test]
    fn entry_points_accept_ordinary_input() {
        url("ws://example.com:8080/feed?x=1");
        url("wss://[::1]/");
        url("not a url");
        let accept = tungstenite::handshake::derive_accept_key(KEY.as_bytes());
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        response.extend_from_slice(b"\x81\x02hi\x88\x02\x03\xe8");
        handshake_response(0, &response);
        handshake_response(0xff, b"HTTP/1.1 404 Not Found\r\n\r\n");
        proxy(
            "http://user:pw@proxy:3128",
            "localhost,.example.com",
            "api.example.com",
        );
        connect_response(b"HTTP/1.1 200 Connection established\r\n\r\n");
        for mode in 0..16 {
            inbound(
                mode,
                1024,
                512,
                b"\x81\x02hi\x82\x01\x00\x89\x00\x88\x02\x03\xe8",
            );
            inbound(mode, 1024, 512, b"\xc1\x01x");
        }
        #[cfg(feature = "json")]
        json("data.seq", "7", br#"{"data":{"seq":7}}"#);
    }

    /// The `inflate` harness really inflates: RFC 7692's examples arrive, whatever the read
    /// pattern, and broken or oversized input ends in the error the engine would report.
    #[cfg(feature = "deflate")]
    #[test]
    fn inflate_delivers_valid_messages_and_types_the_failures() {
        fn outcome(mode: u8, bytes: &[u8]) -> (usize, Option<Error>) {
            let split = if mode & 8 != 0 { bytes.len() / 2 } else { 0 };
            run_inflate(
                bytes[..split].to_vec(),
                &bytes[split..],
                mode,
                crate::deflate::Negotiated::default(),
                1024,
                1024,
            )
        }
        // "Hello" twice with context takeover (RFC 7692 §7.2.3.2), then fragmented with a
        // ping between the fragments (§7.2.3.1), then a close frame.
        let valid = b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x05\xf2\x00\x11\x00\x00\
                      \x41\x03\xf2\x48\xcd\x89\x00\x80\x04\xc9\xc9\x07\x00\x88\x02\x03\xe8";
        for mode in 0..16 {
            let (messages, error) = outcome(mode, valid);
            assert_eq!(
                (messages, error.is_none()),
                (3, true),
                "mode {mode}: {error:?}"
            );
        }
        let (messages, error) = outcome(
            3,
            b"\xc1\x07\xf2\x48\xcd\xc9\xc9\x07\x00\xc1\x03\xff\xff\xff",
        );
        assert_eq!(messages, 1);
        let code = error.as_ref().and_then(Error::close_code).map(u16::from);
        assert_eq!(code, Some(1007), "{error:?}");
        // 64 KiB of zeros compressed to a few dozen bytes, against a limit of 1 KiB.
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut bomb = Vec::with_capacity(1024);
        c.compress_vec(&[0; 64 << 10], &mut bomb, flate2::FlushCompress::Sync)
            .expect("compress");
        assert_eq!(c.total_in(), 64 << 10);
        assert!(bomb.len() < 126 && bomb.ends_with(&[0, 0, 0xff, 0xff]));
        bomb.truncate(bomb.len() - 4);
        let mut frame = vec![0xc2, bomb.len() as u8];
        frame.extend_from_slice(&bomb);
        let (messages, error) = outcome(3, &frame);
        assert_eq!(messages, 0);
        assert!(
            matches!(error, Some(Error::MessageTooLarge(_))),
            "{error:?}"
        );
        let (_, error) = outcome(3, b"\x89\x00\xc9\x00");
        let code = error.as_ref().and_then(Error::close_code).map(u16::from);
        assert_eq!(code, Some(1002), "RSV1 on a ping: {error:?}");
    }
}
