// The visit call: one RTCPeerConnection per other participant (mesh, at most three), signaling over
// /ws/visits/<id>/signal, trickle ICE with candidate queueing, audio-only switching, reconnection.
import { api, liveSocket, setText } from "./common.js";
import { levelMeter } from "./media-check.js";

const root = document.getElementById("call");
const id = root.dataset.appointment;
const role = root.dataset.role;
const csrf = root.dataset.csrf;
const $ = (name) => document.getElementById(name);

let modality = root.dataset.modality === "audio" ? "audio" : "video";
let localStream = null;
let iceConfig = { iceServers: [] };
let self = null;
let signal = null;
let finished = false;
let muted = false;
let cameraOff = false;
let reportedConnected = false;
const peers = new Map(); // peer id -> { pc, conn, queue, remoteSet, stream, tile }
const early = new Map(); // candidates that arrived before their peer connection existed

function send(message) {
  signal?.send(message);
}

function status(text) {
  setText("call-status", text);
}

// ---- local media ---------------------------------------------------------------------------------------

async function openLocalMedia() {
  localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: modality === "video" });
  $("local-video").srcObject = localStream;
  levelMeter(localStream, null);
}

function localTrack(kind) {
  if (kind === "video" && (modality !== "video" || cameraOff)) return null;
  return (kind === "audio" ? localStream.getAudioTracks() : localStream.getVideoTracks())[0] || null;
}

function transceiverOf(pc, kind) {
  return pc.getTransceivers().find((t) => t.receiver.track.kind === kind);
}

async function attachLocalTracks(entry) {
  for (const kind of ["audio", "video"]) {
    const t = transceiverOf(entry.pc, kind);
    if (!t) continue;
    t.direction = "sendrecv";
    await t.sender.replaceTrack(localTrack(kind));
  }
}

// ---- peers ---------------------------------------------------------------------------------------------

function makeTile(peerId, info) {
  const figure = document.createElement("figure");
  figure.className = "tile remote";
  figure.dataset.peer = peerId;
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  video.className = "remote-video";
  const caption = document.createElement("figcaption");
  caption.textContent = `${info.name || "Participant"} (${info.role})`;
  figure.append(video, caption);
  $("tiles").append(figure);
  return { figure, video };
}

function createPeer(peerId, info) {
  const pc = new RTCPeerConnection(iceConfig);
  const entry = {
    pc,
    conn: info.conn,
    queue: early.get(peerId) || [],
    remoteSet: false,
    stream: new MediaStream(),
    tile: makeTile(peerId, info),
    role: info.role,
  };
  early.delete(peerId);
  peers.set(peerId, entry);
  pc.addEventListener("icecandidate", (event) => {
    send({ type: "candidate", to: peerId, candidate: event.candidate ? event.candidate.toJSON() : null });
  });
  pc.addEventListener("track", (event) => {
    entry.stream.addTrack(event.track);
    if (entry.tile.video.srcObject !== entry.stream) entry.tile.video.srcObject = entry.stream;
    entry.tile.video.play().catch(() => {});
  });
  pc.addEventListener("connectionstatechange", () => {
    entry.tile.figure.dataset.state = pc.connectionState;
    if (pc.connectionState === "connected") {
      status("Connected.");
      if (!reportedConnected) {
        reportedConnected = true;
        send({ type: "connected" });
      }
    } else if (pc.connectionState === "failed" && self < peerId) {
      pc.restartIce();
      offer(peerId, entry).catch(() => {});
    }
  });
  return entry;
}

function closePeer(peerId) {
  const entry = peers.get(peerId);
  if (!entry) return;
  entry.pc.close();
  entry.tile.figure.remove();
  peers.delete(peerId);
}

async function offer(peerId, entry) {
  if (!transceiverOf(entry.pc, "audio")) {
    entry.pc.addTransceiver(localTrack("audio") || "audio", { direction: "sendrecv", streams: [localStream] });
    entry.pc.addTransceiver(localTrack("video") || "video", { direction: "sendrecv", streams: [localStream] });
  }
  await entry.pc.setLocalDescription(await entry.pc.createOffer());
  send({ type: "offer", to: peerId, sdp: entry.pc.localDescription.sdp });
}

async function flushCandidates(entry) {
  entry.remoteSet = true;
  const queued = entry.queue.splice(0);
  for (const candidate of queued) await addCandidate(entry, candidate);
}

