//! Checks `ConnectionPool`: reuse of a released connection (one dial), URL joining,
//! exhaustion with the exact error after the timeout and hand-over to a waiter, idle
//! eviction by the maintenance thread, replacement of dead connections (on acquire and by
//! the health check), discard and detach, closing, a failed dial freeing its slot, and 16
//! threads acquiring and releasing concurrently without deadlock or leak.
//!
//! Every test takes `LOCK`, so the thread and socket counts of one test are not disturbed
//! by another.

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use common::*;
use jetsocket::{
    ConnectionPool, ConnectionPoolConfig, Error, Message, PooledConnection, SyncWebSocket,
};

static LOCK: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pool whose connections have no heartbeat (no background traffic to count).
fn pool(config: ConnectionPoolConfig, base: &str) -> ConnectionPool {
    ConnectionPool::with_options(config, base, |url| {
        SyncWebSocket::builder(url).heartbeat(None)
    })
    .expect("pool")
}

fn echo_once(conn: &PooledConnection, text: &str) {
    conn.send_text(text.to_owned()).expect("send");
    let reply = conn.recv_timeout(TIMEOUT).expect("echo");
    assert_eq!(reply, Message::text(text.to_owned()));
}

/// jetsocket threads alive in this process (I/O, events and pool threads).
fn jetsocket_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("jetsocket-"))
        .count()
}

#[test]
fn pool_types_are_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<ConnectionPool>();
    check::<PooledConnection>();
    check::<ConnectionPoolConfig>();
    check::<jetsocket::PoolStats>();
}

#[test]
fn a_released_connection_is_reused_with_one_dial() {
    let _serial = serial();
    let server = WsServer::echo();
    let pool = pool(ConnectionPoolConfig::default(), &server.url());
    let first = pool.acquire("/feed").expect("acquire");
    echo_once(&first, "one");
    let id = format!("{:?}", *first);
    // Leave a message unread: the next user must not see it.
    first.send_text("left over").expect("send");
    assert!(wait_until(TIMEOUT, || first.stats().queued == 1));
    drop(first);
    assert_eq!(pool.stats().idle_connections, 1);

    let second = pool.acquire("/feed").expect("acquire again");
    assert_eq!(format!("{:?}", *second), id, "the same connection");
    assert_eq!(
        second.try_recv().expect("try_recv"),
        None,
        "left-overs are drained"
    );
    echo_once(&second, "two");
    assert_eq!(server.handshakes(), 1);
    let stats = pool.stats();
    assert_eq!(
        (
            stats.connections_created,
            stats.reused,
            stats.total_connections,
            stats.active_connections
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((stats.messages_sent, stats.messages_received), (3, 3));
    drop(second);
    assert_eq!(pool.stats().active_connections, 0);
}

#[test]
fn paths_are_joined_to_the_base_url() {
    let _serial = serial();
    let server = WsServer::echo();
    let other = WsServer::echo();
    let base = format!("{}api", server.url()); // ws://127.0.0.1:PORT/api
    let pool = pool(ConnectionPoolConfig::default(), &base);
    let a = pool.acquire("stream").expect("relative");
    let b = pool.acquire("/root?x=1").expect("absolute path");
    let c = pool
        .acquire(&format!("{}elsewhere", other.url()))
        .expect("URL");
    let d = pool.acquire("").expect("the base itself");
    echo_once(&a, "a");
    echo_once(&c, "c");
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/api/stream", "/root?x=1", "/api"]);
    assert_eq!(other.last_request().expect("request").path, "/elsewhere");
    assert!(matches!(
        pool.acquire("http://nope/"),
        Err(Error::InvalidUrl { .. })
    ));
    drop((a, b, c, d));
    assert_eq!(pool.stats().idle_connections, 4);
}

#[test]
fn exhaustion_fails_with_the_exact_error_after_the_timeout() {
    let _serial = serial();
    let server = WsServer::echo();
    let config = ConnectionPoolConfig::default()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(100));
    let pool = pool(config, &server.url());
    let a = pool.acquire("/a").expect("acquire");
    let b = pool.acquire("/b").expect("acquire");
    match pool.acquire_timeout("/c", Duration::from_millis(200)) {
        Err(Error::PoolExhausted {
            max_connections: 2,
            timeout,
        }) => assert_eq!(timeout, Duration::from_millis(200)),
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    // `acquire` uses the configured timeout.
    match pool.acquire("/a") {
        Err(e @ Error::PoolExhausted { .. }) => assert_eq!(
            e.to_string(),
            "connection pool exhausted: all 2 connections in use for 100ms"
        ),
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    // A waiter gets the connection as soon as one comes back.
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let conn = pool.acquire_timeout("/a", TIMEOUT)?;
            echo_once(&conn, "handed over");
            Ok::<_, Error>(())
        })
    };
    assert!(wait_until(TIMEOUT, || pool.stats().active_connections == 2));
    drop(a);
    waiter
        .join()
        .expect("waiter")
        .expect("acquire after release");
    assert_eq!(pool.stats().connections_created, 2, "reused, not dialled");
    // Waiting for another URL closes an idle connection to make room.
    let c = pool
        .acquire_timeout("/c", TIMEOUT)
        .expect("evicts the idle /a");
    echo_once(&c, "c");
    let stats = pool.stats();
    assert_eq!((stats.total_connections, stats.connections_closed), (2, 1));
    drop((b, c));
}

