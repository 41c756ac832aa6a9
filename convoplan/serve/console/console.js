// The convoplan console: agent assist and a bot chat over the server's /v1 API. Plain JS, no build step.
"use strict";

const KEY_STORAGE = "convoplan.apiKey";
const $ = (id) => document.getElementById(id);

// --- small helpers -------------------------------------------------------------------------------------------

/** An element with attributes (data-testid, class, ...) and children (strings become text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "testid") node.dataset.testid = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

const score = (value) => (value === null || value === undefined ? "–" : Number(value).toFixed(3));
const actionName = (action) => action ?? "(no action)";

function setStatus(text, kind = "info") {
  const status = $("status");
  status.textContent = text;
  status.dataset.kind = kind;
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** FastAPI's "detail": a string, or a list of validation errors. */
function describe(detail, fallback) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`).join("; ");
  }
  return fallback;
}

/** A request to the API with the API key when one is kept; throws ApiError with the server's detail. */
async function request(method, path, body, accept = "application/json") {
  const headers = { Accept: accept };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, `cannot reach the server (${error.message})`);
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, describe(data && data.detail, `${response.status} ${response.statusText}`));
  }
  return response;
}

/** A JSON request to the API: the answer's JSON. */
async function api(method, path, body) {
  return (await request(method, path, body)).json().catch(() => null);
}

/**
 * A streamed request (server-sent events): `onEvent(name, data)` for each event as it arrives; returns the data
 * of the final "done" event. A server that answers with plain JSON instead is taken as having sent only "done".
 */
async function streamed(path, body, onEvent) {
  const response = await request("POST", path, body, "text/event-stream, application/json");
  if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) return response.json();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let done = null;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) { // a blank line ends an event
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const name = (lines.find((l) => l.startsWith("event:")) || "event: message").slice(6).trim();
      const data = JSON.parse(lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n"));
      if (name === "error") throw new ApiError(500, data.detail);
      if (name === "done") done = data;
      else onEvent(name, data);
    }
  }
  if (done === null) throw new ApiError(0, "the stream ended before the suggestions were complete");
  return done;
}

let retry = null; // the action that last failed for want of an API key: run again once a key is given

/** Run an action, showing progress and any error in the status line; a 401 asks for the API key. */
async function attempt(label, action) {
  setStatus(`${label}…`, "busy");
  setBusy(true);
  try {
    const result = await action();
    if (typeof result === "string") setStatus(result, "done");
    else setStatus("", "info");
    return result;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      retry = () => attempt(label, action);
      askForKey();
      setStatus(`${label} failed: the server wants an API key (${error.message})`, "error");
    } else {
      setStatus(`${label} failed: ${error.message}`, "error");
      if (!(error instanceof ApiError)) console.error(error);
    }
    return undefined;
  } finally {
    setBusy(false);
  }
}

let pending = 0;

/** While a request runs, the send buttons wait (no message is sent twice by a double click). */
function setBusy(busy) {
  pending += busy ? 1 : -1;
  document.body.classList.toggle("busy", pending > 0);
  for (const button of document.querySelectorAll('main button[type="submit"]')) button.disabled = pending > 0;
}

function askForKey() {
  $("apikey-form").hidden = false;
  $("apikey").focus();
}

$("apikey-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, $("apikey").value.trim());
  $("apikey").value = "";
  $("apikey-form").hidden = true;
  setStatus("API key kept for this tab", "info");
  const again = retry;
  retry = null;
  if (again) again();
});

// --- tabs ----------------------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function show(view) {
  for (const tab of tabs) {
    const selected = tab.dataset.view === view;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(tab.getAttribute("aria-controls")).hidden = !selected;
  }
  if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
}

for (const tab of tabs) {
  tab.addEventListener("click", () => show(tab.dataset.view));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    show(next.dataset.view);
    next.focus();
  });
}

// --- agent assist --------------------------------------------------------------------------------------------

// request: the last suggest answer nothing has answered yet ({id, actions}); a draft remembers the request and the
// number of the suggestion it started from, which an agent message sends back as its `choice`.
const assist = { session: null, actions: [], filter: null, draft: null, request: null };

async function assistSession() {
  if (!assist.session) {
    assist.session = await api("POST", "/v1/sessions", { mode: "assist", meta: { client: "console" } });
    $("assist-session").textContent = `session ${assist.session.id.slice(0, 8)}`;
    $("assist-session").title = assist.session.id;
    $("assist-session").dataset.sessionId = assist.session.id;
  }
  return assist.session;
}

function addAssistTurn(speaker, text, action, edited) {
  const who = speaker === "user" ? "Customer" : "Agent";
  const tags = [];
  if (action) tags.push(el("span", { class: "tag" }, action));
  if (edited !== undefined) tags.push(el("span", { class: "tag soft" }, edited ? "suggestion, edited" : "suggestion"));
  $("assist-transcript").append(
    el("li", { class: `turn ${speaker}`, testid: `assist-turn-${speaker}` },
      el("div", { class: "who" }, who, ...tags),
      el("div", { class: "text" }, text)),
  );
  $("assist-transcript").lastChild.scrollIntoView({ block: "nearest" });
}

function renderSuggestions() {
  const chips = $("action-chips");
  chips.replaceChildren();
  if (assist.actions.length > 1) {
    chips.append(el("button", {
      type: "button", class: "chip", "aria-pressed": String(assist.filter === null), testid: "action-chip-all",
      onclick: () => { assist.filter = null; renderSuggestions(); },
    }, "All"));
  }
  assist.actions.forEach((group, index) => {
    chips.append(el("button", {
      type: "button", class: "chip", "aria-pressed": String(assist.filter === index), testid: "action-chip",
      "data-action": group.action ?? "", title: group.reason,
      onclick: () => { assist.filter = assist.filter === index ? null : index; renderSuggestions(); },
    }, el("span", { class: "chip-name" }, actionName(group.action)),
    el("span", { class: "chip-score" }, group.score === null ? group.reason : score(group.score))));
  });

  const list = $("suggestions");
  list.replaceChildren();
  assist.actions.forEach((group, g) => {
    if (assist.filter !== null && assist.filter !== g) return;
    group.suggestions.forEach((suggestion, slot) => {
      list.append(el("li", {},
        el("button", {
          type: "button", class: "card", testid: "suggestion", "data-action": group.action ?? "",
          "data-writing": suggestion.writing, disabled: suggestion.writing, // picked once written
          onclick: () => useSuggestion(g, slot),
        },
        el("span", { class: "card-text" }, suggestion.text),
        ...supportLines(suggestion),
        el("span", { class: "card-meta" },
          el("span", { class: "tag" }, actionName(group.action)),
          suggestion.writing ? el("span", { class: "tag soft" }, "writing…") :
            suggestion.origin === "exemplar" ?
              el("span", { class: "tag soft", testid: "from-logs", title: `said before: ${suggestion.source}; ` +
                "the similarity of its context to this one" }, `from the logs ${score(suggestion.score)}`) :
              el("span", { title: "mean token log-probability" }, `LM ${score(suggestion.score)}`),
          suggestion.finished || suggestion.writing ? null : el("span", { class: "tag warn" }, "cut short"),
          suggestion.unsupported?.length ? el("span", { class: "tag warn", testid: "unsupported" }, "unsupported") :
            null))));
    });
  });
  if (!list.children.length) {
    list.append(el("li", { class: "empty" }, assist.actions.length ? "No suggestions for this action." :
      "Add a customer message, or press Suggest."));
  }
}

/** What the knowledge file says of a checked suggestion: the passages behind its claims, or the claims no passage
 * of the animal (entity) in focus supports. */
function supportLines(suggestion) {
  if (!suggestion.checked) return [];
  if (suggestion.unsupported.length) {
    return [el("span", { class: "card-support warn" }, `No source says: ${suggestion.unsupported.join("; ")}`)];
  }
  return suggestion.sources.map((passage) => el("span", {
    class: "card-support", testid: "source", title: passage.text,
  }, `Source: ${passage.source} (${passage.id})`));
}

/** Suggestions as they are written: the actions first, then each suggestion's text growing in its card. */
async function suggest() {
  const session = await assistSession();
  const started = performance.now();
  let first = null; // milliseconds to the first piece of text
  const body = await streamed("/v1/suggest", { session_id: session.id, actions: 3, n: 3, stream: true }, (name, data) => {
    if (name === "plans") {
      assist.actions = data.actions.map((group) => ({ // retrieved suggestions come whole; the rest are written
        ...group, suggestions: [...group.suggestions,
          ...Array.from({ length: data.n - group.suggestions.length }, () => ({ text: "", writing: true }))],
      }));
      assist.filter = null;
    } else if (name === "text") {
      assist.actions[data.action].suggestions[data.suggestion].text += data.text;
      first ??= performance.now() - started;
    }
    renderSuggestions();
  });
  assist.actions = body.actions;
  assist.filter = null;
  assist.request = body.request_id ? { id: body.request_id, actions: body.actions } : null;
  const draft = assist.draft;
  if (draft && draft.request === undefined) { // picked while the rest were written: numbered now
    const { number } = body.actions[draft.group].suggestions[draft.slot];
    draft.request = assist.request && { id: assist.request.id, number };
  }
  renderSuggestions();
  const count = body.actions.reduce((total, group) => total + group.suggestions.length, 0);
  return `${count} suggestion${count === 1 ? "" : "s"} for ${body.actions.length} action${
    body.actions.length === 1 ? "" : "s"} in ${Math.round(body.seconds * 1000)} ms${
    first === null ? "" : ` (first words after ${Math.round(first)} ms)`}`;
}

function useSuggestion(group, slot) {
  const { action } = assist.actions[group];
  const { text, number } = assist.actions[group].suggestions[slot];
  // Until the answer is done (streaming) its suggestions have no numbers yet: `suggest` fills the request in.
  const request = assist.request && assist.request.actions === assist.actions ? { id: assist.request.id, number } :
    undefined;
  assist.draft = { action, suggested: text, group, slot, request };
  $("agent-text").value = text;
  $("draft-note").hidden = false;
  $("draft-note").firstElementChild.textContent = `Suggestion for ${actionName(action)}; edit it freely.`;
  $("agent-text").focus();
}

function clearDraft() {
  assist.draft = null;
  $("draft-note").hidden = true;
}

$("draft-clear").addEventListener("click", clearDraft);
$("agent-text").addEventListener("input", () => { if (!$("agent-text").value.trim()) clearDraft(); });

$("customer-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("customer-text").value.trim();
  if (!text) return;
  attempt("Storing the customer's message", async () => {
    const session = await assistSession();
    await api("POST", `/v1/sessions/${session.id}/messages`, { text, speaker: "user" });
    $("customer-text").value = "";
    addAssistTurn("user", text);
    try {
      return await suggest();
    } catch (error) {
      error.message = `the message is stored, but no suggestions came: ${error.message}`;
      throw error;
    }
  });
});

$("suggest").addEventListener("click", () => attempt("Asking for suggestions", suggest));

$("agent-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("agent-text").value.trim();
  if (!text) return;
  const draft = assist.draft;
  const edited = draft ? text !== draft.suggested.trim() : undefined;
  const body = { text, speaker: "agent", action: draft ? draft.action : null };
  // What became of the suggestions shown: the one this started from, or none (the agent's own words).
  if (draft?.request) body.choice = { request_id: draft.request.id, suggestion: draft.request.number };
  else if (assist.request) body.choice = { request_id: assist.request.id, suggestion: null };
  attempt("Sending the agent's reply", async () => {
    const session = await assistSession();
    await api("POST", `/v1/sessions/${session.id}/messages`, body);
    addAssistTurn("agent", text, body.action, edited);
    $("agent-text").value = "";
    clearDraft();
    assist.actions = [];
    assist.request = null;
    renderSuggestions();
  });
});

$("assist-new").addEventListener("click", () => {
  assist.session = null;
  assist.actions = [];
  assist.request = null;
  clearDraft();
  $("assist-transcript").replaceChildren();
  $("assist-session").textContent = "no session yet";
  delete $("assist-session").dataset.sessionId;
  renderSuggestions();
  attempt("Starting an assist session", assistSession);
});

// --- bot -----------------------------------------------------------------------------------------------------

const bot = { session: null };

function randomUser() {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  return `user-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

