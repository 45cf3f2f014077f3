// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  if (!navigator.clipboard) return;
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  });
})();

// Search as you type: the header box offers the names of the first matches (the same
// search as the results page, as the signed-in viewer). Without this file the box still works.
(function () {
  "use strict";
  var input = document.getElementById("site-search");
  var list = document.getElementById("site-search-suggestions");
  if (!input || !list || !window.fetch) return;
  input.setAttribute("list", list.id);
  var timer = null;
  var asked = "";
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var q = input.value.trim();
      if (q.length < 2 || q === asked) return;
      asked = q;
      var url = "/search/suggestions?q=" + encodeURIComponent(q);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (body) {
          if (!body || asked !== q) return;
          list.textContent = "";
          body.results.forEach(function (hit) {
            var option = document.createElement("option");
            option.value = hit.title || hit.name;
            option.label = hit.name;
            list.appendChild(option);
          });
        })
        .catch(function () { /* suggestions are optional */ });
    }, 150);
  });
})();

// Filters behind a button on narrow screens: open on wide ones.
(function () {
  "use strict";
  var toggle = document.querySelector("details.filters-toggle");
  if (!toggle || !window.matchMedia) return;
  if (window.matchMedia("(min-width: 801px)").matches) toggle.open = true;
})();

// A running build's log: appended as the worker writes it (the page polls the log address
// with the last chunk it has), until the build ends; then the page reloads once for the
// final status, digest and pull command.
(function () {
  "use strict";
  var pre = document.getElementById("build-log");
  if (!pre || !window.fetch || pre.getAttribute("data-final") === "true") return;
  var url = pre.getAttribute("data-log-url");
  var next = parseInt(pre.getAttribute("data-next"), 10);
  function poll() {
    fetch(url + "?after=" + next, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) {
        if (!body) { setTimeout(poll, 5000); return; }
        if (body.text) {
          var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.appendChild(document.createTextNode(body.text));
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        }
        next = body.next;
        if (body.final) { window.location.reload(); return; }
        setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1000);
})();
