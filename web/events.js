// The live event stream: GET /v1/events read with fetch() and a ReadableStream (EventSource cannot
// send the Authorization header). One stream for the whole app; subscribers filter by kind (an
// entry matches a kind exactly or as its dotted prefix: "instrument" matches "instrument.state").
// After a drop it reconnects with backoff (1 s doubling to 15 s) and resumes with Last-Event-ID,
// so nothing is missed; when the server says `reset` (the rows after our seq are gone) the
// onReset callback reloads the pages' state. No data for 45 s (the server sends a keepalive
// every 15 s) counts as a drop.

const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 15000;
const SILENCE_MS = 45000;

export function kindMatches(filter, kind) {
  return kind === filter || kind.startsWith(filter + ".");
}

// opts: {url, token() -> string|null, after (seq to resume after, or null), onStatus(state,
// detail) with state "connecting"|"live"|"reconnecting"|"stopped", onReset(oldest)}
export function createEvents(opts) {
  const subs = new Set();
  let lastId = opts.after ?? null;
  let abort = null;
  let stopped = false;
  let backoff = BACKOFF_MIN_MS;
  let timer = null;
  let watchdog = null;

  const status = (s, d) => opts.onStatus && opts.onStatus(s, d);

  function dispatch(ev) {
    if (ev.id != null && ev.id !== "") lastId = ev.id;
    if (ev.event === "reset") {
      let oldest = null;
      try { oldest = JSON.parse(ev.data).oldest; } catch (e) { /* keep null */ }
      if (opts.onReset) opts.onReset(oldest);
      return;
    }
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    const seq = ev.id != null ? Number(ev.id) : null;
    for (const s of [...subs]) {
      if (s.kinds.length && !s.kinds.some((k) => kindMatches(k, ev.event))) continue;
      try {
        s.fn(ev.event, msg.key, msg.data, seq, msg.ts);
      } catch (e) {
        console.warn("event handler failed", e); // one bad handler must not stop the stream
      }
    }
  }

  function armWatchdog() {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => abort && abort.abort(), SILENCE_MS);
  }

  async function connect() {
    if (stopped) return;
    abort = new AbortController();
    const headers = { Accept: "text/event-stream" };
    const tok = opts.token();
    if (tok) headers.Authorization = "Bearer " + tok;
    if (lastId != null) headers["Last-Event-ID"] = String(lastId);
    status(lastId == null ? "connecting" : "reconnecting");
    try {
      const resp = await fetch(opts.url, { headers, signal: abort.signal, cache: "no-store" });
      if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
      status("live");
      backoff = BACKOFF_MIN_MS;
      armWatchdog();
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      let ev = { id: null, event: "message", data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        armWatchdog();
        buf += value;
        let nl;
        while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (ev.data.length) dispatch({ id: ev.id, event: ev.event, data: ev.data.join("\n") });
            ev = { id: null, event: "message", data: [] };
            continue;
          }
          if (line[0] === ":") continue; // a comment: the keepalive
          const c = line.indexOf(":");
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? "" : line.slice(c + 1);
          if (val[0] === " ") val = val.slice(1);
          if (field === "id") ev.id = val;
          else if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
        }
      }
    } catch (e) {
      if (stopped) return;
    } finally {
      clearTimeout(watchdog);
    }
    if (stopped) return;
    status("reconnecting", Math.round(backoff / 1000));
    timer = setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }

  return {
    // fn(kind, key, data, seq, ts); kinds: an array (or one string) of kinds or prefixes, empty
    // for every kind. Returns the unsubscribe function.
    subscribe(kinds, fn) {
      const s = { kinds: Array.isArray(kinds) ? kinds : kinds ? [kinds] : [], fn };
      subs.add(s);
      return () => subs.delete(s);
    },
    start() { stopped = false; connect(); },
    stop() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(watchdog);
      if (abort) abort.abort();
      status("stopped");
    },
    get lastId() { return lastId; },
  };
}
