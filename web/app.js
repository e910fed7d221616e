// The demo page: plain JavaScript that only calls this server's REST API (/v1).
"use strict";

const API = "v1"; // relative, so the page also works behind a path prefix
const EXAMPLE =
  "The Economics of Rooftop Solar Power and Grid Storage\n\n" +
  "Over the past decade, the price of solar panels has fallen so far that rooftop " +
  "photovoltaics are now one of the cheapest ways for a household to generate " +
  "electricity. Once a large share of homes install panels, however, output peaks " +
  "at midday and disappears in the evening. Energy storage is the obvious answer: " +
  "home batteries let a household shift its midday surplus into the evening, and " +
  "smart grids move flexible loads to the hours when renewable energy is abundant. " +
  "Whether these investments pay off depends on energy economics and policy as " +
  "much as on technology, and on how they help with climate change.";
const WHY_LABELS = {
  source: (v) => String(v),
  occurrences: (v) => `${v}× in the text`,
  first_position: (v) =>
    v < 0.01 ? "at the start" : `first at ${Math.round(v * 100)}% of the text`,
  exact: (v) => (v ? "exact label" : "partial match"),
  compound: (v) => (v ? "inside a compound word" : null),
  coverage: (v) => (v < 1 ? `${Math.round(v * 100)}% of the label's words` : null),
};

const $ = (id) => document.getElementById(id);
const state = { projects: new Map(), busy: false };

class ApiError extends Error {
  constructor(title, detail, status) {
    super(detail);
    this.title = title;
    this.detail = detail;
    this.status = status;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(`${API}/${path}`, {
      ...options,
      headers: { Accept: "application/json", ...(options.headers || {}) },
    });
  } catch (err) {
    throw new ApiError("The server cannot be reached", String(err.message || err), 0);
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    throw new ApiError(
      (body && body.title) || response.statusText || "Request failed",
      (body && body.detail) || `The server answered ${response.status}.`,
      response.status,
    );
  }
  return body;
}

