// Datanet pages: the contributions chart, confirmations, and showing refusals that htmx would otherwise drop.
(() => {
  "use strict";

  window.openledger.chartOnLoad("contributions-chart", "contributions-data", ({ labels, counts }) => ({
    type: labels.length > 1 ? "line" : "bar",
    data: {
      labels,
      datasets: [{ label: "contributions", data: counts, borderColor: "#0172ad", backgroundColor: "rgba(1,114,173,0.35)", fill: true, tension: 0.25, maxBarThickness: 48 }],
    },
    options: {
      animation: false,
      plugins: { legend: { display: false } },
      scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  }));

  // A refusal (4xx) or an unreachable chain (503) comes back with a fragment that says why: show it.
  window.openledger.swapRefusals((status) => (status >= 400 && status < 500) || status === 503);

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });
})();
