/* The plate registry (see labware.h): the plates in memory as their stored documents, each
 * change one store op (the plate's document, its move, a held site, a prompt) committed before
 * the change listeners hear of it. */
#include "daemon/labware/labware.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "core/text.h"
#include "daemon/store/plates.h"
#include "daemon/store/prompts.h"

#include <stdlib.h>
#include <string.h>

#define CHANGE_LISTENERS 4
/* How often an instrument that could not be asked for its sites yet (offline at start) is
 * asked again, in loop milliseconds. */
#define INVENTORY_RETRY_MS 1000

typedef struct plate {
    char *barcode;
    json_t *doc; /* as stored: barcode, format, labware, location, contents, runs, ... */
    int moves;   /* seq of its newest move */
} plate_t;

/* A site that holds a plate nobody named. */
typedef struct hold {
    char *instrument;
    int cassette, slot;
    json_t *doc;
} hold_t;

/* What the instrument last aspirated, and with how many tips: a dispense on it is of that
 * reagent, into that many wells when its volume is one number for every channel. */
typedef struct aspirated {
    char *instrument;
    char *reagent;
    int channels;
} aspirated_t;

typedef struct inventory {
    lab_labware_t *lw;
    lab_driver_t *d;
    const char *action;
    bool asking, answered;
} inventory_t;

struct lab_labware {
    uv_loop_t *loop;
    const lab_clock_t *clock;
    lab_store_t *st;
    lab_instr_t *in;
    plate_t *p;
    int np, pcap;
    hold_t *h;
    int nh;
    aspirated_t *asp;
    int nasp;
    inventory_t *inv;
    int ninv;
    uv_timer_t retry;
    struct {
        void (*cb)(void *ctx);
        void *ctx;
    } change[CHANGE_LISTENERS];
    int nchange;
    int ops; /* store ops in flight */
    bool stopped, closing;
    void (*close_cb)(void *);
    void *close_arg;
};

/* ---- the store op of one change ---- */

typedef struct lw_op {
    lab_store_op_t op;
    lab_labware_t *lw;
    char *barcode, *doc, *state, *instrument; /* the plate's new document, when barcode */
    char *move;                               /* and its move, when set */
    int move_seq;
    char *hold_inst; /* a held site set (hold_doc) or freed (NULL) */
    int hold_c, hold_s;
    char *hold_doc;
    char *prompt_id; /* a prompt opened or answered */
    json_t *prompt;
    int64_t ts;
    lab_labware_done_cb cb;
    void *cb_arg;
    json_t *cb_doc;
} lw_op_t;

static int op_apply(lab_store_op_t *op, sqlite3 *db)
{
    lw_op_t *o = (lw_op_t *)op;
    int rc = 0;
    if (o->barcode)
        rc = lab_plate_write(db, o->barcode, o->doc, o->state, o->instrument, o->ts);
    if (!rc && o->move)
        rc = lab_plate_move_write(db, o->barcode, o->move_seq, o->move, o->ts);
    if (!rc && o->hold_inst)
        rc = lab_site_hold_write(db, o->hold_inst, o->hold_c, o->hold_s, o->hold_doc);
    if (!rc && o->prompt_id)
        rc = lab_prompt_write(db, o->prompt_id, o->prompt, o->ts);
    return rc;
}

static void close_finish(lab_labware_t *lw);

static void op_done(lab_store_op_t *op, int status)
{
    lw_op_t *o = (lw_op_t *)op;
    lab_labware_t *lw = o->lw;
    if (status != 0)
        log_error("labware", "plate=%s change not recorded: %s", o->barcode ? o->barcode : "-",
                  lab_strerror(status));
    if (o->cb)
        o->cb(o->cb_arg, status, o->cb_doc);
    if (status == 0 && !lw->closing)
        for (int i = 0; i < lw->nchange; i++)
            lw->change[i].cb(lw->change[i].ctx);
    free(o->barcode);
    free(o->doc);
    free(o->state);
    free(o->instrument);
    free(o->move);
    free(o->hold_inst);
    free(o->hold_doc);
    free(o->prompt_id);
    json_decref(o->prompt);
    json_decref(o->cb_doc);
    free(o);
    lw->ops--;
    if (lw->closing && lw->ops == 0)
        close_finish(lw);
}

static lw_op_t *op_new(lab_labware_t *lw)
{
    lw_op_t *o = LAB_NEW(lw_op_t);
    o->op.apply = op_apply;
    o->op.done = op_done;
    o->lw = lw;
    o->ts = lab_clock_now_ms(lw->clock);
    return o;
}

static void op_submit(lab_labware_t *lw, lw_op_t *o)
{
    lw->ops++;
    lab_store_submit(lw->st, &o->op);
}

static json_t *now_iso(lab_labware_t *lw)
{
    char ts[32];
    lab_time_iso(lab_clock_now_ms(lw->clock), ts);
    return json_string(ts);
}

/* The plate's document as it is now goes into the op. */
static void op_plate(lab_labware_t *lw, lw_op_t *o, plate_t *p)
{
    json_object_set_new(p->doc, "updated_at", now_iso(lw));
    json_t *loc = json_object_get(p->doc, "location");
    o->barcode = lab_strdup(p->barcode);
    o->doc = json_dumps(p->doc, JSON_COMPACT);
    o->state = lab_strdup(json_string_value(json_object_get(loc, "state")) ?: "unknown");
    const char *inst = json_string_value(json_object_get(loc, "instrument"));
    o->instrument = inst ? lab_strdup(inst) : NULL;
}

