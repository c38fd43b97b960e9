//! Checks the close handshake and what a closed handle does: the server sees our code and
//! reason, queued messages go out before the close frame, received messages stay readable,
//! sends fail with `AlreadyClosed`, `close()` is bounded while connecting to a black hole, during
//! a hanging handshake and when the peer never answers, closing twice is fine, and close codes
//! that may not be sent are rejected.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use jetsocket::{CloseCode, Error, Event, Message, State, SyncWebSocket};

/// Margin on top of the close timeout for "returns promptly" bounds (a loaded 2-core machine).
const MARGIN: Duration = Duration::from_secs(5);

/// Starts `ws.connect()` on another thread; its result arrives on the returned channel.
fn connect_in_background(ws: &SyncWebSocket) -> crossbeam_channel::Receiver<jetsocket::Result<()>> {
    let ws = ws.clone();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(ws.connect());
    });
    done_rx
}

#[test]
fn server_sees_code_and_reason_of_close_with() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    let ws2 = ws.clone();
    within(TIMEOUT, "close_with", move || ws2.close_with(4000, "bye")).expect("close_with");
    assert_eq!(
        server.wait_for_close(TIMEOUT),
        Some((4000, "bye".to_owned()))
    );
    assert_eq!(ws.state(), State::Closed);
    assert!(ws.is_closed());
    assert!(!ws.is_connected());
}

