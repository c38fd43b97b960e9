//! The `deflate_roundtrip` harness: a client's compressing layer writing through a
//! slow pipe to a server's inflating layer, with an independent check of every frame.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, Utf8Bytes, WebSocket};

use crate::deflate::reference::{inflate, MAX_DISTANCE};
use crate::deflate::refusals::Refusals;
use crate::deflate::{DeflateConfig, DeflateStats, DeflateStream, Negotiated, TAIL};

/// Plain bytes one input may send: more than the writer's backlog limit (256 KiB), yet
/// quick to run (compressing, with a full flush every 256 bytes for small windows, is
/// slow under the fuzzer's instrumentation).
const MAX_TOTAL: usize = 640 << 10;
/// Large messages per input. Without a limit, nearly every input the fuzzer makes would
/// reach `MAX_TOTAL`, and run slowly.
const MAX_LARGE: usize = 4;
/// The writer cuts compressed messages into fragments of about 64 KiB; the last piece of
/// compressor input and the final flush may add to one.
const MAX_FRAGMENT: u64 = 2 * 64 * 1024;
/// What the layer may hold in its buffers. The backlog is at most 256 KiB plus one
/// write's output, compacted before its vector would grow, and trades places with the
/// fragment buffer, which is trimmed back after; with the fragment being built, the scratch
/// and the read buffer, this is a bound that only unbounded growth breaks.
const MAX_LAYER_MEMORY: usize = 1536 << 10;
/// Loop rounds in a row that move no byte before the harness calls it a stall. A
/// refusal comes at most one call in two, pseudo-randomly, so a working stack never
/// gets near this.
const STALL_LIMIT: u32 = 1000;

/// A data message as the wire must carry it.
#[derive(Clone)]
struct Expected {
    text: bool,
    data: Bytes,
    compressed: bool,
}

enum Step {
    Send(Message),
    Flush,
}

#[derive(Default)]
struct Plan {
    steps: Vec<Step>,
    /// What the server must read, in order: whole data messages and pings.
    events: Vec<Message>,
    data: Vec<Expected>,
    pings: Vec<Bytes>,
}

impl Plan {
    fn new(mut ops: &[u8], threshold: usize) -> Self {
        let mut plan = Plan::default();
        let (mut total, mut large) = (0usize, 0);
        while let Some((&op, rest)) = ops.split_first() {
            ops = rest;
            match op & 3 {
                2 => {
                    let n = usize::from(op >> 2).min(ops.len());
                    let (payload, rest) = ops.split_at(n);
                    ops = rest;
                    plan.ping(Bytes::copy_from_slice(payload));
                }
                3 => plan.steps.push(Step::Flush),
                kind => {
                    let Some((&len, rest)) = ops.split_first() else {
                        break;
                    };
                    ops = rest;
                    let mut cuts = None;
                    let raw = if op & 4 != 0 && large < MAX_LARGE {
                        large += 1;
                        let len = (32 + usize::from(len % 32)) << (5 + len / 32);
                        let k = (usize::from(op >> 4) + 1).min(ops.len());
                        let (pattern, rest) = ops.split_at(k);
                        ops = rest;
                        if op & 8 != 0 {
                            noise(pattern, len)
                        } else if pattern.is_empty() {
                            vec![op; len]
                        } else {
                            pattern.iter().copied().cycle().take(len).collect()
                        }
                    } else {
                        let len = usize::from(len) | usize::from(op >> 6) << 8;
                        if op & 8 != 0 {
                            let [a, b, rest @ ..] = ops else { break };
                            cuts = Some((usize::from(*a), usize::from(*b), op & 16 != 0));
                            ops = rest;
                        }
                        let (payload, rest) = ops.split_at(len.min(ops.len()));
                        ops = rest;
                        payload.to_vec()
                    };
                    let text = kind == 0;
                    let data = if text {
                        Bytes::from(String::from_utf8_lossy(&raw).into_owned())
                    } else {
                        Bytes::from(raw)
                    };
                    total += data.len();
                    if total > MAX_TOTAL {
                        break;
                    }
                    plan.message(text, data, cuts, threshold);
                }
            }
        }
        plan
    }

    fn ping(&mut self, payload: Bytes) {
        self.steps.push(Step::Send(Message::Ping(payload.clone())));
        self.events.push(Message::Ping(payload.clone()));
        self.pings.push(payload);
    }