/* The plate's next move (taken over): seq, barcode and time filled in. */
static void op_move(lab_labware_t *lw, lw_op_t *o, plate_t *p, json_t *move)
{
    p->moves++;
    json_object_set_new(move, "barcode", json_string(p->barcode));
    json_object_set_new(move, "seq", json_integer(p->moves));
    json_object_set_new(move, "at", now_iso(lw));
    o->move_seq = p->moves;
    o->move = json_dumps(move, JSON_COMPACT);
    json_decref(move);
}

/* ---- plates and sites in memory ---- */

const char *lab_labware_barcode_check(const char *text, size_t len)
{
    if (!text || len == 0)
        return "is empty";
    if (!lab_text_valid(text, len))
        return "is not well-formed UTF-8";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
            return "holds a control character";
    if (lab_text_chars(text, len) > LAB_RUN_PLATE_CHARS)
        return "is longer than 64 characters";
    return NULL;
}

static plate_t *plate_find(lab_labware_t *lw, const char *barcode)
{
    for (int i = 0; barcode && i < lw->np; i++)
        if (strcmp(lw->p[i].barcode, barcode) == 0)
            return &lw->p[i];
    return NULL;
}

static plate_t *plate_add(lab_labware_t *lw, const char *barcode, json_t *doc, int moves)
{
    if (lw->np == lw->pcap) {
        lw->pcap = lw->pcap ? 2 * lw->pcap : 64;
        lw->p = lab_realloc(lw->p, sizeof *lw->p * (size_t)lw->pcap);
    }
    plate_t *p = &lw->p[lw->np++];
    p->barcode = lab_strdup(barcode);
    p->doc = doc;
    p->moves = moves;
    return p;
}

/* The plate, made when the registry has not heard of it: outside the cell until an action says
 * where it is. NULL when the barcode cannot be one (logged). */
static plate_t *plate_get(lab_labware_t *lw, const char *barcode)
{
    plate_t *p = plate_find(lw, barcode);
    if (p || !barcode)
        return p;
    const char *why = lab_labware_barcode_check(barcode, strlen(barcode));
    if (why) {
        log_warn("labware", "a plate name that %s is not registered", why);
        return NULL;
    }
    json_t *doc = json_pack("{s:s, s:n, s:n, s:{s:s, s:o}, s:[], s:[]}", "barcode", barcode,
                            "format", "labware", "location", "state", "outside", "since",
                            now_iso(lw), "contents", "runs");
    return plate_add(lw, barcode, doc, 0);
}

static json_t *site_json(int cassette, int slot)
{
    return json_pack("{s:i, s:i}", "cassette", cassette, "slot", slot);
}

static bool site_of(const json_t *o, int *cassette, int *slot)
{
    json_t *c = json_object_get(o, "cassette"), *s = json_object_get(o, "slot");
    if (!json_is_integer(c) || !json_is_integer(s) || json_integer_value(c) <= 0 ||
        json_integer_value(s) <= 0 || json_integer_value(c) > 100000 ||
        json_integer_value(s) > 100000)
        return false;
    *cassette = (int)json_integer_value(c);
    *slot = (int)json_integer_value(s);
    return true;
}

static const char *loc_state(const plate_t *p)
{
    return json_string_value(json_object_get(json_object_get(p->doc, "location"), "state")) ?: "";
}

/* Whether the plate's location keeps instrument's site (cassette, slot) busy: any state but
 * outside, with that site. */
static bool plate_holds(const plate_t *p, const char *instrument, int cassette, int slot)
{
    json_t *loc = json_object_get(p->doc, "location");
    int c, s;
    return strcmp(loc_state(p), "outside") != 0 &&
           strcmp(json_string_value(json_object_get(loc, "instrument")) ?: "", instrument) == 0 &&
           site_of(json_object_get(loc, "site"), &c, &s) && c == cassette && s == slot;
}

static plate_t *plate_at_site(lab_labware_t *lw, const char *instrument, int cassette, int slot)
{
    for (int i = 0; i < lw->np; i++)
        if (plate_holds(&lw->p[i], instrument, cassette, slot))
            return &lw->p[i];
    return NULL;
}

static hold_t *hold_find(lab_labware_t *lw, const char *instrument, int cassette, int slot)
{
    for (int i = 0; i < lw->nh; i++)
        if (lw->h[i].cassette == cassette && lw->h[i].slot == slot &&
            strcmp(lw->h[i].instrument, instrument) == 0)
            return &lw->h[i];
    return NULL;
}

