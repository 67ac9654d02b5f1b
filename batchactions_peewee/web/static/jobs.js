"use strict";
// The jobs page: recent jobs with their progress, refreshed every 2 s, filtered by status.

const filter = document.getElementById("status-filter");
filter.value = new URLSearchParams(window.location.search).get("status") || "";
filter.addEventListener("change", () => {
  const url = new URL(window.location.href);
  if (filter.value) url.searchParams.set("status", filter.value);
  else url.searchParams.delete("status");
  window.history.replaceState(null, "", url);
  refresh();
});

function row(job) {
  const preparing = job.status === "CREATED";
  const link = el("a", { href: "jobs/" + encodeURIComponent(job.jobId) }, job.jobId);
  return el("tr", { "data-job-id": job.jobId, "data-status": job.status },
    el("td", {}, link, job.source ? el("div", { class: "muted" }, job.source) : ""),
    el("td", {}, el("span", { class: "status", "data-status": job.status }, preparing ? "preparing" : job.status)),
    el("td", {}, progressBar(job.percentage, job.status), el("span", { class: "muted" }, job.percentage + "%")),
    el("td", { class: "num" }, number(preparing ? job.writtenRecords : job.totalRecords)),
    el("td", { class: "num" }, number(job.processedRecords)),
    el("td", { class: "num" }, number(job.invalidRecords)),
    el("td", { class: "num" }, number(job.failedRecords)),
    el("td", { class: "num" }, rate(job.recordsPerSecond)),
    el("td", {}, when(job.startedAt)),
    el("td", { class: "num" }, duration(job.elapsedMs)));
}

let timer = null;

async function refresh() {
  clearTimeout(timer);
  try {
    const query = filter.value ? "?status=" + encodeURIComponent(filter.value) : "";
    const jobs = await api("jobs" + query);
    document.querySelector("#jobs tbody").replaceChildren(...jobs.map(row));
    document.getElementById("jobs-empty").hidden = jobs.length > 0;
    showError(null);
    stamp();
  } catch (error) {
    showError(error);
  }
  timer = setTimeout(refresh, 2000);
}

refresh();
