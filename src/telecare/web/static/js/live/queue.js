import { api, liveSocket, setText } from "./common.js";

const root = document.getElementById("queue");
const rows = document.getElementById("queue-rows");
const csrf = root.dataset.csrf;
let entries = [];

function waited(since) {
  if (!since) return "—";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 1000));
  const m = Math.floor(seconds / 60);
  return `${m} min ${String(seconds % 60).padStart(2, "0")} s`;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function render() {
  rows.replaceChildren();
  for (const e of entries) {
    const tr = document.createElement("tr");
    tr.dataset.appointment = e.appointment_id;
    tr.append(
      cell(e.patient),
      cell(new Date(e.start_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
      cell(e.status === "waiting" ? "In the waiting room" : "Checked in"),
    );
    const wait = cell(waited(e.waiting_since));
    wait.className = "waited";
    wait.dataset.since = e.waiting_since || "";
    tr.append(wait, cell(e.attested_state || "—"), cell(e.modality === "audio" ? "Audio only" : "Video"));
    const action = document.createElement("td");
    const admit = document.createElement("button");
    admit.type = "button";
    admit.className = "admit";
    admit.textContent = "Admit";
    admit.addEventListener("click", async () => {
      admit.disabled = true;
      try {
        await api(`/api/v1/visits/${e.appointment_id}/admit`, { method: "POST", csrf });
        location.assign(`/visits/${e.appointment_id}/call`);
      } catch (error) {
        setText("queue-status", error.message);
        admit.disabled = false;
      }
    });
    action.append(admit);
    tr.append(action);
    rows.append(tr);
  }
  setText("queue-status", entries.length ? `${entries.length} waiting` : "Nobody is waiting.");
}

setInterval(() => {
  for (const td of rows.querySelectorAll("td.waited")) td.textContent = waited(td.dataset.since);
}, 1000);

liveSocket("/ws/visits/queue", {
  onMessage(message) {
    if (message.type === "queue") {
      entries = message.entries;
      render();
    }
  },
  onDown(_event, delay) {
    setText("queue-status", `Connection lost; reconnecting in ${Math.round(delay / 1000)} s…`);
  },
});