/* A held site set (doc taken over) or, with doc NULL, freed; the op records it. */
static void hold_change(lab_labware_t *lw, lw_op_t *o, const char *instrument, int cassette,
                        int slot, json_t *doc)
{
    hold_t *h = hold_find(lw, instrument, cassette, slot);
    if (!doc && !h)
        return;
    o->hold_inst = lab_strdup(instrument);
    o->hold_c = cassette;
    o->hold_s = slot;
    if (doc) {
        json_object_set_new(doc, "instrument", json_string(instrument));
        json_object_set_new(doc, "site", site_json(cassette, slot));
        o->hold_doc = json_dumps(doc, JSON_COMPACT);
        if (!h) {
            lw->h = lab_realloc(lw->h, sizeof *lw->h * (size_t)(lw->nh + 1));
            h = &lw->h[lw->nh++];
            h->instrument = lab_strdup(instrument);
            h->cassette = cassette;
            h->slot = slot;
            h->doc = NULL;
        }
        json_decref(h->doc);
        h->doc = doc;
    } else {
        free(h->instrument);
        json_decref(h->doc);
        *h = lw->h[--lw->nh];
    }
}

/* The location without its history: state, instrument, site. */
static json_t *loc_brief(const json_t *loc)
{
    json_t *b = json_object();
    static const char *const keys[] = {"state", "instrument", "site"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(loc, keys[i]);
        if (v)
            json_object_set(b, keys[i], v);
    }
    if (!json_object_get(b, "state"))
        json_object_set_new(b, "state", json_string("unknown"));
    return b;
}

static json_t *loc_at(lab_labware_t *lw, const char *instrument, int cassette, int slot)
{
    json_t *l =
        json_pack("{s:s, s:s, s:o}", "state", "at", "instrument", instrument, "since", now_iso(lw));
    if (cassette > 0)
        json_object_set_new(l, "site", site_json(cassette, slot));
    return l;
}

static void set_location(plate_t *p, json_t *loc)
{
    json_object_set_new(p->doc, "location", loc);
}

static void add_run(plate_t *p, const lab_instr_who_t *who)
{
    if (!who->run)
        return;
    json_t *runs = json_object_get(p->doc, "runs");
    if (!json_is_array(runs))
        json_object_set_new(p->doc, "runs", runs = json_array());
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) if (strcmp(json_string_value(r) ?: "", who->run) == 0) return;
    json_array_append_new(runs, json_string(who->run));
}

static char *prompt_id(const plate_t *p)
{
    return lab_asprintf("plate:%s:unknown", p->barcode);
}

/* The plate becomes unknown with why: its doubted site stays busy (instrument, site kept in the
 * location) and a person is asked where it is. instrument and site may be the old location's:
 * they are copied before it goes. */
static void make_unknown(lab_labware_t *lw, lw_op_t *o, plate_t *p, const char *instrument,
                         const json_t *site, const char *why)
{
    json_t *old = json_object_get(p->doc, "location");
    json_t *last = strcmp(loc_state(p), "in_transit") == 0 && json_object_get(old, "from")
                       ? json_incref(json_object_get(old, "from"))
                       : loc_brief(old);
    json_t *loc =
        json_pack("{s:s, s:o, s:o}", "state", "unknown", "since", now_iso(lw), "last_known", last);
    json_t *w = json_string(why); /* NULL when a device's words in it are not UTF-8 */
    json_object_set_new(loc, "why", w ? w : json_string("the outcome of an action is unknown"));
    if (instrument)
        json_object_set_new(loc, "instrument", json_string(instrument));
    if (site)
        json_object_set_new(loc, "site", json_deep_copy(site));
    o->prompt_id = prompt_id(p);
    char *title = lab_asprintf("Where is plate %s?", p->barcode);
    o->prompt = json_pack("{s:b, s:s, s:s, s:s, s:O, s:O?, s:O?}", "open", 1, "kind",
                          "plate.unknown", "plate", p->barcode, "title", title, "text",
                          json_object_get(loc, "why"), "instrument",
                          json_object_get(loc, "instrument"), "site", json_object_get(loc, "site"));
    free(title);
    log_warn("labware", "plate=%s location unknown: %s", p->barcode,
             json_string_value(json_object_get(loc, "why")));
    set_location(p, loc);
}

/* ---- what the actions say ---- */

static const char *drv_action(lab_driver_t *d, lab_drv_role_t role)
{
    for (const lab_drv_role_action_t *r = lab_driver_ops(d)->roles; r && r->role; r++)
        if (r->role == role)
            return r->action;
    return NULL;
}

/* A move record; from and to are taken over. */
static json_t *move_new(const lab_instr_act_t *a, json_t *from, json_t *to, const char *outcome)
{
    json_t *m = json_pack("{s:o, s:o, s:s, s:s?, s:s?, s:s}", "from", from, "to", to, "action",
                          a->action, "run", a->who->run, "by", a->who->by, "outcome", outcome);
    return m;
}

/* What an ended action did to the plate whose intent (in transit, to `to`) was stored when it
 * was queued: where it is now, its move, and a prompt when nobody can tell. */
