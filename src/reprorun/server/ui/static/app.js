/* reprorun web UI: plain JavaScript, no build step, nothing loaded from outside this server.
 *
 * Pages are hash routes (#/, #/experiments/1,2, #/runs/<id>, #/compare?runs=a,b, #/models in
 * models.js) over
 * MLflow's REST API (/ajax-api/2.0/mlflow) and a few read-only /ui-api endpoints.
 * Every value from the store is put in the page as text (textContent), never as HTML.
 */
"use strict";

const MLFLOW = "/ajax-api/2.0/mlflow";
const PAGE_SIZES = [25, 50, 100, 250];
const LIVE_MS = 3000;
const COLORS = ["#2457a6", "#d1495b", "#00798c", "#edae49", "#66a182", "#8d5a97", "#30638e", "#e07a5f", "#3d405b", "#81b29a"];
const TAG = {
  commit: "mlflow.source.git.commit",
  repo: "mlflow.source.git.repoURL",
  branch: "mlflow.source.git.branch",
  entry: "mlflow.project.entryPoint",
  env: "mlflow.project.env",
  backend: "mlflow.project.backend",
  user: "mlflow.user",
  sourceName: "mlflow.source.name",
  sourceType: "mlflow.source.type",
  dirty: "reprorun.git.dirty",
  diff: "reprorun.git.diff",
  version: "reprorun.source.version",
  subdir: "reprorun.source.subdirectory",
  sourceUri: "reprorun.source.uri",
  envHash: "reprorun.env.hash",
  envPython: "reprorun.env.python",
  envLock: "reprorun.env.lock",
  envImage: "reprorun.env.image",
  command: "reprorun.command",
  reprorunVersion: "reprorun.version",
  exitCode: "reprorun.exitCode",
  exitReason: "reprorun.exitReason",
  exitSignal: "reprorun.exitSignal",
  exitDetail: "reprorun.exitDetail",
  log: "reprorun.log",
  rerunOf: "reprorun.rerunOf",
};

// Live refresh and log follow run only while their page is on screen (see every()).

// --- small helpers -----------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "path", "line", "text", "circle", "rect", "polyline", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "href") el.setAttribute("href", safeHref(value));
    else if (key === "class") el.setAttribute("class", value);
    else if (key === "text") el.textContent = value;
    else if (key in el && !svg && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Only links that cannot run script: same-page, relative, http(s). */
function safeHref(url) {
  const text = String(url);
  // "//host" and "/\\host" are other sites to a browser.
  if (text.startsWith("#") || (text.startsWith("/") && !/^\/[\/\\]/.test(text))) return text;
  try {
    const parsed = new URL(text);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") return parsed.href;
  } catch (_) { /* not a URL */ }
  return "#";
}

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", query, body } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value === undefined || value === null) continue;
      for (const item of Array.isArray(value) ? value : [value]) params.append(key, item);
    }
    url += "?" + params.toString();
  }
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    throw new ApiError(`Cannot reach the reprorun server (${err.message}). Is it still running?`, 0);
  }
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (_) { data = { message: text.slice(0, 500) }; }
  if (!response.ok) throw new ApiError(data.message || `HTTP ${response.status}`, response.status, data.error_code);
  return data;
}

const mlflow = (endpoint, options) => api(`${MLFLOW}/${endpoint}`, options);

function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err instanceof Error ? err.message : String(err));
}

function pad(n) { return String(n).padStart(2, "0"); }

