// The statistics page: bar charts of the numbers the page also lists in tables (Chart.js, loaded before the load event).
(() => {
  "use strict";

  const COLOUR = "rgba(1,114,173,0.55)";

  function bar(id, data, options = {}) {
    const canvas = document.getElementById(id);
    if (!canvas || !data || typeof window.Chart === "undefined") return;
    canvas.dataset.bars = String(data.counts.length);
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: [{ label: "records", data: data.counts, backgroundColor: COLOUR, maxBarThickness: 48 }] },
      options: {
        animation: false,
        indexAxis: options.horizontal ? "y" : "x",
        plugins: { legend: { display: false } },
        scales: { [options.horizontal ? "x" : "y"]: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  }

  window.addEventListener("load", () => {
    const source = document.getElementById("statistics-data");
    if (!source) return;
    const charts = JSON.parse(source.textContent);
    bar("chart-words", charts.words);
    bar("chart-tokens", charts.tokens);
    bar("chart-languages", charts.languages, { horizontal: true });
    bar("chart-contributors", charts.contributors, { horizontal: true });
    bar("chart-licences", charts.licences, { horizontal: true });
  });
})();
