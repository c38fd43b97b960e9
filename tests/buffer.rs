//! Checks the inbound buffer against a server that outruns a deliberately slow consumer: what
//! each overflow policy keeps and drops (exact counts in `Stats`, `BufferOverflow` events and
//! `Error::BufferOverflow`), that `Block` loses nothing of a 200,000-message flood while staying
//! within its capacity, the buffer statistics, and that every preset connects and echoes.

mod common;

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use jetsocket::{
    presets, BufferConfig, Error, Event, EventKind, Message, OverflowPolicy, SyncWebSocket,
};
use tungstenite::Message as WsMsg;

/// Messages the burst server sends before its `end` marker.
const BURST: usize = 100;
/// Everything the burst server sends: the burst and the marker.
const BURST_TOTAL: u64 = BURST as u64 + 1;
/// The client's buffer in the burst tests.
const CAPACITY: usize = 10;
/// What overflows when nothing is read until the whole burst has arrived.
const OVERFLOW: u64 = BURST_TOTAL - CAPACITY as u64;

/// A server that sends "0" to "99" and then "end" right after the handshake, and afterwards
/// answers every "more" with "after".
fn burst_server() -> WsServer {
    WsServer::start(|mut conn| {
        for i in 0..BURST {
            if !conn.send_text(&i.to_string()) {
                return;
            }
        }
        if !conn.send_text("end") {
            return;
        }
        while let Some(msg) = conn.read() {
            if msg.to_text().is_ok_and(|t| t == "more") && !conn.send_text("after") {
                return;
            }
        }
    })
}

/// Connects with a `CAPACITY`-message buffer under `policy`, subscribing to events first.
fn connect(url: &str, policy: OverflowPolicy) -> (SyncWebSocket, Receiver<Event>) {
    let ws = SyncWebSocket::builder(url)
        .heartbeat(None)
        .reconnect(false)
        .buffer(BufferConfig::new(CAPACITY).overflow_policy(policy))
        .build()
        .expect("build");
    let events = ws.events();
    ws.connect().expect("connect");
    (ws, events)
}

/// The slow consumer: reads nothing until all of the burst has been read from the socket and
/// handed to the buffer (kept or dropped), so the number dropped is exact.
fn wait_for_whole_burst(ws: &SyncWebSocket) {
    let arrived = wait_until(TIMEOUT, || {
        let s = ws.stats();
        s.messages_received == BURST_TOTAL && s.queued as u64 + s.dropped == BURST_TOTAL
    });
    assert!(arrived, "the burst did not arrive: {:?}", ws.stats());
}

/// Collects `BufferOverflow` events until they account for `expected` drops.
fn overflow_events(events: &Receiver<Event>, expected: u64) -> Vec<(u64, OverflowPolicy)> {
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    while seen.iter().map(|(d, _)| d).sum::<u64>() < expected {
        match events.recv_deadline(deadline) {
            Ok(Event::BufferOverflow { dropped, policy }) => seen.push((dropped, policy)),
            Ok(_) => {}
            Err(e) => panic!("overflow events so far {seen:?}, waiting for {expected}: {e}"),
        }
    }
    // No further report may follow: everything has been accounted for.
    for event in events.try_iter() {
        assert!(
            !matches!(event, Event::BufferOverflow { .. }),
            "unexpected extra {event:?} after {seen:?}"
        );
    }
    seen
}

fn text(msg: Message) -> String {
    msg.as_text()
        .unwrap_or_else(|| panic!("expected text, got {msg:?}"))
        .to_owned()
}

/// Everything waiting in the buffer, without blocking.
fn drain(ws: &SyncWebSocket) -> Vec<String> {
    std::iter::from_fn(|| ws.try_recv().expect("try_recv").map(text)).collect()
}

fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

fn assert_overflow_events(events: &Receiver<Event>, policy: OverflowPolicy) {
    let seen = overflow_events(events, OVERFLOW);
    assert_eq!(seen.iter().map(|(d, _)| d).sum::<u64>(), OVERFLOW);
    assert!(seen.iter().all(|(d, p)| *d > 0 && *p == policy), "{seen:?}");
}

#[test]
fn drop_oldest_keeps_the_newest() {
    let server = burst_server();
    let (ws, events) = connect(&server.url(), OverflowPolicy::DropOldest);
    wait_for_whole_burst(&ws);

    let s = ws.stats();
    assert_eq!((s.queued, s.dropped), (CAPACITY, OVERFLOW));
    let mut expected = numbers(BURST - CAPACITY + 1..BURST);
    expected.push("end".to_owned());
    assert_eq!(drain(&ws), expected);
    assert_overflow_events(&events, OverflowPolicy::DropOldest);
    assert_eq!(ws.stats().dropped, OVERFLOW);
    ws.close().expect("close");
}

