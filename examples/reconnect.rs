//! Shows a connection surviving a drop: the embedded server cuts every connection after
//! three messages; jetsocket reconnects with backoff, re-runs its on_open hook, and
//! delivers the messages that were queued while it was away.
//!
//! ```text
//! cargo run --example reconnect
//! ```

use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jetsocket::{BackoffConfig, Event, SyncWebSocket};

/// An echo server that drops each connection (without a close frame) after three messages.
fn flaky_echo_server() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}/", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let tcp = stream.try_clone().expect("clone a socket");
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                let mut echoed = 0;
                while let Ok(msg) = ws.read() {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).is_err() {
                            break;
                        }
                        echoed += 1;
                        if echoed == 3 {
                            let _ = tcp.shutdown(Shutdown::Both);
                            break;
                        }
                    }
                }
            });
        }
    });
    Ok(url)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => flaky_echo_server()?,
    };
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opened);
    let ws = SyncWebSocket::builder(&url)
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(100))
                .cap(Duration::from_secs(2)),
        )
        .on_open(move |conn| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            // Re-authenticate / resubscribe here: it runs on every (re)connect, first.
            conn.send_text(format!("subscribe #{n}"))
        })
        .build()?;
    let events = ws.events();
    let lifecycle = ws.events();
    ws.connect()?;

    let printer = std::thread::spawn(move || {
        for event in events {
            match event {
                Event::Disconnected { error, .. } => println!("event: disconnected ({error:?})"),
                Event::Reconnecting { attempt, delay } => {
                    println!("event: reconnecting, attempt {attempt} in {delay:?}")
                }
                Event::Reconnected { attempts, downtime } => {
                    println!("event: reconnected after {attempts} attempt(s), down {downtime:?}")
                }
                Event::Closed { .. } => println!("event: closed"),
                _ => {}
            }
        }
    });

    // Two messages plus the on_open subscription make three: the server then drops us.
    ws.send_text("message 1")?;
    ws.send_text("message 2")?;
    for _ in 0..3 {
        let msg = ws.recv_timeout(Duration::from_secs(10))?;
        println!("received: {}", msg.as_text().unwrap_or("<binary>"));
    }
    // Wait until the drop is noticed, then keep sending: while the connection is away the
    // messages wait in the send queue and go out after the new on_open subscription.
    lifecycle
        .iter()
        .find(|e| matches!(e, Event::Disconnected { .. }))
        .ok_or("the connection ended instead of dropping")?;
    ws.send_text("message 3 (sent while away)")?;
    ws.send_text("message 4 (sent while away)")?;
    for _ in 0..3 {
        let msg = ws.recv_timeout(Duration::from_secs(10))?;
        println!("received: {}", msg.as_text().unwrap_or("<binary>"));
    }
    println!(
        "on_open ran {} times; {} reconnects",
        opened.load(Ordering::SeqCst),
        ws.stats().reconnects
    );
    ws.close()?;
    printer
        .join()
        .expect("the printer thread ends with the connection");
    Ok(())
}
