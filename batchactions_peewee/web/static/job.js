"use strict";
// A job's page: polls the API every 1.5 s while the job runs (the grid and the chart less
// often when the job is large), and stops once the job has ended.

const marker = "/jobs/";
const JOB_ID = decodeURIComponent(window.location.pathname.slice(window.location.pathname.lastIndexOf(marker) + marker.length));
const JOB = "jobs/" + encodeURIComponent(JOB_ID);
const POLL_MS = 1500;
const FAILED_PAGE = 50;
const STATUS_OF = { P: "PENDING", R: "PROCESSING", C: "COMPLETED", F: "FAILED" };

let config = { allowActions: false, csrfToken: null, leaseTimeoutMs: 300000 };
let report = null;
let grid = "";
let polls = 0;
let afters = [-1];  // the pages of failed records seen: each one's "after" index
let failedSeen = null;

document.title = "batchactions: job " + JOB_ID;
setText("job-id", JOB_ID);
document.getElementById("download-csv").href = ROOT + "api/" + JOB + "/failed?format=csv";
document.getElementById("download-jsonl").href = ROOT + "api/" + JOB + "/failed?format=jsonl";

function showReport(r) {
  report = r;
  const status = document.getElementById("job-status");
  status.textContent = r.status === "CREATED" ? "preparing" : r.status;
  status.dataset.status = r.status;
  const progress = document.getElementById("progress");
  progress.setAttribute("aria-valuenow", r.percentage);
  const bar = document.getElementById("progress-bar");
  bar.style.width = r.percentage + "%";
  bar.dataset.status = r.status;
  const done = r.processedRecords + r.invalidRecords + r.failedRecords;
  const eta = r.estimatedRemainingMs ? ", about " + duration(r.estimatedRemainingMs) + " left" : "";
  setText("progress-text", r.status === "CREATED"
    ? "preparing: " + number(r.writtenRecords) + " records written so far"
    : r.percentage + "%: " + number(done) + " of " + number(r.totalRecords) + " records done" + eta);
  setText("figure-processed", number(r.processedRecords));
  setText("figure-invalid", number(r.invalidRecords));
  setText("figure-failed", number(r.failedRecords));
  setText("figure-pending", number(r.pendingRecords));
  setText("figure-rate", rate(r.recordsPerSecond));
  setText("figure-eta", r.estimatedRemainingMs ? duration(r.estimatedRemainingMs) : "-");
  setText("figure-started", when(r.startedAt));
  setText("figure-elapsed-label", RUNNING.has(r.status) ? "elapsed" : "took");
  setText("figure-elapsed", duration(r.elapsedMs));
  setText("figure-source", r.source || (r.retryOf ? "retry of " + r.retryOf : "-"));
  const counts = Object.entries(r.batches).map(([s, n]) => number(n) + " " + s.toLowerCase());
  setText("batch-counts", counts.length ? "(" + counts.join(", ") + ")" : "(none)");
  showLeases(r.leases);
  showActions(r);
}

function showLeases(leases) {
  const rows = leases.map((lease) => el("tr", { "data-worker-id": lease.workerId, "data-stale": lease.stale },
    el("td", {}, lease.workerId),
    el("td", { class: "num" }, lease.batchIndex),
    el("td", { class: "num" }, duration(lease.heldMs)),
    el("td", {}, lease.stale ? el("span", { class: "stale" }, "stale") : "")));
  document.querySelector("#leases tbody").replaceChildren(...rows);
  document.getElementById("leases-empty").hidden = leases.length > 0;
}

