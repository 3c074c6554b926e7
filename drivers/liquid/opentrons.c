/* opentrons: an Opentrons OT-2 or Flex through its robot-server HTTP API (protocols/opentrons.h)
 * on the TCP transport (port = tcp://HOST[:31950]), HTTP/1.1 framed by protocols/httpmsg.h. One
 * request at a time on one keep-alive connection. Owns the connection (a server that closes an
 * idle connection is reconnected without a word; a second loss in a row, or a loss with a
 * request in flight, is the instrument going offline), the run the commands go into (created
 * at the first operation, created again when the server says it is gone), the deck it loads
 * into that run from its keys (one pipette, a tip rack, a plate and a reservoir whose wells
 * hold the reagents), and the tips and volumes as the driver saw them.
 *
 * Every command is POSTed with waitUntilComplete=true and a timeout, so its answer is its end:
 * "succeeded", "failed" (LAB_EDEVICE, the errorType as device_code) or still running when the
 * server's timeout ran out (LAB_ETIMEDOUT). A request whose answer does not come in time, or
 * comes broken, drops the connection: a late answer then arrives on a closed socket and can
 * never be taken for the answer to the next request. */
#include "drivers/driver.h"

#include "core/err.h"
#include "core/jschema.h"
#include "core/log.h"
#include "protocols/httpmsg.h"
#include "protocols/opentrons.h"

#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB "opentrons"
#define BODY_MAX (1u << 20) /* loadLabware answers carry the labware definition: tens of kB */
#define REQ_MAX 8192
#define REAGENTS_MAX 12 /* the wells of a 12-well reservoir's row A */
#define RETRY_MS 2000

/* What one request of a sequence does; the command's params are built when it is sent, from
 * the ids the earlier requests returned. */
typedef enum ot_step {
    ST_HEALTH = 0,
    ST_RUN,
    ST_LOAD_PIPETTE,
    ST_LOAD_TIPS,
    ST_LOAD_PLATE,
    ST_LOAD_RESERVOIR,
    ST_HOME,
    ST_PICK_UP,
    ST_ASPIRATE,
    ST_DISPENSE,
    ST_TO_TRASH,
    ST_DROP,
    ST_MOVE_LABWARE,
} ot_step_t;

/* The commandType of each command step, and whether it moves the robot (a failure after that
 * cannot be "not started"). */
static const struct {
    const char *type;
    bool moves;
} step_cmd[] = {
    [ST_LOAD_PIPETTE] = {"loadPipette", false},
    [ST_LOAD_TIPS] = {"loadLabware", false},
    [ST_LOAD_PLATE] = {"loadLabware", false},
    [ST_LOAD_RESERVOIR] = {"loadLabware", false},
    [ST_HOME] = {"home", true},
    [ST_PICK_UP] = {"pickUpTip", true},
    [ST_ASPIRATE] = {"aspirate", true},
    [ST_DISPENSE] = {"dispense", true},
    [ST_TO_TRASH] = {"moveToAddressableAreaForDropTip", true},
    [ST_DROP] = {"dropTipInPlace", true},
    [ST_MOVE_LABWARE] = {"moveLabware", true},
};

#define STEPS_MAX 12

typedef enum ot_owner { OWN_NONE = 0, OWN_CONNECT, OWN_OP } ot_owner_t;

typedef struct ot {
    lab_driver_t *d;
    lab_transport_t *t;
    char url[300];
    char host[300]; /* the Host field: host:port */
    uv_timer_t reply_timer, later_timer, retry_timer, refuse_timer;
    int timers_open;
    httpmsg_msg_t rx;

    /* the connection */
    bool open;        /* the transport is connected */
    bool linked;      /* /health answered since the connection was (re)made after a doubt */
    int quiet_losses; /* losses of an idle connection since the last answer */

    /* the running sequence */
    ot_owner_t owner;
    ot_step_t steps[STEPS_MAX];
    int n_steps, at;
    bool in_flight;    /* a request is written (or held until the connection is open) */
    bool held;         /* ... held: the connection is not open yet */
    bool moved;        /* a command that moves the robot was sent in this sequence */
    bool moved_before; /* ... before the request in flight */
    bool retried;      /* a /health resent once after the server closed the connection */
    bool op_pending;   /* an operation waits for the connect sequence: its steps in pend */
    ot_step_t pend[STEPS_MAX];
    int n_pend;
    uint64_t not_before; /* no connect sequence before this (uv_now ms), after one failed */
    lab_drv_error_t refused;
    char req[REQ_MAX];
    size_t req_len;
    char sent[96]; /* the request in flight, for messages */
    unsigned reply_ms;
    lab_drv_error_t later;
    json_t *result;

    /* the operation's parameters */
    char well[8];
    int tip_well; /* 0..95, column by column: A1, B1, ... */
    double volume_ul;
    int reagent;
    char labware_slot[8]; /* moveLabware: the new slot */
    const char *labware;  /* moveLabware: "plate" or "reservoir" */

    /* the robot as the driver saw it */
    ot_health_t health;
    char run_id[OT_ID_MAX + 1];
    char pipette_id[OT_ID_MAX + 1], tips_id[OT_ID_MAX + 1], plate_id[OT_ID_MAX + 1],
        reservoir_id[OT_ID_MAX + 1];
    bool tip;
    double held_ul;
    int next_tip;
    int channels;    /* 1 or 8, from the pipette's name */
    double max_ul;   /* the pipette's volume, from its name */
    double asp_rate; /* uL/s */
    double disp_rate;
    char reagents[REAGENTS_MAX][32];
    int n_reagents;
    long move_ms; /* the server-side timeout of one command, real ms */
} ot_t;

/* ---- keys and actions ---- */

/* Default flow rates (uL/s) per pipette model, as PyLabRobot's backend takes them
 * (pylabrobot/legacy/liquid_handling/backends/opentrons_backend.py:463-476 aspirate,
 * 547-560 dispense, at 598b58ffbef97fe33db6e1421b532cc9a389cbcb). */
static const struct {
    const char *name;
    double asp, disp;
} flow_rates[] = {
    {"p300_multi_gen2", 94, 94},
    {"p10_single", 5, 10},
    {"p10_multi", 5, 10},
    {"p50_single", 25, 50},
    {"p50_multi", 25, 50},
    {"p300_single", 150, 300},
    {"p300_multi", 150, 300},
    {"p1000_single", 500, 1000},
    {"p20_single_gen2", 3.78, 7.56},
    {"p300_single_gen2", 46.43, 92.86},
    {"p1000_single_gen2", 137.35, 274.7},
    {"p20_multi_gen2", 7.6, 7.6},
};

