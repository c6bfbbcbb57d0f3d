// What the pages' own scripts share; base.html loads it on every page, before them.
window.openledger = {
  // Once the page is loaded (Chart.js comes with defer after the page's script), draw `config(data)` on the
  // <canvas id=canvasId>, data being the JSON the server put in <script id=dataId>; nothing on a page without them.
  chartOnLoad(canvasId, dataId, config) {
    window.addEventListener("load", () => {
      const canvas = document.getElementById(canvasId);
      const data = document.getElementById(dataId);
      if (!canvas || !data || typeof window.Chart === "undefined") return;
      new window.Chart(canvas, config(JSON.parse(data.textContent)));
    });
  },

  // htmx drops the body of an error response, but ours carry a fragment that says why: swap it in when `shown`
  // accepts the response's status.
  swapRefusals(shown) {
    document.addEventListener("htmx:beforeSwap", (event) => {
      if (shown(event.detail.xhr.status)) {
        event.detail.shouldSwap = true;
        event.detail.isError = false;
      }
    });
  },
};
