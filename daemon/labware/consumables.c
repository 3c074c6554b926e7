/* A liquid handler's tips and troughs (consumables.h): the counts in memory, kept current from
 * the instruments' actions and refills, each change written to the store with its outbox row;
 * the reservations of steps under way, in memory only (a restart re-plans every step). */
#include "daemon/labware/consumables.h"
#include "core/err.h"
#include "core/id.h"
#include "core/log.h"
#include "core/mem.h"
#include "daemon/store/consumables.h"
#include "drivers/supplies.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB "consumables"
#define LISTENERS 4

typedef struct trough {
    char name[LAB_TEXT_BYTES(LAB_REAGENT_CHARS)];
    double total, left, reserved; /* µL */
} trough_t;

/* An action's use as charged when it was queued, until it ends (per instrument, in queue order:
 * pick-ups and aspirates are not immediate, so they end in the order they were queued). */
typedef struct pend {
    struct pend *next;
    bool tips;
    int t;         /* trough, -1: none (from a well, a reagent without a trough) */
    double amount; /* tips or µL charged */
} pend_t;

/* One liquid handler that declares consumables. */
typedef struct supply {
    lab_driver_t *d;
    bool has_tips; /* tip_racks given */
    long racks, per_rack, total, left, reserved;
    int fitted; /* tips on the channels since the last pick-up: a single volume is per channel */
    trough_t tr[LAB_SUPPLY_TROUGHS_MAX];
    int ntr;
    pend_t *pending;  /* pick-ups and aspirates queued and not ended, charged already */
    json_t *last;     /* the newest change: use or refill */
    json_t *refilled; /* the newest refill */
    int64_t updated_ms;
} supply_t;

/* What a step under way holds. */
typedef struct hold {
    struct hold *next;
    char run[LAB_UUID_LEN + 1];
    supply_t *sp;
    long tips;
    double ul[LAB_SUPPLY_TROUGHS_MAX];
} hold_t;

struct lab_consumables {
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_instr_t *in;
    supply_t *v;
    int n;
    hold_t *holds;
    struct {
        void (*cb)(void *ctx);
        void *ctx;
    } on_change[LISTENERS];
    int non_change;
    int ops; /* store writes in flight */
    bool closing;
    void (*close_cb)(void *);
    void *close_arg;
};

static supply_t *supply_of(lab_consumables_t *c, const char *id)
{
    for (int i = 0; c && id && i < c->n; i++)
        if (strcmp(lab_driver_id(c->v[i].d), id) == 0)
            return &c->v[i];
    return NULL;
}

static int trough_of(const supply_t *sp, const char *name)
{
    for (int i = 0; name && i < sp->ntr; i++)
        if (strcmp(sp->tr[i].name, name) == 0)
            return i;
    return -1;
}

/* µL for people: whole numbers bare, else one decimal. */
static void ul_text(double ul, char *buf, size_t cap)
{
    if (fabs(ul - round(ul)) < 0.05)
        snprintf(buf, cap, "%.0f", round(ul));
    else
        snprintf(buf, cap, "%.1f", ul);
}

static json_t *supply_doc(const supply_t *sp)
{
    json_t *doc = json_pack("{s:s}", "instrument", lab_driver_id(sp->d));
    if (sp->has_tips)
        json_object_set_new(doc, "tips",
                            json_pack("{s:I,s:I,s:I,s:I,s:I}", "racks", (json_int_t)sp->racks,
                                      "per_rack", (json_int_t)sp->per_rack, "total",
                                      (json_int_t)sp->total, "left", (json_int_t)sp->left,
                                      "reserved", (json_int_t)sp->reserved));
    else
        json_object_set_new(doc, "tips", json_null());
    json_t *tr = json_array();
    for (int i = 0; i < sp->ntr; i++)
        json_array_append_new(tr, json_pack("{s:s,s:f,s:f,s:f}", "name", sp->tr[i].name, "total_ul",
                                            sp->tr[i].total, "left_ul", sp->tr[i].left,
                                            "reserved_ul", sp->tr[i].reserved));
    json_object_set_new(doc, "troughs", tr);
    if (sp->last)
        json_object_set(doc, "last", sp->last);
    if (sp->refilled)
        json_object_set(doc, "refilled", sp->refilled);
    if (sp->updated_ms) {
        char at[32];
        lab_time_iso(sp->updated_ms, at);
        json_object_set_new(doc, "updated_at", json_string(at));
    }
    return doc;
}

