// Soko console: progressive enhancement only (every page works without this file).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Copy buttons for pull commands: shown only when the clipboard can be written.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      });
    });
  });
  // A lifecycle preview in progress: look again in a second.
  if (document.querySelector("[data-refresh]")) {
    setTimeout(function () { window.location.reload(); }, 1000);
  }
});
