// The new-subscription form previews, as the template is typed, the body the chosen chat
// tool would be sent for a sample job (rendered by the relay, the same code as deliveries).
"use strict";
(function () {
  const box = document.getElementById("preview");
  const kind = document.getElementById("s-kind");
  const template = document.getElementById("s-template");
  if (!box || !kind || !template) return;
  const out = document.getElementById("preview-body");
  const label = document.getElementById("preview-kind");
  let timer = null;
  let asked = 0;

  async function show() {
    const mine = ++asked;
    const query = new URLSearchParams({ kind: kind.value, template: template.value });
    const answer = await fetch(`${box.dataset.url}?${query}`, { credentials: "same-origin" });
    if (mine !== asked) return; // a later keystroke asked again
    box.hidden = false;
    label.textContent = kind.value;
    if (!answer.ok) {
      out.textContent = `The preview failed (${answer.status}).`;
      return;
    }
    const result = await answer.json();
    out.textContent = result.problems.length
      ? `Problems:\n- ${result.problems.join("\n- ")}`
      : JSON.stringify(result.body, null, 2);
    out.classList.toggle("error", result.problems.length > 0);
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(show, 250);
  }
  template.addEventListener("input", soon);
  kind.addEventListener("change", show);
  if (kind.value !== "webhook" || template.value) show();
})();
