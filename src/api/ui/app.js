// Symphony's web UI: plain JavaScript over the node's HTTP API, no build
// step. Pages are picked by the URL's hash: #/runs, #/runs/<id>, #/cluster,
// #/models. Everything shown comes from /api/v1; live updates come from the
// server-sent event streams.
"use strict";

const TOKEN_KEY = "symphony.token";
const RUN_STATUSES = ["running", "succeeded", "failed", "cancelled"];
const TASK_STATUSES = ["waiting", "ready", "running", "succeeded", "failed", "skipped"];

// ---- API access ----------------------------------------------------------

function token() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API; JSON in, JSON out. A 401 opens the token dialog. */
async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!response.ok) {
    if (response.status === 401) askToken();
    throw new ApiError(response.status, (body && body.error) || response.statusText);
  }
  return body;
}

/** An event stream URL: EventSource sends no headers, so the token rides in the query. */
function streamUrl(path) {
  return token() ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token()) : path;
}

// ---- DOM helpers ---------------------------------------------------------

/** Builds an element; attributes starting with "on" are listeners. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Builds an SVG element. */
function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

function badge(status) {
  return h("span", { class: "badge " + status }, status);
}

function when(ms) {
  if (!ms) return "—";
  const d = new Date(ms);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

function duration(ms) {
  if (ms === undefined || ms === null || ms < 0) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000);
  return m + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function shortId(id) {
  return id.length > 12 ? id.slice(0, 6) + "…" + id.slice(-6) : id;
}

/** Calls `fn` at most once per `ms`, always after the last call. */
function throttle(fn, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
}

// ---- Live events ---------------------------------------------------------

/**
 * The all-runs event stream, shared by the pages. EventSource reconnects by
 * itself and sends Last-Event-ID, so the server resumes after the last
 * event seen; a "resync" event means events were lost and the page reloads
 * its data.
 */
const live = {
  source: null,
  listeners: new Set(),

  start() {
    if (this.source) this.source.close();
    const source = new EventSource(streamUrl("/api/v1/events"));
    this.source = source;
    const mark = (on) => {
      const el = document.getElementById("live");
      el.classList.toggle("on", on);
      el.textContent = on ? "live" : "offline";
    };
    source.onopen = () => mark(true);
    source.onerror = () => mark(source.readyState === EventSource.OPEN);
    source.addEventListener("resync", () => this.emit({ type: "resync" }));
    for (const kind of EVENT_KINDS) {
      source.addEventListener(kind, (e) => this.emit(JSON.parse(e.data)));
    }
  },

  emit(event) {
    for (const listener of this.listeners) listener(event);
  },

  /** Calls `listener` for every event until the page changes. */
  listen(listener) {
    this.listeners.add(listener);
    page.cleanups.push(() => this.listeners.delete(listener));
  },
};

const EVENT_KINDS = [
  "run_submitted", "task_expanded", "task_scheduled", "task_succeeded",
  "task_failed", "task_skipped", "run_succeeded", "run_failed", "run_cancelled",
];

// ---- Pages ---------------------------------------------------------------

/** The page on screen and what to undo when it goes. */
const page = { cleanups: [], generation: 0 };

function route() {
  for (const cleanup of page.cleanups.splice(0)) cleanup();
  page.generation += 1;
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  const [section, id] = path.split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === (section || "runs"));
  }
  const view = document.getElementById("view");
  view.replaceChildren();
  const render = {
    runs: () => (id ? runPage(view, id) : runsPage(view)),
    cluster: () => clusterPage(view),
    models: () => modelsPage(view),
  }[section || "runs"];
  (render || (() => view.append(h("p", { class: "empty" }, "No such page."))))();
}

/** Whether the page that started an async load is still on screen. */
function current(generation) {
  return generation === page.generation;
}

function showError(view, error) {
  view.replaceChildren(h("div", { class: "panel error-text" }, String(error.message || error)));
}

// ---- Runs list -------------------------------------------------------------

