// The dashboard: fills index.html from the JSON API and follows /v1/events. On every
// (re)connect it reloads the REST views, since events missed while away are not replayed;
// without the event stream it polls instead. Text from the API goes into the page as text
// (textContent, SVG attributes), never as markup.
//
// It stays usable at 100,000 origins: the origin list is one page of PAGE at a time
// (/v1/origins?limit=&after=), with its sparklines from /v1/history?ids= for that page
// only; the drawings are a few hundred SVG elements whatever the catalogue's size.
"use strict";
const $ = (id) => document.getElementById(id);
const SVGNS = "http://www.w3.org/2000/svg";
const PAGE = 50; // origins shown at a time
const SCAN = 1000; // origins read per request while a filter looks for a page's worth
const MAX_TRANSITIONS = 30; // in the list
const TIMELINE_ROWS = 12; // origins in the timeline: those that changed last
const HOUR = 3600;
let P = null; // /static/leds.json: each LED state's meaning and patterns (agent/leds.py)
let health = null; // the latest /v1/health
let page = []; // the origins shown: their views, sorted by id
let starts = [null]; // the `after` each page so far starts from
let pageNo = 0;
let pageMore = false; // more origins after this page
let sparks = { origins: {}, elsewhere: {} }; // /v1/history of the page's origins
const members = new Map();
let transitions = [];
let startedAt = null; // when this node's agent started (unix s), from /v1/health's uptime

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}
function hhmm(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}
function url(path, params) {
  const q = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => k + "=" + encodeURIComponent(v));
  return q.length ? path + "?" + q.join("&") : path;
}

// --- the LEDs, drawn as they are lit -------------------------------------------------

function blinkClass(p) {
  return ("blink-" + p.on + "-" + p.off).replace(/\./g, "_");
}

// One CSS animation per blink rhythm in the patterns: lit for `on` s, dark for `off` s
// (an RGB LED: `colour` for `on` s, `off_colour` for `off` s).
function addBlinkRules() {
  const sheet = $("style").sheet;
  const seen = new Set();
  const rule = (text) => sheet.insertRule(text, sheet.cssRules.length);
  for (const st of Object.values(P.states)) {
    for (const p of [...Object.values(st.three), st.rgb]) {
      const name = blinkClass(p);
      if (p.mode !== "blink" || seen.has(name)) continue;
      seen.add(name);
      const lit = Number(((100 * p.on) / (p.on + p.off)).toPrecision(4));
      const time = p.on + p.off + "s step-end infinite";
      rule("@keyframes " + name + "{0%{opacity:1;box-shadow:0 0 12px 3px var(--c)}" +
        lit + "%{opacity:.15;box-shadow:none}}");
      rule(".led." + name + "{animation:" + name + " " + time + "}");
      rule("@keyframes rgb-" + name + "{0%{background:var(--c);box-shadow:0 0 12px 3px var(--c)}" +
        lit + "%{background:var(--c2);box-shadow:0 0 12px 3px var(--c2)}}");
      rule(".led.rgb." + name + "{animation:rgb-" + name + " " + time + "}");
    }
  }
}

function rgbCss(name) {
  const c = (P && P.rgb_colours[name]) || [0, 0, 0];
  return name === "off" ? "#222" : "rgb(" + c.map((x) => Math.round(255 * x)).join(",") + ")";
}

// The layout the node has: one RGB LED when its pins read back as r, g, b; else three.
function drawLeds(led) {
  const state = led ? led.state : null;
  const st = P && P.states[state];
  const box = $("leds");
  const rgb = !!(led && led.pins && "r" in led.pins);
  box.dataset.state = state || "";
  box.dataset.layout = rgb ? "rgb" : "three";
  const want = rgb ? ["rgb"] : ["green", "amber", "red"];
  if ([...box.children].map((e) => e.dataset.colour).join() !== want.join()) {
    box.replaceChildren(...want.map((c) => Object.assign(el("span", "led"), { title: c })));
    want.forEach((c, i) => (box.children[i].dataset.colour = c));
  }
  for (const e of box.querySelectorAll(".led")) {
    e.className = "led";
    let p = { mode: "off" };
    if (rgb && st) {
      p = st.rgb;
      e.classList.add("rgb");
      e.style.setProperty("--c", rgbCss(p.colour));
      e.style.setProperty("--c2", rgbCss(p.off_colour));
      e.dataset.rgb = p.mode === "blink" ? p.colour + "/" + p.off_colour : p.colour;
    } else if (st) {
      p = st.three[e.dataset.colour];
    }
    e.dataset.mode = p.mode;
    if (p.mode === "on") e.classList.add("on");
    if (p.mode === "blink") e.classList.add(blinkClass(p));
  }
  $("led-state").textContent = state || "?";
  // the node's own words first: "healthy" alone by design is not "in the cluster"
  $("meaning").textContent = (led && led.meaning) || (st ? st.meaning : "");
  const kind = led && led.kind;
  $("led-kind").textContent =
    kind === "gpio" || !kind ? "" : "(no LEDs lit here: drawn as they would show it)";
}

