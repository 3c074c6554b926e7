// Instruments: the list (#/instruments) and one instrument (#/instruments/ID): state, telemetry
// with units, last error, queue and counters, pause/resume, and every manual action with a form
// generated from its parameters' JSON Schema; the instrument's answer is shown under the form.
// Live from instrument.state and instrument.telemetry events (other instrument.* kinds, such
// as the ended state intervals of instrument.interval, say nothing of the instrument now).
import { h, stateWord, fmtDateTime, fmtNum, pageStyle } from "../ui.js";
import { schemaForm } from "../form.js";

export async function mount(el, ctx) {
  pageStyle("instruments");
  return ctx.param ? detail(el, ctx, ctx.param) : list(el, ctx);
}

function telemetryRows(t) {
  const values = (t && t.values) || {};
  const units = (t && t.units) || {};
  return Object.keys(values).map((k) =>
    h("tr", { dataset: { name: k } }, h("th", {}, k),
      h("td", { class: "num" }, fmtNum(values[k], 4)), h("td", { class: "dim" }, units[k] || "")));
}

async function list(el, ctx) {
  const body = h("tbody");
  el.append(h("h1", {}, "Instruments"),
    h("table", { class: "instruments" },
      h("thead", {}, h("tr", {}, h("th", {}, "Instrument"), h("th", {}, "Kind"),
        h("th", {}, "State"), h("th", {}, "Telemetry"), h("th", {}, "Last error"))),
      body));
  const rows = new Map();
  function render(inst) {
    const t = (inst.telemetry && inst.telemetry.values) || {};
    const u = (inst.telemetry && inst.telemetry.units) || {};
    const tele = Object.keys(t).slice(0, 3)
      .map((k) => `${k} ${fmtNum(t[k], 4)}${u[k] ? " " + u[k] : ""}`).join(", ");
    const tr = h("tr", { class: "link", dataset: { id: inst.id },
      onclick: () => ctx.navigate("#/instruments/" + encodeURIComponent(inst.id)) },
      h("td", {}, h("a", { href: "#/instruments/" + encodeURIComponent(inst.id) }, inst.id),
        h("div", { class: "dim" }, inst.model || inst.driver || "")),
      h("td", {}, inst.kind || ""),
      h("td", { class: "st" }, stateWord(inst.state)),
      h("td", { class: "tele" }, tele || "—"),
      h("td", { class: "error" }, inst.last_error ? errorText(inst.last_error) : ""));
    const old = rows.get(inst.id);
    if (old) old.replaceWith(tr);
    else body.append(tr);
    rows.set(inst.id, tr);
  }
  const docs = new Map();
  const doc = await ctx.api("/v1/instruments");
  for (const inst of doc.instruments || []) {
    docs.set(inst.id, inst);
    render(inst);
  }
  ctx.events.subscribe(["instrument.state", "instrument.telemetry"], (kind, key, data) => {
    const inst = docs.get(key);
    if (!inst) return;
    applyEvent(inst, kind, data);
    render(inst);
  });
  return { unmount() {} };
}

// instrument.state carries the instrument's document (state, last_error...), and
// instrument.telemetry its readings; either may be partial: merge what came.
function applyEvent(inst, kind, data) {
  if (!data || typeof data !== "object") return;
  if (kind === "instrument.telemetry") {
    const t = inst.telemetry || (inst.telemetry = { values: {}, units: {} });
    const vals = data.values || {};
    Object.assign(t.values, vals);
    Object.assign(t.units, data.units || {});
    if (data.name !== undefined && data.value !== undefined) {
      t.values[data.name] = data.value;
      if (data.unit !== undefined) t.units[data.name] = data.unit;
    }
    if (data.ts) t.ts = data.ts;
    return;
  }
  for (const k of ["state", "last_error", "updated_at", "info", "paused"])
    if (k in data) inst[k] = data[k];
}

function errorText(e) {
  if (typeof e === "string") return e;
  return [e.code, e.message || e.text].filter(Boolean).join(": ") || JSON.stringify(e);
}

