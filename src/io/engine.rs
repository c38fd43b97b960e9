//! The I/O thread's event loop: one mio `Poll` whose timeout is the next timer deadline, a
//! `Waker` for commands, a bounded read batch then writes on every turn, and the reconnect
//! cycle.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};
use tungstenite::protocol::Role;
use tungstenite::WebSocket;

use crate::backoff::{thread_jitter, Backoff};
use crate::buffer::{DedupWindow, OverflowPolicy};
use crate::config::Settings;
use crate::error::{Error, Result, Timeout};
use crate::event::{panic_message, Event};
use crate::heartbeat::{Beat, Heartbeat};
use crate::hooks::Opened;
use crate::io::command::Control;
use crate::io::connect::{Attempt, AttemptParams, Established};
use crate::io::stream::{self, Transport};
use crate::message::{CloseCode, CloseFrame, Message, Utf8Bytes};
use crate::shared::Shared;
use crate::state::State;
use crate::stats::Counters;

/// The socket's token.
pub(crate) const SOCKET: Token = Token(0);
/// The waker's token.
pub(crate) const WAKER: Token = Token(1);

/// At most this many messages are read per loop turn before writes get their turn.
const MAX_BATCH: usize = 1024;
/// ... or this many payload bytes, so one batch of large messages stays small.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Send-queue slots are given back at least this often while a write batch runs.
const RELEASE_EVERY: usize = 64;
/// Incoming payloads of at least this many bytes get their own allocation. tungstenite hands
/// out payloads as slices of its read buffer, and a buffer with slices still alive (messages
/// waiting in the inbound queue) cannot be reused: it is reallocated and its unread tail
/// copied. For small messages that happens once per thousands of messages; for large ones
/// it happens every few messages and costs far more than one copy of the payload.
const OWN_COPY_FROM: usize = 1024;
/// At most this many queued messages are written per loop turn before reading again.
const MAX_WRITE_BATCH: usize = 4096;

/// Why a connection ended.
#[derive(Debug)]
enum Ending {
    /// `close()` or the last handle dropped.
    User(CloseFrame),
    /// The maximum connection age was reached: reopen at once.
    MaxAge,
    /// The peer sent a close frame.
    Peer(Option<CloseFrame>),
    /// The connection failed.
    Failure(Error),
}

/// A live connection.
struct Conn {
    ws: WebSocket<Transport>,
    readable: bool,
    writable: bool,
    /// Reading is paused because the inbound buffer is full (Block policy).
    read_paused: bool,
    max_age_at: Option<Instant>,
}

enum Phase {
    Idle,
    Connecting(Box<Attempt>),
    Open(Box<Conn>),
    /// A close handshake is under way.
    Closing {
        conn: Box<Conn>,
        deadline: Instant,
        ending: Ending,
        /// We sent the close frame and wait for the peer's; otherwise we only flush our reply.
        awaiting_reply: bool,
    },
    BackingOff(Instant),
    Done,
}

pub(crate) struct Engine {
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    poll: Poll,
    events: Events,
    data_rx: Receiver<Message>,
    ctrl_rx: Receiver<Control>,
    phase: Phase,
    backoff: Backoff,
    heartbeat: Option<Heartbeat>,
    dedup: Option<DedupWindow>,
    last_seq: Option<u64>,
    connect_waiters: Vec<Sender<Result<()>>>,
    /// The attempt number shown in `Connecting` events.
    attempt: u32,
    /// Whether a connection was ever established (so the next one is a reconnect).
    was_connected: bool,
    down_since: Option<Instant>,
    /// The next attempt skips the backoff counter (maximum-age reconnects).
    immediate: bool,
    batch: Vec<Message>,
    /// When data last moved, for busy polling.
    last_activity: Option<Instant>,
}

impl Engine {
    pub(crate) fn new(
        settings: Arc<Settings>,
        shared: Arc<Shared>,
        poll: Poll,
        data_rx: Receiver<Message>,
        ctrl_rx: Receiver<Control>,
    ) -> Self {
        let dedup = settings
            .buffer
            .enable_dedup
            .then(|| DedupWindow::new(settings.buffer.dedup_window));
        Engine {
            backoff: Backoff::new(settings.backoff, thread_jitter()),
            heartbeat: settings.heartbeat.as_ref().map(Heartbeat::new),
            dedup,
            settings,
            shared,
            poll,
            events: Events::with_capacity(16),
            data_rx,
            ctrl_rx,
            phase: Phase::Idle,
            last_seq: None,
            connect_waiters: Vec::new(),
            attempt: 0,
            was_connected: false,
            down_since: None,
            last_activity: None,
            immediate: false,
            batch: Vec::with_capacity(MAX_BATCH),
        }
    }

