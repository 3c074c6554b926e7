/* Simulated Opentrons robot-server (OT-2, or Flex with sim_model = flex) on a TCP port: HTTP/1.1
 * requests read with protocols/httpmsg.h, keep-alive, one answer per request in order. It serves
 * the subset labloop's driver uses, as the robot-server does (protocols/opentrons.h cites the
 * sources): GET /health, POST /runs (the new run is the current one; an earlier one stops being
 * current, as robot_server/runs/run_data_manager.py create() clears an idle run; a run played
 * from the app, which would answer 409 RunAlreadyActive, is not simulated), POST
 * /runs/{id}/commands (404 RunNotFound for an unknown run, 409 RunStopped for one that is not
 * current, 422 for a body that is not a command or a request without the Opentrons-Version field)
 * carrying home, loadPipette, loadLabware, pickUpTip, aspirate, dispense,
 * moveToAddressableAreaForDropTip, dropTipInPlace and moveLabware.
 *
 * The deck: a pipette's tip and the volume it holds; tip racks whose tips are used once
 * (a second pick-up from the same well fails with tipPhysicallyMissing, as pick_up_tip.py
 * defines it); a reservoir whose trough A<k> holds the k-th reagent of sim_reagents; the plate,
 * which is the world's plate sim_plate ("deck:ID"), into whose wells dispenses go by reagent.
 * Aspirating or dispensing without a tip fails with TipNotAttachedError (errorCode 3005), as the
 * robot-server's own test records it. A command takes sim_step_seconds lab seconds (loads and
 * home none); when the request's timeout is shorter, the answer comes at the timeout with the
 * command still "running", as waitUntilComplete does. Faults: error makes the next command fail
 * with errorType overpressure (errorCode 3006, or sim_error_code); garbage puts bytes before the
 * next answer; timeout and disconnect are the link's (sim.c). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/httpmsg.h"
#include "protocols/opentrons.h"
#include "sim/device.h"
#include "sim/log.h"

#define OT_PIPETTES 2
#define OT_LABWARE 16
#define OT_QUEUE 8

typedef struct ot_labware {
    char id[24];
    char load_name[64];
    char slot[8];
    int kind; /* 0 plate, 1 tip rack, 2 reservoir */
    unsigned char used[96];
} ot_labware_t;

struct sim_ot {
    httpmsg_msg_t req;
    int runs;    /* runs created: run-1, run-2, ... */
    int current; /* the current run's number; 0: none */
    int n_pip, n_lw, n_cmd;
    struct {
        char id[24], name[40];
        double max_ul, held_ul;
        int tip, reagent;
    } pip[OT_PIPETTES];
    ot_labware_t lw[OT_LABWARE];
    struct {
        char *text;
        size_t len;
        uint64_t due_ms;
    } q[OT_QUEUE];
    int nq;
};

static void ot_flush(uv_timer_t *t);

static void ot_queue(sim_inst_t *in, char *text, size_t len, uint64_t delay_ms)
{
    struct sim_ot *o = in->ot;
    if (o->nq == OT_QUEUE) {
        sim_warn("opentrons", "%s: answer queue full; answer dropped", in->cfg->id);
        free(text);
        return;
    }
    uint64_t now = uv_now(in->sim->loop);
    uint64_t due = now + delay_ms;
    if (o->nq && o->q[o->nq - 1].due_ms > due)
        due = o->q[o->nq - 1].due_ms; /* answers go out in the order of their requests */
    o->q[o->nq].text = text;
    o->q[o->nq].len = len;
    o->q[o->nq].due_ms = due;
    o->nq++;
    if (o->nq == 1)
        uv_timer_start(&in->step, ot_flush, due - now, 0);
}

static void ot_flush(uv_timer_t *t)
{
    sim_inst_t *in = t->data;
    struct sim_ot *o = in->ot;
    uint64_t now = uv_now(in->sim->loop);
    while (o->nq && o->q[0].due_ms <= now) {
        if (in->sticky != SIM_FAULT_TIMEOUT)
            sim_inst_send(in, o->q[0].text, o->q[0].len);
        free(o->q[0].text);
        memmove(&o->q[0], &o->q[1], (size_t)(o->nq - 1) * sizeof o->q[0]);
        o->nq--;
    }
    if (o->nq)
        uv_timer_start(&in->step, ot_flush, o->q[0].due_ms - now, 0);
}

