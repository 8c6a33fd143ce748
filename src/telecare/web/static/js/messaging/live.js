// Live inbox and thread pages: the socket says only which conversation changed (ids); the page then re-reads
// itself through the normal, audited GET and swaps the live region in place.
const initial = document.querySelector("[data-live-messages]");
if (initial) {
  const threadId = initial.dataset.threadId ? Number(initial.dataset.threadId) : null;
  let pending = null;
  const refresh = async () => {
    const response = await fetch(location.pathname + location.search, { credentials: "same-origin" });
    if (!response.ok) return;
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = doc.querySelector("[data-live-messages]");
    // Looked up each time, after the fetch: an earlier refresh replaced the region (the old node is detached).
    const root = document.querySelector("[data-live-messages]");
    if (!fresh || !root) return;
    const focused = document.activeElement;
    const typing = focused && root.contains(focused) && (focused.tagName === "TEXTAREA" || focused.tagName === "INPUT" || focused.tagName === "SELECT");
    if (typing) {
      // Keep what the user is typing: refresh only the read-only parts.
      for (const id of ["threads", "counts", "messages"]) {
        const mine = document.getElementById(id);
        const theirs = doc.getElementById(id);
        if (mine && theirs) mine.replaceWith(theirs);
      }
    } else {
      root.replaceWith(fresh);
    }
    document.dispatchEvent(new CustomEvent("telecare:messages-refreshed"));
  };
  const connect = (delay) => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${proto}//${location.host}/ws/messaging`);
    socket.addEventListener("message", (ev) => {
      const event = JSON.parse(ev.data);
      if (event.type === "ready") {
        // After a reconnect, catch up on whatever changed while the socket was down.
        if (document.body.dataset.messagingLive === "closed") refresh();
        document.body.dataset.messagingLive = "ready";
        return;
      }
      if (event.type !== "thread") return;
      if (threadId !== null && event.thread_id !== threadId) return;
      clearTimeout(pending);
      pending = setTimeout(refresh, 150);
    });
    socket.addEventListener("close", (ev) => {
      document.body.dataset.messagingLive = "closed";
      if (ev.code === 4401) return; // signed out
      setTimeout(() => connect(Math.min(delay * 2, 30000)), delay);
    });
  };
  connect(1000);
}