static void transit_end(lab_labware_t *lw, lw_op_t *o, plate_t *p, const lab_instr_act_t *a,
                        json_t *to, const char *busy_inst, const json_t *busy_site)
{
    json_t *loc = json_object_get(p->doc, "location");
    bool moving = strcmp(loc_state(p), "in_transit") == 0;
    json_t *from = moving && json_object_get(loc, "from")
                       ? json_incref(json_object_get(loc, "from"))
                       : loc_brief(loc);
    if (strcmp(loc_state(p), "unknown") == 0) {
        /* only a person settles an unknown plate; what happened to it is kept for them */
        const char *outcome = a->err->code == LAB_OK ? "done"
                              : a->err->not_started  ? "failed"
                                                     : "unknown";
        json_object_set_new(p->doc, "last_seen",
                            json_pack("{s:O, s:s, s:s, s:o}", "to", to, "action", a->action,
                                      "outcome", outcome, "at", now_iso(lw)));
        op_move(lw, o, p, move_new(a, from, json_incref(to), outcome));
        return;
    }
    if (a->err->code == LAB_OK) {
        json_t *now = json_deep_copy(to);
        json_object_set_new(now, "since", now_iso(lw));
        set_location(p, now);
        op_move(lw, o, p, move_new(a, from, json_incref(to), "done"));
    } else if (a->err->not_started) {
        json_t *back = json_deep_copy(from);
        json_object_set_new(back, "since", now_iso(lw));
        set_location(p, back);
        op_move(lw, o, p, move_new(a, json_incref(from), json_incref(to), "failed"));
        json_decref(from);
    } else {
        char *why =
            lab_asprintf("%s on %s ended with its outcome unknown: %s: %s", a->action,
                         lab_driver_id(a->d), lab_err_json_name(a->err->code), a->err->text);
        lab_text_trim(why);
        make_unknown(lw, o, p, busy_inst, busy_site, why);
        free(why);
        op_move(lw, o, p, move_new(a, from, json_incref(to), "unknown"));
    }
}

/* A load (into) or unload (out of) a site of the instrument. */
static void site_action(lab_labware_t *lw, const lab_instr_act_t *a, bool into)
{
    const char *id = lab_driver_id(a->d);
    int c = 0, s = 0;
    if (!site_of(a->params, &c, &s))
        c = s = 0;
    plate_t *p = a->who->plate  ? plate_get(lw, a->who->plate)
                 : (!into && c) ? plate_at_site(lw, id, c, s)
                                : NULL;
    lw_op_t *o = op_new(lw);
    if (!p) { /* a plate nobody named: the site is held while it is inside */
        if (!c)
            goto none;
        bool ok = a->err && a->err->code == LAB_OK, doubt = a->err && !ok && !a->err->not_started;
        if (into && !a->ended)
            hold_change(lw, o, id, c, s,
                        json_pack("{s:s, s:s?, s:o}", "why", "a plate was loaded without a barcode",
                                  "by", a->who->by, "since", now_iso(lw)));
        else if (into && a->ended && a->err->not_started)
            hold_change(lw, o, id, c, s, NULL);
        else if (!into && a->ended && ok)
            hold_change(lw, o, id, c, s, NULL);
        else if (a->ended && doubt)
            hold_change(lw, o, id, c, s,
                        json_pack("{s:s, s:s?, s:o}", "why",
                                  "an action on this site ended "
                                  "with its outcome unknown",
                                  "by", a->who->by, "since", now_iso(lw)));
        else
            goto none;
        op_submit(lw, o);
        return;
    }
    add_run(p, a->who);
    json_t *site = c ? site_json(c, s) : NULL;
    json_t *to = into ? loc_at(lw, id, c, s) : loc_at(lw, id, 0, 0);
    json_object_del(to, "since");
    if (!a->ended) {
        if (strcmp(loc_state(p), "unknown") != 0) {
            json_t *loc =
                json_pack("{s:s, s:s, s:s, s:O, s:o, s:o}", "state", "in_transit", "instrument", id,
                          "action", a->action, "to", to, "from",
                          loc_brief(json_object_get(p->doc, "location")), "since", now_iso(lw));
            if (site)
                json_object_set(loc, "site", site);
            set_location(p, loc);
        }
    } else {
        transit_end(lw, o, p, a, to, id, site);
    }
    json_decref(to);
    json_decref(site);
    op_plate(lw, o, p);
    op_submit(lw, o);
    return;
none:
    free(o);
}

/* A plate carried between instruments. */
static void move_action(lab_labware_t *lw, const lab_instr_act_t *a)
{
    const char *bc = a->who->plate;
    if (!bc && !a->who->run) /* a person's move names its plate in its params */
        bc = json_string_value(json_object_get(a->params, "plate"));
    const char *dest = json_string_value(json_object_get(a->params, "to"));
    plate_t *p = dest ? plate_get(lw, bc) : NULL;
    if (!p)
        return;
    add_run(p, a->who);
    lw_op_t *o = op_new(lw);
    json_t *to = json_pack("{s:s, s:s}", "state", "at", "instrument", dest);
    if (!a->ended) {
        if (strcmp(loc_state(p), "unknown") != 0)
            set_location(p, json_pack("{s:s, s:s, s:s, s:O, s:o, s:o}", "state", "in_transit",
                                      "instrument", dest, "action", a->action, "to", to, "from",
                                      loc_brief(json_object_get(p->doc, "location")), "since",
                                      now_iso(lw)));
    } else {
        transit_end(lw, o, p, a, to, dest, NULL);
    }
    json_decref(to);
    op_plate(lw, o, p);
    op_submit(lw, o);
}

/* A dispense, read or scan that went well shows the plate on that instrument. */
static void seen_on(lab_labware_t *lw, lw_op_t *o, plate_t *p, const lab_instr_act_t *a)
{
    const char *id = lab_driver_id(a->d);
    json_t *loc = json_object_get(p->doc, "location");
    const char *st = loc_state(p);
    if (strcmp(st, "unknown") == 0 || strcmp(st, "in_transit") == 0 ||
        (strcmp(st, "at") == 0 &&
         strcmp(json_string_value(json_object_get(loc, "instrument")) ?: "", id) == 0))
        return;
    json_t *to = loc_at(lw, id, 0, 0);
    json_t *m = move_new(a, loc_brief(loc), loc_brief(to), "done");
    set_location(p, to);
    op_move(lw, o, p, m);
}

