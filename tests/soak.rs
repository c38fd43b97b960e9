//! Soak: one handle shared by a sender thread and a receiver thread while a fault proxy cuts
//! the connection every ~150 ms, for at least 300 reconnect cycles.
//!
//! What is checked is the documented delivery guarantee: **a message still in the send queue
//! is never lost; one already handed to the socket may be.** So:
//!
//! * At every cut the proxy also refuses new connections until the sender, woken by
//!   [`Event::Disconnected`], has queued a numbered burst (and on every tenth cut, until a few
//!   reconnect attempts have failed as well). Those messages are queued while the
//!   connection is away (the sender checks the state after queueing), and the echo server must
//!   return every one of them, complete and in order, after the reconnect. The next cut waits
//!   until the whole burst has come back.
//! * Between cuts the sender also streams numbered "filler" messages while connected. A cut
//!   can catch them on the wire, so gaps are allowed there, but never a duplicate or a
//!   message out of order.
//!
//! Afterwards, with the handle closed and the servers dropped, the process's thread count and
//! open file descriptors return to their starting values, and its resident memory has grown by
//! less than [`RSS_GROWTH_LIMIT`].
//!
//! The run stops after `JETSOCKET_SOAK_CYCLES` cycles (default 300), or when
//! `JETSOCKET_SOAK_SECS` seconds (default 60) have passed, whichever comes first, and fails if
//! fewer than the requested cycles happened. Cuts are spaced so that the cycles take about
//! three quarters of the time limit. For a longer soak, raise both.
//!
//! This file holds one test so that nothing else runs in its process while threads, file
//! descriptors and memory are counted.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::{select, Receiver, Sender};
use jetsocket::{
    BackoffConfig, BufferConfig, Error, EventKind, Message, OverflowPolicy, SendFullPolicy,
    SendQueueConfig, State, SyncWebSocket,
};

/// How much the resident set may grow over the whole soak. The soak moves a few tens of
/// thousands of small messages through bounded queues; anything near this bound is a leak.
const RSS_GROWTH_LIMIT: u64 = 64 << 20;

/// Waits in the cycle (a burst being queued, a burst coming back) get this long: far more than
/// they need, so that a loaded machine slows the soak down without failing it.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The sender offers a filler message whenever this much time passes without a cut.
const FILLER_PACE: Duration = Duration::from_millis(2);

/// The largest burst; bursts cycle through sizes 1 to this.
const MAX_BURST: u64 = 40;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// What the receiver tells the fault injector.
enum Received {
    /// Burst `n` came back complete.
    Burst(u64),
    /// Something arrived that breaks the guarantee.
    Broken(String),
}

#[derive(Debug, Default)]
struct SenderTotals {
    bursts: u64,
    burst_messages: u64,
    fillers: u64,
}

