//! Typed JSON messages with serde: send a struct, receive it back as a struct, and see how
//! strict and lenient parsing treat a message that is not valid JSON.
//!
//! ```text
//! cargo run --example typed --features json
//! ```

use std::net::TcpListener;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use jetsocket::{Error, SyncWebSocket};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Trade {
    symbol: String,
    price: f64,
    qty: f64,
    seq: u64,
}

/// Starts a loopback echo server on its own thread and returns its URL.
fn embedded_echo_server() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}/", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                while let Ok(msg) = ws.read() {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).is_err() {
                        break;
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
        None => embedded_echo_server()?,
    };
    let ws = SyncWebSocket::builder(&url).connect()?;

    let trade = Trade {
        symbol: "BTC-USD".into(),
        price: 64_000.5,
        qty: 0.25,
        seq: 1,
    };
    ws.send_json(&trade)?;
    let back: Trade = ws.recv_json_timeout(Duration::from_secs(10))?;
    println!("round trip: {back:?}");
    assert_eq!(back, trade);

    // Strict: a message that does not parse is an error that carries the raw payload.
    ws.send_text("this is not json")?;
    match ws.recv_json_timeout::<Trade>(Duration::from_secs(10)) {
        Err(Error::Json { error, raw }) => println!("strict: {error} (raw: {raw:?})"),
        other => println!("unexpected: {other:?}"),
    }

    // Lenient: skipped and counted.
    ws.send_text("{\"broken\": ")?;
    ws.send_json(&Trade { seq: 2, ..trade })?;
    let next = ws
        .typed_lenient::<Trade>()
        .next()
        .ok_or("connection ended")?;
    println!(
        "lenient: {next:?}, skipped {} message(s)",
        ws.stats().parse_failures
    );

    ws.close()?;
    Ok(())
}