static aspirated_t *aspirated_of(lab_labware_t *lw, const char *instrument)
{
    aspirated_t *x = NULL;
    for (int i = 0; i < lw->nasp && !x; i++)
        if (strcmp(lw->asp[i].instrument, instrument) == 0)
            x = &lw->asp[i];
    if (!x) {
        lw->asp = lab_realloc(lw->asp, sizeof *lw->asp * (size_t)(lw->nasp + 1));
        x = &lw->asp[lw->nasp++];
        x->instrument = lab_strdup(instrument);
        x->reagent = NULL;
        x->channels = 1;
    }
    return x;
}

/* What went into the plate, per reagent and run: wells dispensed into (a well dispensed twice
 * counts twice) and the µL in all. */
static void contents_add(lab_labware_t *lw, plate_t *p, const char *reagent, int channels,
                         const char *run, const json_t *vol)
{
    int wells = 0;
    double ul = 0;
    if (json_is_number(vol) && json_number_value(vol) > 0) {
        wells = channels;
        ul = json_number_value(vol) * channels;
    }
    size_t i;
    json_t *v;
    json_array_foreach((json_t *)vol, i, v) if (json_is_number(v) && json_number_value(v) > 0)
    {
        wells++;
        ul += json_number_value(v);
    }
    if (!wells)
        return;
    json_t *contents = json_object_get(p->doc, "contents");
    if (!json_is_array(contents))
        json_object_set_new(p->doc, "contents", contents = json_array());
    json_t *e = NULL, *c;
    json_array_foreach(contents, i, c)
    {
        json_t *r = json_object_get(c, "reagent"), *rn = json_object_get(c, "run");
        if ((reagent ? json_is_string(r) && strcmp(json_string_value(r), reagent) == 0
                     : json_is_null(r)) &&
            (run ? json_is_string(rn) && strcmp(json_string_value(rn), run) == 0
                 : json_is_null(rn))) {
            e = c;
            break;
        }
    }
    if (!e) {
        e = json_pack("{s:o, s:i, s:f, s:o}", "reagent",
                      reagent ? json_string(reagent) : json_null(), "wells", 0, "volume_ul", 0.0,
                      "run", run ? json_string(run) : json_null());
        json_array_append_new(contents, e);
    }
    json_object_set_new(e, "wells",
                        json_integer(json_integer_value(json_object_get(e, "wells")) + wells));
    json_object_set_new(e, "volume_ul",
                        json_real(json_number_value(json_object_get(e, "volume_ul")) + ul));
    json_object_set_new(e, "at", now_iso(lw));
}

static void liquid_action(lab_labware_t *lw, const lab_instr_act_t *a, lab_drv_role_t role)
{
    if (!a->ended || a->err->code != LAB_OK)
        return;
    aspirated_t *x = aspirated_of(lw, lab_driver_id(a->d));
    if (role == LAB_DRV_ROLE_PICK_UP_TIPS) {
        json_t *ch = json_object_get(a->params, "channels");
        x->channels =
            json_is_integer(ch) && json_integer_value(ch) > 0 && json_integer_value(ch) <= 96
                ? (int)json_integer_value(ch)
                : 1;
        return;
    }
    if (role == LAB_DRV_ROLE_ASPIRATE) {
        const char *r = json_string_value(json_object_get(a->params, "reagent"));
        free(x->reagent);
        x->reagent = r ? lab_strdup(r) : NULL;
        return;
    }
    plate_t *p = plate_get(lw, a->who->plate);
    if (!p)
        return;
    add_run(p, a->who);
    lw_op_t *o = op_new(lw);
    contents_add(lw, p, x->reagent, x->channels, a->who->run,
                 json_object_get(a->params, "volume_ul"));
    seen_on(lw, o, p, a);
    op_plate(lw, o, p);
    op_submit(lw, o);
}

static void read_action(lab_labware_t *lw, const lab_instr_act_t *a)
{
    plate_t *p = a->ended && a->err->code == LAB_OK ? plate_get(lw, a->who->plate) : NULL;
    if (!p)
        return;
    add_run(p, a->who);
    lw_op_t *o = op_new(lw);
    seen_on(lw, o, p, a);
    op_plate(lw, o, p);
    op_submit(lw, o);
}

/* The barcode a reader saw where the plate should be; whether it is the plate's. */
static void scan_action(lab_labware_t *lw, const lab_instr_act_t *a)
{
    plate_t *p = a->ended && a->err->code == LAB_OK ? plate_get(lw, a->who->plate) : NULL;
    if (!p)
        return;
    add_run(p, a->who);
    json_t *read = json_object_get(a->result, "barcode");
    const char *seen = json_string_value(read);
    /* what the label said is kept only when it could be a barcode */
    if (seen && lab_labware_barcode_check(seen, strlen(seen)))
        seen = NULL;
    json_object_set_new(p->doc, "scanned",
                        json_pack("{s:o, s:s, s:o, s:b}", "barcode_read",
                                  seen ? json_string(seen) : json_null(), "instrument",
                                  lab_driver_id(a->d), "at", now_iso(lw), "matched",
                                  seen && strcmp(seen, p->barcode) == 0));
    lw_op_t *o = op_new(lw);
    op_plate(lw, o, p);
    op_submit(lw, o);
}

