import { liveSocket, setText } from "./common.js";

const root = document.getElementById("waiting-room");
const id = root.dataset.appointment;

const TEXT = {
  booked: "You are not checked in yet.",
  checked_in: "You are checked in.",
  waiting: "You are in the waiting room. Your clinician will let you in shortly.",
  in_progress: "Your clinician is ready. Joining the visit…",
  completed: "This visit has ended.",
  cancelled: "This visit was cancelled.",
  noshow: "This visit was missed.",
};

const live = liveSocket(`/ws/visits/${id}/status`, {
  onMessage(message) {
    if (message.type !== "status") return undefined;
    root.dataset.status = message.status;
    if (!message.can_join && message.reason && message.status !== "completed") {
      setText("wait-status", message.reason);
      return undefined;
    }
    setText("wait-status", TEXT[message.status] || message.status);
    if (message.status === "in_progress" && message.can_join) {
      location.assign(`/visits/${id}/call`);
      return "stop";
    }
    if (["completed", "cancelled", "noshow"].includes(message.status)) return "stop";
    return undefined;
  },
  onDown(_event, delay) {
    setText("wait-status", `Connection lost; trying again in ${Math.round(delay / 1000)} s…`);
  },
});
window.addEventListener("pagehide", () => live.stop());
