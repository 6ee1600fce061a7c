"""The dashboard at GET /: one self-contained page, live from /v1/events.

No build step and no external assets, so it works from a phone on the Pi's network with
no internet. The server renders the skeleton with this node's health, its origins and the
LED patterns embedded as JSON (first paint needs no round trip); the script then fetches
members and transitions, and follows /v1/events (EventSource). On every (re)connect it
reloads the REST views, since events missed while away are not replayed; without the
event stream it polls instead.

The LEDs are drawn from :data:`agent.leds.PATTERNS`: each distinct blink rhythm becomes a
CSS animation generated here, so the drawing blinks exactly as the real LEDs do.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from agent.leds import PATTERNS, patterns_json


def _json_for_script(data: Any) -> str:
    """JSON safe inside <script>: no "</script>", "<!--" or "&" can close or confuse it."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _blink_class(on: float, off: float) -> str:
    return f"blink-{on:g}-{off:g}".replace(".", "_")


def _blink_css() -> str:
    """One CSS animation per blink rhythm in PATTERNS: lit for ``on`` s, dark for ``off``."""
    rules = []
    seen = set()
    for per_colour in PATTERNS.values():
        for p in per_colour.values():
            if p.mode != "blink" or (p.on_time, p.off_time) in seen:
                continue
            seen.add((p.on_time, p.off_time))
            name = _blink_class(p.on_time, p.off_time)
            lit = 100 * p.on_time / (p.on_time + p.off_time)
            rules.append(
                f".led.{name}{{animation:{name} {p.on_time + p.off_time:g}s step-end infinite}}"
                f"@keyframes {name}{{0%{{opacity:1;box-shadow:0 0 12px 3px var(--c)}}"
                f"{lit:.4g}%{{opacity:.15;box-shadow:none}}}}"
            )
    return "".join(rules)


_STYLE = """
:root{--bg:#111;--fg:#eee;--mute:#999;--line:#333;--up:#3c3;--down:#f55;--disp:#c7f;
--unk:#aaa;--warn:#fa3}
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;padding:.75rem;background:var(--bg);
color:var(--fg);overflow-wrap:break-word;max-width:70rem;margin:auto}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
.badge{padding:.1rem .5rem;border-radius:.8rem;border:1px solid currentColor;font-size:.9rem}
.ok,.up,.alive{color:var(--up)}.down,.failing,.dead,.fault{color:var(--down)}
.degraded,.starting,.suspect{color:var(--warn)}.disputed{color:var(--disp)}
.unknown,.left{color:var(--unk)}
#leds{display:flex;gap:.6rem;align-items:center}
.led{--c:#888;width:1.3rem;height:1.3rem;border-radius:50%;background:var(--c);opacity:.15;
border:1px solid #000}
.led.on{opacity:1;box-shadow:0 0 12px 3px var(--c)}
.led[data-colour=green]{--c:#2e2}.led[data-colour=amber]{--c:#fa0}.led[data-colour=red]{--c:#f22}
#meaning{color:var(--mute)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr));gap:.5rem;
margin-top:.6rem}
.card{border:1px solid var(--line);border-radius:.4rem;padding:.4rem .6rem}
.card b{display:block;font-size:.8rem;color:var(--mute);font-weight:normal}
ul{margin:.3rem 0;padding-left:1.2rem}
table{border-collapse:collapse;width:100%}
td,th{padding:.3rem .4rem;text-align:left;border-bottom:1px solid var(--line);
vertical-align:top}
th{color:var(--mute);font-weight:normal;font-size:.85rem}
.id,.reason,.name,.owners,#transitions{overflow-wrap:anywhere}
.verdict,.latency,.state{white-space:nowrap}
tr.mine td:first-child{font-weight:bold}
.me{font-weight:bold;text-decoration:underline}
.tools{display:flex;gap:1rem;flex-wrap:wrap;font-size:.9rem;color:var(--mute)}
#conn{font-size:.85rem;color:var(--mute)}#conn.live{color:var(--up)}
.wide{display:table-cell}
@media (max-width:40rem){.wide{display:none}body{padding:.5rem}}
"""

_SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const P = JSON.parse($("patterns").textContent);
let health = JSON.parse($("initial-health").textContent);
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