function remember(key, value) {
  // localStorage may be unavailable (privacy settings): then nothing is kept
  try {
    if (value === undefined) return localStorage.getItem(key);
    localStorage.setItem(key, value);
  } catch {
    return null;
  }
  return value;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// -- state of the page ------------------------------------------------------

function showError(err) {
  $("error-title").textContent = err.title || "Something went wrong";
  $("error-detail").textContent = err.detail || String(err.message || err);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function setBusy(busy) {
  state.busy = busy;
  const button = $("submit");
  button.disabled = busy;
  button.classList.toggle("busy", busy);
  button.querySelector(".button-text").textContent = busy
    ? "Suggesting…"
    : "Suggest subjects";
  $("loading").hidden = !busy;
  $("results").setAttribute("aria-busy", String(busy));
  if (busy) {
    $("empty").hidden = true;
    $("results").replaceChildren();
    $("summary").textContent = "";
  }
}

function selectedProject() {
  return state.projects.get($("project").value);
}

function updateProjectMeta() {
  const project = selectedProject();
  const meta = $("project-meta");
  meta.replaceChildren();
  if (!project) return;
  const backend = project.backend.backend_id;
  const parts = [
    project.project_id,
    project.kind && project.kind !== backend ? `${backend} (${project.kind})` : backend,
    `language ${project.language}`,
    `vocabulary ${project.vocab ? project.vocab.vocab_id : "?"}`,
  ];
  meta.append(el("span", null, parts.join(" · ") + " "));
  if (project.status !== "ready") {
    const text = project.status === "not_trained" ? "not trained" : "unavailable";
    const pill = el("span", "pill warn", text);
    if (project.error) pill.title = project.error;
    meta.append(pill);
  }
  $("limit").value = project.limit;
  const explain = $("explain");
  explain.disabled = !project.explain;
  explain.closest(".toggle").classList.toggle("disabled", !project.explain);
  explain.closest(".toggle").title = project.explain
    ? "Show why each subject was suggested"
    : "This backend gives no explanations";
}

function updateTextMeta() {
  const text = $("text").value;
  const bytes = new TextEncoder().encode(text).length;
  const words = text.trim() ? text.trim().split(/\s+/).length : 0;
  $("text-meta").textContent =
    `${text.length.toLocaleString()} characters · ${words.toLocaleString()} words` +
    (bytes > 1024 ? ` · ${(bytes / 1024).toFixed(1)} kB` : "");
}

// -- loading data -------------------------------------------------------------

async function loadHealth() {
  const health = $("health");
  try {
    const info = await api("health");
    health.className = "health up";
    $("health-text").textContent = "Server up";
    $("version").textContent = `indexer ${info.version}`;
  } catch (err) {
    health.className = "health down";
    $("health-text").textContent = "Server unreachable";
  }
}

async function loadProjects() {
  const select = $("project");
  try {
    const { projects } = await api("projects");
    state.projects = new Map(projects.map((p) => [p.project_id, p]));
    select.replaceChildren(
      ...projects.map((p) => {
        const option = el("option", null, p.name);
        option.value = p.project_id;
        return option;
      }),
    );
    if (!projects.length) {
      select.append(el("option", null, "No public projects"));
      throw new ApiError("No projects", "This server has no public projects.", 0);
    }
    const remembered = remember("indexer.project");
    if (remembered && state.projects.has(remembered)) select.value = remembered;
    select.disabled = false;
    updateProjectMeta();
  } catch (err) {
    showError(err);
  }
}

// -- suggesting -----------------------------------------------------------------

function explanationChips(explanation) {
  const chips = [];
  for (const [key, value] of Object.entries(explanation)) {
    if (value === null || value === undefined) continue;
    const format = WHY_LABELS[key];
    const text = format ? format(value) : `${key.replace(/_/g, " ")}: ${value}`;
    if (text) chips.push(el("span", key === "source" ? "chip source" : "chip", text));
  }
  return chips;
}

function safeLink(uri) {
  try {
    const url = new URL(uri);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function renderResults(data, millis) {
  const list = $("results");
  list.replaceChildren();
  const items = data.results;
  $("summary").textContent =
    `${items.length} subject${items.length === 1 ? "" : "s"} · ` +
    `${Math.round(millis)} ms · labels in ${data.language}`;
  if (!items.length) {
    const project = selectedProject();
    $("empty").replaceChildren(
      el(
        "p",
        null,
        "No subject scored above the threshold" +
          (project ? ` (${project.threshold})` : "") +
          ". Try a longer text or another project.",
      ),
    );
    $("empty").hidden = false;
    return;
  }
  $("empty").hidden = true;
  items.forEach((item, i) => {
    const row = el("li", "result");
    row.dataset.uri = item.uri;
    row.append(el("span", "rank", String(i + 1)));

    const subject = el("div", "subject");
    const head = el("div", "head");
    const href = safeLink(item.uri);
    const label = el(href ? "a" : "span", "label", item.label);
    if (href) {
      label.href = href;
      label.target = "_blank";
      label.rel = "noopener noreferrer";
    }
    head.append(label);
    if (item.notation) head.append(el("span", "notation", item.notation));
    subject.append(head, el("div", "uri", item.uri));
    if (item.explanation) {
      const why = el("div", "why");
      why.append(...explanationChips(item.explanation));
      subject.append(why);
    }
    row.append(subject);

    const score = el("div", "score");
    score.append(el("span", "value", item.score.toFixed(3)));
    const bar = el("div", "bar");
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "1");
    bar.setAttribute("aria-valuenow", String(item.score));
    bar.setAttribute("aria-label", `score of ${item.label}`);
    const fill = el("span");
    bar.append(fill);
    score.append(bar);
    row.append(score);
    list.append(row);
    // set after insertion so the bar animates from zero
    requestAnimationFrame(() => {
      fill.style.width = `${Math.max(2, Math.round(item.score * 100))}%`;
    });
  });
}

async function submit(event) {
  if (event) event.preventDefault();
  if (state.busy) return;
  clearError();
  const project = selectedProject();
  const text = $("text").value;
  if (!project) {
    showError(new ApiError("No project", "Choose a project first.", 0));
    return;
  }
  if (!text.trim()) {
    showError(new ApiError("No text", "Paste or upload a text to index.", 0));
    $("text").focus();
    return;
  }
  const body = { text };
  const limit = $("limit").value.trim();
  if (limit) body.limit = Number(limit);
  if (!$("explain").disabled && $("explain").checked) body.explain = true;

  setBusy(true);
  const started = performance.now();
  try {
    const data = await api(`projects/${encodeURIComponent(project.project_id)}/suggest`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    setBusy(false);
    renderResults(data, performance.now() - started);
  } catch (err) {
    setBusy(false);
    showError(err);
  }
}

function readFile(file) {
  if (!file) return;
  clearError();
  file
    .text()
    .then((text) => {
      $("text").value = text;
      updateTextMeta();
    })
    .catch((err) => showError(new ApiError("Cannot read the file", String(err), 0)));
}

function init() {
  $("suggest-form").addEventListener("submit", submit);
  $("project").addEventListener("change", () => {
    remember("indexer.project", $("project").value);
    clearError();
    updateProjectMeta();
  });
  $("text").addEventListener("input", updateTextMeta);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) submit(event);
  });
  $("upload").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    readFile($("file").files[0]);
    $("file").value = "";
  });
  $("example").addEventListener("click", () => {
    $("text").value = EXAMPLE;
    updateTextMeta();
  });
  $("clear").addEventListener("click", () => {
    $("text").value = "";
    updateTextMeta();
    $("text").focus();
  });
  // dropping a file on the text box reads it
  $("text").addEventListener("dragover", (event) => event.preventDefault());
  $("text").addEventListener("drop", (event) => {
    event.preventDefault();
    readFile(event.dataTransfer.files[0]);
  });
  updateTextMeta();
  loadHealth();
  loadProjects();
}

document.addEventListener("DOMContentLoaded", init);
