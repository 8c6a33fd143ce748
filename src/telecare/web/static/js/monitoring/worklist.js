// Live nurse worklist: new alerts arrive over a WebSocket after commit; acknowledging posts to the API.
const TIERS = ["immediate", "same_day", "within_24h", "info"];
const table = document.getElementById("alerts");
const body = table.querySelector("tbody");
const status = document.getElementById("live-status");
const csrf = table.dataset.csrf;

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = value;
  if (className) el.className = className;
  return el;
}

function ackForm(id) {
  const form = document.createElement("form");
  form.className = "ack";
  form.method = "post";
  form.action = `/monitoring/alerts/${id}/acknowledge`;
  const input = document.createElement("input");
  input.name = "note";
  input.required = true;
  input.maxLength = 1000;
  input.placeholder = "Note";
  input.setAttribute("aria-label", "Note");
  const button = text("button", "Acknowledge");
  button.type = "submit";
  form.append(input, button);
  return form;
}

function rowFor(a) {
  const tr = document.createElement("tr");
  tr.dataset.alertId = a.alert_id;
  tr.dataset.tier = a.tier;
  tr.className = `tier-${a.tier} new`;
  const tier = document.createElement("td");
  tier.append(text("span", a.tier.replace("_", " "), "tier"));
  const who = document.createElement("td");
  const link = text("a", a.patient_name);
  link.href = `/monitoring/patients/${a.patient_id}`;
  who.append(link);
  const what = document.createElement("td");
  what.append(text("strong", a.title), document.createElement("br"), text("span", a.detail, "detail"));
  const since = document.createElement("td");
  since.append(text("time", new Date(a.created_at).toLocaleString()));
  const state = text("td", a.status, "status");
  const action = document.createElement("td");
  if (a.status === "open") action.append(ackForm(a.alert_id));
  tr.append(tier, who, what, since, state, action);
  return tr;
}

function insert(a) {
  const rank = TIERS.indexOf(a.tier);
  const rows = [...body.querySelectorAll("tr")];
  const after = rows.find((r) => TIERS.indexOf(r.dataset.tier) > rank);
  body.insertBefore(rowFor(a), after || null);
  document.getElementById("no-alerts").hidden = true;
}

function apply(a) {
  const row = body.querySelector(`tr[data-alert-id="${a.alert_id}"]`);
  if (a.change === "opened") {
    if (!row) insert(a);
    return;
  }
  if (!row) return;
  if (a.status === "resolved") {
    row.remove();
    return;
  }
  row.querySelector(".status").textContent = a.status;
  if (a.status !== "open") row.querySelector("form.ack")?.remove();
  if (a.escalated && !row.querySelector(".escalated")) row.cells[0].append(" ", text("span", "escalated", "escalated"));
}

body.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.ack");
  if (!form) return;
  event.preventDefault();
  const row = form.closest("tr");
  const note = form.querySelector("input[name=note]").value;
  const response = await fetch(`/api/v1/monitoring/alerts/${row.dataset.alertId}/acknowledge`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify({ note }),
    credentials: "same-origin",
  });
  if (response.ok) {
    const alert = await response.json();
    row.querySelector(".status").textContent = alert.status;
    form.remove();
  } else {
    form.append(text("span", "Could not acknowledge; reload the page.", "error"));
  }
});

let delay = 1000;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/monitoring/alerts`);
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      status.textContent = "live";
      table.dataset.live = "1";
      delay = 1000;
    } else if (message.type === "alert") {
      apply(message);
    }
  });
  socket.addEventListener("close", (event) => {
    if (event.code === 4401) {
      // The socket guard (auth/sockets.py) closed it: signed out, disabled or the session expired.
      location.assign("/login");
      return;
    }
    status.textContent = "reconnecting…";
    table.dataset.live = "";
    setTimeout(connect, delay);
    delay = Math.min(delay * 2, 30000);
  });
}
connect();