static void on_action(void *ctx, const lab_instr_act_t *a)
{
    lab_labware_t *lw = ctx;
    if (lw->stopped || !a->action)
        return;
    lab_driver_t *d = a->d;
    if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_LOAD))
        site_action(lw, a, true);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_UNLOAD))
        site_action(lw, a, false);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_MOVE_PLATE))
        move_action(lw, a);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_PICK_UP_TIPS))
        liquid_action(lw, a, LAB_DRV_ROLE_PICK_UP_TIPS);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_ASPIRATE))
        liquid_action(lw, a, LAB_DRV_ROLE_ASPIRATE);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_DISPENSE))
        liquid_action(lw, a, LAB_DRV_ROLE_DISPENSE);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_READ))
        read_action(lw, a);
    else if (lab_instr_action_is(d, a->action, LAB_DRV_ROLE_SCAN))
        scan_action(lw, a);
}

/* ---- start: what a stopped daemon left, and what the instruments sense ---- */

static bool has_inventory(lab_labware_t *lw, const char *instrument)
{
    for (int i = 0; instrument && i < lw->ninv; i++)
        if (strcmp(lab_driver_id(lw->inv[i].d), instrument) == 0)
            return true;
    return false;
}

/* A plate in transit when the daemon stopped: where it went nobody can tell, unless an
 * instrument that senses its sites says so (then reconcile does). */
static void settle_transit(lab_labware_t *lw, plate_t *p, bool sensed)
{
    json_t *loc = json_object_get(p->doc, "location");
    const char *inst = json_string_value(json_object_get(loc, "instrument"));
    if (!sensed && has_inventory(lw, inst))
        return;
    char *why = lab_asprintf("labloopd stopped while %s on %s was under way",
                             json_string_value(json_object_get(loc, "action")) ?: "a move",
                             inst ?: "an instrument");
    lw_op_t *o = op_new(lw);
    json_t *m = json_pack("{s:O?, s:O?, s:O?, s:s, s:s}", "from", json_object_get(loc, "from"),
                          "to", json_object_get(loc, "to"), "action",
                          json_object_get(loc, "action"), "by", "labloop", "outcome", "unknown");
    make_unknown(lw, o, p, inst, json_object_get(loc, "site"), why);
    op_move(lw, o, p, m);
    op_plate(lw, o, p);
    op_submit(lw, o);
    free(why);
}

/* The instrument's sites as it senses them against the registry: a plate where the device
 * senses none becomes unknown; a plate in transit into or out of a site is where the device
 * senses it, or unknown; a plate the registry did not know of holds its site. */
static void reconcile(lab_labware_t *lw, lab_driver_t *d, json_t *result)
{
    const char *id = lab_driver_id(d);
    json_t *sites = json_object_get(result, "sites");
    size_t i;
    json_t *e;
    int changes = 0;
    json_array_foreach(sites, i, e)
    {
        int c, s;
        if (!site_of(e, &c, &s))
            continue;
        bool occupied = json_is_true(json_object_get(e, "occupied"));
        plate_t *p = plate_at_site(lw, id, c, s);
        lw_op_t *o = op_new(lw);
        if (p && strcmp(loc_state(p), "in_transit") == 0) {
            json_t *loc = json_object_get(p->doc, "location");
            json_t *to = json_object_get(loc, "to");
            int tc, ts;
            bool into = site_of(json_object_get(to, "site"), &tc, &ts) && tc == c && ts == s;
            json_t *m =
                json_pack("{s:O?, s:O?, s:O?, s:s, s:s}", "from", json_object_get(loc, "from"),
                          "to", to, "action", json_object_get(loc, "action"), "by", "labloop",
                          "outcome", occupied ? (into ? "done" : "failed") : "unknown");
            if (occupied) {
                set_location(p, loc_at(lw, id, c, s));
                json_object_set_new(json_object_get(p->doc, "location"), "why",
                                    json_string("found there by the instrument on restart"));
            } else {
                char *why = lab_asprintf("labloopd stopped while %s on %s was under way, and %s "
                                         "senses no plate in cassette %d slot %d",
                                         json_string_value(json_object_get(loc, "action")) ?: "?",
                                         id, id, c, s);
                json_t *site = site_json(c, s);
                make_unknown(lw, o, p, id, site, why);
                json_decref(site);
                free(why);
            }
            op_move(lw, o, p, m);
            op_plate(lw, o, p);
        } else if (p && strcmp(loc_state(p), "at") == 0 && !occupied) {
            char *why = lab_asprintf("%s senses no plate in cassette %d slot %d, where plate %s "
                                     "was",
                                     id, c, s, p->barcode);
            json_t *site = site_json(c, s);
            make_unknown(lw, o, p, id, site, why);
            json_decref(site);
            free(why);
            op_plate(lw, o, p);
        } else if (!p && occupied && !hold_find(lw, id, c, s)) {
            hold_change(lw, o, id, c, s,
                        json_pack("{s:s, s:s, s:o}", "why",
                                  "the instrument senses a plate labloop did not put there", "by",
                                  "labloop", "since", now_iso(lw)));
        } else if (!p && !occupied && hold_find(lw, id, c, s)) {
            hold_change(lw, o, id, c, s, NULL);
        }
        if (o->barcode || o->hold_inst) {
            op_submit(lw, o);
            changes++;
        } else {
            free(o);
        }
    }
    /* in transit to or from a place of this instrument the device did not speak of */
    for (int k = 0; k < lw->np; k++) {
        plate_t *p = &lw->p[k];
        json_t *loc = json_object_get(p->doc, "location");
        if (strcmp(loc_state(p), "in_transit") == 0 &&
            strcmp(json_string_value(json_object_get(loc, "instrument")) ?: "", id) == 0) {
            settle_transit(lw, p, true);
            changes++;
        }
    }
    log_info("labware", "instrument=%s sites reconciled: %zu sensed, %d changes", id,
             json_array_size(sites), changes);
}

