// The page: collections in the sidebar, one collection's views in the main
// area, chosen by the URL hash (#/c/<name>/<view>), so Back and links work.

import { api, getKey, keyRemembered, setKey, setUnauthorizedHandler } from "./api.js";
import { initChat, resetChat } from "./chat.js";
import { initDocuments, showDocuments, stopDocuments } from "./documents.js";
import { $, errorText, h, plural, toast } from "./dom.js";
import { initManage, showManage, stopManage } from "./manage.js";
import { initSearch, resetSearch } from "./search.js";

const VIEWS = ["chat", "documents", "search", "manage"];
let collection = null;
let view = "chat";
let collections = [];

const getCollection = () => collection;

function route() {
  const match = location.hash.match(/^#\/c\/([^/]+)(?:\/(\w+))?/);
  const name = match ? decodeURIComponent(match[1]) : null;
  const next = match && VIEWS.includes(match[2]) ? match[2] : "chat";
  show(name, next);
}

function link(name, v = "chat") {
  return `#/c/${encodeURIComponent(name)}/${v}`;
}

function show(name, next) {
  const changed = name !== collection;
  collection = name;
  view = next;
  stopDocuments();
  stopManage();
  $("#welcome").hidden = Boolean(name);
  $("#collection-view").hidden = !name;
  renderCollectionList();
  if (!name) {
    document.title = "rag";
    return;
  }
  if (changed) {
    resetChat();
    resetSearch();
  }
  document.title = `${name} · rag`;
  $("#collection-title").textContent = name;
  for (const v of VIEWS) {
    const tab = $(`#tab-${v}`);
    tab.href = link(name, v);
    if (v === view) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
    $(`#view-${v}`).hidden = v !== view;
  }
  refreshStats();
  if (view === "documents") showDocuments(name);
  if (view === "manage") showManage(name);
  if (view === "chat") $("#question").focus({ preventScroll: true });
}

async function refreshCollections() {
  try {
    collections = await api.listCollections();
  } catch (err) {
    if (err.status !== 401) toast(errorText(err), "error");
    collections = [];
  }
  renderCollectionList();
}

function renderCollectionList() {
  const list = $("#collection-list");
  if (!collections.length) {
    list.replaceChildren(h("li", { class: "muted small" }, "No collections yet."));
    return;
  }
  list.replaceChildren(
    ...collections.map((c) =>
      h(
        "li",
        { class: c.name === collection ? "active" : "" },
        h(
          "a",
          { href: link(c.name, view), "aria-current": c.name === collection ? "page" : null },
          h("span", { class: "name" }, c.name),
          h("span", { class: "count", "aria-label": `${c.documents ?? 0} documents` }, String(c.documents ?? 0)),
        ),
        h(
          "button",
          {
            type: "button",
            class: "ghost danger small",
            "aria-label": `Delete collection ${c.name}`,
            onclick: () => removeCollection(c.name),
          },
          "✕",
        ),
      ),
    ),
  );
}

async function refreshStats() {
  const name = collection;
  if (!name) return;
  try {
    const info = await api.getCollection(name);
    if (name !== collection) return;
    const by = info.status_counts || {};
    const parts = [plural(info.documents, "document"), plural(info.chunks, "chunk")];
    if (by.queued || by.processing) parts.push(`${(by.queued || 0) + (by.processing || 0)} in progress`);
    if (by.failed) parts.push(`${by.failed} failed`);
    $("#collection-stats").textContent = parts.join(" · ");
    const entry = collections.find((c) => c.name === name);
    if (entry && entry.documents !== info.documents) {
      entry.documents = info.documents;
      renderCollectionList();
    }
  } catch (err) {
    if (err.status === 404) {
      toast(`No collection named ${name}`, "error");
      location.hash = "#/";
    }
  }
}

async function removeCollection(name) {
  if (!window.confirm(`Delete the collection ${name} with all its documents?`)) return;
  try {
    await api.deleteCollection(name);
    toast(`Deleted ${name}`);
    if (collection === name) location.hash = "#/";
  } catch (err) {
    toast(errorText(err), "error");
  }
  refreshCollections();
}

function initCreate() {
  $("#create-collection").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#new-collection");
    const name = input.value.trim();
    if (!name) return;
    try {
      await api.createCollection(name);
      input.value = "";
      await refreshCollections();
      location.hash = link(name, "documents");
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
}

function initKeyDialog() {
  const dialog = $("#key-dialog");
  const open = (reason) => {
    $("#key-input").value = getKey();
    $("#key-remember").checked = keyRemembered();
    $("#key-reason").textContent =
      reason || "Requests send this key as Authorization: Bearer <key>. It stays in this browser.";
    if (!dialog.open) dialog.showModal();
  };
  $("#key-button").addEventListener("click", () => open());
  $("#key-form").addEventListener("submit", () => {
    setKey($("#key-input").value.trim(), $("#key-remember").checked);
    refreshCollections();
    route();
  });
  $("#key-clear").addEventListener("click", () => {
    setKey("", false);
    $("#key-input").value = "";
    dialog.close();
  });
  setUnauthorizedHandler((err) => open(`The service needs an API key: ${err.message}`));
}

initKeyDialog();
initCreate();
initChat(getCollection);
initDocuments(getCollection, refreshStats);
initSearch(getCollection);
initManage(getCollection);
window.addEventListener("hashchange", route);
refreshCollections().then(route);