function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(start, end) {
  if (!start) return "";
  const ms = (end ? Number(end) : Date.now()) - Number(start);
  if (ms < 0) return "";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function fmtSize(n) {
  if (n === undefined || n === null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function fmtNumber(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (Number.isInteger(n)) return String(n);
  return Math.abs(n) >= 1e-3 && Math.abs(n) < 1e6 ? String(Number(n.toPrecision(6))) : n.toExponential(4);
}

/** A run's status with why it ended, as `reprorun runs list` shows it: "FAILED (out-of-memory)";
 * the reason is left out where the status says it all (FINISHED succeeded, KILLED cancelled). */
function statusLabel(status, reason) {
  const obvious = (status === "FINISHED" && reason === "succeeded") || (status === "KILLED" && reason === "cancelled");
  return reason && !obvious ? `${status} (${reason})` : status;
}

function statusBadge(status, tags) {
  const reason = (tags || {})[TAG.exitReason] || "";
  const attrs = { class: `badge ${status}`, "data-status": status };
  if (reason) attrs["data-reason"] = reason;
  if (tags && tags[TAG.exitDetail]) attrs.title = tags[TAG.exitDetail];
  return h("span", attrs, statusLabel(status, reason));
}

/** How a run ended, in words: "exit code -9 (SIGKILL): the kernel's OOM killer killed …". */
function exitSummary(tags) {
  const parts = [];
  if (tags[TAG.exitCode] !== undefined) parts.push(`exit code ${tags[TAG.exitCode]}`);
  if (tags[TAG.exitSignal]) parts.push(`(${tags[TAG.exitSignal]})`);
  const detail = tags[TAG.exitDetail] ? `: ${tags[TAG.exitDetail]}` : "";
  return parts.join(" ") + detail;
}

/** MLflow's run JSON as maps: {info, params, metrics, tags}. */
function unpackRun(run) {
  const data = run.data || {};
  const map = (items) => Object.fromEntries((items || []).map((i) => [i.key, i.value]));
  return { info: run.info, params: map(data.params), metrics: map(data.metrics), tags: map(data.tags) };
}

function runName(run) {
  return run.info.run_name || run.tags["mlflow.runName"] || run.info.run_id.slice(0, 8);
}

/** A web page for a commit of a known forge, else null. */
function commitUrl(repo, commit) {
  if (!repo || !commit) return null;
  let base = repo.trim().replace(/\.git$/, "").replace(/\/$/, "");
  const ssh = base.match(/^(?:ssh:\/\/)?git@([^:/]+)[:/](.+)$/);
  if (ssh) base = `https://${ssh[1]}/${ssh[2]}`;
  if (!/^https?:\/\//.test(base)) return null;
  base = base.replace(/^(https?:\/\/)[^@/]+@/, "$1"); // never show credentials
  if (base.includes("gitlab")) return `${base}/-/commit/${commit}`;
  if (base.includes("bitbucket")) return `${base}/commits/${commit}`;
  return `${base}/commit/${commit}`;
}

function sourceCell(run) {
  const commit = run.tags[TAG.commit];
  if (!commit) return h("span", { class: "muted" }, run.tags[TAG.sourceName] ? shortPath(run.tags[TAG.sourceName]) : "");
  const url = commitUrl(run.tags[TAG.repo], commit);
  const label = commit.slice(0, 8) + (run.tags[TAG.dirty] === "true" ? " (dirty)" : "");
  return url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono", title: run.tags[TAG.repo] }, label)
    : h("span", { class: "mono", title: run.tags[TAG.repo] || "" }, label);
}

function shortPath(text) {
  const parts = String(text).split("/");
  return parts.length > 3 ? "…/" + parts.slice(-2).join("/") : text;
}

/** A key usable in the search grammar: backquoted when it is not a plain identifier. */
function quoteKey(key) {
  return /^[A-Za-z_][A-Za-z0-9_.\-]*$/.test(key) && !key.includes("..") ? key : "`" + key.replace(/`/g, "") + "`";
}

function setTitle(text) { document.title = text ? `${text} · reprorun` : "reprorun"; }

/** Call fn every ms while page is on screen and fn does not return false; never two calls
 * at once (the next is scheduled when the previous has finished). */
function every(page, ms, fn) {
  const tick = async () => {
    if (!page.isConnected) return;
    let again = true;
    try { again = (await fn()) !== false; } catch (_) { /* the page shows its own errors */ }
    if (again && page.isConnected) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

// --- router --------------------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, queryText] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(queryText || "") };
}

function go(path, query) {
  const q = query ? new URLSearchParams(Object.entries(query).filter(([, v]) => v !== undefined && v !== "" && v !== null)).toString() : "";
  const target = "#" + path + (q ? "?" + q : "");
  if (location.hash === target) route(); else location.hash = target;
}

async function route() {
  const root = document.getElementById("app");
  const { parts, query } = parseHash();
  const page = h("div", {});
  root.replaceChildren(page);
  try {
    if (parts.length === 0) await experimentsPage(page, query);
    else if (parts[0] === "experiments" && parts[1]) await runsPage(page, parts[1].split(","), query);
    else if (parts[0] === "runs" && parts[1]) await runPage(page, parts[1], query);
    else if (parts[0] === "compare") await comparePage(page, query);
    else if (parts[0] === "models") await modelsPage(page, parts[1], query);
    else page.append(errorBox(`No page at #${parts.join("/")}.`), h("a", { href: "#/" }, "Back to the experiments"));
  } catch (err) {
    page.append(errorBox(err));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  // /version answers the MLflow API version (its clients compare it); reprorun's is the header.
  fetch("/version").then((r) => (r.ok ? r.headers.get("X-Reprorun-Version") || "" : "")).then((v) => {
    if (v) document.getElementById("version").textContent = `reprorun ${v}`;
  }).catch(() => {});
  route();
});

// --- experiments ------------------------------------------------------------------------------

async function experimentsPage(page, query) {
  setTitle("Experiments");
  const view = query.get("view") || "active";
  const { experiments } = await api("/ui-api/experiments", { query: { view } });
  const message = h("div", {});
  const nameInput = h("input", { type: "text", placeholder: "New experiment name", "aria-label": "New experiment name", id: "new-experiment" });
  const create = async () => {
    const name = nameInput.value.trim();
    if (!name) { message.replaceChildren(errorBox("Type a name for the new experiment.")); return; }
    try {
      await mlflow("experiments/create", { method: "POST", body: { name } });
      route();
    } catch (err) { message.replaceChildren(errorBox(err)); }
  };
  nameInput.addEventListener("keydown", (e) => { if (e.key === "Enter") create(); });
  const selected = new Set();
  const openSelected = h("button", { disabled: true, onclick: () => go(`/experiments/${[...selected].join(",")}`) }, "Runs of selected experiments");

  const rows = experiments.map((exp) => {
    const box = h("input", { type: "checkbox", "aria-label": `Select ${exp.name}`, onchange: (e) => {
      if (e.target.checked) selected.add(exp.experiment_id); else selected.delete(exp.experiment_id);
      openSelected.disabled = selected.size === 0;
    } });
    const nameCell = h("td", {}, h("a", { href: `#/experiments/${exp.experiment_id}`, class: "exp-name" }, exp.name));
    const rename = h("button", { onclick: () => startRename(exp, nameCell, message) }, "Rename");
    const del = exp.lifecycle_stage === "active"
      ? h("button", { class: "danger", onclick: async () => {
        if (!confirm(`Delete experiment "${exp.name}" and hide its ${exp.run_count} runs? It can be restored.`)) return;
        try { await mlflow("experiments/delete", { method: "POST", body: { experiment_id: exp.experiment_id } }); route(); } catch (err) { message.replaceChildren(errorBox(err)); }
      } }, "Delete")
      : h("button", { onclick: async () => {
        try { await mlflow("experiments/restore", { method: "POST", body: { experiment_id: exp.experiment_id } }); route(); } catch (err) { message.replaceChildren(errorBox(err)); }
      } }, "Restore");
    return h("tr", { "data-experiment-id": exp.experiment_id },
      h("td", {}, box), nameCell, h("td", { class: "num" }, exp.experiment_id),
      h("td", { class: "num runs-count" }, exp.run_count), h("td", {}, fmtTime(exp.last_activity)),
      h("td", { class: "mono muted" }, exp.artifact_location), h("td", {}, rename, " ", del));
  });

  const viewSelect = h("select", { "aria-label": "Which experiments", onchange: (e) => go("/", { view: e.target.value }) },
    ["active", "deleted", "all"].map((v) => h("option", { value: v, selected: v === view }, v)));
  page.append(
    h("h1", {}, "Experiments"),
    h("div", { class: "toolbar" }, nameInput, h("button", { class: "primary", onclick: create }, "Create"), h("span", { class: "spacer" }), viewSelect, openSelected),
    message,
    h("div", { class: "table-wrap" }, h("table", { id: "experiments" },
      h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "Name"), h("th", {}, "ID"), h("th", {}, "Runs"), h("th", {}, "Last activity"), h("th", {}, "Artifact location"), h("th", {}, ""))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No experiments.")))))
  );
}

function startRename(exp, cell, message) {
  const input = h("input", { type: "text", value: exp.name, "aria-label": "New name" });
  const save = async () => {
    try {
      await mlflow("experiments/update", { method: "POST", body: { experiment_id: exp.experiment_id, new_name: input.value.trim() } });
      route();
    } catch (err) { message.replaceChildren(errorBox(err)); }
  };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") save(); if (e.key === "Escape") route(); });
  cell.replaceChildren(input, " ", h("button", { class: "primary", onclick: save }, "Save"));
  input.focus();
}

// --- runs table -------------------------------------------------------------------------------

const FIXED_COLUMNS = [
  { id: "status", label: "Status", order: "attributes.status", cell: (r) => statusBadge(r.info.status, r.tags) },
  { id: "name", label: "Run", order: "attributes.run_name", cell: (r) => h("a", { href: `#/runs/${r.info.run_id}`, class: "run-link" }, runName(r)) },
  { id: "start", label: "Started", order: "attributes.start_time", cell: (r) => fmtTime(r.info.start_time) },
  { id: "duration", label: "Duration", order: "attributes.duration", cell: (r) => fmtDuration(r.info.start_time, r.info.end_time) },
  { id: "source", label: "Source", order: `tags.\`${TAG.commit}\``, cell: sourceCell },
  { id: "entry", label: "Entry point", order: `tags.\`${TAG.entry}\``, cell: (r) => r.tags[TAG.entry] || "" },
];

/** A user-chosen column: "params.cp", "metrics.acc" or "tags.x" (null for anything else). */
function keyColumn(spec) {
  const dot = spec.indexOf(".");
  const kind = spec.slice(0, dot);
  const key = spec.slice(dot + 1);
  const source = { params: "params", metrics: "metrics", tags: "tags" }[kind];
  if (!source || !key) return null;
  return {
    id: spec, label: `${kind === "params" ? "param" : kind === "metrics" ? "metric" : "tag"}: ${key}`,
    order: `${kind}.${quoteKey(key)}`, numeric: kind === "metrics",
    cell: (r) => { const v = r[source][key]; return v === undefined ? "" : kind === "metrics" ? fmtNumber(v) : v; },
  };
}

async function runsPage(page, experimentIds, query) {
  const filter = query.get("filter") || "";
  const order = query.get("order") || "";
  const pageSize = Number(query.get("size")) || 50;
  const storedCols = localStorage.getItem(`reprorun.columns.${experimentIds.join(",")}`);
  const columns = (query.get("cols") ?? storedCols ?? "").split(",").filter(Boolean);
  const state = { tokens: [null], index: 0 };

  const experiments = await Promise.all(experimentIds.map((id) => mlflow("experiments/get", { query: { experiment_id: id } }).then((r) => r.experiment)));
  const names = experiments.map((e) => e.name).join(", ");
  setTitle(names);

  const params = () => ({ filter: filterInput.value.trim(), order, size: pageSize, cols: columns.join(",") });
  const filterInput = h("input", { type: "text", class: "filter", value: filter, id: "filter", "aria-label": "Filter runs",
    placeholder: "metrics.accuracy > 0.9 and params.cp = '0.05' and attributes.status = 'FINISHED'" });
  filterInput.addEventListener("keydown", (e) => { if (e.key === "Enter") go(`/experiments/${experimentIds.join(",")}`, params()); });
  const message = h("div", { id: "runs-message" });
  const live = h("span", { class: "live hidden", id: "live" }, "● live");
  const selected = new Set();
  const compare = h("button", { disabled: true, id: "compare", onclick: () => go("/compare", { runs: [...selected].join(",") }) }, "Compare");
  const table = h("table", { id: "runs" });
  const pager = h("div", { class: "pager" });
  const panel = h("div", { class: "card hidden", id: "columns-panel" });
  const columnsButton = h("button", { onclick: () => toggleColumns() }, "Columns…");

  page.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Experiments"), " / ", names),
    h("h1", {}, names, h("span", { class: "muted" }, experimentIds.length > 1 ? `(${experimentIds.length} experiments)` : `#${experimentIds[0]}`)),
    h("div", { class: "toolbar" }, filterInput,
      h("button", { class: "primary", onclick: () => go(`/experiments/${experimentIds.join(",")}`, params()) }, "Search"),
      h("button", { onclick: () => go(`/experiments/${experimentIds.join(",")}`, { ...params(), filter: "" }) }, "Clear"),
      columnsButton, compare, live),
    message, panel, h("div", { class: "table-wrap" }, table), pager,
  );

  async function toggleColumns() {
    if (!panel.classList.contains("hidden")) { panel.classList.add("hidden"); return; }
    try {
      const keys = await api("/ui-api/keys", { query: { experiment_id: experimentIds } });
      const group = (kind, label) => h("div", {}, h("strong", {}, label),
        keys[kind].length === 0 ? h("div", { class: "muted" }, "none") : keys[kind].map((key) => {
          const spec = `${kind}.${key}`;
          return h("label", { title: key }, h("input", { type: "checkbox", checked: columns.includes(spec), "data-column": spec, onchange: (e) => {
            const at = columns.indexOf(spec);
            if (e.target.checked && at < 0) columns.push(spec);
            if (!e.target.checked && at >= 0) columns.splice(at, 1);
            localStorage.setItem(`reprorun.columns.${experimentIds.join(",")}`, columns.join(","));
            load(false);
          } }), " ", key);
        }));
      panel.replaceChildren(h("div", { class: "columns-panel" }, group("params", "Parameters"), group("metrics", "Metrics"), group("tags", "Tags")));
      panel.classList.remove("hidden");
    } catch (err) { message.replaceChildren(errorBox(err)); }
  }

  function header(cols) {
    const [orderKey, orderDir] = order ? [order.replace(/ (ASC|DESC)$/i, ""), /DESC$/i.test(order) ? "DESC" : "ASC"] : ["", ""];
    return h("thead", {}, h("tr", {}, h("th", {}, ""), cols.map((c) => {
      if (!c.order) return h("th", { "data-column": c.id }, c.label);
      const active = c.order === orderKey;
      const next = active && orderDir === "ASC" ? "DESC" : "ASC";
      return h("th", { class: "sortable", "data-column": c.id, title: `Sort by ${c.label}`,
        onclick: () => go(`/experiments/${experimentIds.join(",")}`, { ...params(), filter, order: `${c.order} ${next}` }) },
      c.label, active ? h("span", { class: "arrow" }, orderDir === "DESC" ? "▼" : "▲") : null);
    })));
  }

  const namesById = Object.fromEntries(experiments.map((e) => [e.experiment_id, e.name]));
  const experimentColumn = { id: "experiment", label: "Experiment", cell: (r) => namesById[r.info.experiment_id] || r.info.experiment_id };

  let loads = 0; // answers to an older request (a live refresh overtaken by "Next") are dropped
  async function load(quiet) {
    const mine = ++loads;
    // Several experiments: say which each run is in (not sortable: MLflow's grammar has no key for it).
    const cols = [...FIXED_COLUMNS.slice(0, 2), ...(experimentIds.length > 1 ? [experimentColumn] : []), ...FIXED_COLUMNS.slice(2), ...columns.map(keyColumn).filter(Boolean)];
    let result;
    try {
      result = await mlflow("runs/search", { method: "POST", body: {
        experiment_ids: experimentIds, filter, max_results: pageSize,
        order_by: order ? [order] : [], page_token: state.tokens[state.index] || undefined,
      } });
      if (mine !== loads) return;
    } catch (err) {
      if (mine !== loads) return;
      message.replaceChildren(errorBox(err.status === 400 ? `The filter or sort does not work: ${err.message}` : err));
      table.replaceChildren(header(cols));
      return;
    }
    if (!quiet) message.replaceChildren();
    const runs = (result.runs || []).map(unpackRun);
    state.tokens[state.index + 1] = result.next_page_token || null;
    const rows = runs.map((run) => {
      const box = h("input", { type: "checkbox", checked: selected.has(run.info.run_id), "aria-label": `Select ${runName(run)}`, onchange: (e) => {
        if (e.target.checked) selected.add(run.info.run_id); else selected.delete(run.info.run_id);
        compare.disabled = selected.size < 2;
        compare.textContent = `Compare${selected.size ? ` (${selected.size})` : ""}`;
      } });
      return h("tr", { "data-run-id": run.info.run_id }, h("td", {}, box),
        cols.map((c) => h("td", { class: c.numeric ? "num" : "", "data-column": c.id }, c.cell(run))));
    });
    table.replaceChildren(header(cols), h("tbody", {}, rows.length ? rows
      : h("tr", {}, h("td", { colspan: cols.length + 1, class: "muted" }, filter ? "No run matches this filter." : "No runs yet: start one with reprorun run."))));
    const first = state.index * pageSize;
    pager.replaceChildren(
      h("button", { disabled: state.index === 0, onclick: () => { state.index -= 1; load(false); } }, "← Previous"),
      h("span", { class: "muted", id: "page-info" }, runs.length ? `Runs ${first + 1}–${first + runs.length}` : ""),
      h("button", { disabled: !result.next_page_token, id: "next-page", onclick: () => { state.index += 1; load(false); } }, "Next →"),
      h("select", { "aria-label": "Runs per page", onchange: (e) => go(`/experiments/${experimentIds.join(",")}`, { ...params(), filter, size: e.target.value }) },
        PAGE_SIZES.map((n) => h("option", { value: n, selected: n === pageSize }, `${n} per page`))),
    );
    const running = runs.some((r) => r.info.status === "RUNNING" || r.info.status === "SCHEDULED");
    live.classList.toggle("hidden", !running);
    return running;
  }

  await load(false);
  // Live refresh: re-read the page on screen while any of its runs is still going.
  every(page, LIVE_MS, () => (live.classList.contains("hidden") ? undefined : load(true)));
}

// --- one run -----------------------------------------------------------------------------------

async function getRun(runId) {
  try {
    return unpackRun((await mlflow("runs/get", { query: { run_id: runId } })).run);
  } catch (err) {
    if (err.status === 404 || err.status === 400) throw new ApiError(`No run ${runId} in this store: ${err.message}`, err.status);
    throw err;
  }
}

function kvTable(entries, id, emptyText) {
  return h("table", { class: "kv", id },
    h("tbody", {}, entries.length ? entries.map(([k, v]) => h("tr", { "data-key": k }, h("th", { class: "tagkey" }, k), h("td", {}, v)))
      : h("tr", {}, h("td", { class: "muted" }, emptyText))));
}

async function runPage(page, runId, query) {
  const run = await getRun(runId);
  const experiment = (await mlflow("experiments/get", { query: { experiment_id: run.info.experiment_id } })).experiment;
  setTitle(runName(run));
  const t = run.tags;
  const status = h("span", { id: "run-status" }, statusBadge(run.info.status, t));
  page.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Experiments"), " / ",
      h("a", { href: `#/experiments/${experiment.experiment_id}` }, experiment.name), " / ", runName(run)),
    h("h1", {}, h("span", { id: "run-name" }, runName(run)), status, h("span", { class: "muted mono" }, run.info.run_id)),
  );

  const repoUrl = t[TAG.repo];
  const commitLink = commitUrl(repoUrl, t[TAG.commit]);
  const overview = [
    ["Experiment", h("a", { href: `#/experiments/${experiment.experiment_id}` }, experiment.name)],
    ["Status", statusLabel(run.info.status, t[TAG.exitReason]) + (exitSummary(t) ? ` · ${exitSummary(t)}` : "")],
    ["Started", fmtTime(run.info.start_time)],
    ["Ended", fmtTime(run.info.end_time)],
    ["Duration", fmtDuration(run.info.start_time, run.info.end_time)],
    ["User", run.info.user_id || t[TAG.user] || ""],
    ["Entry point", t[TAG.entry] || ""],
    ["Backend", t[TAG.backend] || ""],
    ["Artifact location", h("span", { class: "mono" }, run.info.artifact_uri)],
  ].filter(([, v]) => v !== "");
  if (run.info.lifecycle_stage === "deleted") overview.push(["Lifecycle", "deleted"]);
  if (t[TAG.rerunOf]) overview.push(["Re-run of", h("a", { href: `#/runs/${t[TAG.rerunOf]}` }, t[TAG.rerunOf])]);
  const lockLink = t[TAG.envLock] ? artifactLink(run.info.run_id, t[TAG.envLock], "download") : null;
  const provenance = [
    ["Repository", repoUrl ? (safeHref(repoUrl) !== "#" ? h("a", { href: repoUrl.replace(/^(https?:\/\/)[^@/]+@/, "$1"), target: "_blank", rel: "noopener noreferrer" }, repoUrl) : repoUrl) : (t[TAG.sourceName] || "")],
    ["Commit", t[TAG.commit] ? (commitLink ? h("a", { href: commitLink, target: "_blank", rel: "noopener noreferrer", class: "mono", id: "commit-link" }, t[TAG.commit]) : h("span", { class: "mono", id: "commit-link" }, t[TAG.commit])) : "not a git checkout"],
    ["Version", t[TAG.version] || t[TAG.branch] || ""],
    ["Dirty", t[TAG.dirty] === undefined ? "" : t[TAG.dirty] === "true" ? h("span", {}, "yes: uncommitted changes ", t[TAG.diff] ? artifactLink(run.info.run_id, t[TAG.diff], "(diff)") : null) : "no"],
    ["Subdirectory", t[TAG.subdir] || ""],
    ["Source", t[TAG.sourceUri] || t[TAG.sourceName] || ""],
    ["Command", t[TAG.command] ? h("code", { id: "run-command" }, t[TAG.command]) : ""],
    ["Environment", t[TAG.env] ? [t[TAG.env], t[TAG.envPython] ? ` · Python ${t[TAG.envPython]}` : "", t[TAG.envImage] ? ` · image ${t[TAG.envImage]}` : "", t[TAG.envHash] ? h("span", { class: "muted mono" }, ` · ${t[TAG.envHash].slice(0, 12)}`) : ""] : ""],
    ["Environment lock", lockLink ? [h("span", { class: "mono" }, t[TAG.envLock]), " ", lockLink] : ""],
    ["reprorun", t[TAG.reprorunVersion] || ""],
  ].filter(([, v]) => v !== "");

  const metricsCard = h("div", { class: "card" });
  page.append(h("div", { class: "grid2" },
    h("div", { class: "card" }, h("h2", {}, "Run"), kvTable(overview, "overview", "")),
    h("div", { class: "card" }, h("h2", {}, "Provenance"), kvTable(provenance, "provenance", "No provenance recorded."))));
  page.append(h("div", { class: "grid2" },
    h("div", { class: "card" }, h("h2", {}, `Parameters (${Object.keys(run.params).length})`),
      kvTable(Object.entries(run.params).sort(), "params", "No parameters.")),
    metricsCard));
  const chartCard = h("div", { class: "card", id: "chart-card" }, h("h2", {}, "Charts"));
  const systemCard = h("div", { class: "card hidden", id: "system-card" });
  page.append(chartCard, systemCard);
  let chart = null;
  let systemDrawn = "";
  function showMetrics(current) {
    const all = Object.keys(current.metrics).sort();
    metricsCard.replaceChildren(h("h2", {}, `Metrics (${all.length})`),
      kvTable(all.map((k) => [k, h("span", { class: "mono" }, fmtNumber(current.metrics[k]))]), "metrics", "No metrics."));
    const system = all.filter((k) => k.startsWith("system/"));
    const keys = all.filter((k) => !k.startsWith("system/"));
    const systemNow = JSON.stringify(system.map((k) => current.metrics[k]));
    if (system.length && systemNow !== systemDrawn) systemCharts(systemCard, current, system);
    systemDrawn = systemNow;
    chartCard.classList.toggle("hidden", keys.length === 0);
    if (!keys.length) return;
    if (chart) chart.update([current], keys); else chart = metricChart(chartCard, [current], keys);
  }
  showMetrics(run);

  const models = h("div", { class: "card", id: "models" }, h("h2", {}, "Logged models"), h("p", { class: "muted" }, "Loading…"));
  const artifacts = h("div", { class: "card", id: "artifacts" }, h("h2", {}, "Artifacts"));
  const logCard = h("div", { class: "card", id: "log-card" }, h("h2", {}, "Log"));
  page.append(logCard, artifacts, models);
  page.append(h("div", { class: "card" }, h("h2", {}, `Tags (${Object.keys(run.tags).length})`),
    kvTable(Object.entries(run.tags).sort(), "tags", "No tags.")));

  followLog(page, logCard, run, status);
  artifactBrowser(artifacts, run.info.run_id, query.get("artifact"));
  showModels(models, run.info.run_id);
  if (isActive(run.info.status)) {
    // While it runs: new metric values in the table and the chart, and the status.
    every(page, LIVE_MS, async () => {
      const current = await getRun(run.info.run_id);
      showMetrics(current);
      status.replaceChildren(statusBadge(current.info.status, current.tags));
      return isActive(current.info.status);
    });
  }
}

function isActive(status) { return status === "RUNNING" || status === "SCHEDULED"; }

function artifactUrl(runId, path, extra) {
  const query = new URLSearchParams({ path, ...extra });
  return `/ui-api/runs/${encodeURIComponent(runId)}/artifact?${query}`;
}

function artifactLink(runId, path, label) {
  return h("a", { href: artifactUrl(runId, path), download: path.split("/").pop() }, label);
}

function followLog(page, card, run, statusHolder) {
  const pre = h("pre", { class: "log hidden", id: "log" });
  const follow = h("input", { type: "checkbox", checked: true, id: "follow-log" });
  const note = h("span", { class: "muted" });
  card.append(h("div", { class: "toolbar" }, h("label", {}, follow, " follow"), note), pre);
  let offset = 0;
  let status = run.info.status;
  let reason = run.tags[TAG.exitReason];
  const poll = async () => {
    try {
      const part = await api(`/ui-api/runs/${encodeURIComponent(run.info.run_id)}/log`, { query: { offset } });
      if (!part.exists) { note.textContent = status === "RUNNING" ? "waiting for output…" : "This run has no log."; }
      else {
        if (offset === 0 && part.start > 0) pre.append(`[… the first ${fmtSize(part.start)} are in the log artifact]\n`);
        if (part.text) pre.append(part.text);
        pre.classList.remove("hidden");
        offset = part.offset;
        note.textContent = `${fmtSize(part.size)}${part.status === "RUNNING" ? " · following" : ""}`;
        if (follow.checked) pre.scrollTop = pre.scrollHeight;
      }
      if (part.status !== status || (part.exit_reason && part.exit_reason !== reason)) {
        reason = part.exit_reason;
        status = part.status;
        statusHolder.replaceChildren(statusBadge(status, { [TAG.exitReason]: part.exit_reason }));
      }
      return part.status === "RUNNING" || part.status === "SCHEDULED" || part.offset < part.size;
    } catch (err) {
      card.append(errorBox(err));
      return false;
    }
  };
  poll().then((going) => { if (going) every(page, 1500, poll); });
}

function artifactBrowser(card, runId, initial) {
  const tree = h("div", { class: "tree" });
  const preview = h("div", { id: "artifact-preview" });
  const message = h("div", {});
  card.append(message, h("div", { class: "grid2" }, tree, preview));
  let selectedItem = null;

  async function list(path, into) {
    try {
      const { files } = await mlflow("artifacts/list", { query: { run_id: runId, path: path || undefined } });
      const items = (files || []).map((f) => {
        const name = f.path.split("/").pop();
        if (f.is_dir) {
          const children = h("ul", { class: "hidden" });
          let loaded = false;
          const li = h("li", { "data-path": f.path }, h("span", { class: "dir name", onclick: async () => {
            if (!loaded) { loaded = true; await list(f.path, children); }
            children.classList.toggle("hidden");
          } }, `▸ ${name}/`), children);
          return li;
        }
        const li = h("li", { "data-path": f.path },
          h("a", { href: "#", class: "name", onclick: (e) => {
            e.preventDefault();
            if (selectedItem) selectedItem.classList.remove("selected");
            selectedItem = li; li.classList.add("selected");
            showPreview(preview, runId, f.path, f.file_size);
            // The address names the file shown, so the view can be shared or reloaded.
            const { parts } = parseHash();
            history.replaceState(null, "", `#/${parts.map(encodeURIComponent).join("/")}?artifact=${encodeURIComponent(f.path)}`);
          } }, name),
          h("span", { class: "size" }, fmtSize(f.file_size)),
          h("span", { class: "file-actions" }, h("a", { href: artifactUrl(runId, f.path), download: name, class: "download" }, "download")));
        return li;
      });
      into.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, path ? "empty" : "No artifacts.")]));
    } catch (err) { message.replaceChildren(errorBox(err)); }
  }
  const top = h("ul", {});
  tree.append(top);
  list("", top);
  if (initial) showPreview(preview, runId, initial);
}

