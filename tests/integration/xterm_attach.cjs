// Stock xterm.js on /terminal: @xterm/headless with @xterm/addon-attach, both unmodified, as the
// repository's node_modules pin them. Driven by tests/integration/test_terminal.py.
//
// node xterm_attach.cjs '{"url": ..., "origin": ..., "cols": C, "rows": R,
//                         "keys": "...", "via": "text" | "binary", "expect": ["...", ...]}'
//
// Types `keys` into the terminal and waits until every `expect` string is on its screen. Prints
// one JSON line: what the screen showed, and the kind of every frame each way.
"use strict";

const { WebSocket } = require("ws");
const { Terminal } = require("@xterm/headless");
const { AttachAddon } = require("@xterm/addon-attach");

// A browser's global: the addon compares `readyState` with `WebSocket.OPEN`.
globalThis.WebSocket = WebSocket;

const args = JSON.parse(process.argv[2]);

function screen(term) {
  const buffer = term.buffer.active;
  const lines = [];
  for (let y = 0; y < buffer.length; y++) lines.push(buffer.getLine(y).translateToString(true));
  return lines.join("\n");
}

function finish(code, result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

// `ws` as the browser WebSocket; only a browser sets Origin by itself.
const socket = new WebSocket(args.url, { origin: args.origin });
const sent = [];
const received = [];
const send = socket.send.bind(socket);
socket.send = (data, ...rest) => {
  sent.push(typeof data === "string" ? "text" : "binary");
  return send(data, ...rest);
};
socket.addEventListener("message", (ev) => {
  received.push(typeof ev.data === "string" ? "text" : "binary");
});

const term = new Terminal({ cols: args.cols, rows: args.rows, allowProposedApi: true });
const timer = setTimeout(
  () => finish(1, { error: "timed out", screen: screen(term), sent, received }),
  20000,
);
let seen = null; // the screen once everything expected was on it; then we close
socket.addEventListener("close", (ev) => {
  clearTimeout(timer);
  const result = { screen: seen ?? screen(term), sent, received, protocol: socket.protocol,
                   code: ev.code, reason: ev.reason };
  finish(seen === null ? 1 : 0, seen === null ? { error: "closed", ...result } : result);
});
socket.addEventListener("error", (ev) => finish(1, { error: String(ev.message) }));

socket.addEventListener("open", () => {
  term.loadAddon(new AttachAddon(socket));
  if (args.via === "binary") {
    // What the browser's mouse reporting does (the only source of onBinary, absent headless):
    // the addon sends the string's bytes as a binary frame.
    term._core.coreService.triggerBinaryEvent(args.keys);
  } else {
    term.input(args.keys, true); // typing: onData, which the addon sends as a text frame
  }
  const poll = setInterval(() => {
    // Written asynchronously: flush with an empty write, then look.
    term.write("", () => {
      const shown = screen(term);
      if (seen === null && args.expect.every((needle) => shown.includes(needle))) {
        clearInterval(poll);
        seen = shown;
        socket.close(1000);
      }
    });
  }, 100);
});
