//! permessage-deflate (RFC 7692) end to end, against servers scripted byte by byte: the
//! server's side of the extension is written here with flate2 (raw deflate, sync flush, the
//! trailing `00 00 ff ff` removed), so every frame the client gets is exactly the one the
//! test means, and every frame the client sends is read and inflated independently.
//!
//! Covered: compressed messages both ways (fragmented, with context takeover, with a ping
//! between fragments) and the compression stats; the parameters of the server's answer
//! (no context takeover, a 9-bit client window, invalid answers); decompression bombs,
//! invalid compressed data and misplaced RSV1 bits, each ending in the right error, in
//! [`State::Failed`] and in a masked close frame with the right code (1009, 1007, 1002);
//! invalid compression settings.

#![cfg_attr(not(feature = "deflate"), allow(dead_code, unused_imports))]

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::raw_ws::*;
use common::*;
use crossbeam_channel::{Receiver, Sender};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use jetsocket::{Builder, Error, State, SyncWebSocket};

/// What a sync flush ends with; removed by the sender, appended by the receiver.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The offer the client makes by default.
const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The largest client frame the scripted servers accept.
const MAX_CLIENT_FRAME: usize = 4 << 20;

// ----- the server's side of the extension ------------------------------------------------

/// Compresses `data` as one message: raw deflate ending in a sync flush, tail included.
fn deflate_sync(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let before = c.total_in();
        c.compress_vec(input, &mut out, FlushCompress::Sync)
            .expect("compress");
        input = &input[(c.total_in() - before) as usize..];
        // Stopped for want of input rather than of room: the flush is complete.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    // zlib flushes nothing when nothing came in since the last flush.
    assert!(
        out.is_empty() || out.ends_with(&TAIL),
        "a sync flush ends with 00 00 ff ff"
    );
    out
}

/// A compressed message payload as RFC 7692 §7.2.1 sends it: without the tail.
fn deflate_message(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = deflate_sync(c, data);
    if out.is_empty() {
        // An empty message: the first byte of an empty stored block (RFC 7692 §7.2.3.6).
        return vec![0x00];
    }
    out.truncate(out.len() - TAIL.len());
    out
}

fn compressor() -> Compress {
    Compress::new(Compression::default(), false)
}

/// Inflates one compressed message from the client (payload without the tail), with the
/// decompressor that holds the context of the earlier messages.
fn inflate_message(d: &mut Decompress, payload: &[u8]) -> Vec<u8> {
    let input = [payload, &TAIL[..]].concat();
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    let mut pos = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024));
        }
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            .expect("the client sent invalid compressed data");
        pos += (d.total_in() - in_before) as usize;
        if status == Status::StreamEnd || (pos == input.len() && out.len() < out.capacity()) {
            return out;
        }
        assert!(
            d.total_in() > in_before || d.total_out() > out_before,
            "the decompressor made no progress"
        );
    }
}

/// Text that compresses moderately well: random words and numbers, so that the
/// compressor finds repeats at every distance.
fn prose(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "socket", "frame", "window", "deflate", "server", "client", "message", "close", "ping",
        "pong", "buffer", "stream", "header", "mask", "text", "binary",
    ];
    let mut s = String::with_capacity(len + 32);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % 16) as usize]);
        if x % 5 == 0 {
            s.push_str(&format!(" {} ", (x >> 20) % 10_000));
        } else {
            s.push(' ');
        }
    }
    s.truncate(len);
    s
}

/// A message as the server read it from the client.
#[derive(Debug)]
struct Received {
    opcode: u8,
    /// RSV1 was set on its first frame.
    compressed: bool,
    frames: usize,
    /// The payload bytes as sent.
    wire: Vec<u8>,
    /// The payload after inflating (the same as `wire` when not compressed).
    data: Vec<u8>,
}