async function botSession() {
  if (!bot.session) {
    const userId = $("bot-user").value.trim() || randomUser();
    $("bot-user").value = userId;
    bot.session = await api("POST", "/v1/sessions", { user_id: userId, mode: "bot", meta: { client: "console" } });
    $("bot-arm").hidden = false;
    $("bot-arm").textContent = `arm: ${bot.session.arm}`;
    $("bot-arm").title = `session ${bot.session.id}`;
    $("bot-arm").dataset.sessionId = bot.session.id;
    $("bot-user").disabled = true;
    $("bot-text").disabled = false;
    $("bot-start").textContent = "New session";
  }
  return bot.session;
}

function explanation(steps) {
  return el("div", { class: "explain", testid: "explanation" },
    ...steps.map((step, index) => el("div", { class: "step" },
      el("p", { class: "step-head" }, el("span", { class: "muted" }, `Step ${index + 1}`),
        step.action ? el("span", { class: "tag" }, step.action) : null, el("strong", {}, step.text)),
      el("table", {},
        el("caption", { class: "visually-hidden" }, `Candidates of step ${index + 1} with the DM's scores`),
        el("thead", {}, el("tr", {}, ["", "Candidate", "Action", "Provider", "Score"].map((h) =>
          el("th", { scope: "col" }, h)))),
        el("tbody", {}, step.candidates.map((c) => el("tr", { class: c.selected ? "selected" : null },
          el("td", {}, c.selected ? "✓" : ""), el("td", {}, c.text), el("td", {}, c.action ?? ""),
          el("td", {}, c.provider ?? ""), el("td", { class: "num" }, score(c.score)))))))));
}

