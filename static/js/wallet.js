// Links a wallet through an injected EIP-1193 provider (window.ethereum). The key never leaves the wallet: the page
// asks the wallet for its account, the server answers with an EIP-4361 message, the wallet signs it with
// personal_sign, and only the signature is posted back. Without a provider the buttons stay hidden and the page
// works by copy and paste.
(function () {
  "use strict";

  function provider() {
    return window.ethereum && typeof window.ethereum.request === "function" ? window.ethereum : null;
  }

  function utf8Hex(text) {
    const bytes = new TextEncoder().encode(text);
    return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function reveal(root) {
    if (!provider()) return;
    root.querySelectorAll("[data-wallet-connect], [data-wallet-sign]").forEach((button) => {
      button.hidden = false;
    });
  }

  function showError(form, text) {
    const section = form.closest("article") || form;
    let line = section.querySelector("[data-wallet-error]");
    if (!line) {
      line = document.createElement("p");
      line.className = "message message-error";
      line.setAttribute("role", "alert");
      line.dataset.walletError = "";
      form.before(line);
    }
    line.textContent = text;
  }

  async function connect(button) {
    const form = button.closest("form");
    const accounts = await provider().request({ method: "eth_requestAccounts" });
    if (!accounts || accounts.length === 0) throw new Error("The wallet shared no account.");
    form.elements.address.value = accounts[0];
    form.requestSubmit();
  }

  async function sign(button) {
    const form = button.closest("form");
    const wanted = button.dataset.address;
    const accounts = await provider().request({ method: "eth_requestAccounts" });
    const account = (accounts || []).find((a) => a.toLowerCase() === wanted.toLowerCase());
    if (!account) throw new Error("Switch your wallet to " + wanted + " and try again.");
    // The textarea's value has LF line ends, exactly the bytes the server issued.
    const message = form.elements.message.value;
    const signature = await provider().request({ method: "personal_sign", params: [utf8Hex(message), account] });
    form.elements.signature.value = signature;
    form.requestSubmit();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-wallet-connect], [data-wallet-sign]");
    if (!button || !provider()) return;
    event.preventDefault();
    const action = "walletConnect" in button.dataset ? connect : sign;
    button.setAttribute("aria-busy", "true");
    action(button)
      .catch((err) => showError(button.closest("form"), (err && err.message) || String(err)))
      .finally(() => button.removeAttribute("aria-busy"));
  });

  // A refused link comes back as 400 with the fragment explaining why: show it instead of dropping it.
  window.openledger.swapRefusals((status) => status === 400);
  document.addEventListener("htmx:load", (event) => reveal(event.detail.elt));
  document.addEventListener("DOMContentLoaded", () => reveal(document));
})();