/// Reads the client's next data or close message, reassembling fragments and inflating it
/// with `inflater` when it is compressed. Pong payloads go to `pongs`. Panics (ending the
/// script, which the test sees as a lost result) on anything a correct client never sends.
fn next_message(
    tcp: &mut TcpStream,
    inflater: &mut Decompress,
    pongs: &mut Vec<Vec<u8>>,
) -> Option<Received> {
    let mut msg: Option<Received> = None;
    loop {
        let f = read_client_frame(tcp, MAX_CLIENT_FRAME)?;
        assert!(f.masked, "the client sent an unmasked frame: {f:?}");
        assert!(!f.rsv2 && !f.rsv3, "the client set RSV2 or RSV3: {f:?}");
        match f.opcode {
            PONG => pongs.push(f.payload),
            PING => {}
            CLOSE => {
                assert!(msg.is_none(), "close inside a fragmented message");
                return Some(Received {
                    opcode: CLOSE,
                    compressed: false,
                    frames: 1,
                    data: f.payload.clone(),
                    wire: f.payload,
                });
            }
            TEXT | BINARY => {
                assert!(msg.is_none(), "a new message inside a fragmented one");
                msg = Some(Received {
                    opcode: f.opcode,
                    compressed: f.rsv1,
                    frames: 1,
                    wire: f.payload,
                    data: Vec::new(),
                });
            }
            CONTINUATION => {
                assert!(!f.rsv1, "RSV1 on a continuation frame");
                let m = msg.as_mut().expect("a continuation without a message");
                m.frames += 1;
                m.wire.extend_from_slice(&f.payload);
            }
            op => panic!("the client sent opcode {op:#x}"),
        }
        if f.fin {
            if let Some(mut m) = msg.take() {
                m.data = if m.compressed {
                    inflate_message(inflater, &m.wire)
                } else {
                    m.wire.clone()
                };
                return Some(m);
            }
        }
    }
}

/// Answers the client's close frame with the same payload and waits for it to leave.
fn finish(tcp: &mut TcpStream, inflater: &mut Decompress) {
    let mut pongs = Vec::new();
    while let Some(m) = next_message(tcp, inflater, &mut pongs) {
        if m.opcode == CLOSE {
            let _ = tcp.write_all(&server_frame(FIN | CLOSE, &m.data));
            break;
        }
    }
    read_client_frames_until_eof(tcp, MAX_CLIENT_FRAME);
}

/// A raw server that answers the upgrade with one `Sec-WebSocket-Extensions` line per entry
/// of `extensions`, then runs `script` with the socket and the request head.
fn server(
    extensions: &[&'static str],
    script: impl Fn(&mut TcpStream, &str) + Send + Sync + 'static,
) -> RawServer {
    let extensions = extensions.to_vec();
    RawServer::start(move |mut tcp| {
        let headers: Vec<(&str, &str)> = extensions
            .iter()
            .map(|v| ("Sec-WebSocket-Extensions", *v))
            .collect();
        if let Some(head) = accept_upgrade(&mut tcp, &headers) {
            script(&mut tcp, &head);
        }
    })
}

/// A client without reconnection or heartbeats: each case is one connection.
fn client(url: String) -> Builder {
    SyncWebSocket::builder(url)
        .reconnect(false)
        .heartbeat(None)
        .connect_timeout(TIMEOUT)
}

/// The offer in a request head.
fn offer_in(head: &str) -> Option<String> {
    request_header(head, "sec-websocket-extensions")
}

fn recv_result<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(TIMEOUT * 2)
        .unwrap_or_else(|_| panic!("{what}: the scripted server gave no result"))
}

// ----- compressed messages that work ---------------------------------------------------

/// What the happy-path server saw.
struct Seen {
    head: String,
    messages: Vec<Received>,
    pongs: Vec<Vec<u8>>,
}

