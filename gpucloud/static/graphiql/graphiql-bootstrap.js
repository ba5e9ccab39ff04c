// Starts GraphiQL on the page the app serves at GET /graphql. A static file, not inline: the
// page's Content-Security-Policy allows scripts from this origin only.
//
// Authentication is the app's own: a browser signed in by a session cookie sends it with every
// request (credentials "same-origin"), and a cookie-authenticated mutation must echo the
// readable CSRF cookie in the CSRF header. The page names both in this script's data-csrf-cookie
// and data-csrf-header attributes (the cookie's name depends on GPUCLOUD_COOKIE_SECURE).
// Subscriptions use graphql-transport-ws on the same path; the browser sends the cookie with the
// handshake, and the headers tab's values (e.g. an authorization header) go in connection_init.
(function () {
  "use strict";

  var config = document.currentScript.dataset;
  var csrfCookie = config.csrfCookie;
  var csrfHeader = config.csrfHeader;

  function readCookie(name) {
    var pairs = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < pairs.length; i++) {
      var eq = pairs[i].indexOf("=");
      if (eq > 0 && pairs[i].slice(0, eq) === name) {
        return decodeURIComponent(pairs[i].slice(eq + 1));
      }
    }
    return null;
  }

  // Read at every request, not once: signing in from this page sets the cookie.
  function fetchWithCsrf(url, init) {
    var headers = new Headers(init && init.headers);
    var token = readCookie(csrfCookie);
    if (token && !headers.has(csrfHeader)) {
      headers.set(csrfHeader, token);
    }
    return fetch(
      url,
      Object.assign({}, init, { headers: headers, credentials: "same-origin" }),
    );
  }

  var url = window.location.origin + window.location.pathname;
  var subscriptionUrl = url.replace(/^http/, "ws");

  var fetcher = GraphiQL.createFetcher({
    url: url,
    subscriptionUrl: subscriptionUrl,
    fetch: fetchWithCsrf,
    enableIncrementalDelivery: false, // no @defer/@stream here: plain JSON responses
  });

  var DEFAULT_QUERY = [
    "# gpucloud's GraphQL API.",
    "#",
    "# Sign in with the logIn (or signUp) mutation: it sets the session cookie, and this page",
    "# then sends the CSRF header that mutations need. Or put an API token in the Headers tab:",
    '#   {"authorization": "Bearer gpc_..."}',
    "# Subscriptions run over graphql-transport-ws on this same path.",
    "#",
    "# Run: Ctrl-Enter. Complete: Ctrl-Space. The schema is in the Docs panel.",
    "",
    "{ __typename }",
    "",
  ].join("\n");

  // ?q=, ?variables= and ?operationName= make a shareable link, kept in step with the editors
  // (not ?query=: a GET with a query parameter is an operation, which GET never executes).
  var params = new URLSearchParams(window.location.search);

  function remember(name, value) {
    if (value) {
      params.set(name, value);
    } else {
      params.delete(name);
    }
    var search = params.toString();
    history.replaceState(null, "", search ? "?" + search : window.location.pathname);
  }

  var explorer = GraphiQLPluginExplorer.explorerPlugin();

  function Page() {
    return React.createElement(GraphiQL, {
      fetcher: fetcher,
      plugins: [explorer],
      defaultQuery: DEFAULT_QUERY,
      query: params.get("q") || undefined,
      variables: params.get("variables") || undefined,
      operationName: params.get("operationName") || undefined,
      onEditQuery: function (value) {
        remember("q", value);
      },
      onEditVariables: function (value) {
        remember("variables", value);
      },
      onEditOperationName: function (value) {
        remember("operationName", value);
      },
      defaultEditorToolsVisibility: true,
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false, // a token typed into the headers tab stays out of localStorage
      inputValueDeprecation: true,
    });
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(Page));
})();