static const lab_drv_key_t ot_keys[] = {
    {"port", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED,
     "tcp://HOST[:PORT] of the robot-server (its port is 31950)"},
    {"pipette", LAB_DRV_KEY_STR, "p300_single_gen2", 0, 0, NULL, 0,
     "pipette model as loadPipette names it (p300_single_gen2, p20_multi_gen2, "
     "p1000_single_flex, ...): pNNN gives its volume, _multi its 8 channels"},
    {"mount", LAB_DRV_KEY_ENUM, "left", 0, 0, "left|right", 0, "the pipette's mount"},
    {"tip_rack", LAB_DRV_KEY_STR, "opentrons_96_tiprack_300ul", 0, 0, NULL, 0,
     "tip rack load name (96 tips)"},
    {"tip_rack_slot", LAB_DRV_KEY_STR, "1", 0, 0, NULL, 0, "deck slot of the tip rack"},
    {"plate", LAB_DRV_KEY_STR, "corning_96_wellplate_360ul_flat", 0, 0, NULL, 0,
     "plate load name (96 wells)"},
    {"plate_slot", LAB_DRV_KEY_STR, "2", 0, 0, NULL, 0, "deck slot of the plate"},
    {"reservoir", LAB_DRV_KEY_STR, "nest_12_reservoir_15ml", 0, 0, NULL, 0,
     "reagent reservoir load name (12 troughs A1..A12)"},
    {"reservoir_slot", LAB_DRV_KEY_STR, "3", 0, 0, NULL, 0, "deck slot of the reservoir"},
    {"reagents", LAB_DRV_KEY_STR, "substrate,inhibitor,buffer", 0, 0, NULL, 0,
     "reagent names by reservoir trough (A1, A2, ...), comma separated"},
    {"trash", LAB_DRV_KEY_STR, "fixedTrash", 0, 0, NULL, 0,
     "addressable area tips are dropped into (OT-2 fixedTrash; Flex movableTrashA3, ...)"},
    {"aspirate_flow_ul_s", LAB_DRV_KEY_DOUBLE, NULL, 0.1, 5000, NULL, 0,
     "aspirate flow rate (default: the pipette's)"},
    {"dispense_flow_ul_s", LAB_DRV_KEY_DOUBLE, NULL, 0.1, 5000, NULL, 0,
     "dispense flow rate (default: the pipette's)"},
    {"move_timeout_s", LAB_DRV_KEY_DOUBLE, "60", 0.001, 3600, NULL, 0,
     "lab seconds one command may take on the robot (the server's timeout)"},
    {"timeout_ms", LAB_DRV_KEY_INT, "5000", 10, 60000, NULL, 0,
     "real milliseconds the link may add to an answer"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

#define WELL96 "\"type\":\"string\",\"pattern\":\"^[A-Ha-h]([1-9]|1[0-2])$\""
#define VOLUME                                                                                     \
    "\"volume_ul\":{\"oneOf\":[{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1000},"     \
    "{\"type\":\"array\",\"minItems\":1,\"maxItems\":8,"                                           \
    "\"items\":{\"type\":\"number\",\"exclusiveMinimum\":0,\"maximum\":1000}}]}"

static const lab_drv_action_t ot_actions[] = {
    {"home", NULL, 120, 0, "home every axis (home)"},
    {"pick_up_tips",
     "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
     "\"channels\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":8},\"well\":{" WELL96 "}}}",
     120, 0,
     "pick up the next unused tip (or the tip rack's well) with the pipette; channels is the "
     "pipette's (1, or 8 for a multi-channel one, which takes a column)"},
    {"aspirate",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"volume_ul\"],"
     "\"properties\":{" VOLUME ",\"reagent\":{\"type\":\"string\",\"minLength\":1,"
     "\"maxLength\":31},\"well\":{" WELL96 "}},"
     "\"oneOf\":[{\"required\":[\"reagent\"]},{\"required\":[\"well\"]}]}",
     120, 0,
     "aspirate volume_ul from the reagent's reservoir trough or from a plate well; an array of "
     "volumes gives one per channel, all equal (the channels move as one)"},
    {"dispense",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"well\",\"volume_ul\"],"
     "\"properties\":{" VOLUME ",\"well\":{" WELL96 "}}}",
     120, 0, "dispense volume_ul into the plate well (a multi-channel pipette: row A)"},
    {"drop_tips", NULL, 120, 0,
     "drop the tip into the trash (moveToAddressableAreaForDropTip, dropTipInPlace)"},
    {"move_labware",
     "{\"type\":\"object\",\"additionalProperties\":false,\"required\":[\"slot\"],"
     "\"properties\":{\"labware\":{\"enum\":[\"plate\",\"reservoir\"]},"
     "\"slot\":{\"type\":\"string\",\"pattern\":\"^([1-9]|1[01]|[A-D][1-4])$\"}}}",
     120, 0,
     "move the plate (or the reservoir) to a deck slot with the Flex gripper (moveLabware "
     "usingGripper)"},
    {"health", NULL, 10, 0, "the robot's health document (GET /health)"},
    {"status", NULL, 5, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE,
     "the run, the tip and the volume held as the driver saw them"},
    {NULL, NULL, 0, 0, NULL},
};

/* ---- small helpers ---- */

static void ot_connect(ot_t *s);
static void ot_drop(ot_t *s, bool doubt);
static void ot_drop_keep(ot_t *s);
static void ot_send_step(ot_t *s);

/* The pending operation's steps become the running sequence. */
static void ot_start_op(ot_t *s)
{
    s->op_pending = false;
    memcpy(s->steps, s->pend, sizeof s->steps);
    s->n_steps = s->n_pend;
    s->owner = OWN_OP;
    s->at = 0;
    s->moved = false;
    s->retried = false;
    ot_send_step(s);
}

static bool ot_well(const char *w, int *row, int *col)
{
    *row = toupper((unsigned char)w[0]) - 'A';
    *col = atoi(w + 1) - 1;
    return *row >= 0 && *row < 8 && *col >= 0 && *col < 12;
}

static int ot_reagent(ot_t *s, const char *name)
{
    for (int i = 0; i < s->n_reagents; i++)
        if (strcmp(s->reagents[i], name) == 0)
            return i;
    return -1;
}

/* The run and what was loaded into it are gone (a new run, a restarted robot). */
static void ot_forget_run(ot_t *s)
{
    s->run_id[0] = s->pipette_id[0] = s->tips_id[0] = s->plate_id[0] = s->reservoir_id[0] = '\0';
}

/* ---- the end of a sequence ---- */

static void ot_end(ot_t *s, const lab_drv_error_t *err)
{
    ot_owner_t owner = s->owner;
    s->owner = OWN_NONE;
    s->in_flight = s->held = false;
    uv_timer_stop(&s->reply_timer);
    uv_timer_stop(&s->later_timer);
    if (err && err->code == LAB_OK)
        err = NULL;
    if (owner == OWN_CONNECT) {
        if (err) {
            lab_drv_error_t e = *err;
            snprintf(e.text, sizeof e.text, "connecting: %.230s", err->text);
            if (s->op_pending) {
                s->op_pending = false;
                lab_drv_error_t pe = e;
                pe.not_started = true;
                json_decref(s->result);
                s->result = NULL;
                lab_drv_done(s->d, &pe, NULL);
            }
            lab_drv_set_state(s->d, LAB_INST_OFFLINE, &e);
            s->not_before = uv_now(lab_drv_loop(s->d)) + RETRY_MS;
            ot_drop(s, true);
            return;
        }
        s->linked = true;
        lab_drv_set_state(s->d, LAB_INST_IDLE, NULL);
        if (s->op_pending)
            ot_start_op(s);
        return;
    }
    if (owner != OWN_OP)
        return;
    if (!s->linked && s->open)
        ot_connect(s); /* the exchange was left in doubt: /health before the next request */
    json_t *r = s->result;
    s->result = NULL;
    if (err) {
        json_decref(r);
        lab_drv_done(s->d, err, NULL);
    } else {
        lab_drv_done(s->d, NULL, r);
    }
}

static void ot_later_due(uv_timer_t *t)
{
    ot_t *s = t->data;
    ot_end(s, &s->later);
}

/* Ends the sequence from the loop: never from inside invoke or a transport callback that may
 * be inside a write. */
static void ot_end_later(ot_t *s, const lab_drv_error_t *err)
{
    s->later = *err;
    uv_timer_stop(&s->reply_timer);
    uv_timer_start(&s->later_timer, ot_later_due, 0, 0);
}

/* ---- requests ---- */

static void ot_reply_due(uv_timer_t *t)
{
    ot_t *s = t->data;
    lab_drv_error_t e;
    lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL, "no answer to %s within %u ms", s->sent,
                      s->reply_ms);
    e.not_started = false; /* it reached the robot: it may have done its work */
    ot_drop(s, true);      /* a late answer must never meet the next request */
    ot_end(s, &e);
}