#[test]
fn drop_newest_keeps_the_oldest_and_then_accepts_again() {
    let server = burst_server();
    let (ws, events) = connect(&server.url(), OverflowPolicy::DropNewest);
    wait_for_whole_burst(&ws);

    let s = ws.stats();
    assert_eq!((s.queued, s.dropped), (CAPACITY, OVERFLOW));
    // The oldest ten stay; the rest, the marker included, were dropped on arrival.
    assert_eq!(drain(&ws), numbers(0..CAPACITY));
    assert_overflow_events(&events, OverflowPolicy::DropNewest);

    // With room again, new messages are kept.
    ws.send_text("more").expect("send");
    assert_eq!(text(ws.recv_timeout(TIMEOUT).expect("after")), "after");
    assert_eq!(ws.stats().dropped, OVERFLOW);
    ws.close().expect("close");
}

#[test]
fn error_policy_reports_the_exact_count_once_then_delivery_continues() {
    let server = burst_server();
    let (ws, events) = connect(&server.url(), OverflowPolicy::Error);
    wait_for_whole_burst(&ws);

    match ws.recv_timeout(TIMEOUT) {
        Err(Error::BufferOverflow { dropped }) => assert_eq!(dropped, OVERFLOW),
        other => panic!("expected the overflow report first, got {other:?}"),
    }
    // Reported once; then the messages that fitted, in order.
    let kept: Vec<String> = (0..CAPACITY)
        .map(|_| text(ws.recv_timeout(TIMEOUT).expect("kept message")))
        .collect();
    assert_eq!(kept, numbers(0..CAPACITY));
    assert!(ws.try_recv().expect("no second report").is_none());
    assert_overflow_events(&events, OverflowPolicy::Error);

    ws.send_text("more").expect("send");
    assert_eq!(text(ws.recv_timeout(TIMEOUT).expect("after")), "after");
    assert_eq!(ws.stats().dropped, OVERFLOW);
    ws.close().expect("close");
}

#[test]
fn messages_iterator_skips_overflow_reports() {
    let server = burst_server();
    let (ws, _events) = connect(&server.url(), OverflowPolicy::Error);
    wait_for_whole_burst(&ws);
    // Everything needed is queued, so the blocking iterator cannot hang here.
    let got: Vec<String> = ws.messages().take(CAPACITY).map(text).collect();
    assert_eq!(got, numbers(0..CAPACITY));
    assert_eq!(ws.stats().dropped, OVERFLOW);
    ws.close().expect("close");
}

#[test]
fn stats_report_queue_length_fill_and_drops() {
    let server = burst_server();
    let (ws, _events) = connect(&server.url(), OverflowPolicy::DropNewest);
    let s = ws.stats();
    assert_eq!(s.buffer_capacity, CAPACITY);
    assert_eq!(s.deduplicated, 0);
    wait_for_whole_burst(&ws);

    let full = ws.stats();
    assert_eq!(full.queued, CAPACITY);
    assert_eq!(full.buffer_fill, 1.0);
    assert_eq!(full.dropped, OVERFLOW);
    assert_eq!(full.messages_received, BURST_TOTAL);
    assert_eq!(full.deduplicated, 0);

    for _ in 0..CAPACITY / 2 {
        ws.recv_timeout(TIMEOUT).expect("recv");
    }
    let half = ws.stats();
    assert_eq!(half.queued, CAPACITY / 2);
    assert_eq!(half.buffer_fill, 0.5);

    drain(&ws);
    let empty = ws.stats();
    assert_eq!((empty.queued, empty.buffer_fill), (0, 0.0));
    // Reading does not change the totals.
    assert_eq!(empty.dropped, OVERFLOW);
    ws.close().expect("close");
}

// ----- Block: a flood larger than every buffer on the way -----------------------------

/// Messages in the flood.
const FLOOD: usize = 200_000;
/// Each flood message: an 8-digit index and padding, 200 bytes in all (40 MB together, far
/// more than the socket buffers hold, so the server must wait for the client).
const FLOOD_MSG_LEN: usize = 200;
/// The client's buffer in the flood test.
const FLOOD_CAPACITY: usize = 1000;