// --- health --------------------------------------------------------------------------

function counts(c) {
  if (!c) return "";
  const parts = ["up", "down", "disputed"].map((k) => (c[k] || 0).toLocaleString() + " " + k);
  if (c.unknown) parts.push(c.unknown.toLocaleString() + " unknown");
  return parts.join(", ");
}

function renderHealth() {
  const h = health;
  if (!h) return;
  document.title = "edge-agent " + h.node;
  $("node").textContent = h.node;
  const st = $("status");
  st.textContent = h.status;
  st.className = "badge " + h.status;
  drawLeds(h.led);
  const peers = h.cluster ? h.cluster.peers : 0;
  $("c-cluster").textContent = h.cluster
    ? (h.cluster.name ? h.cluster.name + ": " : "") +
      (peers ? "this node + " + peers + (peers === 1 ? " peer" : " peers") : "alone")
    : "";
  $("c-origins").textContent = h.origins ? counts(h.origins) : h.summary || "";
  $("c-mine").textContent = h.mine ? h.mine.owned + " checked here: " + counts(h.mine) : "";
  const s = h.storage;
  const sto = $("c-storage");
  sto.textContent = s ? s.status + (s.reason ? ": " + s.reason : "") : "";
  sto.className = s && s.status !== "ok" ? "fault" : "";
  $("c-identify").textContent =
    h.identify_s > 0 ? "blinking, " + Math.round(h.identify_s) + " s left" : "off";
  $("c-uptime").textContent = startedAt ? ago(startedAt) : "";
  $("reasons").replaceChildren(...(h.reasons || []).map((r) => el("li", "", r)));
  for (const e of $("members").querySelectorAll("tr[data-name] td.name")) {
    e.classList.toggle("me", e.parentNode.dataset.name === h.node);
  }
  pageInfo();
}

// A new /v1/health: its uptime says when the agent started (kept, so the identify
// countdown's re-renders of the same health do not move it).
function setHealth(h) {
  health = h;
  if (h.uptime_s !== undefined) startedAt = Date.now() / 1000 - h.uptime_s;
}

function me() {
  return health ? health.node : null;
}

// --- members, grouped by site ----------------------------------------------------------

function siteOf(m) {
  return (m.tags && m.tags.site) || "";
}

function memberRow(m) {
  const tr = el("tr");
  tr.dataset.name = m.name;
  tr.dataset.state = m.state;
  const state = el("td", "state " + m.state);
  state.append(el("span", "dot " + m.state), " " + m.state);
  tr.append(
    el("td", m.name === me() ? "name me" : "name", m.name),
    state,
    el("td", "addr wide", m.addr + ":" + m.port),
    el("td", "inc wide", m.incarnation),
  );
  return tr;
}

function renderMembers() {
  const sites = new Map();
  for (const m of members.values()) {
    const s = siteOf(m);
    if (!sites.has(s)) sites.set(s, []);
    sites.get(s).push(m);
  }
  const names = [...sites.keys()].sort((a, b) => (a === "" ? 1 : b === "" ? -1 : a < b ? -1 : 1));
  const cards = names.map((s) => {
    const ms = sites.get(s).sort((a, b) => (a.name < b.name ? -1 : 1));
    const card = el("section", "site");
    card.dataset.site = s;
    const alive = ms.filter((m) => m.state === "alive").length;
    const head = el("h3");
    head.append(el("span", "site-name", s || "no site"), " ");
    const dots = el("span", "dots");
    for (const m of ms) dots.append(Object.assign(el("span", "dot " + m.state), { title: m.name }));
    head.append(dots, el("span", "mute", " " + alive + " of " + ms.length + " alive"));
    if (!s) card.title = "members without a site: each is a failure domain of its own";
    const body = el("tbody");
    body.append(...ms.map(memberRow));
    const table = el("table");
    table.append(body);
    card.append(head, table);
    return card;
  });
  $("members").replaceChildren(...cards);
  $("members-count").textContent = members.size + " in " + names.length +
    (names.length === 1 ? " site" : " sites");
}