static void ot_write(ot_t *s)
{
    lab_drv_error_t e;
    s->held = false;
    httpmsg_msg_reset(&s->rx);
    int rc = lab_transport_write(s->t, s->req, s->req_len, NULL, NULL);
    if (rc < 0) {
        ot_end_later(s, lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "cannot send %s: %s", s->sent,
                                          lab_strerror(rc)));
        return;
    }
    s->moved_before = s->moved;
    if (s->owner == OWN_OP && s->at < s->n_steps && s->steps[s->at] >= ST_HOME &&
        step_cmd[s->steps[s->at]].moves)
        s->moved = true;
}

/* Encodes a request and sends it, or holds it until the connection is open. */
static void ot_request(ot_t *s, const char *method, const char *target, const char *body)
{
    lab_drv_error_t e;
    httpmsg_kv_t fields[] = {{OT_VERSION_FIELD, OT_API_VERSION}, {"Accept", "application/json"}};
    int n = httpmsg_request(s->req, sizeof s->req, method, target, s->host, fields, 2, body,
                            body ? strlen(body) : 0);
    snprintf(s->sent, sizeof s->sent, "%s %.80s", method, target);
    if (n < 0) {
        ot_end_later(s, lab_drv_error_set(&e, LAB_EINTERNAL, NULL, "%s: cannot encode: %s", s->sent,
                                          lab_strerror(n)));
        return;
    }
    s->req_len = (size_t)n;
    s->in_flight = true;
    uv_timer_start(&s->reply_timer, ot_reply_due, s->reply_ms, 0);
    if (s->open)
        ot_write(s);
    else
        s->held = true; /* the transport is reconnecting: sent when it is open */
}

static json_t *ot_location(const char *slot)
{
    return json_pack("{s:s}", "slotName", slot);
}

static json_t *ot_load_labware(ot_t *s, const char *name_key, const char *slot_key)
{
    return json_pack("{s:o,s:s,s:s,s:i}", "location", ot_location(lab_drv_str(s->d, slot_key)),
                     "loadName", lab_drv_str(s->d, name_key), "namespace", "opentrons", "version",
                     1);
}

static json_t *ot_well_location(const char *origin, double z)
{
    return json_pack("{s:s,s:{s:i,s:i,s:f}}", "origin", origin, "offset", "x", 0, "y", 0, "z", z);
}

/* The params of a command step, from the keys and the ids loaded before it. */
static json_t *ot_params(ot_t *s, ot_step_t st)
{
    char tip[16];
    switch (st) {
    case ST_LOAD_PIPETTE:
        return json_pack("{s:s,s:s}", "pipetteName", lab_drv_str(s->d, "pipette"), "mount",
                         lab_drv_str(s->d, "mount"));
    case ST_LOAD_TIPS:
        return ot_load_labware(s, "tip_rack", "tip_rack_slot");
    case ST_LOAD_PLATE:
        return ot_load_labware(s, "plate", "plate_slot");
    case ST_LOAD_RESERVOIR:
        return ot_load_labware(s, "reservoir", "reservoir_slot");
    case ST_HOME:
        return json_object();
    case ST_PICK_UP:
        snprintf(tip, sizeof tip, "%c%d", 'A' + s->tip_well % 8, s->tip_well / 8 + 1);
        return json_pack("{s:s,s:s,s:s,s:o}", "pipetteId", s->pipette_id, "labwareId", s->tips_id,
                         "wellName", tip, "wellLocation", ot_well_location("top", 0));
    case ST_ASPIRATE:
    case ST_DISPENSE: {
        const char *lw = s->plate_id;
        char well[16];
        snprintf(well, sizeof well, "%s", s->well);
        if (st == ST_ASPIRATE && s->reagent >= 0) {
            lw = s->reservoir_id;
            snprintf(well, sizeof well, "A%d", s->reagent + 1);
        }
        return json_pack("{s:s,s:s,s:s,s:o,s:f,s:f}", "pipetteId", s->pipette_id, "labwareId", lw,
                         "wellName", well, "wellLocation", ot_well_location("bottom", 1), "volume",
                         s->volume_ul, "flowRate", st == ST_ASPIRATE ? s->asp_rate : s->disp_rate);
    }
    case ST_TO_TRASH:
        return json_pack("{s:s,s:s,s:{s:i,s:i,s:i}}", "pipetteId", s->pipette_id,
                         "addressableAreaName", lab_drv_str(s->d, "trash"), "offset", "x", 0, "y",
                         0, "z", 0);
    case ST_DROP:
        return json_pack("{s:s}", "pipetteId", s->pipette_id);
    case ST_MOVE_LABWARE:
        return json_pack("{s:s,s:o,s:s}", "labwareId",
                         strcmp(s->labware, "reservoir") == 0 ? s->reservoir_id : s->plate_id,
                         "newLocation", ot_location(s->labware_slot), "strategy", "usingGripper");
    default:
        return NULL;
    }
}