#[test]
fn idle_connections_are_closed_after_max_idle_time() {
    let _serial = serial();
    let server = WsServer::echo();
    let config = ConnectionPoolConfig::default().max_idle_time(Duration::from_millis(100));
    let pool = pool(config, &server.url());
    let conn = pool.acquire("/").expect("acquire");
    echo_once(&conn, "x");
    drop(conn);
    // Nothing calls into the pool: the maintenance thread does it.
    assert!(wait_until(TIMEOUT, || {
        let s = pool.stats();
        s.total_connections == 0 && s.connections_closed == 1
    }));
    assert!(server.wait_for_live(0, TIMEOUT), "the socket is closed");
    assert_eq!(server.close_frames(), [(1000, String::new())]);
    assert_eq!(
        pool.stats().messages_sent,
        1,
        "closed connections still count"
    );
    // A later acquire dials again.
    let conn = pool.acquire("/").expect("acquire");
    echo_once(&conn, "y");
    assert_eq!(pool.stats().connections_created, 2);
}

#[test]
fn a_dead_idle_connection_is_replaced_on_acquire() {
    let _serial = serial();
    let server = WsServer::echo();
    let config = ConnectionPoolConfig::default().health_check_interval(Duration::from_secs(3600));
    let pool = ConnectionPool::with_options(config, server.url(), |url| {
        SyncWebSocket::builder(url).heartbeat(None).reconnect(false)
    })
    .expect("pool");
    let conn = pool.acquire("/").expect("acquire");
    let old: SyncWebSocket = (*conn).clone();
    drop(conn);
    server.drop_all();
    assert!(wait_until(TIMEOUT, || old.is_closed()));
    assert_eq!(
        pool.stats().idle_connections,
        1,
        "the health check has not run"
    );

    let fresh = pool.acquire("/").expect("a replacement");
    assert!(fresh.is_connected());
    echo_once(&fresh, "alive");
    assert_ne!(format!("{:?}", *fresh), format!("{old:?}"));
    let stats = pool.stats();
    assert_eq!(
        (
            stats.connections_created,
            stats.connections_closed,
            stats.total_connections
        ),
        (2, 1, 1)
    );

    // An active connection that dies is not taken back.
    server.drop_all();
    assert!(wait_until(TIMEOUT, || fresh.is_closed()));
    drop(fresh);
    let stats = pool.stats();
    assert_eq!((stats.total_connections, stats.idle_connections), (0, 0));
}

#[test]
fn health_checks_drop_dead_idle_connections() {
    let _serial = serial();
    let server = WsServer::echo();
    let config = ConnectionPoolConfig::default().health_check_interval(Duration::from_millis(50));
    let pool = ConnectionPool::with_options(config, server.url(), |url| {
        SyncWebSocket::builder(url).heartbeat(None).reconnect(false)
    })
    .expect("pool");
    let conn = pool.acquire("/").expect("acquire");
    drop(conn);
    server.drop_all();
    assert!(wait_until(TIMEOUT, || pool.stats().total_connections == 0));
    assert_eq!(pool.stats().connections_closed, 1);
}

