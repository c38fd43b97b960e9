//! [`DeflateStream`]: the socket wrapper that compresses outgoing and inflates incoming
//! messages, so that tungstenite above it only ever sees plain frames.
//!
//! Both directions are streaming state machines over frame headers and payload bytes: no
//! frame or message is ever held whole. Memory per connection stays bounded by a 64 KiB read
//! buffer, one inflated fragment (at most 64 KiB), one compressed fragment being built and
//! the output waiting for the socket (256 KiB plus one write's output at worst, under 1 MiB
//! of buffers in all), plus the (de)compressor state, created only when first needed.

use std::io::{self, Read, Write};
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::protocol::Role;

use super::frame::{
    self, apply_mask, Header, MAX_HEADER, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT,
};
use super::{
    DeflateConfig, DeflateError, DeflateStats, Negotiated, MAX_WINDOW_BITS, MIN_WINDOW_BITS, TAIL,
};

/// Bytes read from the socket at a time.
const READ_BUF: usize = 64 * 1024;
/// The largest fragment handed to tungstenite (inflated) or to the socket (compressed).
const FRAGMENT: usize = 64 * 1024;
/// Above this much unsent output, `write` pushes to the socket first and reports
/// `WouldBlock` (consuming nothing) if the socket is full.
pub(super) const PENDING_LIMIT: usize = 256 * 1024;
/// A compressed frame may exceed `max_frame_size` by 1/64 of it plus this many bytes: the
/// worst-case growth of incompressible data.
const COMPRESSED_SLACK: u64 = 64;
const COMPRESSED_SLACK_DIVISOR: u64 = 64;
/// Input handed to the compressor at a time, so that a fragment overshoots `FRAGMENT` by
/// little more than this (incompressible data comes out as large as it went in).
const COMPRESS_CHUNK: usize = 16 * 1024;
/// Input taken per `write` call, so one call adds a bounded amount of output.
const WRITE_CHUNK: usize = 64 * 1024;

/// A stream that adds permessage-deflate to the frames passing through it.
///
/// Without a negotiated extension it is transparent (tungstenite then rejects RSV1 itself).
pub(crate) struct DeflateStream<S> {
    inner: S,
    mode: Mode,
}

enum Mode {
    /// Nothing negotiated: serve the bytes read before us, then delegate.
    Transparent {
        prefix: Vec<u8>,
        pos: usize,
    },
    Active(Box<Codec>),
}

struct Codec {
    reader: Reader,
    writer: Writer,
}

impl<S> std::fmt::Debug for DeflateStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateStream")
            .field("active", &self.is_active())
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> DeflateStream<S> {
    /// Wraps a client's socket. `prefix` holds bytes already read from `inner` (what came
    /// after the handshake response); they are processed first, so compressed frames in them
    /// are inflated too. With `negotiated` `None` the stream is transparent.
    pub(crate) fn new(
        inner: S,
        prefix: Vec<u8>,
        negotiated: Option<Negotiated>,
        config: &DeflateConfig,
        stats: Arc<DeflateStats>,
    ) -> Self {
        Self::with_role(inner, prefix, negotiated, config, stats, Role::Client)
    }

    /// The server side of the same layer, for tests and the fuzz targets: expects masked
    /// frames and compresses with the server's parameters.
    #[cfg(any(test, feature = "_fuzz"))]
    pub(crate) fn new_server(
        inner: S,
        negotiated: Negotiated,
        config: &DeflateConfig,
        stats: Arc<DeflateStats>,
    ) -> Self {
        Self::with_role(
            inner,
            Vec::new(),
            Some(negotiated),
            config,
            stats,
            Role::Server,
        )
    }

    fn with_role(
        inner: S,
        prefix: Vec<u8>,
        negotiated: Option<Negotiated>,
        config: &DeflateConfig,
        stats: Arc<DeflateStats>,
        role: Role,
    ) -> Self {
        let Some(n) = negotiated else {
            return DeflateStream {
                inner,
                mode: Mode::Transparent { prefix, pos: 0 },
            };
        };
        // Which side's parameters apply to what we receive and to what we send.
        let (in_reset, out_reset, out_bits) = match role {
            Role::Client => (
                n.server_no_context_takeover,
                n.client_no_context_takeover,
                n.client_max_window_bits,
            ),
            Role::Server => (
                n.client_no_context_takeover,
                n.server_no_context_takeover,
                n.server_max_window_bits,
            ),
        };
        let limit = |v: Option<usize>| v.map_or(u64::MAX, |v| v as u64);
        let fragment = config.max_frame_size.unwrap_or(FRAGMENT).clamp(1, FRAGMENT);
        // Bytes read before us are simply the first contents of the read buffer.
        let end = prefix.len();
        let reader = Reader {
            role,
            buf: prefix,
            start: 0,
            end,
            eof: false,
            state: RState::Header,
            msg: InMsg::None,
            out: Vec::new(),
            out_pos: 0,
            stage: Vec::new(),
            stage_len: 0,
            fragment,
            inflater: None,
            no_context_takeover: in_reset,
            max_message_size: limit(config.max_message_size),
            // Incompressible data grows a little when deflated (zlib's conservative bound is
            // under 1%): a frame whose plain payload fits the limit must still fit compressed.
            max_frame_size: limit(config.max_frame_size).saturating_add(
                limit(config.max_frame_size) / COMPRESSED_SLACK_DIVISOR + COMPRESSED_SLACK,
            ),
            unmasked: 0,
            error: None,
            stats: Arc::clone(&stats),
        };
        let writer = Writer {
            hdr: [0; MAX_HEADER],
            hdr_len: 0,
            state: WState::Header,
            msg: OutMsg::None,
            pending: Vec::new(),
            pending_pos: 0,
            compressor: None,
            frame: vec![0; MAX_HEADER],
            scratch: Vec::new(),
            since_full_flush: 0,
            threshold: config.threshold as u64,
            level: config.level.min(9),
            window_bits: out_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS),
            no_context_takeover: out_reset,
            stats,
        };
        DeflateStream {
            inner,
            mode: Mode::Active(Box::new(Codec { reader, writer })),
        }
    }
}

