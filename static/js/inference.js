// The inference pages: pick a version, build a chat, and follow an answer as it streams in (server-sent events).
(() => {
  "use strict";

  // A refusal (4xx: bad options, rate limit) or an unreachable chain (503) comes with a fragment that says why.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const status = event.detail.xhr.status;
    if ((status >= 400 && status < 500) || status === 503) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

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
    root.querySelectorAll("#ask-form").forEach(showCode);
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
      showCode(form);
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
      showCode(form);
      turn.querySelector("textarea").focus();
      return;
    }
    const remove = event.target.closest("[data-remove-turn]");
    if (remove) {
      const turns = remove.closest("[data-chat-turns]");
      if (turns.querySelectorAll("[data-chat-turn]").length > 1) remove.closest("[data-chat-turn]").remove();
      else remove.closest("[data-chat-turn]").querySelector("textarea").value = "";
      const form = document.getElementById("ask-form");
      if (form) showCode(form);
    }
  });

  // Ctrl+Enter (Cmd+Enter on a Mac) in any field of the ask form sends it, as in the chat tools people know.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.isComposing) return;
    const form = event.target.closest && event.target.closest("#ask-form");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button && !button.disabled) form.requestSubmit(button);
  });

  // Keep the answer in view: bring the answer area up when it arrives, and follow the end of a streaming answer
  // while the reader stays at it (scrolling up to reread stops the following until they come back down).
  const SLACK_PX = 48;
  function atEnd(element) {
    return element.getBoundingClientRect().bottom <= window.innerHeight + SLACK_PX;
  }
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "answer" && event.detail.target.querySelector("[data-run]")) {
      event.detail.target.scrollIntoView({ block: "start" });
    }
  });

  // ``View code``: the same question through the OpenAI-compatible API, as curl and with the ``openai`` client,
  // rebuilt from the form as it changes.
  function askBody(form) {
    const value = (name) => {
      const field = form.querySelector(`[name=${name}]`);
      return field ? field.value.trim() : "";
    };
    const number = (name) => (value(name) === "" || Number.isNaN(Number(value(name))) ? null : Number(value(name)));
    const version = value("version");
    const body = { model: version ? `mv-${version}` : "mv-<choose a version>" };
    const mode = form.querySelector("input[name=mode]:checked");
    if (mode && mode.value === "prompt") {
      body.prompt = form.querySelector("[name=prompt]").value;
    } else {
      body.messages = [...form.querySelectorAll("[data-chat-turns] [data-chat-turn]")]
        .map((turn) => ({ role: turn.querySelector("select").value, content: turn.querySelector("textarea").value }))
        .filter((m) => m.content.trim() !== "");
    }
    for (const [name, key] of [["temperature", "temperature"], ["top_p", "top_p"], ["max_new_tokens", "max_tokens"], ["seed", "seed"]]) {
      const n = number(name);
      if (n !== null) body[key] = n;
    }
    const stop = form.querySelector("[name=stop]").value.split(/\r?\n/).filter((s) => s !== "");
    if (stop.length) body.stop = stop;
    return body;
  }
  const shellQuote = (text) => "'" + text.replaceAll("'", "'\\''") + "'";
  // A Python literal of JSON data (strings in JSON's quoting, which Python reads the same)
  function pyLiteral(data, indent) {
    if (data === null) return "None";
    if (data === true || data === false) return data ? "True" : "False";
    if (typeof data !== "object") return JSON.stringify(data);
    const inner = indent + "    ";
    if (Array.isArray(data)) {
      return data.length ? "[\n" + data.map((v) => inner + pyLiteral(v, inner) + ",").join("\n") + "\n" + indent + "]" : "[]";
    }
    const items = Object.entries(data).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${pyLiteral(v, inner)},`);
    return items.length ? "{\n" + items.join("\n") + "\n" + indent + "}" : "{}";
  }
  function showCode(form) {
    const panel = form.querySelector("[data-view-code]");
    if (!panel) return;
    const body = askBody(form);
    const chat = "messages" in body;
    const endpoint = chat ? "chat/completions" : "completions";
    const base = new URL("/v1/", window.location.origin).href;
    panel.querySelector("[data-code-body]").textContent = JSON.stringify(body);
    panel.querySelector("[data-code-curl]").textContent =
      `curl ${base}${endpoint} \\\n  -H "Authorization: Bearer $OPENLEDGER_TOKEN" \\\n  -H "Content-Type: application/json" \\\n  -d ${shellQuote(JSON.stringify(body, null, 2))}`;
    const { model, ...rest } = body;
    const args = Object.entries(rest).map(([k, v]) => `    ${k}=${pyLiteral(v, "    ")},`).join("\n");
    const call = chat ? "client.chat.completions.create" : "client.completions.create";
    const answer = chat ? "reply.choices[0].message.content" : "reply.choices[0].text";
    panel.querySelector("[data-code-python]").textContent =
      `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key=os.environ["OPENLEDGER_TOKEN"])\n` +
      `reply = ${call}(\n    model=${JSON.stringify(model)},\n${args}\n)\nprint(${answer})`;
  }
  document.addEventListener("input", (event) => {
    const form = event.target.closest && event.target.closest("#ask-form");
    if (form) showCode(form);
  });
  document.addEventListener("change", (event) => {
    const form = event.target.closest && event.target.closest("#ask-form");
    if (form) showCode(form);
  });
  document.addEventListener("toggle", (event) => {
    if (event.target.matches && event.target.matches("[data-view-code]")) showCode(event.target.closest("form"));
  }, true);

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
      const following = fresh || atEnd(card);
      fresh = false;
      answer.textContent += JSON.parse(event.data).text;
      if (following && !atEnd(card)) card.scrollIntoView({ block: "end" });
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