#[test]
#[cfg(feature = "deflate")]
fn compressed_messages_both_ways_with_context_takeover() {
    let mut c = compressor();
    let t1 = prose(3000, 1);
    let b1: Vec<u8> = (0..5000u32)
        .map(|i| (i % 251) as u8 ^ (i / 512) as u8)
        .collect();
    let t2 = prose(20_000, 2);
    let p1 = deflate_message(&mut c, t1.as_bytes());
    let p2 = deflate_message(&mut c, &b1);
    // The same text again: with the context kept, it is a handful of back-references into
    // the first message, which the client can only resolve if it kept its context too.
    let p3 = deflate_message(&mut c, t1.as_bytes());
    let p_empty = deflate_message(&mut c, b"");
    let p4 = deflate_message(&mut c, t2.as_bytes());
    assert!(
        p3.len() < 64,
        "the repeat is not a back-reference: {}",
        p3.len()
    );
    let (a, b) = (p4.len() / 3, 2 * p4.len() / 3);
    let script_bytes = [
        server_frame(FIN | RSV1 | TEXT, &p1),
        server_frame(FIN | RSV1 | BINARY, &p2),
        server_frame(FIN | RSV1 | TEXT, &p3),
        server_frame(FIN | RSV1 | BINARY, &p_empty),
        // A message in three frames, RSV1 on the first only, with a ping in between.
        server_frame(RSV1 | TEXT, &p4[..a]),
        server_frame(FIN | PING, b"mid"),
        server_frame(CONTINUATION, &p4[a..b]),
        server_frame(FIN | CONTINUATION, &p4[b..]),
        // Uncompressed messages stay allowed.
        server_frame(FIN | TEXT, b"plain"),
    ]
    .concat();
    let wire_in = (p1.len() + p2.len() + p3.len() + p_empty.len() + p4.len()) as u64;

    let (tx, rx) = crossbeam_channel::bounded::<Seen>(1);
    let server = server(&["permessage-deflate"], move |tcp, head| {
        if tcp.write_all(&script_bytes).is_err() {
            return;
        }
        let mut inflater = Decompress::new(false);
        let mut pongs = Vec::new();
        let mut messages = Vec::new();
        while messages.len() < 3 {
            match next_message(tcp, &mut inflater, &mut pongs) {
                Some(m) if m.opcode != CLOSE => messages.push(m),
                _ => break,
            }
        }
        let _ = tx.send(Seen {
            head: head.to_owned(),
            messages,
            pongs,
        });
        finish(tcp, &mut inflater);
    });

    let ws = client(server.url()).build().expect("build");
    ws.connect().expect("connect");
    let expected: [(bool, &[u8]); 6] = [
        (true, t1.as_bytes()),
        (false, &b1),
        (true, t1.as_bytes()),
        (false, b""),
        (true, t2.as_bytes()),
        (true, b"plain"),
    ];
    for (i, (is_text, data)) in expected.iter().enumerate() {
        let msg = ws
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(msg.is_text(), *is_text, "message {i}: {msg:?}");
        assert!(msg.as_bytes() == *data, "message {i}: wrong contents");
    }
    let stats = ws.stats().compression;
    assert!(stats.active, "{stats:?}");
    assert_eq!(stats.received_messages, 5, "{stats:?}");
    assert_eq!(stats.received_wire_bytes, wire_in, "{stats:?}");
    assert_eq!(
        stats.received_bytes,
        (t1.len() * 2 + b1.len() + t2.len()) as u64,
        "{stats:?}"
    );

    // Compressed both times (the second one mostly back-references), "hi" is under the
    // threshold and goes out plain.
    let big = prose(10 * 1024, 3);
    ws.send_text(big.clone()).expect("send");
    ws.send_text("hi").expect("send");
    ws.send_text(big.clone()).expect("send");
    let seen = recv_result(&rx, "happy path");
    assert_eq!(
        offer_in(&seen.head).as_deref(),
        Some(OFFER),
        "{}",
        seen.head
    );
    assert_eq!(seen.pongs, [b"mid".to_vec()], "the ping between fragments");
    let shape: Vec<(u8, bool)> = seen
        .messages
        .iter()
        .map(|m| (m.opcode, m.compressed))
        .collect();
    assert_eq!(shape, [(TEXT, true), (TEXT, false), (TEXT, true)]);
    assert!(
        seen.messages[0].data == big.as_bytes(),
        "first copy differs"
    );
    assert_eq!(seen.messages[1].data, b"hi");
    assert!(
        seen.messages[2].data == big.as_bytes(),
        "second copy differs"
    );
    assert!(
        seen.messages[0].wire.len() < big.len() / 2,
        "10 KiB of text compressed to only {} bytes",
        seen.messages[0].wire.len()
    );
    // Back-references into the first copy: a few hundred bytes at the default level 1 (whose
    // matches are short), against thousands without the context.
    assert!(
        seen.messages[2].wire.len() < seen.messages[0].wire.len() / 4,
        "the client did not keep its context: the repeat took {} bytes, the first copy {}",
        seen.messages[2].wire.len(),
        seen.messages[0].wire.len()
    );

    let stats = ws.stats().compression;
    let wire_out = (seen.messages[0].wire.len() + seen.messages[2].wire.len()) as u64;
    assert_eq!(stats.sent_messages, 2, "{stats:?}");
    assert_eq!(stats.sent_bytes, 2 * big.len() as u64, "{stats:?}");
    assert_eq!(stats.sent_wire_bytes, wire_out, "{stats:?}");
    assert!(stats.sent_ratio().is_some_and(|r| r < 0.5), "{stats:?}");
    assert!(stats.received_ratio().is_some_and(|r| r < 1.0), "{stats:?}");
    ws.close().expect("close");
    assert!(!ws.stats().compression.active);
}