impl<S> DeflateStream<S> {
    /// The wrapped stream (for registration and shutdown).
    pub(crate) fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether compression was negotiated.
    pub(crate) fn is_active(&self) -> bool {
        matches!(self.mode, Mode::Active(_))
    }

    /// The memory held by the layer's buffers, for tests and fuzz targets that check it stays
    /// bounded.
    #[cfg(any(test, feature = "_fuzz"))]
    pub(crate) fn buffered_capacity(&self) -> usize {
        match &self.mode {
            Mode::Transparent { prefix, .. } => prefix.capacity(),
            Mode::Active(c) => {
                c.reader.buf.capacity()
                    + c.reader.out.capacity()
                    + c.reader.stage.capacity()
                    + c.writer.pending.capacity()
                    + c.writer.frame.capacity()
                    + c.writer.scratch.capacity()
            }
        }
    }
}

impl<S: Read> Read for DeflateStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.mode {
            Mode::Transparent { prefix, pos } => {
                if *pos < prefix.len() {
                    let n = buf.len().min(prefix.len() - *pos);
                    buf[..n].copy_from_slice(&prefix[*pos..*pos + n]);
                    *pos += n;
                    if *pos == prefix.len() {
                        *prefix = Vec::new();
                        *pos = 0;
                    }
                    return Ok(n);
                }
                self.inner.read(buf)
            }
            Mode::Active(codec) => codec.reader.read(&mut self.inner, buf),
        }
    }
}