// --- transitions: a timeline of the last hour, and the list ---------------------------

const COLOURS = { up: "var(--up)", down: "var(--down)", disputed: "var(--disp)" };
function colour(verdict) {
  return COLOURS[verdict] || "var(--unk)";
}

// The span the timeline shows: the last hour, or less while the transitions in it (and
// this node's uptime) cover less, so a young cluster's changes are not squeezed into
// the last pixels; at least MIN_SPAN. Ticks every 10 s to 10 min, at most 7.
const MIN_SPAN = 30;
const TICKS = [10, 30, 60, 120, 300, 600];

function renderTimeline() {
  const box = $("timeline-box");
  const now = Date.now() / 1000;
  const byOrigin = new Map(); // origin -> its transitions, oldest first
  for (const t of transitions) {
    if (!byOrigin.has(t.origin)) byOrigin.set(t.origin, []);
    byOrigin.get(t.origin).push(t);
  }
  const rows = [...byOrigin.entries()]
    .filter(([, ts]) => ts[ts.length - 1].at >= now - HOUR)
    .sort((a, b) => b[1][b[1].length - 1].at - a[1][a[1].length - 1].at)
    .slice(0, TIMELINE_ROWS);
  box.classList.toggle("empty", rows.length === 0); // shown before it is measured
  const started = startedAt || now - HOUR;
  const oldest = Math.min(now, ...rows.map(([, ts]) => ts[0].at));
  const tick = TICKS.find((s) => (now - Math.min(oldest, started)) / s <= 6) || 600;
  const span = Math.max(MIN_SPAN, Math.min(HOUR, Math.ceil((now - Math.min(oldest, started)) / tick) * tick));
  const from = now - span;
  const width = Math.max(280, box.clientWidth || 600);
  const label = Math.min(170, Math.round(width * 0.3));
  const rowH = 18;
  const top = 4;
  const height = top + rows.length * rowH + 20;
  const x = (t) => label + ((Math.max(t, from) - from) / span) * (width - label - 6);
  const g = $("timeline");
  g.setAttribute("viewBox", "0 0 " + width + " " + height);
  g.setAttribute("width", width);
  g.setAttribute("height", height);
  g.dataset.span = span;
  const parts = [];
  for (let k = 0; k * tick <= span; k++) {
    const t = now - k * tick;
    parts.push(svg("line", { x1: x(t), x2: x(t), y1: top, y2: height - 16, class: "tick" }));
    const axis = { x: x(t), y: height - 4, class: k === 0 ? "axis now" : "axis" };
    const when = tick < 60 ? new Date(t * 1000).toLocaleTimeString() : hhmm(t);
    if (k === 0 || x(t) > label + 30) parts.push(svg("text", axis, k === 0 ? "now" : when));
  }
  const bar = (a, b, verdict, y) =>
    svg("rect", {
      x: x(a), y: y + 3, width: Math.max(0, x(b) - x(a)), height: rowH - 6,
      fill: colour(verdict), class: "span", "data-verdict": verdict,
    });
  rows.forEach(([origin, ts], i) => {
    const y = top + i * rowH;
    const fit = Math.max(6, Math.floor((label - 8) / 7)); // characters of ~7 px
    const name = origin.length > fit ? origin.slice(0, fit - 1) + "…" : origin;
    const text = svg("text", { x: label - 6, y: y + 12, class: "label" }, name);
    text.append(svg("title", {}, origin));
    parts.push(text);
    // before its first transition the verdict was its `from`; blank if that is the
    // "unknown" of a first verdict (this node did not know it yet)
    let start = from;
    let verdict = ts[0].from;
    for (const t of ts) {
      if (t.at > start && verdict !== "unknown") parts.push(bar(start, t.at, verdict, y));
      start = Math.max(start, t.at);
      verdict = t.to;
    }
    parts.push(bar(start, now, verdict, y));
    for (const t of ts) {
      if (t.at < from) continue;
      const mark = svg("line", {
        x1: x(t.at), x2: x(t.at), y1: y, y2: y + rowH, class: "mark",
        "data-origin": t.origin, "data-to": t.to, "data-at": t.at,
      });
      mark.append(svg("title", {}, clock(t.at) + " " + t.origin + ": " + t.from + " → " + t.to +
        (t.reason ? " (" + t.reason + ")" : "")));
      parts.push(mark);
    }
  });
  g.replaceChildren(...parts);
  g.dataset.rows = rows.length;
  $("timeline-empty").hidden = rows.length > 0;
}

