// Score trend (measurement-based care): one line per questionnaire over time, drawn with Chart.js (served
// locally). The table beside it carries the same figures for screen readers and printing.
const holder = document.getElementById("qn-trend");
const source = document.getElementById("qn-trend-data");
if (holder && source && window.Chart) {
  const data = JSON.parse(source.textContent);
  for (const [slug, points] of Object.entries(data.series)) {
    if (!points.length) continue;
    const wrap = document.createElement("div");
    wrap.className = "chart";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `${data.titles[slug] || slug} total scores: ${points.map((p) => p.v).join(", ")}`);
    wrap.append(canvas);
    holder.append(wrap);
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: points.map((p) => p.t.slice(0, 10)),
        datasets: [{ label: data.titles[slug] || slug, data: points.map((p) => p.v), tension: 0 }],
      },
      options: { animation: false, scales: { y: { min: 0, max: slug === "phq-9" ? 27 : 21 } } },
    });
  }
}
