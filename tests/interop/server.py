#!/usr/bin/env python3
"""WebSocket test server built on the Python `websockets` library (asyncio).

Used by tests/interop.rs to check jetsocket against an independent implementation.

    python server.py --port 0 [--tls-cert CERT --tls-key KEY] [--subprotocol P ...]

Prints `PORT <n>` as the first line of stdout once listening on 127.0.0.1, then serves
until killed or until its stdin reaches end of file (so a crashed test never leaks it).

Behaviour by request path:

* `/echo`                   echoes text and binary messages.
* `/fragmented?size=N`      sends one text message of N bytes in several fragments, then echoes.
* `/ping`                   sends a ping, waits for the pong, sends "pong-received", then echoes.
* `/close?code=C&reason=R`  closes at once with that code and reason.
* `/headers`                sends the request headers as compact JSON (lower-case names,
                            sorted, repeated headers joined with ", "), then echoes.
* `/exit`                   ends the whole process abruptly (no close frames).

Subprotocols: the first protocol offered by the client that is among `--subprotocol`.
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
    elif path == "/exit":
        os._exit(0)
    else:
        await ws.close(1008, f"unknown path {path}")


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
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        threading.Thread(target=watch_stdin, daemon=True).start()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
