//! Typed JSON messages with serde: send a struct, receive it back as a struct, and see how
//! strict and lenient parsing treat a message that is not valid JSON.
//!
//! ```text
//! cargo run --example typed --features json
//! ```

mod support;

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = support::url_or_embedded_echo()?;
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