    fn message(
        &mut self,
        text: bool,
        data: Bytes,
        cuts: Option<(usize, usize, bool)>,
        threshold: usize,
    ) {
        let whole = if text {
            Message::Text(Utf8Bytes::try_from(data.clone()).expect("lossy UTF-8 is valid"))
        } else {
            Message::Binary(data.clone())
        };
        let first_frame = match cuts {
            None => {
                self.steps.push(Step::Send(whole.clone()));
                data.len()
            }
            Some((a, b, ping)) => {
                let a = a.min(data.len());
                let b = (a + b).min(data.len());
                let first = if text { Data::Text } else { Data::Binary };
                let parts = [(first, 0, a), (Data::Continue, a, b)];
                for (i, (op, from, to)) in parts.into_iter().enumerate() {
                    let frame = Frame::message(data.slice(from..to), OpCode::Data(op), false);
                    self.steps.push(Step::Send(Message::Frame(frame)));
                    if i == 0 && ping {
                        self.ping(data.slice(..a.min(8)));
                    }
                }
                let last = Frame::message(data.slice(b..), OpCode::Data(Data::Continue), true);
                self.steps.push(Step::Send(Message::Frame(last)));
                a
            }
        };
        self.events.push(whole);
        self.data.push(Expected {
            text,
            data,
            compressed: first_frame >= threshold,
        });
    }
}

