// Small helpers the pages share: building elements, states as coloured words, times and numbers.
// Text always goes in as text (textContent), never as HTML.

// h("div", {class: "x", onclick: fn, dataset: {id: 1}}, "text", child, [more children])
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, v);
  append(el, children);
  return el;
}

// A state as a word with its colour class (state-NAME): readable without colour too.
export function stateWord(s) {
  return h("span", { class: "state state-" + String(s || "unknown").replace(/[^a-z_]/g, "") },
    s || "unknown");
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtDateTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit",
    minute: "2-digit", second: "2-digit" });
}

export function fmtDuration(s) {
  if (s == null || isNaN(s)) return "—";
  s = Math.round(Number(s));
  const sign = s < 0 ? "−" : "";
  s = Math.abs(s);
  if (s < 60) return `${sign}${s} s`;
  if (s < 3600) return `${sign}${Math.floor(s / 60)} min ${s % 60 ? (s % 60) + " s" : ""}`.trim();
  return `${sign}${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function fmtNum(v, digits = 3) {
  if (v == null || v === "") return "—";
  const n = Number(v);
  if (!isFinite(n)) return String(v);
  return Math.abs(n) >= 1000 ? n.toFixed(0) : Number(n.toPrecision(digits)).toString();
}

// A button that runs fn, disabled while it runs; errors become toasts.
export function actionButton(ctx, label, fn, cls = "") {
  const b = h("button", { type: "button", class: cls });
  b.textContent = label;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await fn();
    } catch (e) {
      ctx.toast(`${label}: ${e.message}`, "error");
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// Loads the page's own stylesheet once (web/pages/NAME.css).
export function pageStyle(name) {
  const href = `/web/pages/${name}.css`;
  if (document.querySelector(`link[href="${href}"]`)) return;
  document.head.append(h("link", { rel: "stylesheet", href }));
}
