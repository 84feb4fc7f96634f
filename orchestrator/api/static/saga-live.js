// The saga page follows its saga live through /ui/sagas/{id}/events: each timeline entry
// is appended to the timeline as it happens, and the parts that show the saga's state
// (status, actions, diagram, steps, context) are read again from the page. A file, not an
// inline script: the dashboard's Content-Security-Policy allows only this origin's scripts.
(() => {
  "use strict";
  const live = document.getElementById("saga-live");
  const rows = document.querySelector("#timeline tbody");
  if (!live || !rows || typeof EventSource === "undefined") return;
  const parts = ["saga-status", "saga-meta", "saga-actions", "diagram", "steps", "saga-data"];
  const seen = rows.querySelectorAll("tr[data-id]");
  let last = seen.length ? Number(seen[seen.length - 1].dataset.id) : 0;
  let reading = false;
  let again = false;

  function cell(text, mono) {
    const td = document.createElement("td");
    td.textContent = text;
    if (mono) td.className = "mono";
    return td;
  }

  function detail(fields) {
    return Object.entries(fields)
      .filter(([name]) => name !== "input")
      .map(([name, value]) => `${name}=${typeof value === "string" ? value : JSON.stringify(value)} `)
      .join("");
  }

  function append(entry) {
    if (entry.id <= last) return; // already on the page, or sent again after a reconnect
    last = entry.id;
    const row = document.createElement("tr");
    row.dataset.id = String(entry.id);
    row.append(
      cell(entry.at.slice(11, 23), true),
      cell(entry.kind),
      cell(entry.step || ""),
      cell(detail(entry.detail), true),
    );
    rows.append(row);
  }

  // The actions stay as they are while the same ones apply: an operator may be typing a
  // reason into one of them.
  function sameForms(shown, fresh) {
    const actions = (root) => [...root.querySelectorAll("form")].map((f) => f.action).join(" ");
    return actions(shown) === actions(fresh);
  }

  // One read of the page at a time; events arriving meanwhile ask for one more.
  async function refresh() {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        const response = await fetch(window.location.pathname, { credentials: "same-origin" });
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const id of parts) {
          const shown = document.getElementById(id);
          const fresh = page.getElementById(id);
          if (shown && fresh && !(id === "saga-actions" && sameForms(shown, fresh))) {
            shown.replaceWith(document.importNode(fresh, true));
          }
        }
      } while (again);
    } catch (error) {
      // the next event reads the page again
    } finally {
      reading = false;
    }
  }

  const source = new EventSource(live.dataset.events);
  let changed = false;
  source.addEventListener("timeline", (event) => {
    append(JSON.parse(event.data));
    changed = true;
    refresh();
  });
  source.addEventListener("end", () => {
    source.close(); // else the browser would reconnect to a finished stream
    live.dataset.ended = "true";
    if (changed) refresh(); // the saga's last state; a saga settled before is shown as it is
  });
})();
