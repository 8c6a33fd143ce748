// Idle-timeout warning. The server ends a session after `data-idle-minutes` without a request
// (15 min for staff, 30 for patients: NIST SP 800-63B). Two minutes before that we offer to stay signed
// in (one GET to /api/v1/me counts as activity); at the limit we sign out through the real logout form so
// the server session is revoked, not only the page left.
const WARN_BEFORE_MS = 2 * 60 * 1000;

function start() {
  const minutes = Number(document.body.dataset.idleMinutes);
  const dialog = document.getElementById("idle-warning");
  const form = document.getElementById("logout-form");
  if (!minutes || !dialog || !form) return;
  const limitMs = minutes * 60 * 1000;
  const countdown = dialog.querySelector("[data-idle-countdown]");
  let lastActivity = Date.now();
  let ticker = null;

  function signOut() {
    const reason = document.createElement("input");
    reason.type = "hidden";
    reason.name = "reason";
    reason.value = "idle";
    form.append(reason);
    form.submit();
  }

  function tick() {
    const left = limitMs - (Date.now() - lastActivity);
    if (left <= 0) {
      clearInterval(ticker);
      signOut();
      return;
    }
    if (left <= WARN_BEFORE_MS) {
      if (!dialog.open) dialog.showModal();
      const s = Math.ceil(left / 1000);
      countdown.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    }
  }

  async function stay() {
    const response = await fetch("/api/v1/me", { credentials: "same-origin", headers: { accept: "application/json" } });
    if (!response.ok) {
      window.location.assign("/login?reason=idle");
      return;
    }
    lastActivity = Date.now();
    dialog.close();
  }

  dialog.querySelector("[data-idle-stay]").addEventListener("click", stay);
  dialog.querySelector("[data-idle-signout]").addEventListener("click", signOut);
  // Escape would close the dialog without telling the server; treat it as "stay signed in".
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    stay();
  });
  ticker = setInterval(tick, 1000);
}

start();
