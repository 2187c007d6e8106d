// The collection's re-index page: runs, versions (with rollback), schedules and
// the bound folder.

import { api } from "./api.js";
import { $, errorText, fmtTime, h, toast } from "./dom.js";

let current = null;
let pollTimer = null;

export function initManage(getCollection) {
  $("#reindex-full").addEventListener("click", () => startRun(getCollection(), "full"));
  $("#reindex-sync").addEventListener("click", () => startRun(getCollection(), "sync"));
  $("#rollback-button").addEventListener("click", async () => {
    const name = getCollection();
    if (!window.confirm("Serve the previous version again?")) return;
    try {
      await api.rollback(name);
      toast("Rolled back to the previous version");
    } catch (err) {
      toast(errorText(err), "error");
    }
    refresh();
  });
  $("#schedule-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      await api.createSchedule(getCollection(), {
        cron: form.cron.value.trim(),
        timezone: form.timezone.value.trim() || "UTC",
        kind: form.kind.value,
      });
      form.cron.value = "";
      toast("Schedule added");
    } catch (err) {
      toast(errorText(err), "error");
    }
    refresh();
  });
  $("#source-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api.bindSource(getCollection(), event.target.folder.value.trim());
      toast("Folder bound");
    } catch (err) {
      toast(errorText(err), "error");
    }
  });
}

export function showManage(collection) {
  current = collection;
  api.getSource(collection).then(
    (s) => ($("#source-folder").value = s.folder || ""),
    () => {},
  );
  return refresh();
}

export function stopManage() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

async function startRun(collection, kind) {
  try {
    await api.reindex(collection, kind);
    toast(`${kind === "full" ? "Full re-index" : "Sync"} queued`);
  } catch (err) {
    toast(errorText(err), "error");
  }
  refresh();
}

async function refresh() {
  const collection = current;
  clearTimeout(pollTimer);
  let runs, versions, schedules;
  try {
    [runs, versions, schedules] = await Promise.all([
      api.listRuns(collection),
      api.listVersions(collection),
      api.listSchedules(collection),
    ]);
  } catch (err) {
    toast(errorText(err), "error");
    return;
  }
  if (collection !== current) return;
  renderRuns(runs);
  renderVersions(versions);
  renderSchedules(collection, schedules);
  if (runs.some((r) => r.status === "queued" || r.status === "running")) {
    pollTimer = setTimeout(refresh, 1500);
  }
}

function renderRuns(runs) {
  $("#runs-table tbody").replaceChildren(
    ...(runs.length
      ? runs.map((r) =>
          h(
            "tr",
            {},
            h("td", {}, fmtTime(r.started_at || r.created_at)),
            h("td", {}, r.kind),
            h("td", {}, r.trigger),
            h(
              "td",
              {},
              h("span", { class: "state", dataset: { state: r.status } }, r.status),
              r.error ? h("div", { class: "small error" }, r.error) : null,
            ),
            h("td", { class: "num" }, `${r.counts.added} / ${r.counts.updated} / ${r.counts.deleted} / ${r.counts.failed}`),
            h("td", { class: "num" }, r.duration_s == null ? "—" : r.duration_s.toFixed(1)),
          ),
        )
      : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No runs yet."))]),
  );
}

function renderVersions(versions) {
  $("#versions-table tbody").replaceChildren(
    ...(versions.length
      ? versions.map((v) =>
          h(
            "tr",
            {},
            h("td", { class: "num" }, `v${v.version}`),
            h("td", {}, h("span", { class: "state", dataset: { state: v.status } }, v.status)),
            h("td", { class: "wrap" }, `${v.embedding_model} (${v.dimension})`),
            h("td", {}, fmtTime(v.created_at)),
            h("td", {}, fmtTime(v.expires_at)),
          ),
        )
      : [h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No versions yet."))]),
  );
  $("#rollback-button").disabled = !versions.some((v) => v.status === "previous");
}

function renderSchedules(collection, schedules) {
  $("#schedule-list").replaceChildren(
    ...(schedules.length
      ? schedules.map((s) =>
          h(
            "li",
            { class: "schedule" },
            h("code", {}, s.cron),
            ` ${s.timezone} · ${s.kind} · `,
            s.enabled ? `next ${fmtTime(s.next_run_at)}` : "paused",
            " ",
            h(
              "button",
              {
                type: "button",
                class: "ghost small",
                "aria-label": `${s.enabled ? "Pause" : "Resume"} schedule ${s.cron}`,
                onclick: async () => {
                  try {
                    await api.updateSchedule(collection, s.id, { enabled: !s.enabled });
                  } catch (err) {
                    toast(errorText(err), "error");
                  }
                  refresh();
                },
              },
              s.enabled ? "Pause" : "Resume",
            ),
            h(
              "button",
              {
                type: "button",
                class: "ghost danger small",
                "aria-label": `Delete schedule ${s.cron}`,
                onclick: async () => {
                  try {
                    await api.deleteSchedule(collection, s.id);
                  } catch (err) {
                    toast(errorText(err), "error");
                  }
                  refresh();
                },
              },
              "Delete",
            ),
          ),
        )
      : [h("li", { class: "muted" }, "No schedules.")]),
  );
}