function renderTransitions() {
  const items = transitions
    .slice(-MAX_TRANSITIONS)
    .reverse()
    .map((t) => {
      const li = el("li");
      li.dataset.origin = t.origin;
      li.dataset.to = t.to;
      li.append(
        el("span", "when", clock(t.at) + " "),
        el("b", "", t.origin),
        " ",
        el("span", t.from, t.from),
        " → ",
        el("span", t.to, t.to),
        el("span", "reason", t.reason ? " (" + t.reason + ")" : ""),
      );
      return li;
    });
  $("transitions").replaceChildren(...items);
  $("transitions-empty").hidden = items.length > 0;
  renderTimeline();
}

// --- origins: one page, with a sparkline of the last hour each ------------------------

function own(o) {
  const obs = o.observations || [];
  return obs.find((x) => x.latency_ms !== null && x.latency_ms !== undefined) || obs[0] || {};
}

// A member's dashboard, where its API is (the member tag `api`: a bare port when the API
// listens on every address, then at the member's gossip address; else "host:port").
function dashboardOf(name) {
  const m = members.get(name);
  if (!(m && m.tags && m.tags.api && m.state === "alive")) return null;
  const api = String(m.tags.api);
  if (!/^\d+$/.test(api)) return "http://" + api + "/";
  return "http://" + (m.addr.includes(":") ? "[" + m.addr + "]" : m.addr) + ":" + api + "/";
}