#[test]
fn plain_close_sends_1000() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    let events = ws.events();
    close_within(&ws, TIMEOUT, "close").expect("close");
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
    // The events end with the close sequence, then the channel disconnects.
    let mut seen = Vec::new();
    loop {
        match events.recv_timeout(TIMEOUT) {
            Ok(e) => seen.push(e),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("events did not end after close: {e}; saw {seen:?}"),
        }
    }
    let states: Vec<(State, State)> = seen
        .iter()
        .filter_map(|e| match e {
            Event::StateChanged { from, to } => Some((*from, *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            (State::Connected, State::Disconnecting),
            (State::Disconnecting, State::Closed)
        ],
        "{seen:?}"
    );
    match seen.last() {
        Some(Event::Closed { close: Some(frame) }) => assert_eq!(frame.code, CloseCode::NORMAL),
        other => panic!("last event should be Closed(1000), got {other:?}"),
    }
    // A subscriber that comes after the end sees a disconnected channel at once.
    assert!(matches!(
        ws.events().recv_timeout(TIMEOUT),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn sends_after_close_fail_with_already_closed() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    ws.close().expect("close");
    assert!(matches!(ws.send_text("x"), Err(Error::AlreadyClosed)));
    assert!(matches!(ws.send("x"), Err(Error::AlreadyClosed)));
    assert!(matches!(ws.try_send("x"), Err(Error::AlreadyClosed)));
    assert!(matches!(
        ws.send_timeout("x", Duration::from_millis(10)),
        Err(Error::AlreadyClosed)
    ));
    assert!(matches!(
        ws.send_binary(vec![1u8]),
        Err(Error::AlreadyClosed)
    ));
    assert!(matches!(ws.connect(), Err(Error::AlreadyClosed)));
    assert!(matches!(
        ws.recv_timeout(TIMEOUT),
        Err(Error::AlreadyClosed)
    ));
    assert!(matches!(ws.try_recv(), Err(Error::AlreadyClosed)));
    // A clone is the same connection: closed too.
    let clone = ws.clone();
    assert!(matches!(clone.send_text("x"), Err(Error::AlreadyClosed)));
}

#[test]
fn received_messages_stay_readable_after_close() {
    const N: usize = 50;
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    for i in 0..N {
        assert_eq!(
            server.send_all(tungstenite::Message::text(format!("m{i}"))),
            1
        );
    }
    assert!(
        wait_until(TIMEOUT, || ws.stats().messages_received == N as u64),
        "{:?}",
        ws.stats()
    );
    ws.close().expect("close");
    for i in 0..N {
        let got = ws
            .recv_timeout(TIMEOUT)
            .expect("buffered message after close");
        assert_eq!(got, Message::text(format!("m{i}")));
    }
    assert!(matches!(
        ws.recv_timeout(TIMEOUT),
        Err(Error::AlreadyClosed)
    ));
    let ws2 = ws.clone();
    let rest = within(TIMEOUT, "messages() after close", move || {
        ws2.messages().count()
    });
    assert_eq!(rest, 0);
}

#[test]
fn queued_messages_go_out_before_the_close_frame() {
    const N: usize = 500;
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    for i in 0..N {
        ws.send_text(format!("q{i}")).expect("send");
    }
    ws.close().expect("close");
    let got = server.wait_for_messages(N, TIMEOUT);
    assert_eq!(got.len(), N, "messages sent before close() were lost");
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &tungstenite::Message::text(format!("q{i}")));
    }
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
    assert_eq!(ws.stats().messages_sent, N as u64);
}

#[test]
fn close_while_connecting_to_a_black_hole_returns_promptly() {
    let hole = blackhole_addr();
    let close_timeout = Duration::from_secs(1);
    let ws = SyncWebSocket::builder(hole.url())
        .connect_timeout(Duration::from_secs(60))
        .close_timeout(close_timeout)
        .build()
        .expect("build");
    let events = ws.events();
    let done_rx = connect_in_background(&ws);
    events_until(&events, |e| matches!(e, Event::Connecting { .. }));
    assert_eq!(ws.state(), State::Connecting);
    let started = Instant::now();
    close_within(
        &ws,
        close_timeout + MARGIN,
        "close() during a black-holed connect",
    )
    .expect("close");
    assert!(started.elapsed() < close_timeout + MARGIN);
    assert_eq!(ws.state(), State::Closed);
    let result = done_rx
        .recv_timeout(TIMEOUT)
        .expect("the pending connect() returns once closed");
    assert!(
        matches!(result, Err(Error::AlreadyClosed)),
        "pending connect() got {result:?}"
    );
}

#[test]
fn close_during_a_hanging_handshake_returns_promptly() {
    let silent = HttpResponder::silent();
    let close_timeout = Duration::from_secs(1);
    let ws = SyncWebSocket::builder(silent.url())
        .connect_timeout(Duration::from_secs(60))
        .close_timeout(close_timeout)
        .build()
        .expect("build");
    let done_rx = connect_in_background(&ws);
    assert_eq!(silent.wait_for_requests(1, TIMEOUT).len(), 1);
    assert_eq!(ws.state(), State::Connecting);
    let started = Instant::now();
    close_within(
        &ws,
        close_timeout + MARGIN,
        "close() during a hanging handshake",
    )
    .expect("close");
    assert!(started.elapsed() < close_timeout + MARGIN);
    assert_eq!(ws.state(), State::Closed);
    let result = done_rx.recv_timeout(TIMEOUT).expect("pending connect()");
    assert!(result.is_err(), "{result:?}");
    // The half-open handshake socket is closed too.
    assert!(wait_until(TIMEOUT, || silent.live() == 0));
}

#[test]
fn close_is_bounded_when_the_peer_never_answers() {
    // The server completes the handshake, then never reads again.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let server = RawServer::start(move |tcp| {
        let Ok(_ws) = tungstenite::accept(tcp) else {
            return;
        };
        let _ = stop_rx.recv_timeout(TIMEOUT * 3);
    });
    let close_timeout = Duration::from_millis(500);
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .close_timeout(close_timeout)
        .connect()
        .expect("connect");
    let started = Instant::now();
    close_within(&ws, close_timeout + MARGIN, "close() with a silent peer").expect("close");
    assert!(started.elapsed() < close_timeout + MARGIN);
    assert_eq!(ws.state(), State::Closed);
    drop(stop_tx);
}

#[test]
fn closing_twice_is_fine() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    let ws2 = ws.clone();
    within(TIMEOUT, "two closes", move || {
        ws2.close().expect("first close");
        ws2.close().expect("second close");
        ws2.close_with(4000, "again").expect("third close");
    });
    assert_eq!(ws.state(), State::Closed);
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
    // Only one close frame went out.
    assert!(server.wait_for_live(0, TIMEOUT));
    assert_eq!(server.close_frames().len(), 1);
}