/* An answer: status, a JSON document (stolen), after delay_ms. */
static void ot_answer(sim_inst_t *in, int status, const char *reason, json_t *doc,
                      uint64_t delay_ms)
{
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    size_t bl = body ? strlen(body) : 0, cap = bl + 512;
    char *out = malloc(cap);
    httpmsg_kv_t fields[] = {{OT_VERSION_FIELD, OT_API_VERSION}, {"Opentrons-Min-Version", "2"}};
    int n = out ? httpmsg_response(out, cap, status, reason, fields, 2, body ? body : "{}",
                                   body ? bl : 2, false)
                : LAB_ENOMEM;
    free(body);
    if (n < 0) {
        sim_error("opentrons", "%s: cannot encode an answer: %s", in->cfg->id, lab_strerror(n));
        free(out);
        return;
    }
    ot_queue(in, out, (size_t)n, delay_ms);
}

static void ot_error(sim_inst_t *in, int status, const char *reason, const char *id,
                     const char *title, const char *detail)
{
    ot_answer(in, status, reason,
              json_pack("{s:[{s:s,s:s,s:s,s:s}]}", "errors", "id", id, "title", title, "detail",
                        detail, "errorCode", "4000"),
              0);
}

static const char *model_name(sim_inst_t *in)
{
    return in->cfg->flex ? ot_model_name(OT_MODEL_FLEX) : ot_model_name(OT_MODEL_OT2);
}

/* The fields of robot-server/tests/integration/fixtures.py check_health_response. */
static void ot_health(sim_inst_t *in)
{
    json_t *doc = json_pack(
        "{s:s,s:s,s:s,s:s,s:[s],s:s,s:s,s:[i,i],s:[i,i],s:{s:s,s:s},s:s}", "name", in->cfg->id,
        "api_version", "8.0.0", "fw_version", "labloop-sim", "board_revision", "2.1", "logs",
        "/logs/api.log", "system_version", "labloop-sim", "robot_model", model_name(in),
        "minimum_protocol_api_version", 2, 0, "maximum_protocol_api_version", 2, 20, "links",
        "apiLog", "/logs/api.log", "apiSpec", "/openapi.json", "robot_serial", "simulator");
    ot_answer(in, 200, "OK", doc, 0);
}

static void ot_new_run(sim_inst_t *in)
{
    struct sim_ot *o = in->ot;
    char id[32];
    o->current = ++o->runs;
    o->n_pip = o->n_lw = 0; /* a run's pipettes and labware are its own */
    snprintf(id, sizeof id, "run-%d", o->current);
    sim_info("opentrons", "%s: run %s created", in->cfg->id, id);
    ot_answer(in, 201, "Created",
              json_pack("{s:{s:s,s:s,s:s,s:b,s:[],s:[],s:[],s:[]}}", "data", "id", id, "createdAt",
                        "2026-01-01T00:00:00.000000+00:00", "status", "idle", "current", 1,
                        "actions", "errors", "pipettes", "labware"),
              0);
}

static int find_pip(struct sim_ot *o, const char *id)
{
    for (int i = 0; id && i < o->n_pip; i++)
        if (strcmp(o->pip[i].id, id) == 0)
            return i;
    return -1;
}

static ot_labware_t *find_lw(struct sim_ot *o, const char *id)
{
    for (int i = 0; id && i < o->n_lw; i++)
        if (strcmp(o->lw[i].id, id) == 0)
            return &o->lw[i];
    return NULL;
}

static bool well_of(const char *w, int *row, int *col)
{
    if (!w || w[0] < 'A' || w[0] > 'P')
        return false;
    char *end;
    long c = strtol(w + 1, &end, 10);
    *row = w[0] - 'A';
    *col = (int)c - 1;
    return *end == '\0' && c >= 1 && c <= 24;
}

/* The plate on the deck: the configured sim_plate, placed at "deck:ID" when it is nowhere. */
static sim_plate_t *deck_plate(sim_inst_t *in)
{
    sim_plate_t *p = sim_world_plate(&in->sim->world, in->cfg->plate);
    if (p && !p->position[0])
        snprintf(p->position, sizeof p->position, "deck:%s", in->cfg->id);
    return p;
}

static const char *reagent_name(sim_inst_t *in, int k, char *buf, size_t cap)
{
    char names[256], *save = NULL;
    snprintf(names, sizeof names, "%s", in->cfg->reagents);
    char *t = strtok_r(names, ",", &save);
    for (int i = 0; i < k && t; i++)
        t = strtok_r(NULL, ",", &save);
    snprintf(buf, cap, "%s", t ? t : "unknown");
    return buf;
}

typedef struct failure {
    const char *type, *code;
    char detail[160];
} failure_t;

