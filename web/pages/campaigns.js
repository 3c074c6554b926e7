// Campaigns: the list, and one campaign: best-so-far against experiments (with random
// screening's expectation as a band, estimated from the campaign's own space-filling design),
// candidates with state, score, plate and why, Z' per plate, batches. Live from the campaign's
// events.
import { h as el, svg, pageStyle } from '../ui.js';
import { fmtAgo, debounce, errText } from './pagekit.js';

pageStyle('campaigns');

const KINDS = ['campaign', 'candidate', 'campaign.result', 'plate', 'batch'];

export function mount(root, ctx) {
    const id = ctx.param !== undefined ? ctx.param || ''
        : decodeURIComponent((location.hash.match(/^#\/campaigns\/([^/?]+)/) || [])[1] || '');
    return id ? detail(root, ctx, id) : list(root, ctx);
}

function list(root, ctx) {
    const box = el('div', { class: 'camp-list' });
    root.append(el('h1', {}, 'Campaigns'), box);
    async function load() {
        try {
            const r = await ctx.api('/v1/campaigns');
            const cs = r.campaigns || [];
            if (!cs.length) {
                box.replaceChildren(el('p', { class: 'muted' }, 'No campaign yet.'));
                return;
            }
            box.replaceChildren(el('table', { class: 'camp-table' },
                el('thead', {}, el('tr', {}, ...['Campaign', 'State', 'Workflow', 'Created']
                    .map((h) => el('th', {}, h)))),
                el('tbody', {}, ...cs.map((c) => el('tr', {
                    tabindex: 0, 'data-campaign': c.id,
                    onclick: () => ctx.navigate(`#/campaigns/${encodeURIComponent(c.id)}`),
                    onkeydown: (e) => {
                        if (e.key === 'Enter')
                            ctx.navigate(`#/campaigns/${encodeURIComponent(c.id)}`);
                    } },
                el('td', {}, el('a', { href: `#/campaigns/${encodeURIComponent(c.id)}` }, c.id)),
                el('td', {}, el('span', { class: `cstate s-${c.state}` }, c.state)),
                el('td', {}, c.workflow || ''),
                el('td', {}, c.created_at ? fmtAgo(c.created_at) : ''))))));
        } catch (e) {
            box.replaceChildren(el('p', { class: 'error' }, `campaigns: ${errText(e)}`));
        }
    }
    const reload = debounce(load, 500);
    const unsub = ctx.events.subscribe(['campaign'], () => reload());
    load();
    return {
        unmount() {
            unsub();
            reload.cancel();
        },
    };
}

function detail(root, ctx, id) {
    const q = encodeURIComponent(id);
    const head = el('div', { class: 'camp-head' });
    const plotBox = el('div', { class: 'camp-plot' });
    const zBox = el('div', { class: 'camp-z' });
    const batchBox = el('div', { class: 'camp-batches' });
    const candBox = el('div', { class: 'camp-cands' });
    root.append(el('p', {}, el('a', { href: '#/campaigns' }, '← Campaigns')), head,
        el('section', {}, el('h2', {}, 'Best so far'), plotBox),
        el('div', { class: 'camp-two' }, el('section', {}, el('h2', {}, 'Z′ per plate'), zBox),
            el('section', {}, el('h2', {}, 'Batches'), batchBox)),
        el('section', {}, el('h2', {}, 'Candidates'), candBox));
    const st = { doc: null, cands: [], results: [], error: null };

    async function load() {
        try {
            const [doc, c, r] = await Promise.all([ctx.api(`/v1/campaigns/${q}`),
                ctx.api(`/v1/campaigns/${q}/candidates`), ctx.api(`/v1/campaigns/${q}/results`)]);
            st.doc = doc;
            st.cands = c.candidates || [];
            st.results = r.results || [];
            st.error = null;
        } catch (e) {
            st.error = errText(e);
        }
        draw();
    }
    const reload = debounce(load, 300);

    function draw() {
        if (st.error) {
            head.replaceChildren(el('h1', {}, id), el('p', { class: 'error' }, st.error));
            return;
        }
        const d = st.doc;
        if (!d) return;
        const obj = d.objective || {};
        const counts = d.candidates || {};
        head.replaceChildren(...[el('h1', {}, d.name || d.id),
            el('p', { class: 'camp-facts' },
                el('span', { class: `cstate s-${d.state}` }, d.state), ' ',
                `${obj.direction || 'maximize'} ${obj.measure || ''} · workflow ${d.workflow} · `,
                `${st.results.length} results · ${d.plates_made ?? 0} plates`,
                d.budget && d.budget.candidates
                    ? ` · budget ${d.budget.candidates} candidates` : ''),
            d.best ? el('p', { class: 'camp-best' }, 'Best ', el('b', {}, fmtNum(d.best.value)),
                ` (${d.best.candidate}: ${params(d.best.params)})`) : null,
            d.reason ? el('p', { class: 'muted' }, fmtReason(d.reason)) : null,
            el('p', { class: 'camp-counts' }, ...Object.entries(counts).filter(([, n]) => n)
                .map(([k, n]) => el('span', { class: `cstate s-${k}` }, `${k} ${n}`)))]
            .filter(Boolean));
        drawPlot(plotBox, st.results, obj.direction === 'minimize');
        drawZ();
        drawBatches(d.batches || []);
        drawCands();
    }

    function drawZ() {
        const plates = new Map();
        for (const r of st.results) {
            if (!r.plate) continue;
            plates.set(r.plate, { z: r.z_prime, run: r.run, n: (plates.get(r.plate)?.n || 0) + 1 });
        }
        const zmin = (st.doc.qc && st.doc.qc.z_prime_min) ?? 0.5;
        if (!plates.size) {
            zBox.replaceChildren(el('p', { class: 'muted' }, 'No plate read yet.'));
            return;
        }
        zBox.replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
            el('th', {}, 'Plate'), el('th', {}, 'Z′'), el('th', {}, 'Results'))),
        el('tbody', {}, ...[...plates].map(([p, v]) => el('tr', {},
            el('td', {}, v.run ? el('a', { href: `#/runs/${encodeURIComponent(v.run)}` }, p) : p),
            el('td', { class: typeof v.z === 'number' && v.z < zmin ? 'bad' : 'good' },
                typeof v.z === 'number' ? v.z.toFixed(3) : '—'),
            el('td', {}, String(v.n)))))));
    }

    function drawBatches(bs) {
        if (!bs.length) {
            batchBox.replaceChildren(el('p', { class: 'muted' }, 'No batch yet.'));
            return;
        }
        const per = new Map();
        for (const c of st.cands) per.set(c.batch, (per.get(c.batch) || 0) + 1);
        batchBox.replaceChildren(el('table', {}, el('thead', {}, el('tr', {},
            ...['Batch', 'State', 'Model', 'Candidates', 'Received'].map((h) => el('th', {}, h)))),
        el('tbody', {}, ...bs.slice().reverse().map((b) => el('tr', {},
            el('td', {}, b.batch),
            el('td', {}, el('span', { class: `cstate s-${b.state}` }, b.state)),
            el('td', {}, b.model ? `${b.model.name || ''} ${b.model.version || ''}` : ''),
            el('td', {}, String(per.get(b.batch) || 0)),
            el('td', {}, b.received_at ? fmtAgo(b.received_at) : ''))))));
    }

    function drawCands() {
        const cs = st.cands.slice().sort((a, b) => (b.ord ?? 0) - (a.ord ?? 0));
        if (!cs.length) {
            candBox.replaceChildren(el('p', { class: 'muted' }, 'No candidate yet.'));
            return;
        }
        candBox.replaceChildren(el('table', { class: 'camp-cand-table' }, el('thead', {},
            el('tr', {}, ...['Candidate', 'State', 'Score', 'Value', 'Plate', 'Parameters', 'Why']
                .map((h) => el('th', {}, h)))),
        el('tbody', {}, ...cs.map((c) => {
            const res = c.result || {};
            const plate = res.plate || c.plate || (c.plates && c.plates.length
                ? c.plates[c.plates.length - 1].plate : '');
            const run = res.run ||
                (c.plates && c.plates.length ? c.plates[c.plates.length - 1].run : '');
            return el('tr', { 'data-candidate': c.id },
                el('td', {}, c.id),
                el('td', {}, el('span', { class: `cstate s-${c.state}` }, c.state)),
                el('td', { class: 'num' }, fmtNum(c.score)),
                el('td', { class: 'num' }, fmtNum(res.value)),
                el('td', {}, run
                    ? el('a', { href: `#/runs/${encodeURIComponent(run)}` }, plate) : plate),
                el('td', { class: 'params' }, params(c.params)),
                el('td', { class: 'why' }, why(c)));
        }))));
    }

    const unsub = ctx.events.subscribe(KINDS, (kind, key, data) => {
        if (!relevant(id, key, data)) return;
        reload();
    });
    load();
    return {
        unmount() {
            unsub();
            reload.cancel();
        },
    };
}

