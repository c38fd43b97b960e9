//! permessage-deflate (RFC 7692) for the client, as a layer between the socket and
//! tungstenite.
//!
//! tungstenite knows no extensions: it rejects any frame with RSV1 set. So compression lives
//! in the byte path below it. [`DeflateStream`] wraps the socket and implements `Read` and
//! `Write`:
//!
//! * **Reading**, it parses the server's frames; a message whose first frame has RSV1 set is
//!   inflated (across its continuation frames, with `00 00 ff ff` appended at the end, RFC
//!   7692 §7.2.2) and handed to tungstenite again as plain frames. Everything else passes
//!   through byte for byte, so tungstenite still checks control frames, UTF-8, sizes and the
//!   close handshake.
//! * **Writing**, it parses the frames tungstenite writes; data messages of at least
//!   [`DeflateConfig::threshold`] bytes are compressed, marked with RSV1 and masked again with
//!   a fresh key. Everything else passes through.
//!
//! ## Window sizes
//!
//! The compressor always keeps a 32 KiB window (zlib, through zlib-rs, cannot compress raw
//! deflate with a 256-byte window at all). That matters only for `client_max_window_bits`,
//! which limits the window *we* compress with:
//!
//! * Inflating needs nothing: a 32 KiB window decodes data compressed with any smaller one,
//!   so `server_max_window_bits` is accepted and needs no action.
//! * When the server asks for `client_max_window_bits=N` with N < 15, the compressor does a
//!   *full flush* after every 2^N input bytes. A full flush empties the match history, so no
//!   back-reference ever reaches further than the bytes since the last full flush: at most
//!   2^N. The output is a valid stream for a decoder with a 2^N window, for every N from 8 to
//!   15. The cost is a worse ratio, so small windows compress less; common answers (none, or
//!   12 to 15) are unaffected.
//!
//! Because every N can be honoured, the offer includes `client_max_window_bits` (without a
//! value), which RFC 7692 §7.1.2.2 requires before a server may limit our window. Declining
//! small windows instead would fail the connection, since the client must reject an answer
//! it cannot honour.
//!
//! The decompressor rejects references to before the start of the data it has seen (zlib's
//! "invalid distance too far back"), so a peer that breaks `server_no_context_takeover` or
//! sends corrupt data gets close code 1007 rather than garbage.
//!
//! ## Errors
//!
//! A broken peer makes `read` fail with an [`io::Error`] of kind `InvalidData` carrying a
//! [`DeflateError`]; tungstenite returns it as `Error::Io`, and [`close_code_of`] tells the
//! engine which close code to send.

// Negotiation and the settings are compiled without the feature too, so the handshake code
// has one shape; only the codec needs flate2. Without it, parts of this file go unused.
#![cfg_attr(not(feature = "deflate"), allow(dead_code))]

#[cfg(feature = "deflate")]
mod frame;
mod negotiate;
#[cfg(all(any(test, feature = "_fuzz"), feature = "deflate"))]
pub(crate) mod reference;
#[cfg(all(any(test, feature = "_fuzz"), feature = "deflate"))]
pub(crate) mod refusals;
#[cfg(feature = "deflate")]
mod stream;
#[cfg(all(test, feature = "deflate"))]
mod tests;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub(crate) use negotiate::{accept, offer, Negotiated};
#[cfg(feature = "deflate")]
pub(crate) use stream::DeflateStream;