/* A write of the supply's document; done with the document once it committed. */
typedef struct write {
    lab_consumables_t *c;
    lab_consumables_done_cb cb;
    void *arg;
    json_t *doc;
    bool changed; /* tell the on_change listeners */
} write_t;

static void consumables_free(lab_consumables_t *c)
{
    void (*cb)(void *) = c->close_cb;
    void *arg = c->close_arg;
    while (c->holds) {
        hold_t *h = c->holds;
        c->holds = h->next;
        free(h);
    }
    for (int i = 0; i < c->n; i++) {
        while (c->v[i].pending) {
            pend_t *p = c->v[i].pending;
            c->v[i].pending = p->next;
            free(p);
        }
        json_decref(c->v[i].last);
        json_decref(c->v[i].refilled);
    }
    free(c->v);
    free(c);
    if (cb)
        cb(arg);
}

static void write_done(void *arg, int status)
{
    write_t *w = arg;
    lab_consumables_t *c = w->c;
    c->ops--;
    if (status != 0)
        log_error(SUB, "instrument=%s: the counts were not stored: %s",
                  json_string_value(json_object_get(w->doc, "instrument")), lab_strerror(status));
    if (w->cb)
        w->cb(w->arg, status, w->doc);
    if (w->changed && status == 0 && !c->closing)
        for (int i = 0; i < c->non_change; i++)
            c->on_change[i].cb(c->on_change[i].ctx);
    json_decref(w->doc);
    free(w);
    if (c->closing && c->ops == 0)
        consumables_free(c);
}

static void supply_write(lab_consumables_t *c, supply_t *sp, bool changed,
                         lab_consumables_done_cb cb, void *arg)
{
    sp->updated_ms = lab_clock_now_ms(c->clock);
    write_t *w = LAB_NEW(write_t);
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    w->changed = changed;
    w->doc = supply_doc(sp);
    c->ops++;
    lab_store_consumable_submit(c->st, lab_driver_id(sp->d), w->doc, sp->updated_ms, write_done, w);
}

/* ---- what actions use ---- */

static double sum_of(const json_t *v)
{
    if (json_is_number(v))
        return json_number_value(v);
    double s = 0;
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) if (json_is_number(x) && json_number_value(x) > 0) s +=
        json_number_value(x);
    return s;
}

static hold_t *hold_of(lab_consumables_t *c, const char *run)
{
    for (hold_t *h = c->holds; run && h; h = h->next)
        if (strcmp(h->run, run) == 0)
            return h;
    return NULL;
}

static void set_last(lab_consumables_t *c, supply_t *sp, const lab_instr_act_t *act,
                     const char *outcome, const char *note, json_t *used)
{
    char at[32];
    lab_time_iso(lab_clock_now_ms(c->clock), at);
    json_t *last = json_pack("{s:s,s:s,s:o,s:s}", "action", act->action, "outcome", outcome, "used",
                             used, "at", at);
    if (act->who->run)
        json_object_set_new(last, "run", json_string(act->who->run));
    if (act->who->by)
        json_object_set_new(last, "by", json_string(act->who->by));
    if (note)
        json_object_set_new(last, "note", json_string(note));
    json_decref(sp->last);
    sp->last = last;
}

/* Takes n (tips, or µL of trough t) off what is left: < 0 gives back. The run's hold shrinks by
 * what it used. */
