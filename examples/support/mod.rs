//! What the examples share: an echo server to talk to when no URL is given.

use std::net::TcpListener;

/// The URL from the first command-line argument, or else that of a loopback echo server
/// started on its own thread (said on stdout).
pub fn url_or_embedded_echo() -> std::io::Result<String> {
    if let Some(url) = std::env::args().nth(1) {
        return Ok(url);
    }
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
    println!("no URL given: using the embedded echo server at {url}");
    Ok(url)
}
