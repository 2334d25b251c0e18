// The dnallm chat page: sends the DNA in the request's "dna" field, streams the reply
// over server-sent events, and shows the disease the server parsed from the reply.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, messages: [], controller: null, prediction: null };

async function loadModel() {
  const resp = await fetch("/v1/models");
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error ? body.error.message : resp.statusText);
  state.model = body.data[0].id;
  $("model").textContent = "model: " + state.model;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function addTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

function showPrediction(prediction) {
  state.prediction = prediction;
  $("explain").hidden = !prediction;
  $("explain-box").hidden = true;
  const el = $("prediction");
  el.textContent = prediction || "no 'Answer:' line in the reply";
  $("prediction-box").className = prediction ? "" : "none";
  $("prediction-box").hidden = false;
}

function resetConversation() {
  if (state.controller) state.controller.abort();
  state.messages = [];
  $("log").textContent = "";
  $("prediction-box").hidden = true;
  $("explain-box").hidden = true;
  showError("");
}

// FASTA text -> [{name, seq}]; text without a header line is one unnamed record.
function parseFasta(text) {
  const records = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith(";")) continue;
    if (line.startsWith(">")) records.push({ name: line.slice(1).trim(), seq: "" });
    else if (records.length === 0) records.push({ name: "sequence", seq: line });
    else records[records.length - 1].seq += line;
  }
  return records;
}

async function loadFasta(file) {
  const records = parseFasta(await file.text());
  if (records.length !== 2) {
    showError(`${file.name}: expected 2 FASTA records (reference, then variant), found ${records.length}`);
    return;
  }
  $("reference").value = records[0].seq;
  $("variant").value = records[1].seq;
  dnaChanged();
}

function dnaChanged() {
  const bp = (id) => $(id).value.replace(/\s+/g, "").length;
  $("dna-info").textContent = `reference ${bp("reference")} bp, variant ${bp("variant")} bp`;
  if (state.messages.length) resetConversation(); // a new variant starts a new conversation
}

// Yields the JSON payload of each "data:" event of a server-sent-event stream.
async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function requestBody(question) {
  return {
    model: state.model,
    messages: [...state.messages, { role: "user", content: question }],
    dna: { reference: $("reference").value, variant: $("variant").value },
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    stream: true,
  };
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return showError("type a question first");
  showError("");
  state.controller = new AbortController();
  setBusy(true);
  const userDiv = addTurn("user", question);
  const answerDiv = addTurn("assistant", "");
  answerDiv.classList.add("streaming");
  let reply = "";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody(question)),
      signal: state.controller.signal,
    });
    if (!resp.ok) {
      const body = await resp.json().catch(() => null);
      throw new Error(body && body.error ? body.error.message : `${resp.status} ${resp.statusText}`);
    }
    for await (const chunk of sseEvents(resp)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.content) {
        reply += choice.delta.content;
        answerDiv.textContent = reply;
        $("log").scrollTop = $("log").scrollHeight;
      }
      if (choice.finish_reason) showPrediction(chunk.prediction);
    }
    state.messages.push({ role: "user", content: question }, { role: "assistant", content: reply });
  } catch (err) {
    if (err.name !== "AbortError") showError(err.message);
    if (!reply) { userDiv.remove(); answerDiv.remove(); }
  } finally {
    answerDiv.classList.remove("streaming");
    state.controller = null;
    setBusy(false);
  }
}

// Importance of each base of the centre of both windows: one request, at most 64 bases.
async function explain() {
  const question = state.messages.filter((m) => m.role === "user").map((m) => m.content)[0];
  if (!question || !state.prediction) return;
  showError("");
  setBusy(true);
  $("explain-caption").textContent = "scoring every base change around the variant…";
  $("explain-box").hidden = false;
  try {
    const resp = await fetch("/v1/explain", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: state.model, question, label: state.prediction, method: "ism", region: 32,
                             dna: { reference: $("reference").value, variant: $("variant").value } }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.error ? body.error.message : `${resp.status} ${resp.statusText}`);
    drawTrack(body);
  } catch (err) {
    $("explain-box").hidden = true;
    showError("explain: " + err.message);
  } finally {
    setBusy(false);
  }
}

const BASE_COLOURS = { A: "#109648", C: "#255c99", G: "#f7b32b", T: "#d62839", N: "#888888" };

// One row per window: a bar per base, as tall as its importance, the base letter under it.
function drawTrack(result) {
  const svg = $("explain-track");
  const ns = "http://www.w3.org/2000/svg";
  const n = result.windows[0].bases.length;
  const width = 14 * n + 70, rowHeight = 70, barHeight = 48;
  svg.setAttribute("viewBox", `0 0 ${width} ${2 * rowHeight + 6}`);
  svg.textContent = "";
  const top = Math.max(...result.windows.flatMap((w) => w.importance), 1e-12);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.appendChild(el);
  };
  result.windows.forEach((w, row) => {
    const y0 = row * rowHeight + barHeight + 4;
    add("text", { x: 0, y: y0, "font-size": 11 }, w.name);
    [...w.bases].forEach((base, i) => {
      const x = 66 + 14 * i, h = (barHeight * w.importance[i]) / top;
      const centre = result.region[0] + i === result.centre;
      if (centre) add("rect", { x: x - 1, y: y0 - barHeight, width: 14, height: barHeight + 16, fill: "#e5e7eb" });
      const colour = BASE_COLOURS[base] || "#888";
      add("rect", { x, y: y0 - h, width: 12, height: h, fill: colour });
      add("text", { x: x + 6, y: y0 + 12, "font-size": 11, "text-anchor": "middle", fill: colour }, base);
    });
  });
  const how = result.method === "ism" ? "mean |change of log p| when the base is changed" : "|gradient × input|";
  $("explain-caption").textContent = `Which bases move '${result.label}' (log p ${result.label_logp.toFixed(2)}): ` +
    `positions ${result.region[0]}-${result.region[1]} of the window, ${how}; the variant's position shaded.`;
}

function setBusy(busy) {
  $("ask").disabled = busy;
  $("explain").disabled = busy;
  $("stop").disabled = !busy;
  document.body.dataset.busy = busy ? "1" : "0";
}

$("ask-form").addEventListener("submit", ask);
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
$("reset").addEventListener("click", resetConversation);
$("explain").addEventListener("click", explain);
$("fasta").addEventListener("change", (e) => e.target.files[0] && loadFasta(e.target.files[0]));
$("reference").addEventListener("input", dnaChanged);
$("variant").addEventListener("input", dnaChanged);
loadModel().catch((err) => showError("cannot reach the server: " + err.message));
