//! Shares a small connection pool between eight worker threads, then shows what happens
//! when the pool is exhausted.
//!
//! Run it with no argument to talk to an echo server started inside this process, or give
//! it the base URL of an echo service:
//!
//! ```text
//! cargo run --example pool
//! cargo run --example pool -- ws://127.0.0.1:9001/
//! ```

mod support;

use std::time::Duration;

use jetsocket::{ConnectionPool, ConnectionPoolConfig, Error, HeartbeatConfig, SyncWebSocket};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = support::url_or_embedded_echo()?;

    let config = ConnectionPoolConfig::default()
        .max_connections(3)
        .max_idle_time(Duration::from_secs(60))
        .acquire_timeout(Duration::from_secs(5));
    // Every connection the pool dials is made from this template.
    let pool = ConnectionPool::with_options(config, &base, |url| {
        SyncWebSocket::builder(url).heartbeat(HeartbeatConfig::new(
            Duration::from_secs(15),
            Duration::from_secs(5),
        ))
    })?;

    // Eight workers, three connections: each worker borrows one per job and gives it back
    // by dropping the guard.
    std::thread::scope(|s| -> jetsocket::Result<()> {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let pool = &pool;
                s.spawn(move || -> jetsocket::Result<()> {
                    for job in 0..5 {
                        let conn = pool.acquire("jobs")?;
                        conn.send_text(format!("worker {worker}, job {job}"))?;
                        let reply = conn.recv_timeout(Duration::from_secs(10))?;
                        println!("worker {worker}: {}", reply.as_text().unwrap_or("<binary>"));
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a worker panicked")?;
        }
        Ok(())
    })?;

    let stats = pool.stats();
    println!(
        "{} jobs over {} connections ({} reuses); {} open, {} idle; {} sent, {} received",
        8 * 5,
        stats.connections_created,
        stats.reused,
        stats.total_connections,
        stats.idle_connections,
        stats.messages_sent,
        stats.messages_received,
    );

    // Hold every connection, then ask for one more.
    let held: Vec<_> = (0..3)
        .map(|i| pool.acquire(&format!("held/{i}")))
        .collect::<Result<_, _>>()?;
    match pool.acquire_timeout("one/more", Duration::from_millis(200)) {
        Err(Error::PoolExhausted {
            max_connections,
            timeout,
        }) => println!("pool exhausted: {max_connections} connections in use for {timeout:?}"),
        Err(e) => return Err(e.into()),
        Ok(_) => println!("unexpectedly got a connection"),
    }
    drop(held);

    pool.close();
    println!("pool closed");
    Ok(())
}
