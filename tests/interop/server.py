#!/usr/bin/env python3
"""WebSocket test server built on the Python `websockets` library (asyncio).

Used by tests/interop.rs to check jetsocket against an independent implementation.

    python server.py --port 0 [--tls-cert CERT --tls-key KEY] [--subprotocol P ...]
                     [--compression MODE]

Prints `PORT <n>` as the first line of stdout once listening on 127.0.0.1, then serves
until killed or until its stdin reaches end of file (so a crashed test never leaks it).

Behaviour by request path:

* `/echo`                   echoes text and binary messages.
* `/fragmented?size=N`      sends one text message of N bytes in several fragments, then echoes.
* `/ping`                   sends a ping, waits for the pong, sends "pong-received", then echoes.
* `/close?code=C&reason=R`  closes at once with that code and reason.
* `/headers`                sends the request headers as compact JSON (lower-case names,
                            sorted, repeated headers joined with ", "), then echoes.
* `/extensions`             sends the `Sec-WebSocket-Extensions` value of its handshake
                            response as text (empty when it has none), then echoes.
* `/exit`                   ends the whole process abruptly (no close frames).

Subprotocols: the first protocol offered by the client that is among `--subprotocol`.

Compression (permessage-deflate, RFC 7692), by `--compression`:

* not given              the library's own default: accepted with context takeover both ways,
                         `server_max_window_bits=12`, `client_max_window_bits=12` (when the
                         client offers that parameter) and zlib `memLevel=5`.
* `off`                  declined: the response has no `Sec-WebSocket-Extensions`.
* `default`              accepted as plain `permessage-deflate`: context takeover both ways
                         and 32 KiB windows (the RFC defaults, unlike the library default).
* `no-context-takeover`  accepted with `server_no_context_takeover` and
                         `client_no_context_takeover`, whatever the client offered.
* `small-window`         accepted with `server_max_window_bits=10` and, when the client
                         offers `client_max_window_bits`, `client_max_window_bits=9` (the
                         smallest window zlib can compress raw deflate with; the server
                         inflates with a 512-byte window, so it fails on any reference
                         further back).

Whenever compression is on, the server compresses every message it sends, even empty ones.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

# 16 MiB messages plus a generous margin.
MAX_SIZE = 32 * 1024 * 1024


def pattern(size):
    """The deterministic ASCII text the client checks fragmented messages against."""
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    return (alphabet * (size // 26 + 1))[:size]


def fragments(text, parts=4):
    """Splits `text` into `parts` non-empty pieces (fewer when it is shorter)."""
    if len(text) <= 1:
        return [text]
    step = max(1, -(-len(text) // parts))
    return [text[i : i + step] for i in range(0, len(text), step)]


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def handler(ws):
    url = urlsplit(ws.request.path)
    query = parse_qs(url.query)
    path = url.path
    if path == "/echo":
        await echo(ws)
    elif path == "/fragmented":
        size = int(query.get("size", ["100000"])[0])
        await ws.send(fragments(pattern(size)))
        await echo(ws)
    elif path == "/ping":
        pong = await ws.ping(b"interop")
        await asyncio.wait_for(pong, timeout=10)
        await ws.send("pong-received")
        await echo(ws)
    elif path == "/close":
        code = int(query.get("code", ["1000"])[0])
        reason = query.get("reason", [""])[0]
        await ws.close(code, reason)
    elif path == "/headers":
        headers = {}
        for name, value in ws.request.headers.raw_items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        await ws.send(json.dumps(headers, sort_keys=True, separators=(",", ":")))
        await echo(ws)
    elif path == "/extensions":
        await ws.send(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        await echo(ws)
    elif path == "/exit":
        os._exit(0)
    else:
        await ws.close(1008, f"unknown path {path}")


def compression_settings(mode):
    """The keyword arguments of `serve` that set up compression `mode` (see the module doc)."""
    if mode is None:
        return {}
    if mode == "off":
        return {"compression": None}
    if mode == "default":
        factory = ServerPerMessageDeflateFactory()
    elif mode == "no-context-takeover":
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
        )
    elif mode == "small-window":
        factory = ServerPerMessageDeflateFactory(
            server_max_window_bits=10,
            client_max_window_bits=9,
        )
    else:
        raise ValueError(f"unknown compression mode {mode}")
    # `compression=None` keeps `serve` from adding its own default factory next to ours.
    return {"compression": None, "extensions": [factory]}


def watch_stdin():
    """Exits the process when stdin reaches end of file (the test that started us is gone)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--subprotocol", action="append", default=[])
    parser.add_argument(
        "--compression",
        choices=["off", "default", "no-context-takeover", "small-window"],
    )
    args = parser.parse_args()

    context = None
    if args.tls_cert or args.tls_key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)

    offered = list(args.subprotocol)

    def select_subprotocol(_connection, subprotocols):
        for protocol in subprotocols:
            if protocol in offered:
                return protocol
        return None

    async with serve(
        handler,
        "127.0.0.1",
        args.port,
        ssl=context,
        select_subprotocol=select_subprotocol,
        max_size=MAX_SIZE,
        ping_interval=None,
        **compression_settings(args.compression),
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