/* Carries out one command; false with *f filled when it fails. result gets its result. */
static bool ot_exec(sim_inst_t *in, const char *type, json_t *p, json_t *result, failure_t *f)
{
    struct sim_ot *o = in->ot;
    const char *pid = json_string_value(json_object_get(p, "pipetteId"));
    const char *lid = json_string_value(json_object_get(p, "labwareId"));
    const char *wname = json_string_value(json_object_get(p, "wellName"));
    int pi = find_pip(o, pid);
    ot_labware_t *lw = find_lw(o, lid);
    int row = 0, col = 0;
    f->type = NULL;
    f->code = "4000";
    f->detail[0] = '\0';
    if (strcmp(type, "home") == 0)
        return true;
    if (strcmp(type, "loadPipette") == 0) {
        const char *name = json_string_value(json_object_get(p, "pipetteName"));
        if (!name || name[0] != 'p' || atoi(name + 1) <= 0 || o->n_pip == OT_PIPETTES) {
            f->type = "InvalidSpecificationForRobotTypeError";
            snprintf(f->detail, sizeof f->detail, "no pipette %s", name ? name : "(none)");
            return false;
        }
        snprintf(o->pip[o->n_pip].id, sizeof o->pip[0].id, "pipette-%d", o->n_pip + 1);
        snprintf(o->pip[o->n_pip].name, sizeof o->pip[0].name, "%s", name);
        o->pip[o->n_pip].max_ul = atoi(name + 1);
        o->pip[o->n_pip].tip = 0;
        o->pip[o->n_pip].held_ul = 0;
        json_object_set_new(result, "pipetteId", json_string(o->pip[o->n_pip].id));
        o->n_pip++;
        return true;
    }
    if (strcmp(type, "loadLabware") == 0) {
        const char *name = json_string_value(json_object_get(p, "loadName"));
        const char *slot =
            json_string_value(json_object_get(json_object_get(p, "location"), "slotName"));
        if (!name || !slot || o->n_lw == OT_LABWARE) {
            f->type = "LabwareDefinitionDoesNotExistError";
            snprintf(f->detail, sizeof f->detail, "no labware %.60s", name ? name : "(none)");
            return false;
        }
        ot_labware_t *l = &o->lw[o->n_lw];
        memset(l, 0, sizeof *l);
        snprintf(l->id, sizeof l->id, "labware-%d", o->n_lw + 1);
        snprintf(l->load_name, sizeof l->load_name, "%s", name);
        snprintf(l->slot, sizeof l->slot, "%s", slot);
        l->kind = strstr(name, "tiprack") ? 1 : strstr(name, "reservoir") ? 2 : 0;
        o->n_lw++;
        json_object_set_new(result, "labwareId", json_string(l->id));
        json_object_set_new(result, "definition", json_pack("{s:s}", "parameters", name));
        return true;
    }
    if (strcmp(type, "moveLabware") == 0) {
        const char *slot =
            json_string_value(json_object_get(json_object_get(p, "newLocation"), "slotName"));
        if (!lw || !slot) {
            f->type = "LabwareNotLoadedError";
            snprintf(f->detail, sizeof f->detail, "Labware %.40s not found.", lid ? lid : "");
            return false;
        }
        snprintf(lw->slot, sizeof lw->slot, "%.7s", slot);
        return true;
    }
    if (pi < 0) {
        f->type = "PipetteNotLoadedError";
        snprintf(f->detail, sizeof f->detail, "Pipette %.40s not found.", pid ? pid : "");
        return false;
    }
    if (strcmp(type, "moveToAddressableAreaForDropTip") == 0)
        return true;
    if (strcmp(type, "dropTipInPlace") == 0) {
        o->pip[pi].tip = 0;
        o->pip[pi].held_ul = 0;
        return true;
    }
    if (!lw || !well_of(wname, &row, &col)) {
        f->type = lw ? "WellDoesNotExistError" : "LabwareNotLoadedError";
        snprintf(f->detail, sizeof f->detail, "%.40s / %.8s not found.", lid ? lid : "",
                 wname ? wname : "");
        return false;
    }
    if (strcmp(type, "pickUpTip") == 0) {
        int k = col * 8 + row;
        if (o->pip[pi].tip) {
            f->type = "TipAttachedError";
            snprintf(f->detail, sizeof f->detail, "Pipette should not have a tip attached.");
            return false;
        }
        if (lw->kind != 1 || k >= 96 || lw->used[k]) {
            f->type = "tipPhysicallyMissing";
            f->code = "3003";
            snprintf(f->detail, sizeof f->detail, "No tip detected.");
            return false;
        }
        lw->used[k] = 1;
        o->pip[pi].tip = 1;
        o->pip[pi].held_ul = 0;
        return true;
    }
    double vol = json_number_value(json_object_get(p, "volume"));
    bool asp = strcmp(type, "aspirate") == 0;
    if (!o->pip[pi].tip) {
        f->type = "TipNotAttachedError";
        f->code = "3005";
        snprintf(f->detail, sizeof f->detail, "Pipette should have a tip attached, but does not.");
        return false;
    }
    if (!(vol > 0) || (asp && o->pip[pi].held_ul + vol > o->pip[pi].max_ul + 1e-9) ||
        (!asp && vol > o->pip[pi].held_ul + 1e-9)) {
        f->type = asp ? "InvalidAspirateVolumeError" : "InvalidDispenseVolumeError";
        snprintf(f->detail, sizeof f->detail, "%g uL with %g uL held in a %g uL pipette", vol,
                 o->pip[pi].held_ul, o->pip[pi].max_ul);
        return false;
    }
    sim_world_t *w = &in->sim->world;
    char name[64];
    if (asp) {
        o->pip[pi].held_ul += vol;
        o->pip[pi].reagent =
            lw->kind == 2 ? sim_world_reagent(w, reagent_name(in, col, name, sizeof name)) : -1;
    } else {
        o->pip[pi].held_ul -= vol;
        sim_plate_t *pl = lw->kind == 0 ? deck_plate(in) : NULL;
        if (pl && o->pip[pi].reagent >= 0) {
            sim_world_dispense(w, pl, row, col, o->pip[pi].reagent, vol);
            sim_info("opentrons", "%s: dispense %.1f uL %s into %s %s", in->cfg->id, vol,
                     w->reagents[o->pip[pi].reagent], pl->barcode, wname);
        }
    }
    json_object_set_new(result, "volume", json_real(vol));
    return true;
}