impl<S: Write> Write for DeflateStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.mode {
            Mode::Transparent { .. } => self.inner.write(buf),
            Mode::Active(codec) => codec.writer.write(&mut self.inner, buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.mode {
            Mode::Transparent { .. } => self.inner.write_vectored(bufs),
            Mode::Active(codec) => {
                let buf = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                codec.writer.write(&mut self.inner, buf)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.mode {
            Mode::Transparent { .. } => self.inner.flush(),
            Mode::Active(codec) => {
                codec.writer.drain(&mut self.inner)?;
                self.inner.flush()
            }
        }
    }
}

// ----- reading ------------------------------------------------------------------------

/// Where the reader is within the current frame.
#[derive(Debug, Clone, Copy)]
enum RState {
    /// Expecting a frame header.
    Header,
    /// Copying a frame's payload unchanged.
    Pass { remaining: u64 },
    /// Feeding a compressed frame's payload to the inflater.
    Inflate {
        remaining: u64,
        fin: bool,
        mask: Option<[u8; 4]>,
        offset: u64,
    },
    /// The message's last frame is in: feeding the `00 00 ff ff` tail.
    Tail { fed: usize },
}

/// The data message in progress, if any.
#[derive(Debug, Clone, Copy)]
enum InMsg {
    None,
    /// A fragmented uncompressed message: its continuation frames pass through.
    Plain,
    Compressed {
        opcode: u8,
        /// Whether the first (non-continuation) fragment went to tungstenite.
        emitted_first: bool,
        inflated: u64,
        /// The deflate stream ended with a BFINAL block: the rest is ignored and the
        /// inflater starts afresh with the next message.
        ended: bool,
    },
}

enum Step {
    Progress,
    /// The caller's buffer is full.
    Full,
    NeedInput,
}

struct Reader {
    role: Role,
    /// Raw bytes from the socket; `buf[start..end]` is not processed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    state: RState,
    msg: InMsg,
    /// Frame bytes ready for tungstenite: `out[out_pos..]`.
    out: Vec<u8>,
    out_pos: usize,
    /// Inflated payload of the next fragment: `stage[..stage_len]`, at most `fragment`.
    stage: Vec<u8>,
    stage_len: usize,
    fragment: usize,
    inflater: Option<Decompress>,
    no_context_takeover: bool,
    max_message_size: u64,
    max_frame_size: u64,
    /// In the server role, how many bytes at `buf[start..]` are already unmasked.
    unmasked: usize,
    /// Once the peer broke the protocol, every later read fails the same way.
    error: Option<DeflateError>,
    stats: Arc<DeflateStats>,
}

impl Reader {
    fn read(&mut self, inner: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            if self.out_pos < self.out.len() {
                let k = (self.out.len() - self.out_pos).min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&self.out[self.out_pos..self.out_pos + k]);
                self.out_pos += k;
                n += k;
                if self.out_pos == self.out.len() {
                    self.out.clear();
                    self.out_pos = 0;
                }
                if n == buf.len() {
                    return Ok(n);
                }
            }
            if let Some(e) = &self.error {
                // Hand over the frames before the bad one first.
                return if n > 0 {
                    Ok(n)
                } else {
                    Err(e.clone().into_io())
                };
            }
            match self.step(buf, &mut n) {
                Ok(Step::Progress) => continue,
                Ok(Step::Full) => return Ok(n),
                Ok(Step::NeedInput) => {}
                Err(e) => {
                    self.error = Some(e);
                    continue;
                }
            }
            if n > 0 {
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            // A plain payload with nothing buffered goes straight into the caller's buffer.
            if let RState::Pass { remaining } = &mut self.state {
                if self.start == self.end && *remaining > 0 {
                    let want = (*remaining).min(buf.len() as u64) as usize;
                    let got = inner.read(&mut buf[..want])?;
                    if got == 0 {
                        self.eof = true;
                    }
                    *remaining -= got.min(want) as u64;
                    return Ok(got.min(want));
                }
            }
            self.fill(inner)?;
        }
    }

    /// Reads more raw bytes. Only called when less than a frame header is unprocessed.
    fn fill(&mut self, inner: &mut impl Read) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() < READ_BUF {
            self.buf.resize(READ_BUF, 0);
        }
        if self.end == self.buf.len() {
            // Every step consumes what it can, so this cannot happen; fail rather than spin.
            return Err(io::Error::other("compression layer: read buffer full"));
        }
        let got = inner.read(&mut self.buf[self.end..])?;
        if got == 0 {
            self.eof = true;
        }
        self.end += got.min(self.buf.len() - self.end);
        Ok(())
    }

