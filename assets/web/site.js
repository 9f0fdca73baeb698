// outagewatch pages: enhances the report form (service filter, city suggestions, sending
// without a reload) and keeps the status page live (chart, numbers, tables and map follow the
// event stream, with a poll as a fallback). Every page works without this file.
(function () {
  "use strict";

  var REFRESH_MS = 15000;

  document.documentElement.classList.add("js");

  // ---- The report form ----

  function initForm(root) {
    var form = root.querySelector("#report-form");
    if (!form) return;
    form.setAttribute("data-enhanced", "true");

    var select = form.querySelector("#service");
    var filter = form.querySelector("#service-filter");
    form.querySelector(".filter").hidden = false;
    filter.addEventListener("input", function () {
      var wanted = filter.value.trim().toLowerCase();
      var first = null;
      Array.prototype.forEach.call(select.options, function (option) {
        if (!option.value) return;
        var match = option.text.toLowerCase().indexOf(wanted) !== -1 || option.value.indexOf(wanted) === 0;
        option.hidden = !match;
        if (match && !first) first = option;
      });
      var chosen = select.selectedOptions[0];
      if (first && (!select.value || (chosen && chosen.hidden))) select.value = first.value;
    });

    var city = form.querySelector("#city");
    var country = form.querySelector("#country");
    var options = form.querySelector("#city-options");
    var timer = null;
    var asked = 0;
    city.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(suggestCities, 150);
    });
    function suggestCities() {
      var q = city.value.trim();
      if (q.length < 2 || !country.value) return;
      var ask = ++asked;
      var url = "/api/v1/places?country=" + encodeURIComponent(country.value) +
        "&q=" + encodeURIComponent(q) + "&limit=8";
      fetch(url).then(function (response) {
        return response.ok ? response.json() : { places: [] };
      }).then(function (answer) {
        // An older answer arriving late must not replace a newer one.
        if (ask !== asked) return;
        options.replaceChildren.apply(options, answer.places.map(function (place) {
          var option = document.createElement("option");
          option.value = place.name;
          return option;
        }));
        options.setAttribute("data-for", q);
      }).catch(function () { /* suggestions are a convenience: typing still works */ });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = form.querySelector("#form-status");
      var button = form.querySelector("#send");
      button.disabled = true;
      status.textContent = "Sending your report…";
      var body = new URLSearchParams(new FormData(form, event.submitter));
      fetch(form.action, { method: "POST", body: body }).then(function (response) {
        return response.text().then(function (html) {
          showPage(html, response.redirected ? response.url : null);
        });
      }).catch(function () {
        status.textContent = "We couldn't reach outagewatch. Check your connection, then send it again.";
        button.disabled = false;
      });
    });
  }

  // Puts the main part of another page in place of this one's (the form's answer).
  function showPage(html, url) {
    var next = new DOMParser().parseFromString(html, "text/html");
    var main = next.querySelector("main");
    document.querySelector("main").replaceWith(main);
    document.title = next.title;
    document.body.setAttribute("data-page", next.body.getAttribute("data-page"));
    if (url) history.pushState(null, "", url);
    initForm(main);
    var summary = main.querySelector(".error-summary a");
    (summary || main.querySelector("h1") || main).focus();
  }

  window.addEventListener("popstate", function () { location.reload(); });

  // ---- Charts ----

  // Draws the counts of #chart (its data-service, data-country, data-city, data-from and
  // data-to) with the normal band: the expectation ± two standard deviations of a Poisson count.
  function initChart() {
    var element = document.getElementById("chart");
    if (!element || typeof uPlot === "undefined") return null;
    var params = new URLSearchParams({ service: element.getAttribute("data-service"), interval: "15m" });
    ["country", "city", "from", "to"].forEach(function (name) {
      var value = element.getAttribute("data-" + name);
      if (value) params.set(name, value);
    });
    var plot = null;
    function draw() {
      return fetch("/api/v1/counts?" + params).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(function (answer) {
        if (!answer) return;
        var buckets = answer.buckets;
        var band = function (sign) {
          return buckets.map(function (b) {
            return b.expected === null ? null : Math.max(0, b.expected + sign * 2 * Math.sqrt(b.expected));
          });
        };
        var counts = buckets.map(function (b) { return b.count; });
        var data = [buckets.map(function (b) { return Date.parse(b.start) / 1000; }), counts, band(1), band(-1)];
        element.setAttribute("data-total", counts.reduce(function (a, b) { return a + b; }, 0));
        if (plot) {
          plot.setData(data);
          return;
        }
        plot = new uPlot({
          width: element.clientWidth,
          height: 280,
          legend: { show: false },
          cursor: { drag: { x: false, y: false } },
          scales: { y: { range: function (u, min, max) { return [0, Math.max(5, max * 1.1)]; } } },
          axes: [{ stroke: "#44474e" }, { stroke: "#44474e", size: 56 }],
          series: [
            {},
            { label: "Reports", stroke: "#b3261e", width: 2, fill: "rgba(179, 38, 30, 0.10)" },
            { label: "Normal, high", stroke: "rgba(11, 87, 208, 0.45)", width: 1 },
            { label: "Normal, low", stroke: "rgba(11, 87, 208, 0.45)", width: 1 }
          ],
          bands: [{ series: [2, 3], fill: "rgba(11, 87, 208, 0.18)" }]
        }, data, element);
        element.setAttribute("data-drawn", "true");
        new ResizeObserver(function () {
          plot.setSize({ width: element.clientWidth, height: 280 });
        }).observe(element);
      }).catch(function () { /* the next refresh tries again */ });
    }
    draw();
    return draw;
  }

  // ---- The live status page ----

  function paintMap() {
    var levels = {};
    document.querySelectorAll("#map-levels li").forEach(function (item) {
      levels[item.getAttribute("data-cc")] = item.getAttribute("data-level");
    });
    document.querySelectorAll("#world-map path[data-cc]").forEach(function (path) {
      path.setAttribute("class", "level-" + (levels[path.getAttribute("data-cc")] || "0"));
    });
  }

  function initLive(redrawChart) {
    var service = document.getElementById("chart").getAttribute("data-service");
    var queued = null;
    var refreshes = 0;
    function refresh() {
      queued = null;
      fetch(location.pathname + "?live=1").then(function (response) {
        return response.ok ? response.text() : null;
      }).then(function (html) {
        if (!html) return;
        var next = new DOMParser().parseFromString(html, "text/html");
        next.querySelectorAll("[data-live][id]").forEach(function (fresh) {
          var here = document.getElementById(fresh.id);
          if (here) here.replaceWith(fresh);
        });
        paintMap();
        document.body.setAttribute("data-refreshes", String(++refreshes));
      }).catch(function () { /* offline for a moment: the next refresh tries again */ });
      if (redrawChart) redrawChart();
    }
    function soon() {
      if (!queued) queued = setTimeout(refresh, 500);
    }
    var events = new EventSource("/api/v1/events?service=" + encodeURIComponent(service));
    events.addEventListener("counts", soon);
    events.addEventListener("incident", soon);
    setInterval(refresh, REFRESH_MS);
  }

  var page = document.body.getAttribute("data-page");
  if (page === "report") initForm(document);
  var redraw = initChart();
  if (page === "status") initLive(redraw);
})();
