// The earnings page: the chart of earnings over time, and showing refusals that htmx would otherwise drop.
(() => {
  "use strict";

  window.openledger.chartOnLoad("earnings-chart", "earnings-data", ({ labels, daily, cumulative, symbol }) => ({
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
  }));

  // A refused claim (4xx) or an unreachable chain (503) comes back with the balances saying why: show it.
  window.openledger.swapRefusals((status) => (status >= 400 && status < 500) || status === 503);
})();
