// Datanet pages: the contributions chart, confirmations, and showing refusals that htmx would otherwise drop.
(() => {
  "use strict";

  function drawChart() {
    const canvas = document.getElementById("contributions-chart");
    const data = document.getElementById("contributions-data");
    if (!canvas || !data || typeof window.Chart === "undefined") return;
    const { labels, counts } = JSON.parse(data.textContent);
    new window.Chart(canvas, {
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
    });
  }

  // A refusal (4xx) or an unreachable chain (503) comes back with a fragment that says why: show it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const status = event.detail.xhr.status;
    if ((status >= 400 && status < 500) || status === 503) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // Chart.js is loaded with defer after this file: wait for the whole page.
  window.addEventListener("load", drawChart);
})();