function sparkline(s) {
  const n = s.ms.length;
  const W = 120;
  const H = 24;
  const vals = s.ms.filter((v) => v !== null);
  const max = Math.max(1, ...vals);
  const x = (i) => (n > 1 ? (i * (W - 2)) / (n - 1) + 1 : W / 2);
  const y = (v) => H - 2 - (v / max) * (H - 5);
  const e = svg("svg", { class: "spark", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none" });
  for (const i of s.failed) {
    e.append(svg("rect", { x: x(i) - 1, y: 0, width: 2, height: H, class: "failed" }));
  }
  let run = [];
  const flush = () => {
    const single = run.length === 1;
    if (single) run.push(run[0]); // a minute alone: drawn as a dot
    const points = run.map((p) => p.join(",")).join(" ");
    if (run.length) e.append(svg("polyline", { points, class: single ? "dot" : "" }));
    run = [];
  };
  s.ms.forEach((v, i) => (v === null ? flush() : run.push([x(i).toFixed(1), y(v).toFixed(1)])));
  flush();
  const last = [...s.ms].reverse().find((v) => v !== null);
  e.dataset.points = vals.length;
  e.dataset.last = last === undefined ? "" : last;
  e.dataset.failed = s.failed.length;
  e.append(svg("title", {}, "last hour, one point a minute: " +
    (vals.length ? Math.min(...vals) + "–" + max + " ms" : "no check") +
    (s.failed.length ? "; a check failed in " + s.failed.length + " minute(s)" : "")));
  return e;
}

function sparkCell(o) {
  const td = el("td", "spark-cell");
  const s = sparks.origins[o.id];
  if (s) {
    td.append(sparkline(s));
    return td;
  }
  const owners = sparks.elsewhere[o.id] || (o.mine ? null : o.owners);
  if (!owners || !owners.length) {
    td.append(el("span", "mute", o.mine ? "no check yet" : "not checked"));
    return td;
  }
  td.append(el("span", "mute", "on "));
  owners.forEach((n, i) => {
    if (i) td.append(", ");
    const link = dashboardOf(n);
    const a = el(link ? "a" : "span", "elsewhere", n);
    if (link) a.href = link;
    td.append(a);
  });
  td.title = "checked by " + owners.join(", ") + ": its history is on their dashboards";
  return td;
}

function originRow(o) {
  const tr = el("tr", o.mine ? "mine" : "");
  tr.dataset.id = o.id;
  tr.dataset.verdict = o.verdict;
  tr.dataset.mine = o.mine ? "1" : "0";
  const ob = own(o);
  const lat =
    ob.latency_ms !== null && ob.latency_ms !== undefined
      ? Math.round(ob.latency_ms) + " ms"
      : ob.latency_band || "";
  const id = el("td", "id", o.id);
  id.title = (o.spec && o.spec.url) || "";
  const owners = el("td", "owners wide");
  (o.owners || []).forEach((n, i) => {
    if (i) owners.append(", ");
    owners.append(el("span", n === me() ? "me" : "", n));
  });
  tr.append(
    id,
    el("td", "verdict " + o.verdict, o.verdict),
    owners,
    el("td", "latency", lat),
    sparkCell(o),
    el("td", "reason wide", ob.reason || ""),
  );
  return tr;
}

function filtering() {
  return $("only-mine").checked || $("only-bad").checked;
}

function visible(o) {
  if ($("only-mine").checked && !o.mine) return false;
  if ($("only-bad").checked && o.verdict === "up") return false;
  return true;
}

function renderOrigins() {
  $("origins").replaceChildren(...page.map(originRow));
  $("origins-empty").hidden = page.length > 0;
  pageInfo();
}

function pageInfo() {
  const first = pageNo * PAGE;
  const total = health && health.origins
    ? Object.values(health.origins).reduce((a, b) => a + b, 0)
    : null;
  let text = page.length ? first + 1 + "–" + (first + page.length) : "none";
  if (filtering()) text += " of those shown by the filter";
  else if (total !== null) text += " of " + total.toLocaleString();
  $("page-info").textContent = text;
  $("prev").disabled = pageNo === 0;
  $("next").disabled = !pageMore;
}

async function getPage(after) {
  const r = await fetch(url("/v1/origins", { limit: PAGE, after }), {
    headers: { Accept: "application/json" },
  });
  if (!r.ok) throw new Error("/v1/origins: " + r.status);
  return { rows: await r.json(), more: r.headers.has("Link") };
}

// With a filter: walk the catalogue compactly until a page's worth matches, then read
// those origins' full views.
async function getFilteredPage(after) {
  const ids = [];
  let cursor = after;
  let more = false;
  for (;;) {
    const r = await fetch(url("/v1/origins", { limit: SCAN, after: cursor, fields: "id,verdict,mine" }));
    if (!r.ok) throw new Error("/v1/origins: " + r.status);
    const chunk = await r.json();
    const link = r.headers.has("Link");
    let full = -1; // where in the chunk the page filled up
    for (let i = 0; i < chunk.length && full < 0; i++) {
      if (visible(chunk[i]) && ids.push(chunk[i].id) === PAGE) full = i;
    }
    if (full >= 0) {
      more = full < chunk.length - 1 || link;
      break;
    }
    if (!link || !chunk.length) break;
    cursor = chunk[chunk.length - 1].id;
  }
  const views = await Promise.all(
    ids.map((id) => getJson("/v1/origins/" + encodeURIComponent(id)).catch(() => null)),
  );
  return { rows: views.filter((v) => v && v.id), more };
}

let loading = null;
let loadAgain = false;
let newer = null; // while a page loads: the views events brought meanwhile (id -> view)
// Read the page shown (again); calls while one is under way coalesce into one more.
async function loadPage() {
  if (loading) {
    loadAgain = true;
    return loading;
  }
  loading = (async () => {
    do {
      loadAgain = false;
      const after = starts[pageNo];
      newer = new Map();
      const got = filtering() ? await getFilteredPage(after) : await getPage(after);
      page = got.rows.map((o) => newer.get(o.id) || o); // an event is newer than the read
      newer = null;
      pageMore = got.more;
      await loadHistory(false);
      renderOrigins();
    } while (loadAgain);
  })().finally(() => {
    loading = null;
    newer = null;
  });
  return loading;
}

async function loadHistory(render = true) {
  if (!page.length) {
    sparks = { origins: {}, elsewhere: {} };
  } else {
    sparks = await getJson(url("/v1/history", { ids: page.map((o) => o.id).join(",") }));
  }
  if (render) {
    for (const tr of $("origins").children) {
      const o = page.find((p) => p.id === tr.dataset.id);
      if (o) tr.children[4].replaceWith(sparkCell(o));
    }
  }
}

let historyTimer = null;
function historySoon() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(() => loadHistory().catch(() => {}), 500);
}

let reloadTimer = null;
function reloadSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(() => loadPage().catch(() => {}), 300);
}

