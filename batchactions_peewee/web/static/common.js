"use strict";
// Shared by the pages: the API, elements built with textContent only (no HTML parsing,
// so no value from the database is ever parsed as HTML), and how numbers and times read.

const ROOT = document.body.dataset.root;

async function api(path, options) {
  const response = await fetch(ROOT + "api/" + path, Object.assign({ credentials: "same-origin" }, options));
  if (response.status === 401) {
    window.location.href = ROOT + "login";
    throw new Error("sign in first");
  }
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : "HTTP " + response.status);
  }
  return body;
}

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child === null || child === undefined ? "" : String(child)));
  }
  return node;
}

function setText(id, value) {
  document.getElementById(id).textContent = value === null || value === undefined ? "-" : String(value);
}

function showError(error) {
  const box = document.getElementById("error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

function number(value) {
  return value === null || value === undefined ? "-" : Number(value).toLocaleString("en-US");
}

function duration(ms) {
  if (ms === null || ms === undefined) return "-";
  const seconds = ms / 1000;
  if (seconds < 60) return seconds.toFixed(1) + " s";
  const whole = Math.floor(seconds);
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
}

function when(ms) {
  if (ms === null || ms === undefined) return "-";
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + " " +
    two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
}

function rate(value) {
  return value === null || value === undefined ? "-" : number(Math.round(value)) + "/s";
}

function progressBar(percentage, status) {
  const bar = el("div", { class: "bar", "data-status": status });
  bar.style.width = Math.max(0, Math.min(100, percentage)) + "%";
  return el("div", { class: "progress", title: percentage + "%" }, bar);
}

function stamp() {
  setText("updated", "updated " + new Date().toLocaleTimeString());
}

const RUNNING = new Set(["CREATED", "PROCESSING", "PAUSED"]);
