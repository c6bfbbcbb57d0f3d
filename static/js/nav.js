// The header's menu on a narrow screen: folded behind its Menu button, opened and closed by it (CSS does the rest,
// under a max-width media query). Loaded in <head> without defer so <html> is marked before the body paints.
document.documentElement.classList.add("js");
document.addEventListener("DOMContentLoaded", () => {
  const nav = document.querySelector("[data-site-nav]");
  const button = nav && nav.querySelector("[data-nav-toggle]");
  if (!button) return;
  button.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    button.setAttribute("aria-expanded", String(open));
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && nav.classList.contains("open")) {
      nav.classList.remove("open");
      button.setAttribute("aria-expanded", "false");
      button.focus();
    }
  });
});
