// Saves each answer as it is given (the server keeps it even if the questionnaire is never submitted),
// shows or hides the questions whose enableWhen changed, and reveals the crisis resources the moment the
// server says a safety answer was saved. Without this module the form's buttons do the same on submit.
const form = document.getElementById("questionnaire-form");
if (form) {
  const status = document.getElementById("autosave-status");
  const crisis = document.getElementById("crisis-resources");
  let pending = null;
  const save = async () => {
    const body = new URLSearchParams(new FormData(form));
    body.delete("action");
    try {
      const response = await fetch(form.dataset.autosave, {
        method: "POST",
        credentials: "same-origin",
        headers: { "x-csrf-token": form.dataset.csrf, "content-type": "application/x-www-form-urlencoded" },
        body,
      });
      if (!response.ok) {
        status.textContent = "Not saved yet: your answers will be saved when you press a button below.";
        return;
      }
      const result = await response.json();
      status.textContent = "Your answers are saved.";
      const active = new Set(result.active);
      for (const q of form.querySelectorAll("[data-link-id]")) q.hidden = !active.has(q.dataset.linkId);
      if (result.crisis && crisis && crisis.hidden) {
        crisis.hidden = false;
        crisis.scrollIntoView({ block: "start" });
      }
    } catch {
      status.textContent = "Not saved yet: check your connection.";
    }
  };
  form.addEventListener("change", () => {
    clearTimeout(pending);
    pending = setTimeout(save, 50);
  });
}
