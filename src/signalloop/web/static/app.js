// signalloop pages: draw the Plotly figures embedded as JSON, and follow a run in progress.
(function () {
  "use strict";
  function drawFigures() {
    if (!window.Plotly) { return; }
    document.querySelectorAll("script.figure-data").forEach(function (node) {
      var target = document.getElementById(node.dataset.target);
      if (!target) { return; }
      var fig = JSON.parse(node.textContent);
      window.Plotly.newPlot(target, fig.data, fig.layout, { displaylogo: false, responsive: true });
    });
  }
  function followRun() {
    var box = document.getElementById("run-state");
    if (!box || box.dataset.running !== "yes") { return; }
    var timer = setInterval(function () {
      fetch(box.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (d) {
          var s = d.running || {};
          if (!s.running) { clearInterval(timer); window.location.reload(); return; }
          var step = box.querySelector(".step");
          if (step) { step.textContent = s.step || "starting"; }
          var bar = box.querySelector("progress");
          if (bar) {
            if (s.fraction === null || s.fraction === undefined) { bar.removeAttribute("value"); }
            else { bar.value = s.fraction; }
          }
        })
        .catch(function () { /* the server may be busy; try again next tick */ });
    }, 1500);
  }
  document.addEventListener("DOMContentLoaded", function () { drawFigures(); followRun(); });
})();
