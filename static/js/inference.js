// The inference pages: pick a version, build a chat, and follow an answer as it streams in (server-sent events).
(() => {
  "use strict";

  // A refusal (4xx: bad options, rate limit) or an unreachable chain (503) comes with a fragment that says why.
  window.openledger.swapRefusals((status) => (status >= 400 && status < 500) || status === 503);

  function showMode(form) {
    const checked = form.querySelector("input[name=mode]:checked");
    if (!checked) return;
    form.querySelectorAll("[data-mode-panel]").forEach((panel) => {
      panel.hidden = panel.dataset.modePanel !== checked.value;
    });
  }

  function markPicked() {
    const input = document.querySelector("#ask-form input[name=version]");
    const chosen = input ? input.value : "";
    document.querySelectorAll("[data-pick-version]").forEach((el) => {
      el.classList.toggle("selected", chosen !== "" && el.dataset.pickVersion === chosen);
    });
  }

  function setUp(root) {
    root.querySelectorAll("#ask-form").forEach(showMode);
    root.querySelectorAll("[data-stream-url]:not([data-streaming])").forEach(follow);
    markPicked();  // new search results, or a page opened with ?version=
  }

  document.addEventListener("change", (event) => {
    if (event.target.name === "mode") showMode(event.target.form);
  });

  document.addEventListener("click", (event) => {
    const pick = event.target.closest("[data-pick-version]");
    if (pick) {
      const form = document.getElementById("ask-form");
      if (!form) return;
      event.preventDefault();
      form.querySelector("input[name=version]").value = pick.dataset.pickVersion;
      form.querySelector("[data-picked]").innerHTML = "";
      const name = document.createElement("strong");
      name.dataset.pickedName = "";
      name.textContent = pick.dataset.versionName;
      const base = document.createElement("small");
      base.className = "muted";
      base.textContent = " on " + pick.dataset.baseName;
      form.querySelector("[data-picked]").append("Asking ", name, base);
      markPicked();
      const first = form.querySelector("textarea[name=message_content]");
      if (first && !first.closest("[hidden]")) first.focus();
      return;
    }
    if (event.target.closest("[data-add-turn]")) {
      const form = event.target.closest("form");
      const template = form.querySelector("#chat-turn-template");
      const turns = form.querySelector("[data-chat-turns]");
      const last = turns.querySelector("[data-chat-turn]:last-child select");
      const turn = template.content.firstElementChild.cloneNode(true);
      // turns alternate: after the user's message comes the assistant's, and the other way round
      if (last) turn.querySelector("select").value = last.value === "user" ? "assistant" : "user";
      turns.append(turn);
      turn.querySelector("textarea").focus();
      return;
    }
    const remove = event.target.closest("[data-remove-turn]");
    if (remove) {
      const turns = remove.closest("[data-chat-turns]");
      if (turns.querySelectorAll("[data-chat-turn]").length > 1) remove.closest("[data-chat-turn]").remove();
      else remove.closest("[data-chat-turn]").querySelector("textarea").value = "";
    }
  });

  // Follow one run's answer: append each token as it comes, then swap in the finished card from the server.
  function follow(card) {
    card.dataset.streaming = "1";
    card.dataset.chunks = "0";
    const answer = card.querySelector("[data-answer]");
    const status = card.querySelector("[data-run-status]");
    const source = new EventSource(card.dataset.streamUrl);
    let fresh = true;
    const refresh = () => {
      source.close();
      card.dataset.chunksAtEnd = card.dataset.chunks;
      if (window.htmx) window.htmx.ajax("GET", card.dataset.cardUrl, { target: card, swap: "outerHTML" });
    };
    source.addEventListener("token", (event) => {
      // the first connection replays the answer from its start: drop what the page already showed
      if (fresh) answer.textContent = "";
      fresh = false;
      answer.textContent += JSON.parse(event.data).text;
      card.dataset.chunks = String(Number(card.dataset.chunks) + 1);
      card.dataset.status = "running";
      status.textContent = "writing…";
    });
    source.addEventListener("done", refresh);
    source.addEventListener("error", (event) => {
      // an "error" event sent by the server carries data; a dropped connection does not (EventSource reconnects)
      if (event.data === undefined) return;
      const message = card.querySelector("[data-run-error]");
      message.textContent = JSON.parse(event.data).message || "The run failed.";
      message.hidden = false;
      refresh();
    });
  }

  document.addEventListener("DOMContentLoaded", () => setUp(document));
  // after any swap: the new form (a refusal replaces it) needs its mode, new answer cards need their streams
  document.addEventListener("htmx:afterSettle", () => setUp(document));
})();