#[test]
#[cfg(feature = "deflate")]
fn declined_or_disabled_compression_sends_plain_frames() {
    let (tx, rx) = crossbeam_channel::bounded::<Seen>(1);
    // The server ignores the offer.
    let server = server(&[], move |tcp, head| {
        let mut inflater = Decompress::new(false);
        let mut pongs = Vec::new();
        let messages = next_message(tcp, &mut inflater, &mut pongs)
            .into_iter()
            .collect();
        let _ = tx.send(Seen {
            head: head.to_owned(),
            messages,
            pongs,
        });
        finish(tcp, &mut inflater);
    });
    let big = prose(10 * 1024, 4);
    for enabled in [true, false] {
        let ws = client(server.url())
            .compression(enabled)
            .build()
            .expect("build");
        ws.connect().expect("connect");
        ws.send_text(big.clone()).expect("send");
        let seen = recv_result(&rx, "declined compression");
        let offer = offer_in(&seen.head);
        assert_eq!(offer.as_deref(), enabled.then_some(OFFER), "{}", seen.head);
        let [m] = seen.messages.as_slice() else {
            panic!("expected one message, got {:?}", seen.messages);
        };
        assert!(!m.compressed, "RSV1 without a negotiated extension");
        assert!(m.data == big.as_bytes());
        let stats = ws.stats().compression;
        assert!(!stats.active, "{stats:?}");
        assert_eq!(stats.sent_messages, 0, "{stats:?}");
        ws.close().expect("close");
    }
}

#[test]
#[cfg(feature = "deflate")]
fn no_context_takeover_when_the_server_confirms_it() {
    let text = prose(2000, 5);
    for answer in [
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        // We asked for client_no_context_takeover ourselves: it holds without an echo.
        "permessage-deflate; server_no_context_takeover",
    ] {
        // Each message compressed by a fresh compressor: identical payloads.
        let payload = deflate_message(&mut compressor(), text.as_bytes());
        let frames = [
            server_frame(FIN | RSV1 | TEXT, &payload),
            server_frame(FIN | RSV1 | TEXT, &payload),
        ]
        .concat();
        let (tx, rx) = crossbeam_channel::bounded::<Seen>(1);
        let server = server(&[answer], move |tcp, head| {
            if tcp.write_all(&frames).is_err() {
                return;
            }
            let mut pongs = Vec::new();
            let mut messages = Vec::new();
            // A fresh decompressor per message: the client must not refer to earlier ones.
            while messages.len() < 2 {
                match next_message(tcp, &mut Decompress::new(false), &mut pongs) {
                    Some(m) if m.opcode != CLOSE => messages.push(m),
                    _ => break,
                }
            }
            let _ = tx.send(Seen {
                head: head.to_owned(),
                messages,
                pongs,
            });
            finish(tcp, &mut Decompress::new(false));
        });
        let ws = client(server.url())
            .compression_no_context_takeover(true)
            .build()
            .expect("build");
        ws.connect().expect("connect");
        for i in 0..2 {
            let msg = ws.recv_timeout(TIMEOUT).expect("recv");
            assert_eq!(msg.as_text(), Some(text.as_str()), "{answer}: message {i}");
        }
        ws.send_text(text.clone()).expect("send");
        ws.send_text(text.clone()).expect("send");
        let seen = recv_result(&rx, answer);
        assert_eq!(
            offer_in(&seen.head).as_deref(),
            Some(
                "permessage-deflate; client_max_window_bits; server_no_context_takeover; \
                 client_no_context_takeover"
            ),
        );
        assert_eq!(seen.messages.len(), 2, "{answer}");
        for (i, m) in seen.messages.iter().enumerate() {
            assert!(
                m.compressed && m.data == text.as_bytes(),
                "{answer}: message {i}"
            );
            // Decoded on its own, where a reference into an earlier message is an error.
            let alone = [&m.wire[..], &TAIL].concat();
            match inflate_with_distances(&alone) {
                Ok((out, _)) => assert!(out == text.as_bytes(), "{answer}: message {i}"),
                Err(e) => panic!("{answer}: message {i} does not stand alone: {e}"),
            }
        }
        ws.close().expect("close");
    }
}

// ----- the client's window -------------------------------------------------------------

