// Unit tests of the ES module build (dist/leadscore.mjs, the file the package exports) with fakes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createLeadscore } from "../dist/leadscore.mjs";
import {
  brokenStorage,
  fakeBeacon,
  fakeFetch,
  fakePage,
  fakeStorage,
  fakeTimers,
  response,
} from "./fakes.js";

const KEY = "lsp_test";
const HOST = "https://leadscore.example/";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function setup({ plan = [], storage = fakeStorage(), beacon = fakeBeacon(), ...rest } = {}) {
  const net = fakeFetch(...plan);
  const timers = fakeTimers();
  const page = fakePage();
  const warnings = [];
  const ls = createLeadscore({
    fetch: net.fetch,
    storage,
    navigator: beacon.navigator,
    document: page.document,
    window: page.window,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    random: () => 0.5,
    warn: (msg) => warnings.push(msg),
    ...rest,
  });
  return { ls, net, timers, page, beacon, storage, warnings };
}

test("events are batched to the batch route with the publishable key in X-API-Key", async () => {
  const { ls, net } = setup();
  ls.init({ key: KEY, host: HOST });
  ls.page();
  ls.track("signup", { plan: "trial" });
  ls.identify(" ada@example.com ", { name: "Ada" });
  await ls.flush();
  assert.equal(net.calls.length, 1);
  const [call] = net.calls;
  assert.equal(call.url, "https://leadscore.example/api/events/batch");
  assert.equal(call.init.method, "POST");
  assert.equal(call.init.headers["X-API-Key"], KEY);
  assert.equal(call.init.headers["Content-Type"], "application/json");
  const events = call.body.events;
  assert.deepEqual(
    events.map((e) => e.eventType),
    ["page_view", "signup", "identify"],
  );
  assert.deepEqual(events[0].properties, {
    url: "https://shop.example/pricing?x=1",
    path: "/pricing",
    title: "Pricing",
    referrer: "https://search.example/",
  });
  assert.deepEqual(events[1].properties, { plan: "trial" });
  assert.deepEqual(events[2].properties, { name: "Ada", email: "ada@example.com" });
  for (const e of events) {
    assert.match(e.eventId, UUID);
    assert.equal(e.anonymousId, ls.anonymousId());
    assert.equal(e.timestamp, undefined); // the server stamps events: a wrong clock cannot hurt
  }
  assert.equal(new Set(events.map((e) => e.eventId)).size, 3);
  assert.equal(ls.pending(), 0);
});

test("a first event waits flushInterval for company, then the timer sends the batch", async () => {
  const { ls, net, timers } = setup();
  ls.init({ key: KEY, host: HOST, flushInterval: 2500 });
  ls.track("download");
  ls.track("email_open");
  assert.equal(net.calls.length, 0);
  assert.deepEqual(timers.delays, [2500]);
  await timers.fire();
  assert.equal(net.calls.length, 1);
  assert.equal(net.calls[0].body.events.length, 2);
});

test("a full batch is sent at once, and no request holds more than maxBatch events", async () => {
  const { ls, net } = setup();
  ls.init({ key: KEY, host: HOST, maxBatch: 3 });
  for (let i = 0; i < 7; i++) ls.track("page_view");
  await ls.flush();
  assert.deepEqual(
    net.calls.map((c) => c.body.events.length),
    [3, 3, 1],
  );
});

test("events tracked before init are kept and sent after it", async () => {
  const { ls, net } = setup();
  ls.track("signup");
  assert.equal(ls.pending(), 1);
  ls.init({ key: KEY, host: HOST });
  await ls.flush();
  assert.equal(net.calls.length, 1);
  assert.equal(net.calls[0].body.events[0].eventType, "signup");
});

test("a retry resends the same events with the same eventIds (it counts once)", async () => {
  const { ls, net, timers } = setup({ plan: [new TypeError("offline"), response(503), response(202)] });
  ls.init({ key: KEY, host: HOST });
  ls.track("demo_request");
  ls.track("signup");
  await ls.flush(); // network error: waits for a retry
  assert.equal(ls.pending(), 2);
  await timers.fire(); // 503: waits again
  await timers.fire(); // 202
  assert.equal(net.calls.length, 3);
  const ids = net.calls.map((c) => c.body.events.map((e) => e.eventId).join(","));
  assert.equal(new Set(ids).size, 1);
  assert.equal(ls.pending(), 0);
});