fn flood_message(i: usize) -> String {
    format!("{i:08}{}", "x".repeat(FLOOD_MSG_LEN - 8))
}

/// What the flood server has done so far.
#[derive(Default)]
struct FloodProgress {
    /// Messages handed to the socket.
    written: AtomicUsize,
    /// Times a write made no progress for the write timeout (flow control pushing back).
    stalls: AtomicUsize,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Flushes until everything is out, counting stalls; false if the connection is gone.
fn flush_through(conn: &mut ServerConn, progress: &FloodProgress) -> bool {
    loop {
        match conn.ws_mut().flush() {
            Ok(()) => return true,
            Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                progress.stalls.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => return false,
        }
    }
}

/// A server that writes `FLOOD` messages as fast as the client lets it. A write that makes no
/// progress for 50 ms returns and counts as a stall (the frame stays buffered), so the test
/// can see TCP flow control pushing back.
fn flood_server(progress: Arc<FloodProgress>) -> WsServer {
    WsServer::start(move |mut conn| {
        let _ = conn
            .tcp()
            .set_write_timeout(Some(Duration::from_millis(50)));
        for i in 0..FLOOD {
            match conn.ws_mut().write(WsMsg::text(flood_message(i))) {
                Ok(()) => {}
                // The frame is buffered; push it out before writing more.
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {
                    progress.stalls.fetch_add(1, Ordering::SeqCst);
                    if !flush_through(&mut conn, &progress) {
                        return;
                    }
                }
                Err(_) => return,
            }
            progress.written.store(i + 1, Ordering::SeqCst);
        }
        if !flush_through(&mut conn, &progress) {
            return;
        }
        let _ = conn.tcp().set_write_timeout(None);
        while conn.read().is_some() {}
    })
}

/// The slow consumer's bookkeeping: the next index expected and the peaks seen.
struct Consumer<'a> {
    ws: &'a SyncWebSocket,
    next: usize,
    max_queued: usize,
    rss_start: u64,
    max_rss: u64,
}

impl Consumer<'_> {
    fn sample(&mut self) -> usize {
        let queued = self.ws.stats().queued;
        self.max_queued = self.max_queued.max(queued);
        queued
    }

    fn sample_rss(&mut self) {
        self.max_rss = self.max_rss.max(rss_bytes());
    }

    /// Takes `n` messages, checking each is the next in order.
    fn take(&mut self, n: usize) {
        for _ in 0..n {
            let msg = self
                .ws
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("message {} of {FLOOD} did not arrive: {e}", self.next));
            let bytes = msg.as_bytes();
            let index: Option<usize> = std::str::from_utf8(&bytes[..8.min(bytes.len())])
                .ok()
                .and_then(|s| s.parse().ok());
            assert_eq!(index, Some(self.next), "out of order or lost");
            assert_eq!(bytes.len(), FLOOD_MSG_LEN);
            self.next += 1;
            if self.next % 64 == 0 {
                self.sample();
            }
            if self.next % 8192 == 0 {
                self.sample_rss();
            }
        }
    }

    /// Waits without reading until the buffer is full again.
    fn wait_full(&mut self) {
        let full = wait_until(TIMEOUT, || self.sample() == FLOOD_CAPACITY);
        assert!(full, "the buffer did not fill up: {:?}", self.ws.stats());
    }
}