/** A thumb (an inline SVG: no emoji font needed); CSS turns the "down" one over. */
function thumbIcon(kind = "up") {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.classList.add("icon", kind);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M7 11v10H4a1 1 0 0 1-1-1v-8a1 1 0 0 1 1-1zm0 0 4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.3l-1.3 " +
    "7.6a2 2 0 0 1-2 1.6H7");
  svg.append(path);
  return svg;
}

function addBotResponse(session, reply) {
  const rate = (value, button) => attempt("Sending feedback", async () => {
    await api("POST", `/v1/sessions/${session.id}/feedback`, { position: reply.response_position, value });
    for (const other of button.parentElement.querySelectorAll("button")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    return `Feedback stored: ${value}`;
  });
  const up = el("button", { type: "button", class: "thumb", "aria-label": "Good response", "aria-pressed": "false",
    testid: "thumbs-up", onclick: () => rate("positive", up) }, thumbIcon());
  const down = el("button", { type: "button", class: "thumb", "aria-label": "Bad response", "aria-pressed": "false",
    testid: "thumbs-down", onclick: () => rate("negative", down) }, thumbIcon("down"));
  $("bot-transcript").append(el("li", { class: "bubble bot", testid: "bot-response" },
    el("div", { class: "text" }, reply.response || "(the bot said nothing)"),
    el("div", { class: "rate", role: "group", "aria-label": "Rate this response" }, up, down),
    explanation(reply.steps)));
  if (reply.ended) {
    $("bot-transcript").append(el("li", { class: "ended", testid: "bot-ended" },
      "The bot ended the conversation. Start a new session to talk again."));
    $("bot-text").disabled = true;
  }
}

$("bot-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("bot-text").value.trim();
  if (!text) return;
  attempt("Waiting for the bot", async () => {
    const session = await botSession();
    const reply = await api("POST", `/v1/sessions/${session.id}/messages`, { text, speaker: "user" });
    $("bot-text").value = "";
    $("bot-transcript").append(el("li", { class: "bubble user", testid: "user-message" }, el("div", { class: "text" }, text)));
    addBotResponse(session, reply);
    $("bot-transcript").lastChild.scrollIntoView({ block: "nearest" });
  });
});

