// The documents view: drag-and-drop upload with one live status line per
// file (uploading, queued, processing, indexed, failed with its reason), and
// the collection's documents with a delete button each.

import { api } from "./api.js";
import { $, errorText, fmtBytes, fmtTime, h, plural, toast } from "./dom.js";

const UPLOADS_AT_ONCE = 3;
const POLL_MS = 1000;

let current = null; // the collection shown
let lines = new Map(); // document id -> status line element of this page's uploads
let pollTimer = null;
let onChange = () => {};

export function initDocuments(getCollection, changed) {
  onChange = changed;
  const zone = $("#dropzone");
  const input = $("#file-input");
  input.addEventListener("change", () => {
    upload(getCollection(), [...input.files]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) upload(getCollection(), files);
  });
}

export function showDocuments(collection) {
  if (collection !== current) {
    current = collection;
    lines = new Map();
    $("#upload-status").replaceChildren();
    $("#uploads-heading").hidden = true;
  }
  return refresh();
}

export function stopDocuments() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

function statusLine(file) {
  const state = h("span", { class: "state", dataset: { state: "uploading" } }, "uploading");
  const detail = h("span", { class: "detail muted" });
  const li = h("li", { class: "upload-line" }, h("span", { class: "name" }, file.name), state, detail);
  li.setState = (value, text = "") => {
    state.dataset.state = value;
    state.textContent = value;
    detail.textContent = text;
    li.dataset.state = value;
  };
  return li;
}

async function upload(collection, files) {
  if (!collection || !files.length) return;
  $("#uploads-heading").hidden = false;
  const list = $("#upload-status");
  const queue = files.map((file) => {
    const line = statusLine(file);
    list.append(line);
    return { file, line };
  });
  const worker = async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      try {
        const body = await api.upload(collection, item.file);
        const doc = body.documents[0];
        if (doc.status === "rejected") {
          item.line.setState("failed", doc.error ? doc.error.message : "rejected");
        } else {
          lines.set(doc.id, item.line);
          item.line.setState(doc.status, doc.duplicate ? "same content already uploaded" : "");
        }
      } catch (err) {
        item.line.setState("failed", errorText(err));
      }
      schedule(0);
    }
  };
  await Promise.all(Array.from({ length: Math.min(UPLOADS_AT_ONCE, files.length) }, worker));
}

function schedule(ms) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(refresh, ms);
}

async function refresh() {
  const collection = current;
  if (!collection) return;
  let docs;
  try {
    docs = await api.listDocuments(collection);
  } catch (err) {
    if (err.status === 404) return;
    toast(errorText(err), "error");
    schedule(POLL_MS * 3);
    return;
  }
  if (collection !== current) return;
  renderTable(collection, docs);
  for (const doc of docs) {
    const line = lines.get(doc.id);
    if (line) {
      const detail =
        doc.status === "indexed" ? plural(doc.chunk_count, "chunk") : doc.status === "failed" ? doc.error || "" : "";
      line.setState(doc.status, detail);
    }
  }
  const busy = docs.some((d) => d.status === "queued" || d.status === "processing");
  if (busy) schedule(POLL_MS);
  onChange();
}

function renderTable(collection, docs) {
  const body = $("#documents-table tbody");
  $("#documents-empty").hidden = docs.length > 0;
  $("#documents-table").hidden = docs.length === 0;
  body.replaceChildren(
    ...docs.map((d) =>
      h(
        "tr",
        { dataset: { id: d.id, status: d.status } },
        h("td", { class: "filename" }, d.filename),
        h(
          "td",
          {},
          h("span", { class: "state", dataset: { state: d.status } }, d.status),
          d.error ? h("div", { class: "small error" }, d.error) : null,
        ),
        h("td", { class: "num" }, String(d.chunk_count)),
        h("td", { class: "num opt" }, fmtBytes(d.size_bytes)),
        h("td", { class: "opt" }, fmtTime(d.created_at)),
        h(
          "td",
          {},
          h(
            "button",
            {
              type: "button",
              class: "ghost danger small",
              "aria-label": `Delete ${d.filename}`,
              onclick: () => remove(collection, d),
            },
            "Delete",
          ),
        ),
      ),
    ),
  );
}

async function remove(collection, doc) {
  if (!window.confirm(`Delete ${doc.filename} and all its passages?`)) return;
  try {
    await api.deleteDocument(collection, doc.id);
    toast(`Deleted ${doc.filename}`);
  } catch (err) {
    toast(errorText(err), "error");
  }
  refresh();
}