function showGrid(codes) {
  const box = document.getElementById("batch-grid");
  if (codes.length !== grid.length) {
    const cells = document.createDocumentFragment();
    for (let i = 0; i < codes.length; i++) {
      cells.append(el("span", { class: "cell", "data-index": i, "data-status": STATUS_OF[codes[i]] || "UNKNOWN" }));
    }
    box.replaceChildren(cells);
  } else {
    const cells = box.children;
    for (let i = 0; i < codes.length; i++) {
      if (codes[i] !== grid[i]) cells[i].dataset.status = STATUS_OF[codes[i]] || "UNKNOWN";
    }
  }
  grid = codes;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function showThroughput(t) {
  const chart = document.getElementById("throughput-chart");
  const points = t.points || [];
  const top = Math.max(1, ...points.map((p) => p.recordsPerSecond || 0));
  const w = 640, h = 180, pad = 24;
  const x = (i) => pad + (points.length > 1 ? (i * (w - 2 * pad)) / (points.length - 1) : 0);
  const y = (v) => h - pad - ((v || 0) * (h - 2 * pad)) / top;
  const line = points.map((p, i) => x(i).toFixed(1) + "," + y(p.recordsPerSecond).toFixed(1)).join(" ");
  chart.replaceChildren(
    svg("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, class: "axis" }),
    svg("polyline", { points: line, class: "series" }),
    svg("text", { x: pad, y: pad - 8, class: "label" }, number(Math.round(top)) + " records/s"),
    svg("text", { x: pad, y: h - 6, class: "label" }, when(t.startedAt)),
    svg("text", { x: w - pad, y: h - 6, class: "label end" }, points.length ? when(points[points.length - 1].at) : ""));
  setText("throughput-note", t.bucketMs
    ? "per " + duration(t.bucketMs) + ", from the time each finished batch last held its lease"
    : "not started");
}

async function showFailed() {
  try {
    const after = afters[afters.length - 1];
    const page = await api(JOB + "/failed?limit=" + FAILED_PAGE + (after >= 0 ? "&after=" + after : ""));
    const first = (afters.length - 1) * FAILED_PAGE;
    failedNext = page.nextAfter;
    const rows = page.records.map((r) => el("tr", { "data-record-index": r.recordIndex, "data-status": r.status },
      el("td", { class: "num" }, r.recordIndex),
      el("td", {}, r.status),
      el("td", {}, r.error),
      el("td", {}, el("code", {}, JSON.stringify(r.raw)))));
    document.querySelector("#failed-records tbody").replaceChildren(...rows);
    document.getElementById("failed-empty").hidden = rows.length > 0 || first > 0;
    document.getElementById("failed-prev").disabled = afters.length === 1;
    document.getElementById("failed-next").disabled = !page.more;
    setText("failed-page", rows.length
      ? "records " + number(first + 1) + " to " + number(first + rows.length)
      : "");
  } catch (error) {
    showError(error);
  }
}

let failedNext = null;

document.getElementById("failed-prev").addEventListener("click", () => {
  if (afters.length > 1) afters.pop();
  showFailed();
});
document.getElementById("failed-next").addEventListener("click", () => {
  if (failedNext !== null) afters.push(failedNext);
  showFailed();
});

// The tooltip: one batch's details, asked for when the pointer rests on its cell.
const tooltip = document.getElementById("batch-tooltip");
let hovered = null;
let hoverTimer = null;

document.getElementById("batch-grid").addEventListener("mouseover", (event) => {
  const cell = event.target.closest(".cell");
  if (!cell) return;
  hovered = Number(cell.dataset.index);
  clearTimeout(hoverTimer);
  tooltip.replaceChildren(el("div", {}, "batch " + hovered + ": " + cell.dataset.status.toLowerCase()));
  tooltip.style.left = event.pageX + 12 + "px";
  tooltip.style.top = event.pageY + 12 + "px";
  tooltip.hidden = false;
  hoverTimer = setTimeout(() => showBatch(hovered), 150);
});
document.getElementById("batch-grid").addEventListener("mouseleave", () => {
  hovered = null;
  clearTimeout(hoverTimer);
  tooltip.hidden = true;
});

async function showBatch(index) {
  const page = await api(JOB + "/batches?offset=" + index + "&limit=1");
  const b = page.batches[0];
  if (!b || hovered !== index) return;
  const lines = [
    "batch " + b.index + ": " + b.status.toLowerCase(),
    "records " + number(b.recordStartIndex) + " to " + number(b.recordEndIndex) + " (" + number(b.records) + ")",
    "processed " + number(b.processedCount) + ", failed or invalid " + number(b.failedCount),
    "worker " + (b.workerId || "-"),
    "lease age " + (b.heldMs === null ? "-" : duration(b.heldMs) + (b.stale ? " (stale)" : "")),
  ];
  tooltip.replaceChildren(...lines.map((line) => el("div", {}, line)));
}

// Actions: only when the dashboard allows them, each confirmed, sent with the CSRF token.
const QUESTIONS = {
  pause: "Pause this job? Its workers finish the batch in hand, then wait.",
  resume: "Resume this job?",
  abort: "Abort this job for good? Its workers give back their batches and stop.",
  reclaim: "Give batches whose lease is older than the lease timeout back to the other workers?",
  retry: "Make a new job of this job's failed records?",
};

function showActions(r) {
  const box = document.getElementById("actions");
  box.hidden = !config.allowActions;
  if (!config.allowActions) return;
  const can = {
    pause: r.status === "PROCESSING",
    resume: r.status === "PAUSED",
    abort: RUNNING.has(r.status),
    reclaim: r.leases.some((lease) => lease.stale),
    retry: r.failedRecords > 0,
  };
  for (const [action, enabled] of Object.entries(can)) {
    document.getElementById("action-" + action).disabled = !enabled;
  }
}

async function act(action) {
  if (!window.confirm(QUESTIONS[action])) return;
  const result = document.getElementById("action-result");
  try {
    const answer = await api(JOB + "/" + action, { method: "POST", headers: { "X-CSRF-Token": config.csrfToken } });
    if (action === "retry") {
      result.replaceChildren("new job ", el("a", { href: encodeURIComponent(answer.jobId) }, answer.jobId),
        " of " + number(answer.totalRecords) + " records");
    } else if (action === "reclaim") {
      result.textContent = "reclaimed " + answer.reclaimed + " batch(es)";
    } else {
      result.textContent = answer.changed ? "job " + answer.status.toLowerCase() : "job already " + answer.status.toLowerCase();
    }
  } catch (error) {
    result.textContent = String(error.message || error);
  }
  poll();
}

for (const button of document.querySelectorAll("#actions button")) {
  button.addEventListener("click", () => act(button.dataset.action));
}

let timer = null;

async function poll() {
  clearTimeout(timer);
  try {
    const large = grid.length > 5000;
    const wants = [api(JOB)];
    if (!large || polls % 2 === 0) wants.push(api(JOB + "/grid").then((g) => showGrid(g.statuses)));
    if (polls % 4 === 0) wants.push(api(JOB + "/throughput").then(showThroughput));
    const [r] = await Promise.all(wants);
    showReport(r);
    const failed = r.failedRecords + r.invalidRecords;
    if (failed !== failedSeen) {
      failedSeen = failed;
      showFailed();
    }
    showError(null);
    stamp();
    polls += 1;
    if (RUNNING.has(r.status)) timer = setTimeout(poll, POLL_MS);  // an ended job stays still
  } catch (error) {
    showError(error);
    timer = setTimeout(poll, POLL_MS * 2);
  }
}

api("config").then((c) => { config = c; }).catch(showError).finally(poll);
