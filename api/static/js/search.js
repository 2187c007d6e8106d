// The search view: raw hits with their scores, in the chosen mode.

import { api } from "./api.js";
import { $, errorText, h } from "./dom.js";
import { openPassage } from "./passage.js";

export function initSearch(getCollection) {
  $("#search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = $("#search-query").value.trim();
    if (!query) return;
    const mode = $("#search-mode").value;
    const topK = Number($("#search-k").value) || 10;
    const meta = $("#search-meta");
    const list = $("#search-results");
    meta.textContent = "Searching…";
    meta.classList.remove("error");
    try {
      const body = await api.search(getCollection(), { query, mode, top_k: topK });
      const ms = body.timings && body.timings.total_s !== undefined ? ` in ${(body.timings.total_s * 1000).toFixed(0)} ms` : "";
      meta.textContent = `${body.results.length} hits, mode ${mode}${ms}`;
      list.replaceChildren(...body.results.map((hit) => renderHit(hit, query)));
    } catch (err) {
      meta.textContent = `Error: ${errorText(err)}`;
      meta.classList.add("error");
      list.replaceChildren();
    }
  });
}

export function resetSearch() {
  $("#search-results").replaceChildren();
  $("#search-meta").textContent = "";
}

function renderHit(hit, query) {
  const scores = [`score ${hit.score.toFixed(4)}`];
  if (typeof hit.similarity === "number") scores.push(`cosine ${hit.similarity.toFixed(3)}`);
  return h(
    "li",
    { class: "hit" },
    h(
      "div",
      { class: "hit-head" },
      h("span", { class: "rank" }, `#${hit.rank}`),
      h(
        "button",
        { type: "button", class: "source-link", onclick: () => openPassage(hit, "", query) },
        hit.filename,
      ),
      hit.page ? h("span", { class: "muted" }, `p. ${hit.page}`) : null,
      hit.section ? h("span", { class: "muted" }, hit.section) : null,
      h("span", { class: "score" }, scores.join(" · ")),
    ),
    h("p", { class: "hit-text" }, hit.text.length > 400 ? `${hit.text.slice(0, 400)}…` : hit.text),
  );
}