    pub(crate) fn run(mut self) {
        log::debug!(
            "[{}] I/O thread started for {}",
            self.shared.name,
            self.settings.url
        );
        loop {
            self.handle_controls();
            if matches!(self.phase, Phase::Done) {
                break;
            }
            self.drive();
            if matches!(self.phase, Phase::Done) {
                break;
            }
            self.wait();
        }
        log::debug!("[{}] I/O thread ends", self.shared.name);
    }

    // ----- commands -------------------------------------------------------------------

    fn handle_controls(&mut self) {
        while let Ok(cmd) = self.ctrl_rx.try_recv() {
            match cmd {
                Control::Connect(reply) => self.on_connect_request(reply),
                Control::Close(frame) => self.on_close_request(frame),
            }
            if matches!(self.phase, Phase::Done) {
                return;
            }
        }
    }

    fn on_connect_request(&mut self, reply: Sender<Result<()>>) {
        match &self.phase {
            Phase::Idle => {
                self.connect_waiters.push(reply);
                self.attempt = 1;
                self.start_attempt();
            }
            Phase::Open(_) => {
                let _ = reply.send(Ok(()));
            }
            Phase::Done => {
                let _ = reply.send(Err(Error::AlreadyClosed));
            }
            Phase::BackingOff(_) => {
                // The caller wants a connection now: skip the rest of the delay.
                self.connect_waiters.push(reply);
                self.phase = Phase::BackingOff(Instant::now());
            }
            Phase::Connecting(_) | Phase::Closing { .. } => self.connect_waiters.push(reply),
        }
    }

