//! # jetsocket
//!
//! A resilient, **blocking** WebSocket client. Plain synchronous programs (trading bots, data
//! collectors, CLI tools, services without an async runtime) get a [`SyncWebSocket`] handle
//! they can share across threads and iterate with `for msg in ws.messages()`, while one
//! background I/O thread per connection owns the socket and takes care of reconnection with
//! backoff, heartbeats, buffering and dedup.
//!
//! ## Usage
//!
//! ```
//! # let server = jetsocket::__doc_server();
//! # let url = server.url();
//! use jetsocket::SyncWebSocket;
//!
//! let ws = SyncWebSocket::builder(&url)
//!     .on_open(|conn| conn.send_text(r#"{"op":"subscribe","args":["trades"]}"#))
//!     .connect()?;
//!
//! std::thread::scope(|s| {
//!     s.spawn(|| ws.send_text("hello"));          // any thread may send
//!     for msg in ws.messages().take(2) {           // ends when Closed or Failed
//!         println!("got {msg:?}");
//!     }
//! });
//! ws.close()?;
//! # Ok::<(), jetsocket::Error>(())
//! ```
//!
//! ## Threads
//!
//! Each connection has one I/O thread (`jetsocket-io-<id>`) that alone touches the socket.
//! It waits in a readiness poll whose timeout is the next timer deadline (heartbeat, backoff,
//! connection age, close), so an idle connection costs no CPU between heartbeats. Callers
//! hand it messages through a bounded queue and wake it only when it is parked. Event
//! callbacks run on a separate dispatcher thread (`jetsocket-events-<id>`), started the first
//! time a callback is registered. Dropping the last handle closes the connection and joins
//! both threads.
//!
//! ## States
//!
//! ```text
//!  Idle ──connect()──► Connecting ──handshake──► Connected ──close()/max age──► Disconnecting
//!   │                   │    ▲                      │                               │
//!   │                   │    │                      │ drop, peer close,             ├──► Closed
//!   │                   │    │                      │ heartbeat timeout             │
//!   │                   │    │                      ▼                               ▼
//!   │                   │  BackingOff ◄── Reconnecting ◄──────────────────── Disconnected
//!   │                   │                     │                                     │
//!   └──► Closed         └──► Failed ◄─────────┘ (fatal error, retries exhausted) ◄───┘
//! ```
//!
//! [`Failed`](State::Failed) and [`Closed`](State::Closed) are terminal; the full table is
//! [`State::can_transition_to`].
//!
//! ## Errors
//!
//! Everything fails with the one [`Error`] enum. [`Error::is_fatal`] separates what is
//! retried (network errors, timeouts, HTTP 5xx, unexpected closes, heartbeat timeouts) from
//! what is not (HTTP 401/403/404/410, close codes 1008/4401/4403, certificate rejection,
//! invalid configuration).
//!
//! ## Features
//!
//! * `native-tls` (default): `wss://` through the platform's TLS library.
//! * `native-tls-vendored`: the same with OpenSSL built from source.
//! * `deflate` (default): permessage-deflate compression (RFC 7692), offered in every
//!   handshake; see [`Builder::compression`]. Pure Rust.
//! * `json`: typed JSON messages (`send_json`, `recv_json`, `typed`), JSON heartbeats and
//!   sequence fields, and `MultiplexBuilder::channel_key`.
#![forbid(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]
#![warn(rust_2018_idioms, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod backoff;
mod buffer;
mod client;
mod config;
mod deflate;
mod doc_server;
mod error;
mod event;
#[cfg(feature = "_fuzz")]
#[doc(hidden)]
pub mod fuzzing;
mod handshake;
mod heartbeat;
mod hooks;
mod io;
#[cfg(feature = "json")]
mod json;
mod message;
mod multiplex;
mod permits;
mod pool;
pub mod presets;
mod proxy;
mod shared;
mod state;
mod stats;
mod tls;
mod url;

/// `at + d`, saturating far in the future instead of overflowing for huge durations.
pub(crate) fn later(at: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(at)
}

pub use backoff::BackoffConfig;
pub use buffer::{BufferConfig, OverflowPolicy};
pub use bytes::Bytes;
pub use client::{Builder, ConnectOptions, Messages, SyncWebSocket, WeakSyncWebSocket};
pub use config::{SendFullPolicy, SendQueueConfig};
#[doc(hidden)]
pub use doc_server::{__doc_server, DocServer};
pub use error::{Error, Result, Timeout};
pub use event::{Event, EventKind};
pub use heartbeat::HeartbeatConfig;
pub use hooks::{Opened, ReplayConfig};
#[cfg(feature = "json")]
pub use json::{Typed, TypedLenient};
pub use message::{CloseCode, CloseFrame, Message, Utf8Bytes};
pub use multiplex::{
    Multiplex, MultiplexBuilder, MultiplexStats, Subscription, SubscriptionMessages,
    SubscriptionStats,
};
pub use pool::{ConnectionPool, ConnectionPoolConfig, PoolStats, PooledConnection};
pub use proxy::Proxy;
pub use state::State;
pub use stats::{CompressionStats, Stats};
pub use tls::TlsConfig;
