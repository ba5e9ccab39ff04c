// Runs the GraphiQL page's own bootstrap script (as served) the way a browser would, with the
// page libraries stubbed, then sends one operation through the fetch function the bootstrap
// gave GraphiQL, exactly as GraphiQL's HTTP fetcher calls it. Prints what left the "browser":
// the fetcher options and every fetch call (URL and init, headers as an object).
//
// stdin: {"bootstrap": source, "dataset": {...}, "cookie": "a=1; b=2", "href": "http://h/graphql",
//         "operation": {"query": ..., "variables": ...}}
"use strict";

const vm = require("node:vm");

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const given = JSON.parse(input);
  const location = new URL(given.href);
  const calls = [];
  let options = null;
  let rendered = false;

  const sandbox = {
    URL,
    URLSearchParams,
    Headers,
    document: {
      cookie: given.cookie, // what a page's script sees: the cookies that are not HttpOnly
      currentScript: { dataset: given.dataset },
      getElementById: (id) => ({ id }),
    },
    history: { replaceState() {} },
    fetch: async (url, init) => {
      calls.push({ url: String(url), init: { ...init, headers: Object.fromEntries(new Headers(init.headers)) } });
      return { json: async () => ({}) };
    },
    GraphiQL: Object.assign(function GraphiQL() {}, {
      createFetcher: (given) => {
        options = given;
        return () => undefined;
      },
    }),
    GraphiQLPluginExplorer: { explorerPlugin: () => ({}) },
    React: { createElement: () => ({}) },
    ReactDOM: { createRoot: () => ({ render: () => (rendered = true) }) },
  };
  sandbox.window = sandbox;
  sandbox.window.location = {
    href: location.href,
    origin: location.origin,
    pathname: location.pathname,
    search: location.search,
  };
  vm.runInNewContext(given.bootstrap, sandbox, { filename: "graphiql-bootstrap.js" });

  // As @graphiql/toolkit's createSimpleFetcher calls `fetch` (graphiql 3.8.3).
  await options.fetch(options.url, {
    method: "POST",
    body: JSON.stringify(given.operation),
    headers: { "content-type": "application/json" },
  });
  const { fetch: _, ...plain } = options;
  process.stdout.write(JSON.stringify({ options: plain, hasFetch: typeof options.fetch === "function", rendered, calls }));
});