const TEXT_EXTENSIONS = /\.(txt|log|md|py|r|sh|yaml|yml|toml|cfg|ini|lock|diff|patch|json|csv|tsv|mlmodel|html|xml|js|css|sql)$|(^|\/)(MLmodel|MLproject|requirements[^/]*|Dockerfile|conda\.yaml|python_env\.yaml)$/i;
const IMAGE_EXTENSIONS = /\.(png|jpe?g|gif|webp|bmp)$/i;

async function showPreview(target, runId, path, size) {
  const name = path.split("/").pop();
  const title = h("div", { class: "toolbar" }, h("strong", {}, name), h("span", { class: "muted" }, size === undefined ? "" : fmtSize(size)),
    h("a", { href: artifactUrl(runId, path), download: name }, "download"));
  target.replaceChildren(title);
  if (IMAGE_EXTENSIONS.test(path)) {
    target.append(h("img", { class: "preview", src: artifactUrl(runId, path, { inline: "1" }), alt: name }));
    return;
  }
  let response;
  try {
    response = await fetch(artifactUrl(runId, path, { preview: "1" }));
  } catch (err) { target.append(errorBox(err)); return; }
  if (!response.ok) {
    let text = await response.text();
    try { text = JSON.parse(text).message; } catch (_) { /* plain text */ }
    target.append(errorBox(text));
    return;
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const truncated = response.headers.get("X-Truncated") === "1";
  if (!TEXT_EXTENSIONS.test(path) && bytes.slice(0, 8000).includes(0)) {
    target.append(h("p", { class: "muted" }, "A binary file: download it to open it."));
    return;
  }
  const text = new TextDecoder("utf-8").decode(bytes);
  if (truncated) target.append(h("p", { class: "muted" }, "Showing the beginning of a large file."));
  if (/\.json$/i.test(path) && !truncated) {
    try { target.append(h("pre", { class: "preview", "data-kind": "json" }, JSON.stringify(JSON.parse(text), null, 2))); return; } catch (_) { /* show as text */ }
  }
  if (/\.(csv|tsv)$/i.test(path)) { target.append(csvTable(text, /\.tsv$/i.test(path) ? "\t" : ",")); return; }
  target.append(h("pre", { class: "preview", "data-kind": "text" }, text));
}

/** A small CSV reader (quotes, doubled quotes) for previews: the first 200 rows. */
function parseCsv(text, sep) {
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length && rows.length <= 200; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === sep) { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows;
}

function csvTable(text, sep) {
  const rows = parseCsv(text, sep);
  if (!rows.length) return h("p", { class: "muted" }, "Empty file.");
  const [head, ...body] = rows;
  return h("div", { class: "table-wrap" }, h("table", { "data-kind": "csv" },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
    h("tbody", {}, body.slice(0, 200).map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))))));
}

