// Each send carries a fresh Idempotency-Key: a double click or a browser retry of the same form submission
// reuses it, so the server stores the message once. Forms swapped in by a live refresh (live.js) get theirs
// too.
const prepare = () => {
  for (const form of document.querySelectorAll("form[data-idempotent]")) {
    const key = form.querySelector("input[name=idempotency_key]");
    if (key && !key.value) key.value = crypto.randomUUID();
    if (form.dataset.idempotentReady) continue;
    form.dataset.idempotentReady = "1";
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      if (button) button.disabled = true;
    });
  }
};
prepare();
document.addEventListener("telecare:messages-refreshed", prepare);
