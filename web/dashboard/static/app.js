/* leadscore dashboard: reads and changes the project through the public API with the session
   cookie, and follows /api/stream for live changes. Plain script, no dependency (ADR 0021). */
(function () {
  "use strict";

  var body = document.body;
  var project = body.dataset.project || "";
  var STAGES = ["qualified", "hot", "warm", "cold"];

  /* ---- helpers ---------------------------------------------------------------------------- */

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function status(text) { var s = $("status"); if (s) s.textContent = text || ""; }

  function api(method, path, payload) {
    var headers = { "Accept": "application/json" };
    if (project) headers["X-Project-Id"] = project;
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    return fetch(path, init).then(function (resp) {
      if (resp.status === 401) {
        window.location.assign("/app/login?next=" + encodeURIComponent(location.pathname));
      }
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
        return { status: resp.status, ok: resp.ok, body: data };
      });
    });
  }

  /* The API's own message, with each field it names. */
  function problem(result) {
    var b = result.body || {};
    var parts = [b.error || ("HTTP " + result.status)];
    (b.fields || []).forEach(function (f) { parts.push(f.field + ": " + f.message); });
    return parts.join(" — ");
  }

  function showError(id, result) {
    var node = $(id);
    if (!node) return;
    if (result) { node.textContent = problem(result); node.hidden = false; }
    else { node.textContent = ""; node.hidden = true; }
  }

  function fmtScore(v) { return typeof v === "number" ? (Math.round(v * 10) / 10).toString() : "–"; }

  function fmtTime(v) {
    if (!v) return "–";
    var d = new Date(v);
    return isNaN(d.getTime()) ? String(v) : d.toISOString().replace("T", " ").slice(0, 19);
  }

  function stageBadge(stage) { return el("span", { className: "stage stage-" + stage, text: stage || "" }); }

  function leadLink(id) {
    return el("a", { href: "/app/leads/" + encodeURIComponent(id), text: id });
  }

  function facts(node, pairs) {
    clear(node);
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === "") return;
      node.appendChild(el("dt", { text: p[0] }));
      node.appendChild(el("dd", { text: typeof p[1] === "object" ? JSON.stringify(p[1]) : String(p[1]) }));
    });
  }

  /* ---- live feed ------------------------------------------------------------------------- */

  function live(onNotice) {
    var badge = $("live-badge");
    if (!window.EventSource) return;
    var source = new EventSource("/api/stream?project=" + encodeURIComponent(project));
    source.onopen = function () { if (badge) { badge.textContent = "live"; badge.className = "live on"; } };
    source.onerror = function () { if (badge) { badge.textContent = "reconnecting…"; badge.className = "live"; } };
    ["lead.created", "lead.stage_changed", "lead.score_changed"].forEach(function (type) {
      source.addEventListener(type, function (e) {
        try { onNotice(JSON.parse(e.data)); } catch (err) { /* not ours */ }
      });
    });
  }

  /* ---- a line chart in SVG --------------------------------------------------------------- */

  var SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function lineChart(container, points, opts) {
    opts = opts || {};
    clear(container);
    if (!points.length) { container.appendChild(el("p", { className: "muted", text: "no data yet" })); return; }
    var w = Math.max(200, container.clientWidth || 600), h = opts.height || 200, pad = 34;
    var xs = points.map(function (p) { return p.x; }), ys = points.map(function (p) { return p.y; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min(0, Math.min.apply(null, ys)), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + 1; }
    function sx(x) { return pad + (x - x0) / (x1 - x0) * (w - 2 * pad); }
    function sy(y) { return h - pad + 10 - (y - y0) / (y1 - y0) * (h - 2 * pad); }
    var root = svg("svg", { viewBox: "0 0 " + w + " " + h, width: w, height: h, "class": "plot" });
    root.appendChild(svg("line", { x1: pad, y1: sy(y0), x2: w - pad, y2: sy(y0), "class": "axis" }));
    [y0, y1].forEach(function (v) {
      var t = svg("text", { x: 2, y: sy(v) + 4, "class": "tick" });
      t.textContent = fmtScore(v);
      root.appendChild(t);
    });
    if (opts.timeAxis) {
      [[x0, "start"], [x1, "end"]].forEach(function (t) {
        var label = svg("text", { x: sx(t[0]), y: h - 4, "class": "tick", "text-anchor": t[1] });
        label.textContent = fmtTime(new Date(t[0]).toISOString());
        root.appendChild(label);
      });
    }
    var d = points.map(function (p, i) { return (i ? "L" : "M") + sx(p.x).toFixed(1) + " " + sy(p.y).toFixed(1); }).join(" ");
    root.appendChild(svg("path", { d: d, "class": "line" }));
    if (points.length <= 150) points.forEach(function (p) {  // a dot per event, while they fit
      var c = svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 3, "class": "dot" });
      var title = svg("title", {});
      title.textContent = (p.label ? p.label + ": " : "") + fmtScore(p.y);
      c.appendChild(title);
      root.appendChild(c);
    });
    container.appendChild(root);
  }

  /* ---- pages ----------------------------------------------------------------------------- */

  var pages = {};

  pages.overview = function () {
    var perMinute = {};
    function minute(t) { return Math.floor(t / 60000); }
    function drawRate() {
      var now = minute(Date.now()), pts = [];
      for (var m = now - 29; m <= now; m++) pts.push({ x: m, y: perMinute[m] || 0 });
      $("events-per-minute").textContent = String(perMinute[now] || 0) + " this minute";
      lineChart($("epm-chart"), pts, { height: 80 });
    }
    function loadFunnel() {
      return api("GET", "/api/leaderboard/by-stage").then(function (r) {
        if (!r.ok) { status(problem(r)); return; }
        var list = clear($("funnel")), total = r.body.total || 0, max = 1;
        STAGES.forEach(function (s) { max = Math.max(max, r.body.stages[s] || 0); });
        STAGES.slice().reverse().forEach(function (s) {
          var n = r.body.stages[s] || 0;
          var bar = el("span", { className: "bar stage-" + s });
          bar.style.width = Math.max(4, Math.round(n / max * 100)) + "%";
          list.appendChild(el("li", { "data-stage": s }, el("span", { className: "label", text: s }), bar,
            el("span", { className: "count", text: String(n) })));
        });
        list.setAttribute("aria-label", total + " leads");
      });
    }
    function loadTop() {
      return api("GET", "/api/leaderboard?limit=10").then(function (r) {
        if (!r.ok) return;
        var tbody = clear($("top-leads"));
        r.body.leads.forEach(function (l) {
          tbody.appendChild(el("tr", {}, el("td", { text: String(l.rank) }), el("td", {}, leadLink(l.leadId)),
            el("td", { text: fmtScore(l.currentScore) }), el("td", {}, stageBadge(l.leadStage))));
        });
      });
    }
    function addChange(n) {
      var list = $("stage-changes");
      var empty = list.querySelector(".muted");
      if (empty) list.removeChild(empty);
      var what = n.type === "lead.created" ? "new lead, " + n.leadStage : (n.previousStage + " → " + n.leadStage);
      list.insertBefore(el("li", { className: "change", "data-lead": n.leadId }, leadLink(n.leadId), " ", what,
        el("span", { className: "muted", text: " " + fmtTime(new Date().toISOString()) })), list.firstChild);
      while (list.children.length > 20) list.removeChild(list.lastChild);
    }
    $("stage-changes").appendChild(el("li", { className: "muted", text: "waiting for changes…" }));
    loadFunnel(); loadTop(); drawRate();
    var refresh = null;
    live(function (n) {
      if (n.event) { var m = minute(Date.now()); perMinute[m] = (perMinute[m] || 0) + 1; drawRate(); }
      if (n.type !== "lead.score_changed") addChange(n);
      if (!refresh) refresh = setTimeout(function () { refresh = null; loadFunnel(); loadTop(); }, 300);
    });
    setInterval(drawRate, 30000);
  };

  pages.leads = function () {
    var form = $("lead-filters"), offset = 0, limit = 25;
    var params = new URLSearchParams(location.search);
    ["q", "stage", "minScore", "sort"].forEach(function (k) { if (params.get(k)) form.elements[k].value = params.get(k); });
    function load() {
      var q = new URLSearchParams();
      ["q", "stage", "minScore", "sort"].forEach(function (k) { if (form.elements[k].value) q.set(k, form.elements[k].value); });
      history.replaceState(null, "", "?" + q.toString());
      q.set("limit", limit); q.set("offset", offset);
      api("GET", "/api/leads?" + q.toString()).then(function (r) {
        if (!r.ok) { status(problem(r)); return; }
        status("");
        var tbody = clear($("leads-body"));
        r.body.leads.forEach(function (l) {
          tbody.appendChild(el("tr", {}, el("td", {}, leadLink(l.leadId)), el("td", { text: l.email || "" }),
            el("td", { text: fmtScore(l.currentScore) }), el("td", {}, stageBadge(l.leadStage)),
            el("td", { text: String(l.eventCount || 0) }), el("td", { text: fmtTime(l.lastEventAt) })));
        });
        if (!r.body.leads.length) tbody.appendChild(el("tr", {}, el("td", { colspan: 6, className: "muted", text: "no leads match" })));
        $("page-info").textContent = r.body.total ? (offset + 1) + "–" + (offset + r.body.leads.length) + " of " + r.body.total : "";
        $("prev-page").disabled = offset === 0;
        $("next-page").disabled = offset + limit >= r.body.total;
      });
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); offset = 0; load(); });
    $("prev-page").addEventListener("click", function () { offset = Math.max(0, offset - limit); load(); });
    $("next-page").addEventListener("click", function () { offset += limit; load(); });
    load();
  };

  pages.lead = function () {
    var leadId = body.dataset.lead, canonical = leadId, path = "/api/leads/" + encodeURIComponent(leadId);
    function loadLead() {
      return api("GET", path).then(function (r) {
        if (!r.ok) { status(problem(r)); return; }
        var l = r.body;
        canonical = l.leadId || leadId;  // the page may be opened by an alias of the lead
        $("lead-score").textContent = fmtScore(l.currentScore);
        var stage = $("lead-stage");
        stage.textContent = l.leadStage; stage.className = "stage stage-" + l.leadStage;
        if (l.name || l.email) $("lead-name").textContent = leadId + " (" + (l.name || l.email) + ")";
        facts($("lead-facts"), [["Events", l.eventCount], ["Last 24 h", l.eventsLast24h],
          ["First event", fmtTime(l.firstEventAt)], ["Last event", fmtTime(l.lastEventAt)]]);
        facts($("lead-traits"), [["E-mail", l.email], ["Name", l.name], ["Company", l.company],
          ["Aliases", (l.aliases || []).join(", ") || "none"]]);
      });
    }
    function loadIntel() {
      return api("GET", path + "/intelligence").then(function (r) {
        if (!r.ok) return;
        var i = r.body;
        facts($("lead-intel"), [["Risk", i.risk], ["Days since last event", i.daysSinceLastEvent],
          ["Velocity", i.velocity.eventsLast24h + " events in 24 h (" + i.velocity.trend + ")"],
          ["Churn probability", i.churnProbability], ["Next best action", i.nextBestAction]]);
      });
    }
    var timelineTries = 0;
    function loadTimeline() {
      return api("GET", path + "/timeline?limit=1000").then(function (r) {
        if (r.status === 404 && timelineTries++ < 30) {  // a new lead: its history reaches MongoDB a moment after its score
          $("score-chart").textContent = "history not written yet…";
          setTimeout(loadTimeline, 1000);
          return;
        }
        if (!r.ok) return;
        var rows = r.body.history, tbody = clear($("timeline"));
        rows.slice().reverse().forEach(function (h) {
          tbody.appendChild(el("tr", { "data-event": h.eventId }, el("td", { text: fmtTime(h.timestamp) }),
            el("td", { text: h.eventType }), el("td", { className: "points", text: (h.points > 0 ? "+" : "") + fmtScore(h.points) }),
            el("td", { text: fmtScore(h.scoreAfter) })));
        });
        lineChart($("score-chart"), rows.map(function (h) {
          return { x: Date.parse(h.timestamp), y: h.scoreAfter, label: h.eventType };
        }), { timeAxis: true });
      });
    }
    function loadFirings() {
      api("GET", "/api/automations").then(function (r) {
        if (!r.ok || !r.body.automations) return;
        var list = $("lead-firings");
        r.body.automations.forEach(function (a) {
          api("GET", "/api/automations/" + encodeURIComponent(a.id) + "/firings?leadId=" + encodeURIComponent(canonical)).then(function (f) {
            if (!f.ok || !f.body.firings.length) return;
            var empty = list.querySelector(".muted");
            if (empty) list.removeChild(empty);
            f.body.firings.forEach(function (x) {
              list.appendChild(el("li", {}, a.name + ": " + x.status + " ", el("span", { className: "muted", text: fmtTime(x.firedAt) })));
            });
          });
        });
      });
    }
    function all() { return Promise.all([loadLead(), loadIntel(), loadTimeline()]); }
    all().then(loadFirings);
    var pending = null;
    live(function (n) {
      if (n.leadId !== canonical && n.leadId !== leadId) return;
      $("lead-score").textContent = fmtScore(n.currentScore);
      var stage = $("lead-stage");
      stage.textContent = n.leadStage; stage.className = "stage stage-" + n.leadStage;
      if (!pending) pending = setTimeout(function () { pending = null; all(); }, 200);
    });
  };

  pages.rules = function () {
    var form = $("rule-form");
    function load() {
      api("GET", "/api/rules").then(function (r) {
        if (!r.ok) { status(problem(r)); return; }
        var tbody = clear($("rules-body"));
        r.body.rules.forEach(function (rule) {
          var edit = el("button", { type: "button", text: "Edit", "aria-label": "Edit " + rule.eventType });
          edit.addEventListener("click", function () {
            form.elements.eventType.value = rule.eventType; form.elements.points.value = rule.points;
            form.elements.points.focus();
          });
          var del = el("button", { type: "button", text: "Delete", "aria-label": "Delete " + rule.eventType });
          del.addEventListener("click", function () {
            if (!window.confirm("Delete the rule for " + rule.eventType + "? Later events of this type score 0.")) return;
            api("DELETE", "/api/rules/" + encodeURIComponent(rule.eventType)).then(function (d) {
              if (!d.ok) showError("rule-error", d); else { status("Deleted " + rule.eventType); load(); }
            });
          });
          tbody.appendChild(el("tr", { "data-rule": rule.eventType }, el("td", { text: rule.eventType }),
            el("td", { className: "points", text: String(rule.points) }), el("td", {}, edit, " ", del)));
        });
      });
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var type = form.elements.eventType.value.trim();
      var raw = form.elements.points.value.trim();
      var points = raw === "" || isNaN(Number(raw)) ? raw : Number(raw);
      var target = "/api/rules/" + encodeURIComponent(type || "-");
      api("PUT", target, { points: points }).then(function (r) {
        if (!r.ok) { showError("rule-error", r); return; }
        showError("rule-error", null);
        status("Saved: " + type + " = " + r.body.points + " points");
        load();
      });
    });
    load();
  };

  pages.settings = function () {
    var area = $("settings-json");
    api("GET", "/api/settings").then(function (r) {
      if (r.ok) area.value = JSON.stringify(r.body, null, 2); else status(problem(r));
    });
    $("settings-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var parsed;
      try { parsed = JSON.parse(area.value); } catch (err) {
        showError("settings-error", { status: 400, body: { error: "not valid JSON: " + err.message } }); return;
      }
      api("PUT", "/api/settings", parsed).then(function (r) {
        if (!r.ok) { showError("settings-error", r); return; }
        showError("settings-error", null);
        area.value = JSON.stringify(r.body, null, 2);
        status("Settings saved");
      });
    });
  };

  pages.automations = function () {
    var area = $("automation-json"), idField = $("automation-id");
    function firings(a) {
      $("deliveries-of").textContent = "of " + a.name;
      api("GET", "/api/automations/" + encodeURIComponent(a.id) + "/firings").then(function (r) {
        var tbody = clear($("firings-body"));
        if (!r.ok) { tbody.appendChild(el("tr", {}, el("td", { colspan: 5, text: problem(r) }))); return; }
        if (!r.body.firings.length) tbody.appendChild(el("tr", {}, el("td", { colspan: 5, className: "muted", text: "no firings yet" })));
        r.body.firings.forEach(function (f) {
          var again = el("button", { type: "button", text: "Redeliver" });
          again.addEventListener("click", function () {
            api("POST", "/api/firings/" + encodeURIComponent(f.id) + "/redeliver").then(function (x) {
              status(x.ok ? "Redelivering " + f.id : problem(x)); firings(a);
            });
          });
          tbody.appendChild(el("tr", {}, el("td", { text: f.id }), el("td", {}, f.leadId ? leadLink(f.leadId) : ""),
            el("td", { text: f.status }), el("td", { text: String((f.attempts || []).length) }),
            el("td", {}, f.status === "failed" || f.status === "delivered" ? again : "")));
        });
      });
    }
    function load() {
      api("GET", "/api/automations").then(function (r) {
        var tbody = clear($("automations-body"));
        if (!r.ok) { status(problem(r)); return; }
        r.body.automations.forEach(function (a) {
          var edit = el("button", { type: "button", text: "Edit" });
          edit.addEventListener("click", function () {
            var copy = JSON.parse(JSON.stringify(a)); delete copy.id;
            idField.value = a.id; area.value = JSON.stringify(copy, null, 2);
            $("automation-form-h").textContent = "Edit " + a.name; area.focus();
          });
          var test = el("button", { type: "button", text: "Test" });
          test.addEventListener("click", function () {
            api("POST", "/api/automations/" + encodeURIComponent(a.id) + "/test").then(function (t) {
              status(t.ok ? "Test: " + (t.body.delivered ? "delivered" : "not delivered") + " (" + (t.body.status || t.body.error || "") + ")" : problem(t));
            });
          });
          var log = el("button", { type: "button", text: "Deliveries" });
          log.addEventListener("click", function () { firings(a); });
          tbody.appendChild(el("tr", {}, el("td", { text: a.name }), el("td", { text: JSON.stringify(a.trigger) }),
            el("td", { text: (a.action || {}).type || "" }), el("td", { text: a.active === false ? "no" : "yes" }),
            el("td", {}, edit, " ", test, " ", log)));
        });
      });
    }
    $("automation-new").addEventListener("click", function () {
      idField.value = ""; $("automation-form-h").textContent = "New automation";
    });
    $("automation-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var parsed;
      try { parsed = JSON.parse(area.value); } catch (err) {
        showError("automation-error", { status: 400, body: { error: "not valid JSON: " + err.message } }); return;
      }
      var id = idField.value;
      api(id ? "PUT" : "POST", id ? "/api/automations/" + encodeURIComponent(id) : "/api/automations", parsed).then(function (r) {
        if (!r.ok) { showError("automation-error", r); return; }
        showError("automation-error", null); status("Saved " + r.body.name); idField.value = r.body.id; load();
      });
    });
    load();
  };

  pages.keys = function () {
    var form = $("key-form");
    var snippet = "<script src=\"" + location.origin + "/app/static/leadscore.min.js\"></script>\n<script>\n" +
      "  leadscore.init({ key: \"lsp_YOUR_PUBLISHABLE_KEY\", host: \"" + location.origin + "\" });\n" +
      "  leadscore.page();\n  // leadscore.identify(\"ada@example.com\", { name: \"Ada\" });\n" +
      "  // leadscore.track(\"demo_request\", { plan: \"pro\" });\n</script>";
    $("sdk-snippet").textContent = snippet;
    function load() {
      api("GET", "/api/keys").then(function (r) {
        if (!r.ok) { status(problem(r)); return; }
        var tbody = clear($("keys-body"));
        r.body.keys.forEach(function (k) {
          var revoke = el("button", { type: "button", text: "Revoke", "aria-label": "Revoke " + k.name });
          revoke.addEventListener("click", function () {
            if (!window.confirm("Revoke key " + k.name + "? Callers using it are refused at once.")) return;
            api("DELETE", "/api/keys/" + encodeURIComponent(k.id)).then(function (d) {
              status(d.ok ? "Revoked " + k.name : problem(d)); load();
            });
          });
          tbody.appendChild(el("tr", {}, el("td", { text: k.name }), el("td", { text: k.kind }),
            el("td", {}, el("code", { text: k.prefix })), el("td", { text: (k.scopes || []).join(", ") }),
            el("td", { text: fmtTime(k.lastUsedAt) }), el("td", {}, revoke)));
        });
      });
    }
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var scopes = Array.prototype.filter.call(form.querySelectorAll("input[name=scope]"), function (c) { return c.checked; })
        .map(function (c) { return c.value; });
      var kind = $("key-kind").value;
      api("POST", "/api/keys", { name: $("key-name").value, kind: kind, scopes: kind === "publishable" ? ["ingest"] : scopes }).then(function (r) {
        if (!r.ok) { showError("key-error", r); return; }
        showError("key-error", null);
        $("new-key").hidden = false; $("new-key-value").textContent = r.body.key;
        if (kind === "publishable") $("sdk-snippet").textContent = snippet.replace("lsp_YOUR_PUBLISHABLE_KEY", r.body.key);
        load();
      });
    });
    load();
  };

  pages["dead-letters"] = function () {
    var form = $("dl-filters");
    function load() {
      var q = form.elements.reason.value ? "?reason=" + encodeURIComponent(form.elements.reason.value) : "";
      api("GET", "/api/dead-letters" + q).then(function (r) {
        var tbody = clear($("dead-letters-body"));
        if (!r.ok) { tbody.appendChild(el("tr", {}, el("td", { colspan: 4, text: problem(r) }))); return; }
        var items = r.body.deadLetters || [];
        if (!items.length) tbody.appendChild(el("tr", {}, el("td", { colspan: 4, className: "muted", text: "no dead letters" })));
        items.forEach(function (d) {
          var record = (d.topic ? d.topic + " " : "") + (d.key ? d.key + " " : "") + (d.value || "");
          tbody.appendChild(el("tr", { "data-dead-letter": d.id }, el("td", { text: fmtTime(d.deadLetteredAt) }),
            el("td", {}, el("strong", { text: d.reasonClass || "" }), el("br"), d.reason || ""),
            el("td", { text: d.status || "" }), el("td", {}, el("code", { text: record.slice(0, 300) }))));
        });
      });
    }
    form.addEventListener("submit", function (e) { e.preventDefault(); load(); });
    load();
  };

  pages.audit = function () {
    api("GET", "/api/audit-log?limit=200").then(function (r) {
      var tbody = clear($("audit-body"));
      if (!r.ok) { status(problem(r)); return; }
      r.body.entries.forEach(function (a) {
        var who = a.actor.email || a.actor.prefix || a.actor.kind;
        tbody.appendChild(el("tr", {}, el("td", { text: fmtTime(a.at) }), el("td", { text: who }),
          el("td", { text: a.action }), el("td", { text: a.target || "" }),
          el("td", {}, el("code", { text: JSON.stringify(a.before) + " → " + JSON.stringify(a.after) }))));
      });
    });
  };

  /* ---- start ----------------------------------------------------------------------------- */

  Array.prototype.forEach.call(document.querySelectorAll("[data-autosubmit]"), function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
  var start = pages[body.dataset.page];
  if (start) start();
})();
