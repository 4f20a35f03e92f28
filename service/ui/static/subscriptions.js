// The new-subscription form previews, as the template is typed, the message the chosen chat
// tool would show for a sample job and the body it is sent (both drawn by the relay from the
// same code as deliveries; the look-alike's HTML comes escaped from the relay's templates).
"use strict";
(function () {
  const box = document.getElementById("preview");
  const kind = document.getElementById("s-kind");
  const template = document.getElementById("s-template");
  if (!box || !kind || !template) return;
  const out = document.getElementById("preview-body");
  const look = document.getElementById("preview-look");
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
      look.textContent = `The preview failed (${answer.status}).`;
      out.textContent = "";
      return;
    }
    const result = await answer.json();
    const failed = result.problems.length > 0;
    if (failed) {
      look.textContent = `Problems:\n- ${result.problems.join("\n- ")}`;
    } else {
      look.innerHTML = result.html; // escaped by the relay's templates (autoescape)
    }
    out.textContent = failed ? "" : JSON.stringify(result.body, null, 2);
    look.classList.toggle("error", failed);
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(show, 250);
  }
  template.addEventListener("input", soon);
  kind.addEventListener("change", show);
  if (kind.value !== "webhook" || template.value) show();
})();
