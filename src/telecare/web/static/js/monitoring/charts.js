// Charts of each measure with target bands and alert markers, plus the AGP overlay (Chart.js, served locally).
const data = JSON.parse(document.getElementById("chart-data").textContent);
const Chart = window.Chart;

const bandPlugin = {
  id: "targetBand",
  beforeDatasetsDraw(chart, _args, options) {
    if (!options || options.low == null) return;
    const { ctx, chartArea, scales } = chart;
    const top = scales.y.getPixelForValue(options.high);
    const bottom = scales.y.getPixelForValue(options.low);
    ctx.save();
    ctx.fillStyle = "rgba(46, 160, 67, 0.12)";
    ctx.fillRect(chartArea.left, Math.max(top, chartArea.top), chartArea.right - chartArea.left,
      Math.min(bottom, chartArea.bottom) - Math.max(top, chartArea.top));
    ctx.restore();
  },
};

function fmtTime(ms) {
  const d = new Date(ms);
  return `${d.getMonth() + 1}/${d.getDate()} ${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function chartFor(name, points, extra) {
  const wrap = document.createElement("div");
  wrap.className = "chart";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${data.labels[name] || name}: ${points.length} readings`);
  canvas.dataset.measure = name;
  wrap.append(canvas);
  document.getElementById("charts").append(wrap);
  const band = data.bands[name];
  const values = points.map((p) => p[1]);
  const alertPoints = (data.alerts || []).map((a) => ({ x: a.t, y: Math.max(...values) }));
  const datasets = [
    { label: data.labels[name] || name, data: points.map(([x, y]) => ({ x, y })), borderColor: "#0a5bd3",
      backgroundColor: "#0a5bd3", pointRadius: points.length > 300 ? 0 : 2, borderWidth: 1.5, showLine: true },
  ];
  if (extra) datasets.push(extra);
  if (alertPoints.length && name !== "steps") {
    datasets.push({ label: "Alerts", data: alertPoints, type: "scatter", pointStyle: "triangle",
      pointRadius: 7, backgroundColor: "#b00020", borderColor: "#b00020" });
  }
  return new Chart(canvas, {
    type: "line",
    data: { datasets },
    plugins: [bandPlugin],
    options: {
      animation: false, maintainAspectRatio: false, parsing: false,
      scales: {
        x: { type: "linear", min: data.since, max: data.until, ticks: { callback: fmtTime, maxTicksLimit: 6 } },
        y: { suggestedMin: band ? band[0] * 0.9 : undefined, suggestedMax: band ? band[1] * 1.05 : undefined },
      },
      plugins: { targetBand: band ? { low: band[0], high: band[1] } : {}, legend: { display: true } },
    },
  });
}

if (data.series.systolic) {
  chartFor("systolic", data.series.systolic, {
    label: "Diastolic (mm[Hg])", data: data.series.diastolic.map(([x, y]) => ({ x, y })),
    borderColor: "#8250df", backgroundColor: "#8250df", pointRadius: 2, borderWidth: 1.5, showLine: true,
  });
}
for (const [name, points] of Object.entries(data.series)) {
  if (name === "systolic" || name === "diastolic") continue;
  chartFor(name, points);
}
if (!Object.keys(data.series).length) {
  document.getElementById("charts").textContent = "No readings in this period.";
}

const agpCanvas = document.getElementById("agp");
if (agpCanvas && data.agp && data.agp.length) {
  const xs = data.agp.map((b) => b.hour);
  const line = (key, color, fill) => ({
    label: key, data: data.agp.map((b) => ({ x: b.hour, y: b[key] })), borderColor: color,
    backgroundColor: fill || color, fill: fill ? "-1" : false, pointRadius: 0, borderWidth: key === "p50" ? 2.5 : 1,
  });
  new Chart(agpCanvas, {
    type: "line",
    data: { datasets: [
      line("p5", "#9aa5b1"), line("p25", "#6e7781", "rgba(10,91,211,0.10)"), line("p50", "#0a5bd3", "rgba(10,91,211,0.25)"),
      line("p75", "#6e7781", "rgba(10,91,211,0.25)"), line("p95", "#9aa5b1", "rgba(10,91,211,0.10)"),
    ] },
    plugins: [bandPlugin],
    options: {
      animation: false, maintainAspectRatio: false, parsing: false,
      scales: { x: { type: "linear", min: Math.min(...xs), max: Math.max(...xs), ticks: { callback: (h) => `${h}:00` } },
        y: { suggestedMin: 40, suggestedMax: 300 } },
      plugins: { targetBand: { low: 70, high: 180 } },
    },
  });
}