    /// One unit of work. Runs only when `out` is empty and `buf[*n..]` has room.
    fn step(&mut self, buf: &mut [u8], n: &mut usize) -> Result<Step, DeflateError> {
        match self.state {
            RState::Header => {
                let Some(h) = frame::parse(&self.buf[self.start..self.end])? else {
                    return Ok(Step::NeedInput);
                };
                let compressed = self.begin_frame(&h)?;
                let from = self.start;
                self.start += h.header_len;
                if compressed {
                    if h.len > self.max_frame_size {
                        return Err(DeflateError::too_big(format!(
                            "compressed frame of {} bytes exceeds the limit of {}",
                            h.len, self.max_frame_size
                        )));
                    }
                    self.unmasked = 0;
                    self.state = RState::Inflate {
                        remaining: h.len,
                        fin: h.fin,
                        mask: h.mask,
                        offset: 0,
                    };
                } else {
                    // Pass the original header on: what does not fit now waits in `out`.
                    let header = &self.buf[from..self.start];
                    let k = header.len().min(buf.len() - *n);
                    buf[*n..*n + k].copy_from_slice(&header[..k]);
                    *n += k;
                    self.out.extend_from_slice(&header[k..]);
                    self.state = RState::Pass { remaining: h.len };
                }
                Ok(Step::Progress)
            }
            RState::Pass { remaining } => {
                if remaining == 0 {
                    self.state = RState::Header;
                    return Ok(Step::Progress);
                }
                let avail = self.end - self.start;
                if avail == 0 {
                    return Ok(Step::NeedInput);
                }
                let space = buf.len() - *n;
                if space == 0 {
                    return Ok(Step::Full);
                }
                let k = remaining.min(avail.min(space) as u64) as usize;
                buf[*n..*n + k].copy_from_slice(&self.buf[self.start..self.start + k]);
                *n += k;
                self.start += k;
                self.state = RState::Pass {
                    remaining: remaining - k as u64,
                };
                Ok(Step::Progress)
            }
            RState::Inflate {
                remaining,
                fin,
                mask,
                offset,
            } => self.inflate_step(remaining, fin, mask, offset),
            RState::Tail { fed } => self.tail_step(fed),
        }
    }