#[test]
fn block_loses_nothing_of_a_flood_and_stays_within_capacity() {
    let progress = Arc::new(FloodProgress::default());
    let server = flood_server(Arc::clone(&progress));
    let overflows = Arc::new(AtomicUsize::new(0));
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .reconnect(false)
        .buffer(BufferConfig::new(FLOOD_CAPACITY).overflow_policy(OverflowPolicy::Block))
        .build()
        .expect("build");
    let counter = Arc::clone(&overflows);
    ws.on(EventKind::BufferOverflow, move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let mut consumer = Consumer {
        ws: &ws,
        next: 0,
        max_queued: 0,
        rss_start: rss_bytes(),
        max_rss: 0,
    };
    ws.connect().expect("connect");

    // Slow phase 1: read nothing until the buffer is full and the server's writes stall,
    // so the whole path from the server to the buffer is backed up.
    consumer.wait_full();
    let stalled = wait_until(TIMEOUT * 3, || {
        consumer.sample();
        progress.stalls.load(Ordering::SeqCst) > 0
    });
    assert!(stalled, "the server never had to wait: {:?}", ws.stats());
    let written = progress.written.load(Ordering::SeqCst);
    assert!(written < FLOOD, "the server got everything out at once");
    assert_eq!(
        consumer.sample(),
        FLOOD_CAPACITY,
        "more than the capacity held"
    );

    // Slow phase 2: a few rounds of taking half the buffer (which resumes reading) and
    // waiting until it is full again.
    for _ in 0..5 {
        consumer.take(FLOOD_CAPACITY / 2);
        consumer.wait_full();
    }
    consumer.sample_rss();

    // Then drain at full speed.
    let rest = FLOOD - consumer.next;
    consumer.take(rest);
    consumer.sample_rss();

    assert_eq!(consumer.next, FLOOD);
    assert!(
        consumer.max_queued <= FLOOD_CAPACITY,
        "the buffer held {} messages, capacity {FLOOD_CAPACITY}",
        consumer.max_queued
    );
    let s = ws.stats();
    assert_eq!(s.dropped, 0);
    assert_eq!(s.messages_received, FLOOD as u64);
    assert_eq!(s.queued, 0);
    assert!(ws.try_recv().expect("try_recv").is_none());
    assert_eq!(progress.written.load(Ordering::SeqCst), FLOOD);
    // Holding the whole flood would take over 40 MB; the buffer holds 200 KB.
    let growth = consumer.max_rss.saturating_sub(consumer.rss_start);
    assert!(
        growth < 16 << 20,
        "resident memory grew by {growth} bytes while draining the flood"
    );
    ws.close().expect("close");
    assert_eq!(
        overflows.load(Ordering::SeqCst),
        0,
        "Block dropped messages"
    );
}

#[test]
fn block_close_completes_while_the_buffer_is_full() {
    let server = WsServer::start(|mut conn| {
        for i in 0..BURST {
            if !conn.send_text(&i.to_string()) {
                return;
            }
        }
        conn.serve(false);
    });
    // A close timeout far beyond the wait below: a close that only ends by timing out fails.
    let close_timeout = TIMEOUT * 6;
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .reconnect(false)
        .close_timeout(close_timeout)
        .buffer(BufferConfig::new(CAPACITY).overflow_policy(OverflowPolicy::Block))
        .connect()
        .expect("connect");
    // Reading is paused: the buffer is full and the rest waits in the socket.
    assert!(wait_until(TIMEOUT, || ws.stats().queued == CAPACITY));

    // The server answers our close frame at once, but its answer sits behind the unread
    // messages. The handshake must still complete rather than wait out the close timeout.
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let closer = ws.clone();
    std::thread::spawn(move || {
        let _ = done_tx.send(closer.close());
    });
    assert_eq!(server.wait_for_close(TIMEOUT), Some((1000, String::new())));
    match done_rx.recv_timeout(TIMEOUT * 2) {
        Ok(result) => result.expect("close"),
        Err(_) => panic!(
            "close() with a full Block buffer did not return within {:?} (close timeout {close_timeout:?})",
            TIMEOUT * 2
        ),
    }
    assert!(ws.is_closed());
    // What was received before the close stays readable, in order.
    let rest = drain_until_end(&ws);
    assert!(rest.len() >= CAPACITY, "{rest:?}");
    assert_eq!(rest, numbers(0..rest.len()));
}

/// Everything left in the buffer of a closed connection.
fn drain_until_end(ws: &SyncWebSocket) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match ws.try_recv() {
            Ok(Some(msg)) => got.push(text(msg)),
            Ok(None) => panic!("the connection is closed, but try_recv found nothing to end on"),
            Err(Error::AlreadyClosed) => return got,
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

// ----- presets ---------------------------------------------------------------------------

#[test]
fn every_preset_connects_and_echoes() {
    let server = WsServer::echo();
    let url = server.url();
    let builders = [
        ("trading", presets::trading(&url)),
        ("llm_stream", presets::llm_stream(&url)),
        ("dashboard", presets::dashboard(&url)),
        ("minimal", presets::minimal(&url)),
    ];
    for (name, builder) in builders {
        let ws = builder
            .connect()
            .unwrap_or_else(|e| panic!("{name}: connect: {e}"));
        ws.send_text(name)
            .unwrap_or_else(|e| panic!("{name}: send: {e}"));
        let echoed = ws
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: recv: {e}"));
        assert_eq!(echoed.as_text(), Some(name));
        ws.close().unwrap_or_else(|e| panic!("{name}: close: {e}"));
        assert!(ws.is_closed(), "{name}");
    }
}