async function showModels(card, runId) {
  try {
    const { models } = await api(`/ui-api/runs/${encodeURIComponent(runId)}/models`);
    const body = models.length ? models.map((m) => h("div", { class: "model", "data-model-id": m.model_id },
      h("h3", {}, m.name, " ", h("span", { class: "badge" }, m.status)),
      kvTable([["Model id", m.model_id ? h("span", { class: "mono" }, m.model_id) : ""], ["Load with", h("code", {}, m.load || m.uri)],
        ["Type", m.model_type || ""], ["Artifact location", h("span", { class: "mono" }, m.artifact_location)]].filter(([, v]) => v !== ""), "", ""),
      m.description ? [h("div", { class: "muted" }, "MLmodel"), h("pre", { class: "preview model-description" }, m.description)] : h("p", { class: "muted" }, "No MLmodel file.")))
      : [h("p", { class: "muted" }, "No logged models (MLflow 3's log_model records them here; older models are among the artifacts).")];
    card.replaceChildren(h("h2", {}, `Logged models (${models.length})`), ...body);
    await showRegisteredVersions(card, runId);
  } catch (err) { card.replaceChildren(h("h2", {}, "Logged models"), errorBox(err)); }
}

// --- charts ------------------------------------------------------------------------------------

async function metricHistory(runId, key) {
  const points = [];
  let token;
  do {
    const page = await mlflow("metrics/get-history", { query: { run_id: runId, metric_key: key, max_results: 25000, page_token: token } });
    points.push(...(page.metrics || []));
    token = page.next_page_token;
  } while (token);
  return points;
}