static void ot_send_step(ot_t *s)
{
    lab_drv_error_t e;
    ot_step_t st = s->steps[s->at];
    if (st == ST_HEALTH) {
        ot_request(s, "GET", "/health", NULL);
        return;
    }
    if (st == ST_RUN) {
        ot_request(s, "POST", "/runs", ot_run_body());
        return;
    }
    char target[160];
    int n = ot_command_target(target, sizeof target, s->run_id, s->move_ms);
    json_t *params = ot_params(s, st);
    char *body = params ? ot_command_body(step_cmd[st].type, params) : NULL;
    json_decref(params);
    if (n < 0 || !body) {
        free(body);
        ot_end_later(
            s, lab_drv_error_set(&e, LAB_EINTERNAL, NULL, "%s: cannot encode", step_cmd[st].type));
        return;
    }
    ot_request(s, "POST", target, body);
    snprintf(s->sent, sizeof s->sent, "%s (POST /runs/%.40s/commands)", step_cmd[st].type,
             s->run_id);
    free(body);
}

/* ---- answers ---- */

/* A 4xx/5xx: the server's error body, as LAB_EDEVICE with its id as device_code. A command the
 * server refused was never enqueued. */
static void ot_http_error(ot_t *s, lab_drv_error_t *e)
{
    ot_error_t oe;
    char why[160];
    int rc = ot_error_parse(s->rx.body, s->rx.body_len, &oe, why, sizeof why);
    if (rc) {
        lab_drv_error_set(e, LAB_EPROTO, NULL, "%s: HTTP %d %s with an unreadable body: %s",
                          s->sent, s->rx.status, s->rx.reason, why);
        return;
    }
    char code[32];
    snprintf(code, sizeof code, "%.31s", oe.id);
    lab_drv_error_set(e, LAB_EDEVICE, code, "%s: HTTP %d %s%s%s%s", s->sent, s->rx.status, oe.id,
                      oe.error_code[0] ? " (errorCode " : "", oe.error_code,
                      oe.error_code[0] ? ")" : "");
    size_t tl = strlen(e->text);
    if (oe.detail[0] && tl + 3 < sizeof e->text)
        snprintf(e->text + tl, sizeof e->text - tl, ": %.200s", oe.detail);
    /* A 4xx: this command was refused, never enqueued; the operation did nothing if no
     * command of it moved the robot before. */
    e->not_started = s->rx.status < 500 && !s->moved_before;
    /* RunNotFound (404), RunStopped (409: not the current run any more): the run is gone, and
     * what was loaded into it; the next operation starts a new one. */
    if (s->rx.status == 404 || strcmp(oe.id, "RunStopped") == 0) {
        ot_forget_run(s);
        s->tip = false;
        s->held_ul = 0;
    }
}

static void ot_step_ok(ot_t *s, ot_step_t st, const ot_command_t *c)
{
    switch (st) {
    case ST_LOAD_PIPETTE:
        snprintf(s->pipette_id, sizeof s->pipette_id, "%s", c->result_id);
        break;
    case ST_LOAD_TIPS:
        snprintf(s->tips_id, sizeof s->tips_id, "%s", c->result_id);
        break;
    case ST_LOAD_PLATE:
        snprintf(s->plate_id, sizeof s->plate_id, "%s", c->result_id);
        break;
    case ST_LOAD_RESERVOIR:
        snprintf(s->reservoir_id, sizeof s->reservoir_id, "%s", c->result_id);
        break;
    case ST_PICK_UP:
        s->tip = true;
        s->held_ul = 0;
        s->next_tip = s->tip_well + s->channels;
        break;
    case ST_ASPIRATE:
        s->held_ul += s->volume_ul;
        break;
    case ST_DISPENSE:
        s->held_ul = s->held_ul > s->volume_ul ? s->held_ul - s->volume_ul : 0;
        break;
    case ST_DROP:
        s->tip = false;
        s->held_ul = 0;
        break;
    default:
        break;
    }
}