#[test]
fn discard_and_detach() {
    let _serial = serial();
    let server = WsServer::echo();
    let pool = pool(
        ConnectionPoolConfig::default().max_connections(1),
        &server.url(),
    );
    let conn = pool.acquire("/").expect("acquire");
    let ws: SyncWebSocket = (*conn).clone();
    conn.discard();
    assert!(wait_until(TIMEOUT, || ws.is_closed()), "discarded: closed");
    assert_eq!(pool.stats().total_connections, 0);

    let conn = pool.acquire("/").expect("the slot is free");
    let mine = conn.detach();
    assert_eq!(pool.stats().total_connections, 0);
    let other = pool.acquire("/").expect("the slot is free again");
    mine.send_text("still mine").expect("send");
    assert_eq!(
        mine.recv_timeout(TIMEOUT).expect("echo"),
        Message::text("still mine")
    );
    drop(other);
    pool.close();
    assert!(
        mine.is_connected(),
        "a detached connection is not the pool's to close"
    );
    mine.close().expect("close");
}

#[test]
fn close_closes_everything_and_wakes_waiters() {
    let _serial = serial();
    let server = WsServer::echo();
    let pool = pool(
        ConnectionPoolConfig::default().max_connections(2),
        &server.url(),
    );
    let held = pool.acquire("/a").expect("acquire");
    drop(pool.acquire("/b").expect("acquire")); // idle
    let blocker = pool.acquire("/c").expect("evicts /b"); // both slots in use now
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire_timeout("/d", TIMEOUT).map(|_| ()))
    };
    assert!(wait_until(TIMEOUT, || server.live() == 2));
    pool.close();
    assert!(matches!(
        waiter.join().expect("waiter"),
        Err(Error::AlreadyClosed)
    ));
    assert!(
        held.is_closed() && blocker.is_closed(),
        "connections in use are closed too"
    );
    assert!(matches!(pool.acquire("/a"), Err(Error::AlreadyClosed)));
    assert!(pool.is_closed());
    drop((held, blocker));
    assert!(server.wait_for_live(0, TIMEOUT));
    pool.close();
}

#[test]
fn a_failed_dial_frees_its_slot() {
    let _serial = serial();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let pool = pool(
        ConnectionPoolConfig::default().max_connections(1),
        &format!("ws://127.0.0.1:{port}/"),
    );
    for _ in 0..3 {
        let err = pool
            .acquire_timeout("/", Duration::ZERO)
            .expect_err("nothing listens");
        assert!(!matches!(err, Error::PoolExhausted { .. }), "{err}");
    }
    let stats = pool.stats();
    assert_eq!((stats.total_connections, stats.connecting), (0, 0));
}

#[test]
fn sixteen_threads_acquire_and_release_without_deadlock_or_leak() {
    const THREADS: usize = 16;
    const ROUNDS: usize = 25;
    let _serial = serial();
    let server = WsServer::echo();
    let threads_before = jetsocket_threads();
    let config = ConnectionPoolConfig::default()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(60));
    let pool = pool(config, &server.url());
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    for t in 0..THREADS {
        let pool = pool.clone();
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let result = (|| -> jetsocket::Result<()> {
                for r in 0..ROUNDS {
                    // Two URLs, so full pools also evict idle connections to the other one.
                    let conn = pool.acquire(if (t + r) % 2 == 0 { "/even" } else { "/odd" })?;
                    let text = format!("{t}/{r}");
                    conn.send_text(text.clone())?;
                    let reply = conn.recv_timeout(TIMEOUT)?;
                    assert_eq!(reply.as_text(), Some(text.as_str()));
                }
                Ok(())
            })();
            let _ = done.send(result);
        });
    }
    for _ in 0..THREADS {
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a worker finished (no deadlock)")
            .expect("a worker succeeded");
    }
    let stats = pool.stats();
    assert_eq!(stats.active_connections, 0);
    assert!(stats.total_connections <= 4, "{stats:?}");
    assert_eq!(stats.messages_sent, (THREADS * ROUNDS) as u64);
    assert_eq!(stats.messages_received, (THREADS * ROUNDS) as u64);
    assert!(stats.reused > 0, "{stats:?}");
    assert!(wait_until(TIMEOUT, || server.live() <= 4));

    drop(pool);
    assert!(server.wait_for_live(0, TIMEOUT), "every socket closed");
    assert!(
        wait_until(TIMEOUT, || jetsocket_threads() <= threads_before),
        "threads left: {:?}",
        thread_names()
    );
}
