// The deliveries page stays current while it is open: every few seconds it fetches its rows
// (rendered by the relay, escaped) and puts in the new and changed ones; unchanged rows stay
// as they are, and a focused Retry button keeps the focus.
"use strict";
(function () {
  const table = document.getElementById("deliveries");
  if (!table || !table.dataset.rows) return;
  const body = table.tBodies[0];
  const live = document.getElementById("live");
  const EVERY = 1500;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const answer = await fetch(table.dataset.rows, { credentials: "same-origin" });
      if (!answer.ok) return;
      const holder = document.createElement("template");
      holder.innerHTML = `<table><tbody>${await answer.text()}</tbody></table>`;
      const fresh = [...holder.content.querySelectorAll("tbody > tr")];
      const focused = body.contains(document.activeElement)
        ? document.activeElement.getAttribute("aria-label") : null;
      let changed = 0;
      const rows = fresh.map((tr) => {
        const old = tr.id ? document.getElementById(tr.id) : null;
        if (old && old.dataset.sig === tr.dataset.sig) return old;
        if (tr.id) {
          changed += 1;
          tr.classList.add("fresh");
        }
        return tr;
      });
      const same = rows.length === body.rows.length && rows.every((tr, i) => tr === body.rows[i]);
      if (same) return;
      body.replaceChildren(...rows);
      if (focused) {
        const again = [...body.querySelectorAll("[aria-label]")].find(
          (e) => e.getAttribute("aria-label") === focused);
        if (again) again.focus();
      }
      if (changed) live.textContent = `${changed} ${changed === 1 ? "delivery" : "deliveries"} changed`;
    } finally {
      busy = false;
    }
  }

  table.dataset.live = "yes";
  setInterval(refresh, EVERY);
})();