async function detail(el, ctx, id) {
  let inst = await ctx.api("/v1/instruments/" + encodeURIComponent(id));
  const head = h("div", { class: "head" });
  const tele = h("tbody");
  const facts = h("dl", { class: "facts" });
  const actionsEl = h("div", { class: "actions" });
  el.append(h("p", {}, h("a", { href: "#/instruments" }, "← all instruments")), head,
    h("div", { class: "cols" },
      h("section", { class: "card" }, h("h2", {}, "Telemetry"),
        h("table", { class: "telemetry" }, tele)),
      h("section", { class: "card" }, h("h2", {}, "Status"), facts)),
    h("h2", {}, "Manual actions"), actionsEl);

  function renderHead() {
    const buttons = [];
    if (ctx.canAct) {
      const paused = inst.state === "paused";
      const b = h("button", { type: "button", class: "act " + (paused ? "primary" : "danger"),
        id: "hold" }, paused ? "Resume" : "Pause");
      b.addEventListener("click", () => hold(!paused, b));
      buttons.push(b);
    }
    head.replaceChildren(h("h1", {}, inst.id, " ", stateWord(inst.state)),
      h("p", { class: "dim" }, [inst.model, inst.driver, inst.kind].filter(Boolean).join(" · ")),
      h("div", { class: "buttons-left" }, buttons));
  }
  function renderFacts() {
    const st = inst.stats || {};
    const rows = [
      ["State", stateWord(inst.state)],
      ["Last error", inst.last_error ? errorText(inst.last_error) : "none"],
      ["Queue", st.queued != null ? String(st.queued) : "—"],
      ["Operations", st.operations != null ? `${st.operations} (${st.failed || 0} failed, ${st.timeouts || 0} timed out)` : "—"],
      ["Updated", fmtDateTime(inst.updated_at)],
    ];
    for (const [k, v] of Object.entries(inst.info || {}))
      if (!["driver", "model"].includes(k)) rows.push([k, String(v)]);
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }
  function renderTele() {
    const rows = telemetryRows(inst.telemetry);
    tele.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { class: "empty" },
      "This instrument reports no telemetry."))]));
  }
  async function hold(pause, b) {
    const what = pause
      ? `Pause ${inst.id}: it finishes what it is doing, then takes no new step until resumed.`
      : `Resume ${inst.id}: the scheduler may give it steps again.`;
    if (!(await ctx.confirm(what, { action: pause ? "Pause" : "Resume" }))) return;
    b.disabled = true;
    try {
      await ctx.api(`/v1/instruments/${encodeURIComponent(inst.id)}/${pause ? "pause" : "resume"}`,
        { method: "POST" });
      ctx.toast(`${inst.id} ${pause ? "paused" : "resumed"}`, "ok");
      inst = await ctx.api("/v1/instruments/" + encodeURIComponent(id));
      renderAll();
    } catch (e) {
      ctx.toast(`${pause ? "Pause" : "Resume"} ${inst.id}: ${e.message}`, "error");
    } finally {
      b.disabled = false;
    }
  }
  function renderAll() { renderHead(); renderFacts(); renderTele(); }

  for (const a of inst.actions || []) actionsEl.append(actionCard(ctx, inst, a));
  if (!(inst.actions || []).length) actionsEl.append(h("p", { class: "empty" }, "No manual actions."));
  renderAll();

  ctx.events.subscribe(["instrument.state", "instrument.telemetry"], (kind, key, data) => {
    if (key !== inst.id) return;
    applyEvent(inst, kind, data);
    if (kind === "instrument.telemetry") renderTele();
    else { renderHead(); renderFacts(); }
  });
  return { unmount() {} };
}

function actionCard(ctx, inst, a) {
  const out = h("div", { class: "answer", "aria-live": "polite" });
  const form = schemaForm(a.params || {}, { idPrefix: `act-${a.name}` });
  const run = h("button", { type: "submit", class: "primary act" }, "Run " + a.name);
  const card = h("form", { class: "card action", novalidate: true, dataset: { action: a.name } },
    h("h3", {}, a.name, a.timeout_s ? h("span", { class: "dim" }, `up to ${a.timeout_s} s`) : null),
    h("p", { class: "dim" }, a.help || ""), form.el, ctx.canAct ? run : null, out);
  card.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    let params;
    try {
      params = form.value();
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, e.message));
      return;
    }
    const shown = Object.keys(params).length ? " with " + JSON.stringify(params) : "";
    if (!(await ctx.confirm(`Run ${a.name} on ${inst.id}${shown}. The instrument carries it out now, outside any run.`,
      { action: "Run " + a.name }))) return;
    run.disabled = true;
    out.replaceChildren(h("p", { class: "dim" }, `${a.name}: waiting for ${inst.id}…`));
    try {
      const ans = await ctx.api(`/v1/instruments/${encodeURIComponent(inst.id)}/actions`,
        { method: "POST", body: { action: a.name, params } });
      out.replaceChildren(h("p", { class: "ok" }, `${a.name} done`),
        h("pre", { class: "json result" }, JSON.stringify(ans && "result" in ans ? ans.result : ans, null, 2)));
    } catch (e) {
      const errs = (e.problem && e.problem.errors) || [];
      out.replaceChildren(h("p", { class: "error" }, `${a.name} failed (${e.status || "?"}): ${e.message}`),
        errs.length ? h("ul", { class: "error" }, errs.map((x) =>
          h("li", {}, [x.path, x.message, x.code].filter(Boolean).join(": ")))) : null);
    } finally {
      run.disabled = false;
    }
  });
  return card;
}
