import { startCheck } from "./media-check.js";

const start = document.getElementById("device-start");
const elements = {
  video: document.getElementById("self-preview"),
  meter: document.getElementById("mic-level"),
  status: document.getElementById("device-status"),
  cameraSelect: document.getElementById("camera-select"),
  micSelect: document.getElementById("mic-select"),
};
let check = null;

async function run() {
  start.hidden = true;
  check = await startCheck(elements);
}

// Browsers start audio processing only after a click on some systems; try at once, keep the button otherwise.
run().catch(() => {
  start.hidden = false;
});
start.addEventListener("click", () => run());
document.getElementById("continue").addEventListener("click", () => check?.stop());
