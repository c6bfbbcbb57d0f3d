// The earnings page: the chart of earnings over time, and showing refusals that htmx would otherwise drop.
(() => {
  "use strict";

  function drawChart() {
    const canvas = document.getElementById("earnings-chart");
    const data = document.getElementById("earnings-data");
    if (!canvas || !data || typeof window.Chart === "undefined") return;
    const { labels, daily, cumulative, symbol } = JSON.parse(data.textContent);
    new window.Chart(canvas, {
      data: {
        labels,
        datasets: [
          { type: "bar", label: `earned that day (${symbol})`, data: daily, backgroundColor: "rgba(1,114,173,0.35)", maxBarThickness: 48, yAxisID: "y" },
          { type: "line", label: `running total (${symbol})`, data: cumulative, borderColor: "#11622f", tension: 0.2, yAxisID: "total" },
        ],
      },
      options: {
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          y: { beginAtZero: true, position: "left" },
          total: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } },
        },
      },
    });
  }

  // A refused claim (4xx) or an unreachable chain (503) comes back with the balances saying why: show it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const status = event.detail.xhr.status;
    if ((status >= 400 && status < 500) || status === 503) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // Chart.js is loaded with defer after this file: wait for the whole page.
  window.addEventListener("load", drawChart);
})();