/// Pseudo-random bytes (incompressible) seeded by `seed`.
fn noise(seed: &[u8], len: usize) -> Vec<u8> {
    let mut s = seed.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |s, &b| {
        (s ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

type Shared = Rc<RefCell<VecDeque<u8>>>;

/// One end of an in-memory duplex pipe, non-blocking like a mio socket: reading an empty
/// pipe is `WouldBlock`. It may take or give only a few bytes per call, hold only so many
/// unread bytes, and refuse calls pseudo-randomly.
struct End {
    rx: Shared,
    tx: Shared,
    max_read: usize,
    max_write: usize,
    capacity: usize,
    refusals: Refusals,
    /// Bytes moved through any end, to tell progress from a stall.
    moved: Rc<Cell<u64>>,
    /// Checks what this end reads (the server's end).
    check: Option<Box<WireCheck>>,
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.refusals.tick()?;
        let mut rx = self.rx.borrow_mut();
        if rx.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let k = buf.len().min(self.max_read).min(rx.len());
        let (front, back) = rx.as_slices();
        let n = k.min(front.len());
        buf[..n].copy_from_slice(&front[..n]);
        buf[n..k].copy_from_slice(&back[..k - n]);
        rx.drain(..k);
        drop(rx);
        if let Some(check) = &mut self.check {
            check.feed(&buf[..k]);
        }
        self.moved.set(self.moved.get() + k as u64);
        Ok(k)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.refusals.tick()?;
        let mut tx = self.tx.borrow_mut();
        let room = self.capacity.saturating_sub(tx.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let k = buf.len().min(self.max_write).min(room);
        tx.extend(&buf[..k]);
        self.moved.set(self.moved.get() + k as u64);
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Header {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// Parses a complete frame header, independently of the layer's own parser.
fn parse_header(buf: &[u8]) -> Option<Header> {
    let [b0, b1, rest @ ..] = buf else {
        return None;
    };
    let (len, rest) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            rest.get(2..)?,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
            rest.get(8..)?,
        ),
        n => (u64::from(n), rest),
    };
    let mask = if b1 & 0x80 != 0 {
        Some(rest.get(..4)?.try_into().ok()?)
    } else {
        None
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 7,
        opcode: b0 & 0x0f,
        mask,
        len,
    })
}

struct InFrame {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    remaining: u64,
    offset: u64,
    /// A control frame's payload.
    control: Vec<u8>,
}

/// Follows the frames on the client-to-server wire and checks each against the plan.
struct WireCheck {
    data: VecDeque<Expected>,
    pings: VecDeque<Bytes>,
    header: Vec<u8>,
    frame: Option<InFrame>,
    /// The data message in progress and how much of it has arrived.
    message: Option<(Expected, usize)>,
    window_bits: u8,
    no_context_takeover: bool,
    /// The compressed message so far.
    compressed: Vec<u8>,
    /// What the compressed messages inflated to (at least the last 32 KiB of it), which
    /// the next one may refer to unless `no_context_takeover`.
    history: Vec<u8>,
    /// Compressed payload bytes seen.
    compressed_bytes: u64,
    closed: bool,
}

impl WireCheck {
    fn new(plan: &Plan, n: Negotiated) -> Self {
        WireCheck {
            data: plan.data.iter().cloned().collect(),
            pings: plan.pings.iter().cloned().collect(),
            header: Vec::new(),
            frame: None,
            message: None,
            window_bits: n.client_max_window_bits,
            no_context_takeover: n.client_no_context_takeover,
            compressed: Vec::new(),
            history: Vec::new(),
            compressed_bytes: 0,
            closed: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.frame {
                None => {
                    self.header.push(bytes[0]);
                    bytes = &bytes[1..];
                    if let Some(h) = parse_header(&self.header) {
                        self.header.clear();
                        self.begin(&h);
                    }
                }
                Some(f) => {
                    let k = f.remaining.min(bytes.len() as u64) as usize;
                    let mut chunk = bytes[..k].to_vec();
                    for (i, b) in chunk.iter_mut().enumerate() {
                        *b ^= f.mask[((f.offset + i as u64) % 4) as usize];
                    }
                    f.offset += k as u64;
                    f.remaining -= k as u64;
                    bytes = &bytes[k..];
                    if f.opcode & 8 != 0 {
                        f.control.extend_from_slice(&chunk);
                    } else {
                        self.payload(&chunk);
                    }
                }
            }
            if self.frame.as_ref().is_some_and(|f| f.remaining == 0) {
                self.end_frame();
            }
        }
    }

    fn begin(&mut self, h: &Header) {
        assert!(!self.closed, "a frame after the close frame");
        let mask = h.mask.expect("a client frame without a mask");
        assert_eq!(h.rsv & 3, 0, "RSV2 or RSV3 set on opcode {}", h.opcode);
        let rsv1 = h.rsv & 4 != 0;
        match h.opcode {
            1 | 2 => {
                assert!(self.message.is_none(), "a new message inside another");
                let expected = self
                    .data
                    .pop_front()
                    .expect("more data messages on the wire than were sent");
                assert_eq!(h.opcode == 1, expected.text, "the message type changed");
                assert_eq!(
                    rsv1,
                    expected.compressed,
                    "RSV1 on a message of {} bytes",
                    expected.data.len()
                );
                self.message = Some((expected, 0));
            }
            0 => {
                assert!(!rsv1, "RSV1 on a continuation frame");
                assert!(self.message.is_some(), "a continuation outside a message");
            }
            8 | 9 => {
                assert!(!rsv1, "RSV1 on a control frame");
                assert!(h.fin, "a fragmented control frame");
            }
            op => panic!("unexpected opcode {op}"),
        }
        if h.opcode & 8 == 0 && self.message.as_ref().is_some_and(|(e, _)| e.compressed) {
            assert!(
                h.len <= MAX_FRAGMENT,
                "a compressed fragment of {} bytes",
                h.len
            );
            self.compressed_bytes += h.len;
        }
        self.frame = Some(InFrame {
            opcode: h.opcode,
            fin: h.fin,
            mask,
            remaining: h.len,
            offset: 0,
            control: Vec::new(),
        });
    }

    fn payload(&mut self, chunk: &[u8]) {
        let (expected, offset) = self.message.as_mut().expect("a data frame in a message");
        if expected.compressed {
            self.compressed.extend_from_slice(chunk);
            return;
        }
        let end = *offset + chunk.len();
        assert!(
            expected.data.get(*offset..end) == Some(chunk),
            "a plain message changed at byte {offset} of {}",
            expected.data.len()
        );
        *offset = end;
    }

    /// Inflates the compressed message that just ended with the checking decoder.
    fn inflate(&mut self) {
        let (expected, offset) = self.message.as_mut().expect("a message");
        self.compressed.extend_from_slice(&TAIL);
        if self.no_context_takeover {
            self.history.clear();
        }
        let start = self.history.len();
        let limit = start + expected.data.len();
        let max_distance =
            inflate(&self.compressed, &mut self.history, limit).unwrap_or_else(|e| {
                panic!(
                    "a compressed message of {} bytes does not decode: {e}",
                    expected.data.len()
                )
            });
        assert!(
            self.history[start..] == expected.data[..],
            "a compressed message decodes to other bytes"
        );
        assert!(
            max_distance <= 1 << self.window_bits,
            "a back-reference {max_distance} bytes back, beyond the {}-bit window",
            self.window_bits
        );
        *offset = expected.data.len();
        self.compressed.clear();
        if self.history.len() > 2 * MAX_DISTANCE {
            self.history.drain(..self.history.len() - MAX_DISTANCE);
        }
    }

    fn end_frame(&mut self) {
        let f = self.frame.take().expect("a frame");
        match f.opcode {
            8 => {
                assert!(self.message.is_none(), "a close frame inside a message");
                self.closed = true;
            }
            9 => {
                let expected = self.pings.pop_front().expect("an unexpected ping");
                assert!(expected == f.control, "a ping payload changed");
            }
            _ if f.fin => {
                if self.message.as_ref().is_some_and(|(e, _)| e.compressed) {
                    self.inflate();
                }
                let (expected, offset) = self.message.take().expect("a message");
                assert_eq!(offset, expected.data.len(), "a message arrived cut short");
            }
            _ => {}
        }
    }
}

type Ws = WebSocket<DeflateStream<End>>;

struct Peers {
    client: Ws,
    server: Ws,
    moved: Rc<Cell<u64>>,
    last_moved: u64,
    stalled: u32,
    /// What the server read: data messages and pings.
    events: Vec<Message>,
    pongs: Vec<Bytes>,
    server_closed: bool,
    client_closed: bool,
    peak_memory: usize,
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Peers {
    /// Called once per round of a waiting loop.
    fn progress(&mut self, what: &str) {
        let moved = self.moved.get();
        if moved == self.last_moved {
            self.stalled += 1;
            assert!(self.stalled < STALL_LIMIT, "no progress while {what}");
        } else {
            self.last_moved = moved;
            self.stalled = 0;
        }
    }

    fn check_memory(&mut self) {
        let held = self.client.get_ref().buffered_capacity();
        self.peak_memory = self.peak_memory.max(held);
        assert!(
            held <= MAX_LAYER_MEMORY,
            "the layer holds {held} bytes of buffers"
        );
    }

    /// Reads on the server until it would block.
    fn pump_server(&mut self) {
        while !self.server_closed {
            match self.server.read() {
                Ok(Message::Close(_)) => self.server_closed = true,
                Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Ping(_))) => {
                    self.events.push(m);
                }
                Ok(other) => panic!("the server read {other:?}"),
                Err(e) if would_block(&e) => return,
                Err(e) => panic!("the server failed to read: {e}"),
            }
        }
    }

    /// Reads on the client until it would block.
    fn pump_client(&mut self) {
        while !self.client_closed {
            match self.client.read() {
                Ok(Message::Pong(p)) => self.pongs.push(p),
                Ok(Message::Close(_)) => self.client_closed = true,
                Ok(other) => panic!("the client read {other:?}"),
                Err(e) if would_block(&e) => return,
                Err(e) => panic!("the client failed to read: {e}"),
            }
        }
    }

    /// Writes all the client has out, the server reading meanwhile.
    fn flush_client(&mut self) {
        loop {
            match self.client.flush() {
                Ok(()) => return,
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("the client failed to flush: {e}"),
            }
            self.check_memory();
            self.pump_server();
            self.pump_client();
            self.progress("flushing the client");
        }
    }

    fn flush_server(&mut self) {
        loop {
            match self.server.flush() {
                Ok(()) => return,
                // After a close, tungstenite hands its reply to the layer and ends the
                // connection without flushing; a server would flush the socket then.
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("the server failed to flush: {e}"),
            }
            self.progress("flushing the server");
        }
        loop {
            match self.server.get_mut().flush() {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("the server failed to flush: {e}"),
            }
            self.progress("flushing the server's close");
        }
    }
}

/// What a run did, for the tests that check the seeds reach what they are for.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(super) struct Outcome {
    pub(super) compressed_messages: u64,
    pub(super) plain_messages: usize,
    pub(super) pings: usize,
    /// The most the client's layer held in its buffers at once.
    pub(super) peak_memory: usize,
}

pub(super) fn run(params: u8, config: u8, mode: u8, ops: &[u8]) -> Outcome {
    let no_context_takeover = config & 0x40 != 0;
    let negotiated = Negotiated {
        server_no_context_takeover: no_context_takeover || params & 1 != 0,
        client_no_context_takeover: no_context_takeover || params & 2 != 0,
        client_max_window_bits: 8 + ((params >> 2) & 7),
        server_max_window_bits: 8 + ((params >> 5) & 7),
    };
    let cfg = DeflateConfig {
        threshold: [0, 1, 128, 1000][usize::from(config & 3)],
        level: u32::from((config >> 2) & 15) % 10,
        no_context_takeover,
        ..DeflateConfig::default()
    };
    let plan = Plan::new(ops, cfg.threshold);

    let up = Shared::default();
    let down = Shared::default();
    let moved = Rc::new(Cell::new(0));
    let block_one_in = [0, 2, 3, 16][usize::from((mode >> 4) & 3)];
    let seed =
        0x2545_f491_4f6c_dd1d ^ u64::from(params) << 16 ^ u64::from(config) << 8 ^ u64::from(mode);
    let client_end = End {
        rx: Rc::clone(&down),
        tx: Rc::clone(&up),
        max_read: usize::MAX,
        max_write: [usize::MAX, 4096, 300, 7][usize::from(mode & 3)],
        capacity: [usize::MAX, 256 << 10, 16 << 10, 1000][usize::from((mode >> 2) & 3)],
        refusals: Refusals::new(block_one_in, seed),
        moved: Rc::clone(&moved),
        check: None,
    };
    let server_end = End {
        rx: up,
        tx: down,
        max_read: [usize::MAX, 4096, 97, 13][usize::from(mode >> 6)],
        max_write: usize::MAX,
        capacity: usize::MAX,
        refusals: Refusals::new(block_one_in, seed.rotate_left(32) | 1),
        moved: Rc::clone(&moved),
        check: Some(Box::new(WireCheck::new(&plan, negotiated))),
    };
    let client_stats = Arc::new(DeflateStats::default());
    let server_stats = Arc::new(DeflateStats::default());
    let mut client_config = WebSocketConfig::default().read_buffer_size(4096);
    if config & 0x80 != 0 {
        client_config = client_config.write_buffer_size(0);
    }
    let client = WebSocket::from_raw_socket(
        DeflateStream::new(
            client_end,
            Vec::new(),
            Some(negotiated),
            &cfg,
            Arc::clone(&client_stats),
        ),
        Role::Client,
        Some(client_config),
    );
    let server = WebSocket::from_raw_socket(
        DeflateStream::new_server(
            server_end,
            negotiated,
            &DeflateConfig::default(),
            Arc::clone(&server_stats),
        ),
        Role::Server,
        Some(WebSocketConfig::default().read_buffer_size(4096)),
    );
    let mut p = Peers {
        client,
        server,
        moved,
        last_moved: 0,
        stalled: 0,
        events: Vec::new(),
        pongs: Vec::new(),
        server_closed: false,
        client_closed: false,
        peak_memory: 0,
    };

    for step in &plan.steps {
        match step {
            // A refused frame stays queued in tungstenite, to go with the next flush.
            Step::Send(m) => match p.client.write(m.clone()) {
                Ok(()) => {}
                Err(e) if would_block(&e) => {}
                Err(e) => panic!("the client failed to write: {e}"),
            },
            Step::Flush => p.flush_client(),
        }
        p.check_memory();
    }
    p.flush_client();
    while p.events.len() < plan.events.len() && !p.server_closed {
        p.pump_server();
        p.progress("delivering the messages");
    }
    // The server answers the last ping when it next writes.
    p.flush_server();
    if let Some(last) = plan.pings.last() {
        while p.pongs.last() != Some(last) {
            p.pump_client();
            p.progress("waiting for the last pong");
        }
    }
    match p.client.close(None) {
        Ok(()) => {}
        Err(e) if would_block(&e) => {}
        Err(e) => panic!("the client failed to close: {e}"),
    }
    p.flush_client();
    while !p.server_closed {
        p.pump_server();
        p.progress("waiting for the close");
    }
    p.flush_server();
    while !p.client_closed {
        p.pump_client();
        p.progress("waiting for the close reply");
    }

    assert_eq!(
        p.events.len(),
        plan.events.len(),
        "the server read {} of {} messages and pings",
        p.events.len(),
        plan.events.len()
    );
    for (i, (got, sent)) in p.events.iter().zip(&plan.events).enumerate() {
        assert!(
            got == sent,
            "message {i} arrived as a {}-byte {} instead of a {}-byte {}",
            got.len(),
            kind(got),
            sent.len(),
            kind(sent)
        );
    }
    // tungstenite answers only the latest of the pings it has read at once.
    let mut unanswered = plan.pings.iter();
    for pong in &p.pongs {
        assert!(
            unanswered.any(|ping| ping == pong),
            "a pong out of order, or for no ping"
        );
    }
    assert_eq!(
        p.pongs.last(),
        plan.pings.last(),
        "the last ping went unanswered"
    );
    let wire = p
        .server
        .get_mut()
        .get_mut()
        .check
        .take()
        .expect("the wire check");
    assert!(wire.closed && wire.data.is_empty() && wire.pings.is_empty());

    let compressed = plan.data.iter().filter(|e| e.compressed);
    let messages = compressed.clone().count() as u64;
    let plain: u64 = compressed.map(|e| e.data.len() as u64).sum();
    let (c, s) = (client_stats.snapshot(), server_stats.snapshot());
    assert_eq!(
        (c.sent_messages, c.sent_plain_bytes, c.sent_compressed_bytes),
        (messages, plain, wire.compressed_bytes),
        "the client's counters"
    );
    assert_eq!(
        (
            s.received_messages,
            s.received_plain_bytes,
            s.received_compressed_bytes
        ),
        (messages, plain, wire.compressed_bytes),
        "the server's counters"
    );
    assert_eq!(
        (c.received_messages, s.sent_messages),
        (0, 0),
        "control frames counted as compressed messages"
    );
    Outcome {
        compressed_messages: messages,
        plain_messages: plan.data.len() - messages as usize,
        pings: plan.pings.len(),
        peak_memory: p.peak_memory,
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds run clean and reach what each is for: compressed and plain messages,
    /// pings, and (for `backpressure`) a writer whose backlog fills up.
    #[test]
    fn seeds_reach_the_write_paths() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/deflate_roundtrip");
        // (seed, compressed messages, plain messages, pings)
        for (name, compressed, plain, pings) in [
            ("mixed", 3, 4, 2),
            ("backpressure", 5, 0, 1),
            ("fragments", 5, 1, 3),
        ] {
            let data = std::fs::read(dir.join(name)).expect("read a seed");
            let [params, config, mode, ops @ ..] = &data[..] else {
                panic!("{name} is too short");
            };
            let outcome = run(*params, *config, *mode, ops);
            assert_eq!(
                (
                    outcome.compressed_messages,
                    outcome.plain_messages,
                    outcome.pings
                ),
                (compressed, plain, pings),
                "{name}"
            );
            if name == "backpressure" {
                // The writer's backlog filled up (256 KiB) while the pipe was full.
                assert!(outcome.peak_memory >= 256 << 10, "{name}: {outcome:?}");
            }
            assert!(crate::fuzzing::run("deflate_roundtrip", &data));
        }
    }

    /// The wire check is not vacuous: a message compressed with a 32 KiB window, reaching
    /// 600 bytes back, passes for a 15-bit window and fails for a 9-bit one, and a
    /// corrupted one fails.
    #[test]
    fn wire_check_catches_references_beyond_the_window() {
        let half = noise(b"w", 600);
        let data = Bytes::from([half.clone(), half].concat());
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut payload = Vec::with_capacity(4096);
        c.compress_vec(&data, &mut payload, flate2::FlushCompress::Sync)
            .expect("compress");
        assert!(payload.ends_with(&TAIL) && payload.len() < 1000);
        payload.truncate(payload.len() - TAIL.len());
        // FIN, RSV1, binary; masked with a zero key, 16-bit length.
        let mut wire = vec![0xc2, 0x80 | 126];
        wire.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        wire.extend_from_slice(&[0; 4]);
        wire.extend_from_slice(&payload);
        let plan = Plan {
            data: vec![Expected {
                text: false,
                data,
                compressed: true,
            }],
            ..Plan::default()
        };
        let check = |bits: u8, wire: &[u8]| {
            let n = Negotiated {
                client_max_window_bits: bits,
                ..Negotiated::default()
            };
            let mut check = WireCheck::new(&plan, n);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check.feed(wire))).is_ok()
        };
        assert!(check(15, &wire));
        assert!(!check(9, &wire));
        let mut corrupt = wire.clone();
        corrupt[10] ^= 0x10;
        assert!(!check(15, &corrupt));
    }
}