/// The smallest LZ77 window RFC 7692 allows (256 bytes).
pub(crate) const MIN_WINDOW_BITS: u8 = 8;
/// The largest LZ77 window (32 KiB), the default.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;
/// Messages shorter than this are sent uncompressed by default: deflate cannot shrink them
/// much, and the flush marker alone costs bytes.
pub(crate) const DEFAULT_THRESHOLD: usize = 128;
/// What a sync flush ends with, removed by the sender and appended by the receiver of every
/// compressed message (RFC 7692 §7.2.1-7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Settings for one connection's compression layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeflateConfig {
    /// Data messages with fewer payload bytes than this are sent uncompressed. A fragmented
    /// message is judged by its first frame. Defaults to 128.
    pub(crate) threshold: usize,
    /// The compression level, 0 (store) to 9 (smallest). Defaults to 1: on JSON it keeps
    /// most of level 6's saving for a sixth of the CPU.
    pub(crate) level: u32,
    /// The largest message, after inflating, that we accept; larger ones fail with close
    /// code 1009 before they are fully inflated. Use the same value as tungstenite's
    /// `max_message_size`. Defaults to 64 MiB.
    pub(crate) max_message_size: Option<usize>,
    /// The largest compressed frame we accept (1009 otherwise), plus 1/64 and 64 bytes for the
    /// growth of incompressible data. Inflated data is handed to
    /// tungstenite in fragments no larger than this (and never above 64 KiB). Use the same
    /// value as tungstenite's `max_frame_size`. Defaults to 16 MiB.
    pub(crate) max_frame_size: Option<usize>,
    /// Offer `server_no_context_takeover; client_no_context_takeover`: every message is
    /// compressed on its own, which costs ratio but lets both sides forget the history.
    /// Defaults to `false`.
    pub(crate) no_context_takeover: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            threshold: DEFAULT_THRESHOLD,
            level: 1,
            max_message_size: Some(64 << 20),
            max_frame_size: Some(16 << 20),
            no_context_takeover: false,
        }
    }
}

/// Byte counters of the compression layer, shared with the stats snapshot. Only compressed
/// messages are counted; plain ones show in the connection's usual counters.
#[derive(Debug, Default)]
pub(crate) struct DeflateStats {
    /// Messages we sent compressed.
    pub(crate) sent_messages: AtomicU64,
    /// Their payload bytes before compression.
    pub(crate) sent_plain_bytes: AtomicU64,
    /// Their payload bytes on the wire.
    pub(crate) sent_compressed_bytes: AtomicU64,
    /// Compressed messages received.
    pub(crate) received_messages: AtomicU64,
    /// Their payload bytes on the wire.
    pub(crate) received_compressed_bytes: AtomicU64,
    /// Their payload bytes after inflating.
    pub(crate) received_plain_bytes: AtomicU64,
}

/// A plain copy of [`DeflateStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DeflateCounts {
    pub(crate) sent_messages: u64,
    pub(crate) sent_plain_bytes: u64,
    pub(crate) sent_compressed_bytes: u64,
    pub(crate) received_messages: u64,
    pub(crate) received_compressed_bytes: u64,
    pub(crate) received_plain_bytes: u64,
}

impl DeflateStats {
    pub(crate) fn snapshot(&self) -> DeflateCounts {
        DeflateCounts {
            sent_messages: self.sent_messages.load(Relaxed),
            sent_plain_bytes: self.sent_plain_bytes.load(Relaxed),
            sent_compressed_bytes: self.sent_compressed_bytes.load(Relaxed),
            received_messages: self.received_messages.load(Relaxed),
            received_compressed_bytes: self.received_compressed_bytes.load(Relaxed),
            received_plain_bytes: self.received_plain_bytes.load(Relaxed),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
    }
}

/// Why the compression layer gave up on the peer's data, and the close code to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeflateError {
    /// 1002 (protocol error), 1007 (invalid payload data) or 1009 (message too big).
    pub(crate) code: u16,
    /// What was wrong; short enough for a close frame.
    pub(crate) reason: String,
}

impl DeflateError {
    /// Close code 1002.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// Close code 1007.
    pub(crate) const INVALID_DATA: u16 = 1007;
    /// Close code 1009.
    pub(crate) const TOO_BIG: u16 = 1009;

    pub(crate) fn protocol(reason: impl Into<String>) -> Self {
        DeflateError {
            code: Self::PROTOCOL,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_data(reason: impl Into<String>) -> Self {
        DeflateError {
            code: Self::INVALID_DATA,
            reason: reason.into(),
        }
    }

    pub(crate) fn too_big(reason: impl Into<String>) -> Self {
        DeflateError {
            code: Self::TOO_BIG,
            reason: reason.into(),
        }
    }

    /// Wraps the error as tungstenite will carry it: `io::ErrorKind::InvalidData`.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

impl fmt::Display for DeflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason, self.code)
    }
}

impl std::error::Error for DeflateError {}

/// The close code and reason for an I/O error that the compression layer raised, or `None`
/// for any other I/O error (a network failure has no close code).
pub(crate) fn close_code_of(e: &io::Error) -> Option<(u16, String)> {
    e.get_ref()?
        .downcast_ref::<DeflateError>()
        .map(|d| (d.code, d.reason.clone()))
}
