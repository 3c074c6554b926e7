// Cell: the state of the whole cell, readable from across the room: every instrument (state as a
// coloured word, telemetry with units, last error, queue), the runs counted by state, and the
// outbox sinks (PostgreSQL, MQTT) with their state and lag. /v1/instruments and /v1/cell load it;
// instrument.* events update the cards as they come, and any other event refreshes the counts
// and sinks (at most once a second), so nothing polls.
import { h, stateWord, fmtNum, fmtDuration, pageStyle } from "../ui.js";

const RUN_STATES = ["running", "queued", "planned", "paused", "interrupted", "done", "failed",
  "cancelled", "released"];

export async function mount(el, ctx) {
  pageStyle("cell");
  const counts = h("div", { class: "counts" });
  const sinks = h("div", { class: "sinks" });
  const cards = h("div", { class: "cards instruments" });
  el.append(h("h1", {}, "Cell"),
    h("section", {}, h("h2", {}, "Runs"), counts),
    h("section", {}, h("h2", {}, "Instruments"), cards),
    h("section", {}, h("h2", {}, "Sinks"), sinks));

  const insts = new Map();
  const cardEls = new Map();
  let summary = null;

  function renderCard(inst) {
    const t = (inst.telemetry && inst.telemetry.values) || {};
    const u = (inst.telemetry && inst.telemetry.units) || {};
    const q = summary && summary.queues ? summary.queues[inst.id] : undefined;
    const card = h("a", { class: "card inst state-border-" + (inst.state || "unknown"),
      href: "#/instruments/" + encodeURIComponent(inst.id), dataset: { id: inst.id, state: inst.state } },
      h("h3", {}, h("span", { class: "name" }, inst.id), stateWord(inst.state)),
      h("div", { class: "dim" }, [inst.kind, inst.model].filter(Boolean).join(" · ")),
      h("table", { class: "tele" }, Object.keys(t).filter((k) => u[k] !== "" || k === "running")
        .map((k) => h("tr", {}, h("th", {}, k), h("td", { class: "num" }, fmtNum(t[k], 4)),
          h("td", { class: "dim" }, u[k] || "")))),
      h("div", { class: "queue" }, "Queue: ", h("b", {}, q == null ? "—" : String(q))),
      inst.last_error ? h("div", { class: "error last-error" }, "Last error: " + errText(inst.last_error)) : null);
    const old = cardEls.get(inst.id);
    if (old) old.replaceWith(card);
    else cards.append(card);
    cardEls.set(inst.id, card);
  }

  function renderSummary() {
    if (!summary) return;
    counts.replaceChildren(...RUN_STATES.map((s) =>
      h("a", { class: "count", href: "#/runs?state=" + s, dataset: { state: s } },
        h("span", { class: "n" }, String(summary.runs[s] ?? 0)), stateWord(s))));
    sinks.replaceChildren(...Object.entries(summary.sinks).map(([name, s]) =>
      h("div", { class: "card sink", dataset: { sink: name } },
        h("h3", {}, name === "postgres" ? "PostgreSQL" : name === "mqtt" ? "MQTT" : name,
          stateWord(s.state)),
        s.state === "disabled" ? h("p", { class: "dim" }, "not configured")
          : h("p", {}, "Lag ", h("b", { class: "lag" }, fmtDuration(s.lag_s)), " · ",
            h("b", {}, String(s.depth)), " rows to deliver",
            s.errors ? h("span", { class: "error" }, ` · ${s.errors} errors`) : null))));
    for (const inst of insts.values()) renderCard(inst);
  }

  async function loadSummary() {
    summary = await ctx.api("/v1/cell");
    renderSummary();
  }

  const [doc] = await Promise.all([ctx.api("/v1/instruments"), loadSummary()]);
  for (const inst of doc.instruments || []) {
    insts.set(inst.id, inst);
    renderCard(inst);
  }

  let pending = null;
  function refreshSoon() {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try { await loadSummary(); } catch (e) { /* the next event tries again */ }
    }, 1000);
  }
  ctx.events.subscribe([], (kind, key, data) => {
    if (kind.startsWith("instrument.")) {
      const inst = insts.get(key);
      if (inst && data && typeof data === "object") {
        if (kind === "instrument.telemetry") {
          const t = inst.telemetry || (inst.telemetry = { values: {}, units: {} });
          Object.assign(t.values, data.values || {});
          Object.assign(t.units, data.units || {});
        } else if (kind === "instrument.state") {
          for (const k of ["state", "last_error", "updated_at"]) if (k in data) inst[k] = data[k];
        }
        renderCard(inst);
      }
      if (kind !== "instrument.telemetry") refreshSoon();
      return;
    }
    refreshSoon();
  });
  return { unmount() { clearTimeout(pending); } };
}

function errText(e) {
  if (typeof e === "string") return e;
  return [e.code, e.message || e.text].filter(Boolean).join(": ");
}
