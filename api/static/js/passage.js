// The passage dialog: file, page, section, score and the passage text with the
// part that supports the answer highlighted.

import { $, h } from "./dom.js";

const STOP = new Set(
  "a an and are as at be by for from has have in is it its of on or that the this to was were what when where which who why with how does do did not no".split(
    " ",
  ),
);

const words = (text) =>
  (text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((w) => w.length > 1 && !STOP.has(w));

/**
 * [start, end) character ranges of `text` to highlight: the evidence spans the
 * service quoted from this passage when it gives them, else the answer where
 * it appears word for word, else the sentences sharing the most words with the
 * answer (or, for a search hit, the query).
 */
export function highlightRanges(text, answer, question, spans = []) {
  const given = spans.filter(([a, b]) => Number.isInteger(a) && Number.isInteger(b) && a >= 0 && a < b && b <= text.length);
  if (given.length) return given;
  const clean = (answer || "").replace(/\[\d+\]/g, "").trim();
  if (clean.length >= 3) {
    const at = text.toLowerCase().indexOf(clean.toLowerCase());
    if (at >= 0) return [[at, at + clean.length]];
  }
  const target = new Set(words(`${clean} ${clean ? "" : question || ""}`));
  if (!target.size) return [];
  const sentences = [...text.matchAll(/[^.!?\n]+[.!?]*\s*/g)];
  let best = 0;
  const scored = sentences.map((m) => {
    const score = words(m[0]).filter((w) => target.has(w)).length;
    best = Math.max(best, score);
    return { start: m.index, end: m.index + m[0].trimEnd().length, score };
  });
  if (!best) return [];
  return scored.filter((s) => s.score === best).map((s) => [s.start, s.end]);
}

export function openPassage(source, answer, question, spans = []) {
  const dialog = $("#passage-dialog");
  $("#passage-title").textContent = `[${source.rank}] ${source.filename}`;
  const meta = [];
  if (source.page) meta.push(`page ${source.page}`);
  if (source.section) meta.push(`section “${source.section}”`);
  meta.push(`chunk ${source.chunk_index}`);
  if (typeof source.score === "number") meta.push(`score ${source.score.toFixed(3)}`);
  if (spans.length) meta.push("highlighted: what the answer quotes");
  $("#passage-meta").textContent = meta.join(" · ");

  const text = source.text || "";
  const ranges = highlightRanges(text, answer, question, spans).sort((a, b) => a[0] - b[0]);
  const parts = [];
  let at = 0;
  for (const [start, end] of ranges) {
    if (start < at) continue;
    parts.push(text.slice(at, start), h("mark", {}, text.slice(start, end)));
    at = end;
  }
  parts.push(text.slice(at));
  $("#passage-text").replaceChildren(...parts.map((p) => (typeof p === "string" ? document.createTextNode(p) : p)));
  if (!dialog.open) dialog.showModal();
  const mark = dialog.querySelector("mark");
  if (mark) mark.scrollIntoView({ block: "center" });
}
