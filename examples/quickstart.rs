//! Connects, sends a few messages from several threads, prints what comes back, and closes.
//!
//! Run it with no argument to talk to an echo server started inside this process:
//!
//! ```text
//! cargo run --example quickstart
//! cargo run --example quickstart -- wss://your.server/ws
//! ```

mod support;

use std::time::Duration;

use jetsocket::{Event, EventKind, SyncWebSocket};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = support::url_or_embedded_echo()?;

    let ws = SyncWebSocket::builder(&url)
        .connect_timeout(Duration::from_secs(10))
        .on_open(|conn| conn.send_text("hello from on_open"))
        .connect()?;
    ws.on(EventKind::StateChanged, |event| {
        if let Event::StateChanged { from, to } = event {
            println!("state: {from} -> {to}");
        }
    });
    println!("connected to {} ({})", ws.url(), ws.state());

    // Any thread may send on the same handle.
    std::thread::scope(|s| {
        for worker in 0..3 {
            let ws = &ws;
            s.spawn(move || ws.send_text(format!("hello from worker {worker}")));
        }
    });

    // The embedded server echoes the on_open message and the three workers' messages.
    for msg in ws.messages().take(4) {
        println!("received: {}", msg.as_text().unwrap_or("<binary>"));
    }

    let stats = ws.stats();
    println!(
        "sent {} messages, received {}; closing",
        stats.messages_sent, stats.messages_received
    );
    ws.close()?;
    println!("state after close: {}", ws.state());
    Ok(())
}
