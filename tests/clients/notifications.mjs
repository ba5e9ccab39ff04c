// The README's graphql-ws example ("Notifications"), exactly as tests/api/test_standard_clients.py
// runs it. graphql-ws re-sends a subscription's payload on every automatic retry, so the cursor
// must be read when the message is sent (a getter), not when `subscribe` was called: a retry then
// resumes after the last notification shown, with none repeated and none missed.
import { createClient } from "graphql-ws";

const NOTIFICATIONS = `subscription($after: String) {
  notifications(after: $after) { cursor type createdAt } }`;

// `after`: a cursor saved earlier (null: from now on); `options`: more createClient options
// (in node, `webSocketImpl` from the `ws` package; a browser has its own WebSocket).
export function followNotifications({ url, getToken, after = null, show, ...options }) {
  let cursor = after;
  const client = createClient({
    url,
    // Also called again on every retry: a token refreshed meanwhile is the one sent.
    connectionParams: async () => ({ authorization: `Bearer ${await getToken()}` }),
    ...options,
  });
  const stop = client.subscribe(
    { query: NOTIFICATIONS, get variables() { return { after: cursor }; } },
    {
      next: ({ data }) => {
        cursor = data.notifications.cursor; // save it (e.g. localStorage) to resume after a reload
        show(data.notifications);
      },
      error: (error) => console.error(error), // a 4401 close: sign in again (not retried)
      complete: () => {},
    },
  );
  return { client, stop };
}
