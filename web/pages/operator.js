// Operator: everything that waits for a person, newest first: the daemon's open prompts
// (GET /v1/prompts, then prompt events). A manual mover's pending move (confirm it), a paused run
// (resume with retry or skip, or cancel, with a reason), an instrument in fault (its reset
// action when its driver has one, else pause and resume); and every instrument's pause/resume
// with a reason, showing who holds it. Each decision asks first, saying what it will do, and the
// page shows who made it. A new item beeps and, when allowed, shows a notification.
import { h as el, pageStyle } from '../ui.js';
import { fmtAgo, debounce, errText, runChip } from './pagekit.js';

pageStyle('operator');

// Actions that put an instrument in fault back to a known state, by name, when a driver has one.
const RESET_ACTIONS = ['reset', 'clear_error', 'initialize'];

export function mount(root, ctx) {
    const st = { items: [], instruments: [], seen: null, decided: [], error: null, busy: false };
    let audio = null;
    // A switch, not an action: it only asks this browser for sound and notifications.
    const alertBox = el('input', { type: 'checkbox', onchange: () => {
        if (alertBox.checked) enableAlerts();
        else disableAlerts();
    } });
    const alertBtn = el('label', { class: 'op-alerts' }, alertBox, el('span', {}));
    const list = el('div', { class: 'op-items', 'aria-live': 'polite' });
    const instBox = el('div', { class: 'op-instruments' });
    const decidedBox = el('div', { class: 'op-decided' });
    root.append(el('div', { class: 'op-head' }, el('h1', {}, 'Operator'), alertBtn), list,
        el('h2', {}, 'Instruments'), instBox, el('h2', {}, 'Decided here'), decidedBox);
    showAlertState();

    function showAlertState() {
        const n = typeof Notification !== 'undefined' ? Notification.permission : 'unsupported';
        const on = audio !== null;
        alertBox.checked = on;
        alertBtn.lastChild.textContent = on ? `Sound on · notifications ${n}`
            : 'Sound and notifications';
        alertBtn.classList.toggle('on', on);
    }

    // A click is what lets a page play sound; the same click asks for notifications.
    async function enableAlerts() {
        try {
            const AC = window.AudioContext || window.webkitAudioContext;
            if (AC && !audio) audio = new AC();
            if (audio && audio.state === 'suspended') await audio.resume();
            if (typeof Notification !== 'undefined' && Notification.permission === 'default')
                await Notification.requestPermission();
        } catch (e) {
            ctx.toast(`alerts: ${e.message}`);
        }
        showAlertState();
        beep();
    }

    function disableAlerts() {
        if (audio) audio.close();
        audio = null;
        showAlertState();
    }

    function beep() {
        if (!audio || audio.state !== 'running') return;
        const t = audio.currentTime;
        for (const [i, f] of [[0, 880], [1, 660]]) {
            const o = audio.createOscillator(), g = audio.createGain();
            o.frequency.value = f;
            g.gain.setValueAtTime(0.0001, t + i * 0.18);
            g.gain.exponentialRampToValueAtTime(0.3, t + i * 0.18 + 0.02);
            g.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.18 + 0.16);
            o.connect(g).connect(audio.destination);
            o.start(t + i * 0.18);
            o.stop(t + i * 0.18 + 0.17);
        }
    }

    function announce(items) {
        beep();
        if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
        for (const it of items.slice(0, 3)) {
            try {
                new Notification(`labloop: ${it.title}`, { body: it.text, tag: it.key });
            } catch (e) {
                /* a browser may allow notifications only from a service worker: the sound stays */
            }
        }
    }

    // The list is the open prompts (GET /v1/prompts, then prompt events); a card needs the
    // run or instrument it is about, fetched with it.
    async function load() {
        try {
            const [ins, pr] = await Promise.all([ctx.api('/v1/instruments'),
                ctx.api('/v1/prompts')]);
            st.instruments = ins.instruments || [];
            const items = await Promise.all((pr.prompts || []).map(fromPrompt));
            st.items = items.filter(Boolean);
            st.error = null;
        } catch (e) {
            st.error = errText(e);
        }
        const keys = new Set(st.items.map((i) => i.key));
        if (st.seen) {
            const fresh = st.items.filter((i) => !st.seen.has(i.key));
            if (fresh.length) announce(fresh);
        }
        st.seen = keys;
        draw();
    }
    const reload = debounce(load, 300);

    async function fromPrompt(p) {
        const base = { key: `${p.id}:${p.opened_at}`, prompt: p, at: p.opened_at,
            title: p.title, text: p.text || '' };
        try {
            if (p.kind === 'run.paused') {
                const r = await ctx.api(`/v1/runs/${encodeURIComponent(p.run)}`);
                const step = (r.steps || []).find((s) => s.state === 'failed' ||
                    s.state === 'running' || s.state === 'pending');
                return { ...base, kind: 'paused', run: r, step };
            }
            const i = await ctx.api(`/v1/instruments/${encodeURIComponent(p.instrument)}`);
            if (p.kind === 'move') return { ...base, kind: 'move', inst: i, move: p.move || {} };
            return { ...base, kind: 'fault', inst: i };
        } catch (e) {
            return null; /* gone meanwhile: the next event says so */
        }
    }

    // A decision made here answers a prompt: what the daemon recorded for it (its prompt
    // event: how, by whom) is added to the decision's line, whichever comes first.
    let pendingPrompt = null;
    const recorded = new Map(); // prompt id -> the daemon's word, come before the answer

    // One decision: ask, do, and say who did it.
    async function decide(question, path, body, done, word, promptId) {
        if (st.busy) return;
        if (!(await ctx.confirm(question, { action: word, title: 'Please confirm' }))) return;
        st.busy = true;
        pendingPrompt = promptId || null;
        try {
            const r = await ctx.api(path, { method: 'POST', body });
            const who = done(r);
            const entry = { at: new Date().toISOString(), text: who, key: path,
                prompt: promptId };
            if (promptId && recorded.has(promptId)) {
                entry.text += ` (recorded: ${recorded.get(promptId)})`;
                entry.recorded = true;
            }
            st.decided.unshift(entry);
            ctx.toast(who);
        } catch (e) {
            ctx.toast(`refused: ${errText(e)}`);
        } finally {
            st.busy = false;
            recorded.delete(pendingPrompt);
            pendingPrompt = null;
        }
        load();
    }

    function reasonField(id) {
        return el('input', { type: 'text', class: 'op-reason', id, maxlength: 500,
            placeholder: 'reason (kept with the run)', 'aria-label': 'reason' });
    }

    function moveCard(it) {
        const i = it.inst, m = it.move;
        const acts = ctx.canAct ? el('div', { class: 'op-acts' },
            el('button', { type: 'button', class: 'primary', 'data-act': 'confirm-move',
                onclick: () => decide(
                    `Confirm that plate ${m.plate || '(unnamed)'} is now on ${m.to} (taken from ` +
                    `${m.from})? ${i.id} reports the move done and the run goes on.`,
                    `/v1/instruments/${encodeURIComponent(i.id)}/actions`,
                    { action: 'confirm' },
                    (r) => {
                        const c = (r.result && (r.result.confirmed || r.result)) || {};
                        return `move of ${m.plate || 'the plate'} to ${m.to} confirmed by ` +
                            `${c.confirmed_by || 'you'}`;
                    }, 'Move done', it.prompt.id) }, 'Move done')) : null;
        return card(it, el('p', { class: 'op-move' }, el('b', {}, m.from), ' → ',
            el('b', {}, m.to),
            m.note ? el('span', { class: 'note' }, ` ${m.note}`) : null,
            el('span', { class: 'muted' }, ` on ${i.label || i.id}`)), acts);
    }

    function pausedCard(it) {
        const r = it.run;
        const rid = `op-reason-${r.id}`;
        const reasonOf = () => (root.querySelector(`#${CSS.escape(rid)}`) || {}).value || '';
        const resume = (how) => {
            const reason = reasonOf().trim();
            const body = { step: how };
            if (reason) body.reason = reason;
            const what = how === 'skip'
                ? `Skip step ${it.step ? it.step.name : ''} of plate ${r.plate} and go on ` +
                  'with the next one?'
                : `Retry step ${it.step ? it.step.name : ''} of plate ${r.plate}?`;
            decide(`${what}${reason ? ` Reason: ${reason}` : ''}`,
                `/v1/runs/${encodeURIComponent(r.id)}/resume`, body,
                (doc) => `run ${r.plate} resumed (${how}) by ${(doc && doc.resumed_by) || 'you'}`,
                how === 'skip' ? 'Skip step' : 'Retry step', it.prompt.id);
        };
        const cancel = () => {
            const reason = reasonOf().trim();
            decide(`Cancel run ${r.plate} (${r.workflow})? Its remaining steps will not run.` +
                `${reason ? ` Reason: ${reason}` : ''}`,
            `/v1/runs/${encodeURIComponent(r.id)}/cancel`, reason ? { reason } : {},
            (doc) => `run ${r.plate} cancelled by ${(doc && doc.cancelled_by) || 'you'}`,
            'Cancel run', it.prompt.id);
        };
        const acts = ctx.canAct ? el('div', { class: 'op-acts' }, reasonField(rid),
            el('button', { type: 'button', 'data-act': 'retry', onclick: () => resume('retry') },
                'Retry step'),
            el('button', { type: 'button', 'data-act': 'skip', onclick: () => resume('skip') },
                'Skip step'),
            el('button', { type: 'button', class: 'danger', 'data-act': 'cancel', onclick: cancel },
                'Cancel run')) : null;
        return card(it, el('p', {}, runChip(r.id, r.plate), ' ', r.workflow,
        it.step ? ` · step ${it.step.name}` : '',
        it.step && it.step.error && !it.text.includes(it.step.error)
            ? el('span', { class: 'muted' }, `: ${it.step.error}`) : null), acts);
    }

    function faultCard(it) {
        const i = it.inst;
        const reset = (i.actions || []).find((a) => RESET_ACTIONS.includes(a.name));
        let acts = null;
        if (ctx.canAct && reset) {
            acts = el('div', { class: 'op-acts' }, el('button', { type: 'button', class: 'primary',
                'data-act': 'reset', onclick: () => decide(
                    `Send ${reset.name} to ${i.id}? ${reset.help || ''}`,
                    `/v1/instruments/${encodeURIComponent(i.id)}/actions`, { action: reset.name },
                    () => `${i.id}: ${reset.name} sent`, `${reset.name} ${i.id}`, it.prompt.id) },
                `${reset.name}`));
        } else if (ctx.canAct) {
            acts = el('div', { class: 'op-acts' }, el('span', { class: 'muted' },
                `${i.driver} has no reset action: fix it at the bench, then resume it below.`));
        }
        return card(it, el('p', { class: 'muted' }, `${i.model || i.driver || ''}`), acts);
    }

    function card(it, body, acts) {
        return el('article', { class: `op-item ${it.kind}`, 'data-kind': it.kind,
            'data-key': it.key },
        el('header', {}, el('h3', {}, it.title), el('time', { datetime: it.at || '' },
            it.at ? fmtAgo(it.at) : '')),
        el('p', { class: 'op-text' }, it.text), body, acts);
    }

    function instRow(i) {
        const held = Boolean(i.paused_by) || i.state === 'paused';
        const rid = `op-hold-${i.id}`;
        const reasonOf = () => ((root.querySelector(`#${CSS.escape(rid)}`) || {}).value || '')
            .trim();
        const act = () => {
            const reason = held ? '' : reasonOf();
            decide(held
                ? `Resume ${i.id}? The scheduler plans steps on it again.`
                : `Pause ${i.id}? No new step starts on it; the one running finishes.` +
                  `${reason ? ` Reason: ${reason}` : ''}`,
            `/v1/instruments/${encodeURIComponent(i.id)}/${held ? 'resume' : 'pause'}`,
            reason ? { reason } : {},
            (doc) => `${i.id} ${held ? 'resumed' : 'paused'} by ` +
                `${(doc && (held ? doc.resumed_by : doc.paused_by)) || 'you'}`,
            `${held ? 'Resume' : 'Pause'} ${i.id}`);
        };
        const acts = ctx.canAct ? [held ? null : el('input', { type: 'text', class: 'op-reason',
            id: rid, maxlength: 500, placeholder: 'why (optional)', 'aria-label': 'reason' }),
        el('button', { type: 'button', 'data-act': held ? 'resume' : 'pause', onclick: act },
            held ? 'Resume' : 'Pause')] : [];
        const who = i.paused_by ? el('span', { class: 'muted op-held' },
            `paused by ${i.paused_by}${i.pause_reason ? `: ${i.pause_reason}` : ''}`) : null;
        return el('tr', { 'data-inst': i.id }, el('td', {}, el('b', {}, i.id)),
            el('td', {}, i.kind),
            el('td', {}, el('span', { class: `state s-${i.state}` }, i.state), ' ', who),
            el('td', {}, ...acts));
    }

    function draw() {
        // what is typed in a reason field survives the redraw an event causes
        const typed = new Map([...root.querySelectorAll('input.op-reason')]
            .map((f) => [f.id, [f.value, f === document.activeElement]]));
        drawItems();
        for (const [id, [v, focused]] of typed) {
            const f = root.querySelector(`#${CSS.escape(id)}`);
            if (!f) continue;
            f.value = v;
            if (focused) f.focus();
        }
    }

    function drawItems() {
        if (st.error) {
            list.replaceChildren(el('p', { class: 'error' }, `operator: ${st.error}`));
        } else if (!st.items.length) {
            list.replaceChildren(el('p', { class: 'op-none' }, 'Nothing waits for a person.'));
        } else {
            list.replaceChildren(...st.items.map((it) => it.kind === 'move' ? moveCard(it)
                : it.kind === 'paused' ? pausedCard(it) : faultCard(it)));
        }
        instBox.replaceChildren(el('table', {}, el('tbody', {}, ...st.instruments.map(instRow))));
        decidedBox.replaceChildren(st.decided.length ? el('ul', {}, ...st.decided.slice(0, 20)
            .map((d) => el('li', {}, el('time', {}, fmtAgo(d.at)), ' ', d.text)))
            : el('p', { class: 'muted' }, 'No decision yet.'));
    }

    // Prompts answered elsewhere show as decisions too; every prompt event redraws the list.
    const unsub = ctx.events.subscribe(['prompt', 'instrument.state'], (kind, key, data) => {
        if (kind === 'prompt' && data && data.open === false && data.by) {
            const word = `${data.how || 'answered'} by ${data.by}` +
                `${data.reason ? ` (${data.reason})` : ''}`;
            const mine = st.decided.find((d) => d.prompt === key && !d.recorded);
            if (mine) {
                mine.text += ` (recorded: ${word})`;
                mine.recorded = true;
            } else if (pendingPrompt === key) {
                recorded.set(key, word);
            } else {
                st.decided.unshift({ at: new Date().toISOString(), prompt: key, recorded: true,
                    text: `${data.title}: ${word}` });
            }
        }
        reload();
    });
    const ages = setInterval(() => {
        for (const t of root.querySelectorAll('.op-item time[datetime]'))
            if (t.getAttribute('datetime')) t.textContent = fmtAgo(t.getAttribute('datetime'));
    }, 30e3);
    draw();
    load();
    return {
        unmount() {
            unsub();
            reload.cancel();
            clearInterval(ages);
            if (audio) audio.close();
            audio = null;
        },
    };
}
