// Runs the README's graphql-ws example (notifications.mjs) against a server for
// tests/api/test_standard_clients.py. Writes one JSON line per event to stdout and obeys one
// command per line on stdin: `drop` cuts the TCP connection under graphql-ws (as a network
// failure does), `resume` lets its automatic retry go ahead, `exit` stops.
import readline from "node:readline";
import WebSocket from "ws";
import { followNotifications } from "./notifications.mjs";

const [url, token, after] = process.argv.slice(2);
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

let socket = null;
let resume = () => {};
const { client, stop } = followNotifications({
  url,
  getToken: async () => token,
  after: after || null,
  show: (notification) => say({ event: "notification", ...notification }),
  webSocketImpl: WebSocket,
  on: {
    connected: (connected, _payload, wasRetry) => {
      socket = connected;
      say({ event: "connected", wasRetry });
    },
    closed: (event) => say({ event: "closed", code: event?.code ?? null }),
  },
  // In place of the default random back-off: the test causes notifications while it waits.
  retryWait: () => new Promise((go) => { resume = go; say({ event: "retrying" }); }),
});

const commands = {
  drop: () => socket.terminate(),
  resume: () => resume(),
  exit: async () => {
    stop();
    await client.dispose();
    process.exit(0);
  },
};
for await (const line of readline.createInterface({ input: process.stdin })) {
  await commands[line.trim()]();
}