static void charge(lab_consumables_t *c, supply_t *sp, const lab_instr_act_t *act, bool tips, int t,
                   double n)
{
    hold_t *h = n > 0 ? hold_of(c, act->who->run) : NULL;
    if (tips) {
        long k = (long)llround(n);
        sp->left = sp->left - k < 0 ? 0 : sp->left - k > sp->total ? sp->total : sp->left - k;
        if (h && h->sp == sp) {
            long take = h->tips < k ? h->tips : k;
            h->tips -= take;
            sp->reserved -= take;
        }
        return;
    }
    trough_t *tr = &sp->tr[t];
    tr->left = tr->left - n < 0 ? 0 : tr->left - n > tr->total ? tr->total : tr->left - n;
    if (h && h->sp == sp) {
        double take = h->ul[t] < n ? h->ul[t] : n;
        h->ul[t] -= take;
        tr->reserved = tr->reserved > take ? tr->reserved - take : 0;
    }
}

static json_t *used_json(const supply_t *sp, const pend_t *p, double n)
{
    return p->tips ? json_pack("{s:I}", "tips", (json_int_t)llround(n))
                   : json_pack("{s:s,s:f}", "reagent", sp->tr[p->t].name, "volume_ul", n);
}

/* What the action will use as its params say: a tip per channel; the µL per channel with a tip
 * (or the one channel named), or the volumes given per channel. */
static double asked_of(const supply_t *sp, const lab_instr_act_t *act, bool tips)
{
    if (tips) {
        json_t *asked = json_object_get(act->params, "channels");
        return json_is_integer(asked) ? (double)json_integer_value(asked) : 1;
    }
    json_t *v = json_object_get(act->params, "volume_ul");
    if (json_is_array(v))
        return sum_of(v);
    return sum_of(v) * (json_object_get(act->params, "channel") || sp->fitted < 1 ? 1 : sp->fitted);
}

/* Queued: charged at once, and written, so that a daemon killed while the action runs finds it
 * counted (the conservative side) rather than forgotten. */
static void use_queued(lab_consumables_t *c, supply_t *sp, const lab_instr_act_t *act, bool tips)
{
    pend_t *p = LAB_NEW(pend_t);
    p->tips = tips;
    p->t = tips ? -1 : trough_of(sp, json_string_value(json_object_get(act->params, "reagent")));
    bool counted = tips ? sp->has_tips : p->t >= 0;
    p->amount = counted ? asked_of(sp, act, tips) : 0;
    pend_t **tail = &sp->pending;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    if (!counted)
        return;
    charge(c, sp, act, tips, p->t, p->amount);
    set_last(c, sp, act, "in progress", NULL, used_json(sp, p, p->amount));
    supply_write(c, sp, false, NULL, NULL);
}