/* One complete answer to the request in flight. */
static void ot_answer(ot_t *s)
{
    lab_drv_error_t e = {0};
    char why[200];
    ot_step_t st = s->steps[s->at];
    int status = s->rx.status;
    s->in_flight = false;
    uv_timer_stop(&s->reply_timer);
    s->quiet_losses = 0;
    if (status >= 400) {
        ot_http_error(s, &e);
        ot_end(s, &e);
        return;
    }
    if ((st == ST_HEALTH && status != 200) || (st != ST_HEALTH && status != 201)) {
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "%s: HTTP %d %s, expected %d", s->sent, status,
                          s->rx.reason, st == ST_HEALTH ? 200 : 201);
        ot_drop(s, true);
        ot_end(s, &e);
        return;
    }
    if (st == ST_HEALTH) {
        ot_health_t h;
        int rc = ot_health_parse(s->rx.body, s->rx.body_len, &h, why, sizeof why);
        if (rc) {
            lab_drv_error_set(&e, LAB_EPROTO, NULL, "GET /health: %s", why);
            ot_end(s, &e);
            return;
        }
        s->health = h;
        lab_drv_set_info(s->d, "name", json_string(h.name));
        lab_drv_set_info(s->d, "api_version", json_string(h.api_version));
        lab_drv_set_info(s->d, "robot_model", json_string(h.robot_model));
        if (h.fw_version[0])
            lab_drv_set_info(s->d, "firmware", json_string(h.fw_version));
        if (h.robot_serial[0])
            lab_drv_set_info(s->d, "serial", json_string(h.robot_serial));
        if (s->owner == OWN_OP && s->result) {
            json_t *doc =
                json_pack("{s:s,s:s,s:s,s:i}", "name", h.name, "api_version", h.api_version,
                          "robot_model", h.robot_model, "tips_left", 96 - s->next_tip);
            json_object_update(s->result, doc);
            json_decref(doc);
        }
    } else if (st == ST_RUN) {
        ot_run_t r;
        if (ot_run_parse(s->rx.body, s->rx.body_len, &r, why, sizeof why)) {
            lab_drv_error_set(&e, LAB_EPROTO, NULL, "POST /runs: %s", why);
            ot_end(s, &e);
            return;
        }
        ot_forget_run(s);
        snprintf(s->run_id, sizeof s->run_id, "%s", r.id);
        s->tip = false; /* a new run knows of no tip on the pipette */
        log_info(SUB, "instrument=%s run=%s created", lab_driver_id(s->d), r.id);
    } else {
        ot_command_t c;
        int rc = ot_command_parse(s->rx.body, s->rx.body_len, &c, why, sizeof why);
        if (rc) {
            lab_drv_error_set(&e, LAB_EPROTO, NULL, "%s: %s", s->sent, why);
            ot_end(s, &e);
            return;
        }
        if (c.status == OT_CMD_FAILED) {
            char code[32];
            snprintf(code, sizeof code, "%.31s", c.error_type);
            lab_drv_error_set(&e, LAB_EDEVICE, code, "%s failed: %s%s%s%s%s", step_cmd[st].type,
                              c.error_type, c.error_code[0] ? " (errorCode " : "", c.error_code,
                              c.error_code[0] ? ")" : "", c.detail[0] ? ": " : "");
            size_t tl = strlen(e.text);
            snprintf(e.text + tl, sizeof e.text - tl, "%.200s", c.detail);
            ot_end(s, &e);
            return;
        }
        if (c.status != OT_CMD_SUCCEEDED) {
            lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL,
                              "%s %s still %s when the server's %ld ms were up", step_cmd[st].type,
                              c.id, ot_cmd_status_name(c.status), s->move_ms);
            ot_end(s, &e);
            return;
        }
        if (st >= ST_LOAD_PIPETTE && st <= ST_LOAD_RESERVOIR && !c.result_id[0]) {
            lab_drv_error_set(&e, LAB_EPROTO, NULL, "%s succeeded without an id in its result",
                              step_cmd[st].type);
            ot_end(s, &e);
            return;
        }
        ot_step_ok(s, st, &c);
    }
    if (++s->at < s->n_steps) {
        ot_send_step(s);
        return;
    }
    if (s->owner == OWN_OP && s->result) {
        json_object_set_new(s->result, "tip", json_boolean(s->tip));
        json_object_set_new(s->result, "held_ul", json_real(s->held_ul));
    }
    ot_end(s, NULL);
}

/* ---- the connection ---- */

static void ot_on_data(lab_transport_t *t, const uint8_t *data, size_t len, void *user)
{
    (void)t;
    ot_t *s = user;
    lab_drv_error_t e;
    if (!s->in_flight || s->held) {
        /* Nothing was asked: an HTTP server never speaks first. */
        log_warn(SUB, "instrument=%s %zu bytes nobody asked for; connection dropped",
                 lab_driver_id(s->d), len);
        ot_drop(s, true);
        return;
    }
    size_t used = 0;
    int rc = httpmsg_msg_feed(&s->rx, data, len, &used);
    if (rc == LAB_EAGAIN)
        return;
    if (rc == LAB_OK && used < len)
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "%s: %zu bytes after the answer", s->sent,
                          len - used);
    else if (rc < 0)
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "%s: broken HTTP answer: %s", s->sent, s->rx.why);
    if (rc < 0 || used < len) {
        e.not_started = false;
        s->in_flight = false;
        ot_drop(s, true);
        ot_end_later(s, &e);
        return;
    }
    /* The server said close: a fresh connection, no doubt, opened before the next request
     * (which waits for it) rather than after. */
    if (!s->rx.keep_alive)
        ot_drop_keep(s);
    ot_answer(s);
}

static void ot_on_state(lab_transport_t *t, lab_transport_state_t state, int err,
                        const char *reason, void *user)
{
    (void)t;
    ot_t *s = user;
    lab_drv_error_t e;
    if (state == LAB_TRANSPORT_OPEN) {
        s->open = true;
        if (s->held)
            ot_write(s);
        else if (!s->linked && s->owner == OWN_NONE && uv_now(lab_drv_loop(s->d)) >= s->not_before)
            ot_connect(s);
        return;
    }
    if (state != LAB_TRANSPORT_OFFLINE)
        return;
    bool was_open = s->open;
    s->open = false;
    lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "%s", reason && *reason ? reason : lab_strerror(err));
    if (s->in_flight && !s->held) {
        /* An answer read until the close is complete now. */
        if (was_open && httpmsg_msg_eof(&s->rx) == LAB_OK && s->rx.status) {
            ot_answer(s);
            return;
        }
        bool nothing = s->rx.state == HTTPMSG_HEAD && s->rx.head_len == 0;
        if (nothing && !s->retried && s->steps[s->at] == ST_HEALTH) {
            /* The server closed a kept-alive connection as the request went out: a GET is
             * safe to send again, once. */
            s->retried = true;
            s->held = true;
            return;
        }
        lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "connection lost before the answer to %s: %s",
                          s->sent, reason && *reason ? reason : lab_strerror(err));
        e.not_started = false;
        s->linked = false;
        ot_end(s, &e);
        lab_drv_set_state(s->d, LAB_INST_OFFLINE, &e);
        return;
    }
    if (s->in_flight)
        return; /* held: sent when the transport is back, within its reply time */
    if (s->quiet_losses++ == 0 && was_open) {
        /* A server closing an idle connection (or one the driver just dropped, before the
         * server let go of it): reconnected quietly. A second loss without an answer between
         * is the robot going away. */
        log_debug(SUB, "instrument=%s idle connection closed: %s", lab_driver_id(s->d), e.text);
        return;
    }
    s->linked = false;
    if (s->owner == OWN_CONNECT) {
        ot_end(s, &e);
        return;
    }
    lab_drv_set_state(s->d, LAB_INST_OFFLINE, &e);
}

