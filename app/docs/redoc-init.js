// Starts ReDoc on /redoc. A file, not an inline script, so the page's CSP needs no exception.
"use strict";
(function () {
  // ReDoc's sidebar badge hard-wires an image from cdn.redoc.ly; the CSP would refuse it, but
  // the browser would still try. Off-origin image sources become an empty data: URL instead.
  function local(value) {
    return new URL(String(value), location.href).origin === location.origin ? value : "data:,";
  }
  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    var img = this instanceof HTMLImageElement && String(name).toLowerCase() === "src";
    return setAttribute.call(this, name, img ? local(value) : value);
  };
  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    configurable: true,
    enumerable: src.enumerable,
    get: src.get,
    set: function (value) { src.set.call(this, local(value)); },
  });
})();
window.addEventListener("load", function () {
  var element = document.getElementById("redoc");
  Redoc.init(element.dataset.openapiUrl, {}, element);
});
