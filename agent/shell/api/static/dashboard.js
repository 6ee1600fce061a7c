// The dashboard: fills index.html from the JSON API and follows /v1/events. On every
// (re)connect it reloads the REST views, since events missed while away are not replayed;
// without the event stream it polls instead. Text from the API goes into the page as text
// (textContent), never as markup.
"use strict";
const $ = (id) => document.getElementById(id);
let P = null; // /static/leds.json: each LED state's meaning and patterns (agent/leds.py)
let health = null; // the latest /v1/health
const origins = new Map();
const members = new Map();
let transitions = [];
const MAX_TRANSITIONS = 30;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "";
}
function ago(t) {
  if (!t) return "";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " d";
}

function blinkClass(p) {
  return ("blink-" + p.on + "-" + p.off).replace(/\./g, "_");
}

// One CSS animation per blink rhythm in the patterns: lit for `on` s, dark for `off` s.
function addBlinkRules() {
  const sheet = $("style").sheet;
  const seen = new Set();
  for (const st of Object.values(P.states)) {
    for (const p of Object.values(st.three)) {
      const name = blinkClass(p);
      if (p.mode !== "blink" || seen.has(name)) continue;
      seen.add(name);
      const lit = Number(((100 * p.on) / (p.on + p.off)).toPrecision(4));
      sheet.insertRule(
        "@keyframes " + name + "{0%{opacity:1;box-shadow:0 0 12px 3px var(--c)}" +
          lit + "%{opacity:.15;box-shadow:none}}",
        sheet.cssRules.length,
      );
      sheet.insertRule(
        ".led." + name + "{animation:" + name + " " + (p.on + p.off) + "s step-end infinite}",
        sheet.cssRules.length,
      );
    }
  }
}

function drawLeds(state, meaning) {
  const st = P && P.states[state];
  const box = $("leds");
  box.dataset.state = state || "";
  for (const led of box.querySelectorAll(".led")) {
    const p = st ? st.three[led.dataset.colour] : { mode: "off" };
    led.className = "led";
    led.dataset.mode = p.mode;
    if (p.mode === "on") led.classList.add("on");
    if (p.mode === "blink") led.classList.add(blinkClass(p));
  }
  $("led-state").textContent = state || "?";
  // the node's own words first: "healthy" alone by design is not "in the cluster"
  $("meaning").textContent = meaning || (st ? st.meaning : "");
}

function counts(c) {
  if (!c) return "";
  const parts = ["up", "down", "disputed"].map((k) => (c[k] || 0) + " " + k);
  if (c.unknown) parts.push(c.unknown + " unknown");
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
  drawLeds(h.led ? h.led.state : null, h.led ? h.led.meaning : null);
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
  $("c-uptime").textContent = h.uptime_s !== undefined ? ago(Date.now() / 1000 - h.uptime_s) : "";
  const ul = $("reasons");
  ul.replaceChildren(...(h.reasons || []).map((r) => el("li", "", r)));
  for (const tr of $("members").querySelectorAll("tr")) {
    tr.querySelector("td").classList.toggle("me", tr.dataset.name === h.node);
  }
}

function me() {
  return health ? health.node : null;
}

function own(o) {
  const obs = o.observations || [];
  return obs.find((x) => x.latency_ms !== null && x.latency_ms !== undefined) || obs[0] || {};
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
    el("td", "reason", ob.reason || ""),
  );
  return tr;
}

function visible(o) {
  if ($("only-mine").checked && !o.mine) return false;
  if ($("only-bad").checked && o.verdict === "up") return false;
  return true;
}

function putOrigin(o) {
  origins.set(o.id, o);
  const body = $("origins");
  const old = body.querySelector('tr[data-id="' + CSS.escape(o.id) + '"]');
  if (!visible(o)) {
    if (old) old.remove();
  } else if (old) {
    old.replaceWith(originRow(o));
  } else {
    let next = null;
    for (const tr of body.children) {
      if (tr.dataset.id > o.id) { next = tr; break; }
    }
    body.insertBefore(originRow(o), next);
  }
  $("origins-empty").hidden = body.children.length > 0;
}

function renderOrigins() {
  const rows = [...origins.values()]
    .filter(visible)
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map(originRow);
  $("origins").replaceChildren(...rows);
  $("origins-empty").hidden = rows.length > 0;
}

function memberRow(m) {
  const tr = el("tr");
  tr.dataset.name = m.name;
  tr.dataset.state = m.state;
  tr.append(
    el("td", m.name === me() ? "name me" : "name", m.name),
    el("td", "state " + m.state, m.state),
    el("td", "addr wide", m.addr + ":" + m.port),
    el("td", "inc wide", m.incarnation),
  );
  return tr;
}

function renderMembers() {
  const rows = [...members.values()]
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .map(memberRow);
  $("members").replaceChildren(...rows);
  $("members-count").textContent = String(rows.length);
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
}

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok && r.status !== 503) throw new Error(path + ": " + r.status);
  return r.json();
}

async function refresh() {
  const [h, os, ms, ts] = await Promise.all([
    getJson("/v1/health"),
    getJson("/v1/origins"),
    getJson("/v1/members").catch(() => []),
    getJson("/v1/transitions").catch(() => []),
  ]);
  health = h;
  origins.clear();
  for (const o of os) origins.set(o.id, o);
  members.clear();
  for (const m of ms) members.set(m.name, m);
  transitions = ts;
  renderHealth();
  renderMembers();
  renderOrigins();
  renderTransitions();
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
  on("origin-removed", (d) => {
    origins.delete(d.id);
    const tr = $("origins").querySelector('tr[data-id="' + CSS.escape(d.id) + '"]');
    if (tr) tr.remove();
  });
  on("member", (m) => {
    members.set(m.name, m);
    renderMembers();
  });
  on("health", (h) => {
    health = h;
    renderHealth();
  });
  on("transition", (t) => {
    transitions.push(t);
    if (transitions.length > 4 * MAX_TRANSITIONS) transitions = transitions.slice(-MAX_TRANSITIONS);
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

$("only-mine").addEventListener("change", renderOrigins);
$("only-bad").addEventListener("change", renderOrigins);
setInterval(() => {
  if (health && health.identify_s > 0) {
    health.identify_s = Math.max(0, health.identify_s - 1);
    if (health.identify_s === 0) refresh().catch(() => {});
    renderHealth();
  }
}, 1000);
start();