/// Bits of a raw deflate stream, least significant first (RFC 1951 §3.1.1).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Result<u32, String> {
        while self.count < n {
            let b = *self.data.get(self.pos).ok_or("truncated stream")?;
            self.pos += 1;
            self.buf |= u64::from(b) << self.count;
            self.count += 8;
        }
        let v = (self.buf & ((1u64 << n) - 1)) as u32;
        self.buf >>= n;
        self.count -= n;
        Ok(v)
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Huffman {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[usize::from(l)] += 1;
        }
        counts[0] = 0;
        let mut next = [0usize; 16];
        for l in 2..16 {
            next[l] = next[l - 1] + usize::from(counts[l - 1]);
        }
        let mut symbols = vec![0u16; lengths.len()];
        for (sym, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbols[next[usize::from(l)]] = sym as u16;
                next[usize::from(l)] += 1;
            }
        }
        Huffman { counts, symbols }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        // Codes of one length are consecutive integers; walk the lengths bit by bit.
        let (mut code, mut first, mut index) = (0usize, 0usize, 0usize);
        for len in 1..16 {
            code |= bits.take(1)? as usize;
            let count = usize::from(self.counts[len]);
            if code < first + count {
                return Ok(self.symbols[index + code - first]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("invalid Huffman code".into())
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Decodes a raw deflate stream that ends on a block boundary (as a run of sync-flushed
/// messages does), returning the output and the longest back-reference distance. flate2
/// has no way to report (or limit) the distances, and only they show whether a stream fits
/// a window smaller than 32 KiB.
fn inflate_with_distances(data: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut bits = Bits {
        data,
        pos: 0,
        buf: 0,
        count: 0,
    };
    let mut out = Vec::new();
    let mut max_distance = 0;
    while !(bits.pos == data.len() && bits.count == 0) {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                // Stored: skip to the byte boundary (fewer than 8 bits are ever buffered).
                bits.buf = 0;
                bits.count = 0;
                let head = data.get(bits.pos..bits.pos + 4).ok_or("truncated")?;
                let len = u16::from_le_bytes([head[0], head[1]]);
                if len != !u16::from_le_bytes([head[2], head[3]]) {
                    return Err("stored block length check failed".into());
                }
                let start = bits.pos + 4;
                let body = data
                    .get(start..start + usize::from(len))
                    .ok_or("truncated")?;
                out.extend_from_slice(body);
                bits.pos = start + usize::from(len);
            }
            1 => {
                let mut lengths = [8u8; 288];
                lengths[144..256].fill(9);
                lengths[256..280].fill(7);
                let literals = Huffman::new(&lengths);
                let distances = Huffman::new(&[5; 30]);
                codes(
                    &mut bits,
                    &mut out,
                    &mut max_distance,
                    &literals,
                    &distances,
                )?;
            }
            2 => {
                let literal_count = bits.take(5)? as usize + 257;
                let distance_count = bits.take(5)? as usize + 1;
                let code_count = bits.take(4)? as usize + 4;
                const ORDER: [usize; 19] = [
                    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                ];
                let mut code_lengths = [0u8; 19];
                for &i in &ORDER[..code_count] {
                    code_lengths[i] = bits.take(3)? as u8;
                }
                let code_code = Huffman::new(&code_lengths);
                let total = literal_count + distance_count;
                let mut lengths: Vec<u8> = Vec::with_capacity(total);
                while lengths.len() < total {
                    let (value, repeat) = match code_code.decode(&mut bits)? {
                        sym @ 0..=15 => (sym as u8, 1),
                        16 => (
                            *lengths.last().ok_or("repeat without a length")?,
                            3 + bits.take(2)?,
                        ),
                        17 => (0, 3 + bits.take(3)?),
                        18 => (0, 11 + bits.take(7)?),
                        _ => return Err("invalid code length code".into()),
                    };
                    let repeat = repeat as usize;
                    if lengths.len() + repeat > total {
                        return Err("code lengths overflow".into());
                    }
                    lengths.extend(std::iter::repeat_n(value, repeat));
                }
                let literals = Huffman::new(&lengths[..literal_count]);
                let distances = Huffman::new(&lengths[literal_count..]);
                codes(
                    &mut bits,
                    &mut out,
                    &mut max_distance,
                    &literals,
                    &distances,
                )?;
            }
            _ => return Err("reserved block type".into()),
        }
        if last {
            break;
        }
    }
    Ok((out, max_distance))
}

/// The symbols of one Huffman-coded block, up to its end-of-block code.
fn codes(
    bits: &mut Bits<'_>,
    out: &mut Vec<u8>,
    max_distance: &mut usize,
    literals: &Huffman,
    distances: &Huffman,
) -> Result<(), String> {
    loop {
        match literals.decode(bits)? {
            sym @ 0..=255 => out.push(sym as u8),
            256 => return Ok(()),
            sym @ 257..=285 => {
                let i = usize::from(sym - 257);
                let len = usize::from(LENGTH_BASE[i]) + bits.take(LENGTH_EXTRA[i])? as usize;
                let d = usize::from(distances.decode(bits)?);
                if d >= DISTANCE_BASE.len() {
                    return Err("invalid distance code".into());
                }
                let distance =
                    usize::from(DISTANCE_BASE[d]) + bits.take(DISTANCE_EXTRA[d])? as usize;
                if distance > out.len() {
                    return Err("distance before the start of the stream".into());
                }
                *max_distance = (*max_distance).max(distance);
                let from = out.len() - distance;
                for k in 0..len {
                    out.push(out[from + k]);
                }
            }
            _ => return Err("invalid literal/length code".into()),
        }
    }
}

#[test]
fn the_reference_decoder_sees_long_distances_in_a_32k_window() {
    // The check below is only meaningful if the decoder is right and the text has repeats
    // further back than 512 bytes: with the default window, a compressor uses them.
    let text = prose(200 * 1024, 6);
    let stream = deflate_sync(&mut compressor(), text.as_bytes());
    let (out, max_distance) = inflate_with_distances(&stream).expect("decode");
    assert!(out == text.as_bytes(), "the reference decoder is wrong");
    assert!(max_distance > 4096, "longest distance {max_distance}");
}

#[test]
#[cfg(feature = "deflate")]
fn server_limiting_the_client_window_to_9_bits() {
    let (tx, rx) = crossbeam_channel::bounded::<(Vec<Received>, Vec<u8>)>(1);
    let server = server(
        &["permessage-deflate; client_max_window_bits=9"],
        move |tcp, _head| {
            let mut inflater = Decompress::new(false);
            let mut pongs = Vec::new();
            let mut messages = Vec::new();
            // Every compressed message with its tail: one continuous deflate stream.
            let mut stream = Vec::new();
            while messages.len() < 2 {
                match next_message(tcp, &mut inflater, &mut pongs) {
                    Some(m) if m.opcode != CLOSE => {
                        if m.compressed {
                            stream.extend_from_slice(&m.wire);
                            stream.extend_from_slice(&TAIL);
                        }
                        messages.push(m);
                    }
                    _ => break,
                }
            }
            let _ = tx.send((messages, stream));
            finish(tcp, &mut inflater);
        },
    );
    let ws = client(server.url()).build().expect("build");
    ws.connect().expect("connect");
    let first = prose(200 * 1024, 7);
    let second = prose(30 * 1024, 8);
    ws.send_text(first.clone()).expect("send");
    ws.send_text(second.clone()).expect("send");
    let (messages, stream) = recv_result(&rx, "9-bit window");
    assert_eq!(messages.len(), 2);
    for (m, text) in messages.iter().zip([&first, &second]) {
        assert!(m.compressed, "sent uncompressed");
        assert!(m.data == text.as_bytes(), "flate2 inflated something else");
    }
    // flate2 always inflates with a 32 KiB window, so it would accept distances up to
    // 32 KiB; the reference decoder shows they stay within the 512 bytes agreed on.
    let (out, max_distance) = inflate_with_distances(&stream).expect("reference decode");
    assert!(out == [first.as_bytes(), second.as_bytes()].concat());
    assert!(
        (1..=512).contains(&max_distance),
        "back-reference of {max_distance} bytes in a 9-bit window"
    );
    ws.close().expect("close");
}

// ----- failures after the handshake -----------------------------------------------------

/// Connects to a server that answers with `extension` (if any), sends a plain text message
/// "before" and then `hostile`. Checks that "before" is delivered, that `recv` then fails
/// with an error `expected` accepts, that the state is Failed, and that the client sent
/// exactly one (masked) close frame, with `code`. Returns the error and the client.
fn failure_case(
    case: &str,
    configure: impl FnOnce(Builder) -> Builder,
    extension: Option<&'static str>,
    hostile: Vec<u8>,
    expected: impl Fn(&Error) -> bool,
    code: u16,
) -> (Error, SyncWebSocket) {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<ClientFrame>>(1);
    let tx: Sender<Vec<ClientFrame>> = tx;
    let extensions: &[&'static str] = match &extension {
        Some(e) => std::slice::from_ref(e),
        None => &[],
    };
    let server = server(extensions, move |tcp, _head| {
        let bytes = [server_frame(FIN | TEXT, b"before"), hostile.clone()].concat();
        // The client may leave before reading it all: what it sent back still counts.
        let _ = tcp.write_all(&bytes);
        let _ = tx.send(read_client_frames_until_eof(tcp, MAX_CLIENT_FRAME));
    });
    let ws = configure(client(server.url())).build().expect("build");
    let err = connect_then_error_after_before(&ws, case);
    assert!(expected(&err), "{case}: unexpected error {err:?}");
    assert_eq!(ws.state(), State::Failed, "{case}: state after {err}");
    let frames = recv_result(&rx, case);
    assert!(
        frames.iter().all(|f| f.masked),
        "{case}: unmasked frame from the client: {frames:?}"
    );
    let codes: Vec<u16> = frames.iter().filter_map(ClientFrame::close_code).collect();
    assert_eq!(
        codes,
        [code],
        "{case}: close codes sent (frames {frames:?})"
    );
    (err, ws)
}

fn is_too_large(e: &Error) -> bool {
    matches!(e, Error::MessageTooLarge(_))
}

fn is_protocol(e: &Error) -> bool {
    matches!(e, Error::Protocol(_))
}

fn is_invalid_data(e: &Error) -> bool {
    matches!(e, Error::Protocol(m) if m.starts_with("invalid compressed message"))
}

/// A compressed message that inflates to `mebibytes` MiB of zeros, built without ever
/// holding them: one MiB is compressed once and its output (ending in a sync flush, so on a
/// byte boundary and without a final block) repeated. Each copy refers only to the zeros
/// before it, so the copies decode one after another.
fn zeros_bomb(mebibytes: usize) -> Vec<u8> {
    let one = deflate_sync(
        &mut Compress::new(Compression::best(), false),
        &vec![0u8; 1 << 20],
    );
    let mut bomb = one.repeat(mebibytes);
    bomb.truncate(bomb.len() - TAIL.len());
    bomb
}

#[test]
#[cfg(feature = "deflate")]
fn decompression_bomb_fails_with_1009_in_bounded_memory() {
    const LIMIT: usize = 1 << 20;
    let bomb = zeros_bomb(256);
    assert!(bomb.len() < LIMIT / 2, "bomb of {} bytes", bomb.len());
    let limits = |b: Builder| b.max_message_size(LIMIT).max_frame_size(LIMIT);

    let rss_before = rss_bytes();
    let (err, ws) = failure_case(
        "256 MiB of zeros in one frame",
        limits,
        Some("permessage-deflate"),
        server_frame(FIN | RSV1 | BINARY, &bomb),
        is_too_large,
        1009,
    );
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        growth < 32 << 20,
        "RSS grew by {} MiB inflating a bomb ({err})",
        growth >> 20
    );
    // The layer stopped inflating at the limit (plus at most one fragment).
    let inflated = ws.stats().compression.received_bytes;
    assert!(
        inflated <= (LIMIT + (64 << 10)) as u64,
        "{inflated} bytes inflated"
    );

    // The same bomb cut into small frames: each one is harmless, together they are not.
    let mut frames = Vec::new();
    let pieces: Vec<&[u8]> = bomb.chunks(4096).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let first = match (i == 0, i + 1 == pieces.len()) {
            (true, _) => RSV1 | BINARY,
            (false, true) => FIN | CONTINUATION,
            (false, false) => CONTINUATION,
        };
        frames.extend_from_slice(&server_frame(first, piece));
    }
    failure_case(
        "256 MiB of zeros in 4 KiB frames",
        limits,
        Some("permessage-deflate"),
        frames,
        is_too_large,
        1009,
    );

    // A compressed frame over max_frame_size (incompressible data grows a little).
    let mut noise = vec![0u8; 96 << 10];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let payload = deflate_message(&mut compressor(), &noise);
    failure_case(
        "compressed frame over max_frame_size",
        |b| b.max_message_size(LIMIT).max_frame_size(64 << 10),
        Some("permessage-deflate"),
        server_frame(FIN | RSV1 | BINARY, &payload),
        is_too_large,
        1009,
    );
}