async function addCandidate(entry, candidate) {
  try {
    await entry.pc.addIceCandidate(candidate || undefined);
  } catch (error) {
    console.warn("ignored ICE candidate", error.name);
  }
}

function onPresence(message) {
  const existing = peers.get(message.from);
  if (existing && existing.conn === message.conn) return;
  if (existing) closePeer(message.from);
  const entry = createPeer(message.from, message);
  // Exactly one side of each pair offers: the one whose peer id sorts first.
  if (self < message.from) offer(message.from, entry).catch((e) => status(`Could not connect: ${e.name}`));
  else status("Connecting…");
}

async function onDescription(message) {
  let entry = peers.get(message.from);
  if (message.type === "offer") {
    if (!entry) entry = createPeer(message.from, { role: "participant", conn: null });
    if (entry.pc.signalingState !== "stable") await entry.pc.setLocalDescription({ type: "rollback" });
    await entry.pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
    await flushCandidates(entry);
    await attachLocalTracks(entry);
    await entry.pc.setLocalDescription(await entry.pc.createAnswer());
    send({ type: "answer", to: message.from, sdp: entry.pc.localDescription.sdp });
  } else if (entry && entry.pc.signalingState === "have-local-offer") {
    await entry.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    await flushCandidates(entry);
  }
}

async function onCandidate(message) {
  const entry = peers.get(message.from);
  if (!entry) {
    // Trickled candidates may overtake the description: keep them until the peer connection exists.
    if (!early.has(message.from)) early.set(message.from, []);
    early.get(message.from).push(message.candidate);
    return;
  }
  if (!entry.remoteSet) entry.queue.push(message.candidate);
  else await addCandidate(entry, message.candidate);
}

// ---- modality ------------------------------------------------------------------------------------------

async function applyModality(next) {
  if (next === modality) return;
  modality = next;
  if (next === "audio") {
    for (const track of localStream.getVideoTracks()) {
      track.stop();
      localStream.removeTrack(track);
    }
    $("local-video").srcObject = localStream;
  } else {
    const camera = await navigator.mediaDevices.getUserMedia({ video: true });
    const [track] = camera.getVideoTracks();
    track.enabled = !cameraOff;
    localStream.addTrack(track);
    $("local-video").srcObject = localStream;
  }
  for (const entry of peers.values()) {
    const t = transceiverOf(entry.pc, "video");
    if (t) await t.sender.replaceTrack(localTrack("video"));
  }
  root.dataset.modality = modality;
  setText("call-modality", modality === "audio" ? "Audio only: no video is sent" : "Video");
  controlsFor(modality);
}

function controlsFor(current) {
  const toAudio = $("to-audio-group");
  const toVideo = $("to-video");
  if (toAudio) toAudio.hidden = current === "audio";
  if (toVideo) toVideo.hidden = current !== "audio";
  const camera = $("camera");
  if (camera) camera.hidden = current === "audio";
}

// ---- signaling -----------------------------------------------------------------------------------------

function handle(message) {
  switch (message.type) {
    case "welcome":
      self = message.self;
      for (const peerId of [...peers.keys()]) closePeer(peerId);
      applyModality(message.modality).catch(() => {});
      status("Waiting for the others to join…");
      return undefined;
    case "join":
    case "peer":
      onPresence(message);
      return undefined;
    case "leave": {
      const entry = peers.get(message.from);
      if (entry && entry.conn === message.conn) {
        closePeer(message.from);
        status("The other participant left or lost connection; they can rejoin.");
      }
      return undefined;
    }
    case "offer":
    case "answer":
      onDescription(message).catch((e) => status(`Negotiation failed: ${e.name}`));
      return undefined;
    case "candidate":
      onCandidate(message).catch(() => {});
      return undefined;
    case "modality":
      applyModality(message.modality).catch((e) => status(`Could not switch: ${e.name}`));
      return undefined;
    case "error":
      status(message.detail);
      return undefined;
    case "replaced":
      finish("You joined this visit from another window; this one is closed.");
      return "stop";
    case "ended":
      finish("The visit has ended.");
      setTimeout(() => location.assign(role === "interpreter" || role === "caregiver" ? "/login" : `/visits/${id}`), 1500);
      return "stop";
    default:
      return undefined;
  }
}

