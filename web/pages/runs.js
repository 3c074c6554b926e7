// Runs: the list (#/runs) with filters (state, plate, workflow, priority) and one run (#/runs/ID):
// its steps with planned and actual times, attempts, lag and errors, and a heat map (SVG) of the
// plate's measurements. The store filters the list (GET /v1/runs?state=&plate=&workflow=
// &priority=&order=newest), the newest MAX_RUNS matches shown. Live from run.state and
// measurement events.
import { h, svg, stateWord, fmtDateTime, fmtTime, fmtDuration, fmtNum, pageStyle } from "../ui.js";

export async function mount(el, ctx) {
  pageStyle("runs");
  return ctx.param ? detail(el, ctx, ctx.param) : list(el, ctx);
}

const STATES = ["queued", "planned", "running", "paused", "interrupted", "done", "failed",
  "cancelled", "released"];
const PRIORITIES = ["urgent", "high", "normal", "low"];
const MAX_RUNS = 2000;

// Filters live in the hash's query (#/runs?state=done&plate=P1), so a filtered list can be shared.
function filtersFromHash() {
  const q = location.hash.split("?")[1] || "";
  const p = new URLSearchParams(q);
  return { state: p.get("state") || "", plate: p.get("plate") || "",
    workflow: p.get("workflow") || "", priority: p.get("priority") || "" };
}

// The newest matches first, a page at a time; a plate is matched whole.
async function loadRuns(ctx, f) {
  const out = [];
  let after = "";
  for (;;) {
    const q = new URLSearchParams({ limit: "500", order: "newest" });
    for (const k of ["state", "plate", "workflow", "priority"]) if (f[k]) q.set(k, f[k]);
    if (after) q.set("after", after);
    const doc = await ctx.api("/v1/runs?" + q);
    out.push(...(doc.runs || []));
    if (!doc.next || out.length >= MAX_RUNS) break;
    after = doc.next;
  }
  return out.reverse(); // submission order, as the map keeps them
}

