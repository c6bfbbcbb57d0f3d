// The contribute form: send it with XMLHttpRequest to show upload progress, then show the answer in place.
// Without JavaScript the form posts normally and the server answers with the whole page.
(() => {
  "use strict";

  function humanSize(bytes) {
    return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MB" : Math.max(1, Math.round(bytes / 1024)) + " KB";
  }

  function send(form) {
    const progress = form.querySelector("#upload-progress");
    const status = form.querySelector("#upload-status");
    const button = form.querySelector("button[type=submit]");
    const files = Array.from(form.querySelector("input[type=file]").files);
    const maxBytes = Number(form.dataset.maxBytes);
    const maxFiles = Number(form.dataset.maxFiles);
    // Refuse early what the server would refuse anyway, without sending the bytes.
    const tooLarge = files.find((file) => file.size > maxBytes);
    if (tooLarge) {
      status.textContent = `${tooLarge.name} is ${humanSize(tooLarge.size)}: the limit is ${humanSize(maxBytes)} a file.`;
      status.className = "error-text";
      return;
    }
    if (files.length > maxFiles) {
      status.textContent = `At most ${maxFiles} files at once.`;
      status.className = "error-text";
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("HX-Request", "true"); // the server answers with the result fragment only
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const percent = Math.round((100 * event.loaded) / event.total);
      progress.value = percent;
      status.textContent = `Uploading… ${percent}% of ${humanSize(event.total)}`;
    });
    xhr.upload.addEventListener("load", () => {
      progress.value = 100;
      status.textContent = "Uploaded; parsing and storing…";
    });
    xhr.addEventListener("load", () => {
      button.removeAttribute("aria-busy");
      button.disabled = false;
      // A result fragment replaces the last one; a refusal fragment (413, 403) goes inside the result area.
      const result = document.getElementById("result");
      const holder = document.createElement("div");
      holder.innerHTML = xhr.responseText;
      const incoming = holder.querySelector("#result");
      if (incoming) result.replaceWith(incoming);
      else result.replaceChildren(...holder.childNodes);
      const fresh = document.getElementById("result");
      if (window.htmx && fresh) window.htmx.process(fresh);
      if (xhr.status < 400) form.reset();
      progress.value = 100;
      progress.dataset.done = "true";
      status.textContent = xhr.status < 400 ? "Done." : "Some of it was refused: see above.";
      status.className = xhr.status < 400 ? "muted" : "error-text";
      fresh && fresh.scrollIntoView({ behavior: "smooth", block: "start" });
    });
    xhr.addEventListener("error", () => {
      button.removeAttribute("aria-busy");
      button.disabled = false;
      status.textContent = "The upload failed: the connection was lost. Try again.";
      status.className = "error-text";
    });
    progress.hidden = false;
    progress.value = 0;
    delete progress.dataset.done;
    status.className = "muted";
    status.textContent = "Starting…";
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    xhr.send(new FormData(form));
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-upload]");
    if (!form || typeof XMLHttpRequest === "undefined" || typeof FormData === "undefined") return;
    event.preventDefault();
    send(form);
  });
})();