static void inventory_ask(lab_labware_t *lw, inventory_t *v);

static void inventory_done(lab_driver_t *d, const lab_drv_error_t *err, json_t *result, void *arg)
{
    inventory_t *v = arg;
    lab_labware_t *lw = v->lw;
    v->asking = false;
    if (lw->stopped)
        return;
    if (err->code != LAB_OK) {
        log_warn("labware", "instrument=%s sites not known yet: %s", lab_driver_id(d), err->text);
        return; /* the retry timer asks again */
    }
    v->answered = true;
    reconcile(lw, d, result);
}

static void inventory_ask(lab_labware_t *lw, inventory_t *v)
{
    if (v->asking || v->answered || lw->stopped)
        return;
    lab_instr_who_t who = {NULL, NULL, "labloop"};
    lab_drv_error_t err;
    v->asking = true;
    if (lab_instr_call(lw->in, v->d, v->action, NULL, 0, &who, inventory_done, v, &err, NULL) !=
        LAB_OK)
        v->asking = false; /* offline at start, most likely: the timer asks again */
}

static void on_retry(uv_timer_t *t)
{
    lab_labware_t *lw = t->data;
    bool left = false;
    for (int i = 0; i < lw->ninv; i++) {
        inventory_ask(lw, &lw->inv[i]);
        left |= !lw->inv[i].answered;
    }
    if (!left || lw->stopped)
        uv_timer_stop(&lw->retry);
}

int lab_labware_start(lab_labware_t **out, uv_loop_t *loop, const lab_config_t *cfg,
                      const lab_clock_t *clock, lab_store_t *st, lab_instr_t *in)
{
    (void)cfg;
    *out = NULL;
    json_t *plates = NULL, *holds = NULL;
    int rc = lab_plates_load(st, &plates, &holds);
    if (rc)
        return rc;
    lab_labware_t *lw = LAB_NEW(lab_labware_t);
    lw->loop = loop;
    lw->clock = clock;
    lw->st = st;
    lw->in = in;
    size_t i;
    json_t *e;
    json_array_foreach(plates, i, e)
    {
        json_t *doc = json_object_get(e, "doc");
        const char *bc = json_string_value(json_object_get(doc, "barcode"));
        if (bc && !plate_find(lw, bc))
            plate_add(lw, bc, json_incref(doc),
                      (int)json_integer_value(json_object_get(e, "moves")));
    }
    json_array_foreach(holds, i, e)
    {
        lw->h = lab_realloc(lw->h, sizeof *lw->h * (size_t)(lw->nh + 1));
        hold_t *h = &lw->h[lw->nh++];
        h->instrument = lab_strdup(json_string_value(json_object_get(e, "instrument")) ?: "");
        h->cassette = (int)json_integer_value(json_object_get(e, "cassette"));
        h->slot = (int)json_integer_value(json_object_get(e, "slot"));
        h->doc = json_incref(json_object_get(e, "doc"));
    }
    json_decref(plates);
    json_decref(holds);
    if ((rc = lab_instr_on_action(in, on_action, lw)) != 0) {
        lw->closing = true;
        close_finish(lw);
        return rc;
    }
    int n = lab_instr_count(in);
    lw->inv = lab_calloc((size_t)n + 1, sizeof *lw->inv);
    for (int k = 0; k < n; k++) {
        lab_driver_t *d = lab_instr_at(in, k);
        const char *a = drv_action(d, LAB_DRV_ROLE_INVENTORY);
        if (a)
            lw->inv[lw->ninv++] = (inventory_t){lw, d, a, false, false};
    }
    for (int k = 0; k < lw->np; k++)
        if (strcmp(loc_state(&lw->p[k]), "in_transit") == 0)
            settle_transit(lw, &lw->p[k], false);
    uv_timer_init(loop, &lw->retry);
    lw->retry.data = lw;
    if (lw->ninv) {
        for (int k = 0; k < lw->ninv; k++)
            inventory_ask(lw, &lw->inv[k]);
        uv_timer_start(&lw->retry, on_retry, INVENTORY_RETRY_MS, INVENTORY_RETRY_MS);
    }
    log_info("labware", "plates=%d held_sites=%d sensing_instruments=%d", lw->np, lw->nh, lw->ninv);
    *out = lw;
    return 0;
}

/* ---- queries and a person's word ---- */

