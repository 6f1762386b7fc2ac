// Draws the read-only flow diagram (LogicFlow in silent mode) from the graph the server built,
// and, when the element has data-poll, redraws it whenever the instance's current steps change.
// No inline script: the page's CSP only allows files from 'self'.
(function () {
  "use strict";

  function draw(element) {
    var url = element.getAttribute("data-graph-url");
    var every = parseInt(element.getAttribute("data-poll") || "0", 10);
    var lf = new Core.LogicFlow({
      container: element,
      isSilentMode: true,
      stopScrollGraph: true,
      stopZoomGraph: false,
      grid: false,
      adjustEdge: false,
    });
    var shown = null;

    function load() {
      return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("diagram " + response.status); }
          return response.json();
        })
        .then(function (graph) {
          var current = (graph.current || []).join(" ");
          if (current !== shown) {
            lf.render({ nodes: graph.nodes, edges: graph.edges });
            lf.fitView(40, 40);
            shown = current;
            // Tests and assistive tools read the highlighted steps from here.
            element.setAttribute("data-current", current);
            var listed = document.getElementById("current-steps");
            if (listed && element.hasAttribute("data-poll")) {
              listed.textContent = current || "–";
            }
          }
          if (every > 0 && graph.status === "running") {
            window.setTimeout(load, every);
          }
        });
    }
    load().catch(function () {
      element.setAttribute("data-error", "1");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var element = document.getElementById("diagram");
    if (element && window.Core && window.Core.LogicFlow) {
      draw(element);
    }
  });
})();
