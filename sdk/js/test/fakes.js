// Fakes of what a browser gives the SDK: fetch, storage, sendBeacon, timers, crypto.

export function response(status, body = {}, headers = {}) {
  return {
    status,
    ok: status >= 200 && status < 300,
    headers: { get: (name) => headers[name] ?? null },
    json: async () => body,
  };
}

/** A fetch that answers from a list of planned responses (an Error is thrown as a network error). */
export function fakeFetch(...plan) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init, body: init.body ? JSON.parse(init.body) : undefined });
    const next = plan.length ? plan.shift() : response(202);
    if (next instanceof Error) throw next;
    return next;
  };
  return { fetch, calls };
}

/** Timers that fire only when the test says so, remembering the delays they were set for. */
export function fakeTimers() {
  let id = 0;
  const pending = new Map();
  const delays = [];
  return {
    delays,
    setTimeout: (fn, ms) => {
      pending.set(++id, fn);
      delays.push(ms);
      return id;
    },
    clearTimeout: (t) => pending.delete(t),
    count: () => pending.size,
    /** Fire every pending timer once and wait for what they started. */
    async fire() {
      const fns = [...pending.values()];
      pending.clear();
      for (const fn of fns) fn();
      for (let i = 0; i < 20; i++) await Promise.resolve();
      await new Promise((r) => setImmediate(r));
    },
  };
}

export function fakeStorage(initial = {}) {
  const items = new Map(Object.entries(initial));
  return {
    items,
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => items.set(k, String(v)),
  };
}

export function brokenStorage() {
  return {
    getItem: () => {
      throw new Error("SecurityError");
    },
    setItem: () => {
      throw new Error("SecurityError");
    },
  };
}

/** A document and window that record their listeners, so a test can "hide" the page. */
export function fakePage() {
  const listeners = {};
  const add = (type, fn) => (listeners[type] ||= []).push(fn);
  const document = {
    title: "Pricing",
    referrer: "https://search.example/",
    visibilityState: "visible",
    addEventListener: add,
  };
  const window = {
    location: { href: "https://shop.example/pricing?x=1", pathname: "/pricing" },
    addEventListener: add,
  };
  const emit = (type) => (listeners[type] || []).forEach((fn) => fn());
  return { document, window, emit };
}

export function fakeBeacon(accept = true) {
  const sent = [];
  return {
    sent,
    navigator: {
      sendBeacon: (url, body) => {
        if (!accept) return false;
        sent.push({ url, body: JSON.parse(body), type: typeof body });
        return true;
      },
    },
  };
}
