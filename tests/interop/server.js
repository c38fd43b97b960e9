#!/usr/bin/env node
// WebSocket test server built on Node's `ws` package; the twin of server.py.
//
// Used by tests/interop.rs to check jetsocket against an independent implementation.
//
//     node server.js --port 0 [--tls-cert CERT --tls-key KEY] [--subprotocol P ...]
//                    [--compression MODE]
//
// Prints `PORT <n>` as the first line of stdout once listening on 127.0.0.1, then serves
// until killed or until its stdin reaches end of file (so a crashed test never leaks it).
//
// Behaviour by request path:
//
// * `/echo`                   echoes text and binary messages.
// * `/fragmented?size=N`      sends one text message of N bytes in several fragments, then echoes.
// * `/ping`                   sends a ping, waits for the pong, sends "pong-received", then echoes.
// * `/close?code=C&reason=R`  closes at once with that code and reason.
// * `/headers`                sends the request headers as compact JSON (lower-case names,
//                             sorted, repeated headers joined with ", "), then echoes.
// * `/extensions`             sends the `Sec-WebSocket-Extensions` value of its handshake
//                             response as text (empty when it has none), then echoes.
// * `/exit`                   ends the whole process abruptly (no close frames).
//
// Subprotocols: the first protocol offered by the client that is among `--subprotocol`.
//
// Compression (permessage-deflate, RFC 7692), by `--compression`:
//
// * not given              the library's own default: declined.
// * `off`                  declined: the response has no `Sec-WebSocket-Extensions`.
// * `default`              accepted as plain `permessage-deflate`: context takeover both ways
//                          and 32 KiB windows.
// * `no-context-takeover`  accepted with `server_no_context_takeover` and
//                          `client_no_context_takeover`, whatever the client offered.
// * `small-window`         accepted with `server_max_window_bits=10` and
//                          `client_max_window_bits=9` (a client offer without
//                          `client_max_window_bits` fails the handshake with 400). 9 is the
//                          smallest window zlib can compress raw deflate with; the server
//                          inflates with a 512-byte window, so it fails on any reference
//                          further back.
//
// Whenever compression is on, the server compresses every message it sends, even empty ones
// (`threshold: 0`; the library's default leaves small messages uncompressed).
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

// 16 MiB messages plus a generous margin.
const MAX_SIZE = 32 * 1024 * 1024;

// Where the `headers` listener leaves a request's `Sec-WebSocket-Extensions` response value
// for `/extensions`: the connection itself only knows the extension names.
const kExtensions = Symbol('response-extensions');

function parseArgs(argv) {
  const args = { port: 0, tlsCert: null, tlsKey: null, subprotocols: [], compression: null };
  for (let i = 0; i < argv.length; i++) {
    const value = () => {
      if (i + 1 >= argv.length) {
        throw new Error(`${argv[i]} needs a value`);
      }
      return argv[++i];
    };
    switch (argv[i]) {
      case '--port':
        args.port = Number.parseInt(value(), 10);
        break;
      case '--tls-cert':
        args.tlsCert = value();
        break;
      case '--tls-key':
        args.tlsKey = value();
        break;
      case '--subprotocol':
        args.subprotocols.push(value());
        break;
      case '--compression':
        args.compression = value();
        break;
      default:
        throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return args;
}

// The `perMessageDeflate` option of the server for compression `mode` (see the header).
function perMessageDeflate(mode) {
  switch (mode) {
    case null:
    case 'off':
      return false;
    case 'default':
      return { threshold: 0 };
    case 'no-context-takeover':
      return { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true };
    case 'small-window':
      return { threshold: 0, serverMaxWindowBits: 10, clientMaxWindowBits: 9 };
    default:
      throw new Error(`unknown compression mode ${mode}`);
  }
}

// The deterministic ASCII text the client checks fragmented messages against.
function pattern(size) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz';
  return alphabet.repeat(Math.floor(size / 26) + 1).slice(0, size);
}

// Splits `text` into `parts` non-empty pieces (fewer when it is shorter).
function fragments(text, parts = 4) {
  if (text.length <= 1) {
    return [text];
  }
  const step = Math.max(1, Math.ceil(text.length / parts));
  const out = [];
  for (let i = 0; i < text.length; i += step) {
    out.push(text.slice(i, i + step));
  }
  return out;
}

function echo(ws) {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
}

function handle(ws, req) {
  const url = new URL(req.url, 'http://localhost');
  switch (url.pathname) {
    case '/echo':
      echo(ws);
      break;
    case '/fragmented': {
      const size = Number.parseInt(url.searchParams.get('size') ?? '100000', 10);
      const parts = fragments(pattern(size));
      parts.forEach((part, i) => ws.send(part, { binary: false, fin: i === parts.length - 1 }));
      echo(ws);
      break;
    }
    case '/ping':
      ws.once('pong', () => ws.send('pong-received'));
      ws.ping(Buffer.from('interop'));
      echo(ws);
      break;
    case '/close': {
      const code = Number.parseInt(url.searchParams.get('code') ?? '1000', 10);
      ws.close(code, url.searchParams.get('reason') ?? '');
      break;
    }
    case '/headers': {
      const headers = {};
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i].toLowerCase();
        const value = req.rawHeaders[i + 1];
        headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
      }
      const sorted = {};
      for (const name of Object.keys(headers).sort()) {
        sorted[name] = headers[name];
      }
      ws.send(JSON.stringify(sorted));
      echo(ws);
      break;
    }
    case '/extensions':
      ws.send(req[kExtensions] ?? '');
      echo(ws);
      break;
    case '/exit':
      process.exit(0);
      break;
    default:
      ws.close(1008, `unknown path ${url.pathname}`);
  }
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server =
    args.tlsCert || args.tlsKey
      ? https.createServer({ cert: fs.readFileSync(args.tlsCert), key: fs.readFileSync(args.tlsKey) })
      : http.createServer();
  const wss = new WebSocketServer({
    server,
    maxPayload: MAX_SIZE,
    perMessageDeflate: perMessageDeflate(args.compression),
    handleProtocols: (offered) => {
      for (const protocol of offered) {
        if (args.subprotocols.includes(protocol)) {
          return protocol;
        }
      }
      return false;
    },
  });
  wss.on('headers', (headers, req) => {
    const prefix = 'sec-websocket-extensions:';
    const line = headers.find((h) => h.toLowerCase().startsWith(prefix));
    if (line !== undefined) {
      req[kExtensions] = line.slice(prefix.length).trim();
    }
  });
  wss.on('connection', handle);
  server.listen(args.port, '127.0.0.1', () => {
    process.stdout.write(`PORT ${server.address().port}\n`);
  });

  // Exit when stdin reaches end of file: the test that started us is gone.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
}

main();
