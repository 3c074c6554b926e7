// What the Schedule, Operator and Campaigns pages share beyond ../ui.js: a run's colour, times
// as a technician reads them, a debounce, an API error's words.
import { h } from '../ui.js';

// A run's colour, the same on every page and every load: a hash of its id as a hue.
export function runColour(id) {
    let h = 2166136261;
    for (let i = 0; i < id.length; i++) {
        h ^= id.charCodeAt(i);
        h = Math.imul(h, 16777619);
    }
    const hue = (h >>> 0) % 360;
    return `hsl(${hue} 62% ${hue > 40 && hue < 200 ? 36 : 46}%)`;
}

// A link to a run in the run's colour (set through the CSSOM: the app's CSP forbids style
// attributes).
export function runChip(run, text, cls = 'run-chip') {
    const a = h('a', { href: `#/runs/${encodeURIComponent(run)}`, class: cls }, text);
    a.style.setProperty('--run', runColour(run));
    return a;
}

const pad = (n) => String(n).padStart(2, '0');

// Local time: "14:05", or with seconds, or with the day ("Sat 5 14:05").
export function fmtTime(ms, withMinutes = true, withDay = false) {
    const d = new Date(ms);
    const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
    const hm = withMinutes ? `${pad(d.getHours())}:${pad(d.getMinutes())}`
        : `${pad(d.getHours())}h`;
    return withDay ? `${days[d.getDay()]} ${d.getDate()} ${hm}` : hm;
}

export function fmtSpan(ms) {
    const s = Math.round(ms / 1000);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ''}`;
    const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60);
    return `${h} h${m ? ` ${m} min` : ''}`;
}

// How long ago, in words a glance reads.
export function fmtAgo(iso) {
    const t = Date.parse(iso), ms = Date.now() - t;
    if (Number.isNaN(t)) return '';
    if (ms < 0) return fmtTime(t, true, true); /* ahead of this clock: a lab clock run faster */
    if (ms < 60e3) return 'just now';
    if (ms < 3600e3) return `${Math.floor(ms / 60e3)} min ago`;
    if (ms < 86400e3) return `${Math.floor(ms / 3600e3)} h ago`;
    return `${Math.floor(ms / 86400e3)} d ago`;
}

// fn called once, `ms` after the last call; .cancel() drops a pending call.
export function debounce(fn, ms) {
    let t = null;
    const d = (...a) => {
        clearTimeout(t);
        t = setTimeout(() => {
            t = null;
            fn(...a);
        }, ms);
    };
    d.cancel = () => clearTimeout(t);
    return d;
}

// The text of an API error: its problem's detail when it has one.
export function errText(e) {
    const p = e && e.problem;
    return (p && (p.detail || p.title)) || (e && e.message) || String(e);
}