/** The run's system/* metrics (reprorun's sampler, or MLflow's): one small chart each, against
 * the seconds since the first sample. */
function systemCharts(card, run, keys) {
  const grid = h("div", { class: "grid2" });
  card.replaceChildren(h("h2", {}, `System metrics (${keys.length})`), grid);
  card.classList.remove("hidden");
  for (const key of keys) {
    const box = h("div", { class: "chart", "data-metric": key });
    grid.append(box);
    metricHistory(run.info.run_id, key).then((points) => {
      const history = points.map((m) => ({ time: Number(m.timestamp), value: Number(m.value) }))
        .filter((m) => Number.isFinite(m.value)).sort((a, b) => a.time - b.time);
      const t0 = history.length ? history[0].time : 0;
      const xs = history.map((m) => (m.time - t0) / 1000);
      const ys = history.map((m) => m.value);
      const series = [{ name: key.slice("system/".length), color: COLORS[0], xs, raw: ys, ys }];
      box.replaceChildren(lineChart(series, { xLabel: "seconds", yLabel: key.slice("system/".length), logY: false, wall: false }));
    }, (err) => box.replaceChildren(errorBox(err)));
  }
}

/** Exponential moving average with TensorBoard's start-up correction. */
function smooth(values, weight) {
  if (!weight) return values;
  let last = 0;
  return values.map((v, i) => { last = last * weight + (1 - weight) * v; return last / (1 - Math.pow(weight, i + 1)); });
}

