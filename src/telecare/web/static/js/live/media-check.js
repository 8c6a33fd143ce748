// Own camera preview and microphone input level (the device test, also shown in the call).

export function levelMeter(stream, meter) {
  const tracks = stream.getAudioTracks();
  if (!tracks.length || !meter) return () => {};
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream(tracks));
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let running = true;
  function tick() {
    if (!running) return;
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    meter.value = Math.min(1, rms * 4);
    meter.dataset.level = rms.toFixed(4);
    requestAnimationFrame(tick);
  }
  context.resume().finally(tick);
  return () => {
    running = false;
    context.close();
  };
}

async function fillSelect(select, devices, kind, current) {
  if (!select) return;
  select.replaceChildren();
  devices
    .filter((d) => d.kind === kind)
    .forEach((d, i) => {
      const option = document.createElement("option");
      option.value = d.deviceId;
      option.textContent = d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`;
      option.selected = d.deviceId === current;
      select.append(option);
    });
}

export async function startCheck({ video, meter, status, cameraSelect, micSelect, wantVideo = true }) {
  let stream = null;
  let stopMeter = () => {};
  async function open() {
    stream?.getTracks().forEach((t) => t.stop());
    stopMeter();
    const constraints = {
      audio: micSelect?.value ? { deviceId: { exact: micSelect.value } } : true,
      video: wantVideo ? (cameraSelect?.value ? { deviceId: { exact: cameraSelect.value } } : true) : false,
    };
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (error) {
      status.textContent =
        error.name === "NotAllowedError"
          ? "Camera or microphone access was blocked. Allow it in your browser settings, or ask for an audio-only visit."
          : "No camera or microphone was found.";
      status.dataset.state = "error";
      return null;
    }
    if (video) video.srcObject = stream;
    stopMeter = levelMeter(stream, meter);
    const devices = await navigator.mediaDevices.enumerateDevices();
    const [vt] = stream.getVideoTracks();
    const [at] = stream.getAudioTracks();
    await fillSelect(cameraSelect, devices, "videoinput", vt?.getSettings().deviceId);
    await fillSelect(micSelect, devices, "audioinput", at?.getSettings().deviceId);
    status.textContent = vt
      ? "Camera and microphone are working. Speak to see the level move."
      : "Microphone is working. Speak to see the level move.";
    status.dataset.state = "ok";
    return stream;
  }
  cameraSelect?.addEventListener("change", open);
  micSelect?.addEventListener("change", open);
  await open();
  return {
    stop() {
      stopMeter();
      stream?.getTracks().forEach((t) => t.stop());
    },
  };
}
