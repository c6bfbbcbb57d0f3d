// Starts Redoc on the API reference page (templates/drf_spectacular/redoc.html) from its container's data attributes,
// instead of the inline script drf-spectacular's template has, which the Content-Security-Policy would block.
(() => {
  // Redoc's menu footer loads its vendor's logo from a CDN; this site makes no third-party requests (and the policy
  // would refuse it), so that one image gets an empty picture instead.
  const cdnLogo = /^https:\/\/cdn\.redoc\.ly\//;
  const blank = "data:image/gif;base64,R0lGODlhAQABAAAAACH5BAEKAAEALAAAAAABAAEAAAICTAEAOw==";
  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    const blocked = this instanceof HTMLImageElement && name === "src" && cdnLogo.test(String(value));
    return setAttribute.call(this, name, blocked ? blank : value);
  };
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    ...src,
    set(value) {
      src.set.call(this, cdnLogo.test(String(value)) ? blank : value);
    },
  });

  const container = document.getElementById("redoc-container");
  const settings = container.dataset.settings ? JSON.parse(container.dataset.settings) : {};
  window.Redoc.init(container.dataset.schemaUrl, settings, container);
})();