bool lab_labware_site_busy(lab_labware_t *lw, const char *instrument, int cassette, int slot)
{
    return lw && instrument &&
           (plate_at_site(lw, instrument, cassette, slot) ||
            hold_find(lw, instrument, cassette, slot));
}

void lab_labware_on_change(lab_labware_t *lw, void (*cb)(void *ctx), void *ctx)
{
    if (lw->nchange < CHANGE_LISTENERS) {
        lw->change[lw->nchange].cb = cb;
        lw->change[lw->nchange].ctx = ctx;
        lw->nchange++;
    }
}

json_t *lab_labware_plate(lab_labware_t *lw, const char *barcode)
{
    plate_t *p = plate_find(lw, barcode);
    return p ? json_deep_copy(p->doc) : NULL;
}

int lab_labware_locate(lab_labware_t *lw, const char *barcode, const char *instrument, int cassette,
                       int slot, int format, const char *labware, const char *reason,
                       const char *by, lab_labware_done_cb cb, void *arg, char *msg, size_t msglen)
{
    msg[0] = '\0';
    plate_t *p = plate_find(lw, barcode);
    if (!p)
        return LAB_ENOTFOUND;
    lab_driver_t *d = instrument ? lab_instr_find(lw->in, instrument, strlen(instrument)) : NULL;
    if (instrument && !d) {
        snprintf(msg, msglen, "no instrument %.64s", instrument);
        return LAB_ENOTFOUND;
    }
    if (d && cassette > 0 && lab_driver_site_index(d, cassette, slot) < 0) {
        snprintf(msg, msglen, "%.64s has no site cassette %d slot %d", instrument, cassette, slot);
        return LAB_ENOTFOUND;
    }
    if (d && cassette > 0) {
        plate_t *q = plate_at_site(lw, instrument, cassette, slot);
        if (q && q != p) {
            snprintf(msg, msglen, "cassette %d slot %d of %.64s holds plate %.64s", cassette, slot,
                     instrument, q->barcode);
            return LAB_ECONFLICT;
        }
    }
    lw_op_t *o = op_new(lw);
    bool was_unknown = strcmp(loc_state(p), "unknown") == 0;
    json_t *from = loc_brief(json_object_get(p->doc, "location"));
    json_t *loc = d ? loc_at(lw, instrument, cassette, slot)
                    : json_pack("{s:s, s:o}", "state", "outside", "since", now_iso(lw));
    json_object_set_new(loc, "why", json_string(reason));
    json_object_set_new(loc, "by", json_string(by));
    json_t *m = json_pack("{s:o, s:o, s:s, s:s, s:s, s:s}", "from", from, "to", loc_brief(loc),
                          "action", "located", "by", by, "reason", reason, "outcome", "done");
    set_location(p, loc);
    if (format > 0)
        json_object_set_new(p->doc, "format", json_integer(format));
    if (labware)
        json_object_set_new(p->doc, "labware", json_string(labware));
    if (d && cassette > 0) /* the plate nobody named is this one */
        hold_change(lw, o, instrument, cassette, slot, NULL);
    if (was_unknown) {
        o->prompt_id = prompt_id(p);
        o->prompt = json_pack("{s:b, s:s, s:s, s:s}", "open", 0, "by", by, "how", "located",
                              "reason", reason);
    }
    op_move(lw, o, p, m);
    op_plate(lw, o, p);
    o->cb = cb;
    o->cb_arg = arg;
    o->cb_doc = json_deep_copy(p->doc);
    log_info("labware", "plate=%s located by=%s at %s", p->barcode, by, d ? instrument : "outside");
    op_submit(lw, o);
    return 0;
}

/* ---- stop and close ---- */

void lab_labware_stop(lab_labware_t *lw)
{
    if (!lw)
        return;
    lw->stopped = true;
    uv_timer_stop(&lw->retry);
}

static void retry_closed(uv_handle_t *h)
{
    lab_labware_t *lw = h->data;
    void (*cb)(void *) = lw->close_cb;
    void *arg = lw->close_arg;
    free(lw);
    if (cb)
        cb(arg);
}

static void close_finish(lab_labware_t *lw)
{
    for (int i = 0; i < lw->np; i++) {
        free(lw->p[i].barcode);
        json_decref(lw->p[i].doc);
    }
    free(lw->p);
    for (int i = 0; i < lw->nh; i++) {
        free(lw->h[i].instrument);
        json_decref(lw->h[i].doc);
    }
    free(lw->h);
    for (int i = 0; i < lw->nasp; i++) {
        free(lw->asp[i].instrument);
        free(lw->asp[i].reagent);
    }
    free(lw->asp);
    free(lw->inv);
    if (lw->retry.loop) {
        uv_close((uv_handle_t *)&lw->retry, retry_closed);
        return;
    }
    void (*cb)(void *) = lw->close_cb;
    void *arg = lw->close_arg;
    free(lw);
    if (cb)
        cb(arg);
}

void lab_labware_close(lab_labware_t *lw, void (*cb)(void *), void *arg)
{
    lw->stopped = true;
    lw->closing = true;
    lw->close_cb = cb;
    lw->close_arg = arg;
    if (lw->retry.loop)
        uv_timer_stop(&lw->retry);
    if (lw->ops == 0)
        close_finish(lw);
}