#[test]
fn concurrent_closes_from_many_threads() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    within(TIMEOUT, "concurrent closes", move || {
        std::thread::scope(|s| {
            for _ in 0..4 {
                let ws = ws.clone();
                s.spawn(move || ws.close().expect("close"));
            }
        });
        assert_eq!(ws.state(), State::Closed);
    });
    assert_eq!(server.wait_for_close(TIMEOUT).map(|c| c.0), Some(1000));
}

#[test]
fn close_before_connecting_and_after_a_server_close() {
    let server = WsServer::echo();
    let idle = SyncWebSocket::builder(server.url()).build().expect("build");
    assert_eq!(idle.state(), State::Idle);
    idle.close().expect("close an idle handle");
    assert_eq!(idle.state(), State::Closed);
    assert!(matches!(idle.connect(), Err(Error::AlreadyClosed)));
    assert_eq!(server.connections(), 0);

    // After the server closed (reconnection off), close() is a no-op.
    let ws = SyncWebSocket::builder(server.url())
        .reconnect(false)
        .heartbeat(None)
        .connect()
        .expect("connect");
    assert_eq!(server.close_all(1001, "going away"), 1);
    assert!(wait_until(TIMEOUT, || ws.state() == State::Closed));
    ws.close().expect("close after the server's close");
    assert!(matches!(
        ws.recv_timeout(TIMEOUT),
        Err(Error::ConnectionClosed(Some(f))) if f.code.as_u16() == 1001
    ));
}

#[test]
fn close_codes_that_cannot_be_sent_are_rejected() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000, 65535] {
        match ws.close_with(code, "") {
            Err(Error::InvalidConfig(_)) => {}
            other => panic!("close code {code}: expected InvalidConfig, got {other:?}"),
        }
    }
    match ws.close_with(1000, "x".repeat(124)) {
        Err(Error::InvalidConfig(_)) => {}
        other => panic!("a 124-byte reason: expected InvalidConfig, got {other:?}"),
    }
    // A rejected close leaves the connection open.
    assert_eq!(ws.state(), State::Connected);
    assert_echo(&ws, "still open");
    ws.close_with(1000, "x".repeat(123))
        .expect("a 123-byte reason is fine");
}

#[test]
fn server_initiated_close_is_answered() {
    // The server starts the close handshake and reads our reply.
    let (tx, rx) = crossbeam_channel::bounded::<Option<u16>>(1);
    let server = RawServer::start(move |tcp| {
        let _ = tcp.set_read_timeout(Some(TIMEOUT));
        let Ok(mut ws) = tungstenite::accept(tcp) else {
            return;
        };
        let _ = ws.close(Some(close_frame(4000, "server says bye")));
        let reply = loop {
            match ws.read() {
                Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        let _ = tx.send(reply);
        let mut rest = Vec::new();
        let _ = ws.get_mut().read_to_end(&mut rest);
    });
    let ws = SyncWebSocket::builder(server.url())
        .reconnect(false)
        .heartbeat(None)
        .connect()
        .expect("connect");
    let reply = rx.recv_timeout(TIMEOUT).expect("close reply");
    assert_eq!(
        reply,
        Some(4000),
        "the close reply echoes the server's code"
    );
    assert!(wait_until(TIMEOUT, || ws.state() == State::Closed));
}

#[test]
fn close_wakes_blocked_receivers() {
    let server = WsServer::recording();
    let ws = connect_without_heartbeat(&server.url());
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    for i in 0..3 {
        let ws = ws.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            if i == 0 {
                let _ = tx.send(format!("messages:{}", ws.messages().count()));
            } else {
                let _ = tx.send(format!("recv:{:?}", ws.recv().err()));
            }
        }));
    }
    // Let the receivers block first: nothing can arrive from the recording server.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    ws.close().expect("close");
    let mut got: Vec<String> = (0..3)
        .map(|_| {
            rx.recv_timeout(TIMEOUT)
                .expect("a blocked receiver was woken")
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "messages:0",
            "recv:Some(AlreadyClosed)",
            "recv:Some(AlreadyClosed)"
        ]
    );
    for t in threads {
        t.join().expect("receiver thread");
    }
}

