// The Operations view's script: times in the reader's zone, live updates of the page's
// changing part from the server's change stream, a file loaded into the manifest field.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) continue;
    if (!el.hasAttribute("data-age")) el.textContent = at.toLocaleString();
    el.title = el.title || at.toISOString();
  }
}

function followChanges() {
  const source = document.body.dataset.events;
  const region = document.getElementById("live-region");
  if (!source || !region || !window.EventSource) return;
  const state = document.getElementById("live-state");
  let pending = false;
  let again = false;
  // One render at a time; a change during a render asks for one more.
  async function render() {
    if (pending) { again = true; return; }
    pending = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || !response.ok) { location.reload(); return; }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live-region");
      if (fresh) {
        region.replaceChildren(...fresh.childNodes);
        localTimes(region);
      }
    } finally {
      pending = false;
      if (again) { again = false; render(); }
    }
  }
  const events = new EventSource(source);
  events.addEventListener("change", render);
  events.onopen = () => { state.textContent = "live"; };
  // The browser opens the stream again by itself; say so meanwhile.
  events.onerror = () => { state.textContent = "reconnecting…"; };
}

function loadFiles() {
  for (const input of document.querySelectorAll("input[type=file][data-load-into]")) {
    input.addEventListener("change", async () => {
      const file = input.files[0];
      if (file) document.getElementById(input.dataset.loadInto).value = await file.text();
    });
  }
}

function pickWorkspace() {
  for (const select of document.querySelectorAll("select[data-go-to-workspace]")) {
    select.addEventListener("change", () => select.form.submit());
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  followChanges();
  loadFiles();
  pickWorkspace();
});