static void ot_command(sim_inst_t *in, int run, const char *body, size_t len, long timeout_ms)
{
    struct sim_ot *o = in->ot;
    char type[64], why[160], id[32];
    json_t *params = NULL;
    if (ot_command_request_parse(body, len, type, sizeof type, &params, why, sizeof why)) {
        ot_error(in, 422, "Unprocessable Entity", "InvalidRequest", "Invalid Request", why);
        return;
    }
    static const char *const known[] = {"home",
                                        "loadPipette",
                                        "loadLabware",
                                        "pickUpTip",
                                        "aspirate",
                                        "dispense",
                                        "moveToAddressableAreaForDropTip",
                                        "dropTipInPlace",
                                        "moveLabware"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok |= strcmp(type, known[i]) == 0;
    if (!ok) {
        json_decref(params);
        ot_error(in, 422, "Unprocessable Entity", "InvalidRequest", "Invalid Request",
                 "commandType is not one this robot knows");
        return;
    }
    sim_inst_command(in);
    json_t *result = json_object();
    failure_t f;
    bool done;
    if (in->error_next) {
        in->error_next = 0;
        done = false;
        f.type = "overpressure";
        f.code = "3006";
        snprintf(f.detail, sizeof f.detail, "overpressure detected");
    } else {
        done = ot_exec(in, type, params, result, &f);
    }
    char code[16];
    if (!done && strcmp(f.type, "overpressure") == 0 && in->cfg->error_code >= 0) {
        snprintf(code, sizeof code, "%d", in->cfg->error_code);
        f.code = code;
    }
    snprintf(id, sizeof id, "cmd-%d", ++o->n_cmd);
    bool moves = strcmp(type, "loadPipette") && strcmp(type, "loadLabware") &&
                 strcmp(type, "home") && strcmp(type, "moveToAddressableAreaForDropTip");
    uint64_t takes = moves ? (uint64_t)(in->cfg->step_s * 1000 / in->sim->cfg.time_scale) : 0;
    bool late = timeout_ms > 0 && takes > (uint64_t)timeout_ms;
    const char *status = late ? "running" : done ? "succeeded" : "failed";
    char run_id[32];
    snprintf(run_id, sizeof run_id, "run-%d", run);
    json_t *data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:O,s:s}", "id", id, "key", id, "commandType",
                             type, "createdAt", "2026-01-01T00:00:00.000000+00:00", "status",
                             status, "params", params, "intent", "setup");
    if (!late && done)
        json_object_set(data, "result", result);
    if (!late && !done)
        json_object_set_new(data, "error",
                            json_pack("{s:s,s:s,s:s,s:b,s:s,s:{},s:[],s:s}", "id", "error-1",
                                      "createdAt", "2026-01-01T00:00:00.000000+00:00", "errorType",
                                      f.type, "isDefined", 0, "detail", f.detail, "errorInfo",
                                      "wrappedErrors", "errorCode", f.code));
    json_decref(result);
    json_decref(params);
    ot_answer(in, 201, "Created", json_pack("{s:o}", "data", data),
              late ? (uint64_t)timeout_ms : takes);
}

