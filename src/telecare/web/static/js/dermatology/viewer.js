// Skin case viewer: a photo zooms in place on click, Enter or Space (Escape or a second click zooms out; + and
// - step the zoom while it has focus); ticking "Compare" on two photos, current or earlier, shows them side
// by side. Without JavaScript each photo is a link to the full-size file.
const viewer = document.querySelector("[data-skin-viewer]");
if (viewer) {
  const hint = viewer.querySelector("[data-viewer-hint]");
  if (hint) hint.textContent = "Click a photo (or press Enter) to zoom; + and - change the zoom, Escape resets. Tick Compare on two photos to see them side by side.";
  const levels = [1, 2, 3, 4];
  const setZoom = (link, level) => {
    const figure = link.closest("[data-photo]");
    link.dataset.level = String(level);
    figure.classList.toggle("zoomed", level > 1);
    link.style.setProperty("--zoom", String(level));
    link.setAttribute("aria-pressed", level > 1 ? "true" : "false");
  };
  const arm = (link) => {
    link.setAttribute("role", "button");
    link.setAttribute("aria-pressed", "false");
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      const level = Number(link.dataset.level || "1");
      if (level > 1) {
        setZoom(link, 1);
        return;
      }
      const img = link.querySelector("img");
      const rect = img.getBoundingClientRect();
      // Zoom towards where the photo was clicked (the centre from the keyboard).
      const x = ev.clientX ? ((ev.clientX - rect.left) / rect.width) * 100 : 50;
      const y = ev.clientY ? ((ev.clientY - rect.top) / rect.height) * 100 : 50;
      img.style.transformOrigin = `${x}% ${y}%`;
      setZoom(link, 2);
    });
    link.addEventListener("keydown", (ev) => {
      const level = Number(link.dataset.level || "1");
      if (ev.key === " ") {
        ev.preventDefault();
        link.click();
      } else if (ev.key === "+" || ev.key === "=") {
        ev.preventDefault();
        setZoom(link, levels[Math.min(levels.indexOf(level) + 1, levels.length - 1)]);
      } else if (ev.key === "-") {
        ev.preventDefault();
        setZoom(link, levels[Math.max(levels.indexOf(level) - 1, 0)]);
      } else if (ev.key === "Escape") {
        setZoom(link, 1);
      }
    });
  };
  viewer.querySelectorAll("[data-zoom]").forEach(arm);

  const region = viewer.querySelector("[data-compare-region]");
  const pair = viewer.querySelector("[data-compare-pair]");
  const picked = [];
  const render = () => {
    pair.replaceChildren();
    for (const box of picked) {
      const original = viewer.querySelector(`[data-photo][data-file-id="${box.value}"]`);
      const figure = document.createElement("figure");
      figure.className = "skin-photo";
      figure.dataset.photo = "";
      const link = document.createElement("a");
      link.href = `/api/v1/files/${box.value}`;
      link.className = "zoom";
      link.dataset.zoom = "";
      link.setAttribute("aria-label", `Zoom: ${box.dataset.label}`);
      const img = document.createElement("img");
      img.src = link.href;
      img.alt = box.dataset.label;
      const source = original && original.querySelector("img");
      if (source) {
        img.width = source.width;
        img.height = source.height;
      }
      link.append(img);
      const caption = document.createElement("figcaption");
      caption.textContent = box.dataset.label;
      figure.append(link, caption);
      pair.append(figure);
      arm(link);
    }
    region.hidden = picked.length < 2;
    if (picked.length === 2) region.scrollIntoView({ block: "nearest" });
  };
  viewer.querySelectorAll("[data-compare]").forEach((box) => {
    box.addEventListener("change", () => {
      const at = picked.indexOf(box);
      if (box.checked && at < 0) {
        picked.push(box);
        if (picked.length > 2) picked.shift().checked = false; // keep the last two picked
      } else if (!box.checked && at >= 0) {
        picked.splice(at, 1);
      }
      render();
    });
  });
}