#[test]
#[cfg(feature = "deflate")]
fn invalid_compressed_data_fails_with_1007() {
    let cases: [(&str, Vec<u8>); 3] = [
        ("reserved block type", vec![0xff, 0xff, 0xff, 0xff]),
        (
            "stored block with a wrong length check",
            vec![0x00, 0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o'],
        ),
        ("garbage after valid compressed data", {
            let mut p = deflate_message(&mut compressor(), b"valid start");
            p.extend_from_slice(&[0x07, 0xff, 0xff]);
            p
        }),
    ];
    for (case, payload) in cases {
        let (err, _ws) = failure_case(
            case,
            |b| b,
            Some("permessage-deflate"),
            server_frame(FIN | RSV1 | TEXT, &payload),
            is_invalid_data,
            1007,
        );
        assert!(err.to_string().contains("compressed"), "{case}: {err}");
    }
    // Valid compressed data that inflates to invalid UTF-8 in a text message.
    let payload = deflate_message(&mut compressor(), b"ok \xff\xfe");
    failure_case(
        "invalid UTF-8 after inflating",
        |b| b,
        Some("permessage-deflate"),
        server_frame(FIN | RSV1 | TEXT, &payload),
        |e| matches!(e, Error::Protocol(m) if m.contains("UTF-8")),
        1007,
    );
}

#[test]
#[cfg(feature = "deflate")]
fn misplaced_reserved_bits_fail_with_1002() {
    let part = deflate_message(&mut compressor(), prose(600, 9).as_bytes());
    let half = part.len() / 2;
    let cases: [(&str, Option<&'static str>, Vec<u8>); 6] = [
        (
            "RSV1 on a ping",
            Some("permessage-deflate"),
            server_frame(FIN | RSV1 | PING, b""),
        ),
        (
            "RSV1 on a close frame",
            Some("permessage-deflate"),
            server_frame(FIN | RSV1 | CLOSE, &1000u16.to_be_bytes()),
        ),
        (
            "RSV1 on a continuation of a compressed message",
            Some("permessage-deflate"),
            [
                server_frame(RSV1 | TEXT, &part[..half]),
                server_frame(FIN | RSV1 | CONTINUATION, &part[half..]),
            ]
            .concat(),
        ),
        (
            "RSV1 on a continuation of a plain message",
            Some("permessage-deflate"),
            [
                server_frame(TEXT, b"a"),
                server_frame(FIN | RSV1 | CONTINUATION, b"b"),
            ]
            .concat(),
        ),
        (
            "RSV2 on a compressed frame",
            Some("permessage-deflate"),
            server_frame(FIN | RSV1 | RSV2 | TEXT, &part),
        ),
        (
            "RSV1 without a negotiated extension",
            None,
            server_frame(FIN | RSV1 | TEXT, &part),
        ),
    ];
    for (case, extension, hostile) in cases {
        failure_case(case, |b| b, extension, hostile, is_protocol, 1002);
    }
}

// ----- failures in the handshake and the settings ---------------------------------------

/// The server answers the upgrade with these extension header lines; the client must fail
/// the connection with a handshake error after one attempt.
fn handshake_fails(
    case: &str,
    configure: impl FnOnce(Builder) -> Builder,
    answer: &[&'static str],
) {
    let server = server(answer, |tcp, _head| {
        read_client_frames_until_eof(tcp, MAX_CLIENT_FRAME);
    });
    let ws = configure(client(server.url())).build().expect("build");
    match ws.connect() {
        Err(Error::Handshake(why)) => assert!(
            why.contains("Sec-WebSocket-Extensions"),
            "{case}: the reason does not name the header: {why}"
        ),
        other => panic!("{case}: expected a handshake error, got {other:?}"),
    }
    assert!(
        wait_until(TIMEOUT, || ws.state() == State::Failed),
        "{case}: state {}",
        ws.state()
    );
    assert_eq!(server.connections(), 1, "{case}: retried");
}

#[test]
#[cfg(feature = "deflate")]
fn invalid_extension_answers_fail_the_handshake() {
    for answer in [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; mystery_parameter",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate;",
        "permessage-deflate, permessage-deflate",
        "x-webkit-deflate-frame",
    ] {
        handshake_fails(answer, |b| b, &[answer]);
    }
    // The header twice: one list of two extensions.
    handshake_fails(
        "two header lines",
        |b| b,
        &["permessage-deflate", "permessage-deflate"],
    );
}

#[test]
#[cfg(feature = "deflate")]
fn requested_no_context_takeover_must_be_confirmed() {
    for answer in [
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
    ] {
        handshake_fails(
            answer,
            |b| b.compression_no_context_takeover(true),
            &[answer],
        );
    }
}

#[test]
fn invalid_compression_settings_fail_at_build() {
    let url = "ws://127.0.0.1:9/";
    match SyncWebSocket::builder(url).compression_level(10).build() {
        Err(Error::InvalidConfig(why)) => assert!(why.contains("compression_level"), "{why}"),
        other => panic!("compression_level(10): {other:?}"),
    }
    for name in ["Sec-WebSocket-Extensions", "sec-websocket-extensions"] {
        match SyncWebSocket::builder(url).header(name, "x").build() {
            Err(Error::InvalidConfig(why)) => assert!(why.contains("compression"), "{why}"),
            other => panic!("header {name}: {other:?}"),
        }
    }
    for level in [0, 9] {
        SyncWebSocket::builder(url)
            .compression_level(level)
            .build()
            .unwrap_or_else(|e| panic!("compression_level({level}): {e}"));
    }
}

#[test]
#[cfg(not(feature = "deflate"))]
fn compression_without_the_feature_fails_at_build() {
    match SyncWebSocket::builder("ws://127.0.0.1:9/")
        .compression(true)
        .build()
    {
        Err(Error::InvalidConfig(why)) => assert!(why.contains("deflate"), "{why}"),
        other => panic!("compression(true) without the feature: {other:?}"),
    }
}