static int ot_transport_new(ot_t *s, char *err, size_t errlen)
{
    lab_transport_settings_t ts;
    lab_transport_settings_init(&ts);
    ts.kind = LAB_TRANSPORT_TCP;
    ts.path = s->url;
    ts.retry_max_ms = RETRY_MS;
    lab_transport_callbacks_t cb = {ot_on_data, ot_on_state, s};
    return lab_transport_new(lab_drv_loop(s->d), &ts, lab_driver_id(s->d), &cb, &s->t, err, errlen);
}

/* Closes the connection and opens a new one. doubt: the exchange is out of step (a timeout, a
 * broken answer), so the server is asked for /health before the next request. */
static void ot_drop(ot_t *s, bool doubt)
{
    char err[160];
    if (doubt)
        s->linked = false;
    s->open = false;
    httpmsg_msg_reset(&s->rx);
    if (s->t)
        lab_transport_close(s->t);
    s->t = NULL;
    if (ot_transport_new(s, err, sizeof err) == LAB_OK)
        lab_transport_open(s->t);
    else
        log_error(SUB, "instrument=%s %s", lab_driver_id(s->d), err);
}

/* A new connection for the next request, the exchange in step (the server closed). The parser
 * keeps the answer just read. */
static void ot_drop_keep(ot_t *s)
{
    char err[160];
    s->open = false;
    if (s->t)
        lab_transport_close(s->t);
    s->t = NULL;
    if (ot_transport_new(s, err, sizeof err) == LAB_OK)
        lab_transport_open(s->t);
    else
        log_error(SUB, "instrument=%s %s", lab_driver_id(s->d), err);
}

/* The connect sequence: /health on a connection in doubt. */
static void ot_connect(ot_t *s)
{
    s->owner = OWN_CONNECT;
    s->steps[0] = ST_HEALTH;
    s->n_steps = 1;
    s->at = 0;
    s->moved = false;
    s->retried = false;
    ot_send_step(s);
}

static void ot_retry_due(uv_timer_t *t)
{
    ot_t *s = t->data;
    if (!s->linked && s->open && s->owner == OWN_NONE &&
        uv_now(lab_drv_loop(s->d)) >= s->not_before)
        ot_connect(s);
}

/* ---- actions ---- */

static double ot_volume(json_t *jv, bool *same)
{
    *same = true;
    if (!json_is_array(jv))
        return json_number_value(jv);
    double v = json_number_value(json_array_get(jv, 0));
    for (size_t i = 1; i < json_array_size(jv); i++)
        if (json_number_value(json_array_get(jv, i)) != v)
            *same = false;
    return v;
}

static void ot_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                     struct lab_jerrs *errs);

static void ot_refuse_due(uv_timer_t *t)
{
    ot_t *s = t->data;
    json_decref(s->result);
    s->result = NULL;
    lab_drv_done(s->d, &s->refused, NULL);
}

/* Ends the operation invoke is starting, from the loop: nothing was sent, and whatever
 * sequence runs (the connect one) goes on. */
static void ot_refuse(ot_t *s, const lab_drv_error_t *e)
{
    s->refused = *e;
    s->refused.not_started = true;
    uv_timer_start(&s->refuse_timer, ot_refuse_due, 0, 0);
}

static void ot_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    ot_t *s = lab_drv_priv(d);
    lab_drv_error_t e = {0};
    if (strcmp(a->name, "status") == 0) {
        json_t *reag = json_array();
        for (int i = 0; i < s->n_reagents; i++)
            json_array_append_new(reag, json_string(s->reagents[i]));
        lab_drv_done(d, NULL,
                     json_pack("{s:s,s:b,s:f,s:i,s:i,s:o,s:s?}", "run", s->run_id, "tip", s->tip,
                               "held_ul", s->held_ul, "next_tip", s->next_tip + 1, "tips_left",
                               96 - s->next_tip, "reagents", reag, "robot_model",
                               s->health.robot_model[0] ? s->health.robot_model : NULL));
        return;
    }
    json_decref(s->result);
    s->result = json_object();
    s->n_pend = 0;
    s->reagent = -1;
    ot_step_t op;
    if (strcmp(a->name, "health") == 0) {
        s->pend[s->n_pend++] = ST_HEALTH;
        goto run;
    }
    if (!s->run_id[0])
        s->pend[s->n_pend++] = ST_RUN;
    if (!s->run_id[0] || !s->pipette_id[0] || !s->tips_id[0] || !s->plate_id[0] ||
        !s->reservoir_id[0]) {
        s->pend[s->n_pend++] = ST_LOAD_PIPETTE;
        s->pend[s->n_pend++] = ST_LOAD_TIPS;
        s->pend[s->n_pend++] = ST_LOAD_PLATE;
        s->pend[s->n_pend++] = ST_LOAD_RESERVOIR;
    }
    json_t *jw = json_object_get(params, "well");
    if (strcmp(a->name, "home") == 0) {
        op = ST_HOME;
    } else if (strcmp(a->name, "pick_up_tips") == 0) {
        op = ST_PICK_UP;
        int row, col;
        if (s->tip)
            lab_drv_error_set(&e, LAB_ESTATE, NULL, "a tip is on the pipette: drop_tips first");
        if (jw && ot_well(json_string_value(jw), &row, &col))
            s->tip_well = col * 8 + row;
        else
            s->tip_well = s->next_tip;
        if (!e.code && (s->tip_well + s->channels > 96 || (s->channels == 8 && s->tip_well % 8)))
            lab_drv_error_set(&e, LAB_ESTATE, NULL,
                              "the tip rack has no %s left at tip %d: refill it (tips_left %d)",
                              s->channels == 8 ? "full column" : "tip", s->tip_well + 1,
                              96 - s->next_tip);
        json_object_set_new(s->result, "channels", json_integer(s->channels));
    } else if (strcmp(a->name, "drop_tips") == 0) {
        s->pend[s->n_pend++] = ST_TO_TRASH;
        op = ST_DROP;
    } else if (strcmp(a->name, "move_labware") == 0) {
        op = ST_MOVE_LABWARE;
        json_t *jl = json_object_get(params, "labware");
        s->labware = jl && strcmp(json_string_value(jl), "reservoir") == 0 ? "reservoir" : "plate";
        snprintf(s->labware_slot, sizeof s->labware_slot, "%s",
                 json_string_value(json_object_get(params, "slot")));
        json_object_set_new(s->result, "slot", json_string(s->labware_slot));
    } else {
        op = strcmp(a->name, "aspirate") == 0 ? ST_ASPIRATE : ST_DISPENSE;
        bool same;
        s->volume_ul = ot_volume(json_object_get(params, "volume_ul"), &same);
        const char *reagent = json_string_value(json_object_get(params, "reagent"));
        if (reagent)
            s->reagent = ot_reagent(s, reagent);
        if (jw) { /* the robot's well names are upper case: "c12" is C12 */
            snprintf(s->well, sizeof s->well, "%s", json_string_value(jw));
            s->well[0] = (char)toupper((unsigned char)s->well[0]);
        }
        if (!s->tip)
            lab_drv_error_set(&e, LAB_ESTATE, NULL, "no tip on the pipette: pick_up_tips first");
        json_object_set_new(s->result, "volume_ul", json_real(s->volume_ul));
        if (reagent)
            json_object_set_new(s->result, "reagent", json_string(reagent));
        else
            json_object_set_new(s->result, "well", json_string(s->well));
    }
    s->pend[s->n_pend++] = op;
    if (e.code != LAB_OK) {
        ot_refuse(s, &e);
        return;
    }
