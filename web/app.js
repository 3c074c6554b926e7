// The labloop web app's shell: the token, who the token is (/v1/me), the navigation, the hash
// router, the live event stream, the connection indicator, the confirmation modal and toasts.
// Each page is web/pages/NAME.js exporting mount(el, ctx) -> {unmount()}; ctx is described at
// makeCtx. No framework and no build step: ES modules served by labloopd itself.
import { createEvents } from "./events.js";

const TOKEN_KEY = "labloop.token";

// Hash route -> page module. Order is the navigation's.
export const PAGES = [
  { name: "cell", title: "Cell" },
  { name: "schedule", title: "Schedule" },
  { name: "runs", title: "Runs" },
  { name: "operator", title: "Operator" },
  { name: "campaigns", title: "Campaigns" },
  { name: "instruments", title: "Instruments" },
];

const $ = (id) => document.getElementById(id);

const state = {
  me: null, // {role, name, can_submit}
  events: null,
  current: null, // {name, param, handle, unsubs}
  mountSeq: 0,
};

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// An API error: message from the problem's detail (or title), with .status and .problem.
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || "HTTP " + status);
    this.status = status;
    this.problem = problem;
  }
}

// fetch with the token; JSON in and out. opts: {method, body (an object, sent as JSON), headers}.
async function api(path, opts = {}) {
  const headers = Object.assign({ Accept: "application/json" }, opts.headers || {});
  const tok = token();
  if (tok) headers.Authorization = "Bearer " + tok;
  let body = opts.body;
  if (body !== undefined && typeof body !== "string") {
    body = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    headers["Content-Type"] = headers["Content-Type"] || "application/json";
  }
  const resp = await fetch(path, { method: opts.method || "GET", headers, body, cache: "no-store" });
  const type = resp.headers.get("Content-Type") || "";
  let doc = null;
  if (resp.status !== 204 && /json/.test(type)) {
    try { doc = await resp.json(); } catch (e) { doc = null; }
  } else if (resp.status !== 204) {
    doc = await resp.text();
  }
  if (resp.status >= 400) {
    if (resp.status === 401 && state.me) signIn("The daemon no longer accepts this token.");
    throw new ApiError(resp.status, doc && typeof doc === "object" ? doc : null);
  }
  return doc;
}

// ---- toasts and the confirmation modal ----

