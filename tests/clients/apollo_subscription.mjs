// Apollo Client's GraphQLWsLink, as an SPA sets it up, for tests/api/test_standard_clients.py:
// subscribes to `notifications` after a cursor and prints the first notification as JSON.
import { ApolloClient, InMemoryCache, gql } from "@apollo/client/core/index.js";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions/index.js";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, after] = process.argv.slice(2);
const link = new GraphQLWsLink(createClient({
  url,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
}));
const apollo = new ApolloClient({ link, cache: new InMemoryCache() });
const subscription = apollo.subscribe({
  query: gql`subscription($after: String) { notifications(after: $after) { cursor type } }`,
  variables: { after },
}).subscribe({
  next: ({ data }) => {
    process.stdout.write(`${JSON.stringify(data.notifications)}\n`);
    subscription.unsubscribe();
    apollo.stop();
    process.exit(0);
  },
  error: (error) => {
    console.error(error);
    process.exit(1);
  },
});
