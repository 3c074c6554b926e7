// Schedule: the plan as a Gantt. One row per instrument (an incubator's sites as sub-rows), the
// steps planned and done, each run in its own colour with its plate as label, the lag windows
// ("must start by"), a now line, and the runs that wait with their reason. Zoom from an hour to
// a week (buttons, wheel, pinch), pan by dragging; a step opens its run.
import { h as el, svg, pageStyle } from '../ui.js';
import { runColour, runChip, fmtTime, fmtSpan, debounce } from './pagekit.js';

pageStyle('schedule');

const HOUR = 3600e3;
const ZOOMS = [
    ['1 h', HOUR],
    ['3 h', 3 * HOUR],
    ['8 h', 8 * HOUR],
    ['1 d', 24 * HOUR],
    ['3 d', 72 * HOUR],
    ['1 w', 168 * HOUR],
];
const MIN_SPAN = HOUR, MAX_SPAN = 168 * HOUR;
const LABEL_W = 150, AXIS_H = 28, ROW_H = 40, SUB_H = 24, PAD = 6;
// Ticks a span can use, the first giving at least ~6 labels across.
const TICKS = [5, 10, 15, 30, 60, 120, 180, 360, 720, 1440].map((m) => m * 60e3);

const SPAN_KEY = 'labloop.schedule.span';

function keptSpan() {
    const v = Number(sessionStorage.getItem(SPAN_KEY));
    return v >= MIN_SPAN && v <= MAX_SPAN ? v : 3 * HOUR;
}

