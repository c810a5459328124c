// The review page. Every text from the server goes into the page with
// textContent, never as markup: records are model output.
"use strict";

const $ = (id) => document.getElementById(id);
let reviewer = localStorage.getItem("seedling-reviewer") || "";
let current = null; // the item shown
let reasons = [];
let pending = null; // a decision sent but not yet answered: resent as is

// The URL's fragment may carry the token (`#token=...`, as `review serve`
// prints it) and a reviewer's name (`#reviewer=ana`); neither reaches a
// server log, and both leave the address bar at once.
function fromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const given = fragment.get("token");
  if (given) sessionStorage.setItem("seedling-token", given);
  const name = fragment.get("reviewer");
  if (name && /^[A-Za-z0-9._-]{1,64}$/.test(name)) {
    reviewer = name;
    localStorage.setItem("seedling-reviewer", name);
  }
  if (location.hash) history.replaceState(null, "", location.pathname);
  return sessionStorage.getItem("seedling-token") || "";
}
const accessToken = fromFragment();

function decisionId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "d-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function call(method, path, body) {
  const headers = { "x-seedling-token": accessToken };
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try { message = JSON.parse(text).error || text; } catch (_) { /* plain text */ }
    throw new Error(message);
  }
  return text;
}

function say(message) { $("status").textContent = message; }

function setList(list, entries) {
  list.replaceChildren();
  for (const text of entries) {
    const li = document.createElement("li");
    li.textContent = text;
    list.appendChild(li);
  }
}

function show(state) {
  $("domain").textContent = state.domain ? "· " + state.domain : "";
  $("progress").textContent = state.progress;
  $("who").textContent = "Reviewing as " + reviewer + " · " + state.mine + " decided by you";
  reasons = state.reasons;
  current = state.item;
  $("reject-form").hidden = true;
  $("edit-form").hidden = true;
  const focused = document.activeElement;
  if (focused && focused.closest && focused.closest("form")) focused.blur();
  $("lineage").textContent = "";
  $("lineage-panel").open = false;
  $("done").hidden = current !== null;
  $("item").hidden = current === null;
  for (const id of ["accept", "reject", "edit"]) $(id).disabled = current === null;
  $("item").dataset.record = current ? current.record : "";
  if (current === null) return;
  $("position").textContent = "Record " + current.position + " of " + current.sample;
  $("stratum").textContent = current.stratum;
  $("method").textContent = current.method;
  const fields = $("fields");
  fields.replaceChildren();
  for (const [key, value] of Object.entries(current.fields || {})) {
    const dt = document.createElement("dt");
    dt.textContent = key.replace("_", " ");
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    fields.append(dt, dd);
  }
  $("input").textContent = current.input;
  $("response").textContent = current.response;
  const refs = current.references.map((r) => r.kind + ": " + r.text);
  setList($("references"), refs.length ? refs : ["(none: this record was not grounded on a passage)"]);
  setList($("checks"), current.checks.map((c) => c.name + ": " + c.value));
  const mine = current.decision;
  $("your-decision").textContent = mine
    ? "Your decision: " + mine.decision + (mine.reason ? " (" + mine.reason + ")" : "")
    : "";
}

async function load() {
  try {
    show(JSON.parse(await call("GET", "/api/state?reviewer=" + encodeURIComponent(reviewer))));
    say("");
  } catch (err) {
    say("Could not load the review: " + err.message);
  }
}

async function send(decision) {
  const body = Object.assign({ reviewer, record: current.record }, decision);
  const key = JSON.stringify(body);
  if (!pending || pending.key !== key) pending = { key, body: Object.assign({ id: decisionId() }, body) };
  try {
    const state = JSON.parse(await call("POST", "/api/decisions", pending.body));
    pending = null;
    show(state);
    say("");
  } catch (err) {
    say("Not saved (try again; nothing is lost): " + err.message);
  }
}