function finish(text) {
  finished = true;
  status(text);
  for (const peerId of [...peers.keys()]) closePeer(peerId);
  localStream?.getTracks().forEach((t) => t.stop());
  for (const button of root.querySelectorAll(".controls button")) button.disabled = true;
}

async function join() {
  $("join-call").disabled = true;
  status("Starting camera and microphone…");
  try {
    await openLocalMedia();
  } catch (error) {
    status("Camera or microphone unavailable. Ask your clinician to continue as an audio-only visit.");
    $("join-call").disabled = false;
    return;
  }
  try {
    iceConfig = { iceServers: (await api("/api/v1/visits/ice-servers")).iceServers };
  } catch {
    iceConfig = { iceServers: [] };
  }
  $("join-call").hidden = true;
  for (const button of root.querySelectorAll(".controls button")) button.disabled = false;
  controlsFor(modality);
  signal = liveSocket(`/ws/visits/${id}/signal`, {
    onMessage: handle,
    onDown() {
      if (finished) return;
      status("Connection lost; reconnecting to the same visit…");
    },
  });
}

// ---- controls ------------------------------------------------------------------------------------------

function wire() {
  $("join-call")?.addEventListener("click", join);
  $("mute")?.addEventListener("click", (event) => {
    muted = !muted;
    localStream.getAudioTracks().forEach((t) => (t.enabled = !muted));
    event.target.textContent = muted ? "Unmute" : "Mute";
    event.target.setAttribute("aria-pressed", String(muted));
  });
  $("camera")?.addEventListener("click", async (event) => {
    cameraOff = !cameraOff;
    localStream.getVideoTracks().forEach((t) => (t.enabled = !cameraOff));
    event.target.textContent = cameraOff ? "Turn camera on" : "Turn camera off";
    event.target.setAttribute("aria-pressed", String(cameraOff));
  });
  $("to-audio")?.addEventListener("click", () => {
    send({ type: "modality", modality: "audio", reason: $("audio-reason").value });
  });
  $("to-video")?.addEventListener("click", () => {
    send({ type: "modality", modality: "video", reason: "video_restored" });
  });
  $("end-visit")?.addEventListener("click", async () => {
    try {
      await api(`/api/v1/visits/${id}/end`, { method: "POST", csrf });
    } catch (error) {
      status(error.message);
    }
  });
  $("leave")?.addEventListener("click", () => {
    send({ type: "bye" });
    signal?.stop();
    finish("You left the visit. You can rejoin from the visit page while it lasts.");
  });
  $("invite-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api(`/api/v1/visits/${id}/invitations`, {
        method: "POST",
        csrf,
        body: { role: $("invite-role").value, display_name: $("invite-name").value },
      });
      $("invite-link").value = made.url;
    } catch (error) {
      status(error.message);
    }
  });
}

// ---- statistics (shown as connection quality) ------------------------------------------------------------

async function stats() {
  const out = [];
  for (const [peerId, entry] of peers) {
    const report = await entry.pc.getStats();
    const row = {
      peer: peerId,
      state: entry.pc.connectionState,
      videoReadyState: entry.tile.video.readyState,
      inbound: { audio: 0, video: 0 },
      framesDecoded: 0,
      outbound: { audio: 0, video: 0 },
      videoSenders: entry.pc.getSenders().filter((s) => s.track && s.track.kind === "video").length,
    };
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind in row.inbound) {
        row.inbound[r.kind] += r.bytesReceived || 0;
        if (r.kind === "video") row.framesDecoded += r.framesDecoded || 0;
      }
      if (r.type === "outbound-rtp" && r.kind in row.outbound) row.outbound[r.kind] += r.bytesSent || 0;
    });
    out.push(row);
  }
  return out;
}

let last = null;
setInterval(async () => {
  const now = await stats();
  if (last && now.length) {
    const kbit = (kind) =>
      now.reduce((sum, r) => sum + r.inbound[kind] - (last.find((l) => l.peer === r.peer)?.inbound[kind] || 0), 0) / 250;
    setText("call-quality", `Receiving: audio ${kbit("audio").toFixed(0)} kbit/s, video ${kbit("video").toFixed(0)} kbit/s`);
  }
  last = now;
}, 2000);

window.telecareCall = { stats, get modality() { return modality; }, get self() { return self; } };

if (root.dataset.allowed === "yes") wire();