function drawLeds(state) {
  const st = P.states[state];
  const box = $("leds");
  box.dataset.state = state || "";
  for (const led of box.querySelectorAll(".led")) {
    const p = st ? st.three[led.dataset.colour] : { mode: "off" };
    led.className = "led";
    led.dataset.mode = p.mode;
    if (p.mode === "on") led.classList.add("on");
    if (p.mode === "blink") {
      led.classList.add(("blink-" + p.on + "-" + p.off).replace(/\./g, "_"));
    }
  }
  $("led-state").textContent = state || "?";
  $("meaning").textContent = st ? st.meaning : "";
}

function counts(c) {
  if (!c) return "";
  const parts = ["up", "down", "disputed"].map((k) => (c[k] || 0) + " " + k);
  if (c.unknown) parts.push(c.unknown + " unknown");
  return parts.join(", ");
}

function renderHealth() {
  const h = health;
  document.title = "edge-agent " + h.node;
  $("node").textContent = h.node;
  const st = $("status");
  st.textContent = h.status;
  st.className = "badge " + h.status;
  drawLeds(h.led ? h.led.state : null);
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
    owners.append(el("span", n === health.node ? "me" : "", n));
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
    el("td", m.name === health.node ? "name me" : "name", m.name),
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

$("only-mine").addEventListener("change", renderOrigins);
$("only-bad").addEventListener("change", renderOrigins);
for (const o of JSON.parse($("initial-origins").textContent)) origins.set(o.id, o);
renderHealth();
renderOrigins();
renderTransitions();
setInterval(() => {
  if (health.identify_s > 0) {
    health.identify_s = Math.max(0, health.identify_s - 1);
    if (health.identify_s === 0) refresh().catch(() => {});
    renderHealth();
  }
}, 1000);
connect();
"""


def render_status_page(health: dict[str, Any], origins: list[dict[str, Any]] | None = None) -> str:
    """The dashboard's HTML, with ``health`` and ``origins`` (if given) embedded for the
    first paint; everything after that comes from the API."""
    node = escape(str(health.get("node", "")))
    leds = "".join(
        f"<span class='led' data-colour='{c}'></span>" for c in ("green", "amber", "red")
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>edge-agent {node}</title><style>{_STYLE}{_blink_css()}</style></head><body>"
        "<header>"
        f"<h1 id='node'>{node}</h1><span id='status' class='badge'></span>"
        f"<span id='leds' title='this node&#39;s LEDs'>{leds}</span>"
        "<span><b id='led-state'></b> <span id='meaning'></span></span>"
        "</header>"
        "<div class='cards'>"
        "<div class='card'><b>cluster</b><span id='c-cluster'></span></div>"
        "<div class='card'><b>all origins</b><span id='c-origins'></span></div>"
        "<div class='card'><b>checked by this node</b><span id='c-mine'></span></div>"
        "<div class='card'><b>storage</b><span id='c-storage'></span></div>"
        "<div class='card'><b>identify</b><span id='c-identify'></span></div>"
        "<div class='card'><b>up for</b><span id='c-uptime'></span></div>"
        "</div>"
        "<ul id='reasons'></ul>"
        "<h2>Origins</h2>"
        "<div class='tools'>"
        "<label><input type='checkbox' id='only-mine'> only those this node checks</label>"
        "<label><input type='checkbox' id='only-bad'> only those not up</label></div>"
        "<table><thead><tr><th>origin</th><th>verdict</th><th class='wide'>owners</th>"
        "<th>latency</th><th>last check</th></tr></thead><tbody id='origins'></tbody></table>"
        "<p id='origins-empty' hidden>no origins</p>"
        "<h2>Members (<span id='members-count'>…</span>)</h2>"
        "<table><thead><tr><th>name</th><th>state</th><th class='wide'>address</th>"
        "<th class='wide'>inc</th></tr></thead>"
        "<tbody id='members'></tbody></table>"
        "<h2>Recent transitions</h2><ul id='transitions'></ul>"
        "<p id='transitions-empty' hidden>none yet</p>"
        "<p><span id='conn'>connecting…</span> · <span id='updated'></span> · "
        "<a href='/v1/health' style='color:inherit'>API</a> · "
        "<a href='/metrics' style='color:inherit'>metrics</a></p>"
        "<noscript>This page needs JavaScript; the same data is at /v1/health, /v1/origins "
        "and /v1/members.</noscript>"
        f"<script id='patterns' type='application/json'>{_json_for_script(patterns_json())}"
        "</script>"
        f"<script id='initial-health' type='application/json'>{_json_for_script(health)}"
        "</script>"
        "<script id='initial-origins' type='application/json'>"
        f"{_json_for_script(origins or [])}</script>"
        f"<script>{_SCRIPT}</script></body></html>"
    )