run:
    s->op_pending = true;
    if (s->linked && s->owner == OWN_NONE)
        ot_start_op(s); /* sent now, or held until the connection is back */
    else if (s->open && s->owner == OWN_NONE)
        ot_connect(s); /* the connect sequence first; the operation follows it */
}

/* Refusals that depend on the configuration, before anything is queued. */
static void ot_check(lab_driver_t *d, const lab_drv_action_t *a, json_t *params,
                     struct lab_jerrs *errs)
{
    ot_t *s = lab_drv_priv(d);
    json_t *jv = json_object_get(params, "volume_ul");
    if (jv) {
        bool same;
        double v = ot_volume(jv, &same);
        if (!same)
            lab_jerrs_add(errs, "/volume_ul",
                          "the channels of one pipette move as one: give equal volumes");
        else if (json_is_array(jv) && (int)json_array_size(jv) != s->channels)
            lab_jerrs_add(errs, "/volume_ul", "one entry per channel: the pipette has %d",
                          s->channels);
        else if (v > s->max_ul)
            lab_jerrs_add(errs, "/volume_ul", "%g uL is more than the %s holds (%g uL)", v,
                          lab_drv_str(d, "pipette"), s->max_ul);
    }
    json_t *jn = json_object_get(params, "channels");
    if (jn && json_integer_value(jn) != s->channels)
        lab_jerrs_add(errs, "/channels", "%d, but the pipette %s has %d",
                      (int)json_integer_value(jn), lab_drv_str(d, "pipette"), s->channels);
    const char *reagent = json_string_value(json_object_get(params, "reagent"));
    if (reagent && ot_reagent(s, reagent) < 0)
        lab_jerrs_add(errs, "/reagent", "'%s' is not in the reservoir (%s)", reagent,
                      lab_drv_str(d, "reagents"));
    const char *well = json_string_value(json_object_get(params, "well"));
    if (well && s->channels == 8 && strcmp(a->name, "pick_up_tips") != 0 &&
        toupper((unsigned char)well[0]) != 'A')
        lab_jerrs_add(errs, "/well", "an 8-channel pipette reaches a column from row A, not %s",
                      well);
    if (well && s->channels == 8 && strcmp(a->name, "pick_up_tips") == 0 &&
        toupper((unsigned char)well[0]) != 'A')
        lab_jerrs_add(errs, "/well", "an 8-channel pipette takes a tip column from row A");
}

static void ot_abort(lab_driver_t *d)
{
    ot_t *s = lab_drv_priv(d);
    s->op_pending = false;
    uv_timer_stop(&s->refuse_timer);
    if (s->owner != OWN_OP)
        return;
    uv_timer_stop(&s->later_timer);
    bool flight = s->in_flight;
    s->owner = OWN_NONE;
    s->in_flight = s->held = false;
    uv_timer_stop(&s->reply_timer);
    json_decref(s->result);
    s->result = NULL;
    if (flight)
        ot_drop(s, true); /* its answer must not meet the next request */
}

/* ---- lifecycle ---- */

/* port = tcp://HOST[:PORT]; the robot-server's port when none is given. */
static int ot_parse_port(const char *port, char *url, size_t ucap, char *host, size_t hcap)
{
    if (strncmp(port, "tcp://", 6) != 0 || !port[6])
        return LAB_EINVAL;
    const char *h = port + 6, *colon = strrchr(h, ':');
    for (const char *p = h; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '/')
            return LAB_EINVAL;
    if (colon && h[0] != '[') {
        snprintf(url, ucap, "%s", port);
        snprintf(host, hcap, "%s", h);
    } else {
        snprintf(url, ucap, "tcp://%s:%d", h, OT_DEFAULT_PORT);
        snprintf(host, hcap, "%s:%d", h, OT_DEFAULT_PORT);
    }
    return LAB_OK;
}

static int ot_check_conf(const lab_drv_conf_t *conf, const char **key, char *err, size_t errlen)
{
    char url[300], host[300];
    const char *port = lab_drv_conf_str(conf, "port");
    if (port && (strlen(port) > 250 || ot_parse_port(port, url, sizeof url, host, sizeof host))) {
        *key = "port";
        snprintf(err, errlen, "'%s' is not tcp://HOST[:PORT]", port);
        return LAB_EINVAL;
    }
    const char *pip = lab_drv_conf_str(conf, "pipette");
    if (pip && (pip[0] != 'p' || atoi(pip + 1) <= 0 || !strchr(pip, '_'))) {
        *key = "pipette";
        snprintf(err, errlen, "'%s' is not a pipette name such as p300_single_gen2", pip);
        return LAB_EINVAL;
    }
    return LAB_OK;
}