async function list(el, ctx) {
  const f = filtersFromHash();
  const sel = (name, values, cur) => h("select", { id: "filter-" + name, name },
    h("option", { value: "" }, "any"), values.map((v) => h("option", { value: v, selected: v === cur }, v)));
  const stateSel = sel("state", STATES, f.state);
  const prioSel = sel("priority", PRIORITIES, f.priority);
  const wfSel = sel("workflow", [], f.workflow);
  const plateIn = h("input", { id: "filter-plate", type: "search", value: f.plate, placeholder: "plate" });
  const body = h("tbody");
  const shown = h("span", { class: "dim shown" });
  el.append(h("h1", {}, "Runs"),
    h("form", { class: "toolbar filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "State", stateSel), h("label", {}, "Plate", plateIn),
      h("label", {}, "Workflow", wfSel), h("label", {}, "Priority", prioSel), shown),
    h("table", { class: "runs" },
      h("thead", {}, h("tr", {}, ["Plate", "Workflow", "State", "Priority", "Submitted",
        "Started", "Ended", "Steps"].map((t) => h("th", {}, t)))),
      body));

  let runs = new Map(); // id -> doc, in submission order
  const rowEls = new Map();

  const current = () => ({ state: stateSel.value, plate: plateIn.value.trim(),
    workflow: wfSel.value, priority: prioSel.value });
  // A live change is shown when it matches what the store was asked for.
  function matches(r) {
    const c = current();
    if (c.state && r.state !== c.state) return false;
    if (c.priority && (r.priority || "normal") !== c.priority) return false;
    if (c.workflow && r.workflow !== c.workflow) return false;
    if (c.plate && r.plate !== c.plate) return false;
    return true;
  }
  function row(r) {
    const steps = r.steps || [];
    const done = steps.filter((s) => s.state === "done" || s.state === "skipped").length;
    const cur = steps.find((s) => s.state === "running");
    return h("tr", { class: "link", dataset: { id: r.id, state: r.state },
      onclick: () => ctx.navigate("#/runs/" + encodeURIComponent(r.id)) },
      h("td", {}, h("a", { href: "#/runs/" + encodeURIComponent(r.id) }, r.plate || r.id)),
      h("td", {}, r.workflow), h("td", {}, stateWord(r.state)), h("td", {}, r.priority || ""),
      h("td", {}, fmtDateTime(r.created_at)), h("td", {}, fmtTime(r.started_at)),
      h("td", {}, fmtTime(r.ended_at)),
      h("td", {}, `${done}/${steps.length || "?"}`, cur ? h("span", { class: "dim" }, " " + cur.name) : null));
  }
  function render() {
    const list = [...runs.values()].filter(matches).reverse(); // newest first
    rowEls.clear();
    body.replaceChildren(...list.map((r) => {
      const tr = row(r);
      rowEls.set(r.id, tr);
      return tr;
    }));
    if (!list.length) body.append(h("tr", {}, h("td", { colspan: "8", class: "empty" }, "No run matches.")));
    shown.textContent = `${list.length} run${list.length === 1 ? "" : "s"}` +
      (runs.size >= MAX_RUNS ? ` (the newest ${MAX_RUNS})` : "");
  }
  let wfNames = [];
  function workflows() {
    const names = [...new Set([...wfNames, ...[...runs.values()].map((r) => r.workflow)])].sort();
    const cur = wfSel.value;
    wfSel.replaceChildren(h("option", { value: "" }, "any"),
      names.map((n) => h("option", { value: n, selected: n === cur }, n)));
  }
  function syncHash() {
    const q = new URLSearchParams();
    for (const [k, v] of [["state", stateSel.value], ["plate", plateIn.value.trim()],
      ["workflow", wfSel.value], ["priority", prioSel.value]]) if (v) q.set(k, v);
    const s = q.toString();
    history.replaceState(null, "", "#/runs" + (s ? "?" + s : ""));
  }
  let gen = 0;
  async function reload() {
    const g = ++gen;
    const got = await loadRuns(ctx, current());
    if (g !== gen) return; // a newer filter is being loaded
    runs = new Map(got.map((r) => [r.id, r]));
    workflows();
    render();
  }
  let typing = null;
  for (const c of [stateSel, prioSel, wfSel, plateIn])
    c.addEventListener(c === plateIn ? "input" : "change", () => {
      syncHash();
      clearTimeout(typing);
      typing = setTimeout(() => reload().catch((e) => ctx.toast(`runs: ${e.message}`)),
        c === plateIn ? 300 : 0);
    });

  try {
    wfNames = ((await ctx.api("/v1/workflows")).workflows || []).map((w) => w.name);
  } catch (e) {
    wfNames = []; // the list still offers the workflows of the runs shown
  }
  workflows();
  wfSel.value = f.workflow;
  await reload();

  ctx.events.subscribe(["run.state"], (kind, key, doc) => {
    if (!doc || typeof doc !== "object" || !doc.id) return;
    const isNew = !runs.has(doc.id);
    if (isNew && !matches(doc)) return;
    runs.set(doc.id, doc);
    if (isNew) { workflows(); render(); return; }
    const old = rowEls.get(doc.id);
    if (old && matches(doc)) {
      const tr = row(doc);
      old.replaceWith(tr);
      rowEls.set(doc.id, tr);
    } else {
      render();
    }
  });
  return { unmount() { clearTimeout(typing); gen++; } };
}

// ---- one run ----

async function detail(el, ctx, id) {
  let run = await ctx.api("/v1/runs/" + encodeURIComponent(id));
  const planned = new Map(); // step name -> {start, end}: the plan as first seen, kept
  async function loadPlan() {
    try {
      const sch = await ctx.api("/v1/schedule");
      for (const it of sch.items || [])
        if (it.run === id && it.state !== "done" && !planned.has(it.step))
          planned.set(it.step, { start: it.start, end: it.end, instrument: it.instrument });
      const w = (sch.waiting || []).find((x) => x.run === id);
      waiting = w ? w.reason : null;
    } catch (e) { /* the plan is extra: the run shows without it */ }
  }
  let waiting = null;
  await loadPlan();

  const head = h("div", { class: "head" });
  const steps = h("tbody");
  const heat = h("div", { class: "heatmaps" });
  el.append(h("p", {}, h("a", { href: "#/runs" }, "← all runs")), head,
    h("h2", {}, "Steps"),
    h("table", { class: "steps" }, h("thead", {}, h("tr", {}, ["Step", "Instrument", "State",
      "Planned", "Actual", "Attempts", "Lag", "Error"].map((t) => h("th", {}, t)))), steps),
    h("h2", {}, "Plate"), heat);

  const live = {}; // step -> {measure, values} from measurement events not yet in the doc

  function renderHead() {
    const facts = [["Plate", run.plate], ["Workflow", `${run.workflow} v${run.workflow_version ?? "?"}`],
      ["Priority", run.priority], ["Submitted", `${fmtDateTime(run.created_at)} by ${run.submitted_by || "?"}`],
      ["Started", fmtDateTime(run.started_at)], ["Ended", fmtDateTime(run.ended_at)],
      ["Lag violations", String(run.lag_violations ?? 0)]];
    if (run.campaign) facts.push(["Campaign", h("a", { href: "#/campaigns/" + encodeURIComponent(run.campaign) }, run.campaign)]);
    if (run.paused_reason) facts.push(["Paused because", run.paused_reason]);
    if (waiting) facts.push(["Waiting because", waiting]);
    head.replaceChildren(h("h1", {}, `Run ${run.plate || ""} `, stateWord(run.state)),
      h("p", { class: "dim mono" }, run.id), controls(),
      h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")])));
  }
  // Cancel and priority, for those who may submit; a run that is over takes neither.
  function controls() {
    if (!ctx.canAct || ["done", "failed", "cancelled", "released"].includes(run.state)) return null;
    const cancel = h("button", { type: "button", class: "danger act", id: "run-cancel" }, "Cancel run");
    cancel.addEventListener("click", async () => {
      const what = `Cancel run ${run.plate || run.id} (${run.workflow}): its remaining steps are ` +
        `dropped and it ends as cancelled. A step already running on an instrument is stopped ` +
        `where the instrument allows it.`;
      if (!(await ctx.confirm(what, { action: "Cancel run", title: "Cancel this run?" }))) return;
      cancel.disabled = true;
      try {
        await ctx.api(`/v1/runs/${encodeURIComponent(run.id)}/cancel`,
          { method: "POST", body: { reason: `cancelled from the dashboard by ${ctx.name || ctx.role}` } });
        ctx.toast(`Run ${run.plate || run.id} cancelled`, "ok");
        run = await ctx.api("/v1/runs/" + encodeURIComponent(id));
        renderHead(); renderSteps();
      } catch (e) {
        ctx.toast(`Cancel: ${e.message}`, "error");
        cancel.disabled = false;
      }
    });
    const prio = h("select", { id: "run-priority", class: "act" },
      PRIORITIES.map((p) => h("option", { value: p, selected: p === run.priority }, p)));
    prio.addEventListener("change", async () => {
      const want = prio.value;
      if (!(await ctx.confirm(`Give run ${run.plate || run.id} ${want} priority: the scheduler plans again ` +
        `and may move other runs' waiting steps.`, { action: "Set " + want }))) {
        prio.value = run.priority;
        return;
      }
      try {
        await ctx.api(`/v1/runs/${encodeURIComponent(run.id)}/priority`,
          { method: "POST", body: { priority: want } });
        run = await ctx.api("/v1/runs/" + encodeURIComponent(id));
        ctx.toast(`Run ${run.plate || run.id}: priority ${want}`, "ok");
        renderHead();
      } catch (e) {
        ctx.toast(`Priority: ${e.message}`, "error");
        prio.value = run.priority;
      }
    });
    return h("div", { class: "toolbar" }, cancel, h("label", { class: "act" }, "Priority", prio));
  }

  function renderSteps() {
    steps.replaceChildren(...(run.steps || []).map((s) => {
      // the plan the run's document kept (it shows for a finished run too), else the schedule's
      const p = s.planned_start ? { start: s.planned_start, end: s.planned_end }
        : planned.get(s.name);
      const actual = s.started_at ? `${fmtTime(s.started_at)} – ${s.ended_at && s.state !== "running" ? fmtTime(s.ended_at) : "…"}` : "—";
      const plan = p ? `${fmtTime(p.start)} – ${fmtTime(p.end)}` : "—";
      let late = null;
      if (p && s.started_at) {
        const d = (Date.parse(s.started_at) - Date.parse(p.start)) / 1000;
        if (Math.abs(d) >= 1) late = h("div", { class: "dim" }, (d > 0 ? "started " : "started ") + fmtDuration(Math.abs(d)) + (d > 0 ? " late" : " early"));
      }
      return h("tr", { dataset: { step: s.name, state: s.state } },
        h("td", {}, h("b", {}, s.name), h("div", { class: "dim" }, s.op)),
        h("td", {}, s.instrument || (p && p.instrument) || "—"),
        h("td", {}, stateWord(s.state), s.lag_violation ? h("div", {}, stateWord("lag_violation")) : null),
        h("td", { class: "planned" }, plan),
        h("td", { class: "actual" }, actual, late),
        h("td", { class: "num" }, String(s.attempts ?? 0), s.interruptions ? h("div", { class: "dim" }, `${s.interruptions} interrupted`) : null),
        h("td", { class: "num" }, s.lag_s != null ? fmtDuration(s.lag_s) : "—"),
        h("td", { class: "error" }, s.error || ""));
    }));
  }
  function renderHeat() {
    const readings = Object.assign({}, live, run.readings || {});
    const names = Object.keys(readings);
    if (!names.length) {
      heat.replaceChildren(h("p", { class: "empty" }, run.state === "done"
        ? "This run has no measurements." : "No measurements yet: the heat map appears after the read."));
      return;
    }
    heat.replaceChildren(...names.map((n) => heatMap(n, readings[n])));
  }

  renderHead(); renderSteps(); renderHeat();

  ctx.events.subscribe(["run.state", "measurement"], async (kind, key, data) => {
    if (key !== id || !data || typeof data !== "object") return;
    if (kind === "measurement") {
      const st = data.step || "read";
      const r = live[st] || (live[st] = { measure: data.measure, wavelength_nm: data.wavelength_nm, values: {} });
      r.values[data.well] = data.value;
      renderHeat();
      return;
    }
    run = data;
    if (run.state === "planned" || run.state === "queued" || run.state === "running") await loadPlan();
    renderHead(); renderSteps(); renderHeat();
  });
  return { unmount() {} };
}

// ---- the heat map ----

function wellRC(w) {
  const m = /^([A-Za-z])(\d{1,2})$/.exec(w);
  return m ? [m[1].toUpperCase().charCodeAt(0) - 65, Number(m[2]) - 1] : null;
}

// Viridis, sampled: dark blue (low) to yellow (high); readable in the dark theme.
const RAMP = ["#440154", "#482878", "#3e4a89", "#31688e", "#26828e", "#1f9e89", "#35b779",
  "#6ece58", "#b5de2b", "#fde725"];
function colour(t) {
  if (!(t >= 0)) t = 0;
  if (t > 1) t = 1;
  const x = t * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  const a = RAMP[i], b = RAMP[i + 1];
  const c = (k) => Math.round(parseInt(a.slice(k, k + 2), 16) * (1 - f) + parseInt(b.slice(k, k + 2), 16) * f);
  return `rgb(${c(1)},${c(3)},${c(5)})`;
}

function heatMap(step, reading) {
  const values = reading.values || {};
  let rows = 8, cols = 12;
  for (const w of Object.keys(values)) {
    const rc = wellRC(w);
    if (rc && (rc[0] >= 8 || rc[1] >= 12)) { rows = 16; cols = 24; }
  }
  const nums = Object.values(values).filter((v) => typeof v === "number");
  const lo = nums.length ? Math.min(...nums) : 0;
  const hi = nums.length ? Math.max(...nums) : 1;
  const cell = rows === 8 ? 44 : 22, pad = 28;
  const W = pad + cols * cell + 4, H = pad + rows * cell + 4;
  const g = svg("svg", { class: "heatmap", viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    role: "img", "aria-label": `${step}: ${nums.length} wells, ${fmtNum(lo)} to ${fmtNum(hi)}` });
  for (let c = 0; c < cols; c++)
    g.append(svg("text", { x: pad + c * cell + cell / 2, y: pad - 8, class: "axis", "text-anchor": "middle" }, String(c + 1)));
  for (let r = 0; r < rows; r++)
    g.append(svg("text", { x: pad - 8, y: pad + r * cell + cell / 2 + 5, class: "axis", "text-anchor": "end" }, String.fromCharCode(65 + r)));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const well = String.fromCharCode(65 + r) + (c + 1);
      const v = values[well];
      const has = typeof v === "number";
      const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
      g.append(svg("rect", { x: pad + c * cell + 1, y: pad + r * cell + 1, width: cell - 2,
        height: cell - 2, rx: 4, class: has ? "well" : "well empty", fill: has ? colour(t) : "none",
        "data-well": well, "data-value": has ? String(v) : null },
        svg("title", {}, has ? `${well}: ${v}` : `${well}: no value`)));
    }
  }
  const unit = reading.measure === "absorbance" ? " AU" : "";
  const legend = h("div", { class: "legend" },
    h("span", {}, fmtNum(lo) + unit), h("span", { class: "ramp" }), h("span", {}, fmtNum(hi) + unit));
  return h("figure", { class: "heat", dataset: { step } },
    h("figcaption", {}, `${step}: ${reading.measure || "measurement"}`,
      reading.wavelength_nm ? ` at ${reading.wavelength_nm} nm` : "", ` · ${nums.length} wells`),
    g, legend);
}
