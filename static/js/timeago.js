// Keeps relative times ("7 seconds ago") true while a page stays open: every <time datetime data-relative> is
// rewritten every few seconds and after each htmx swap, in the words Django's naturaltime uses. Past a day the
// server's text stays.
(function () {
  "use strict";

  function plural(n, one, many) {
    return n === 1 ? one : `${n} ${many}`;
  }

  function words(seconds) {
    const future = seconds < 0;
    const s = Math.abs(Math.round(seconds));
    let text;
    if (s < 1) return "now";
    if (s < 60) text = plural(s, "a second", "seconds");
    else if (s < 3600) text = plural(Math.floor(s / 60), "a minute", "minutes");
    else if (s < 86400) text = plural(Math.floor(s / 3600), "an hour", "hours");
    else return null;
    return future ? `${text} from now` : `${text} ago`;
  }

  function refresh() {
    const now = Date.now();
    document.querySelectorAll("time[datetime][data-relative]").forEach((el) => {
      const at = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(at)) return;
      const text = words((now - at) / 1000);
      if (text !== null && el.textContent !== text) el.textContent = text;
    });
  }

  document.addEventListener("htmx:afterSettle", refresh);
  window.addEventListener("load", () => {
    refresh();
    window.setInterval(refresh, 5000);
  });
})();