static int ot_open(lab_driver_t *d, char *err, size_t errlen)
{
    ot_t *s = lab_drv_priv(d);
    s->d = d;
    if (strlen(lab_drv_str(d, "port")) > 250 ||
        ot_parse_port(lab_drv_str(d, "port"), s->url, sizeof s->url, s->host, sizeof s->host)) {
        snprintf(err, errlen, "port '%s' is not tcp://HOST[:PORT]", lab_drv_str(d, "port"));
        return LAB_EINVAL;
    }
    const char *pip = lab_drv_str(d, "pipette");
    s->max_ul = atoi(pip + 1);
    s->channels = strstr(pip, "_multi") ? 8 : strstr(pip, "_96") ? 96 : 1;
    if (s->max_ul <= 0 || s->channels == 96) {
        snprintf(err, errlen, "pipette '%s': a pNNN_single or pNNN_multi pipette", pip);
        return LAB_EINVAL;
    }
    s->asp_rate = s->disp_rate = 0;
    for (size_t i = 0; i < sizeof flow_rates / sizeof flow_rates[0]; i++)
        if (strcmp(flow_rates[i].name, pip) == 0)
            s->asp_rate = flow_rates[i].asp, s->disp_rate = flow_rates[i].disp;
    if (lab_drv_has(d, "aspirate_flow_ul_s"))
        s->asp_rate = lab_drv_double(d, "aspirate_flow_ul_s");
    if (lab_drv_has(d, "dispense_flow_ul_s"))
        s->disp_rate = lab_drv_double(d, "dispense_flow_ul_s");
    if (s->asp_rate <= 0 || s->disp_rate <= 0) {
        snprintf(err, errlen,
                 "pipette '%s' has no known flow rates: give aspirate_flow_ul_s and "
                 "dispense_flow_ul_s",
                 pip);
        return LAB_EINVAL;
    }
    const char *keys[] = {"tip_rack",      "plate",      "reservoir",     "trash",
                          "tip_rack_slot", "plate_slot", "reservoir_slot"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = lab_drv_str(d, keys[i]);
        bool ok = *v && strlen(v) < 64;
        for (const char *p = v; *p; p++)
            ok = ok && (isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-');
        if (!ok) {
            snprintf(err, errlen, "%s '%s': letters, digits, '_', '.', '-' (at most 63)", keys[i],
                     v);
            return LAB_EINVAL;
        }
    }
    char names[512];
    snprintf(names, sizeof names, "%s", lab_drv_str(d, "reagents"));
    char *save = NULL;
    for (char *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*t))
            t++;
        size_t n = strlen(t);
        while (n && isspace((unsigned char)t[n - 1]))
            t[--n] = '\0';
        if (!n || n > 31 || s->n_reagents == REAGENTS_MAX || ot_reagent(s, t) >= 0) {
            snprintf(err, errlen, "reagents: '%s' is empty, too long, repeated or one too many", t);
            return LAB_EINVAL;
        }
        snprintf(s->reagents[s->n_reagents++], sizeof s->reagents[0], "%s", t);
    }
    s->move_ms = (long)lab_drv_lab_ms(d, lab_drv_double(d, "move_timeout_s"));
    s->reply_ms = (unsigned)(s->move_ms + lab_drv_int(d, "timeout_ms"));
    httpmsg_msg_init(&s->rx, false, BODY_MAX);
    lab_drv_set_info(d, "pipette", json_string(pip));
    lab_drv_set_info(d, "channels", json_integer(s->channels));
    uv_timer_t *timers[] = {&s->reply_timer, &s->later_timer, &s->retry_timer, &s->refuse_timer};
    for (size_t i = 0; i < sizeof timers / sizeof timers[0]; i++) {
        uv_timer_init(lab_drv_loop(d), timers[i]);
        timers[i]->data = s;
        s->timers_open++;
    }
    return ot_transport_new(s, err, errlen);
}

static void ot_start(lab_driver_t *d)
{
    ot_t *s = lab_drv_priv(d);
    lab_drv_set_state(d, LAB_INST_OFFLINE, NULL);
    if (s->t)
        lab_transport_open(s->t);
    uv_timer_start(&s->retry_timer, ot_retry_due, RETRY_MS, RETRY_MS);
}

static void ot_stop(lab_driver_t *d)
{
    ot_t *s = lab_drv_priv(d);
    if (!s->timers_open)
        return;
    uv_timer_stop(&s->reply_timer);
    uv_timer_stop(&s->later_timer);
    uv_timer_stop(&s->retry_timer);
    uv_timer_stop(&s->refuse_timer);
    s->owner = OWN_NONE;
    s->in_flight = s->held = s->op_pending = false;
    s->linked = s->open = false;
    if (s->t)
        lab_transport_close(s->t);
    s->t = NULL;
    json_decref(s->result);
    s->result = NULL;
}

static void ot_timer_closed(uv_handle_t *h)
{
    ot_t *s = h->data;
    if (--s->timers_open == 0) {
        httpmsg_msg_free(&s->rx);
        lab_drv_closed(s->d);
    }
}

static void ot_close(lab_driver_t *d)
{
    ot_t *s = lab_drv_priv(d);
    ot_stop(d);
    if (!s->timers_open) {
        httpmsg_msg_free(&s->rx);
        lab_drv_closed(d);
        return;
    }
    uv_close((uv_handle_t *)&s->reply_timer, ot_timer_closed);
    uv_close((uv_handle_t *)&s->later_timer, ot_timer_closed);
    uv_close((uv_handle_t *)&s->retry_timer, ot_timer_closed);
    uv_close((uv_handle_t *)&s->refuse_timer, ot_timer_closed);
}

/* What its actions do in a workflow step (the scheduler asks by role). moveLabware moves
 * labware between slots of one deck, not a plate between instruments: no MOVE_PLATE. */
static const lab_drv_role_action_t ot_roles[] = {
    {LAB_DRV_ROLE_PICK_UP_TIPS, "pick_up_tips"},
    {LAB_DRV_ROLE_DROP_TIPS, "drop_tips"},
    {LAB_DRV_ROLE_ASPIRATE, "aspirate"},
    {LAB_DRV_ROLE_DISPENSE, "dispense"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_opentrons = {
    .name = "opentrons",
    .kind = "liquid_handler",
    .model = "Opentrons OT-2 / Flex",
    .keys = ot_keys,
    .actions = ot_actions,
    .roles = ot_roles,
    .poll_action = "health",
    .poll_default_s = 10,
    .priv_size = sizeof(ot_t),
    .open = ot_open,
    .start = ot_start,
    .stop = ot_stop,
    .close = ot_close,
    .invoke = ot_invoke,
    .abort = ot_abort,
    .check = ot_check,
    .check_conf = ot_check_conf,
};
