// The script-tag build (dist/leadscore.min.js) run as a browser would: a global `leadscore`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

import { fakeFetch, fakeStorage } from "./fakes.js";

test("the script-tag build defines window.leadscore that sends through fetch", async () => {
  const code = readFileSync(new URL("../dist/leadscore.min.js", import.meta.url), "utf8");
  const net = fakeFetch();
  const sandbox = {
    fetch: net.fetch,
    localStorage: fakeStorage(),
    crypto: globalThis.crypto,
    setTimeout,
    clearTimeout,
    console,
  };
  sandbox.window = sandbox;
  vm.createContext(sandbox);
  vm.runInContext(code, sandbox);
  const ls = sandbox.leadscore;
  assert.equal(typeof ls.init, "function");
  assert.equal(typeof ls.create, "function");
  ls.init({ key: "lsp_x", host: "http://127.0.0.1:6066" });
  ls.track("signup");
  await ls.flush();
  assert.equal(net.calls.length, 1);
  assert.equal(net.calls[0].url, "http://127.0.0.1:6066/api/events/batch");
  assert.equal(net.calls[0].body.events[0].anonymousId, ls.anonymousId());
});
