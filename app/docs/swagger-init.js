// Starts Swagger UI on /docs. A file, not an inline script, so the page's CSP needs no exception.
"use strict";
window.addEventListener("load", function () {
  var openapiUrl = document.getElementById("swagger-ui").dataset.openapiUrl;
  window.ui = SwaggerUIBundle({
    url: openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