function runsPage(view) {
  const generation = page.generation;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const filter = { status: params.get("status") || "", workflow: params.get("workflow") || "" };
  let runs = [];

  const counts = h("div", { class: "counts" });
  const workflowSelect = h("select", { id: "workflow-filter", onchange: () => { filter.workflow = workflowSelect.value; draw(); } });
  const statusSelect = h("select", { id: "status-filter", onchange: () => { filter.status = statusSelect.value; draw(); } },
    h("option", { value: "" }, "all statuses"),
    RUN_STATUSES.map((st) => h("option", { value: st }, st)));
  const table = h("tbody");

  view.append(
    h("h1", {}, "Runs"),
    h("div", { class: "sub" }, "Runs kept by this node (durability local), newest first. Updates live."),
    h("div", { class: "panel" }, counts),
    h("div", { class: "panel" },
      h("div", { class: "row", style: "margin-bottom:12px" },
        h("label", {}, "Status ", statusSelect),
        h("label", {}, "Workflow ", workflowSelect)),
      h("table", { id: "runs" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Run"), h("th", {}, "Workflow"), h("th", {}, "Status"),
          h("th", {}, "Submitted"), h("th", { class: "num" }, "Duration"))),
        table)));

  function draw() {
    const byStatus = Object.fromEntries(RUN_STATUSES.map((st) => [st, 0]));
    for (const run of runs) byStatus[run.status] = (byStatus[run.status] || 0) + 1;
    counts.replaceChildren(
      countButton("all", runs.length, filter.status === ""),
      ...RUN_STATUSES.map((st) => countButton(st, byStatus[st], filter.status === st)));
    statusSelect.value = filter.status;

    const workflows = [...new Set(runs.map((r) => r.workflow))].sort();
    workflowSelect.replaceChildren(h("option", { value: "" }, "all workflows"),
      ...workflows.map((w) => h("option", { value: w }, w)));
    workflowSelect.value = filter.workflow;

    const shown = runs
      .filter((r) => !filter.status || r.status === filter.status)
      .filter((r) => !filter.workflow || r.workflow === filter.workflow)
      .sort((a, b) => b.created_ms - a.created_ms);
    table.replaceChildren(...shown.map((r) => h("tr", { "data-run": r.id },
      h("td", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.id), class: "mono" }, r.id)),
      h("td", {}, r.workflow),
      h("td", {}, badge(r.status)),
      h("td", {}, when(r.created_ms)),
      h("td", { class: "num" }, r.status === "running" ? "—" : duration(r.updated_ms - r.created_ms)))));
    if (!shown.length) {
      table.append(h("tr", {}, h("td", { colspan: 5, class: "empty" }, runs.length ? "No run matches." : "No runs yet.")));
    }
  }

  function countButton(status, n, selected) {
    return h("button", {
      type: "button", class: "count " + status + (selected ? " selected" : ""), "data-count": status,
      onclick: () => { filter.status = status === "all" ? "" : status; draw(); },
    }, h("b", {}, n), h("span", {}, status));
  }

  async function load() {
    try {
      const fetched = await api("/api/v1/runs");
      if (!current(generation)) return;
      runs = fetched;
      draw();
    } catch (e) {
      if (current(generation)) showError(view, e);
    }
  }

  const reload = throttle(load, 300);
  live.listen((event) => {
    if (event.type === "resync" || event.type.startsWith("run_")) reload();
  });
  load();
}

// ---- One run -----------------------------------------------------------------

