//! Subscribes to two market-data streams over one connection, consumes each on its own
//! thread, and shows the unroutable catch-all and the statistics.
//!
//! Run it with no argument to talk to a tiny Binance-style exchange started inside this
//! process, or give it a combined-stream endpoint:
//!
//! ```text
//! cargo run --example multiplex --features json
//! cargo run --example multiplex --features json -- wss://stream.binance.com:9443/stream
//! ```

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jetsocket::{Multiplex, Subscription};
use serde_json::{json, Value};
use tungstenite::Message;

/// Starts a loopback server speaking a small part of Binance's protocol: `SUBSCRIBE` and
/// `UNSUBSCRIBE` requests (answered with `{"result":null,"id":..}`), and a trade every
/// 50 ms on each subscribed stream, as `{"stream":..,"data":{..}}`.
fn embedded_exchange() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("ws://{}/stream", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
                let Ok(mut ws) = tungstenite::accept(stream) else {
                    return;
                };
                let mut subscribed: HashSet<String> = HashSet::new();
                let mut next_tick = Instant::now();
                let mut trade_id = 0u64;
                loop {
                    match ws.read() {
                        Ok(Message::Text(text)) => {
                            let Ok(req) = serde_json::from_str::<Value>(&text) else {
                                continue;
                            };
                            let params = req["params"].as_array().cloned().unwrap_or_default();
                            let names = params.iter().filter_map(|p| p.as_str().map(str::to_owned));
                            match req["method"].as_str() {
                                Some("SUBSCRIBE") => subscribed.extend(names),
                                Some("UNSUBSCRIBE") => names.for_each(|n| {
                                    subscribed.remove(&n);
                                }),
                                _ => continue,
                            }
                            let ack = json!({"result": null, "id": req["id"]});
                            if ws.send(Message::text(ack.to_string())).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return,
                    }
                    if Instant::now() >= next_tick {
                        next_tick += Duration::from_millis(50);
                        for stream in &subscribed {
                            trade_id += 1;
                            let symbol =
                                stream.split('@').next().unwrap_or_default().to_uppercase();
                            let event = json!({
                                "stream": stream,
                                "data": {"e": "trade", "s": symbol, "t": trade_id, "p": format!("{}.00", 60_000 + trade_id % 100), "q": "0.010"},
                            });
                            if ws.send(Message::text(event.to_string())).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(url)
}

/// Prints the first `n` messages of a subscription, on the calling thread.
fn consume(sub: Subscription, n: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for msg in sub.messages().take(n) {
            let event: Value = serde_json::from_slice(msg.as_bytes()).unwrap_or_default();
            println!(
                "[{:>14}] trade {} at {}",
                sub.channel(),
                event["data"]["t"],
                event["data"]["p"].as_str().unwrap_or("?")
            );
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            let url = embedded_exchange()?;
            println!("no URL given: using the embedded exchange at {url}");
            url
        }
    };

    let request_id = AtomicU64::new(1);
    let unsubscribe_id = AtomicU64::new(1_000_000);
    let mux = Multiplex::builder(&url)
        .channel_key("stream")
        .subscribe_message(move |stream| {
            let id = request_id.fetch_add(1, Ordering::Relaxed);
            json!({"method": "SUBSCRIBE", "params": [stream], "id": id}).to_string()
        })
        .unsubscribe_message(move |stream| {
            let id = unsubscribe_id.fetch_add(1, Ordering::Relaxed);
            json!({"method": "UNSUBSCRIBE", "params": [stream], "id": id}).to_string()
        })
        .connect()?;
    println!("connected to {}", mux.connection().url());

    let btc = mux.subscribe("btcusdt@trade")?;
    let eth = mux.subscribe("ethusdt@trade")?;
    println!("subscribed: {:?}", mux.subscriptions());

    // Each stream on its own thread. The clones keep the subscriptions alive here: dropping
    // the last handle of a stream would unsubscribe it.
    let workers = [consume(btc.clone(), 5), consume(eth.clone(), 5)];
    for worker in workers {
        worker.join().map_err(|_| "a consumer panicked")?;
    }

    // Acknowledgements have no "stream" field: they wait in the catch-all.
    while let Some(msg) = mux.try_recv_unroutable()? {
        println!("unroutable: {}", msg.as_text().unwrap_or("<binary>"));
    }

    mux.unsubscribe("ethusdt@trade")?;
    println!(
        "after unsubscribing: {:?} (ethusdt@trade active: {})",
        mux.subscriptions(),
        eth.is_active()
    );

    let stats = mux.stats();
    println!(
        "routed {} messages, {} unroutable; btcusdt@trade received {}, {} queued, {} dropped",
        stats.messages_routed,
        stats.unroutable,
        btc.stats().messages_received,
        btc.stats().queued,
        btc.stats().dropped,
    );
    mux.close()?;
    Ok(())
}