// An origin's view changed (SSE): redrawn in place when shown; one that may belong on
// this page (a new one in its range) reloads it.
function putOrigin(o) {
  if (newer) newer.set(o.id, o);
  const i = page.findIndex((p) => p.id === o.id);
  if (i >= 0) {
    page[i] = o;
    const tr = $("origins").querySelector('tr[data-id="' + CSS.escape(o.id) + '"]');
    if (tr) tr.replaceWith(originRow(o));
    if (filtering() && !visible(o)) reloadSoon();
    else if (o.mine) historySoon(); // its sparkline shows the failure (or recovery) now
    return;
  }
  const first = page.length ? page[0].id : null;
  const last = page.length ? page[page.length - 1].id : null;
  const inRange = (pageNo === 0 || o.id > first) && (!pageMore || o.id < last);
  if (inRange && (!filtering() || visible(o))) reloadSoon();
}

function removeOrigin(d) {
  if (page.some((p) => p.id === d.id)) reloadSoon();
}

// --- loading and following -------------------------------------------------------------

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok && r.status !== 503) throw new Error(path + ": " + r.status);
  return r.json();
}

async function refresh() {
  const [h, ms, ts] = await Promise.all([
    getJson("/v1/health"),
    getJson("/v1/members").catch(() => []),
    getJson("/v1/transitions").catch(() => []),
  ]);
  setHealth(h);
  members.clear();
  for (const m of ms) members.set(m.name, m);
  transitions = ts;
  renderHealth();
  renderMembers();
  renderTransitions();
  await loadPage();
  $("updated").textContent = "updated " + clock(Date.now() / 1000);
}

function setConn(text, live) {
  const c = $("conn");
  c.textContent = text;
  c.className = live ? "live" : "";
}

let pollTimer = null;
function poll(every) {
  clearInterval(pollTimer);
  pollTimer = every ? setInterval(() => refresh().catch(() => {}), every) : null;
}

function connect() {
  if (!window.EventSource) {
    setConn("polling every 5 s", false);
    poll(5000);
    return;
  }
  const es = new EventSource("/v1/events");
  es.onopen = () => {
    setConn("live", true);
    poll(0);
    refresh().catch(() => {});
  };
  es.onerror = () => {
    setConn("reconnecting…", false);
    if (!pollTimer) poll(5000); // keep the page current while the stream is away
  };
  const on = (name, fn) =>
    es.addEventListener(name, (e) => {
      fn(JSON.parse(e.data));
      $("updated").textContent = "updated " + clock(Date.now() / 1000);
    });
  on("origin", putOrigin);
  on("origin-removed", removeOrigin);
  on("member", (m) => {
    members.set(m.name, m);
    renderMembers();
  });
  on("health", (h) => {
    setHealth(h);
    renderHealth();
  });
  on("transition", (t) => {
    transitions.push(t);
    if (transitions.length > 400) transitions = transitions.slice(-200); // as the node keeps
    renderTransitions();
  });
}

async function start() {
  try {
    P = await getJson("/static/leds.json");
    addBlinkRules();
  } catch (e) {
    P = null; // the LEDs stay undrawn (their state is still named); the rest works
  }
  refresh().catch(() => {}); // the first paint; connect() keeps it current
  connect();
}

function turn(to) {
  if (to > pageNo) starts[to] = page[page.length - 1].id;
  pageNo = to;
  loadPage().catch(() => {});
}

function refilter() {
  starts = [null];
  pageNo = 0;
  loadPage().catch(() => {});
}

$("only-mine").addEventListener("change", refilter);
$("only-bad").addEventListener("change", refilter);
$("prev").addEventListener("click", () => turn(pageNo - 1));
$("next").addEventListener("click", () => turn(pageNo + 1));
window.addEventListener("resize", renderTimeline);
setInterval(() => {
  if (health && health.identify_s > 0) {
    health.identify_s = Math.max(0, health.identify_s - 1);
    if (health.identify_s === 0) refresh().catch(() => {});
    renderHealth();
  }
}, 1000);
// the sparklines gain a point a minute, the timeline moves on: redrawn every 20 s
setInterval(() => {
  if (document.hidden) return;
  renderTimeline();
  loadHistory().catch(() => {});
}, 20000);
start();
