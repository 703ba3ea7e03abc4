// Haven console: conveniences only. Every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Confirm destructive actions.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) e.preventDefault();
    });
  });
  // Drop a file anywhere on an upload card.
  document.querySelectorAll("form.drop").forEach(function (form) {
    var input = form.querySelector("input[type=file]");
    ["dragenter", "dragover"].forEach(function (t) {
      form.addEventListener(t, function (e) { e.preventDefault(); form.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      form.addEventListener(t, function () { form.classList.remove("over"); });
    });
    form.addEventListener("drop", function (e) {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) input.files = e.dataTransfer.files;
    });
  });
  // Exports: fetch with a progress line, then save; falls back to the plain link.
  document.querySelectorAll("a[data-progress]").forEach(function (a) {
    a.addEventListener("click", function (e) {
      if (!window.fetch || !window.ReadableStream) return;
      e.preventDefault();
      var note = document.querySelector("[data-progress-note]");
      var base = note ? note.textContent : "";
      if (note) { note.hidden = false; note.setAttribute("role", "status"); }
      fetch(a.href, { credentials: "same-origin" }).then(function (res) {
        if (!res.ok) { window.location = a.href; return; }
        var name = "export";
        var cd = res.headers.get("Content-Disposition") || "";
        var m = /filename="?([^";]+)"?/.exec(cd);
        if (m) name = m[1];
        var reader = res.body.getReader(), chunks = [], got = 0;
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) return;
            chunks.push(r.value); got += r.value.length;
            if (note) note.textContent = base + " " + (got / 1048576).toFixed(1) + " MB";
            return pump();
          });
        }
        return pump().then(function () {
          var url = URL.createObjectURL(new Blob(chunks));
          var link = document.createElement("a");
          link.href = url; link.download = name; document.body.appendChild(link); link.click();
          setTimeout(function () { URL.revokeObjectURL(url); link.remove(); }, 1000);
          if (note) note.textContent = base;
          if (note) note.hidden = true;
        });
      }).catch(function () { window.location = a.href; });
    });
  });
  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
});
