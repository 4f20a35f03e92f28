// The jobs page follows the event stream while it is open: rows change state in place, new
// jobs appear at the top (without filters), and the 24-hour counts move with them.
"use strict";
(function () {
  const table = document.getElementById("jobs");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const prefix = table.dataset.prefix;
  const filtered = table.dataset.filtered === "yes";
  const live = document.getElementById("live");
  const types = table.dataset.types.split(",");
  const url = `${prefix}/events/stream?after=${encodeURIComponent(table.dataset.after)}&type=${encodeURIComponent(types.join(","))}`;
  const source = new EventSource(url);

  function bump(status, by) {
    const n = document.querySelector(`[data-count="${CSS.escape(status)}"]`);
    if (n) n.textContent = String(Math.max(0, Number(n.textContent) + by));
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    return td;
  }

  function duration(job) {
    const start = Date.parse(job.created_at);
    const end = job.status === "succeeded" || job.status === "failed" || job.status === "canceled"
      ? Date.parse(job.updated_at) : Date.now();
    const s = Math.max(0, (end - start) / 1000);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  }

  function newRow(job) {
    const tr = document.createElement("tr");
    tr.id = `job-${job.id}`;
    tr.dataset.status = "";
    const link = document.createElement("a");
    link.href = `${prefix}/jobs/${encodeURIComponent(job.id)}`;
    link.className = "mono";
    link.textContent = job.id;
    const first = document.createElement("td");
    first.append(link);
    const status = document.createElement("td");
    const badge = document.createElement("span");
    badge.dataset.field = "status";
    status.append(badge);
    const created = document.createElement("td");
    const time = document.createElement("time");
    time.dateTime = job.created_at;
    time.textContent = job.created_at.replace("T", " ").replace(/\.\d+Z$/, "Z");
    created.append(time);
    tr.append(first, cell(job.model), cell(job.provider), status, cell("", "num"), cell("", "num"), created);
    tr.children[4].dataset.field = "cost";
    tr.children[5].dataset.field = "duration";
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    body.prepend(tr);
    return tr;
  }

  function apply(job) {
    let tr = document.getElementById(`job-${job.id}`);
    if (!tr) {
      if (filtered) {
        live.textContent = "New jobs arrived: filter again to see them.";
        return;
      }
      tr = newRow(job);
      tr.classList.add("fresh");
    }
    const before = tr.dataset.status;
    if (before === job.status) return;
    if (before) bump(before, -1);
    bump(job.status, 1);
    tr.dataset.status = job.status;
    const badge = tr.querySelector('[data-field="status"]');
    badge.textContent = job.status;
    badge.className = `badge s-${job.status}`;
    const cost = tr.querySelector('[data-field="cost"]');
    if (cost && job.cost !== null && job.cost !== undefined) cost.textContent = String(job.cost);
    const dur = tr.querySelector('[data-field="duration"]');
    if (dur) dur.textContent = duration(job);
    const progress = tr.querySelector('[data-field="progress"]');
    if (progress) progress.remove();
    live.textContent = `${job.id} is ${job.status}`;
  }

  for (const type of types) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      if (event.data && event.data.id && event.data.status) apply(event.data);
    });
  }
  source.onopen = () => { table.dataset.live = "yes"; };
  window.addEventListener("pagehide", () => source.close());
})();