/* /runs/ID/commands?...: the run's number and the timeout; false when the path is not that. */
static bool command_target(const char *target, int *run, long *timeout_ms)
{
    int n = 0;
    *timeout_ms = -1;
    if (sscanf(target, "/runs/run-%d/commands%n", run, &n) != 1 || n == 0)
        return false;
    const char *q = target + n;
    if (*q == '\0')
        return true;
    if (*q != '?')
        return false;
    const char *t = strstr(q, "timeout=");
    if (t)
        *timeout_ms = strtol(t + 8, NULL, 10);
    return true;
}

static void ot_request(sim_inst_t *in)
{
    struct sim_ot *o = in->ot;
    httpmsg_msg_t *m = &o->req;
    int run;
    long timeout_ms;
    /* Every route wants the field (robot_server/router.py:41-61), "*" or a version of at
     * least 2 (versioning.py:56-91). */
    const char *version = httpmsg_msg_field(m, OT_VERSION_FIELD);
    if (!version) {
        ot_error(in, 422, "Unprocessable Entity", "InvalidRequest", "Invalid Request",
                 "field required: header Opentrons-Version");
        return;
    }
    if (strcmp(version, "*") != 0 && atoi(version) < 2) {
        ot_error(in, 400, "Bad Request", "OutdatedAPIVersion",
                 "Requested HTTP API version no longer supported",
                 "'Opentrons-Version' must be at least '2'");
        return;
    }
    if (strcmp(m->method, "GET") == 0 && strcmp(m->target, "/health") == 0) {
        ot_health(in);
    } else if (strcmp(m->method, "POST") == 0 && strcmp(m->target, "/runs") == 0) {
        ot_new_run(in);
    } else if (strcmp(m->method, "POST") == 0 && command_target(m->target, &run, &timeout_ms)) {
        char detail[96];
        if (run < 1 || run > o->runs) {
            snprintf(detail, sizeof detail, "Run run-%d not found.", run);
            ot_error(in, 404, "Not Found", "RunNotFound", "Run Not Found", detail);
        } else if (run != o->current) {
            snprintf(detail, sizeof detail, "Run run-%d is not the current run", run);
            ot_error(in, 409, "Conflict", "RunStopped", "Run Stopped", detail);
        } else {
            ot_command(in, run, m->body, m->body_len, timeout_ms);
        }
    } else {
        ot_error(in, 404, "Not Found", "RouteNotFound", "Route Not Found", "no such route");
    }
}

void sim_opentrons_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    struct sim_ot *o = in->ot;
    while (n) {
        size_t used = 0;
        int rc = httpmsg_msg_feed(&o->req, data, n, &used);
        if (rc == LAB_EAGAIN)
            return;
        if (rc < 0) {
            /* A request the server cannot read: 400, and the connection is no use any more. */
            sim_warn("opentrons", "%s: bad request: %s", in->cfg->id, o->req.why);
            ot_error(in, 400, "Bad Request", "BadRequest", "Bad Request", o->req.why);
            httpmsg_msg_reset(&o->req);
            return;
        }
        ot_request(in);
        httpmsg_msg_reset(&o->req);
        data += used;
        n -= used;
    }
}

/* A new client: a new HTTP connection, no half request, no answer owed. */
void sim_opentrons_link_open(sim_inst_t *in)
{
    struct sim_ot *o = in->ot;
    httpmsg_msg_reset(&o->req);
    for (int i = 0; i < o->nq; i++)
        free(o->q[i].text);
    o->nq = 0;
}

void sim_opentrons_init(sim_inst_t *in)
{
    in->ot = calloc(1, sizeof *in->ot);
    if (!in->ot)
        abort();
    httpmsg_msg_init(&in->ot->req, true, 1u << 16);
}

void sim_opentrons_free(sim_inst_t *in)
{
    if (!in->ot)
        return;
    sim_opentrons_link_open(in);
    httpmsg_msg_free(&in->ot->req);
    free(in->ot);
    in->ot = NULL;
}