#[test]
fn close_from_inside_a_callback() {
    let server = WsServer::echo();
    let ws = connect_without_heartbeat(&server.url());
    let weak = ws.downgrade();
    let (tx, rx) = crossbeam_channel::bounded(1);
    ws.on(jetsocket::EventKind::Message, move |_| {
        if let Some(ws) = weak.upgrade() {
            let _ = tx.send(ws.close_with(4001, "from a callback"));
        }
    });
    ws.send_text("trigger").expect("send");
    let result = rx
        .recv_timeout(TIMEOUT)
        .expect("close() inside a callback returned");
    result.expect("close");
    assert_eq!(
        server.wait_for_close(TIMEOUT),
        Some((4001, "from a callback".to_owned()))
    );
    assert!(wait_until(TIMEOUT, || ws.state() == State::Closed));
    // The echo is still readable.
    assert_eq!(
        ws.recv_timeout(TIMEOUT).expect("buffered echo").as_text(),
        Some("trigger")
    );
}

/// CPU time (user + system, in clock ticks) used so far by the I/O thread of `ws`.
fn io_thread_cpu_ticks(ws: &SyncWebSocket) -> Option<u64> {
    let debug = format!("{ws:?}");
    let id = debug.split('"').nth(1)?;
    let name = format!("jetsocket-io-{id}");
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based) of the line.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        return Some(utime + stime);
    }
    None
}

#[test]
fn server_close_while_our_socket_is_backed_up_does_not_spin() {
    // The server stops reading, so our socket fills up; then it sends a close frame. While
    // pushed back, and while answering the close, the I/O thread must wait for the socket
    // instead of spinning.
    let (close_tx, close_rx) = crossbeam_channel::bounded::<()>(1);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let server = RawServer::start(move |tcp| {
        let Ok(mut ws) = tungstenite::accept(tcp) else {
            return;
        };
        if close_rx.recv_timeout(TIMEOUT).is_ok() {
            let _ = ws.close(Some(close_frame(1001, "leaving")));
            let _ = ws.flush();
        }
        let _ = stop_rx.recv_timeout(TIMEOUT * 3);
    });
    let ws = SyncWebSocket::builder(server.url())
        .heartbeat(None)
        .reconnect(false)
        .close_timeout(Duration::from_secs(3))
        .send_queue(jetsocket::SendQueueConfig::new(1))
        .connect()
        .expect("connect");
    let sender = ws.clone();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![1u8; 1 << 20];
        while sender.send_binary(chunk.clone()).is_ok() {}
    });
    // Backed up: the queue is full and megabytes went into the socket.
    assert!(
        wait_until(TIMEOUT, || ws.stats().send_queued == 1
            && ws.stats().bytes_sent > 2 << 20),
        "{:?}",
        ws.stats()
    );
    let idle_start = io_thread_cpu_ticks(&ws).expect("I/O thread stats");
    // Negative check over a short window: a parked thread uses (almost) no CPU.
    std::thread::sleep(Duration::from_millis(300));
    let idle_used = io_thread_cpu_ticks(&ws).expect("I/O thread stats") - idle_start;
    close_tx.send(()).expect("tell the server to close");
    // Negative check over another short window, while the close frame arrives.
    let closing_start = io_thread_cpu_ticks(&ws);
    std::thread::sleep(Duration::from_millis(300));
    let closing_used = match (closing_start, io_thread_cpu_ticks(&ws)) {
        (Some(a), Some(b)) => b - a,
        _ => 0, // the thread already ended: it did not spin
    };
    drop(stop_tx);
    ws.close().expect("close");
    feeder.join().expect("feeder");
    // 300 ms of a busy loop is ~30 ticks at 100 Hz; a waiting thread uses ~0.
    assert!(
        idle_used <= 10,
        "the I/O thread burned {idle_used} ticks in 300 ms while the socket was full"
    );
    assert!(
        closing_used <= 10,
        "the I/O thread burned {closing_used} ticks in 300 ms while waiting to flush its \
         close reply"
    );
}