/* Ended: the charge made when it was queued is settled with what the driver reports. */
static void use_ended(lab_consumables_t *c, supply_t *sp, const lab_instr_act_t *act, bool tips)
{
    pend_t **pp = &sp->pending;
    while (*pp && (*pp)->tips != tips)
        pp = &(*pp)->next;
    pend_t *p = *pp;
    if (!p) /* queued before these counts existed: nothing to settle */
        return;
    *pp = p->next;
    bool known = act->err->code == LAB_OK, started = known || !act->err->not_started;
    if (tips && started) {
        json_t *ch = json_object_get(act->result, "channels");
        sp->fitted = json_is_array(ch) && json_array_size(ch)
                         ? (int)json_array_size(ch)
                         : (int)llround(asked_of(sp, act, true));
    }
    bool counted = tips ? sp->has_tips : p->t >= 0;
    if (!counted) {
        free(p);
        return;
    }
    double n = p->amount;
    const char *outcome = "done", *note = NULL;
    char buf[120];
    if (!started) { /* refused before anything reached the device: nothing used */
        n = 0;
        outcome = "not started";
    } else if (!known) {
        outcome = "unknown";
        snprintf(buf, sizeof buf, "outcome unknown (%s): counted as used",
                 lab_err_json_name(act->err->code));
        note = buf;
    } else if (tips) {
        /* what the driver says the pick-up spent (a tip rack column it never goes back to) */
        json_t *spent = json_object_get(act->result, "tips_used");
        if (json_is_integer(spent) && json_integer_value(spent) >= n)
            n = (double)json_integer_value(spent);
    } else if (json_is_array(json_object_get(act->result, "volumes_ul"))) {
        n = sum_of(json_object_get(act->result, "volumes_ul")); /* what each channel took */
    }
    charge(c, sp, act, tips, p->t, n - p->amount);
    set_last(c, sp, act, outcome, note, used_json(sp, p, n));
    if (tips)
        log_info(SUB, "instrument=%s tips used=%.0f left=%ld (%s)", lab_driver_id(sp->d), n,
                 sp->left, outcome);
    else
        log_info(SUB, "instrument=%s trough=%s used=%.1f uL left=%.1f uL (%s)",
                 lab_driver_id(sp->d), sp->tr[p->t].name, n, sp->tr[p->t].left, outcome);
    free(p);
    supply_write(c, sp, false, NULL, NULL);
}

static void on_action(void *ctx, const lab_instr_act_t *act)
{
    lab_consumables_t *c = ctx;
    supply_t *sp = c->closing ? NULL : supply_of(c, lab_driver_id(act->d));
    if (!sp)
        return;
    bool tips = lab_instr_action_is(act->d, act->action, LAB_DRV_ROLE_PICK_UP_TIPS);
    bool liquid = lab_instr_action_is(act->d, act->action, LAB_DRV_ROLE_ASPIRATE);
    if (!tips && !liquid) {
        if (act->ended && lab_instr_action_is(act->d, act->action, LAB_DRV_ROLE_DROP_TIPS))
            sp->fitted = 0;
        return;
    }
    if (act->ended)
        use_ended(c, sp, act, tips);
    else
        use_queued(c, sp, act, tips);
}

/* ---- the scheduler's side ---- */

bool lab_consumables_tracks(lab_consumables_t *c, const char *instrument)
{
    return supply_of(c, instrument) != NULL;
}

