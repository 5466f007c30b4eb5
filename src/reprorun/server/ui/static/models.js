/* reprorun web UI: the model registry's pages (#/models, #/models/<name>) and the registered
 * versions on a run page. Loaded after app.js, whose helpers (h, api, go, fmtTime, commitUrl,
 * artifactLink, errorBox...) it uses; every value is put in the page as text.
 */
"use strict";

function aliasChips(aliases) {
  // aliases: {alias: version} for a model, [alias, ...] for a version
  const entries = Array.isArray(aliases) ? aliases.map((a) => [a, null]) : Object.entries(aliases || {});
  return entries.map(([alias, version]) => h("span", { class: "badge alias", "data-alias": alias },
    "@" + alias + (version ? ` → v${version}` : "")));
}

function modelLink(name, version) {
  const target = `#/models/${encodeURIComponent(name)}` + (version ? `?version=${encodeURIComponent(version)}` : "");
  return h("a", { href: target, class: "model-link" }, version ? `${name} v${version}` : name);
}

async function modelsPage(page, name, query) {
  if (name) return modelPage(page, name, query);
  setTitle("Models");
  const filter = query.get("filter") || "";
  const { models } = await api("/ui-api/registered-models", { query: { filter: filter || undefined } });
  const input = h("input", { type: "text", id: "model-filter", placeholder: "Model name contains…", "aria-label": "Filter models by name", value: filter });
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") go("/models", { filter: input.value.trim() }); });
  const rows = models.map((m) => h("tr", { "data-model": m.name },
    h("td", {}, modelLink(m.name)),
    h("td", { class: "num latest" }, m.latest_version ? modelLink(m.name, m.latest_version) : ""),
    h("td", { class: "aliases" }, aliasChips(m.aliases)),
    h("td", { class: "muted" }, m.description),
    h("td", {}, fmtTime(m.updated))));
  page.append(
    h("h1", {}, "Models"),
    h("div", { class: "toolbar" }, input, h("button", { onclick: () => go("/models", { filter: input.value.trim() }) }, "Filter")),
    h("div", { class: "table-wrap" }, h("table", { id: "models-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Latest version"), h("th", {}, "Aliases"), h("th", {}, "Description"), h("th", {}, "Updated"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" },
        filter ? "No model name contains that." : "No registered models yet: reprorun models register RUN_ID/PATH --name NAME, or mlflow.register_model."))))));
}

function versionRunCells(v) {
  if (!v.run_id) return [h("td", { class: "muted" }, v.model_id ? `logged model ${v.model_id}` : ""), h("td", {}, ""), h("td", {}, "")];
  if (!v.run) return [h("td", { class: "mono muted" }, `${v.run_id} (deleted)`), h("td", {}, ""), h("td", {}, "")];
  const r = v.run;
  const url = commitUrl(r.repo, r.commit);
  const label = r.commit ? r.commit.slice(0, 8) + (r.dirty === "true" ? " (dirty)" : "") : "";
  const commit = !r.commit ? h("span", { class: "muted" }, "not a git checkout")
    : url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono commit", title: r.repo }, label)
      : h("span", { class: "mono commit", title: r.repo }, label);
  const lock = r.lock ? [h("span", { class: "muted" }, `${r.env} `), artifactLink(v.run_id, r.lock, "lock")] : h("span", { class: "muted" }, r.env || "");
  return [
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(v.run_id)}`, class: "run-link" }, r.name || v.run_id.slice(0, 8)), " ", h("span", { class: "muted" }, r.status)),
    h("td", {}, commit),
    h("td", { class: "lock" }, lock),
  ];
}

async function modelPage(page, name, query) {
  setTitle(name);
  const { model, versions } = await api(`/ui-api/registered-models/${encodeURIComponent(name)}`);
  const chosen = query.get("version");
  const rows = versions.map((v) => h("tr", { "data-version": v.version, class: v.version === chosen ? "selected" : null },
    h("td", { class: "num" }, "v" + v.version),
    h("td", { class: "aliases" }, aliasChips(v.aliases)),
    h("td", {}, v.stage === "None" ? "" : v.stage),
    ...versionRunCells(v),
    h("td", {}, fmtTime(v.created)),
    h("td", { class: "mono muted source" }, v.source)));
  const load = versions.length ? `reprorun.load_model("models:/${model.name}/${versions[0].version}")` : "";
  page.append(
    h("div", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " / ", model.name),
    h("h1", {}, h("span", { id: "model-name" }, model.name), " ", aliasChips(model.aliases)),
    model.description ? h("p", { id: "model-description" }, model.description) : null,
    load ? h("p", {}, "Load the latest with ", h("code", { id: "model-load" }, load), ", or serve it with ",
      h("code", {}, `reprorun models serve -m models:/${model.name}/${versions[0].version}`)) : null,
    h("div", { class: "table-wrap" }, h("table", { id: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Aliases", "Stage", "Run", "Commit", "Environment", "Registered", "Source"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No versions."))))));
}

/** On a run page: the registered versions made from this run's models. */
async function showRegisteredVersions(card, runId) {
  try {
    const { versions } = await api(`/ui-api/runs/${encodeURIComponent(runId)}/model-versions`);
    if (!versions.length) return;
    card.append(h("div", { id: "registered-versions" }, h("h3", {}, "Registered as"),
      h("ul", {}, versions.map((v) => h("li", { "data-model": v.name, "data-version": v.version },
        modelLink(v.name, v.version), " ", aliasChips(v.aliases), " ", h("span", { class: "mono muted" }, v.source))))));
  } catch (err) { card.append(errorBox(err)); }
}
