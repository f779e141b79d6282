// The chat page: plain JS, no build step. Talks to the bridge's own API with the key from the settings
// (or from the page address: /#key=...). Progress comes from GET /v1/tasks/{id}/events (server-sent events).
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
const STEPS = {
  TaskPending: "created on chain, fee paid into escrow",
  TaskStarted: "node selected",
  TaskResultCommitmentSubmitted: "node committed its result",
  TaskResultCommitmentsReady: "all three nodes committed",
  TaskResultDisclosed: "node disclosed its result",
  TaskSuccess: "validated: results match",
  TaskNodeSuccess: "node paid",
  TaskResultUploaded: "result uploaded, result node paid",
  TaskAborted: "aborted",
  TaskFeeRefunded: "fee refunded",
};

function apiKey() { return $("api-key").value.trim(); }
function headers() { return { "Authorization": `Bearer ${apiKey()}`, "Content-Type": "application/json" }; }

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  }
  return response;
}

function cnx(wei) { return wei ? `${(Number(BigInt(wei) / 10n ** 12n) / 1e6).toFixed(6)} CNX` : "?"; }
function short(address) { return address ? `${address.slice(0, 6)}…${address.slice(-4)}` : ""; }

function addMessage(role, text, meta) {
  const li = document.createElement("li");
  li.className = role;
  li.textContent = text;
  if (meta) {
    const span = document.createElement("span");
    span.className = "meta";
    span.textContent = meta;
    li.appendChild(span);
  }
  $("conversation").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function addStep(text, done) {
  const li = document.createElement("li");
  li.textContent = text;
  if (done) li.className = "done";
  $("progress").appendChild(li);
}

async function loadModels() {
  if (!apiKey()) return;
  try {
    const models = await (await api("/v1/models")).json();
    $("model").innerHTML = "";
    for (const m of models.data.filter((m) => m.task_type === "gpt")) {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = m.id;
      $("model").appendChild(option);
    }
    $("status").textContent = "";
  } catch (error) {
    $("status").textContent = `models: ${error.message}`;
  }
}

// Read server-sent events from a fetch response (EventSource cannot send the Authorization header).
async function followEvents(taskId, onEvent) {
  const response = await api(`/v1/tasks/${taskId}/events`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) {
        const stop = onEvent(name, JSON.parse(data));
        if (stop) { reader.cancel(); return; }
      }
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  $("progress").innerHTML = "";
  const request = {
    model: $("model").value,
    messages: history,
    temperature: Number($("temperature").value),
    max_tokens: Number($("max-tokens").value),
    seed: Number($("seed").value),
  };
  const task = await (await api("/v1/chat/tasks", { method: "POST", body: JSON.stringify(request) })).json();
  addStep(`bridge task ${task.id.slice(0, 13)}…`, true);
  let final = null;
  await followEvents(task.id, (name, data) => {
    if (name === "progress") {
      let text = STEPS[data.name] || data.name;
      if (data.name === "TaskPending") text += ` (task #${data.args.taskId}, ${cnx(data.args.fee)})`;
      if (data.name === "TaskStarted") text += ` ${short(data.args.selectedNode)} (round ${data.args.round})`;
      if (data.name === "TaskAborted") text += `: ${data.args.reason}`;
      addStep(text, true);
    } else if (name === "done") {
      final = data;
      return true;
    }
    return false;
  });
  if (final.status !== "validated") throw new Error(`task aborted: ${final.reason}`);
  const response = await (await api(`/v1/tasks/${task.id}/results/0`)).json();
  const answer = response.choices[0].message.content;
  history.push({ role: "assistant", content: answer });
  const nodes = final.selected_nodes.map(short).join(", ");
  addMessage("assistant", answer, `task #${final.task_id} · fee paid ${cnx(final.fee_wei)} · nodes ${nodes}`);
  $("status").textContent = `validated, fee paid: ${cnx(final.fee_wei)}`;
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  $("message").value = "";
  $("send").disabled = true;
  try {
    await send(text);
  } catch (error) {
    history.pop();
    addMessage("error", error.message);
  } finally {
    $("send").disabled = false;
  }
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("clear").addEventListener("click", () => { history.length = 0; $("conversation").innerHTML = ""; $("progress").innerHTML = ""; });
$("api-key").addEventListener("change", () => { localStorage.setItem("helium-key", apiKey()); loadModels(); });

const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
$("api-key").value = fromHash || localStorage.getItem("helium-key") || "";
loadModels();