function runPage(view, runId) {
  const generation = page.generation;
  let info = null;
  /** Attempts by "task/item#attempt", from the run's event stream. */
  const attempts = new Map();

  const header = h("div");
  const dag = h("div", { class: "panel dag", id: "dag" });
  const attemptRows = h("tbody");
  const details = h("div");
  view.append(header, dag,
    h("div", { class: "panel" }, h("h2", {}, "Attempts"),
      h("table", { id: "attempts" },
        h("thead", {}, h("tr", {},
          h("th", {}, "Task"), h("th", {}, "Attempt"), h("th", {}, "Node"), h("th", {}, "Status"),
          h("th", { class: "num" }, "Duration"), h("th", {}, "Error"))),
        attemptRows)),
    details);

  function taskName(key) {
    const task = info && info.tasks[key.task];
    const name = task ? task.id : "#" + key.task;
    return key.item === null || key.item === undefined ? name : name + "[" + key.item + "]";
  }

  function onEvent(e) {
    const key = e.key && (e.key.task + "/" + (e.key.item ?? "") + "#" + e.attempt);
    if (e.type === "task_scheduled") {
      attempts.set(key, { key: e.key, attempt: e.attempt, node: e.node, status: "running", started: e.at_ms });
    } else if (e.type === "task_succeeded" || (e.type === "task_failed" && e.attempt > 0)) {
      const a = attempts.get(key) || { key: e.key, attempt: e.attempt, node: "" };
      a.status = e.type === "task_succeeded" ? "succeeded" : "failed";
      a.ended = e.at_ms;
      if (e.error) a.error = e.error.class + ": " + e.error.message;
      a.retry = e.will_retry;
      attempts.set(key, a);
    }
    drawAttempts();
  }

  function drawAttempts() {
    const rows = [...attempts.values()].sort((a, b) =>
      a.key.task - b.key.task || (a.key.item ?? 0) - (b.key.item ?? 0) || a.attempt - b.attempt);
    attemptRows.replaceChildren(...rows.map((a) => h("tr", {},
      h("td", {}, taskName(a.key)),
      h("td", { class: "num" }, a.attempt),
      h("td", {}, a.node || "—"),
      h("td", {}, badge(a.status), a.retry ? h("span", { class: "sub" }, " retried") : null),
      h("td", { class: "num" }, a.started && a.ended ? duration(a.ended - a.started) : "—"),
      h("td", { class: "error-text" }, a.error || ""))));
    if (!rows.length) attemptRows.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No attempts yet.")));
  }

  function draw() {
    const p = info.progress;
    const cancel = info.status === "running"
      ? h("button", { type: "button", class: "danger", onclick: cancelRun }, "Cancel run")
      : null;
    header.replaceChildren(
      h("div", { class: "row" }, h("h1", {}, info.workflow), badge(info.status), h("span", { class: "spacer", style: "flex:1" }), cancel),
      h("div", { class: "sub" },
        h("span", { class: "mono" }, info.run_id), " · submitted ", when(info.created_ms),
        info.status === "running" ? " · " + p.finished + "/" + p.tasks + " tasks finished, " + p.running + " running" : ""));
    dag.replaceChildren(drawDag(info.tasks), legend());
    const parts = [];
    if (info.error) parts.push(h("div", { class: "panel" }, h("h2", {}, "Error"), h("div", { class: "error-text" }, info.error)));
    if (info.status === "succeeded") {
      parts.push(h("div", { class: "panel" }, h("h2", {}, "Outputs"),
        h("pre", { class: "json" }, JSON.stringify(info.outputs, null, 2))));
    }
    details.replaceChildren(...parts);
    drawAttempts();
  }

  async function cancelRun() {
    try {
      await api("/api/v1/runs/" + encodeURIComponent(runId) + "/cancel", { method: "POST" });
    } catch (e) {
      alert(e.message);
    }
  }

  async function load() {
    try {
      const fetched = await api("/api/v1/runs/" + encodeURIComponent(runId));
      if (!current(generation)) return;
      info = fetched;
      draw();
    } catch (e) {
      if (current(generation)) showError(view, e);
    }
  }

  // The run's own stream: its journal first (for the attempts), then live;
  // it ends with the run (the server answers 204 to the reconnect).
  const source = new EventSource(streamUrl("/api/v1/runs/" + encodeURIComponent(runId) + "/events"));
  const reload = throttle(load, 150);
  for (const kind of EVENT_KINDS) {
    source.addEventListener(kind, (e) => {
      onEvent(JSON.parse(e.data));
      reload();
    });
  }
  page.cleanups.push(() => source.close());
  live.listen((event) => { if (event.type === "resync") reload(); });
  load();
}

