// The record viewer's keyboard: j/k next/previous record, o open it, x exclude, a/r accept/reject its contribution,
// / search. Keys never act while typing in a field or with a modifier held. Every action is also a plain link or
// button on the page: the keys only reach them faster.
(() => {
  "use strict";

  const typing = (el) => el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));

  function listPage(table) {
    const rows = Array.from(table.querySelectorAll("tbody tr[data-record]"));
    let current = -1;

    function select(index) {
      if (!rows.length) return;
      current = Math.max(0, Math.min(rows.length - 1, index));
      rows.forEach((row, i) => row.classList.toggle("current", i === current));
      rows[current].focus({ preventScroll: true });
      rows[current].scrollIntoView({ block: "nearest" });
    }

    function decide(action) {
      const row = rows[current];
      const form = document.getElementById("record-decide");
      if (!row || !form) return;
      const contribution = row.dataset.contribution;
      if (!row.dataset.pending) {
        window.alert(`Contribution #${contribution} is no longer pending.`);
        return;
      }
      let reason = "";
      if (action === "accept") {
        if (!window.confirm(`Accept contribution #${contribution}?`)) return;
      } else {
        reason = (window.prompt(`Why reject contribution #${contribution}? The contributor will read it.`) || "").trim();
        if (!reason) return;
      }
      form.querySelector("[data-decide-contribution]").value = contribution;
      form.querySelector("[data-decide-action]").value = action;
      form.querySelector("[data-decide-reason]").value = reason;
      form.submit();
    }

    const tickAll = document.querySelector("[data-tick-all]");
    if (tickAll) {
      tickAll.addEventListener("change", () => {
        rows.forEach((row) => {
          const box = row.querySelector("input[type=checkbox]");
          if (box) box.checked = tickAll.checked;
        });
      });
    }

    return (key) => {
      if (key === "j") select(current + 1);
      else if (key === "k") select(current < 0 ? 0 : current - 1);
      else if (key === "o" && current >= 0) rows[current].querySelector("[data-record-link]").click();
      else if (key === "x" && current >= 0) {
        const box = rows[current].querySelector("input[type=checkbox]");
        const reason = document.querySelector("[data-bulk-reason]");
        if (!box || !reason) return false;
        box.checked = true;
        reason.focus();
      } else if ((key === "a" || key === "r") && current >= 0) decide(key === "a" ? "accept" : "reject");
      else return false;
      return true;
    };
  }

  function recordPage() {
    return (key) => {
      const target = document.querySelector(`[data-key="${key}"]`);
      if (!target) return false;
      if (target.tagName === "INPUT") target.focus();
      else if (key === "a") {
        if (window.confirm(target.textContent.trim().replace(/ \(a\)$/, "") + "?")) target.click();
      } else target.click();
      return true;
    };
  }

  function start() {
    const table = document.querySelector("table[data-records]");
    const handle = table ? listPage(table) : recordPage();
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      if (event.key === "/") {
        const search = document.querySelector("[data-search]");
        if (search) {
          event.preventDefault();
          search.focus();
        }
        return;
      }
      if (handle(event.key)) event.preventDefault();
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
