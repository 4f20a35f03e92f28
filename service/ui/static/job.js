// One job's page: the before/after slider, "copy as curl", and the timeline growing live.
"use strict";
(function () {
  function compare() {
    const slider = document.getElementById("reveal");
    const after = document.getElementById("after");
    if (slider && after) {
      const show = () => {
        after.style.clipPath = `inset(0 0 0 ${slider.value}%)`;
        after.parentElement.style.setProperty("--reveal", `${slider.value}%`);
      };
      slider.addEventListener("input", show);
      show();
    }
  }
  compare();

  // The outputs, cost and timings of a finished job are the server's to render: fetch this
  // page once more and swap those parts in (the page itself is not reloaded).
  async function refresh() {
    const answer = await fetch(window.location.href, { credentials: "same-origin" });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const id of ["job", "media", "caused"]) {
      const now = document.getElementById(id);
      const next = fresh.getElementById(id);
      if (now && next) now.replaceWith(document.adoptNode(next));
    }
    compare();
  }

  const copy = document.getElementById("copy-curl");
  if (copy) {
    copy.addEventListener("click", async () => {
      const pre = document.getElementById(copy.dataset.target);
      const said = document.getElementById("copied");
      try {
        await navigator.clipboard.writeText(pre.textContent);
        said.textContent = "Copied.";
      } catch (_) {
        // no clipboard (an insecure origin): select the text for the person to copy
        const range = document.createRange();
        range.selectNodeContents(pre);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        said.textContent = "Selected: press Ctrl+C to copy.";
      }
    });
  }

  const job = document.getElementById("job");
  if (!job || job.dataset.terminal === "yes" || !window.EventSource) return;
  const prefix = job.dataset.prefix;
  const url = `${prefix}/events/stream?after=${encodeURIComponent(job.dataset.after)}&job_id=${encodeURIComponent(job.dataset.job)}`;
  const source = new EventSource(url);
  const timeline = document.getElementById("timeline");
  const terminal = ["succeeded", "failed", "canceled"];

  const seen = (message) => {
    const event = JSON.parse(message.data);
    const li = document.createElement("li");
    li.dataset.id = String(event.id);
    const time = document.createElement("time");
    time.dateTime = event.created_at;
    time.textContent = event.created_at.replace("T", " ").replace(/\.\d+Z$/, "Z");
    const type = document.createElement("strong");
    type.textContent = event.type;
    const src = document.createElement("span");
    src.className = `source src-${event.source}`;
    src.textContent = event.source;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "data";
    const pre = document.createElement("pre");
    pre.className = "code";
    pre.textContent = JSON.stringify(event.data, null, 2);
    details.append(summary, pre);
    li.append(time, " ", type, " ", src, details);
    timeline.append(li);
    const status = event.data && event.data.id === job.dataset.job ? event.data.status : null;
    if (status) {
      const badge = document.getElementById("status");
      badge.textContent = status;
      badge.className = `badge s-${status}`;
      if (terminal.includes(status)) {
        source.close();
        refresh();
      }
    }
  };
  // an EventSource hears only the event names it listens to: the page names the relay's
  for (const type of job.dataset.types.split(",")) source.addEventListener(type, seen);
  window.addEventListener("pagehide", () => source.close());
})();
