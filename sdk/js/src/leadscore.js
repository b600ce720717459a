/**
 * leadscore browser SDK: sends a website's events to leadscore with a publishable key.
 *
 * Why it is shaped like this:
 * - Every event gets its eventId here, once, and keeps it through every retry and the page-hide
 *   beacon: the server ignores an eventId a lead already has, so a resend can never count twice.
 * - Events are batched to POST /api/events/batch (publishable keys may use it) and flushed on a
 *   timer, when a batch is full, and by sendBeacon when the page is hidden. sendBeacon cannot set
 *   headers, so the beacon goes one event per request to POST /api/ingest/event, which takes the
 *   key as `apiKey` in the body; the server checks the Origin exactly as for the batch route.
 * - No timestamp is sent: the server stamps events when it receives them, so a browser whose clock
 *   is wrong cannot get its events rejected as "in the future" (scores decay by days; a few
 *   seconds of batching delay change nothing).
 * - Everything the browser provides (fetch, storage, sendBeacon, timers, randomness) can be passed
 *   in, so the unit tests run in Node with fakes.
 */

const EVENT_TYPE = /^[A-Za-z0-9_.:-]{1,64}$/;
const STORAGE_KEY = "leadscore_anonymous_id";
const DEFAULTS = {
  flushInterval: 1000, // ms a first event waits for company before its batch is sent
  maxBatch: 50, // events per request (the server takes up to 1,000)
  maxRetries: 8, // attempts after the first before a batch is given up
  retryBase: 1000, // ms, doubled per attempt
  retryCap: 30000, // ms, the longest backoff (a Retry-After from the server is honoured as is)
  timeout: 10000, // ms before a request that has not answered is abandoned and retried
  maxQueue: 1000, // events kept while leadscore cannot be reached; beyond it the oldest go
};

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
  };
}

/** The first storage that really works: localStorage, else sessionStorage, else memory. */
function pickStorage(candidates) {
  for (const get of candidates) {
    try {
      const s = get();
      if (s) {
        s.setItem("leadscore_probe", "1");
        return s;
      }
    } catch (_) {
      // blocked storage (private mode, sandboxed frame): try the next one
    }
  }
  return memoryStorage();
}

