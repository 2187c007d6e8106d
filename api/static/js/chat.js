// The chat view: streams /ask over Server-Sent Events, renders [n] citations
// as buttons that open the cited passage.

import { askStream } from "./api.js";
import { $, clear, errorText, h } from "./dom.js";
import { openPassage } from "./passage.js";

let controller = null;

export function initChat(getCollection) {
  const form = $("#ask-form");
  const question = $("#question");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = question.value.trim();
    if (!text || controller) return;
    question.value = "";
    ask(getCollection(), text, $("#ask-mode").value || null);
  });
  // Enter sends, Shift+Enter starts a new line.
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  $("#stop-button").addEventListener("click", () => controller && controller.abort());
}

export function resetChat() {
  if (controller) controller.abort();
  clear($("#chat-log"));
}

async function ask(collection, text, mode) {
  const log = $("#chat-log");
  const answer = h("div", { class: "answer", "aria-busy": "true" });
  const status = h("p", { class: "muted small status" }, "Searching…");
  const sourceList = h("ol", { class: "source-list", "aria-label": "Sources" });
  const turn = h(
    "li",
    { class: "turn" },
    h("div", { class: "question" }, h("span", { class: "visually-hidden" }, "You asked: "), text),
    h("div", { class: "reply" }, answer, status, sourceList),
  );
  log.append(turn);
  turn.scrollIntoView({ block: "end", behavior: "smooth" });

  let sources = [];
  let evidence = []; // quoted spans the answer rests on: {rank, start, end, quote}
  let raw = "";
  controller = new AbortController();
  setBusy(true);
  const spans = (rank) => evidence.filter((e) => e.rank === rank).map((e) => [e.start, e.end]);
  const render = () => renderAnswer(answer, raw, sources, text, spans);
  try {
    await askStream(
      collection,
      { question: text, ...(mode ? { mode } : {}) },
      (event, data) => {
        if (event === "sources") {
          sources = data.sources || [];
          status.textContent = sources.length ? "Writing the answer…" : "";
          renderSources(sourceList, sources, () => raw, text, spans);
        } else if (event === "delta") {
          raw += data.text || "";
          render();
        } else if (event === "done") {
          raw = data.answer ?? raw;
          evidence = Array.isArray(data.evidence) ? data.evidence : [];
          render();
          renderSources(sourceList, sources, () => raw, text, spans);
          status.textContent = summary(data);
          if (data.grounded === false) showAbstention(turn.querySelector(".reply"), data, status);
        } else if (event === "error") {
          status.textContent = `Error: ${(data.error && data.error.message) || "the answer stopped"}`;
          status.classList.add("error");
        }
      },
      controller.signal,
    );
  } catch (err) {
    if (err.name === "AbortError") {
      status.textContent = "Stopped.";
    } else {
      status.textContent = `Error: ${errorText(err)}`;
      status.classList.add("error");
    }
  } finally {
    answer.removeAttribute("aria-busy");
    controller = null;
    setBusy(false);
    if (!raw && !status.classList.contains("error") && status.textContent !== "Stopped.") {
      answer.textContent = "(no answer)";
    }
  }
}

/** The service withheld the answer: say why, and keep the draft one click away. */
function showAbstention(reply, done, status) {
  reply.classList.add("abstained");
  if (done.reason) reply.insertBefore(h("p", { class: "small reason" }, done.reason), status);
  if (done.draft) {
    reply.insertBefore(
      h("details", { class: "small draft" }, h("summary", {}, "The withheld draft"), h("p", {}, done.draft)),
      status,
    );
  }
}

function setBusy(busy) {
  $("#ask-button").disabled = busy;
  $("#stop-button").hidden = !busy;
}

function summary(done) {
  const parts = [];
  const t = done.timings || {};
  const u = done.usage || {};
  if (u.completion_tokens !== undefined) parts.push(`${u.completion_tokens} tokens`);
  if (t.time_to_first_token_s !== undefined) parts.push(`first token ${(t.time_to_first_token_s * 1000).toFixed(0)} ms`);
  if (t.decode_tokens_per_s !== undefined) parts.push(`${t.decode_tokens_per_s.toFixed(1)} tokens/s`);
  if (t.total_s !== undefined) parts.push(`${t.total_s.toFixed(2)} s in all`);
  return parts.join(" · ");
}

const CITATION = /\[(\d{1,3})\]/g;

/** The answer text with each [n] that names a source turned into a button. */
function renderAnswer(el, raw, sources, question, spans) {
  const byRank = new Map(sources.map((s) => [s.rank, s]));
  const nodes = [];
  let last = 0;
  for (const match of raw.matchAll(CITATION)) {
    const source = byRank.get(Number(match[1]));
    if (!source) continue;
    nodes.push(raw.slice(last, match.index));
    nodes.push(citationButton(source, () => raw, question, spans));
    last = match.index + match[0].length;
  }
  nodes.push(raw.slice(last));
  el.replaceChildren(...nodes.map((n) => (typeof n === "string" ? document.createTextNode(n) : n)));
}

function citationButton(source, getAnswer, question, spans) {
  return h(
    "button",
    {
      type: "button",
      class: "citation",
      "aria-label": `Source ${source.rank}: ${source.filename}${source.page ? `, page ${source.page}` : ""}`,
      onclick: () => openPassage(source, getAnswer(), question, spans(source.rank)),
    },
    `[${source.rank}]`,
  );
}

function renderSources(list, sources, getAnswer, question, spans) {
  list.replaceChildren(
    ...sources.map((s) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: spans(s.rank).length ? "source-link cited" : "source-link",
            title: spans(s.rank).length ? "The answer quotes this passage" : null,
            onclick: () => openPassage(s, getAnswer(), question, spans(s.rank)),
          },
          h("span", { class: "rank" }, `[${s.rank}]`),
          " ",
          s.filename,
          s.page ? h("span", { class: "muted" }, ` · p. ${s.page}`) : null,
        ),
      ),
    ),
  );
}