$("bot-start").addEventListener("click", () => {
  if (bot.session) { // a new session: a new random user unless one was typed before
    bot.session = null;
    $("bot-user").disabled = false;
    $("bot-user").value = randomUser();
    $("bot-arm").hidden = true;
    $("bot-transcript").replaceChildren();
  }
  attempt("Starting a bot session", botSession);
});

$("explain").addEventListener("change", () => {
  document.body.classList.toggle("explaining", $("explain").checked);
});

// --- start ---------------------------------------------------------------------------------------------------

async function health() {
  try {
    const body = await api("GET", "/healthz");
    $("health").textContent = `● ${body.arms.length} arm${body.arms.length === 1 ? "" : "s"}` +
      (body.assist ? " · assist on" : " · assist off");
    $("health").title = `arms: ${body.arms.join(", ")}`;
    $("health").dataset.ok = "true";
    if (!body.assist) setStatus("Agent assist is off on this server (its artifacts have no LM)", "error");
  } catch (error) {
    $("health").textContent = "● offline";
    $("health").dataset.ok = "false";
    setStatus(`Health check failed: ${error.message}`, "error");
  }
}

const fromHash = () => show(location.hash === "#bot" ? "bot" : "assist");
window.addEventListener("hashchange", fromHash);
$("bot-user").value = randomUser();
fromHash();
renderSuggestions();
health();