export function toast(text, kind = "info") {
  const t = document.createElement("div");
  t.className = "toast toast-" + kind;
  t.setAttribute("role", kind === "error" ? "alert" : "status");
  t.textContent = text;
  $("toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? 10000 : 5000);
}

// The open confirmation's answer: each showing is answered once, by its own buttons (or Esc).
// The dialog's close event is queued as a task, so a confirmation shown right after another was
// answered could receive the earlier one's close and answer for it.
let confirmPending = null;

function confirmSettle(answer) {
  const resolve = confirmPending;
  confirmPending = null;
  if (resolve) resolve(answer);
}

$("confirm-yes").addEventListener("click", () => confirmSettle(true));
$("confirm-no").addEventListener("click", () => confirmSettle(false));
$("confirm").addEventListener("cancel", () => confirmSettle(false));

// Resolves true when the person chose the action. text says what will happen; opts.action is
// the button's word ("Pause reader1"), opts.title the heading.
function confirmModal(text, opts = {}) {
  const dlg = $("confirm");
  confirmSettle(false); // one still open is answered "no" before it is reused
  $("confirm-title").textContent = opts.title || "Please confirm";
  $("confirm-text").textContent = text;
  $("confirm-yes").textContent = opts.action || "Do it";
  return new Promise((resolve) => {
    confirmPending = resolve;
    if (!dlg.open) dlg.showModal();
    $("confirm-no").focus();
  });
}

// ---- the connection indicator ----

function connStatus(s, detail) {
  const el = $("conn");
  const words = {
    connecting: "connecting",
    live: "live",
    reconnecting: detail ? `reconnecting (${detail} s)` : "reconnecting",
    stopped: "not live",
  };
  el.textContent = words[s] || s;
  el.className = "conn conn-" + s;
  el.dataset.state = s;
}

// ---- pages ----

function parseHash() {
  // #/page/ID?query: the query is the page's own (e.g. the runs list's filters)
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").filter(Boolean);
  const page = PAGES.find((p) => p.name === parts[0]) ? parts[0] : "cell";
  const param = page === parts[0] && parts[1] ? decodeURIComponent(parts[1]) : null;
  return { page, param, hash: "#/" + page + (param ? "/" + encodeURIComponent(param) : "") };
}

// ctx = {api(path, opts) -> Promise<json>, role, canAct, me, param (the ID of #/page/ID or null),
// events: {subscribe(kinds, fn) -> unsubscribe}, navigate(hash), confirm(text, opts) ->
// Promise<bool>, toast(text, kind)}. Subscriptions a page leaves open are closed at unmount.
function makeCtx(route, unsubs) {
  return {
    api,
    role: state.me.role,
    name: state.me.name,
    canAct: !!state.me.can_submit,
    me: state.me,
    param: route.param,
    events: {
      subscribe(kinds, fn) {
        const un = state.events.subscribe(kinds, fn);
        unsubs.push(un);
        return un;
      },
    },
    navigate(hash) { location.hash = hash; },
    confirm: confirmModal,
    toast,
  };
}

function unmountCurrent() {
  const cur = state.current;
  state.current = null;
  if (!cur) return;
  for (const un of cur.unsubs) un();
  try {
    if (cur.handle && cur.handle.unmount) cur.handle.unmount();
  } catch (e) {
    console.warn("unmount failed", e);
  }
}

async function show() {
  if (!state.me) return;
  const route = parseHash();
  const seq = ++state.mountSeq;
  unmountCurrent();
  for (const a of $("nav").querySelectorAll("a"))
    a.classList.toggle("active", a.dataset.page === route.page);
  const main = $("page");
  main.replaceChildren();
  main.className = "page page-" + route.page;
  main.dataset.page = route.page;
  main.removeAttribute("data-ready");
  let mod;
  try {
    mod = await import(`./pages/${route.page}.js`);
  } catch (e) {
    console.error(`the ${route.page} page could not be loaded`, e);
    if (seq !== state.mountSeq) return;
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = `The ${route.page} page could not be loaded (${e.message}).`;
    main.append(p);
    main.dataset.ready = route.hash;
    return;
  }
  if (seq !== state.mountSeq) return;
  const unsubs = [];
  const cur = { name: route.page, param: route.param, handle: null, unsubs };
  state.current = cur;
  try {
    cur.handle = await mod.mount(main, makeCtx(route, unsubs));
  } catch (e) {
    toast(`The ${route.page} page failed to load: ${e.message}`, "error");
  }
  if (seq === state.mountSeq) main.dataset.ready = route.hash; // what tests wait for
}

function buildNav() {
  const nav = $("nav");
  nav.replaceChildren();
  for (const p of PAGES) {
    const a = document.createElement("a");
    a.href = "#/" + p.name;
    a.textContent = p.title;
    a.dataset.page = p.name;
    nav.append(a);
  }
}

// ---- the token ----

async function whoami() {
  const headers = { Accept: "application/json" };
  const tok = token();
  if (tok) headers.Authorization = "Bearer " + tok;
  const resp = await fetch("/v1/me", { headers, cache: "no-store" });
  if (resp.status === 401) return null;
  if (!resp.ok) throw new Error("GET /v1/me answered " + resp.status);
  return resp.json();
}

// Shows the sign-in modal (with why, when a token was refused) and resolves once a token works.
function signIn(why) {
  if (state.events) state.events.stop();
  unmountCurrent();
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  const dlg = $("login");
  $("login-error").textContent = why || "";
  $("login-token").value = "";
  if (!dlg.open) dlg.showModal();
}

async function onLogin(ev) {
  ev.preventDefault();
  const tok = $("login-token").value.trim();
  if (!tok) return;
  sessionStorage.setItem(TOKEN_KEY, tok);
  let me;
  try {
    me = await whoami();
  } catch (e) {
    $("login-error").textContent = "The daemon could not be reached: " + e.message;
    return;
  }
  if (!me) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("login-error").textContent = "That token was not accepted. Check it and try again.";
    $("login-token").select();
    return;
  }
  $("login").close();
  start(me);
}

async function start(me) {
  state.me = me;
  document.body.classList.toggle("can-act", !!me.can_submit);
  document.body.classList.toggle("viewer", !me.can_submit);
  $("who").textContent = me.name && me.name !== me.role ? `${me.name} (${me.role})` : me.role;
  $("signout").hidden = !token();
  // Events from now on: the outbox head is where the stream starts (the pages load the rest).
  let after = null;
  try {
    const h = await (await fetch("/healthz", { cache: "no-store" })).json();
    after = h.outbox_head ?? null;
  } catch (e) { /* start wherever the server starts */ }
  state.events = createEvents({
    url: "/v1/events",
    token,
    after,
    onStatus: connStatus,
    onUnauthorized: () => signIn("The daemon no longer accepts this token."),
    onReset: () => {
      toast("Events were missed: the page reloaded its data.");
      show();
    },
  });
  state.events.start();
  show();
}

async function boot() {
  buildNav();
  $("login-form").addEventListener("submit", onLogin);
  $("login").addEventListener("cancel", (e) => e.preventDefault()); // no way around it
  $("signout").addEventListener("click", () => signIn(""));
  window.addEventListener("hashchange", show);
  let me = null;
  try {
    me = await whoami();
  } catch (e) {
    toast("The daemon could not be reached: " + e.message, "error");
    return;
  }
  if (!me) {
    signIn(token() ? "The saved token is no longer accepted." : "");
    return;
  }
  start(me);
}

boot();