function metricChart(card, runs, metricKeys) {
  const metric = h("select", { "aria-label": "Metric", id: "chart-metric" }, metricKeys.map((k) => h("option", { value: k }, k)));
  const xAxis = h("select", { "aria-label": "X axis", id: "chart-x" }, [["step", "step"], ["relative", "time (relative)"], ["wall", "wall time"]].map(([v, l]) => h("option", { value: v }, l)));
  const smoothing = h("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: 0, id: "chart-smoothing", "aria-label": "Smoothing" });
  const smoothText = h("span", { class: "muted" }, "0");
  const logScale = h("input", { type: "checkbox", id: "chart-log" });
  const target = h("div", { class: "chart", id: "chart" });
  card.append(h("div", { class: "toolbar" }, metric, "x:", xAxis, "smoothing", smoothing, smoothText, h("label", {}, logScale, " log scale")), target);
  const cache = new Map();
  async function draw() {
    smoothText.textContent = Number(smoothing.value).toFixed(2);
    const key = metric.value;
    try {
      const series = await Promise.all(runs.map(async (run, i) => {
        const id = `${run.info.run_id}/${key}`;
        if (!cache.has(id)) cache.set(id, run.metrics[key] === undefined ? [] : await metricHistory(run.info.run_id, key));
        const history = cache.get(id).map((m) => ({ step: Number(m.step), time: Number(m.timestamp), value: Number(m.value) }))
          .filter((m) => Number.isFinite(m.value));
        history.sort((a, b) => (xAxis.value === "step" ? a.step - b.step || a.time - b.time : a.time - b.time));
        const t0 = history.reduce((a, m) => Math.min(a, m.time), Infinity);
        const xs = history.map((m) => (xAxis.value === "step" ? m.step : xAxis.value === "relative" ? (m.time - t0) / 1000 : m.time));
        const ys = history.map((m) => m.value);
        return { name: runName(run), color: COLORS[i % COLORS.length], xs, raw: ys, ys: smooth(ys, Number(smoothing.value)) };
      }));
      target.replaceChildren(lineChart(series, { xLabel: { step: "step", relative: "seconds since first point", wall: "time" }[xAxis.value], yLabel: key, logY: logScale.checked, wall: xAxis.value === "wall" }));
    } catch (err) { target.replaceChildren(errorBox(err)); }
  }
  [metric, xAxis, logScale].forEach((el) => el.addEventListener("change", draw));
  smoothing.addEventListener("input", draw);
  draw();
  return {
    /** New values of running runs: re-read the histories, keep the user's choices. */
    update(newRuns, newKeys) {
      runs = newRuns;
      cache.clear();
      const chosen = metric.value;
      metric.replaceChildren(...newKeys.map((k) => h("option", { value: k, selected: k === chosen }, k)));
      draw();
    },
  };
}

/** Rounded tick values covering [lo, hi]. */
function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const W = 760, H = 320, M = { left: 64, right: 16, top: 14, bottom: 44 };

function lineChart(series, { xLabel, yLabel, logY, wall }) {
  const points = series.flatMap((s) => s.ys.map((y, i) => [s.xs[i], y, s.raw[i]]));
  const usable = logY ? points.filter(([, y, raw]) => y > 0 && raw > 0) : points;
  if (!usable.length) {
    return h("p", { class: "muted", "data-empty": "1" }, logY && points.length ? "No positive values to draw on a log scale." : "No values to draw.");
  }
  // reduce, not Math.min(...values): spreading 100,000 values overflows the call stack.
  const minOf = (values) => values.reduce((a, b) => (b < a ? b : a), Infinity);
  const maxOf = (values) => values.reduce((a, b) => (b > a ? b : a), -Infinity);
  const xsAll = usable.map((p) => p[0]);
  const ysAll = usable.map((p) => p[1]).concat(usable.map((p) => p[2]));
  let [x0, x1] = [minOf(xsAll), maxOf(xsAll)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const f = logY ? Math.log10 : (v) => v;
  let [y0, y1] = [f(minOf(ysAll)), f(maxOf(ysAll))];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const sy = (y) => H - M.bottom - ((f(y) - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${yLabel} against ${xLabel}` });
  const grid = h("g", { class: "grid" });
  const axis = h("g", { class: "axis" });
  const yTicks = logY ? ticks(Math.ceil(y0), Math.floor(y1), 5).filter(Number.isInteger).map((e) => Math.pow(10, e)) : ticks(y0, y1, 5);
  for (const v of yTicks) {
    grid.append(h("line", { x1: M.left, x2: W - M.right, y1: sy(v), y2: sy(v) }));
    axis.append(h("text", { x: M.left - 6, y: sy(v) + 4, "text-anchor": "end" }, fmtNumber(v)));
  }
  for (const v of ticks(x0, x1, 6)) {
    grid.append(h("line", { x1: sx(v), x2: sx(v), y1: M.top, y2: H - M.bottom }));
    axis.append(h("text", { x: sx(v), y: H - M.bottom + 16, "text-anchor": "middle" }, wall ? fmtTime(v).slice(11) : fmtNumber(v)));
  }
  axis.append(h("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom }));
  axis.append(h("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
  axis.append(h("text", { class: "label", x: (W + M.left) / 2, y: H - 8, "text-anchor": "middle" }, xLabel));
  axis.append(h("text", { class: "label", x: 14, y: (H - M.bottom) / 2, transform: `rotate(-90 14 ${(H - M.bottom) / 2})`, "text-anchor": "middle" }, yLabel + (logY ? " (log)" : "")));
  svg.append(grid, axis);
  const lines = h("g", { class: "series" });
  series.forEach((s) => {
    const keep = s.xs.map((_, i) => i).filter((i) => !logY || (s.ys[i] > 0 && s.raw[i] > 0));
    // At most ~4,000 vertices a line: more do not show on a page this wide, and cost a lot.
    const stride = Math.ceil(keep.length / 4000);
    const drawn = stride > 1 ? keep.filter((_, n) => n % stride === 0 || n === keep.length - 1) : keep;
    const path = (values) => drawn.map((i, n) => `${n ? "L" : "M"}${sx(s.xs[i]).toFixed(1)},${sy(values[i]).toFixed(1)}`).join("");
    if (!keep.length) return;
    if (s.ys !== s.raw) lines.append(h("path", { d: path(s.raw), fill: "none", stroke: s.color, "stroke-opacity": 0.25, "stroke-width": 1 }));
    lines.append(h("path", { d: path(s.ys), fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name, "data-points": keep.length }));
    if (keep.length <= 60) keep.forEach((i) => lines.append(h("circle", { cx: sx(s.xs[i]), cy: sy(s.ys[i]), r: 2.5, fill: s.color },
      h("title", {}, `${s.name}: ${fmtNumber(s.raw[i])} at ${wall ? fmtTime(s.xs[i]) : fmtNumber(s.xs[i])}`))));
  });
  svg.append(lines);
  if (series.length > 1) {
    const legend = h("g", { class: "legend" });
    series.forEach((s, i) => {
      const y = M.top + 8 + i * 15;
      legend.append(h("rect", { x: W - M.right - 150, y: y - 8, width: 10, height: 10, fill: s.color }),
        h("text", { x: W - M.right - 135, y: y + 1 }, s.name.length > 22 ? s.name.slice(0, 21) + "…" : s.name));
    });
    svg.append(legend);
  }
  return svg;
}

// --- compare -----------------------------------------------------------------------------------

async function comparePage(page, query) {
  const ids = (query.get("runs") || "").split(",").filter(Boolean);
  setTitle("Compare runs");
  if (ids.length < 1) { page.append(errorBox("Choose runs to compare in a runs table (their boxes, then Compare).")); return; }
  const runs = await Promise.all(ids.map(getRun));
  page.append(h("div", { class: "crumbs" }, h("a", { href: "#/" }, "Experiments"), " / ",
    h("a", { href: `#/experiments/${[...new Set(runs.map((r) => r.info.experiment_id))].join(",")}` }, "runs"), " / compare"),
  h("h1", {}, `Compare ${runs.length} runs`));

  const onlyDiff = h("input", { type: "checkbox", id: "only-differences" });
  const table = h("table", { id: "compare-table" });
  const row = (section, label, values, numeric) => {
    const texts = values.map((v) => (v === undefined ? "" : numeric ? fmtNumber(v) : String(v)));
    const differs = new Set(texts).size > 1;
    return h("tr", { class: differs ? "diff" : "", "data-differs": differs ? "1" : "0", "data-key": `${section}.${label}` },
      h("th", { class: "tagkey" }, h("span", { class: "muted" }, section + " "), label), texts.map((t) => h("td", { class: numeric ? "num" : "" }, t)));
  };
  const union = (pick) => [...new Set(runs.flatMap((r) => Object.keys(pick(r))))].sort();
  const paramKeys = union((r) => r.params);
  const metricKeys = union((r) => r.metrics);
  const body = h("tbody", {},
    row("run", "status", runs.map((r) => r.info.status)),
    row("run", "started", runs.map((r) => fmtTime(r.info.start_time))),
    row("run", "duration", runs.map((r) => fmtDuration(r.info.start_time, r.info.end_time))),
    row("run", "commit", runs.map((r) => (r.tags[TAG.commit] || "").slice(0, 12))),
    row("run", "entry point", runs.map((r) => r.tags[TAG.entry])),
    paramKeys.map((k) => row("param", k, runs.map((r) => r.params[k]))),
    metricKeys.map((k) => row("metric", k, runs.map((r) => r.metrics[k]), true)));
  table.append(h("thead", {}, h("tr", {}, h("th", {}, ""), runs.map((r, i) => h("th", {},
    h("svg", { viewBox: "0 0 10 10", width: 10, height: 10, class: "swatch" }, h("rect", { width: 10, height: 10, fill: COLORS[i % COLORS.length] })), " ", h("a", { href: `#/runs/${r.info.run_id}` }, runName(r)))))), body);
  onlyDiff.addEventListener("change", () => body.querySelectorAll("tr[data-differs='0']").forEach((tr) => tr.classList.toggle("hidden", onlyDiff.checked)));
  page.append(h("div", { class: "card" }, h("div", { class: "toolbar" }, h("label", {}, onlyDiff, " only differences"),
    h("span", { class: "muted" }, "Rows whose values differ are highlighted.")), h("div", { class: "table-wrap" }, table)));

  if (metricKeys.length) {
    const chartCard = h("div", { class: "card", id: "chart-card" }, h("h2", {}, "Metric history"));
    page.append(chartCard);
    metricChart(chartCard, runs, metricKeys);
    const relCard = h("div", { class: "card", id: "relation-card" }, h("h2", {}, "Parameters against a metric"));
    page.append(relCard);
    relationView(relCard, runs, paramKeys, metricKeys);
  }
}

function relationView(card, runs, paramKeys, metricKeys) {
  const kind = h("select", { "aria-label": "View", id: "relation-kind" }, [["parallel", "parallel coordinates"], ["scatter", "scatter"]].map(([v, l]) => h("option", { value: v }, l)));
  const metric = h("select", { "aria-label": "Metric", id: "relation-metric" }, metricKeys.map((k) => h("option", { value: k }, k)));
  const param = h("select", { "aria-label": "Parameter", id: "relation-param" }, paramKeys.map((k) => h("option", { value: k }, k)));
  const target = h("div", { class: "chart", id: "relation" });
  card.append(h("div", { class: "toolbar" }, kind, "metric:", metric, h("span", { id: "relation-param-label" }, "parameter:"), param), target);
  const draw = () => {
    param.classList.toggle("hidden", kind.value !== "scatter");
    document.getElementById("relation-param-label")?.classList.toggle("hidden", kind.value !== "scatter");
    target.replaceChildren(kind.value === "scatter" ? scatter(runs, param.value, metric.value) : parallel(runs, paramKeys, metric.value));
  };
  [kind, metric, param].forEach((el) => el.addEventListener("change", draw));
  draw();
}

/** An axis over the runs' values of one column: numeric if they all parse, else categorical. */
function axisFor(values) {
  const present = values.filter((v) => v !== undefined && v !== "");
  const numbers = present.map(Number);
  if (present.length && numbers.every(Number.isFinite)) {
    let lo = Math.min(...numbers), hi = Math.max(...numbers);
    if (lo === hi) { lo -= 1; hi += 1; }
    return { pos: (v) => (v === undefined || v === "" ? null : (Number(v) - lo) / (hi - lo)), labels: ticks(lo, hi, 4).map((t) => [(t - lo) / (hi - lo), fmtNumber(t)]) };
  }
  const categories = [...new Set(present.map(String))].sort();
  const at = (c) => (categories.length === 1 ? 0.5 : categories.indexOf(c) / (categories.length - 1));
  return { pos: (v) => (v === undefined || v === "" ? null : at(String(v))), labels: categories.map((c) => [at(c), c]) };
}

function parallel(runs, paramKeys, metricKey) {
  const columns = [...paramKeys.map((k) => ({ label: k, get: (r) => r.params[k] })), { label: metricKey, get: (r) => r.metrics[metricKey] }];
  if (columns.length < 2) return h("p", { class: "muted" }, "These runs have no parameters to relate to the metric.");
  const axes = columns.map((c) => ({ ...c, axis: axisFor(runs.map(c.get)) }));
  const left = 60, right = 120, top = 24, bottom = 30;
  const x = (i) => left + (i * (W - left - right)) / (axes.length - 1);
  const y = (p) => top + (1 - p) * (H - top - bottom);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `parallel coordinates of parameters and ${metricKey}` });
  const axisGroup = h("g", { class: "axis" });
  axes.forEach((a, i) => {
    axisGroup.append(h("line", { x1: x(i), x2: x(i), y1: top, y2: H - bottom }));
    axisGroup.append(h("text", { class: "label", x: x(i), y: H - 10, "text-anchor": "middle" }, a.label.length > 18 ? a.label.slice(0, 17) + "…" : a.label));
    a.axis.labels.slice(0, 8).forEach(([p, text]) => axisGroup.append(h("text", { x: x(i) + 4, y: y(p) + 4 }, String(text).slice(0, 16))));
  });
  svg.append(axisGroup);
  const lines = h("g", { class: "series" });
  runs.forEach((run, r) => {
    const pts = axes.map((a, i) => [x(i), a.axis.pos(a.get(run))]).filter(([, p]) => p !== null);
    if (pts.length < 2) return;
    lines.append(h("polyline", { points: pts.map(([px, p]) => `${px.toFixed(1)},${y(p).toFixed(1)}`).join(" "), fill: "none", stroke: COLORS[r % COLORS.length], "stroke-width": 2, "data-series": runName(run) },
      h("title", {}, runName(run))));
  });
  svg.append(lines);
  return svg;
}

function scatter(runs, paramKey, metricKey) {
  if (!paramKey) return h("p", { class: "muted" }, "These runs have no parameters.");
  const xa = axisFor(runs.map((r) => r.params[paramKey]));
  const ya = axisFor(runs.map((r) => r.metrics[metricKey]));
  const sx = (p) => M.left + p * (W - M.left - M.right - 100);
  const sy = (p) => H - M.bottom - p * (H - M.top - M.bottom);
  const svg = h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${metricKey} against ${paramKey}` });
  const axis = h("g", { class: "axis" });
  axis.append(h("line", { x1: M.left, x2: W - M.right - 100, y1: H - M.bottom, y2: H - M.bottom }), h("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom }));
  xa.labels.slice(0, 10).forEach(([p, t]) => axis.append(h("text", { x: sx(p), y: H - M.bottom + 16, "text-anchor": "middle" }, String(t).slice(0, 14))));
  ya.labels.slice(0, 10).forEach(([p, t]) => axis.append(h("text", { x: M.left - 6, y: sy(p) + 4, "text-anchor": "end" }, String(t).slice(0, 10))));
  axis.append(h("text", { class: "label", x: (W + M.left - 100) / 2, y: H - 8, "text-anchor": "middle" }, `param: ${paramKey}`));
  axis.append(h("text", { class: "label", x: 14, y: (H - M.bottom) / 2, transform: `rotate(-90 14 ${(H - M.bottom) / 2})`, "text-anchor": "middle" }, metricKey));
  svg.append(axis);
  const dots = h("g", { class: "series" });
  runs.forEach((run, r) => {
    const px = xa.pos(run.params[paramKey]);
    const py = ya.pos(run.metrics[metricKey]);
    if (px === null || py === null) return;
    dots.append(h("circle", { cx: sx(px), cy: sy(py), r: 5, fill: COLORS[r % COLORS.length], "data-series": runName(run) },
      h("title", {}, `${runName(run)}: ${paramKey}=${run.params[paramKey]}, ${metricKey}=${fmtNumber(run.metrics[metricKey])}`)));
    dots.append(h("text", { x: sx(px) + 8, y: sy(py) + 4, class: "label" }, runName(run).slice(0, 18)));
  });
  svg.append(dots);
  return svg;
}
