// Shared helpers for the live visit pages: WebSocket with reconnection, JSON fetch with CSRF.

export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

export async function api(path, { method = "GET", body, csrf } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

const SIGNED_OUT = 4401;
const NO_LONGER_PERMITTED = 4403;

// A socket that reconnects with backoff until `stop()` (or `onMessage` returns "stop").
export function liveSocket(path, { onMessage, onOpen, onDown }) {
  let socket = null;
  let stopped = false;
  let attempt = 0;
  function connect() {
    socket = new WebSocket(wsUrl(path));
    socket.addEventListener("open", () => {
      attempt = 0;
      onOpen?.(socket);
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (onMessage(message, socket) === "stop") stop();
    });
    socket.addEventListener("close", (event) => {
      if (stopped) return;
      // The server's socket guard (auth/sockets.py): 4401 the sign-in is gone, 4403 this visit is no
      // longer yours. Reconnecting would only be refused.
      if (event.code === SIGNED_OUT) {
        stopped = true;
        location.assign("/login");
        return;
      }
      if (event.code === NO_LONGER_PERMITTED) stopped = true;
      attempt += 1;
      const delay = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
      onDown?.(event, delay);
      if (!stopped) setTimeout(connect, delay);
    });
  }
  function stop() {
    stopped = true;
    socket?.close(1000);
  }
  connect();
  return {
    send(message) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    },
    stop,
    get socket() {
      return socket;
    },
  };
}

export function setText(id, text) {
  const el = document.getElementById(id);
  if (el) el.textContent = text;
}