    /// Checks a header against RFC 6455 and 7692 and tracks the message in progress.
    /// Returns whether the frame's payload is compressed.
    fn begin_frame(&mut self, h: &Header) -> Result<bool, DeflateError> {
        if h.rsv2 || h.rsv3 {
            return Err(DeflateError::protocol(
                "RSV2 or RSV3 set, but no extension defines them",
            ));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Client, true) => return Err(DeflateError::protocol("masked frame from server")),
            (Role::Server, false) => {
                return Err(DeflateError::protocol("unmasked frame from client"))
            }
            _ => {}
        }
        if h.is_control() {
            if !matches!(h.opcode, OP_CLOSE | OP_PING | OP_PONG) {
                return Err(DeflateError::protocol(format!(
                    "unknown control opcode {:#x}",
                    h.opcode
                )));
            }
            if h.rsv1 {
                return Err(DeflateError::protocol("RSV1 set on a control frame"));
            }
            if !h.fin {
                return Err(DeflateError::protocol("fragmented control frame"));
            }
            if h.len > 125 {
                return Err(DeflateError::protocol(
                    "control frame longer than 125 bytes",
                ));
            }
            return Ok(false);
        }
        match h.opcode {
            OP_CONTINUATION => {
                if h.rsv1 {
                    return Err(DeflateError::protocol("RSV1 set on a continuation frame"));
                }
                match self.msg {
                    InMsg::None => Err(DeflateError::protocol(
                        "continuation frame without a message in progress",
                    )),
                    InMsg::Plain => {
                        if h.fin {
                            self.msg = InMsg::None;
                        }
                        Ok(false)
                    }
                    InMsg::Compressed { .. } => Ok(true),
                }
            }
            OP_TEXT | OP_BINARY => {
                if !matches!(self.msg, InMsg::None) {
                    return Err(DeflateError::protocol(
                        "new data frame inside a fragmented message",
                    ));
                }
                if h.rsv1 {
                    self.msg = InMsg::Compressed {
                        opcode: h.opcode,
                        emitted_first: false,
                        inflated: 0,
                        ended: false,
                    };
                    DeflateStats::add(&self.stats.received_messages, 1);
                    Ok(true)
                } else {
                    if !h.fin {
                        self.msg = InMsg::Plain;
                    }
                    Ok(false)
                }
            }
            op => Err(DeflateError::protocol(format!(
                "unknown data opcode {op:#x}"
            ))),
        }
    }

    fn inflate_step(
        &mut self,
        remaining: u64,
        fin: bool,
        mask: Option<[u8; 4]>,
        offset: u64,
    ) -> Result<Step, DeflateError> {
        if remaining == 0 {
            if fin {
                self.state = RState::Tail { fed: 0 };
            } else {
                // Hand over what this frame produced, so that a control frame after it
                // keeps its place.
                if self.stage_len > 0 {
                    self.emit_fragment(false);
                }
                self.state = RState::Header;
            }
            return Ok(Step::Progress);
        }
        if self.stage_len >= self.fragment {
            self.emit_fragment(false);
            return Ok(Step::Progress);
        }
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(Step::NeedInput);
        }
        let k = remaining.min(avail as u64) as usize;
        if let Some(key) = mask {
            if self.unmasked < k {
                let from = self.start + self.unmasked;
                apply_mask(
                    &mut self.buf[from..self.start + k],
                    key,
                    offset + self.unmasked as u64,
                );
                self.unmasked = k;
            }
        }
        let ended = matches!(self.msg, InMsg::Compressed { ended: true, .. });
        let consumed = if ended {
            // Whatever follows a final deflate block is ignored.
            k
        } else {
            let (consumed, _) = self.inflate(self.start, self.start + k)?;
            consumed
        };
        self.start += consumed;
        self.unmasked = self.unmasked.saturating_sub(consumed);
        DeflateStats::add(&self.stats.received_compressed_bytes, consumed);
        self.state = RState::Inflate {
            remaining: remaining - consumed as u64,
            fin,
            mask,
            offset: offset + consumed as u64,
        };
        Ok(Step::Progress)
    }

    /// Feeds `00 00 ff ff` and drains the inflater, then emits the message's last fragment.
    fn tail_step(&mut self, fed: usize) -> Result<Step, DeflateError> {
        if self.stage_len >= self.fragment {
            self.emit_fragment(false);
            return Ok(Step::Progress);
        }
        let ended = matches!(self.msg, InMsg::Compressed { ended: true, .. });
        let mut done = ended;
        if !ended {
            let space = self.fragment - self.stage_len;
            let (consumed, produced) = self.inflate_tail(fed)?;
            let fed = fed + consumed;
            let ended = matches!(self.msg, InMsg::Compressed { ended: true, .. });
            // Finished once the whole tail is in and the inflater stopped for want of input
            // rather than of room.
            done = ended || (fed == TAIL.len() && produced < space);
            self.state = RState::Tail { fed };
        }
        if done {
            self.emit_fragment(true);
            if self.no_context_takeover || matches!(self.msg, InMsg::Compressed { ended: true, .. })
            {
                if let Some(inflater) = self.inflater.as_mut() {
                    inflater.reset(false);
                }
            }
            self.msg = InMsg::None;
            self.state = RState::Header;
        }
        Ok(Step::Progress)
    }

    /// Inflates `buf[from..to]` into the stage. Returns (consumed, produced).
    fn inflate(&mut self, from: usize, to: usize) -> Result<(usize, usize), DeflateError> {
        let input = &self.buf[from..to];
        Self::run_inflater(
            &mut self.inflater,
            input,
            &mut self.stage,
            &mut self.stage_len,
            self.fragment,
            &mut self.msg,
            self.max_message_size,
        )
    }

    fn inflate_tail(&mut self, fed: usize) -> Result<(usize, usize), DeflateError> {
        let input = TAIL.get(fed..).unwrap_or_default();
        Self::run_inflater(
            &mut self.inflater,
            input,
            &mut self.stage,
            &mut self.stage_len,
            self.fragment,
            &mut self.msg,
            self.max_message_size,
        )
    }

    /// One bounded inflate call: at most `fragment - stage_len` bytes come out, so a small
    /// frame that expands enormously is cut off at the limit instead of being allocated.
    fn run_inflater(
        inflater: &mut Option<Decompress>,
        input: &[u8],
        stage: &mut Vec<u8>,
        stage_len: &mut usize,
        fragment: usize,
        msg: &mut InMsg,
        max_message_size: u64,
    ) -> Result<(usize, usize), DeflateError> {
        let inflater = inflater.get_or_insert_with(|| Decompress::new(false));
        if stage.len() < fragment {
            stage.resize(fragment, 0);
        }
        let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
        let status = inflater
            .decompress(
                input,
                &mut stage[*stage_len..fragment],
                FlushDecompress::None,
            )
            .map_err(|e| DeflateError::invalid_data(format!("invalid compressed data: {e}")))?;
        let consumed = (inflater.total_in() - in_before) as usize;
        let produced = (inflater.total_out() - out_before) as usize;
        *stage_len += produced;
        if let InMsg::Compressed {
            inflated, ended, ..
        } = msg
        {
            *inflated = inflated.saturating_add(produced as u64);
            if *inflated > max_message_size {
                return Err(DeflateError::too_big(format!(
                    "compressed message inflates past the limit of {max_message_size} bytes"
                )));
            }
            if status == Status::StreamEnd {
                *ended = true;
            } else if consumed == 0 && produced == 0 && !input.is_empty() {
                // Room and input, yet no progress: the data cannot be decoded.
                return Err(DeflateError::invalid_data("invalid compressed data"));
            }
        }
        Ok((consumed, produced))
    }

    /// Queues the stage as one plain frame of the message being inflated.
    fn emit_fragment(&mut self, fin: bool) {
        let InMsg::Compressed {
            opcode,
            emitted_first,
            ..
        } = &mut self.msg
        else {
            return;
        };
        let op = if *emitted_first {
            OP_CONTINUATION
        } else {
            *opcode
        };
        *emitted_first = true;
        // tungstenite's server side insists on masked frames; the zero key leaves the
        // payload as it is.
        let mask = match self.role {
            Role::Client => None,
            Role::Server => Some([0; 4]),
        };
        let mut header = [0u8; MAX_HEADER];
        let hl = frame::encode(fin, false, op, mask, self.stage_len as u64, &mut header);
        self.out.extend_from_slice(&header[..hl]);
        self.out.extend_from_slice(&self.stage[..self.stage_len]);
        DeflateStats::add(&self.stats.received_plain_bytes, self.stage_len);
        self.stage_len = 0;
    }
}