// An event of this campaign: its key or payload names it (keys of candidates and results carry
// the campaign's id; payloads carry "campaign").
function relevant(id, key, data) {
    if (data && typeof data === 'object' && (data.campaign === id || data.id === id)) return true;
    return typeof key === 'string' && (key === id || key.split('/').includes(id) ||
        key.startsWith(`${id}:`));
}

function fmtNum(v) {
    if (typeof v !== 'number' || !isFinite(v)) return '—';
    return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(4);
}

function params(p) {
    if (!p) return '';
    return Object.entries(p)
        .map(([k, v]) => `${k} ${typeof v === 'number' ? +v.toFixed(3) : v}`).join(', ');
}

function fmtReason(r) {
    if (typeof r === 'string') return r;
    return (r && (r.detail || r.message)) || JSON.stringify(r);
}

// Why a candidate is where it is: its reason when it failed or was dropped, else how it was
// proposed (a space-filling design, or the model's acquisition with its uncertainty).
function why(c) {
    if (c.reason) return fmtReason(c.reason);
    const f = c.fit || {};
    if (f.design && f.design !== 'gp') return `${f.design} design (initial)`;
    const parts = [];
    if (f.design) parts.push(`model ${f.version || ''} on ${f.observations ?? '?'} results` +
        (f.pending ? `, ${f.pending} pending` : ''));
    if (typeof c.uncertainty === 'number') parts.push(`± ${c.uncertainty.toPrecision(2)}`);
    return parts.join(' ') || (c.model ? `${c.model.name || ''} ${c.model.version || ''}` : '');
}