    fn on_close_request(&mut self, frame: CloseFrame) {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Open(mut conn) => {
                self.set_state(State::Disconnecting);
                // Messages queued before close() go out before the close frame.
                let mut taken = 0;
                while let Some(msg) = self.take_queued() {
                    taken += 1;
                    let len = msg.len() as u64;
                    if write_frame(&mut conn.ws, msg.into_tungstenite()).is_err() {
                        break;
                    }
                    Counters::add(&self.shared.counters.messages_sent, 1);
                    Counters::add(&self.shared.counters.bytes_sent, len);
                }
                self.shared.send_permits.release(taken);
                let _ = conn.ws.close(Some(frame.to_tungstenite()));
                if let Err(e) = flush(&mut conn) {
                    log::debug!("[{}] flush during close failed: {e}", self.shared.name);
                }
                self.phase = Phase::Closing {
                    conn,
                    deadline: crate::later(Instant::now(), self.settings.close_timeout),
                    ending: Ending::User(frame),
                    awaiting_reply: true,
                };
            }
            Phase::Closing {
                conn,
                deadline,
                ending,
                awaiting_reply,
            } => {
                // Already closing: whatever the reason was, this close is final.
                let ending = match ending {
                    Ending::User(f) => Ending::User(f),
                    _ => Ending::User(frame),
                };
                self.phase = Phase::Closing {
                    conn,
                    deadline,
                    ending,
                    awaiting_reply,
                };
            }
            _ => {
                self.phase = Phase::Idle;
                self.terminate(State::Closed, Error::AlreadyClosed, None);
            }
        }
    }

    // ----- the loop -------------------------------------------------------------------

    /// Makes progress in the current phase.
    fn drive(&mut self) {
        let now = Instant::now();
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => self.phase = Phase::Idle,
            Phase::Done => self.phase = Phase::Done,
            Phase::BackingOff(until) => {
                if now >= until {
                    self.start_attempt();
                } else {
                    self.phase = Phase::BackingOff(until);
                }
            }
            Phase::Connecting(mut attempt) => {
                if now >= attempt.deadline {
                    drop(attempt);
                    self.attempt_failed(Error::Timeout(Timeout::Connect));
                    return;
                }
                match attempt.advance(self.poll.registry()) {
                    Ok(None) => self.phase = Phase::Connecting(attempt),
                    Ok(Some(est)) => self.established(est),
                    Err(e) => {
                        drop(attempt);
                        self.attempt_failed(e);
                    }
                }
            }
            Phase::Open(conn) => self.drive_open(conn, now),
            Phase::Closing {
                conn,
                deadline,
                ending,
                awaiting_reply,
            } => self.drive_closing(conn, deadline, ending, awaiting_reply, now),
        }
    }

    fn drive_open(&mut self, mut conn: Box<Conn>, now: Instant) {
        // Timers first: a dead peer or an old connection ends here.
        if let Some(at) = conn.max_age_at {
            if now >= at {
                log::info!(
                    "[{}] maximum connection age reached; reconnecting",
                    self.shared.name
                );
                self.set_state(State::Disconnecting);
                let frame = CloseFrame::new(CloseCode::NORMAL, "maximum connection age");
                let _ = conn.ws.close(Some(frame.to_tungstenite()));
                let _ = flush(&mut conn);
                self.phase = Phase::Closing {
                    conn,
                    deadline: crate::later(now, self.settings.close_timeout),
                    ending: Ending::MaxAge,
                    awaiting_reply: true,
                };
                return;
            }
        }
        if let Some(hb) = self.heartbeat.as_mut() {
            match hb.poll(now) {
                Beat::Idle => {}
                Beat::Dead => {
                    log::warn!(
                        "[{}] no pong within the heartbeat timeout",
                        self.shared.name
                    );
                    self.end_connection(conn, Ending::Failure(Error::Timeout(Timeout::Heartbeat)));
                    return;
                }
                Beat::Ping => {
                    let payload = hb.ping_sent(now);
                    let frame = match self
                        .settings
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.app.as_ref())
                    {
                        Some((msg, _)) => msg.clone().into_tungstenite(),
                        None => tungstenite::Message::Ping(payload.to_vec().into()),
                    };
                    if let Err(e) = write_frame(&mut conn.ws, frame) {
                        self.end_connection(conn, Ending::Failure(e));
                        return;
                    }
                    self.shared.events.emit(Event::Ping);
                }
            }
        }

        // Read one bounded batch.
        if conn.readable {
            if let Some(ending) = self.read_batch(&mut conn, false) {
                self.end_connection(conn, ending);
                return;
            }
        }

        // Then write what is queued, as far as the socket takes it.
        if let Err(e) = self.write_queued(&mut conn) {
            self.end_connection(conn, Ending::Failure(e));
            return;
        }
        self.phase = Phase::Open(conn);
    }

    fn drive_closing(
        &mut self,
        mut conn: Box<Conn>,
        deadline: Instant,
        ending: Ending,
        awaiting_reply: bool,
        now: Instant,
    ) {
        let flushed = match flush(&mut conn) {
            Ok(done) => done,
            Err(_) => return self.finish_connection(ending),
        };
        if !awaiting_reply {
            // Our reply to the peer's close is out: the handshake is complete.
            if flushed || now >= deadline {
                return self.finish_connection(ending);
            }
        } else {
            if conn.readable {
                match self.read_batch(&mut conn, true) {
                    None => {}
                    Some(_) => return self.finish_connection(ending),
                }
            }
            if now >= deadline {
                log::debug!(
                    "[{}] the peer did not answer our close frame in time",
                    self.shared.name
                );
                return self.finish_connection(ending);
            }
        }
        self.phase = Phase::Closing {
            conn,
            deadline,
            ending,
            awaiting_reply,
        };
    }

    /// Reads up to one batch. Returns why the connection ended, if it did. While closing, any
    /// close frame or end of stream completes the handshake.
    fn read_batch(&mut self, conn: &mut Conn, closing: bool) -> Option<Ending> {
        let mut budget = MAX_BATCH;
        // While closing, the peer's close frame may sit behind messages: read on regardless
        // of the Block policy (the close timeout bounds how much).
        if self.shared.inbound.policy == OverflowPolicy::Block && !closing {
            budget = budget.min(self.shared.inbound.free());
            if budget == 0 {
                self.pause_reading(conn);
                return None;
            }
            if conn.read_paused {
                conn.read_paused = false;
                if let Some(hb) = self.heartbeat.as_mut() {
                    hb.start(Instant::now());
                }
            }
        }
        let app_pong = self
            .settings
            .heartbeat
            .as_ref()
            .and_then(|h| h.app.as_ref())
            .map(|(_, m)| Arc::clone(m));
        let wants_events = self.shared.events.wants_messages();
        let (mut count, mut bytes) = (0u64, 0usize);
        let mut ending = None;
        while self.batch.len() < budget && bytes < MAX_BATCH_BYTES {
            let msg = match conn.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    Message::Text(Utf8Bytes::from_inner(if t.len() >= OWN_COPY_FROM {
                        t.as_str().to_owned().into()
                    } else {
                        t
                    }))
                }
                Ok(tungstenite::Message::Binary(b)) => {
                    Message::Binary(if b.len() >= OWN_COPY_FROM {
                        bytes::Bytes::copy_from_slice(&b)
                    } else {
                        b
                    })
                }
                Ok(tungstenite::Message::Ping(_)) => continue,
                Ok(tungstenite::Message::Pong(p)) => {
                    if let Some(hb) = self.heartbeat.as_mut() {
                        if app_pong.is_none() && hb.matches(&p) {
                            self.on_pong();
                        }
                    }
                    continue;
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    // tungstenite answers a close frame carrying an invalid code with 1002
                    // "Protocol violation" and hands us that: report the violation.
                    let invalid = frame.as_ref().is_some_and(|f| {
                        f.code == tungstenite::protocol::frame::coding::CloseCode::Protocol
                            && f.reason.as_str() == "Protocol violation"
                    });
                    ending = Some(if invalid {
                        Ending::Failure(Error::Protocol(
                            "the peer sent a close frame with an invalid code".into(),
                        ))
                    } else {
                        Ending::Peer(frame.map(CloseFrame::from_tungstenite))
                    });
                    break;
                }
                Ok(tungstenite::Message::Frame(_)) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    break;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {
                    continue
                }
                Err(tungstenite::Error::ConnectionClosed) => {
                    ending = Some(if closing {
                        Ending::Peer(None)
                    } else {
                        Ending::Failure(Error::ConnectionClosed(None))
                    });
                    break;
                }
                Err(e) => {
                    ending = Some(Ending::Failure(e.into()));
                    break;
                }
            };
            count += 1;
            bytes += msg.len();
            if let Some(is_pong) = &app_pong {
                if is_pong(&msg) {
                    self.on_pong();
                    continue;
                }
            }
            if let Some(extract) = &self.settings.sequence_id {
                if let Some(id) = extract(&msg) {
                    self.last_seq = Some(id);
                    if let Some(window) = self.dedup.as_mut() {
                        if !window.insert(id) {
                            Counters::add(&self.shared.counters.deduplicated, 1);
                            continue;
                        }
                    }
                }
            }
            if wants_events {
                self.shared.events.emit(Event::Message(msg.clone()));
            }
            let msg = match &self.settings.router {
                Some(route) => match route(msg) {
                    Some(unrouted) => unrouted,
                    None => continue,
                },
                None => msg,
            };
            self.batch.push(msg);
        }
        Counters::add(&self.shared.counters.messages_received, count);
        Counters::add(&self.shared.counters.bytes_received, bytes as u64);
        if count > 0 {
            self.last_activity = Some(Instant::now());
        }
        let delivered = self.shared.inbound.push_batch(&mut self.batch);
        if delivered.dropped > 0 {
            Counters::add(&self.shared.counters.dropped, delivered.dropped);
            self.shared.events.emit(Event::BufferOverflow {
                dropped: delivered.dropped,
                policy: self.shared.inbound.policy,
            });
        }
        // Pongs and close replies queued by `read` go out with the next flush.
        if ending.is_none() {
            if let Err(e) = flush(conn) {
                return Some(Ending::Failure(e));
            }
        }
        ending
    }

    fn pause_reading(&mut self, conn: &mut Conn) {
        if !conn.read_paused {
            log::debug!("[{}] inbound buffer full: pausing reads", self.shared.name);
            conn.read_paused = true;
            // We cannot see pongs while not reading; the heartbeat restarts on resume.
            if let Some(hb) = self.heartbeat.as_mut() {
                hb.stop();
            }
        }
    }

    fn on_pong(&mut self) {
        let now = Instant::now();
        if let Some(rtt) = self.heartbeat.as_mut().and_then(|hb| hb.pong(now)) {
            self.shared.counters.latency.lock().record(rtt);
            self.shared.events.emit(Event::Pong { latency: rtt });
        }
    }

    /// Takes the next message from the send queue. The caller gives the slots back with
    /// [`SendPermits::release`](crate::permits::SendPermits::release), once per batch: the
    /// permit counter is shared with every sender, and touching it per message costs more
    /// than the rest of the hand-over.
    fn take_queued(&self) -> Option<Message> {
        self.data_rx.try_recv().ok()
    }

    /// Writes queued messages while the socket accepts them, then flushes.
    fn write_queued(&mut self, conn: &mut Conn) -> Result<()> {
        if !conn.writable {
            return Ok(());
        }
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut result: Result<()> = Ok(());
        let mut released = 0;
        while count < MAX_WRITE_BATCH as u64 {
            if count as usize - released >= RELEASE_EVERY {
                // Senders may refill the queue while the rest of the batch goes out.
                self.shared.send_permits.release(RELEASE_EVERY);
                released += RELEASE_EVERY;
            }
            let Some(msg) = self.take_queued() else {
                break;
            };
            let len = msg.len() as u64;
            match conn.ws.write(msg.into_tungstenite()) {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Already buffered: do not resend; wait for writable.
                    count += 1;
                    bytes += len;
                    conn.writable = false;
                    break;
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
            count += 1;
            bytes += len;
        }
        Counters::add(&self.shared.counters.messages_sent, count);
        Counters::add(&self.shared.counters.bytes_sent, bytes);
        if count > 0 {
            self.last_activity = Some(Instant::now());
        }
        // A message that failed to write was taken too.
        let taken = count as usize + usize::from(result.is_err());
        self.shared.send_permits.release(taken - released);
        result?;
        flush(conn).map(|_| ())
    }

    /// Blocks in the readiness wait until a socket event, a command or the next deadline.
    fn wait(&mut self) {
        let now = Instant::now();
        let (busy, wants_data, paused) = match &self.phase {
            Phase::Open(conn) => {
                let more_to_read = conn.readable && !conn.read_paused;
                (more_to_read, conn.writable, conn.read_paused)
            }
            Phase::Closing {
                conn,
                awaiting_reply,
                ..
            } => (conn.readable && *awaiting_reply, false, false),
            _ => (false, false, false),
        };
        let mut timeout = self
            .next_deadline()
            .map(|d| d.saturating_duration_since(now));
        let mut immediate = busy || !self.ctrl_rx.is_empty();
        if !immediate && self.busy_poll(wants_data) {
            // Events (if any) are in `self.events` already.
            self.record_readiness();
            return;
        }
        if !immediate {
            self.shared.park_for_data(wants_data);
            if wants_data && !self.data_rx.is_empty() {
                immediate = true;
            }
            if paused {
                self.shared.park_for_space();
                if self.shared.inbound.free() > 0 {
                    immediate = true;
                }
            }
        }
        if immediate {
            timeout = Some(Duration::ZERO);
        }
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("[{}] readiness wait failed: {e}", self.shared.name);
            }
        }
        self.shared.unpark();
        self.record_readiness();
    }

    /// With [`Builder::busy_poll`](crate::Builder::busy_poll), shortly after traffic: polls
    /// without sleeping until the socket, the send queue or a command has something, or the
    /// spin time is over. `true`: something came, handle it without parking.
    fn busy_poll(&mut self, wants_data: bool) -> bool {
        let spin = self.settings.busy_poll;
        let (Some(last), Phase::Open(_)) = (self.last_activity, &self.phase) else {
            return false;
        };
        if spin.is_zero() {
            return false;
        }
        let mut until = crate::later(last, spin);
        if let Some(deadline) = self.next_deadline() {
            until = until.min(deadline);
        }
        while Instant::now() < until {
            if self
                .poll
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
            {
                return false;
            }
            if !self.events.is_empty()
                || (wants_data && !self.data_rx.is_empty())
                || !self.ctrl_rx.is_empty()
            {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Notes what the last readiness wait reported for the socket.
    fn record_readiness(&mut self) {
        for event in self.events.iter() {
            if event.token() != SOCKET {
                continue;
            }
            let conn = match &mut self.phase {
                Phase::Open(conn) => conn,
                Phase::Closing { conn, .. } => conn,
                _ => continue,
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.readable = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                conn.writable = true;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Connecting(a) => Some(a.deadline),
            Phase::BackingOff(until) => Some(*until),
            Phase::Closing { deadline, .. } => Some(*deadline),
            Phase::Open(conn) => {
                let hb = self.heartbeat.as_ref().and_then(Heartbeat::deadline);
                match (hb, conn.max_age_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            Phase::Idle | Phase::Done => None,
        }
    }

    // ----- connecting -----------------------------------------------------------------

    fn start_attempt(&mut self) {
        self.set_state(State::Connecting);
        Counters::add(&self.shared.counters.connect_attempts, 1);
        self.shared.events.emit(Event::Connecting {
            attempt: self.attempt,
        });
        let mut headers = self.settings.headers.clone();
        if let Some(provider) = &self.settings.header_provider {
            match catch_unwind(AssertUnwindSafe(|| provider())) {
                Ok(fresh) => {
                    for (name, value) in fresh {
                        if let Err(e) = crate::config::check_header(&name, &value) {
                            return self.attempt_failed(e);
                        }
                        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                        headers.push((name, value));
                    }
                }
                Err(p) => {
                    return self.attempt_failed(Error::Hook(format!(
                        "header provider panicked: {}",
                        panic_message(&*p)
                    )))
                }
            }
        }
        let params = AttemptParams {
            target: &self.settings.target,
            headers: &headers,
            subprotocols: &self.settings.subprotocols,
            tls: self.settings.tls.as_ref(),
            nodelay: self.settings.nodelay,
            proxy: self.settings.proxy.as_ref(),
            deflate: self.settings.deflate.as_ref(),
            deadline: crate::later(Instant::now(), self.settings.connect_timeout),
        };
        log::debug!(
            "[{}] connecting to {} (attempt {})",
            self.shared.name,
            self.settings.url,
            self.attempt
        );
        match Attempt::start(params, self.poll.registry(), SOCKET, &self.shared.waker()) {
            Ok(mut attempt) => match attempt.advance(self.poll.registry()) {
                Ok(None) => self.phase = Phase::Connecting(Box::new(attempt)),
                Ok(Some(est)) => self.established(est),
                Err(e) => self.attempt_failed(e),
            },
            Err(e) => self.attempt_failed(e),
        }
    }

    fn established(&mut self, est: Established) {
        let Established {
            mut stream,
            leftover,
            accepted,
        } = est;
        let _ = self.poll.registry().reregister(
            stream.tcp_mut(),
            SOCKET,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        );
        let config = Some(self.settings.ws_config);
        #[cfg(feature = "deflate")]
        let ws = {
            // The bytes after the response head go through the layer too: the server may
            // have compressed its first messages.
            let layer = crate::deflate::DeflateStream::new(
                stream,
                leftover,
                accepted.deflate,
                &self.settings.deflate.unwrap_or_default(),
                Arc::clone(&self.shared.counters.deflate),
            );
            WebSocket::from_raw_socket(layer, Role::Client, config)
        };
        #[cfg(not(feature = "deflate"))]
        let ws = if leftover.is_empty() {
            WebSocket::from_raw_socket(stream, Role::Client, config)
        } else {
            WebSocket::from_partially_read(stream, leftover, Role::Client, config)
        };
        let mut conn = Box::new(Conn {
            ws,
            // The socket may already hold frames: treat it as readable from the start.
            readable: true,
            writable: true,
            read_paused: false,
            max_age_at: self
                .settings
                .max_connection_age
                .map(|age| crate::later(Instant::now(), age)),
        });
        let reconnect = self.was_connected;
        if let Err(e) = self.run_open_hooks(&mut conn, &accepted, reconnect) {
            log::warn!("[{}] on_open failed: {e}", self.shared.name);
            self.shutdown_socket(conn);
            return self.attempt_failed(e);
        }
        let now = Instant::now();
        *self.shared.subprotocol.lock() = accepted.subprotocol.clone();
        *self.shared.counters.connected_since.lock() = Some(SystemTime::now());
        #[cfg(feature = "deflate")]
        self.shared
            .counters
            .compression_active
            .store(conn.ws.get_ref().is_active(), Ordering::Relaxed);
        self.set_state(State::Connected);
        self.shared.events.emit(Event::Connected {
            subprotocol: accepted.subprotocol,
        });
        if reconnect {
            Counters::add(&self.shared.counters.reconnects, 1);
            let attempts = self.backoff.attempts().max(1);
            let downtime = self.down_since.map_or(Duration::ZERO, |t| now - t);
            self.shared
                .events
                .emit(Event::Reconnected { attempts, downtime });
        }
        self.was_connected = true;
        self.down_since = None;
        self.backoff.connected(now);
        if let Some(hb) = self.heartbeat.as_mut() {
            hb.start(now);
        }
        for waiter in self.connect_waiters.drain(..) {
            let _ = waiter.send(Ok(()));
        }
        log::info!("[{}] connected to {}", self.shared.name, self.settings.url);
        self.phase = Phase::Open(conn);
        // Queued messages go out now, after the hooks' messages.
        self.drive();
    }

    fn run_open_hooks(
        &mut self,
        conn: &mut Conn,
        accepted: &crate::handshake::Accepted,
        reconnect: bool,
    ) -> Result<()> {
        let on_open = self.settings.on_open.clone();
        let replay = self
            .settings
            .replay
            .clone()
            .filter(|_| reconnect)
            .zip(self.last_seq);
        if on_open.is_empty() && replay.is_none() {
            return Ok(());
        }
        let events = Arc::clone(&self.shared.events);
        let mut opened = Opened {
            ws: &mut conn.ws,
            counters: &self.shared.counters,
            attempt: self.attempt,
            reconnect,
            subprotocol: accepted.subprotocol.as_deref(),
            response_headers: &accepted.headers,
        };
        for hook in on_open {
            call_hook("on_open", || hook(&mut opened))?;
        }
        if let Some((hook, last)) = replay {
            events.emit(Event::ReplayStarted {
                last_sequence_id: last,
            });
            call_hook("replay", || hook(&mut opened, last))?;
            events.emit(Event::ReplayCompleted {
                last_sequence_id: last,
            });
        }
        Ok(())
    }

    fn attempt_failed(&mut self, error: Error) {
        log::warn!("[{}] connection attempt failed: {error}", self.shared.name);
        self.shared.events.emit(Event::Error(error.clone()));
        if error.is_fatal() || !self.settings.reconnect {
            // Answers the connect waiters once the state is final.
            self.terminate(State::Failed, error, None);
        } else {
            self.set_state(State::Reconnecting);
            for waiter in self.connect_waiters.drain(..) {
                let _ = waiter.send(Err(error.clone()));
            }
            self.schedule_attempt(error);
        }
    }

    /// In state Reconnecting: picks the delay and backs off, or gives up.
    fn schedule_attempt(&mut self, last: Error) {
        let now = Instant::now();
        self.down_since.get_or_insert(now);
        let (attempt, delay) = if std::mem::take(&mut self.immediate) {
            (1, Duration::ZERO)
        } else {
            match self.backoff.next_attempt(now) {
                Some(next) => next,
                None => {
                    let err = Error::RetriesExhausted {
                        attempts: self.backoff.failures(),
                        last: Box::new(last),
                    };
                    self.shared.events.emit(Event::Error(err.clone()));
                    return self.terminate(State::Failed, err, None);
                }
            }
        };
        self.attempt = attempt;
        self.shared
            .events
            .emit(Event::Reconnecting { attempt, delay });
        self.set_state(State::BackingOff);
        self.phase = Phase::BackingOff(crate::later(now, delay));
    }

    // ----- endings --------------------------------------------------------------------

    fn end_connection(&mut self, mut conn: Box<Conn>, ending: Ending) {
        if let Ending::Peer(_) = ending {
            // tungstenite queued the close reply; flush it, then we are done.
            match flush(&mut conn) {
                Ok(true) => {}
                Ok(false) => {
                    self.phase = Phase::Closing {
                        conn,
                        deadline: crate::later(Instant::now(), self.settings.close_timeout),
                        ending,
                        awaiting_reply: false,
                    };
                    return;
                }
                Err(_) => {}
            }
        }
        if let Ending::Failure(e) = &ending {
            // Tell the peer why we are leaving (best effort: the socket may be gone already).
            if let Some(code) = e.close_code() {
                let frame = CloseFrame::new(code, truncate_reason(&e.to_string()));
                let _ = conn.ws.close(Some(frame.to_tungstenite()));
                let _ = flush(&mut conn);
            }
        }
        self.shutdown_socket(conn);
        self.finish_connection(ending);
    }

    fn shutdown_socket(&mut self, mut conn: Box<Conn>) {
        let tcp = stream::tcp_of(conn.ws.get_mut());
        let _ = self.poll.registry().deregister(tcp);
        let _ = tcp.shutdown(std::net::Shutdown::Both);
    }

    /// The socket is gone: decide between reconnecting and a terminal state.
    fn finish_connection(&mut self, ending: Ending) {
        if let Some(hb) = self.heartbeat.as_mut() {
            hb.stop();
        }
        *self.shared.counters.connected_since.lock() = None;
        self.shared
            .counters
            .compression_active
            .store(false, Ordering::Relaxed);
        // Any socket still held by the phase is dropped here.
        self.phase = Phase::Idle;
        match ending {
            Ending::User(frame) => self.terminate(State::Closed, Error::AlreadyClosed, Some(frame)),
            Ending::MaxAge => {
                self.disconnected(
                    Some(CloseFrame::new(CloseCode::NORMAL, "maximum connection age")),
                    None,
                );
                self.immediate = true;
                self.set_state(State::Reconnecting);
                self.schedule_attempt(Error::ConnectionClosed(None));
            }
            Ending::Peer(frame) => {
                log::info!(
                    "[{}] the server closed the connection: {:?}",
                    self.shared.name,
                    frame
                );
                self.disconnected(frame.clone(), None);
                let err = Error::ConnectionClosed(frame.clone());
                if err.is_fatal() {
                    self.shared.events.emit(Event::Error(err.clone()));
                    self.terminate(State::Failed, err, frame);
                } else if !self.settings.reconnect {
                    self.terminate(State::Closed, err, frame);
                } else {
                    self.set_state(State::Reconnecting);
                    self.schedule_attempt(err);
                }
            }
            Ending::Failure(err) => {
                log::warn!("[{}] connection lost: {err}", self.shared.name);
                self.disconnected(None, Some(err.clone()));
                if err.is_fatal() || !self.settings.reconnect {
                    self.shared.events.emit(Event::Error(err.clone()));
                    self.terminate(State::Failed, err, None);
                } else {
                    self.set_state(State::Reconnecting);
                    self.schedule_attempt(err);
                }
            }
        }
    }

    fn disconnected(&mut self, close: Option<CloseFrame>, error: Option<Error>) {
        self.set_state(State::Disconnected);
        self.down_since = Some(Instant::now());
        self.shared
            .events
            .emit(Event::Disconnected { close, error });
    }

    /// Ends the engine in `state` (Closed or Failed); consumers get `end` after draining.
    fn terminate(&mut self, state: State, end: Error, close: Option<CloseFrame>) {
        if let Phase::Open(conn) | Phase::Closing { conn, .. } =
            std::mem::replace(&mut self.phase, Phase::Done)
        {
            self.shutdown_socket(conn);
        }
        self.phase = Phase::Done;
        self.set_state(state);
        self.shared.inbound.finish(end.clone());
        if let Some(hook) = &self.settings.on_end {
            hook();
        }
        for waiter in self.connect_waiters.drain(..) {
            let _ = waiter.send(Err(end.clone()));
        }
        self.shared.events.emit(Event::Closed { close });
        self.shared.events.finish();
    }

    fn set_state(&mut self, to: State) {
        let from = self.shared.state();
        if from == to {
            return;
        }
        if !from.can_transition_to(to) {
            log::error!(
                "[{}] undocumented state transition {from} -> {to}",
                self.shared.name
            );
            debug_assert!(false, "undocumented state transition {from} -> {to}");
        }
        self.shared.store_state(to);
        log::debug!("[{}] {from} -> {to}", self.shared.name);
        self.shared.events.emit(Event::StateChanged { from, to });
    }
}

fn call_hook(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(match e {
            Error::Hook(_) => e,
            other => Error::Hook(format!("{name} hook failed: {other}")),
        }),
        Err(p) => Err(Error::Hook(format!(
            "{name} hook panicked: {}",
            panic_message(&*p)
        ))),
    }
}

/// Cuts a close reason to the 123 bytes a close frame allows, on a character boundary.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Writes a frame into tungstenite's buffer; a `WouldBlock` means it is buffered.
fn write_frame(ws: &mut WebSocket<Transport>, frame: tungstenite::Message) -> Result<()> {
    match ws.write(frame) {
        Ok(()) => Ok(()),
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Flushes tungstenite's buffer. `Ok(true)`: all out; `Ok(false)`: the socket is full.
fn flush(conn: &mut Conn) -> Result<bool> {
    match conn.ws.flush() {
        Ok(()) => Ok(true),
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
            conn.writable = false;
            Ok(false)
        }
        Err(tungstenite::Error::ConnectionClosed) => Ok(true),
        Err(e) => Err(e.into()),
    }
}
