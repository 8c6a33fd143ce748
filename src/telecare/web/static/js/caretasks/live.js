// Live task list: the socket says only which task changed (ids); the page re-reads itself through the
// normal, audited GET and swaps the live region in place.
const region = () => document.querySelector("[data-live-tasks]");
if (region()) {
  let pending = null;
  const refresh = async () => {
    const response = await fetch(location.pathname, { credentials: "same-origin" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.querySelector("[data-live-tasks]");
    const root = region();
    if (fresh && root) root.replaceWith(fresh);
    document.dispatchEvent(new CustomEvent("telecare:tasks-refreshed"));
  };
  const connect = (delay) => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${proto}//${location.host}/ws/tasks`);
    socket.addEventListener("message", (ev) => {
      const event = JSON.parse(ev.data);
      if (event.type === "ready") {
        if (document.body.dataset.tasksLive === "closed") refresh();
        document.body.dataset.tasksLive = "ready";
        return;
      }
      if (event.type !== "task") return;
      clearTimeout(pending);
      pending = setTimeout(refresh, 100);
    });
    socket.addEventListener("close", (ev) => {
      document.body.dataset.tasksLive = "closed";
      if (ev.code === 4401) return; // signed out
      setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  };
  connect(1000);
}
