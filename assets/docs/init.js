// Starts Swagger UI on this service's own OpenAPI document. It is a file rather than an inline
// script so the page's Content-Security-Policy can forbid inline code.
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    // Relative to /api/docs, so the page also works behind a proxy that adds a path prefix.
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // The default validator is a third-party service; the page talks only to this one.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
