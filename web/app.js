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
const state = {
  projects: new Map(), // project_id -> the project as /v1/projects/<id> describes it
  busy: false,
  last: null, // the last suggestions: {projectId, text, scores: Map uri -> score}
  approved: new Map(), // uri -> {uri, label, origin: "suggested" | "added"}
  rejected: new Set(), // uris
  vocabId: null, // the vocabulary the approved subjects come from
  searches: 0, // counts the concept searches: a slow answer never replaces a newer one
  searchTimer: null,
  teaching: false,
  taught: null, // what was taught last (teachSignature), so it is not sent twice
};
const concepts = new Map(); // "vocab|language|uri" -> promise of the concept lookup

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
  $("report-row").hidden = true;
  if (!project) return;
  const backend = project.backend.backend_id;
  const parts = [
    project.project_id,
    project.kind && project.kind !== backend ? `${backend} (${project.kind})` : backend,
    `language ${project.language}`,
    `vocabulary ${project.vocab ? project.vocab.vocab_id : "?"}`,
  ];
  if (project.model && project.model.documents) {
    parts.push(`model from ${project.model.documents.toLocaleString()} documents`);
  }
  meta.append(el("span", null, parts.join(" · ") + " "));
  if (project.status !== "ready") {
    const text = project.status === "not_trained" ? "not trained" : "unavailable";
    const pill = el("span", "pill warn", text);
    if (project.error) pill.title = project.error;
    meta.append(pill);
  }
  // the detail names the last report of `indexer eval --report`, if any
  $("report-row").hidden = !project.evaluation_report;
  if (project.evaluation_report) {
    $("report-link").href = `${API}/${project.evaluation_report}`;
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
    projectChanged();
  } catch (err) {
    showError(err);
  }
}

async function loadProjectDetail(projectId) {
  // the detail adds the model (documents learned) to what the list says
  try {
    const detail = await api(`projects/${encodeURIComponent(projectId)}`);
    state.projects.set(projectId, detail);
    if (selectedProject() === detail) {
      updateProjectMeta();
      updateTeach();
    }
  } catch (err) {
    // the listed fields still work; the detail only adds the model's numbers
  }
}

function projectChanged() {
  const project = selectedProject();
  updateProjectMeta();
  const vocabId = project && project.vocab ? project.vocab.vocab_id : null;
  if (vocabId !== state.vocabId) {
    // subjects of another vocabulary mean nothing to this project
    if (state.vocabId !== null) clearReview();
    state.vocabId = vocabId;
  }
  $("concept-query").disabled = $("search").disabled = !vocabId;
  clearConcepts();
  if ($("concept-query").value.trim()) searchConcepts(); // in this project's language
  setTeachResult(null);
  renderReview();
  if (project) loadProjectDetail(project.project_id);
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

function renderResults(data, millis, previous) {
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
    const change = scoreChange(item, previous);
    if (change) score.append(change);
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
    row.append(score, reviewButtons(item));
    list.append(row);
    // set after insertion so the bar animates from zero
    requestAnimationFrame(() => {
      fill.style.width = `${Math.max(2, Math.round(item.score * 100))}%`;
    });
  });
  renderReview();
}

