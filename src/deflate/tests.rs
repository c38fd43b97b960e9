//! Tests of the whole layer: tungstenite on top of [`DeflateStream`] on top of in-memory
//! pipes, checked against RFC 7692's examples, a reference deflate decoder written here,
//! and flate2 as an independent encoder.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use flate2::{Compress, Compression, FlushCompress};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::frame::{self, apply_mask, Header};
use super::reference;
use super::refusals::Refusals;
use super::stream::PENDING_LIMIT;
use super::*;

// ----- in-memory pipes ----------------------------------------------------------------

#[derive(Default)]
struct Wire {
    data: VecDeque<u8>,
    closed: bool,
}

type Shared = Rc<RefCell<Wire>>;

/// One end of a duplex pipe, non-blocking like a mio socket: reading an empty pipe is
/// `WouldBlock`. It can also take or give only a few bytes per call, refuse some calls with
/// `WouldBlock`, and hold at most `capacity` unread bytes.
struct End {
    rx: Shared,
    tx: Shared,
    max_io: usize,
    refusals: Refusals,
    capacity: usize,
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.refusals.tick()?;
        let mut w = self.rx.borrow_mut();
        if w.data.is_empty() {
            return if w.closed {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let k = buf.len().min(self.max_io).min(w.data.len());
        for (dst, src) in buf[..k].iter_mut().zip(w.data.drain(..k)) {
            *dst = src;
        }
        Ok(k)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.refusals.tick()?;
        let mut w = self.tx.borrow_mut();
        let room = self.capacity.saturating_sub(w.data.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let k = buf.len().min(self.max_io).min(room);
        w.data.extend(&buf[..k]);
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connected pair of ends, plus handles on the client-to-server and server-to-client
/// wires for inspection.
fn pipe() -> (End, End, Shared, Shared) {
    let up = Shared::default();
    let down = Shared::default();
    let end = |rx: &Shared, tx: &Shared| End {
        rx: Rc::clone(rx),
        tx: Rc::clone(tx),
        max_io: usize::MAX,
        refusals: Refusals::new(0, 1),
        capacity: usize::MAX,
    };
    let client = end(&down, &up);
    let server = end(&up, &down);
    (client, server, up, down)
}

/// An end whose peer is a fixed byte script.
fn scripted(bytes: &[u8]) -> (End, Shared) {
    let (client, _server, up, down) = pipe();
    down.borrow_mut().data.extend(bytes);
    down.borrow_mut().closed = true;
    (client, up)
}

type Ws = WebSocket<DeflateStream<End>>;

fn ws_config(cfg: &DeflateConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(cfg.max_message_size)
        .max_frame_size(cfg.max_frame_size)
}

fn client_ws(end: End, n: Option<Negotiated>, cfg: &DeflateConfig) -> (Ws, Arc<DeflateStats>) {
    let stats = Arc::new(DeflateStats::default());
    let stream = DeflateStream::new(end, Vec::new(), n, cfg, Arc::clone(&stats));
    (
        WebSocket::from_raw_socket(stream, Role::Client, Some(ws_config(cfg))),
        stats,
    )
}

fn server_ws(end: End, n: Negotiated, cfg: &DeflateConfig) -> (Ws, Arc<DeflateStats>) {
    let stats = Arc::new(DeflateStats::default());
    let stream = DeflateStream::new_server(end, n, cfg, Arc::clone(&stats));
    (
        WebSocket::from_raw_socket(stream, Role::Server, Some(ws_config(cfg))),
        stats,
    )
}

/// Writes a message and flushes it, retrying on `WouldBlock` (the frame is buffered then).
fn send(ws: &mut Ws, msg: Message) {
    match ws.write(msg) {
        Ok(()) => {}
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => panic!("write failed: {e}"),
    }
    flush(ws);
}

fn flush(ws: &mut Ws) {
    for _ in 0..1_000_000 {
        match ws.flush() {
            Ok(()) => return,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("flush failed: {e}"),
        }
    }
    panic!("flush never completed");
}

/// Reads the next message (of any kind), retrying on `WouldBlock`.
fn recv(ws: &mut Ws) -> tungstenite::Result<Message> {
    for _ in 0..10_000_000 {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
    }
    panic!("no message arrived");
}

/// The close code a failed read carries, if it came from the compression layer.
fn close_code(err: &tungstenite::Error) -> Option<u16> {
    match err {
        tungstenite::Error::Io(e) => close_code_of(e).map(|(code, _)| code),
        _ => None,
    }
}

/// Splits wire bytes into frames, unmasking payloads.
fn frames(bytes: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let h = frame::parse(rest).unwrap().expect("complete header");
        let len = h.len as usize;
        let mut payload = rest[h.header_len..h.header_len + len].to_vec();
        if let Some(key) = h.mask {
            apply_mask(&mut payload, key, 0);
        }
        out.push((h, payload));
        rest = &rest[h.header_len + len..];
    }
    out
}

fn take_wire(wire: &Shared) -> Vec<u8> {
    wire.borrow_mut().data.drain(..).collect()
}

/// A server frame (unmasked).
fn server_frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = [0u8; frame::MAX_HEADER];
    let n = frame::encode(fin, rsv1, opcode, None, payload.len() as u64, &mut h);
    let mut v = h[..n].to_vec();
    v.extend_from_slice(payload);
    v
}

/// Raw deflate with a sync flush and the tail removed, as RFC 7692 senders do, from flate2
/// (an encoder independent of the code under test).
fn reference_deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut input = data;
    loop {
        out.reserve(64 * 1024);
        let cap = out.capacity();
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .unwrap();
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < cap {
            break;
        }
    }
    // zlib flushes nothing when nothing came in since the last flush; an empty message is
    // then the first byte of an empty stored block (RFC 7692 §7.2.3.6).
    if out.is_empty() {
        return vec![0x00];
    }
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

/// Deterministic test data: compressible text or noise.
fn text(len: usize) -> String {
    let words = [
        "alpha ",
        "beta ",
        "gamma ",
        "delta ",
        "{\"price\":",
        "42.17}, ",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(words[(x % words.len() as u64) as usize]);
    }
    s.truncate(len);
    s
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Kind, length and a checksum of each message, for assertions that print briefly.
fn summary(msgs: &[Message]) -> Vec<(&'static str, usize, u64)> {
    msgs.iter()
        .map(|m| {
            let kind = match m {
                Message::Text(_) => "text",
                Message::Binary(_) => "binary",
                Message::Ping(_) => "ping",
                Message::Pong(_) => "pong",
                _ => "other",
            };
            let data = m.clone().into_data();
            let sum = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            (kind, data.len(), sum)
        })
        .collect()
}

/// Decodes a compressed message payload with the reference decoder; returns the plain bytes
/// and the longest back-reference.
fn reference_inflate(payload: &[u8], history: &mut Vec<u8>) -> (Vec<u8>, usize) {
    let start = history.len();
    let mut data = payload.to_vec();
    data.extend_from_slice(&TAIL);
    let max = reference::inflate(&data, history, usize::MAX).expect("valid deflate data");
    (history[start..].to_vec(), max)
}

#[test]
fn reference_decoder_agrees_with_flate2() {
    let mut c = Compress::new(Compression::default(), false);
    let mut history = Vec::new();
    for msg in [
        text(10_000).into_bytes(),
        noise(5000, 7),
        Vec::new(),
        b"x".to_vec(),
    ] {
        let payload = reference_deflate(&mut c, &msg);
        let (plain, _) = reference_inflate(&payload, &mut history);
        assert_eq!(plain, msg);
    }
}

// ----- RFC 7692 examples --------------------------------------------------------------

fn read_script(script: &[u8]) -> Vec<tungstenite::Result<Message>> {
    let (end, _) = scripted(script);
    let cfg = DeflateConfig::default();
    let (mut ws, _) = client_ws(end, Some(Negotiated::default()), &cfg);
    let mut out = Vec::new();
    loop {
        let r = recv(&mut ws);
        let stop = r.is_err();
        out.push(r);
        if stop {
            return out;
        }
    }
}

fn texts(results: &[tungstenite::Result<Message>]) -> Vec<String> {
    results
        .iter()
        .filter_map(|r| match r {
            Ok(Message::Text(t)) => Some(t.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn rfc_7692_examples_inflate() {
    let hello = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    // §7.2.3.1: one compressed frame, and the same message in two fragments.
    assert_eq!(texts(&read_script(&hello)), ["Hello"]);
    let fragmented = [
        0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(texts(&read_script(&fragmented)), ["Hello"]);
    // §7.2.3.2: the second "Hello" refers back into the first (context takeover).
    let mut takeover = hello.to_vec();
    takeover.extend_from_slice(&[0xc1, 0x05, 0xf2, 0x00, 0x11, 0x00, 0x00]);
    assert_eq!(texts(&read_script(&takeover)), ["Hello", "Hello"]);
    // §7.2.3.3: a stored (uncompressed) deflate block.
    let stored = [
        0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
    ];
    assert_eq!(texts(&read_script(&stored)), ["Hello"]);
    // §7.2.3.4: a block with BFINAL set; the inflater starts afresh for the next message.
    let bfinal = [0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
    let mut twice = bfinal.to_vec();
    twice.extend_from_slice(&bfinal);
    twice.extend_from_slice(&hello);
    assert_eq!(texts(&read_script(&twice)), ["Hello", "Hello", "Hello"]);
    // §7.2.3.5: two deflate blocks in one message.
    let two_blocks = [
        0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
    ];
    assert_eq!(texts(&read_script(&two_blocks)), ["Hello"]);
    // §7.2.3.6: an empty message compresses to one 0x00 byte.
    let results = read_script(&[0xc1, 0x01, 0x00]);
    assert_eq!(texts(&results), [""]);
}

#[test]
fn rfc_7692_examples_deflate() {
    let sent = |n: Negotiated| {
        let (end, _server, up, _) = pipe();
        // The RFC's bytes come from zlib's default level.
        let cfg = DeflateConfig {
            threshold: 0,
            level: 6,
            ..DeflateConfig::default()
        };
        let (mut ws, stats) = client_ws(end, Some(n), &cfg);
        send(&mut ws, Message::text("Hello"));
        send(&mut ws, Message::text("Hello"));
        let f = frames(&take_wire(&up));
        assert_eq!(f.len(), 2);
        for (h, _) in &f {
            assert!(h.fin && h.rsv1 && h.mask.is_some() && h.opcode == frame::OP_TEXT);
        }
        let counts = stats.snapshot();
        assert_eq!(counts.sent_messages, 2);
        assert_eq!(counts.sent_plain_bytes, 10);
        assert_eq!(
            counts.sent_compressed_bytes,
            (f[0].1.len() + f[1].1.len()) as u64
        );
        (f[0].1.clone(), f[1].1.clone())
    };
    let (first, second) = sent(Negotiated::default());
    assert_eq!(first, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(second, [0xf2, 0x00, 0x11, 0x00, 0x00]);
    let (first, second) = sent(Negotiated {
        client_no_context_takeover: true,
        ..Negotiated::default()
    });
    assert_eq!(first, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    assert_eq!(second, first);
}

// ----- round trips --------------------------------------------------------------------

/// Sends `messages` both ways between a client and a server layer, checking what arrives,
/// what the wire carried (RSV1 on compressed frames, with the reference decoder agreeing)
/// and the counters.
fn round_trip(n: Negotiated, cfg: &DeflateConfig, messages: &[Message]) {
    let (c_end, s_end, up, down) = pipe();
    let (mut client, c_stats) = client_ws(c_end, Some(n), cfg);
    let (mut server, s_stats) = server_ws(s_end, n, cfg);
    let mut up_history = Vec::new();
    let mut down_history = Vec::new();
    for msg in messages {
        let len = msg.len();
        // Client to server: inspect the wire, then put the bytes back for the server.
        send(&mut client, msg.clone());
        let wire = take_wire(&up);
        check_wire(
            &wire,
            msg,
            cfg,
            n.client_max_window_bits,
            &mut up_history,
            n.client_no_context_takeover,
        );
        up.borrow_mut().data.extend(&wire);
        let got = recv(&mut server).unwrap();
        assert_eq!(
            summary(&[got]),
            summary(std::slice::from_ref(msg)),
            "client to server, {len} bytes"
        );
        // And back.
        send(&mut server, msg.clone());
        let wire = take_wire(&down);
        check_wire(
            &wire,
            msg,
            cfg,
            n.server_max_window_bits,
            &mut down_history,
            n.server_no_context_takeover,
        );
        down.borrow_mut().data.extend(&wire);
        let got = recv(&mut client).unwrap();
        assert_eq!(
            summary(&[got]),
            summary(std::slice::from_ref(msg)),
            "server to client, {len} bytes"
        );
    }
    let (c, s) = (c_stats.snapshot(), s_stats.snapshot());
    let compressed = messages.iter().filter(|m| m.len() >= cfg.threshold).count() as u64;
    let plain: u64 = messages
        .iter()
        .filter(|m| m.len() >= cfg.threshold)
        .map(|m| m.len() as u64)
        .sum();
    assert_eq!(
        (c.sent_messages, s.received_messages),
        (compressed, compressed)
    );
    assert_eq!((c.sent_plain_bytes, s.received_plain_bytes), (plain, plain));
    assert_eq!(c.sent_compressed_bytes, s.received_compressed_bytes);
    assert_eq!(
        (s.sent_messages, c.received_messages),
        (compressed, compressed)
    );
    assert_eq!(s.sent_compressed_bytes, c.received_compressed_bytes);
}

/// Checks one message's frames on the wire with the reference decoder.
fn check_wire(
    wire: &[u8],
    msg: &Message,
    cfg: &DeflateConfig,
    window_bits: u8,
    history: &mut Vec<u8>,
    no_takeover: bool,
) {
    let f = frames(wire);
    let compressed = msg.len() >= cfg.threshold;
    assert_eq!(f[0].0.rsv1, compressed);
    assert!(f[1..]
        .iter()
        .all(|(h, _)| !h.rsv1 && h.opcode == frame::OP_CONTINUATION));
    assert!(f.last().unwrap().0.fin);
    if !compressed {
        assert_eq!(f.len(), 1);
        return;
    }
    // Long messages go out in bounded fragments.
    let biggest = f.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    assert!(biggest <= 2 * 64 * 1024, "a fragment of {biggest} bytes");
    let payload: Vec<u8> = f.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    if no_takeover {
        history.clear();
    }
    let (plain, max_dist) = reference_inflate(&payload, history);
    assert_eq!(plain, msg.clone().into_data().to_vec());
    assert!(
        max_dist <= 1 << window_bits,
        "distance {max_dist} exceeds the {window_bits}-bit window"
    );
    // Keep the history bounded: only the last 32 KiB can be referenced.
    if history.len() > 1 << 20 {
        history.drain(..history.len() - (32 << 10));
    }
}

fn sizes() -> Vec<Message> {
    let mut v = Vec::new();
    for len in [0, 1, 127, 128, 129, 1000, 65535, 65536, 65537, 200_000] {
        v.push(Message::text(text(len)));
        v.push(Message::binary(noise(len, len as u64)));
        v.push(Message::binary(text(len).into_bytes()));
    }
    v
}

#[test]
fn round_trip_default_parameters() {
    round_trip(Negotiated::default(), &DeflateConfig::default(), &sizes());
}

#[test]
fn round_trip_without_context_takeover() {
    let n = Negotiated {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..Negotiated::default()
    };
    round_trip(n, &DeflateConfig::default(), &sizes());
}

#[test]
fn round_trip_small_windows_stay_within_the_window() {
    for bits in [8, 9, 12, 14] {
        let n = Negotiated {
            client_max_window_bits: bits,
            server_max_window_bits: bits,
            ..Negotiated::default()
        };
        let msgs: Vec<Message> = [0, 200, 255, 256, 257, 5000, 70_000]
            .into_iter()
            .map(|len| Message::text(text(len)))
            .collect();
        round_trip(n, &DeflateConfig::default(), &msgs);
        let n = Negotiated {
            client_no_context_takeover: true,
            ..n
        };
        round_trip(n, &DeflateConfig::default(), &msgs);
    }
}

#[test]
fn round_trip_levels_and_thresholds() {
    for level in [0, 1, 9] {
        for threshold in [0, 1, 1000] {
            let cfg = DeflateConfig {
                level,
                threshold,
                ..DeflateConfig::default()
            };
            let msgs = [
                Message::text(""),
                Message::text("a"),
                Message::text(text(999)),
                Message::text(text(1000)),
                // Empty messages right after a flush, where zlib emits nothing at all.
                Message::text(""),
                Message::binary(Vec::new()),
                Message::binary(noise(3000, 3)),
            ];
            round_trip(Negotiated::default(), &cfg, &msgs);
        }
    }
}

#[test]
fn round_trip_sixteen_mebibytes() {
    let cfg = DeflateConfig {
        level: 1,
        ..DeflateConfig::default()
    };
    let big = text(16 << 20);
    round_trip(Negotiated::default(), &cfg, &[Message::text(big)]);
}

#[test]
fn fragmented_messages_both_ways_with_interleaved_pings() {
    let n = Negotiated::default();
    let cfg = DeflateConfig::default();
    let (c_end, s_end, up, _) = pipe();
    let (mut client, _) = client_ws(c_end, Some(n), &cfg);
    let (mut server, _) = server_ws(s_end, n, &cfg);
    let body = text(3000);
    let parts = [
        &body[..1000],
        &body[1000..1001],
        &body[1001..1001],
        &body[1001..],
    ];
    // Client: a compressed fragmented text message with a ping in the middle.
    for (i, part) in parts.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let f = Frame::message(part.as_bytes().to_vec(), op, i == parts.len() - 1);
        client.write(Message::Frame(f)).unwrap();
        if i == 1 {
            client.write(Message::Ping(b"mid".to_vec().into())).unwrap();
        }
    }
    flush(&mut client);
    let wire = take_wire(&up);
    let f = frames(&wire);
    let ops: Vec<(u8, bool, bool)> = f.iter().map(|(h, _)| (h.opcode, h.rsv1, h.fin)).collect();
    assert_eq!(
        ops,
        [
            (frame::OP_TEXT, true, false),
            (frame::OP_CONTINUATION, false, false),
            (frame::OP_PING, false, true),
            (frame::OP_CONTINUATION, false, false),
            (frame::OP_CONTINUATION, false, true),
        ]
    );
    up.borrow_mut().data.extend(&wire);
    assert_eq!(
        recv(&mut server).unwrap(),
        Message::Ping(b"mid".to_vec().into())
    );
    assert_eq!(recv(&mut server).unwrap(), Message::text(body.clone()));

    // Server to client, built with flate2: four fragments, a ping between the 2nd and 3rd.
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, body.as_bytes());
    let cut = [0, 1, 2, payload.len() / 2, payload.len()];
    let mut script = Vec::new();
    for i in 0..4 {
        let (op, rsv1) = if i == 0 {
            (frame::OP_TEXT, true)
        } else {
            (frame::OP_CONTINUATION, false)
        };
        script.extend(server_frame(i == 3, rsv1, op, &payload[cut[i]..cut[i + 1]]));
        if i == 1 {
            script.extend(server_frame(true, false, frame::OP_PING, b"hi"));
        }
    }
    let (end, up) = scripted(&script);
    let (mut ws, _) = client_ws(end, Some(n), &cfg);
    assert_eq!(recv(&mut ws).unwrap(), Message::Ping(b"hi".to_vec().into()));
    assert_eq!(recv(&mut ws).unwrap(), Message::text(body));
    // tungstenite answered the ping through the layer, untouched.
    flush(&mut ws);
    let f = frames(&take_wire(&up));
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].0.opcode, f[0].0.rsv1), (frame::OP_PONG, false));
    assert_eq!(f[0].1, b"hi");
}

#[test]
fn uncompressed_fragmented_messages_pass_through() {
    let mut script = server_frame(false, false, frame::OP_BINARY, b"ab");
    script.extend(server_frame(true, false, frame::OP_PING, b""));
    script.extend(server_frame(true, false, frame::OP_CONTINUATION, b"cd"));
    script.extend(server_frame(true, false, frame::OP_TEXT, b"plain"));
    let results = read_script(&script);
    assert_eq!(
        results[0].as_ref().unwrap(),
        &Message::Ping(Vec::new().into())
    );
    assert_eq!(
        results[1].as_ref().unwrap(),
        &Message::binary(b"abcd".to_vec())
    );
    assert_eq!(results[2].as_ref().unwrap(), &Message::text("plain"));
}

// ----- limits and errors --------------------------------------------------------------

#[test]
fn decompression_bomb_is_stopped_at_the_limit() {
    let zeros = vec![0u8; 16 << 20];
    let mut c = Compress::new(Compression::best(), false);
    let payload = reference_deflate(&mut c, &zeros);
    assert!(payload.len() < 64 * 1024, "{} bytes", payload.len());
    let script = server_frame(true, true, frame::OP_BINARY, &payload);
    let (end, _) = scripted(&script);
    let cfg = DeflateConfig {
        max_message_size: Some(1 << 20),
        ..DeflateConfig::default()
    };
    let (mut ws, stats) = client_ws(end, Some(Negotiated::default()), &cfg);
    let err = recv(&mut ws).unwrap_err();
    assert_eq!(close_code(&err), Some(DeflateError::TOO_BIG), "{err}");
    // Inflated in bounded steps: no more than the limit plus one fragment came out, and
    // the layer's buffers stayed small.
    let inflated = stats.snapshot().received_plain_bytes;
    assert!(inflated <= (1 << 20) + 64 * 1024, "{inflated}");
    assert!(ws.get_ref().buffered_capacity() <= 512 * 1024);
    // The error sticks.
    assert_eq!(close_code(&recv(&mut ws).unwrap_err()), Some(1009));
}

#[test]
fn a_large_compressed_message_inflates_in_bounded_fragments() {
    let zeros = vec![0u8; 16 << 20];
    let mut c = Compress::new(Compression::fast(), false);
    let payload = reference_deflate(&mut c, &zeros);
    let script = server_frame(true, true, frame::OP_BINARY, &payload);
    let (end, _) = scripted(&script);
    let (mut ws, _) = client_ws(end, Some(Negotiated::default()), &DeflateConfig::default());
    let msg = recv(&mut ws).unwrap();
    assert_eq!(msg.len(), 16 << 20);
    assert!(msg.into_data().iter().all(|&b| b == 0));
    assert!(ws.get_ref().buffered_capacity() <= 512 * 1024);
}

#[test]
fn oversized_compressed_frame_is_too_big() {
    let cfg = DeflateConfig {
        max_frame_size: Some(10),
        ..DeflateConfig::default()
    };
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, text(1000).as_bytes());
    let (end, _) = scripted(&server_frame(true, true, frame::OP_TEXT, &payload));
    let (mut ws, _) = client_ws(end, Some(Negotiated::default()), &cfg);
    assert_eq!(close_code(&recv(&mut ws).unwrap_err()), Some(1009));
}

#[test]
fn small_frame_limit_still_inflates_within_it() {
    // tungstenite's frame limit applies to the fragments we hand it: they respect it.
    let body = text(10_000);
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, body.as_bytes());
    assert!(payload.len() < body.len() / 2);
    let cfg = DeflateConfig {
        max_frame_size: Some(payload.len()),
        ..DeflateConfig::default()
    };
    let (end, _) = scripted(&server_frame(true, true, frame::OP_TEXT, &payload));
    let (mut ws, _) = client_ws(end, Some(Negotiated::default()), &cfg);
    assert_eq!(recv(&mut ws).unwrap(), Message::text(body));
}

/// The first error a script produces, after the messages before it.
fn script_error(script: &[u8]) -> (Vec<String>, Option<u16>, String) {
    let results = read_script(script);
    let err = results.last().unwrap().as_ref().unwrap_err();
    (texts(&results), close_code(err), err.to_string())
}

#[test]
fn protocol_errors_carry_close_codes() {
    let hello = server_frame(true, false, frame::OP_TEXT, b"hello");
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            server_frame(true, true, frame::OP_PING, b""),
            1002,
            "control",
        ),
        (
            server_frame(true, true, frame::OP_CLOSE, b""),
            1002,
            "control",
        ),
        (
            [
                server_frame(false, true, frame::OP_TEXT, &[0xf2, 0x48]),
                server_frame(true, true, frame::OP_CONTINUATION, &[0xcd]),
            ]
            .concat(),
            1002,
            "continuation",
        ),
        ([0xa1, 0x00].to_vec(), 1002, "RSV2"),
        ([0x91, 0x00].to_vec(), 1002, "RSV2"),
        ([0x83, 0x00].to_vec(), 1002, "opcode"),
        ([0x8b, 0x00].to_vec(), 1002, "opcode"),
        ([0x80, 0x00].to_vec(), 1002, "continuation"),
        ([0x81, 0x81, 1, 2, 3, 4, 5].to_vec(), 1002, "masked"),
        ([0x09, 0x00].to_vec(), 1002, "fragmented control"),
        (
            server_frame(true, false, frame::OP_PING, &[0; 126]),
            1002,
            "125",
        ),
        (
            [
                server_frame(false, false, frame::OP_TEXT, b"a"),
                server_frame(true, true, frame::OP_TEXT, b"b"),
            ]
            .concat(),
            1002,
            "inside",
        ),
        // BTYPE 11 is reserved: the data is not deflate.
        (
            server_frame(true, true, frame::OP_TEXT, &[0xff, 0xff, 0xff]),
            1007,
            "compressed",
        ),
        // A stored block whose lengths disagree.
        (
            server_frame(
                true,
                true,
                frame::OP_BINARY,
                &[0x00, 0x05, 0x00, 0x00, 0x00],
            ),
            1007,
            "compressed",
        ),
        // A back-reference to before the first byte (a 3-byte copy at distance 1 with
        // nothing decoded yet).
        (
            server_frame(true, true, frame::OP_TEXT, &[0x03, 0x02]),
            1007,
            "compressed",
        ),
    ];
    for (bad, code, word) in cases {
        let script = [hello.clone(), bad.clone()].concat();
        let (got, c, msg) = script_error(&script);
        assert_eq!(got, ["hello"], "{bad:02x?}");
        assert_eq!(c, Some(code), "{bad:02x?}: {msg}");
        assert!(msg.contains(word), "{bad:02x?}: {msg}");
    }
}

#[test]
fn invalid_utf8_after_inflating_is_tungstenites_to_report() {
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, &[0xff, 0xfe, 0xfd]);
    let (end, _) = scripted(&server_frame(true, true, frame::OP_TEXT, &payload));
    let (mut ws, _) = client_ws(end, Some(Negotiated::default()), &DeflateConfig::default());
    assert!(matches!(
        recv(&mut ws).unwrap_err(),
        tungstenite::Error::Utf8(_)
    ));
}

#[test]
fn close_code_of_ignores_other_errors() {
    assert_eq!(close_code_of(&io::Error::other("boom")), None);
    assert_eq!(close_code_of(&io::ErrorKind::WouldBlock.into()), None);
    let e = DeflateError::invalid_data("bad").into_io();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert_eq!(close_code_of(&e), Some((1007, "bad".to_owned())));
    assert_eq!(e.to_string(), "bad (close code 1007)");
}

#[test]
fn without_negotiation_the_stream_is_transparent() {
    let mut script = server_frame(true, false, frame::OP_TEXT, b"plain");
    script.extend(server_frame(
        true,
        true,
        frame::OP_TEXT,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    ));
    let (end, up) = scripted(&script[3..]);
    let stream = DeflateStream::new(
        end,
        script[..3].to_vec(),
        None,
        &DeflateConfig::default(),
        Arc::default(),
    );
    assert!(!stream.is_active());
    let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    assert_eq!(ws.read().unwrap(), Message::text("plain"));
    // tungstenite itself rejects RSV1 when nothing was negotiated.
    assert!(matches!(
        ws.read().unwrap_err(),
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::NonZeroReservedBits)
    ));
    let long = text(500);
    ws.send(Message::text(long.clone())).unwrap();
    let f = frames(&take_wire(&up));
    assert!(!f[0].0.rsv1);
    assert_eq!(f[0].1, long.as_bytes());
}