function newUuid(cryptoObj, random) {
  if (cryptoObj && typeof cryptoObj.randomUUID === "function") return cryptoObj.randomUUID();
  const b = new Uint8Array(16);
  if (cryptoObj && typeof cryptoObj.getRandomValues === "function") cryptoObj.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = Math.floor(random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40; // version 4
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Milliseconds a 429/503 asks us to wait (seconds or an HTTP date), or null. */
function retryAfterMs(response, now) {
  const value = response.headers && response.headers.get && response.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, at - now()) : null;
}

export function createLeadscore(env = {}) {
  const g = typeof globalThis === "object" ? globalThis : {};
  const AbortSignal = g.AbortSignal; // absent in old browsers: requests then wait as long as they do
  const fetchFn = env.fetch || (g.fetch ? g.fetch.bind(g) : null);
  const nav = env.navigator || g.navigator;
  const doc = env.document || g.document;
  const win = env.window || (typeof window === "object" ? window : null);
  const setTimer = env.setTimeout || ((fn, ms) => setTimeout(fn, ms));
  const clearTimer = env.clearTimeout || ((id) => clearTimeout(id));
  const random = env.random || Math.random;
  const now = env.now || Date.now;
  const cryptoObj = env.crypto || g.crypto;
  const warn = env.warn || ((...a) => g.console && g.console.warn(...a));
  const storage = pickStorage([() => env.storage, () => g.localStorage, () => g.sessionStorage]);

  let config = null;
  let queue = []; // events not yet in a request
  let batch = null; // the events of the request being sent or waiting for its retry
  let attempt = 0;
  let sending = null; // the promise of the request in flight
  let timer = null;
  let anonymousId = null;
  let listening = false;

  function url(path) {
    return `${config.host}${path}`;
  }

  function schedule(ms) {
    if (timer !== null) clearTimer(timer);
    timer = setTimer(() => {
      timer = null;
      send();
    }, ms);
  }

  function backoffMs() {
    const ceiling = Math.min(config.retryCap, config.retryBase * 2 ** attempt);
    return ceiling / 2 + random() * (ceiling / 2); // "equal jitter": spread out, never zero
  }

  /** One request: the pending batch (a retry, same eventIds) or the next one from the queue. */
  function send() {
    if (!config || sending) return sending || Promise.resolve();
    if (timer !== null) {
      clearTimer(timer);
      timer = null;
    }
    if (!batch) {
      if (!queue.length) return Promise.resolve();
      batch = queue.splice(0, config.maxBatch);
      attempt = 0;
    }
    const sent = batch;
    sending = attemptSend(sent).then((outcome) => {
      sending = null;
      if (batch !== sent) return queue.length ? send() : undefined; // the page-hide beacon took it
      if (Array.isArray(outcome)) {
        batch = outcome.length ? outcome : null; // the valid rest of a batch, sent at once
        return send();
      }
      if (outcome !== null) {
        attempt += 1;
        if (attempt <= config.maxRetries) return schedule(outcome);
        warn(`leadscore: gave up on ${sent.length} events after ${attempt} attempts`);
      }
      batch = null;
      if (queue.length) return send();
    });
    return sending;
  }

  /** Resolves to null when the batch is done with (sent, or refused for good), to the ms to wait
   * before sending it again, or to the events of it to send again at once. */
  async function attemptSend(events) {
    let response;
    try {
      response = await fetchFn(url("/api/events/batch"), {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-API-Key": config.key },
        body: JSON.stringify({ events }),
        signal: AbortSignal && AbortSignal.timeout ? AbortSignal.timeout(config.timeout) : undefined,
      });
    } catch (_) {
      return backoffMs(); // offline, timeout, CORS refusal of a starting server: try again later
    }
    const status = response.status;
    if (status >= 200 && status < 300) return null;
    if (status === 429 || status >= 500) {
      const asked = retryAfterMs(response, now);
      return asked !== null ? asked : backoffMs();
    }
    if (status === 422) {
      // all or nothing on the server: drop the invalid events, send the rest again at once
      let invalid = [];
      try {
        invalid = ((await response.json()).invalid || []).map((i) => i.index);
      } catch (_) {
        invalid = [];
      }
      if (invalid.length) {
        warn(`leadscore: ${invalid.length} invalid events dropped`);
        return events.filter((_, i) => !invalid.includes(i));
      }
    }
    warn(`leadscore: events refused with HTTP ${status}`); // bad key or origin: resending won't help
    return null;
  }

  /** Page is going away: hand every unsent event to the browser, which sends it after unload. */
  function beacon() {
    if (!config) return;
    const events = (batch || []).concat(queue);
    batch = null;
    queue = [];
    if (timer !== null) {
      clearTimer(timer);
      timer = null;
    }
    const target = url("/api/ingest/event");
    for (const event of events) {
      const body = JSON.stringify({ ...event, apiKey: config.key }); // text/plain: no preflight
      const queued = nav && typeof nav.sendBeacon === "function" && nav.sendBeacon(target, body);
      if (!queued && fetchFn) {
        fetchFn(target, { method: "POST", body, keepalive: true }).catch(() => {});
      }
    }
  }

  function listen() {
    if (listening) return;
    listening = true;
    if (doc && doc.addEventListener) {
      doc.addEventListener("visibilitychange", () => {
        if (doc.visibilityState === "hidden") beacon();
      });
    }
    if (win && win.addEventListener) win.addEventListener("pagehide", beacon);
  }

  function enqueue(eventType, properties) {
    if (typeof eventType !== "string" || !EVENT_TYPE.test(eventType)) {
      throw new TypeError(`leadscore: eventType must match ${EVENT_TYPE}`);
    }
    const event = { eventId: newUuid(cryptoObj, random), eventType, anonymousId: api.anonymousId() };
    if (properties && typeof properties === "object") event.properties = { ...properties };
    queue.push(event);
    const limit = config ? config.maxQueue : DEFAULTS.maxQueue;
    if (queue.length > limit) {
      queue.splice(0, queue.length - limit); // a page offline for long must not grow without end
      warn(`leadscore: more than ${limit} events waiting; the oldest was dropped`);
    }
    if (config) {
      if (queue.length >= config.maxBatch) send();
      else if (timer === null && !sending && !batch) schedule(config.flushInterval);
    }
    return event.eventId;
  }

  const api = {
    /** Configure with a publishable key (`lsp_...`) and the leadscore address. */
    init(options) {
      if (!options || typeof options.key !== "string" || !options.key) {
        throw new TypeError("leadscore: init needs {key, host}");
      }
      const host = String(options.host || "").replace(/\/+$/, "");
      config = { ...DEFAULTS, ...options, host };
      listen();
      if (queue.length) schedule(config.flushInterval); // events tracked before init
      return api;
    },
    /** Send an event of any type; returns its eventId. */
    track(eventType, properties) {
      return enqueue(eventType, properties);
    },
    /** A page_view with the page's address, path, title and referrer. */
    page(properties) {
      const loc = (win && win.location) || {};
      const auto = { url: loc.href, path: loc.pathname };
      if (doc) {
        auto.title = doc.title;
        if (doc.referrer) auto.referrer = doc.referrer;
      }
      return enqueue("page_view", { ...auto, ...properties });
    },
    /** Tell leadscore who this visitor is: an `identify` event with the e-mail and traits. */
    identify(email, traits) {
      if (typeof email !== "string" || !email.trim()) {
        throw new TypeError("leadscore: identify needs an e-mail");
      }
      return enqueue("identify", { ...traits, email: email.trim() });
    },
    /** Send what is queued now; resolves when the queue is empty or waiting for a retry. */
    async flush() {
      while (config && (queue.length || batch) && !(timer !== null && batch)) {
        await send();
      }
    },
    /** This browser's id: made once, kept in localStorage (or session/memory storage). */
    anonymousId() {
      if (anonymousId) return anonymousId;
      anonymousId = storage.getItem(STORAGE_KEY);
      if (!anonymousId) {
        anonymousId = newUuid(cryptoObj, random);
        storage.setItem(STORAGE_KEY, anonymousId);
      }
      return anonymousId;
    },
    /** Events not yet acknowledged (queued or waiting for a retry). */
    pending() {
      return (batch ? batch.length : 0) + queue.length;
    },
  };
  return api;
}

export default createLeadscore;