/* Appends one shortfall to why, "; " between two. */
static void why_add(char *why, size_t whylen, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void why_add(char *why, size_t whylen, size_t *n, const char *fmt, ...)
{
    if (!why || *n + 3 >= whylen)
        return;
    if (*n) {
        memcpy(why + *n, "; ", 3);
        *n += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(why + *n, whylen - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n = *n + (size_t)k < whylen ? *n + (size_t)k : whylen - 1;
}

bool lab_consumables_enough(lab_consumables_t *c, const char *instrument, int tips,
                            const json_t *volumes_ul, char *why, size_t whylen)
{
    supply_t *sp = supply_of(c, instrument);
    size_t n = 0;
    if (why && whylen)
        why[0] = '\0';
    if (!sp)
        return true;
    bool ok = true;
    if (sp->has_tips && tips > sp->left - sp->reserved) {
        ok = false;
        why_add(why, whylen, &n, "tips on %s: %ld left, %d needed", instrument,
                sp->left - sp->reserved, tips);
    }
    const char *reagent;
    json_t *v;
    json_object_foreach((json_t *)volumes_ul, reagent, v)
    {
        int t = trough_of(sp, reagent);
        double need = json_number_value(v), have = t < 0 ? 0 : sp->tr[t].left - sp->tr[t].reserved;
        if (t < 0 || need <= have + 1e-6)
            continue;
        ok = false;
        char h[32], w[32];
        ul_text(have > 0 ? have : 0, h, sizeof h);
        ul_text(need, w, sizeof w);
        why_add(why, whylen, &n, "trough %s: %s µL left, %s µL needed", sp->tr[t].name, h, w);
    }
    return ok;
}

void lab_consumables_release(lab_consumables_t *c, const char *run)
{
    for (hold_t **p = &c->holds; *p;) {
        hold_t *h = *p;
        if (strcmp(h->run, run) != 0) {
            p = &h->next;
            continue;
        }
        h->sp->reserved -= h->tips;
        for (int i = 0; i < h->sp->ntr; i++)
            h->sp->tr[i].reserved =
                h->sp->tr[i].reserved > h->ul[i] ? h->sp->tr[i].reserved - h->ul[i] : 0;
        *p = h->next;
        free(h);
    }
}

int lab_consumables_reserve(lab_consumables_t *c, const char *instrument, const char *run, int tips,
                            const json_t *volumes_ul, char *why, size_t whylen)
{
    lab_consumables_release(c, run);
    supply_t *sp = supply_of(c, instrument);
    if (!sp)
        return 0;
    if (!lab_consumables_enough(c, instrument, tips, volumes_ul, why, whylen))
        return LAB_ESTATE;
    hold_t *h = LAB_NEW(hold_t);
    snprintf(h->run, sizeof h->run, "%s", run);
    h->sp = sp;
    h->tips = sp->has_tips && tips > 0 ? tips : 0;
    sp->reserved += h->tips;
    const char *reagent;
    json_t *v;
    json_object_foreach((json_t *)volumes_ul, reagent, v)
    {
        int t = trough_of(sp, reagent);
        if (t >= 0 && json_number_value(v) > 0) {
            h->ul[t] += json_number_value(v);
            sp->tr[t].reserved += json_number_value(v);
        }
    }
    h->next = c->holds;
    c->holds = h;
    return 0;
}

json_t *lab_consumables_doc(lab_consumables_t *c, const char *instrument)
{
    supply_t *sp = supply_of(c, instrument);
    return sp ? supply_doc(sp) : NULL;
}

/* ---- refills ---- */

static void tips_told(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    (void)result;
    (void)arg;
    if (err->code != LAB_OK)
        log_warn(SUB, "instrument=%s did not take the tip count: %s", lab_driver_id(d), err->text);
}

/* A driver that tracks tip positions takes its next one from the count (LAB_DRV_ROLE_TIPS_LEFT):
 * at start, and after fresh tips were reported. */
static void tips_tell(lab_consumables_t *c, supply_t *sp, const char *by)
{
    const char *action = NULL;
    for (const lab_drv_role_action_t *r = lab_driver_ops(sp->d)->roles; r && r->role; r++)
        if (r->role == LAB_DRV_ROLE_TIPS_LEFT)
            action = r->action;
    if (!sp->has_tips || !action)
        return;
    json_t *params = json_pack("{s:I}", "left", (json_int_t)sp->left);
    lab_instr_who_t who = {NULL, NULL, by};
    lab_drv_error_t err = {0};
    if (lab_instr_call(c->in, sp->d, action, params, 0, &who, tips_told, NULL, &err, NULL) != 0)
        log_warn(SUB, "instrument=%s did not take the tip count: %s", lab_driver_id(sp->d),
                 err.text);
    json_decref(params);
}

int lab_consumables_refill(lab_consumables_t *c, const char *instrument, const char *trough,
                           double volume_ul, int racks, const char *by, const char *reason,
                           lab_consumables_done_cb cb, void *arg, char *err, size_t errlen,
                           const char **member)
{
    supply_t *sp = supply_of(c, instrument);
    *member = "";
    if (!sp) {
        snprintf(err, errlen, "instrument %s declares no tips or troughs", instrument);
        return LAB_ENOTFOUND;
    }
    char at[32];
    lab_time_iso(lab_clock_now_ms(c->clock), at);
    json_t *what;
    if (trough) {
        int t = trough_of(sp, trough);
        *member = "/trough";
        if (t < 0) {
            size_t n = (size_t)snprintf(
                err, errlen, "no trough '%.64s' on %s; its troughs:", trough, instrument);
            for (int i = 0; i < sp->ntr && n < errlen; i++)
                n += (size_t)snprintf(err + n, errlen - n, " %s", sp->tr[i].name);
            return LAB_EINVAL;
        }
        char cap[32];
        ul_text(sp->tr[t].total, cap, sizeof cap);
        if (volume_ul > sp->tr[t].total) {
            *member = "/volume_ul";
            snprintf(err, errlen, "trough %s holds at most %s µL", sp->tr[t].name, cap);
            return LAB_EINVAL;
        }
        sp->tr[t].left = volume_ul < 0 ? sp->tr[t].total : volume_ul;
        what = json_pack("{s:s,s:f}", "trough", sp->tr[t].name, "volume_ul", sp->tr[t].left);
    } else {
        *member = "/tips";
        if (!sp->has_tips) {
            snprintf(err, errlen, "instrument %s declares no tip racks", instrument);
            return LAB_EINVAL;
        }
        if (racks > sp->racks) {
            snprintf(err, errlen, "%d racks: %s holds %ld", racks, instrument, sp->racks);
            return LAB_EINVAL;
        }
        long now = racks <= 0 ? sp->total : sp->left + racks * sp->per_rack;
        sp->left = now < sp->total ? now : sp->total;
        what = racks <= 0 ? json_pack("{s:s}", "tips", "all")
                          : json_pack("{s:{s:i}}", "tips", "racks", racks);
        tips_tell(c, sp, by);
    }
    json_object_set_new(what, "by", json_string(by));
    json_object_set_new(what, "at", json_string(at));
    if (reason)
        json_object_set_new(what, "reason", json_string(reason));
    json_object_set_new(what, "action", json_string("refill"));
    json_decref(sp->refilled);
    sp->refilled = json_deep_copy(what);
    json_decref(sp->last);
    sp->last = what;
    log_info(SUB, "instrument=%s refilled %s by=%s", instrument, trough ? trough : "tips", by);
    supply_write(c, sp, true, cb, arg);
    return 0;
}

void lab_consumables_on_change(lab_consumables_t *c, void (*cb)(void *ctx), void *ctx)
{
    LAB_ASSERT(c->non_change < LISTENERS);
    c->on_change[c->non_change].cb = cb;
    c->on_change[c->non_change].ctx = ctx;
    c->non_change++;
}

/* ---- start and close ---- */

static const char *kv_get(const lab_cfg_instrument_t *ci, const char *key)
{
    for (int i = 0; i < ci->n; i++)
        if (strcmp(ci->kv[i].key, key) == 0)
            return ci->kv[i].value;
    return NULL;
}

/* The section's declaration, checked at load (lab_supply_check); its stored counts over it,
 * within what it declares now. true when the stored document is missing or had to change. */
static bool supply_init(supply_t *sp, const lab_cfg_instrument_t *ci, const json_t *stored)
{
    const char *racks = kv_get(ci, "tip_racks"), *per = kv_get(ci, "tips_per_rack");
    const char *troughs = kv_get(ci, "troughs");
    bool changed = stored == NULL;
    sp->has_tips = racks != NULL;
    sp->racks = racks ? strtol(racks, NULL, 10) : 0;
    sp->per_rack = per ? strtol(per, NULL, 10) : 96;
    sp->total = sp->left = sp->racks * sp->per_rack;
    json_t *st_tips = json_object_get(stored, "tips");
    if (sp->has_tips && json_is_integer(json_object_get(st_tips, "left"))) {
        long left = (long)json_integer_value(json_object_get(st_tips, "left"));
        sp->left = left < 0 ? 0 : left > sp->total ? sp->total : left;
        changed |=
            sp->left != left || json_integer_value(json_object_get(st_tips, "total")) != sp->total;
    } else {
        changed |= sp->has_tips;
    }
    lab_supply_trough_t t[LAB_SUPPLY_TROUGHS_MAX];
    char err[256];
    int n =
        troughs ? lab_supply_troughs_parse(troughs, t, LAB_SUPPLY_TROUGHS_MAX, err, sizeof err) : 0;
    sp->ntr = n > 0 ? n : 0;
    json_t *st_tr = json_object_get(stored, "troughs");
    changed |= json_array_size(st_tr) != (size_t)sp->ntr;
    for (int i = 0; i < sp->ntr; i++) {
        memcpy(sp->tr[i].name, t[i].name, sizeof sp->tr[i].name);
        sp->tr[i].total = sp->tr[i].left = t[i].ul;
        bool found = false;
        size_t j;
        json_t *o;
        json_array_foreach(st_tr, j, o)
        {
            if (!json_is_string(json_object_get(o, "name")) ||
                strcmp(json_string_value(json_object_get(o, "name")), t[i].name) != 0)
                continue;
            double left = json_number_value(json_object_get(o, "left_ul"));
            sp->tr[i].left = left < 0 ? 0 : left > t[i].ul ? t[i].ul : left;
            changed |= sp->tr[i].left != left ||
                       json_number_value(json_object_get(o, "total_ul")) != t[i].ul;
            found = true;
        }
        changed |= !found;
    }
    if (stored) {
        sp->last = json_deep_copy(json_object_get(stored, "last"));
        const char *was = json_string_value(json_object_get(sp->last, "outcome"));
        if (was && strcmp(was, "in progress") == 0) {
            /* it was running when the daemon stopped: it stays counted */
            json_object_set_new(sp->last, "outcome", json_string("unknown"));
            json_object_set_new(sp->last, "note",
                                json_string("the daemon stopped before it ended: counted as used"));
            changed = true;
        }
        sp->refilled = json_incref(json_object_get(stored, "refilled"));
    }
    return changed;
}

int lab_consumables_start(lab_consumables_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                          const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in)
{
    (void)loop;
    *out = NULL;
    json_t *stored = NULL;
    int rc = lab_store_consumables_load(st, &stored);
    if (rc) {
        json_decref(stored);
        return rc;
    }
    lab_consumables_t *c = LAB_NEW(lab_consumables_t);
    c->clock = clock;
    c->st = st;
    c->in = in;
    c->v = lab_calloc((size_t)cfg->n_instruments + 1, sizeof *c->v);
    for (int i = 0; i < cfg->n_instruments; i++) {
        const lab_cfg_instrument_t *ci = &cfg->instruments[i];
        lab_driver_t *d = lab_instr_find(in, ci->id, strlen(ci->id));
        if (!d || (!kv_get(ci, "tip_racks") && !kv_get(ci, "troughs")) ||
            strcmp(lab_driver_ops(d)->kind, "liquid_handler") != 0)
            continue;
        supply_t *sp = &c->v[c->n++];
        sp->d = d;
        bool changed = supply_init(sp, ci, json_object_get(stored, ci->id));
        log_info(SUB, "instrument=%s tips=%ld/%ld troughs=%d", ci->id, sp->left, sp->total,
                 sp->ntr);
        if (changed)
            supply_write(c, sp, false, NULL, NULL);
        tips_tell(c, sp, "labloop");
    }
    json_decref(stored);
    rc = lab_instr_on_action(in, on_action, c);
    if (rc) {
        c->closing = true;
        if (c->ops == 0)
            consumables_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void lab_consumables_close(lab_consumables_t *c, void (*cb)(void *), void *arg)
{
    if (!c) {
        if (cb)
            cb(arg);
        return;
    }
    c->closing = true;
    c->close_cb = cb;
    c->close_arg = arg;
    if (c->ops == 0)
        consumables_free(c);
}