function openReject() {
  if (!current) return;
  const box = $("reasons");
  box.replaceChildren();
  reasons.forEach((reason, i) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "reason";
    radio.value = reason.name;
    radio.id = "reason-" + reason.name;
    label.append(radio, " " + (i + 1) + ". " + reason.label);
    box.appendChild(label);
  });
  $("reject-note").value = "";
  $("edit-form").hidden = true;
  $("reject-form").hidden = false;
}

function openEdit() {
  if (!current) return;
  $("edit-input").value = current.input;
  $("edit-response").value = current.response;
  $("edit-note").value = "";
  $("reject-form").hidden = true;
  $("edit-form").hidden = false;
  $("edit-response").focus();
}

function confirmReject() {
  const chosen = document.querySelector("input[name=reason]:checked");
  if (!chosen) { say("Choose a reason (1-8)."); return; }
  send({ decision: "reject", reason: chosen.value, note: $("reject-note").value });
}

function saveEdit() {
  send({
    decision: "edit",
    input: $("edit-input").value,
    response: $("edit-response").value,
    note: $("edit-note").value,
  });
}

async function undo() {
  try {
    show(JSON.parse(await call("POST", "/api/undo", { reviewer })));
    say("Undone: your last decision is taken back.");
  } catch (err) {
    say(err.message);
  }
}

async function showLineage() {
  if (!current) return;
  try {
    $("lineage").textContent = await call("GET", "/api/lineage/" + encodeURIComponent(current.record));
    $("lineage-panel").open = true;
  } catch (err) {
    say(err.message);
  }
}

// Whether a key goes into a text field. A field in a form just hidden
// (after a decision) may keep the focus for a moment: it takes no keys.
function typing(event) {
  const form = event.target.closest && event.target.closest("form");
  if (form && form.hidden) return false;
  const tag = event.target.tagName;
  return tag === "TEXTAREA" || (tag === "INPUT" && event.target.type !== "radio");
}

document.addEventListener("keydown", (event) => {
  if ($("review").hidden) return;
  if (event.key === "Escape") {
    $("reject-form").hidden = true;
    $("edit-form").hidden = true;
    return;
  }
  if (!$("edit-form").hidden) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); saveEdit(); }
    return;
  }
  if (!$("reject-form").hidden) {
    const n = Number(event.key);
    if (!typing(event) && n >= 1 && n <= reasons.length) {
      $("reason-" + reasons[n - 1].name).checked = true;
      event.preventDefault();
    } else if (event.key === "Enter") {
      event.preventDefault();
      confirmReject();
    }
    return;
  }
  if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "a") { event.preventDefault(); if (current) send({ decision: "accept", note: "" }); }
  else if (event.key === "r") { event.preventDefault(); openReject(); }
  else if (event.key === "e") { event.preventDefault(); openEdit(); }
  else if (event.key === "u") { event.preventDefault(); undo(); }
});

function begin() {
  $("login").hidden = true;
  $("review").hidden = false;
  load();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("reviewer-name").value.trim();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) { say("Use 1-64 letters, digits, '-', '_' or '.'."); return; }
    reviewer = name;
    localStorage.setItem("seedling-reviewer", name);
    begin();
  });
  $("accept").addEventListener("click", () => send({ decision: "accept", note: "" }));
  $("reject").addEventListener("click", openReject);
  $("edit").addEventListener("click", openEdit);
  $("undo").addEventListener("click", undo);
  $("show-lineage").addEventListener("click", showLineage);
  $("reject-form").addEventListener("submit", (event) => { event.preventDefault(); confirmReject(); });
  $("edit-form").addEventListener("submit", (event) => { event.preventDefault(); saveEdit(); });
  $("cancel-reject").addEventListener("click", () => { $("reject-form").hidden = true; });
  $("cancel-edit").addEventListener("click", () => { $("edit-form").hidden = true; });
  if (reviewer) begin(); else { $("login").hidden = false; $("reviewer-name").focus(); }
});