test("a request that does not answer within timeout is abandoned and sent again", async () => {
  let calls = 0;
  const hanging = (url, init) => {
    calls += 1;
    if (calls > 1) return Promise.resolve(response(202));
    return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(init.signal.reason)));
  };
  const { ls, timers } = setup({ fetch: hanging });
  ls.init({ key: KEY, host: HOST, timeout: 20 });
  ls.track("signup");
  const keepAlive = setTimeout(() => {}, 5000); // Node's AbortSignal.timeout alone keeps no loop
  await ls.flush(); // aborted after 20 ms: waits for its retry
  clearTimeout(keepAlive);
  assert.equal(ls.pending(), 1);
  await timers.fire();
  assert.equal(calls, 2);
  assert.equal(ls.pending(), 0);
});

test("backoff is exponential with jitter and capped", async () => {
  const plan = Array.from({ length: 7 }, () => response(500));
  const { ls, timers } = setup({ plan });
  ls.init({ key: KEY, host: HOST, retryBase: 1000, retryCap: 8000 });
  ls.track("page_view");
  await ls.flush();
  for (let i = 0; i < 6; i++) await timers.fire();
  // the first delay is the flush interval; then random() = 0.5 gives three quarters of the
  // ceiling, which doubles from retryBase up to retryCap
  assert.deepEqual(timers.delays, [1000, 750, 1500, 3000, 6000, 6000, 6000, 6000]);
});

test("429 and 503 wait as long as Retry-After says (seconds or an HTTP date)", async () => {
  const later = new Date(Date.UTC(2026, 0, 1, 0, 0, 30)).toUTCString();
  const plan = [
    response(429, {}, { "Retry-After": "7" }),
    response(503, {}, { "Retry-After": later }),
    response(202),
  ];
  const { ls, timers } = setup({ plan, now: () => Date.UTC(2026, 0, 1, 0, 0, 10) });
  ls.init({ key: KEY, host: HOST });
  ls.track("page_view");
  await ls.flush();
  await timers.fire();
  await timers.fire();
  assert.deepEqual(timers.delays.slice(1), [7000, 20000]); // after the flush interval
  assert.equal(ls.pending(), 0);
});

test("Retry-After: 0 still counts as an attempt (no endless resending)", async () => {
  const plan = Array.from({ length: 5 }, () => response(503, {}, { "Retry-After": "0" }));
  const { ls, net, timers, warnings } = setup({ plan });
  ls.init({ key: KEY, host: HOST, maxRetries: 3 });
  ls.track("page_view");
  await ls.flush();
  for (let i = 0; i < 5; i++) await timers.fire();
  assert.equal(net.calls.length, 4);
  assert.equal(ls.pending(), 0);
  assert.match(warnings.join(), /gave up on 1 events after 4 attempts/);
});

test("a batch is given up after maxRetries, with a warning, and the next one goes on", async () => {
  const plan = [response(500), response(500), response(500), response(202)];
  const { ls, net, timers, warnings } = setup({ plan });
  ls.init({ key: KEY, host: HOST, maxRetries: 2 });
  ls.track("page_view");
  await ls.flush();
  await timers.fire();
  await timers.fire();
  assert.equal(ls.pending(), 0);
  assert.match(warnings.join(), /gave up on 1 events after 3 attempts/);
  ls.track("signup");
  await ls.flush();
  assert.equal(net.calls.length, 4);
  assert.equal(net.calls[3].body.events[0].eventType, "signup");
});

test("while leadscore cannot be reached at most maxQueue events wait; the oldest go", async () => {
  const { ls, net, timers, warnings } = setup({ plan: [new TypeError("offline")] });
  ls.init({ key: KEY, host: HOST, maxBatch: 2, maxQueue: 3 });
  const ids = [0, 1].map(() => ls.track("page_view")); // the first batch: waits for its retry
  await ls.flush();
  const later = [0, 1, 2, 3].map(() => ls.track("download"));
  assert.equal(ls.pending(), 2 + 3);
  assert.match(warnings.join(), /more than 3 events waiting/);
  await timers.fire();
  await ls.flush();
  const sent = net.calls.slice(1).flatMap((c) => c.body.events.map((e) => e.eventId));
  assert.deepEqual(sent, [...ids, ...later.slice(1)]);
});

test("a refused key or origin (401/403) is not retried", async () => {
  const { ls, net, timers, warnings } = setup({ plan: [response(403)] });
  ls.init({ key: KEY, host: HOST });
  ls.track("page_view");
  await ls.flush();
  assert.equal(net.calls.length, 1);
  assert.equal(timers.count(), 0);
  assert.equal(ls.pending(), 0);
  assert.match(warnings.join(), /HTTP 403/);
});

