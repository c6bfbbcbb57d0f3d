// The governance pages: the tally chart, and forms signed by the browser wallet (EIP-712, eth_signTypedData_v4).
// A signing form (data-gov-sign) posts twice to its action: first without a signature, and the server answers the
// typed data to sign; the wallet signs it; then with the signature (and the fields the server named), and the server
// relays it and answers the transaction's status, which this script follows until it is mined. The key never leaves
// the wallet. Then the page refreshes its tally (data-refresh), reloads (data-reload) or goes where the server said.
(function () {
  "use strict";

  let chart = null;

  function drawTally() {
    const canvas = document.getElementById("tally-chart");
    const source = document.getElementById("tally-data");
    if (!canvas || !source || typeof window.Chart === "undefined") return;
    const { labels, votes, quorum } = JSON.parse(source.textContent);
    if (chart) {
      chart.data.datasets[0].data = votes;
      chart.data.datasets[1].data = labels.map(() => quorum);
      chart.update();
      return;
    }
    chart = new window.Chart(canvas, {
      data: {
        labels,
        datasets: [
          { type: "bar", label: "votes (tokens)", data: votes, backgroundColor: ["#11622f", "#8c1d13", "#7b8495"] },
          { type: "line", label: "quorum (for + abstain)", data: labels.map(() => quorum), borderColor: "#0172ad", borderDash: [6, 4], pointRadius: 0 },
        ],
      },
      options: { animation: false, scales: { y: { beginAtZero: true } } },
    });
  }

  function provider() {
    return window.ethereum && typeof window.ethereum.request === "function" ? window.ethereum : null;
  }

  function statusLine(form) {
    return form.querySelector("[data-sign-status]") || document.querySelector("[data-sign-status]");
  }

  function errorLine(form) {
    return form.querySelector("[data-sign-error]") || document.querySelector("[data-sign-error]");
  }

  function say(form, text) {
    const line = statusLine(form);
    if (!line) return;
    line.hidden = !text;
    line.textContent = text;
  }

  function fail(form, text) {
    const line = errorLine(form);
    say(form, "");
    if (!line) return;
    line.hidden = !text;
    line.textContent = text;
  }

  async function post(url, data) {
    const response = await fetch(url, { method: "POST", body: data, headers: { Accept: "application/json" }, credentials: "same-origin" });
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      throw new Error(response.status === 403 ? "Refused (403): reload the page and try again." : `The server answered ${response.status}.`);
    }
    if (!response.ok && response.status !== 202) throw new Error(body.error || `The server answered ${response.status}.`);
    return body;
  }

  const WORDS = { pending: "waiting to be sent", submitted: "sent, waiting to be mined", confirmed: "mined", failed: "refused by the chain" };

  async function follow(form, transaction) {
    let row = transaction;
    for (let i = 0; i < 120 && (row.status === "pending" || row.status === "submitted"); i += 1) {
      say(form, `Transaction ${row.tx_hash || ""} ${WORDS[row.status]}…`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const response = await fetch(row.status_url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) row = (await response.json()).transaction;
    }
    if (row.status === "failed") throw new Error(`The chain refused it: ${row.error}`);
    return row;
  }

  async function submit(form, data) {
    if (!provider()) throw new Error("No browser wallet found: install one (or use the REST API with a signature made elsewhere).");
    fail(form, "");
    say(form, "Preparing the message to sign…");
    const prepared = await post(form.action, data);
    if (prepared.words) say(form, `Sign in your wallet: ${prepared.words.join("; ")}`);
    else say(form, "Sign in your wallet…");
    const accounts = await provider().request({ method: "eth_requestAccounts" });
    const account = (accounts || []).find((a) => a.toLowerCase() === prepared.account.toLowerCase());
    if (!account) throw new Error(`Switch your wallet to ${prepared.account} and try again.`);
    const signature = await provider().request({
      method: "eth_signTypedData_v4",
      params: [account, JSON.stringify(prepared.typed_data)],
    });
    data.set("signature", signature);
    Object.entries(prepared.fields || {}).forEach(([name, value]) => data.set(name, value));
    say(form, "Relaying your signature…");
    const relayed = await post(form.action, data);
    const row = await follow(form, relayed.transaction);
    say(form, `Done: transaction ${row.tx_hash} mined.`);
    if (relayed.redirect) window.location.assign(relayed.redirect);
    else if ("reload" in form.dataset) window.location.reload();
    else if ("refresh" in form.dataset) document.body.dispatchEvent(new CustomEvent("governance:refresh"));
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-gov-sign]");
    if (!form) return;
    event.preventDefault();
    const submitter = event.submitter;
    const data = new FormData(form, submitter); // before the buttons are disabled: a disabled submitter is left out
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    if (submitter) submitter.setAttribute("aria-busy", "true");
    submit(form, data)
      .catch((err) => fail(form, (err && err.message) || String(err)))
      .finally(() => {
        form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        if (submitter) submitter.removeAttribute("aria-busy");
      });
  });

  // A new tally redraws the chart; a new state brings the steps that now apply (queue, execute, ...).
  let lastState = null;
  document.addEventListener("htmx:afterSettle", () => {
    const tally = document.getElementById("tally");
    if (!tally) return;
    drawTally();
    const state = tally.dataset.state;
    if (lastState !== null && state !== lastState) document.body.dispatchEvent(new CustomEvent("governance:refresh"));
    lastState = state;
  });
  window.addEventListener("load", () => {
    const tally = document.getElementById("tally");
    lastState = tally ? tally.dataset.state : null;
    drawTally();
  });
})();