#[test]
fn bytes_read_before_the_layer_are_inflated_too() {
    let mut script = server_frame(
        true,
        true,
        frame::OP_TEXT,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    );
    script.extend(server_frame(true, false, frame::OP_TEXT, b"after"));
    let (end, _) = scripted(&script[5..]);
    let stream = DeflateStream::new(
        end,
        script[..5].to_vec(),
        Some(Negotiated::default()),
        &DeflateConfig::default(),
        Arc::default(),
    );
    let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    assert_eq!(ws.read().unwrap(), Message::text("Hello"));
    assert_eq!(ws.read().unwrap(), Message::text("after"));
}

#[test]
fn end_of_stream_mid_frame_is_not_a_panic() {
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, text(5000).as_bytes());
    let full = server_frame(true, true, frame::OP_TEXT, &payload);
    for cut in [1, 2, 5, full.len() / 2, full.len() - 1] {
        let results = read_script(&full[..cut]);
        assert!(results.last().unwrap().is_err());
        assert!(texts(&results).is_empty());
    }
}

// ----- non-blocking behaviour ---------------------------------------------------------

/// A socket that takes nothing until opened.
struct Gate {
    open: bool,
    taken: Vec<u8>,
}

impl Read for Gate {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.open {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let k = buf.len().min(1000);
        self.taken.extend_from_slice(&buf[..k]);
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_refuses_input_only_when_the_backlog_is_full() {
    let cfg = DeflateConfig {
        level: 0,
        ..DeflateConfig::default()
    };
    let gate = Gate {
        open: false,
        taken: Vec::new(),
    };
    let mut s = DeflateStream::new(
        gate,
        Vec::new(),
        Some(Negotiated::default()),
        &cfg,
        Arc::default(),
    );
    // A masked binary frame of 1 MiB of noise, as tungstenite would write it.
    let body = noise(1 << 20, 9);
    let mut raw = [0u8; frame::MAX_HEADER];
    let hl = frame::encode(
        true,
        false,
        frame::OP_BINARY,
        Some([1, 2, 3, 4]),
        body.len() as u64,
        &mut raw,
    );
    let mut bytes = raw[..hl].to_vec();
    let mut masked = body.clone();
    apply_mask(&mut masked, [1, 2, 3, 4], 0);
    bytes.extend_from_slice(&masked);

    let mut taken = 0;
    loop {
        match s.write(&bytes[taken..]) {
            Ok(k) => {
                assert!(k > 0);
                taken += k;
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                break;
            }
        }
        assert!(
            taken < bytes.len(),
            "everything was accepted while the socket was shut"
        );
    }
    assert!(taken >= PENDING_LIMIT / 2, "{taken}");
    // Refusing consumed nothing, and flushing a shut socket blocks.
    assert_eq!(
        s.write(&bytes[taken..]).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    assert_eq!(s.flush().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    assert!(s.buffered_capacity() < 1 << 20);
    // Open the socket: everything goes out, in order.
    s.get_mut().open = true;
    while taken < bytes.len() {
        taken += s.write(&bytes[taken..]).unwrap();
    }
    s.flush().unwrap();
    let wire = std::mem::take(&mut s.get_mut().taken);
    let f = frames(&wire);
    assert!(f[0].0.rsv1);
    let payload: Vec<u8> = f.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (plain, _) = reference_inflate(&payload, &mut Vec::new());
    assert_eq!(plain, body);
}

#[test]
fn trickling_and_blocking_sockets_lose_nothing() {
    let n = Negotiated::default();
    let cfg = DeflateConfig::default();
    let (mut c_end, mut s_end, _, _) = pipe();
    for (end, max_io, one_in) in [(&mut c_end, 3, 2), (&mut s_end, 5, 3)] {
        end.max_io = max_io;
        end.refusals = Refusals::new(one_in, 0x0123_4567_89ab_cdef);
        end.capacity = 4096;
    }
    let (mut client, _) = client_ws(c_end, Some(n), &cfg);
    let (mut server, _) = server_ws(s_end, n, &cfg);
    let msgs: Vec<Message> = (0..40)
        .map(|i| match i % 4 {
            0 => Message::text(text(i * 37)),
            1 => Message::binary(noise(i * 101, i as u64)),
            2 => Message::text(text(300_000 + i)),
            _ => Message::Ping(vec![i as u8; 10].into()),
        })
        .collect();
    let mut next_send = 0;
    let mut received = Vec::new();
    let mut server_received = Vec::new();
    for _ in 0..10_000_000 {
        if received.len() == msgs.len() && server_received.len() == msgs.len() {
            break;
        }
        // The client sends when its previous message has gone out.
        if next_send < msgs.len() {
            match client.flush() {
                Ok(()) => {
                    let _ = client.write(msgs[next_send].clone());
                    next_send += 1;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        } else {
            let _ = client.flush();
        }
        // The server echoes what it reads.
        match server.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Ping(_))) => {
                server_received.push(m.clone());
                if !m.is_ping() {
                    let _ = server.write(m);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        let _ = server.flush();
        match client.read() {
            Ok(Message::Pong(p)) => received.push(Message::Ping(p)),
            Ok(m) => received.push(m),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(summary(&server_received), summary(&msgs));
    // Pings come back as pongs, possibly ahead of echoes still in flight; compare per kind.
    let data = |v: &[Message]| {
        summary(v)
            .into_iter()
            .filter(|s| s.0 != "ping")
            .collect::<Vec<_>>()
    };
    let pings = |v: &[Message]| {
        summary(v)
            .into_iter()
            .filter(|s| s.0 == "ping")
            .collect::<Vec<_>>()
    };
    assert_eq!(data(&received), data(&msgs));
    assert_eq!(pings(&received), pings(&msgs));
}

#[test]
fn frames_written_a_byte_at_a_time() {
    // What tungstenite writes for a few messages, captured from a transparent stream.
    let (end, _server, up, _) = pipe();
    let mut plain = WebSocket::from_raw_socket(
        DeflateStream::new(
            end,
            Vec::new(),
            None,
            &DeflateConfig::default(),
            Arc::default(),
        ),
        Role::Client,
        None,
    );
    let msgs = [
        Message::text(text(70_000)),
        Message::Ping(b"p".to_vec().into()),
        Message::binary(noise(200, 1)),
        Message::text("short"),
    ];
    for m in &msgs {
        plain.send(m.clone()).unwrap();
    }
    let bytes = take_wire(&up);
    // Fed to an active layer one byte per write.
    let (end, s_end, up, _) = pipe();
    let mut s = DeflateStream::new(
        end,
        Vec::new(),
        Some(Negotiated::default()),
        &DeflateConfig::default(),
        Arc::default(),
    );
    for b in bytes.chunks(1) {
        assert_eq!(s.write(b).unwrap(), 1);
    }
    s.flush().unwrap();
    assert!(
        frames(&up.borrow().data.iter().copied().collect::<Vec<_>>())[0]
            .0
            .rsv1
    );
    let (mut server, _) = server_ws(s_end, Negotiated::default(), &DeflateConfig::default());
    for m in &msgs {
        assert_eq!(&recv(&mut server).unwrap(), m);
    }
}

#[test]
fn reading_into_tiny_buffers() {
    // The layer must work with any caller buffer size, down to one byte.
    let body = text(5000);
    let mut c = Compress::new(Compression::default(), false);
    let payload = reference_deflate(&mut c, body.as_bytes());
    let mut script = server_frame(false, true, frame::OP_TEXT, &payload[..10]);
    script.extend(server_frame(true, false, frame::OP_PING, b"x"));
    script.extend(server_frame(
        true,
        false,
        frame::OP_CONTINUATION,
        &payload[10..],
    ));
    script.extend(server_frame(true, false, frame::OP_BINARY, &[7; 300]));
    let (end, _) = scripted(&script);
    let mut s = DeflateStream::new(
        end,
        Vec::new(),
        Some(Negotiated::default()),
        &DeflateConfig::default(),
        Arc::default(),
    );
    let mut plain = Vec::new();
    let mut one = [0u8; 1];
    loop {
        match s.read(&mut one) {
            Ok(0) => break,
            Ok(_) => plain.push(one[0]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    let f = frames(&plain);
    assert!(f.iter().all(|(h, _)| !h.rsv1));
    assert_eq!(
        f.iter().filter(|(h, _)| h.opcode == frame::OP_PING).count(),
        1
    );
    let text_payload: Vec<u8> = f
        .iter()
        .filter(|(h, _)| matches!(h.opcode, frame::OP_TEXT | frame::OP_CONTINUATION))
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    assert_eq!(text_payload, body.as_bytes());
    let last = f.last().unwrap();
    assert_eq!(
        (last.0.opcode, &last.1[..]),
        (frame::OP_BINARY, &[7u8; 300][..])
    );
}

// ----- robustness ---------------------------------------------------------------------

/// Feeds `bytes` to a client layer and reads until it ends; must neither panic nor spin.
fn chew(bytes: &[u8], role_server: bool) {
    let (end, _) = scripted(bytes);
    let cfg = DeflateConfig {
        max_message_size: Some(1 << 16),
        ..DeflateConfig::default()
    };
    let n = Negotiated {
        client_max_window_bits: 9,
        ..Negotiated::default()
    };
    let mut s = if role_server {
        DeflateStream::new_server(end, n, &cfg, Arc::default())
    } else {
        DeflateStream::new(end, Vec::new(), Some(n), &cfg, Arc::default())
    };
    let mut buf = [0u8; 777];
    for _ in 0..100_000 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Whatever it is, the writer copes too.
    let _ = s.write(bytes);
    let _ = s.flush();
}

#[test]
fn random_input_never_panics() {
    let mut c = Compress::new(Compression::default(), false);
    let valid = server_frame(
        true,
        true,
        frame::OP_TEXT,
        &reference_deflate(&mut c, text(3000).as_bytes()),
    );
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let mut bytes = if round % 2 == 0 {
            let len = (rand() % 200) as usize;
            (0..len).map(|_| rand() as u8).collect::<Vec<u8>>()
        } else {
            valid.clone()
        };
        // Flip a few bytes, keeping RSV1 frames common.
        for _ in 0..(rand() % 4) {
            if !bytes.is_empty() {
                let i = (rand() as usize) % bytes.len();
                bytes[i] ^= rand() as u8;
            }
        }
        if round % 3 == 0 && !bytes.is_empty() {
            bytes[0] = 0xc1 | (bytes[0] & 0x30);
        }
        chew(&bytes, round % 5 == 0);
    }
}