test("422 drops only the invalid events and sends the rest again at once", async () => {
  const invalid = { invalid: [{ index: 1, fields: [{ field: "properties", message: "too big" }] }] };
  const { ls, net, timers, warnings } = setup({ plan: [response(422, invalid), response(202)] });
  ls.init({ key: KEY, host: HOST });
  const first = ls.track("page_view");
  ls.track("download", { huge: true });
  const third = ls.track("signup");
  await timers.fire(); // the flush interval: no flush() call drives the resend
  assert.equal(net.calls.length, 2);
  assert.match(warnings.join(), /1 invalid events dropped/);
  assert.deepEqual(
    net.calls[1].body.events.map((e) => e.eventId),
    [first, third],
  );
  assert.equal(ls.pending(), 0);
});

test("hiding the page beacons every unsent event, one per request, key in the body", async () => {
  const { ls, net, page, beacon, timers } = setup({ plan: [response(503)] });
  ls.init({ key: KEY, host: HOST });
  const retried = ls.track("demo_request");
  await ls.flush(); // 503: waiting for its retry
  const queued = ls.track("signup");
  page.document.visibilityState = "hidden";
  page.emit("visibilitychange");
  assert.equal(beacon.sent.length, 2);
  for (const b of beacon.sent) {
    assert.equal(b.url, "https://leadscore.example/api/ingest/event");
    assert.equal(b.type, "string"); // sent as text/plain: a simple request, no preflight
    assert.equal(b.body.apiKey, KEY);
    assert.equal(b.body.anonymousId, ls.anonymousId());
  }
  assert.deepEqual(
    beacon.sent.map((b) => b.body.eventId),
    [retried, queued],
  );
  assert.equal(ls.pending(), 0);
  await timers.fire(); // the retry timer was cancelled: nothing is sent twice
  assert.equal(net.calls.length, 1);
  page.emit("pagehide"); // nothing left
  assert.equal(beacon.sent.length, 2);
});

test("without sendBeacon (or when it refuses) the page-hide falls back to a keepalive fetch", async () => {
  const { ls, net, page } = setup({ beacon: fakeBeacon(false) });
  ls.init({ key: KEY, host: HOST });
  const id = ls.track("page_view");
  page.emit("pagehide");
  await Promise.resolve();
  assert.equal(net.calls.length, 1);
  assert.equal(net.calls[0].url, "https://leadscore.example/api/ingest/event");
  assert.equal(net.calls[0].init.keepalive, true);
  assert.equal(net.calls[0].body.eventId, id);
  assert.equal(net.calls[0].body.apiKey, KEY);
});

test("the anonymous id is made once and kept in storage across page loads", () => {
  const storage = fakeStorage();
  const first = setup({ storage }).ls.anonymousId();
  assert.match(first, UUID);
  assert.equal(storage.items.get("leadscore_anonymous_id"), first);
  const again = setup({ storage }).ls.anonymousId(); // the next page load
  assert.equal(again, first);
});

test("blocked storage falls back (cookie-less) and the SDK still works", async () => {
  const { ls, net } = setup({ storage: brokenStorage() });
  ls.init({ key: KEY, host: HOST });
  const id = ls.anonymousId();
  assert.match(id, UUID);
  assert.equal(ls.anonymousId(), id);
  ls.page();
  await ls.flush();
  assert.equal(net.calls[0].body.events[0].anonymousId, id);
});

test("without crypto.randomUUID event ids are still random v4 UUIDs", () => {
  let n = 0;
  const crypto = { getRandomValues: (b) => b.forEach((_, i) => (b[i] = (i * 37 + n++) & 0xff)) };
  const { ls } = setup({ crypto });
  const a = ls.track("page_view");
  const b = ls.track("page_view");
  assert.match(a, UUID);
  assert.match(b, UUID);
  assert.notEqual(a, b);
  const bare = setup({ crypto: {}, random: Math.random }).ls.track("page_view");
  assert.match(bare, UUID);
});

test("bad calls fail loudly instead of sending events the server would refuse", () => {
  const { ls } = setup();
  assert.throws(() => ls.init({ host: HOST }), /init needs/);
  assert.throws(() => ls.track("has spaces"), /eventType must match/);
  assert.throws(() => ls.track(""), /eventType must match/);
  assert.throws(() => ls.identify("  "), /needs an e-mail/);
  assert.equal(ls.pending(), 0);
});