// Random screening's best after n experiments, from the values of the campaign's space-filling
// (uniform) design: the best of n draws has the q-quantile F^-1(q^(1/n)) of one draw's
// distribution F, here the design's empirical one. Needs a few of them; null otherwise.
export function randomBand(values, n, maximize) {
    if (values.length < 5) return null;
    const v = values.slice().sort((a, b) => (maximize ? a - b : b - a));
    const at = (q) => {
        const p = Math.pow(q, 1 / n) * (v.length - 1);
        const i = Math.floor(p), f = p - i;
        return i + 1 < v.length ? v[i] + (v[i + 1] - v[i]) * f : v[i];
    };
    return [at(0.1), at(0.5), at(0.9)];
}

function drawPlot(box, results, minimize) {
    const rs = results.slice().sort((a, b) => Date.parse(a.at) - Date.parse(b.at) ||
        (a.candidate < b.candidate ? -1 : 1));
    if (!rs.length) {
        box.replaceChildren(el('p', { class: 'muted' }, 'No result yet.'));
        box.dataset.points = '0';
        return;
    }
    const better = (a, b) => (minimize ? a < b : a > b);
    const best = [];
    let cur = null;
    for (const r of rs) {
        if (typeof r.value !== 'number') continue;
        if (cur === null || better(r.value, cur)) cur = r.value;
        best.push({ n: best.length + 1, v: r.value, best: cur, r });
    }
    const initial = rs.filter((r) => r.fit && r.fit.design && r.fit.design !== 'gp' &&
        typeof r.value === 'number').map((r) => r.value);
    const N = best.length;
    const band = [];
    for (let n = 1; n <= N; n++) {
        const b = randomBand(initial, n, !minimize);
        if (b) band.push([n, ...b]);
    }
    const W = Math.max(box.clientWidth || 0, 360), H = 300, L = 56, R = 12, T = 12, B = 38;
    const ys = best.map((p) => p.v).concat(band.flatMap((b) => [b[1], b[3]]));
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1e-9) {
        y0 -= 0.5;
        y1 += 0.5;
    }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
    const x = (n) => L + ((n - 1) / Math.max(N - 1, 1)) * (W - L - R);
    const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'camp-svg',
        role: 'img', 'aria-label': 'best so far against experiments' });
    for (let i = 0; i <= 4; i++) {
        const v = y0 + ((y1 - y0) * i) / 4;
        s.append(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), class: 'grid' }),
            svg('text', { x: L - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, fmtNum(v)));
    }
    const step = Math.max(1, Math.ceil(N / 8));
    for (let n = 1; n <= N; n += step)
        s.append(svg('text', { x: x(n), y: H - B + 16, class: 'tick', 'text-anchor': 'middle' },
            String(n)));
    s.append(svg('text', { x: (L + W - R) / 2, y: H - 4, class: 'axis-label',
        'text-anchor': 'middle' },
        'experiments (results in the order they arrived)'));
    if (band.length > 1) {
        const up = band.map((b) => `${x(b[0])},${y(b[3])}`).join(' ');
        const down = band.slice().reverse().map((b) => `${x(b[0])},${y(b[1])}`).join(' ');
        s.append(svg('polygon', { points: `${up} ${down}`, class: 'band' },
            svg('title', {}, 'random screening: 10–90% of the best after n experiments, ' +
                `resampled from the ${initial.length} results of the initial ` +
                'space-filling design')));
        s.append(svg('polyline', { points: band.map((b) => `${x(b[0])},${y(b[2])}`).join(' '),
            class: 'band-median' }));
    }
    for (const p of best) {
        s.append(svg('circle', { cx: x(p.n), cy: y(p.v), r: 3.5, class: 'pt' },
            svg('title', {}, `#${p.n} ${p.r.candidate}: ${fmtNum(p.v)} (${p.r.plate || ''})`)));
    }
    s.append(svg('polyline', { points: best.map((p) => `${x(p.n)},${y(p.best)}`).join(' '),
        class: 'best' }));
    const legend = el('p', { class: 'camp-legend' },
        el('span', { class: 'lg best' }, 'best so far'),
        el('span', { class: 'lg pt' }, 'each result'),
        band.length > 1 ? el('span', { class: 'lg band' },
            `random screening (10–90%, from ${initial.length} space-filling results)`)
            : el('span', { class: 'muted' }, 'random band: needs 5 results of the initial design'));
    box.replaceChildren(s, legend);
    box.dataset.points = String(N);
}