export function mount(root, ctx) {
    const st = {
        data: null, // the last /v1/schedule answer
        fetchedAt: 0, // performance.now() of it
        instruments: [], // [{id, kind, state}]
        span: keptSpan(), // the zoom the technician chose last, kept for the tab's session
        t0: null, // lab ms at the chart's left edge; null: follow now
        error: null,
    };
    const bar = el('div', { class: 'sched-bar' });
    // Zoom levels and following now are choices of what to see, not actions: a radio group and
    // a checkbox, there for every role.
    const zoomBtns = ZOOMS.map(([label, ms]) => {
        const input = el('input', { type: 'radio', name: 'sched-zoom', value: String(ms),
            onchange: () => zoomTo(ms) });
        return el('label', { class: 'seg', 'data-span': String(ms) }, input, label);
    });
    const follow = el('input', { type: 'checkbox', onchange: () => {
        if (follow.checked) st.t0 = null;
        else st.t0 = leftEdge();
        draw();
    } });
    const nowBtn = el('label', { class: 'seg sched-now' }, follow, 'Follow now');
    const info = el('span', { class: 'sched-info' });
    bar.append(el('span', { class: 'sched-zoom', role: 'radiogroup', 'aria-label': 'zoom' },
        ...zoomBtns), nowBtn, info);
    const chartBox = el('div', { class: 'sched-chart' });
    const side = el('aside', { class: 'sched-waiting' });
    const body = el('div', { class: 'sched-body' }, chartBox, side);
    root.append(el('h1', {}, 'Schedule'), bar, body);

    // The lab's clock: the daemon's now, moved on by the time since at its time scale.
    function labNow() {
        if (!st.data) return Date.now();
        const scale = st.data.time_scale > 0 ? st.data.time_scale : 1;
        return Date.parse(st.data.now) + (performance.now() - st.fetchedAt) * scale;
    }
    function leftEdge() {
        return st.t0 !== null ? st.t0 : labNow() - st.span / 6;
    }

    async function load() {
        try {
            const [sch, ins] = await Promise.all([ctx.api('/v1/schedule'),
                st.instruments.length ? null : ctx.api('/v1/instruments')]);
            st.data = sch;
            st.fetchedAt = performance.now();
            if (ins) st.instruments = ins.instruments || [];
            st.error = null;
        } catch (e) {
            st.error = e.message;
        }
        draw();
        drawWaiting();
    }
    const reload = debounce(load, 400);

    // Rows: every instrument, then any instrument only the timeline names; sites as sub-rows.
    function rows(items) {
        const order = st.instruments.map((i) => i.id);
        for (const it of items) if (!order.includes(it.instrument)) order.push(it.instrument);
        const byInst = new Map(order.map((id) => [id, { id, sites: new Map(), items: [] }]));
        for (const it of items) {
            const r = byInst.get(it.instrument);
            if (it.site) {
                const key = `C${it.site.cassette}/S${it.site.slot}`;
                if (!r.sites.has(key)) r.sites.set(key, []);
                r.sites.get(key).push(it);
            } else {
                r.items.push(it);
            }
        }
        const out = [];
        for (const r of byInst.values()) {
            const inst = st.instruments.find((i) => i.id === r.id);
            out.push({ label: r.id || '(no instrument)', sub: inst ? inst.kind : '', h: ROW_H,
                items: r.items, main: true, state: inst ? inst.state : '' });
            const keys = [...r.sites.keys()].sort((a, b) => a.localeCompare(b, undefined,
                { numeric: true }));
            for (const k of keys)
                out.push({ label: k, h: SUB_H, items: r.sites.get(k), main: false });
        }
        return out;
    }

    function draw() {
        for (const b of zoomBtns) {
            const on = Number(b.dataset.span) === st.span;
            b.classList.toggle('on', on);
            b.firstChild.checked = on;
        }
        follow.checked = st.t0 === null;
        nowBtn.classList.toggle('on', st.t0 === null);
        if (st.error) {
            chartBox.replaceChildren(el('p', { class: 'error' }, `schedule: ${st.error}`));
            return;
        }
        if (!st.data) {
            chartBox.replaceChildren(el('p', { class: 'muted' }, 'loading…'));
            return;
        }
        const items = st.data.items || [];
        const rs = rows(items);
        const W = Math.max(chartBox.clientWidth || 0, 480);
        const plotW = W - LABEL_W;
        const H = AXIS_H + rs.reduce((s, r) => s + r.h, 0) + PAD;
        const t0 = leftEdge(), t1 = t0 + st.span;
        const x = (t) => LABEL_W + ((t - t0) / st.span) * plotW;
        const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'gantt',
            role: 'img', 'aria-label': 'schedule' });
        const defs = svg('defs');
        defs.append(svg('clipPath', { id: 'sched-clip' },
            svg('rect', { x: LABEL_W, y: 0, width: plotW, height: H })));
        defs.append(svg('pattern', { id: 'sched-lag', width: 6, height: 6,
            patternUnits: 'userSpaceOnUse', patternTransform: 'rotate(45)' },
        svg('rect', { width: 3, height: 6, class: 'lag-hatch' })));
        s.append(defs);
        // the time axis
        const tick = TICKS.find((t) => st.span / t <= 8) || TICKS[TICKS.length - 1];
        const axis = svg('g', { class: 'axis' });
        const tz = new Date().getTimezoneOffset() * 60e3;
        for (let t = Math.ceil((t0 - tz) / tick) * tick + tz; t < t1; t += tick) {
            const xx = x(t);
            axis.append(svg('line', { x1: xx, x2: xx, y1: AXIS_H - 6, y2: H, class: 'grid' }));
            axis.append(svg('text', { x: xx + 3, y: AXIS_H - 10 },
                fmtTime(t, tick < 24 * HOUR, tick >= 6 * HOUR)));
        }
        s.append(axis);
        // rows, labels and steps
        let y = AXIS_H;
        const plot = svg('g', { 'clip-path': 'url(#sched-clip)' });
        const labels = svg('g', { class: 'labels' });
        let shown = 0;
        for (const r of rs) {
            plot.append(svg('rect', { x: LABEL_W, y, width: plotW, height: r.h,
                class: r.main ? 'row' : 'row sub' }));
            const lab = svg('text', { x: r.main ? 8 : 22, y: y + (r.main ? 17 : 16),
                class: r.main ? 'row-label' : 'row-label sub' }, r.label);
            labels.append(lab);
            if (r.main && r.sub) {
                labels.append(svg('text', { x: 8, y: y + 32, class: 'row-kind' },
                    r.state ? `${r.sub} · ${r.state}` : r.sub));
            }
            for (const it of r.items) {
                const a = Date.parse(it.start), b = Date.parse(it.end);
                if (!(b >= t0 && a <= t1) && !it.must_start_by) continue;
                shown += drawItem(plot, it, x, y, r.h, t0, t1);
            }
            y += r.h;
        }
        s.append(plot, labels);
        s.append(svg('line', { x1: LABEL_W, x2: LABEL_W, y1: 0, y2: H, class: 'divider' }));
        // the now line
        const now = labNow();
        if (now >= t0 && now <= t1) {
            const nx = x(now);
            s.append(svg('line', { x1: nx, x2: nx, y1: AXIS_H - 8, y2: H, class: 'now-line' }));
            s.append(svg('text', { x: nx + 3, y: H - 4, class: 'now-label' }, 'now'));
        }
        st.plotW = plotW;
        chartBox.replaceChildren(s);
        const planned = items.filter((i) => i.state === 'planned').length;
        info.textContent = `${fmtTime(t0, true, true)} – ${fmtTime(t1, true, true)} · ` +
            `${planned} planned, ${items.length - planned} started · ` +
            `lag violations ${st.data.lag_violations ?? 0}`;
        chartBox.dataset.shown = String(shown);
        // the range shown, in lab ms, and the plot's width: what a test of the gestures reads
        Object.assign(chartBox.dataset, { t0: String(Math.round(t0)), t1: String(Math.round(t1)),
            plotW: String(plotW), follow: st.t0 === null ? '1' : '0' });
    }

    // One step: its lag window behind it, then its bar. Returns 1 when the bar is drawn.
    function drawItem(g, it, x, y, h, t0, t1) {
        const a = Date.parse(it.start), b = Math.max(Date.parse(it.end), a);
        const top = y + 4, bh = h - 8;
        if (it.must_start_by) {
            const lo = it.not_before ? Date.parse(it.not_before) : null;
            const hi = Date.parse(it.must_start_by);
            const from = lo !== null ? lo : Math.min(a, hi);
            if (hi >= t0 && from <= t1) {
                const late = a > hi + 1000;
                g.append(svg('rect', { x: x(from), y: top, width: Math.max(x(hi) - x(from), 1),
                    height: bh, class: late ? 'lag-band late' : 'lag-band' },
                svg('title', {}, `${it.step} of ${it.plate}: must start by ` +
                    `${fmtTime(hi, true, true)}${late ? ' (started late)' : ''}`)));
                const bx = x(hi);
                g.append(svg('path', { d: `M${bx - 5},${top} H${bx} V${top + bh} H${bx - 5}`,
                    class: late ? 'lag-bracket late' : 'lag-bracket' }));
            }
        }
        if (!(b >= t0 && a <= t1)) return 0;
        const x0 = x(a), w = Math.max(x(b) - x0, 2);
        const colour = runColour(it.run);
        const grp = svg('g', { class: `step ${it.state}`, tabindex: 0, role: 'link',
            'data-run': it.run, 'data-state': it.state });
        grp.append(svg('title', {},
            `${it.plate} · ${it.step} on ${it.instrument} · ${it.state}\n` +
            `${fmtTime(a, true, true)} – ${fmtTime(b, true, true)} (${fmtSpan(b - a)})\n` +
            `run ${it.run}`));
        grp.append(svg('rect', { x: x0, y: top, width: w, height: bh, rx: 3,
            fill: colour, stroke: colour, class: 'bar' }));
        if (w > 34) {
            grp.append(svg('text', { x: x0 + 4, y: top + bh / 2 + 4, class: 'bar-label' },
                it.plate.length * 7 > w - 6
                    ? it.plate.slice(0, Math.max(1, Math.floor((w - 6) / 7))) : it.plate));
        }
        const open = () => ctx.navigate(`#/runs/${encodeURIComponent(it.run)}`);
        grp.addEventListener('keydown', (e) => {
            if (e.key === 'Enter' || e.key === ' ') open();
        });
        g.append(grp);
        return 1;
    }

    function drawWaiting() {
        const w = (st.data && st.data.waiting) || [];
        const list = el('ul', {});
        for (const r of w) {
            list.append(el('li', {},
                runChip(r.run, r.run.slice(0, 8)),
                el('span', { class: 'state' }, r.state),
                el('p', { class: 'reason' }, r.reason || 'waits')));
        }
        side.replaceChildren(el('h2', {}, `Waiting (${w.length})`),
            w.length ? list : el('p', { class: 'muted' }, 'No run waits.'));
    }

    // Zoom keeps the instant under `at` (a lab time) where it is on screen.
    function zoomTo(span, at) {
        span = Math.min(MAX_SPAN, Math.max(MIN_SPAN, span));
        const left = leftEdge();
        if (at === undefined) {
            if (st.t0 !== null) st.t0 = left + (st.span - span) / 2;
        } else {
            st.t0 = at - ((at - left) / st.span) * span;
        }
        st.span = span;
        sessionStorage.setItem(SPAN_KEY, String(span));
        draw();
    }

    // Gestures on the chart's box (the SVG in it is drawn anew every second).
    let dragMoved = false;
    const toTime = (clientX) => {
        const r = chartBox.getBoundingClientRect();
        return leftEdge() + ((clientX - r.left - LABEL_W) / (st.plotW || 1)) * st.span;
    };
    chartBox.addEventListener('wheel', (e) => {
        if (!st.plotW) return;
        e.preventDefault();
        if (e.ctrlKey || Math.abs(e.deltaY) >= Math.abs(e.deltaX)) {
            zoomTo(st.span * Math.exp(e.deltaY * 0.002), toTime(e.clientX));
        } else {
            st.t0 = leftEdge() + (e.deltaX / st.plotW) * st.span;
            draw();
        }
    }, { passive: false });
    const ptrs = new Map();
    let start = null;
    const restart = () => {
        start = ptrs.size ? { left: leftEdge(), span: st.span, xs: [...ptrs.values()] } : null;
    };
    chartBox.addEventListener('pointerdown', (e) => {
        // the drag goes on when the pointer leaves the chart, or the chart moves under it
        try {
            chartBox.setPointerCapture(e.pointerId);
        } catch (err) {
            // a pointer the browser does not know as active (a synthetic event): no capture
        }
        ptrs.set(e.pointerId, e.clientX);
        dragMoved = false;
        restart();
    });
    chartBox.addEventListener('pointermove', (e) => {
        if (!ptrs.has(e.pointerId) || !start || !st.plotW) return;
        ptrs.set(e.pointerId, e.clientX);
        const xs = [...ptrs.values()];
        if (xs.length >= 2 && start.xs.length >= 2) {
            const d0 = Math.abs(start.xs[0] - start.xs[1]) || 1;
            const d1 = Math.abs(xs[0] - xs[1]) || 1;
            st.t0 = start.left;
            st.span = start.span;
            zoomTo(start.span * (d0 / d1), toTime((start.xs[0] + start.xs[1]) / 2));
            dragMoved = true;
        } else if (xs.length === 1) {
            const dx = xs[0] - start.xs[0];
            if (Math.abs(dx) > 4) dragMoved = true;
            if (dragMoved) {
                st.t0 = start.left - (dx / st.plotW) * st.span;
                draw();
            }
        }
    });
    const up = (e) => {
        const tap = ptrs.size === 1 && !dragMoved && e.type === 'pointerup';
        ptrs.delete(e.pointerId);
        restart();
        // a tap on a step opens its run (a click could land on a bar drawn anew meanwhile); the
        // pointer is captured by the chart's box, so the step is the one under the pointer
        const under = tap ? document.elementFromPoint(e.clientX, e.clientY) : null;
        const step = under && under.closest && under.closest('g.step');
        if (step) ctx.navigate(`#/runs/${encodeURIComponent(step.dataset.run)}`);
    };
    chartBox.addEventListener('pointerup', up);
    chartBox.addEventListener('pointercancel', up);

    const unsub = ctx.events.subscribe(['run.state', 'instrument.state'], (kind) => {
        if (kind === 'instrument.state') st.instruments = [];
        reload();
    });
    const timer = setInterval(draw, 1000);
    const onResize = debounce(draw, 100);
    window.addEventListener('resize', onResize);
    draw();
    load();
    return {
        unmount() {
            unsub();
            clearInterval(timer);
            reload.cancel();
            onResize.cancel();
            window.removeEventListener('resize', onResize);
        },
    };
}
