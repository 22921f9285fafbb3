// ctfhost admin pages: confirm destructive buttons, refresh live pages. No framework, no build step.
"use strict";

document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

(function refreshLater() {
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!seconds) {
    return;
  }
  window.setTimeout(function () {
    // not while someone types into the page
    var active = document.activeElement;
    if (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) {
      refreshLater();
      return;
    }
    window.location.reload();
  }, seconds * 1000);
})();