// ----- writing ------------------------------------------------------------------------

/// Where the writer is within the frame tungstenite is writing.
#[derive(Debug, Clone, Copy)]
enum WState {
    Header,
    Pass {
        remaining: u64,
    },
    Compress {
        remaining: u64,
        mask: Option<[u8; 4]>,
        offset: u64,
        fin: bool,
    },
}

/// The outgoing data message in progress, if it is being compressed.
#[derive(Debug, Clone, Copy)]
enum OutMsg {
    None,
    /// Fragmented and sent as it is.
    Plain,
    Compressed {
        opcode: u8,
        emitted_first: bool,
        masked: bool,
    },
}

struct Writer {
    /// The header being collected (tungstenite may split it across writes).
    hdr: [u8; MAX_HEADER],
    hdr_len: usize,
    state: WState,
    msg: OutMsg,
    /// Bytes for the socket: `pending[pending_pos..]`.
    pending: Vec<u8>,
    pending_pos: usize,
    compressor: Option<Compress>,
    /// `MAX_HEADER` bytes reserved for the header, then the compressed payload so far.
    frame: Vec<u8>,
    scratch: Vec<u8>,
    /// Input bytes since the last full flush (only tracked for windows below 32 KiB).
    since_full_flush: usize,
    threshold: u64,
    level: u32,
    window_bits: u8,
    no_context_takeover: bool,
    stats: Arc<DeflateStats>,
}

impl Writer {
    fn unsent(&self) -> usize {
        self.pending.len() - self.pending_pos
    }