/// On each `Disconnected`, queues burst `n` (while the proxy refuses connections) and reports
/// `(n, size)`; otherwise streams fillers while connected. Ends when `stop` is dropped.
fn sender(
    ws: SyncWebSocket,
    disconnected: Receiver<()>,
    stop: Receiver<()>,
    queued: Sender<Result<(u64, u64), String>>,
) -> SenderTotals {
    let mut totals = SenderTotals::default();
    loop {
        select! {
            recv(stop) -> _ => return totals,
            recv(disconnected) -> _ => {
                let n = totals.bursts;
                let size = 1 + n % MAX_BURST;
                for i in 0..size {
                    if let Err(e) = ws.send_text(format!("b:{n}:{i}:{size}")) {
                        let _ = queued.send(Err(format!("queueing burst {n}: {e}")));
                        return totals;
                    }
                }
                let state = ws.state();
                let report = if state == State::Connected {
                    Err(format!("burst {n} was not queued while away: state {state}"))
                } else {
                    Ok((n, size))
                };
                totals.bursts += 1;
                totals.burst_messages += size;
                if queued.send(report).is_err() {
                    return totals;
                }
            }
            default(FILLER_PACE) => {
                if ws.is_connected() {
                    match ws.send_text(format!("f:{}", totals.fillers)) {
                        Ok(()) => totals.fillers += 1,
                        Err(Error::AlreadyClosed) => return totals,
                        Err(e) => {
                            let _ = queued.send(Err(format!("sending a filler: {e}")));
                            return totals;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct ReceiverTotals {
    burst_messages: u64,
    fillers: u64,
}

/// Checks the order of everything that comes back until the handle is closed.
fn receiver(ws: SyncWebSocket, report: Sender<Received>) -> ReceiverTotals {
    let mut totals = ReceiverTotals::default();
    let (mut burst, mut index) = (0u64, 0u64);
    let mut last_filler: Option<u64> = None;
    let broken = |why: String| {
        let _ = report.send(Received::Broken(why));
    };
    loop {
        let msg = match ws.recv() {
            Ok(m) => m,
            Err(Error::AlreadyClosed) => return totals,
            Err(e) => {
                broken(format!("recv failed: {e:?}"));
                return totals;
            }
        };
        let Some(text) = msg.as_text() else {
            broken(format!("unexpected message {msg:?}"));
            return totals;
        };
        let fields: Vec<&str> = text.split(':').collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        match (fields.first().copied(), number(1), number(2), number(3)) {
            (Some("f"), Some(n), None, None) => {
                if last_filler.is_some_and(|last| n <= last) {
                    broken(format!(
                        "filler {n} after filler {last_filler:?}: duplicated or reordered"
                    ));
                    return totals;
                }
                last_filler = Some(n);
                totals.fillers += 1;
            }
            (Some("b"), Some(n), Some(i), Some(size)) => {
                if (n, i) != (burst, index) {
                    broken(format!(
                        "expected message {index} of burst {burst}, got {text:?}: a message \
                         queued while away was lost, duplicated or reordered"
                    ));
                    return totals;
                }
                totals.burst_messages += 1;
                index += 1;
                if index == size {
                    let _ = report.send(Received::Burst(burst));
                    burst += 1;
                    index = 0;
                }
            }
            _ => {
                broken(format!("unexpected message {text:?}"));
                return totals;
            }
        }
    }
}

#[test]
fn soak_reconnects_lose_nothing_queued_while_away_and_leak_nothing() {
    let limit = Duration::from_secs(env_number("JETSOCKET_SOAK_SECS", 60));
    let target = env_number("JETSOCKET_SOAK_CYCLES", 300).max(1);
    let spacing = (limit * 3 / 4)
        .checked_div(u32::try_from(target).unwrap_or(u32::MAX))
        .unwrap_or_default()
        .clamp(Duration::from_millis(20), Duration::from_secs(1));

    let threads_before = thread_count();
    let fds_before = open_fds();
    let rss_before = rss_bytes();

    let cycles;
    {
        let server = WsServer::echo();
        let proxy = FaultProxy::start(server.addr());
        let (disconnected_tx, disconnected_rx) = crossbeam_channel::unbounded();
        let ws = SyncWebSocket::builder(proxy.url())
            .heartbeat(None)
            .backoff(
                BackoffConfig::default()
                    .base(Duration::from_millis(1))
                    .cap(Duration::from_millis(20))
                    .jitter(false)
                    .max_attempts(0)
                    .reset_after(Duration::ZERO),
            )
            .send_queue(SendQueueConfig::new(4096).when_full(SendFullPolicy::Block))
            .buffer(BufferConfig::new(4096).overflow_policy(OverflowPolicy::Block))
            .on(EventKind::Disconnected, move |_| {
                let _ = disconnected_tx.send(());
            })
            .connect()
            .expect("first connection");

        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (queued_tx, queued_rx) = crossbeam_channel::unbounded();
        let (received_tx, received_rx) = crossbeam_channel::unbounded();
        let sending = {
            let ws = ws.clone();
            thread::Builder::new()
                .name("soak-sender".into())
                .spawn(move || sender(ws, disconnected_rx, stop_rx, queued_tx))
                .expect("spawn sender")
        };
        let receiving = {
            let ws = ws.clone();
            thread::Builder::new()
                .name("soak-receiver".into())
                .spawn(move || receiver(ws, received_tx))
                .expect("spawn receiver")
        };
        let diagnose = |what: &str| -> String {
            format!(
                "{what}; state {}, stats {:?}, proxy live {}",
                ws.state(),
                ws.stats(),
                proxy.live()
            )
        };
        let wait_for_burst = |n: u64, size: u64| match received_rx.recv_timeout(STEP_TIMEOUT) {
            Ok(Received::Burst(k)) if k == n => {}
            Ok(Received::Burst(k)) => panic!("{}", diagnose(&format!("burst {k} before {n}"))),
            Ok(Received::Broken(why)) => panic!("{}", diagnose(&why)),
            Err(_) => panic!(
                "{}",
                diagnose(&format!("burst {n} ({size} messages) did not come back"))
            ),
        };

        // The fault injector. Sleeping here is the fault schedule itself (a cut every
        // `spacing`), not a way to wait for something: every wait for an outcome is on a
        // channel, with a generous timeout.
        let started = Instant::now();
        let mut next_cut = started + spacing;
        let mut done = 0u64;
        while done < target && started.elapsed() < limit {
            thread::sleep(next_cut.saturating_duration_since(Instant::now()));
            next_cut = Instant::now() + spacing;
            proxy.set_refuse(true);
            proxy.reset_all();
            let (n, size) = match queued_rx.recv_timeout(STEP_TIMEOUT) {
                Ok(Ok(burst)) => burst,
                Ok(Err(why)) => panic!("{}", diagnose(&why)),
                Err(_) => panic!("{}", diagnose("no burst was queued after a cut")),
            };
            assert_eq!(n, done, "burst numbers follow the cuts");
            if done % 10 == 9 {
                // Now and then, let a few reconnect attempts fail first (they are refused
                // after the TCP connect), so failed attempts are soaked too.
                let refused = proxy.refused();
                assert!(
                    wait_until(STEP_TIMEOUT, || proxy.refused() >= refused + 3),
                    "{}",
                    diagnose("the client stopped retrying while refused")
                );
            }
            proxy.set_refuse(false);
            wait_for_burst(n, size);
            done += 1;
        }
        cycles = done;
        let elapsed = started.elapsed();

        drop(stop_tx);
        let sent = sending.join().expect("the sender panicked");
        ws.close().expect("close");
        let got = receiving.join().expect("the receiver panicked");
        if let Ok(Received::Broken(why)) = received_rx.try_recv() {
            panic!("after the last cycle: {why}");
        }
        let stats = ws.stats();
        eprintln!(
            "soak: {cycles} cycles in {elapsed:?} (cut every {spacing:?}); sent {sent:?}; \
             received {got:?}; {} reconnects, {} connect attempts",
            stats.reconnects, stats.connect_attempts
        );
        assert!(
            cycles >= target,
            "only {cycles} of {target} cycles within {limit:?}: the machine is too slow for \
             this spacing; raise JETSOCKET_SOAK_SECS"
        );
        assert_eq!(got.burst_messages, sent.burst_messages);
        assert!(stats.reconnects >= cycles, "{stats:?}");
        assert_eq!(ws.state(), State::Closed);
        assert!(matches!(
            ws.send(Message::text("late")),
            Err(Error::AlreadyClosed)
        ));
        drop(ws);
        drop(proxy);
        drop(server);
    }

    let threads_ok = wait_until(Duration::from_secs(60), || thread_count() == threads_before);
    assert!(
        threads_ok,
        "threads: {} before, {} after: {:?}",
        threads_before,
        thread_count(),
        thread_names()
    );
    let fds_ok = wait_until(Duration::from_secs(60), || open_fds() == fds_before);
    assert!(
        fds_ok,
        "open file descriptors: {fds_before} before, {} after",
        open_fds()
    );
    let rss_after = rss_bytes();
    eprintln!(
        "soak: threads {threads_before}, open fds {fds_before}, resident {} KiB before; \
         resident {} KiB after",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT,
        "resident memory grew from {} KiB to {} KiB over {cycles} cycles",
        rss_before >> 10,
        rss_after >> 10
    );
}
