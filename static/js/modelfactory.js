// ModelFactory pages: preset buttons that fill the fine-tune form, the live loss chart of a job, refusals and
// confirmations. Everything here is an enhancement: without JavaScript the presets post the form and the job page
// reloads by hand.
(() => {
  "use strict";

  function fillPreset(form, values) {
    for (const [name, value] of Object.entries(values)) {
      const inputs = form.querySelectorAll(`[name="${name}"]`);
      inputs.forEach((input) => {
        if (input.type === "radio" || input.type === "checkbox") {
          input.checked = String(input.value) === String(value);
        } else {
          input.value = value === null || value === undefined ? "" : String(value);
        }
      });
    }
    syncLengthMode(form);
    // one change event on the form: htmx refreshes the estimate panel
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function syncLengthMode(form) {
    const mode = form.querySelector('[name="length_mode"]:checked');
    if (!mode) return;
    const epochs = form.querySelector('[name="epochs"]');
    const steps = form.querySelector('[name="max_steps"]');
    if (epochs) epochs.readOnly = mode.value === "steps";
    if (steps) steps.readOnly = mode.value !== "steps";
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-preset]");
    const data = document.getElementById("preset-values");
    if (button && data) {
      event.preventDefault();
      const presets = JSON.parse(data.textContent);
      fillPreset(button.form, presets[button.dataset.preset]);
      document.querySelectorAll("[data-preset]").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
      return;
    }
    const confirmButton = event.target.closest("[data-confirm]");
    if (confirmButton && !window.confirm(confirmButton.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("change", (event) => {
    if (event.target.name === "length_mode") syncLengthMode(event.target.form);
  });

  let chart = null;

  function lossPoints(values, steps) {
    const points = [];
    values.forEach((y, i) => {
      if (y !== null && y !== undefined) points.push({ x: steps[i], y });
    });
    return points;
  }

  function drawLoss() {
    const canvas = document.getElementById("loss-chart");
    const data = document.getElementById("loss-data");
    if (!canvas || !data || typeof window.Chart === "undefined") return;
    const { steps, train, eval: evalLoss, total } = JSON.parse(data.textContent);
    const trainPoints = lossPoints(train, steps);
    const evalPoints = lossPoints(evalLoss, steps);
    canvas.dataset.points = String(trainPoints.length);
    if (chart) {
      chart.data.datasets[0].data = trainPoints;
      chart.data.datasets[1].data = evalPoints;
      chart.options.scales.x.max = total || undefined;
      chart.update("none");
      return;
    }
    chart = new window.Chart(canvas, {
      type: "line",
      data: {
        datasets: [
          { label: "train loss", data: trainPoints, borderColor: "#0172ad", backgroundColor: "#0172ad", tension: 0.2, pointRadius: 2 },
          { label: "eval loss", data: evalPoints, borderColor: "#c8372d", backgroundColor: "#c8372d", tension: 0.2, pointRadius: 4, showLine: true },
        ],
      },
      options: {
        animation: false,
        parsing: false,
        scales: {
          x: { type: "linear", min: 0, max: total || undefined, title: { display: true, text: "step" }, ticks: { precision: 0 } },
          y: { title: { display: true, text: "loss" } },
        },
      },
    });
  }

  document.addEventListener("htmx:afterSettle", (event) => {
    drawLoss();
    const form = document.getElementById("finetune-form");
    if (form) syncLengthMode(form);
  });

  // A refusal (4xx) comes back with a fragment that says why: show it instead of dropping it.
  window.openledger.swapRefusals((status) => status >= 400 && status < 500);

  window.addEventListener("load", () => {
    drawLoss();
    const form = document.getElementById("finetune-form");
    if (form) syncLengthMode(form);
  });
})();