    fn write(&mut self, inner: &mut impl Write, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.unsent() >= PENDING_LIMIT {
            match self.drain(inner) {
                Ok(()) => {}
                // Nothing of `buf` is taken: the caller keeps it and retries.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.unsent() >= PENDING_LIMIT {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if self.pending.len() + 2 * WRITE_CHUNK > self.pending.capacity() {
            // Reuse the space already sent instead of letting the vector double.
            self.compact();
        }
        let take = buf.len().min(WRITE_CHUNK);
        self.consume(&buf[..take])?;
        Ok(take)
    }

    /// Drops the output already sent from the front of `pending`.
    fn compact(&mut self) {
        if self.pending_pos > 0 {
            self.pending.drain(..self.pending_pos);
            self.pending_pos = 0;
        }
    }

    /// Writes pending output to the socket until it is all out or the socket blocks.
    fn drain(&mut self, inner: &mut impl Write) -> io::Result<()> {
        while self.pending_pos < self.pending.len() {
            match inner.write(&self.pending[self.pending_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => self.pending_pos += k.min(self.pending.len() - self.pending_pos),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.pending_pos >= self.pending.len() / 2 {
                        self.compact();
                    }
                    return Err(e);
                }
            }
        }
        self.pending.clear();
        self.pending_pos = 0;
        Ok(())
    }

    /// Takes all of `input` (frame bytes from tungstenite) into the state machine.
    fn consume(&mut self, mut input: &[u8]) -> io::Result<()> {
        loop {
            if let WState::Compress {
                remaining: 0, fin, ..
            } = self.state
            {
                self.end_frame(fin)?;
                self.state = WState::Header;
                continue;
            }
            if input.is_empty() {
                return Ok(());
            }
            match self.state {
                WState::Header => {
                    let take = (MAX_HEADER - self.hdr_len).min(input.len());
                    let total = self.hdr_len + take;
                    self.hdr[self.hdr_len..total].copy_from_slice(&input[..take]);
                    match frame::parse(&self.hdr[..total]) {
                        Ok(None) => {
                            self.hdr_len = total;
                            input = &input[take..];
                        }
                        Ok(Some(h)) => {
                            // The header ends inside what we just copied.
                            let used = h.header_len.checked_sub(self.hdr_len).ok_or_else(|| {
                                io::Error::new(io::ErrorKind::InvalidInput, "bad frame header")
                            })?;
                            input = &input[used.min(input.len())..];
                            self.hdr_len = 0;
                            self.begin_frame(&h);
                        }
                        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e)),
                    }
                }
                WState::Pass { remaining } => {
                    if remaining == 0 {
                        self.state = WState::Header;
                        continue;
                    }
                    let k = remaining.min(input.len() as u64) as usize;
                    self.pending.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = WState::Pass {
                        remaining: remaining - k as u64,
                    };
                }
                WState::Compress {
                    remaining,
                    mask,
                    offset,
                    fin,
                } => {
                    let k = remaining.min(input.len() as u64) as usize;
                    let mut scratch = std::mem::take(&mut self.scratch);
                    scratch.clear();
                    scratch.extend_from_slice(&input[..k]);
                    if let Some(key) = mask {
                        apply_mask(&mut scratch, key, offset);
                    }
                    let result = self.deflate(&scratch);
                    self.scratch = scratch;
                    result?;
                    DeflateStats::add(&self.stats.sent_plain_bytes, k);
                    input = &input[k..];
                    self.state = WState::Compress {
                        remaining: remaining - k as u64,
                        mask,
                        offset: offset + k as u64,
                        fin,
                    };
                }
            }
        }
    }

    /// Decides what happens to the frame whose header was just read.
    fn begin_frame(&mut self, h: &Header) {
        let compress = match h.opcode {
            _ if h.is_control() || h.rsv1 || h.rsv2 || h.rsv3 => false,
            OP_TEXT | OP_BINARY => {
                if h.len >= self.threshold {
                    self.msg = OutMsg::Compressed {
                        opcode: h.opcode,
                        emitted_first: false,
                        masked: h.mask.is_some(),
                    };
                    DeflateStats::add(&self.stats.sent_messages, 1);
                    true
                } else {
                    self.msg = if h.fin { OutMsg::None } else { OutMsg::Plain };
                    false
                }
            }
            OP_CONTINUATION => match self.msg {
                OutMsg::Compressed { .. } => true,
                _ => {
                    if h.fin {
                        self.msg = OutMsg::None;
                    }
                    false
                }
            },
            _ => false,
        };
        if compress {
            self.state = WState::Compress {
                remaining: h.len,
                mask: h.mask,
                offset: 0,
                fin: h.fin,
            };
        } else {
            self.pending.extend_from_slice(&self.hdr[..h.header_len]);
            self.state = WState::Pass { remaining: h.len };
        }
    }

    /// Compresses plain payload bytes. With a window below 32 KiB, a full flush after every
    /// 2^N bytes keeps back-references within the window (see the module docs).
    fn deflate(&mut self, mut data: &[u8]) -> io::Result<()> {
        let small_window = self.window_bits < MAX_WINDOW_BITS;
        let chunk = 1usize << self.window_bits;
        while !data.is_empty() {
            let (take, flush) = if small_window {
                let room = chunk.saturating_sub(self.since_full_flush).max(1);
                let take = room.min(data.len());
                let flush = if take == room {
                    FlushCompress::Full
                } else {
                    FlushCompress::None
                };
                (take, flush)
            } else {
                (data.len().min(COMPRESS_CHUNK), FlushCompress::None)
            };
            self.compress(&data[..take], flush)?;
            if small_window {
                self.since_full_flush = if flush == FlushCompress::Full {
                    0
                } else {
                    self.since_full_flush + take
                };
            }
            data = &data[take..];
            if self.frame.len() - MAX_HEADER >= FRAGMENT {
                // Long messages go out in fragments, so memory stays bounded.
                self.emit(false);
            }
        }
        Ok(())
    }

    /// The frame's payload is all in.
    fn end_frame(&mut self, fin: bool) -> io::Result<()> {
        if !fin {
            // Let the peer decode this fragment now.
            self.compress(&[], FlushCompress::Sync)?;
            self.emit(false);
            return Ok(());
        }
        let flush = if self.no_context_takeover {
            // A full flush also forgets the history: the next message starts afresh.
            FlushCompress::Full
        } else {
            FlushCompress::Sync
        };
        self.compress(&[], flush)?;
        if flush == FlushCompress::Full {
            self.since_full_flush = 0;
        }
        // Both flushes end with an empty stored block, `00 00 ff ff` after alignment; the
        // peer appends those 4 bytes again (RFC 7692 §7.2.1).
        if self.frame.len() == MAX_HEADER {
            // zlib emits nothing for a flush that follows another with no input in between
            // (an empty message, or an empty last fragment). One zero byte, the start of an
            // empty stored block, stands for it (RFC 7692 §7.2.3.6).
            self.frame.push(0x00);
        } else if self.frame.len() >= MAX_HEADER + TAIL.len() && self.frame.ends_with(&TAIL) {
            self.frame.truncate(self.frame.len() - TAIL.len());
        } else {
            return Err(io::Error::other(
                "compression layer: flush did not end with 00 00 ff ff",
            ));
        }
        self.emit(true);
        self.msg = OutMsg::None;
        Ok(())
    }

    /// Runs the compressor until `input` is consumed and the flush is complete.
    fn compress(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        let level = self.level;
        let compressor = self
            .compressor
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        loop {
            if self.frame.capacity() - self.frame.len() < 1024 {
                self.frame.reserve((input.len() / 2).max(8 * 1024));
            }
            let capacity = self.frame.capacity();
            let (in_before, out_before) = (compressor.total_in(), compressor.total_out());
            compressor
                .compress_vec(input, &mut self.frame, flush)
                .map_err(|e| io::Error::other(format!("compression failed: {e}")))?;
            let consumed = (compressor.total_in() - in_before) as usize;
            let produced = compressor.total_out() - out_before;
            input = &input[consumed.min(input.len())..];
            let room_left = self.frame.len() < capacity;
            if input.is_empty() && room_left {
                // It stopped for want of input, not of room: the flush is complete.
                return Ok(());
            }
            if consumed == 0 && produced == 0 && room_left {
                return Err(io::Error::other("compression layer: compressor stalled"));
            }
        }
    }

    /// Moves the compressed payload so far out as one frame of the current message.
    fn emit(&mut self, fin: bool) {
        let OutMsg::Compressed {
            opcode,
            emitted_first,
            masked,
        } = &mut self.msg
        else {
            return;
        };
        // RSV1 marks the first frame of a compressed message only (RFC 7692 §6.1).
        let (op, rsv1) = if *emitted_first {
            (OP_CONTINUATION, false)
        } else {
            (*opcode, true)
        };
        *emitted_first = true;
        let payload_len = self.frame.len() - MAX_HEADER;
        let mask = masked.then(rand::random::<[u8; 4]>);
        let mut header = [0u8; MAX_HEADER];
        let hl = frame::encode(fin, rsv1, op, mask, payload_len as u64, &mut header);
        if let Some(key) = mask {
            apply_mask(&mut self.frame[MAX_HEADER..], key, 0);
        }
        let start = MAX_HEADER - hl;
        self.frame[start..MAX_HEADER].copy_from_slice(&header[..hl]);
        if self.pending_pos == self.pending.len() {
            // Nothing waits: hand the buffer over instead of copying it.
            std::mem::swap(&mut self.pending, &mut self.frame);
            self.pending_pos = start;
            self.frame.clear();
            // The buffer handed back may be the backlog's large one.
            self.frame.shrink_to(2 * FRAGMENT);
            self.frame.resize(MAX_HEADER, 0);
        } else {
            self.pending.extend_from_slice(&self.frame[start..]);
            self.frame.truncate(MAX_HEADER);
        }
        DeflateStats::add(&self.stats.sent_compressed_bytes, payload_len);
    }
}