function scoreChange(item, previous) {
  // against the last suggestions for the same text and project: what teaching did
  if (!previous) return null;
  if (!previous.has(item.uri)) return el("span", "change up", "new");
  const delta = item.score - previous.get(item.uri);
  if (Math.abs(delta) < 0.0005) return null;
  const change = el(
    "span",
    delta > 0 ? "change up" : "change down",
    `${delta > 0 ? "+" : "−"}${Math.abs(delta).toFixed(3)}`,
  );
  change.title = "Change since the last suggestions for this text";
  return change;
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

  const last = state.last;
  const previous =
    last && last.projectId === project.project_id && last.text === text
      ? last.scores
      : null;
  setBusy(true);
  const started = performance.now();
  try {
    const data = await api(`projects/${encodeURIComponent(project.project_id)}/suggest`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    setBusy(false);
    state.last = {
      projectId: project.project_id,
      text,
      scores: new Map(data.results.map((item) => [item.uri, item.score])),
    };
    renderResults(data, performance.now() - started, previous);
  } catch (err) {
    setBusy(false);
    showError(err);
  }
}

// -- reviewing: accept, reject, add from the vocabulary -------------------------

function reviewOf(uri) {
  if (state.approved.has(uri)) return "accepted";
  return state.rejected.has(uri) ? "rejected" : "";
}

function reviewButtons(item) {
  const group = el("div", "review");
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Review ${item.label}`);
  for (const [decision, text] of [
    ["accepted", "Accept"],
    ["rejected", "Reject"],
  ]) {
    const button = el("button", `review-button ${decision}`);
    button.type = "button";
    button.dataset.decision = decision;
    button.dataset.uri = item.uri;
    button.dataset.label = item.label;
    button.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-label", `${text} ${item.label}`);
    button.append(el("span", "icon", decision === "accepted" ? "✓" : "✕"), text);
    button.querySelector(".icon").setAttribute("aria-hidden", "true");
    group.append(button);
  }
  return group;
}

function decide(uri, label, decision) {
  // pressing the pressed button again undoes the decision
  const undo = reviewOf(uri) === decision;
  state.approved.delete(uri);
  state.rejected.delete(uri);
  if (!undo && decision === "accepted") {
    state.approved.set(uri, { uri, label, origin: "suggested" });
  } else if (!undo) {
    state.rejected.add(uri);
  }
  renderReview();
}

function toggleAdded(uri, label) {
  if (state.approved.has(uri)) {
    state.approved.delete(uri);
  } else {
    state.rejected.delete(uri);
    state.approved.set(uri, { uri, label, origin: "added" });
  }
  renderReview();
}

function unapprove(uri) {
  const items = [...$("approved").querySelectorAll("button[data-uri]")];
  const index = items.findIndex((b) => b.dataset.uri === uri);
  state.approved.delete(uri);
  renderReview();
  // keep the keyboard where it was: on the next remove button, or the list's end
  const next = $("approved").querySelectorAll("button[data-uri]");
  (next[Math.min(index, next.length - 1)] || $("concept-query")).focus();
}

function clearReview() {
  state.approved.clear();
  state.rejected.clear();
  state.taught = null;
  setTeachResult(null);
  $("export-status").textContent = "";
}

function renderReview() {
  for (const button of $("results").querySelectorAll("button[data-decision]")) {
    const review = reviewOf(button.dataset.uri);
    button.setAttribute("aria-pressed", String(review === button.dataset.decision));
    button.closest("li").dataset.review = review;
  }
  for (const button of $("concepts").querySelectorAll("button[data-uri]")) {
    const added = state.approved.has(button.dataset.uri);
    button.setAttribute("aria-pressed", String(added));
    button.firstChild.textContent = added ? "✓" : "+";
    button.lastChild.textContent = added ? "Added" : "Add";
  }
  renderApproved();
  updateTeach();
}

function renderApproved() {
  const subjects = [...state.approved.values()];
  const list = $("approved");
  list.replaceChildren(
    ...subjects.map((subject) => {
      const item = el("li", "approved-item");
      item.dataset.uri = subject.uri;
      const text = el("div", "subject");
      const head = el("div", "head");
      head.append(
        el("span", "label", subject.label),
        el("span", `pill ${subject.origin}`, subject.origin),
      );
      text.append(head, el("div", "uri", subject.uri));
      const remove = el("button", "link-button remove", "Remove");
      remove.type = "button";
      remove.dataset.uri = subject.uri;
      remove.setAttribute("aria-label", `Remove ${subject.label}`);
      item.append(text, remove);
      return item;
    }),
  );
  const rejected = state.rejected.size;
  $("approved-summary").textContent =
    `${subjects.length} approved` + (rejected ? ` · ${rejected} rejected` : "");
  $("approved-empty").hidden = subjects.length > 0;
  for (const id of ["copy-tsv", "download-tsv", "download-json"]) {
    $(id).disabled = !subjects.length;
  }
  $("clear-review").disabled = !subjects.length && !rejected;
  $("export-preview").textContent = subjectsTsv() || "(nothing approved yet)";
}

function lookupConcept(vocabId, language, uri) {
  const key = `${vocabId}|${language}|${uri}`;
  if (!concepts.has(key)) {
    const query = new URLSearchParams({ uri, language });
    const concept = api(`vocabs/${encodeURIComponent(vocabId)}/concepts?${query}`).then(
      (data) => data.concepts[0],
    );
    concept.catch(() => concepts.delete(key)); // a failed lookup is tried again
    concepts.set(key, concept);
  }
  return concepts.get(key);
}

async function ancestors(vocabId, language, concept) {
  // the labels from the top of the hierarchy down to the concept's first broader
  const path = [];
  const seen = new Set([concept.uri]);
  let parent = concept.broader[0];
  while (parent && !seen.has(parent.uri) && path.length < 12) {
    path.unshift(parent.label);
    seen.add(parent.uri);
    try {
      parent = (await lookupConcept(vocabId, language, parent.uri)).broader[0];
    } catch {
      break; // the path so far still tells the concepts apart
    }
  }
  return path;
}

function clearConcepts() {
  state.searches += 1;
  clearTimeout(state.searchTimer);
  $("concepts").replaceChildren();
  $("search-meta").textContent = "";
  $("search-meta").classList.remove("error-text");
}

async function searchConcepts() {
  clearTimeout(state.searchTimer);
  const project = selectedProject();
  const label = $("concept-query").value.trim();
  if (!project || !project.vocab || !label) {
    clearConcepts();
    return;
  }
  const search = ++state.searches;
  const vocabId = project.vocab.vocab_id;
  const meta = $("search-meta");
  meta.classList.remove("error-text");
  meta.textContent = "Searching…";
  try {
    const query = new URLSearchParams({
      label,
      language: project.vocab_language || project.language,
      limit: "10",
    });
    const data = await api(`vocabs/${encodeURIComponent(vocabId)}/concepts?${query}`);
    const paths = await Promise.all(
      data.concepts.map((c) => ancestors(vocabId, data.language, c)),
    );
    if (search !== state.searches) return;
    renderConcepts(data.concepts, paths);
    meta.textContent = data.concepts.length
      ? `${data.concepts.length} concept${data.concepts.length === 1 ? "" : "s"} ` +
        `in ${vocabId}, exact matches first`
      : `No label in ${vocabId} contains “${label}”.`;
  } catch (err) {
    if (search !== state.searches) return;
    $("concepts").replaceChildren();
    meta.classList.add("error-text");
    meta.textContent = `${err.title}: ${err.detail}`;
  }
}

function renderConcepts(found, paths) {
  $("concepts").replaceChildren(
    ...found.map((concept, i) => {
      const item = el("li", "concept");
      item.dataset.uri = concept.uri;
      const text = el("div", "subject");
      const path = el("div", "path");
      for (const label of paths[i]) {
        const separator = el("span", "separator", "›");
        separator.setAttribute("aria-hidden", "true");
        path.append(el("span", "ancestor", label), " ", separator, " ");
      }
      path.append(el("span", "label", concept.label));
      if (concept.notation) {
        // a no-break space keeps the notation with the label's last word
        path.append("\u00a0", el("span", "notation", concept.notation));
      }
      if (concept.deprecated) path.append(" ", el("span", "pill warn", "deprecated"));
      text.append(path);
      if (concept.broader.length > 1) {
        const others = concept.broader.slice(1).map((b) => b.label);
        text.append(el("div", "meta", `also under ${others.join(", ")}`));
      }
      if (concept.note) text.append(el("div", "note", concept.note));
      text.append(el("div", "uri", concept.uri));
      const add = el("button", "secondary add");
      add.type = "button";
      add.dataset.uri = concept.uri;
      add.dataset.label = concept.label;
      add.setAttribute("aria-label", `Add ${[...paths[i], concept.label].join(" › ")}`);
      add.append(el("span", "icon", "+"), el("span", null, "Add"));
      add.firstChild.setAttribute("aria-hidden", "true");
      item.append(text, add);
      return item;
    }),
  );
  renderReview();
}

// -- exporting ------------------------------------------------------------------

// A cell a spreadsheet would run as a formula: one starting with = + - @, a tab
// or a carriage return (OWASP's CSV injection advice), or their full-width forms.
const FORMULA_START = /^[=+\-@\t\r\uff1d\uff0b\uff0d\uff20]/;

function tsvLabel(label) {
  // one line, one field; a leading ' makes a spreadsheet show it as text
  const text = label.replace(/\s+/g, " ").trim();
  return FORMULA_START.test(text) ? `'${text}` : text;
}

function tsvUri(uri) {
  // a URI holds no white space: tabs and line breaks are percent-encoded
  return uri.replace(/[\s\u2028\u2029]/g, encodeURIComponent);
}

function subjectsTsv() {
  // a corpus subject file: `<uri><TAB>label` per line (the JSON export is exact)
  return [...state.approved.values()]
    .map((s) => `<${tsvUri(s.uri)}>\t${tsvLabel(s.label)}\n`)
    .join("");
}

function subjectsJson() {
  const subjects = [...state.approved.values()].map(({ uri, label }) => ({ uri, label }));
  return `${JSON.stringify(subjects, null, 2)}\n`;
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const link = el("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  $("export-status").textContent = `Saved ${name} (${state.approved.size} subjects).`;
}

async function copyTsv() {
  try {
    await navigator.clipboard.writeText(subjectsTsv());
    $("export-status").textContent =
      `Copied ${state.approved.size} subjects as TSV to the clipboard.`;
  } catch (err) {
    $("export-status").textContent =
      "This browser did not allow copying: use Download TSV, or copy from the preview.";
  }
}

// -- teaching the project ----------------------------------------------------------

function teachSignature() {
  const project = selectedProject();
  return JSON.stringify([
    project && project.project_id,
    $("text").value,
    [...state.approved.keys()],
  ]);
}

function teachBlocker() {
  // why the project cannot be taught now, or null
  const project = selectedProject();
  if (!project) return "Choose a project first.";
  if (!project.allow_learn && !$("api-key").value.trim()) {
    return (
      `Project ${project.project_id} does not allow learning from this page ` +
      "(allow_learn is off): type the API key to teach it."
    );
  }
  if (!state.approved.size) return "Approve at least one subject first.";
  if (!$("text").value.trim()) return "Add the document's text first.";
  if (state.taught === teachSignature()) {
    return "Taught. Change the text or the subjects to teach it again.";
  }
  return null;
}

function updateTeach() {
  const blocker = teachBlocker();
  const button = $("teach");
  button.disabled = state.teaching || blocker !== null;
  button.classList.toggle("busy", state.teaching);
  button.querySelector(".button-text").textContent = state.teaching
    ? "Teaching…"
    : "Teach the project";
  const project = selectedProject();
  $("teach-hint").textContent =
    blocker ||
    `Sends the text and its ${state.approved.size} approved subject` +
      `${state.approved.size === 1 ? "" : "s"} to ${project.project_id}, ` +
      "which updates its model: the next suggestions show the effect.";
}

function setTeachResult(content, kind) {
  const box = $("teach-result");
  box.className = kind ? `teach-result ${kind}` : "";
  box.replaceChildren(...(content ? [content].flat() : []));
}

async function teach() {
  if (teachBlocker() || state.teaching) return;
  const project = selectedProject();
  const subjects = [...state.approved.values()].map(({ uri, label }) => ({ uri, label }));
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key; // sent only here: a wrong key fails every call
  const signature = teachSignature();
  state.teaching = true;
  setTeachResult(null);
  updateTeach();
  const id = encodeURIComponent(project.project_id);
  try {
    await api(`projects/${id}/learn`, {
      method: "POST",
      headers,
      body: JSON.stringify([{ text: $("text").value, subjects }]),
    });
    state.taught = signature;
    const again = el("button", "link-button", "Suggest again");
    again.type = "button";
    again.addEventListener("click", () => submit());
    setTeachResult(
      [
        el(
          "span",
          null,
          `The project learned this text with ${subjects.length} ` +
            `subject${subjects.length === 1 ? "" : "s"}. `,
        ),
        again,
        el("span", null, " to see what changed."),
      ],
      "ok",
    );
    loadProjectDetail(project.project_id); // its count of documents learned
  } catch (err) {
    const title = el("strong", null, err.title);
    setTeachResult([title, el("span", null, err.detail)], "alert");
  } finally {
    state.teaching = false;
    updateTeach();
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
      updateTeach();
    })
    .catch((err) => showError(new ApiError("Cannot read the file", String(err), 0)));
}

function init() {
  $("suggest-form").addEventListener("submit", submit);
  $("project").addEventListener("change", () => {
    remember("indexer.project", $("project").value);
    clearError();
    projectChanged();
  });
  $("text").addEventListener("input", () => {
    updateTextMeta();
    updateTeach();
  });
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
    updateTeach();
  });
  $("clear").addEventListener("click", () => {
    $("text").value = "";
    updateTextMeta();
    updateTeach();
    $("text").focus();
  });
  // dropping a file on the text box reads it
  $("text").addEventListener("dragover", (event) => event.preventDefault());
  $("text").addEventListener("drop", (event) => {
    event.preventDefault();
    readFile(event.dataTransfer.files[0]);
  });
  $("results").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-decision]");
    if (button) decide(button.dataset.uri, button.dataset.label, button.dataset.decision);
  });
  $("approved").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-uri]");
    if (button) unapprove(button.dataset.uri);
  });
  $("concepts").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-uri]");
    if (button) toggleAdded(button.dataset.uri, button.dataset.label);
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchConcepts();
  });
  $("concept-query").addEventListener("input", () => {
    // search as the cataloguer types, once the typing pauses
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(searchConcepts, 300);
  });
  $("copy-tsv").addEventListener("click", copyTsv);
  $("download-tsv").addEventListener("click", () =>
    download("subjects.tsv", "text/tab-separated-values", subjectsTsv()),
  );
  $("download-json").addEventListener("click", () =>
    download("subjects.json", "application/json", subjectsJson()),
  );
  $("clear-review").addEventListener("click", () => {
    clearReview();
    renderReview();
  });
  $("api-key").addEventListener("input", updateTeach);
  $("teach").addEventListener("click", teach);
  updateTextMeta();
  loadHealth();
  loadProjects();
}

document.addEventListener("DOMContentLoaded", init);