/**
 * Draws the task graph left to right: a task's column is the length of the
 * longest chain of needs before it; within a column, tasks are ordered by
 * the average row of what they need, which keeps most edges short.
 */
function drawDag(tasks) {
  const W = 168, H = 50, GAP_X = 64, GAP_Y = 22, PAD = 16;
  const index = new Map(tasks.map((t, i) => [t.id, i]));
  const layer = [];
  const layerOf = (i, seen = new Set()) => {
    if (layer[i] !== undefined) return layer[i];
    if (seen.has(i)) return 0;
    seen.add(i);
    const needs = (tasks[i].needs || []).map((n) => index.get(n)).filter((n) => n !== undefined);
    layer[i] = needs.length ? 1 + Math.max(...needs.map((n) => layerOf(n, seen))) : 0;
    return layer[i];
  };
  tasks.forEach((_, i) => layerOf(i));

  const columns = [];
  tasks.forEach((_, i) => (columns[layer[i]] = columns[layer[i]] || []).push(i));
  const row = [];
  for (const column of columns) {
    const weight = (i) => {
      const rows = (tasks[i].needs || []).map((n) => row[index.get(n)]).filter((r) => r !== undefined);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : i;
    };
    column.sort((a, b) => weight(a) - weight(b) || a - b);
    column.forEach((i, r) => (row[i] = r));
  }
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const pos = (i) => {
    const offset = (tallest - columns[layer[i]].length) * (H + GAP_Y) / 2;
    return { x: PAD + layer[i] * (W + GAP_X), y: PAD + offset + row[i] * (H + GAP_Y) };
  };
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y;

  const edges = [];
  tasks.forEach((t, i) => {
    for (const need of t.needs || []) {
      const from = index.get(need);
      if (from === undefined) continue;
      const a = pos(from), b = pos(i);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
      edges.push(s("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 6},${y2}`, "marker-end": "url(#arrow)" }));
    }
  });
  const nodes = tasks.map((t, i) => {
    const { x, y } = pos(i);
    const meta = t.status + (t.attempts > 1 ? " · " + t.attempts + " attempts" : "") + (t.items !== undefined ? " · " + t.items + " items" : "");
    return s("g", { class: "node " + t.status, "data-task": t.id, "data-status": t.status, transform: `translate(${x},${y})` },
      s("title", {}, t.id + " (" + t.uses + "): " + t.status + (t.error ? "\n" + t.error : "")),
      s("rect", { width: W, height: H }),
      s("text", { x: 12, y: 20 }, t.id.length > 20 ? t.id.slice(0, 19) + "…" : t.id),
      s("text", { x: 12, y: 37, class: "meta" }, meta));
  });
  return s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "task graph" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 4, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#adb5bd" }))),
    edges, nodes);
}

function legend() {
  return h("div", { class: "legend" }, TASK_STATUSES.map((st) =>
    h("span", {}, h("i", { style: `background: var(--${st})` }), st)));
}

// ---- Cluster -------------------------------------------------------------------

function clusterPage(view) {
  const generation = page.generation;
  const body = h("div");
  view.append(h("h1", {}, "Cluster"), body);

  async function load() {
    try {
      const cluster = await api("/api/v1/cluster");
      if (!current(generation)) return;
      body.replaceChildren(
        h("div", { class: "sub" }, "As node ", h("b", {}, cluster.node), " sees it",
          cluster.joined ? "" : " (still joining)", " · refreshes every 2 s"),
        h("div", { class: "panel" }, h("table", { id: "members" },
          h("thead", {}, h("tr", {},
            h("th", {}, "Node"), h("th", {}, "Address"), h("th", {}, "State"), h("th", {}, "Load"),
            h("th", {}, "Labels"), h("th", { class: "num" }, "RTT"), h("th", {}, "Last seen"))),
          h("tbody", {}, cluster.members.map((m) => h("tr", { "data-member": m.name },
            h("td", {}, h("b", {}, m.name), m.name === cluster.node ? h("span", { class: "sub" }, " (this node)") : null),
            h("td", { class: "mono" }, m.addr),
            h("td", {}, badge(m.state)),
            h("td", {}, h("span", { class: "bar" }, h("i", { style: `width:${Math.min(100, (100 * m.load) / Math.max(1, m.slots))}%` })), m.load + " / " + m.slots),
            h("td", {}, Object.entries(m.labels || {}).map(([k, v]) => h("span", { class: "label" }, k + "=" + v))),
            h("td", { class: "num" }, m.rtt_ms === null || m.rtt_ms === undefined ? "—" : m.rtt_ms.toFixed(1) + " ms"),
            h("td", {}, m.name === cluster.node ? "—" : when(m.last_seen_ms))))))));
    } catch (e) {
      if (current(generation)) showError(body, e);
    }
  }
  const timer = setInterval(load, 2000);
  page.cleanups.push(() => clearInterval(timer));
  load();
}

// ---- Models ----------------------------------------------------------------------

function modelsPage(view) {
  const generation = page.generation;
  const body = h("div");
  view.append(h("h1", {}, "Models"), h("div", { class: "sub" }, "The model registry: versions, aliases and deployments."), body);

  async function load() {
    try {
      const models = await api("/api/v1/models");
      if (!current(generation)) return;
      if (!models.length) {
        body.replaceChildren(h("div", { class: "panel empty" }, "No models registered. ",
          h("code", {}, "symphony models register NAME FILE.onnx"), " adds one."));
        return;
      }
      const panels = await Promise.all(models.map(modelPanel));
      if (current(generation)) body.replaceChildren(...panels);
    } catch (e) {
      if (current(generation)) showError(body, e);
    }
  }
  load();
}

async function modelPanel(summary) {
  const name = encodeURIComponent(summary.name);
  const model = await api("/api/v1/models/" + name);
  // Deployments come from their own endpoint; older nodes do not have it.
  const deployment = await api("/api/v1/models/" + name + "/deployment").catch(() => null);
  const aliasesOf = (version) => model.aliases.filter((a) => a.version === version).map((a) => h("span", { class: "label" }, a.alias));
  return h("div", { class: "panel", "data-model": summary.name },
    h("div", { class: "row" }, h("h2", {}, summary.name),
      h("span", { class: "sub" }, summary.versions + " version" + (summary.versions === 1 ? "" : "s"))),
    h("table", {},
      h("thead", {}, h("tr", {},
        h("th", {}, "Version"), h("th", {}, "Aliases"), h("th", {}, "Format"), h("th", { class: "num" }, "Size"),
        h("th", {}, "Checksum"), h("th", {}, "Registered"), h("th", {}, "Deployed here"))),
      h("tbody", {}, model.versions.map((v) => h("tr", {},
        h("td", {}, "v" + v.version),
        h("td", {}, aliasesOf(v.version)),
        h("td", {}, v.format),
        h("td", { class: "num" }, (v.size / 1024).toFixed(1) + " KiB"),
        h("td", { class: "mono" }, v.checksum.slice(0, 12) + "…"),
        h("td", {}, when(v.created_ms), v.created_by ? " by " + v.created_by : ""),
        h("td", {}, (model.deployed || []).includes(v.version) ? badge("running") : "—"))))),
    deployment ? h("div", { style: "margin-top:12px" }, h("h2", {}, "Deployment"),
      h("pre", { class: "json" }, JSON.stringify(deployment, null, 2))) : null);
}

// ---- Token -------------------------------------------------------------------

function askToken() {
  const dialog = document.getElementById("token-dialog");
  if (dialog.open) return;
  document.getElementById("token-input").value = token();
  dialog.showModal();
}

function setupToken() {
  const dialog = document.getElementById("token-dialog");
  document.getElementById("token-button").addEventListener("click", askToken);
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") localStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    else if (dialog.returnValue === "clear") localStorage.removeItem(TOKEN_KEY);
    else return;
    live.start();
    route();
  });
}

setupToken();
window.addEventListener("hashchange", route);
live.start();
route();
