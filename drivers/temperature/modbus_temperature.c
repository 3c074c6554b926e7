/* modbus-temperature: an Omega CN7500 or a Eurotherm 3200 temperature controller over Modbus
 * (TCP, or RTU on a serial line), read and written through the register maps of
 * protocols/modbus_maps.h. The bus (drivers/transport/modbus_bus.h) owns libmodbus on its worker
 * thread; this file owns the steps of each operation, run one request at a time on the loop
 * thread. The instrument is idle once the bus is connected and the unit answered one read (a
 * connection to a gateway whose unit is silent is not an instrument that works). */
#include "drivers/driver.h"
#include "drivers/transport/modbus_bus.h"

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "protocols/modbus_maps.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define SUB "modbus-temp"
#define PROBE_RETRY_MS 2000

/* What the maps call the same three things, and each model's documented serial parity: the
 * CN7500 speaks RTU with 8 data bits and even parity (its 7E1 factory setting is Modbus ASCII,
 * which libmodbus does not speak); the Eurotherm 3200 leaves the factory at 9600 8N1. */
typedef struct mt_model {
    const char *key; /* map = value */
    modbus_device_t dev;
    const char *model;
    const char *pv, *sv, *run;
    const char *out; /* the output in %, NULL when the map has none that is known to be % */
    lab_parity_t parity;
} mt_model_t;

static const mt_model_t mt_models[] = {
    {"omega-cn7500", MODBUS_DEV_CN7500, "Omega CN7500", "pv", "sv", "run", "output1",
     LAB_PARITY_EVEN},
    /* The 3200 has no run/stop of its own; program_status is the map's equivalent (reset stops
     * the regulation, run resumes it), and the simulator models it that way. */
    {"eurotherm-3200", MODBUS_DEV_EUROTHERM3200, "Eurotherm 3200", "pv", "target_setpoint",
     "program_status", NULL, LAB_PARITY_NONE},
};

/* The steps of an operation, in the order they run. */
typedef enum mt_step {
    MT_READ_PV,
    MT_READ_SV,
    MT_READ_RUN,
    MT_READ_OUT,
    MT_WRITE_SV,
    MT_WRITE_RUN,
    MT_DONE,
} mt_step_t;

typedef struct mt {
    lab_driver_t *d;
    const mt_model_t *model;
    const modbus_reg_t *pv, *sv, *run, *out;
    lab_modbus_bus_t *bus;
    int unit, decimals;
    unsigned timeout_ms;

    /* Bumped whenever an operation starts or is forgotten: an answer carries the value it was
     * asked under, and one that no longer matches is dropped. */
    uint64_t seq;
    const mt_step_t *steps; /* the running operation's, MT_DONE-terminated */
    size_t at;
    json_t *result;
    double want;              /* the value being written */
    lab_drv_error_t deferred; /* refused inside invoke, ended from the defer timer */

    bool linked;  /* the bus reports a connection */
    bool probing; /* the first read after connecting is under way */
    uv_timer_t probe_timer, defer_timer;
    int handles;
    bool closing;
} mt_t;

typedef struct mt_req {
    mt_t *m;
    uint64_t seq;
    bool probe;
} mt_req_t;

static const mt_step_t steps_status[] = {MT_READ_PV, MT_READ_SV, MT_READ_RUN, MT_READ_OUT, MT_DONE};
static const mt_step_t steps_set[] = {MT_WRITE_SV, MT_DONE};
static const mt_step_t steps_run[] = {MT_WRITE_RUN, MT_DONE};

static const lab_drv_action_t mt_actions[] = {
    {"status", NULL, 10, 0,
     "temperature_c (process value), setpoint_c (set value), running (0/1), output1_pct "
     "(CN7500: output 1 in %, one decimal)"},
    /* The schema bounds are the plausible ones; the register's own range (which depends on the
     * configured decimals) is checked by the map's conversion before anything is sent. */
    {"set_temperature",
     "{\"type\":\"object\",\"required\":[\"temperature_c\"],\"additionalProperties\":false,"
     "\"properties\":{\"temperature_c\":{\"type\":\"number\",\"minimum\":-273.15,"
     "\"maximum\":10000}}}",
     10, LAB_DRV_ACT_NOT_IN_FAULT,
     "write the set point (SV) in degC; refused in fault (a status read that goes through "
     "clears it)"},
    {"run", NULL, 10, 0, "start regulating (CN7500 run bit; Eurotherm program status run)"},
    {"stop", NULL, 10, 0, "stop regulating (CN7500 run bit; Eurotherm program status reset)"},
    {NULL, NULL, 0, 0, NULL},
};

static const lab_drv_key_t mt_keys[] = {
    {"modbus", LAB_DRV_KEY_STR, NULL, 0, 0, NULL, LAB_DRV_KEY_REQUIRED,
     "tcp://host:port (Modbus TCP, or a gateway) or rtu:/dev/ttyX"},
    {"map", LAB_DRV_KEY_ENUM, NULL, 0, 0, "omega-cn7500|eurotherm-3200", LAB_DRV_KEY_REQUIRED,
     "the controller's register map"},
    {"unit", LAB_DRV_KEY_INT, "1", 1, 247, NULL, 0, "Modbus unit (slave) address"},
    {"decimals", LAB_DRV_KEY_INT, "1", 0, 4, NULL, 0,
     "Eurotherm: decimal places configured on the instrument (scaled registers)"},
    {"timeout_ms", LAB_DRV_KEY_INT, "1000", 50, 60000, NULL, 0,
     "real milliseconds a reply may take"},
    {"baud", LAB_DRV_KEY_INT, "9600", 300, 115200, NULL, 0, "RTU only: bits per second"},
    {"data_bits", LAB_DRV_KEY_INT, "8", 7, 8, NULL, 0, "RTU only: data bits"},
    {"parity", LAB_DRV_KEY_ENUM, NULL, 0, 0, "none|even|odd", 0,
     "RTU only: parity (default: even for the CN7500, none for the Eurotherm 3200)"},
    {"stop_bits", LAB_DRV_KEY_INT, "1", 1, 2, NULL, 0, "RTU only: stop bits"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

/* ---- operations ---- */

static void mt_submit(mt_t *m, lab_modbus_op_t op, const modbus_reg_t *r, const uint16_t *w,
                      bool probe);

static void mt_end(mt_t *m, const lab_drv_error_t *err)
{
    json_t *result = m->result;
    m->result = NULL;
    m->steps = NULL;
    m->seq++;
    lab_drv_done(m->d, err, err ? NULL : result);
    if (err)
        json_decref(result);
}

static void mt_fail(mt_t *m, int code, const char *fmt, const char *what)
{
    lab_drv_error_t e;
    lab_drv_error_set(&e, code, NULL, "%s: %s", fmt, what);
    mt_end(m, &e);
}

/* The bus operation for the function code the map gives an entry. */
static lab_modbus_op_t mt_read_op(const modbus_reg_t *r)
{
    switch (modbus_reg_read_function(r)) {
    case 1:
        return LAB_MODBUS_READ_COILS;
    case 2:
        return LAB_MODBUS_READ_DISCRETE;
    default:
        return LAB_MODBUS_READ_HOLDING;
    }
}

static lab_modbus_op_t mt_write_op(const modbus_reg_t *r)
{
    switch (modbus_reg_write_function(r)) {
    case 5:
        return LAB_MODBUS_WRITE_COIL;
    case 16:
        return LAB_MODBUS_WRITE_REGISTERS; /* one register */
    default:
        return LAB_MODBUS_WRITE_REGISTER;
    }
}

static void mt_step(mt_t *m)
{
    mt_step_t s = m->steps[m->at];
    modbus_access_t acc;
    int rc;
    switch (s) {
    case MT_READ_PV:
        mt_submit(m, mt_read_op(m->pv), m->pv, NULL, false);
        return;
    case MT_READ_SV:
        mt_submit(m, mt_read_op(m->sv), m->sv, NULL, false);
        return;
    case MT_READ_RUN:
        mt_submit(m, mt_read_op(m->run), m->run, NULL, false);
        return;
    case MT_READ_OUT:
        if (!m->out) { /* a map without a known output in % */
            m->at++;
            mt_step(m);
            return;
        }
        mt_submit(m, mt_read_op(m->out), m->out, NULL, false);
        return;
    case MT_WRITE_SV:
        rc = modbus_reg_encode(m->sv, m->want, m->decimals, 0, &acc);
        if (rc) { /* checked in invoke already; a second look costs nothing */
            mt_fail(m, LAB_EINVAL, "set point out of range", lab_strerror(rc));
            return;
        }
        mt_submit(m, mt_write_op(m->sv), m->sv, acc.w, false);
        return;
    case MT_WRITE_RUN: {
        uint16_t w = m->want != 0; /* bit 0/1; program_status run = 1, reset = 0 */
        mt_submit(m, mt_write_op(m->run), m->run, &w, false);
        return;
    }
    case MT_DONE:
        mt_end(m, NULL);
        return;
    }
}

static double mt_decode(mt_t *m, const modbus_reg_t *r, const lab_modbus_result_t *res, int *ok)
{
    double v = NAN;
    *ok = 0;
    if (r->space != MODBUS_HOLDING) {
        if (res->bits) {
            v = res->bits[0] != 0;
            *ok = 1;
        }
        return v;
    }
    if (res->words && modbus_reg_decode(r, res->words, 1, m->decimals, 0, &v) == LAB_OK)
        *ok = 1;
    return v;
}

/* A read or write of the running operation came back. */
static void mt_op_result(mt_t *m, const lab_modbus_result_t *res)
{
    lab_drv_error_t e;
    char code[32];
    switch (res->status) {
    case LAB_OK:
        break;
    case LAB_EDEVICE:
        snprintf(code, sizeof code, "exception %d", res->exception);
        lab_drv_error_set(&e, LAB_EDEVICE, code, "%s %s at 0x%04x: Modbus exception %d (%s)",
                          lab_modbus_op_name(res->op), m->model->key, (unsigned)res->addr,
                          res->exception, res->exception_name ? res->exception_name : "?");
        mt_end(m, &e);
        return;
    case LAB_ETIMEDOUT:
        lab_drv_error_set(&e, LAB_ETIMEDOUT, NULL, "unit %d did not answer %s at 0x%04x: %s",
                          m->unit, lab_modbus_op_name(res->op), (unsigned)res->addr,
                          res->message ? res->message : "timeout");
        mt_end(m, &e);
        return;
    case LAB_EPROTO:
        lab_drv_error_set(&e, LAB_EPROTO, NULL, "unit %d answered %s with a bad frame: %s", m->unit,
                          lab_modbus_op_name(res->op), res->message ? res->message : "?");
        mt_end(m, &e);
        return;
    default: /* the connection: the bus reports offline as well */
        lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "%s: %s", lab_modbus_op_name(res->op),
                          res->message ? res->message : lab_strerror(res->status));
        mt_end(m, &e);
        return;
    }
    int ok = 1;
    double v;
    switch (m->steps[m->at]) {
    case MT_READ_PV:
        v = mt_decode(m, m->pv, res, &ok);
        json_object_set_new(m->result, "temperature_c", json_real(v));
        break;
    case MT_READ_SV:
        v = mt_decode(m, m->sv, res, &ok);
        json_object_set_new(m->result, "setpoint_c", json_real(v));
        break;
    case MT_READ_RUN:
        /* program_status: anything but reset regulates (run, hold, end at the set point). */
        v = mt_decode(m, m->run, res, &ok);
        json_object_set_new(m->result, "running", json_integer(v != 0));
        break;
    case MT_READ_OUT:
        v = mt_decode(m, m->out, res, &ok);
        json_object_set_new(m->result, "output1_pct", json_real(v));
        break;
    case MT_WRITE_SV:
        json_object_set_new(m->result, "setpoint_c", json_real(m->want));
        break;
    case MT_WRITE_RUN:
        json_object_set_new(m->result, "running", json_integer(m->want != 0));
        break;
    case MT_DONE:
        break;
    }
    if (!ok) {
        mt_fail(m, LAB_EPROTO, lab_modbus_op_name(res->op), "the answer could not be decoded");
        return;
    }
    m->at++;
    mt_step(m);
}

/* ---- connection ---- */

static void mt_probe(mt_t *m);

static void mt_probe_due(uv_timer_t *t)
{
    mt_t *m = t->data;
    if (m->linked && !m->probing)
        mt_probe(m);
}

static void mt_probe_result(mt_t *m, const lab_modbus_result_t *res)
{
    m->probing = false;
    lab_drv_error_t e;
    if (res->status == LAB_OK || res->status == LAB_EDEVICE) { /* it answers: that is enough */
        log_info(SUB, "instrument=%s unit=%d answers", lab_driver_id(m->d), m->unit);
        lab_drv_set_state(m->d, LAB_INST_IDLE, NULL);
        return;
    }
    if (res->status == LAB_ECONN || res->status == LAB_ESHUTDOWN)
        return; /* the bus reports offline and connects again by itself */
    lab_drv_error_set(&e, res->status == LAB_ETIMEDOUT ? LAB_ETIMEDOUT : LAB_EPROTO, NULL,
                      "connected, but unit %d does not answer: %s", m->unit,
                      res->message ? res->message : lab_strerror(res->status));
    lab_drv_set_state(m->d, LAB_INST_OFFLINE, &e);
    uv_timer_start(&m->probe_timer, mt_probe_due, PROBE_RETRY_MS, 0);
}

static void mt_done_cb(lab_modbus_bus_t *bus, const lab_modbus_result_t *res, void *arg)
{
    (void)bus;
    mt_req_t *r = arg;
    mt_t *m = r->m;
    bool probe = r->probe, current = r->seq == m->seq;
    free(r);
    if (m->closing || res->status == LAB_ESHUTDOWN)
        return;
    if (probe) {
        mt_probe_result(m, res);
        return;
    }
    if (!current || !m->steps) {
        log_debug(SUB, "instrument=%s late answer to %s dropped", lab_driver_id(m->d),
                  lab_modbus_op_name(res->op));
        return;
    }
    mt_op_result(m, res);
}

static void mt_submit(mt_t *m, lab_modbus_op_t op, const modbus_reg_t *r, const uint16_t *w,
                      bool probe)
{
    uint8_t bit = w ? (uint8_t)(w[0] != 0) : 0;
    lab_modbus_request_t req = {
        .op = op,
        .unit = m->unit,
        .addr = r->addr,
        .count = 1,
        .words = w,
        .bits = &bit,
        .timeout_ms = m->timeout_ms,
    };
    mt_req_t *rq = lab_calloc(1, sizeof *rq);
    *rq = (mt_req_t){m, m->seq, probe};
    int rc = lab_modbus_bus_submit(m->bus, &req, mt_done_cb, rq);
    if (rc == LAB_OK)
        return;
    free(rq);
    if (probe) {
        m->probing = false;
        return;
    }
    mt_fail(m, LAB_EINTERNAL, "the bus refused the request", lab_strerror(rc));
}

static void mt_probe(mt_t *m)
{
    m->probing = true;
    mt_submit(m, LAB_MODBUS_READ_HOLDING, m->pv, NULL, true);
}

static void mt_bus_state(lab_modbus_bus_t *bus, lab_transport_state_t state, int err,
                         const char *reason, void *user)
{
    (void)bus;
    mt_t *m = user;
    if (m->closing)
        return;
    if (state == LAB_TRANSPORT_OPEN) {
        m->linked = true;
        if (!m->probing)
            mt_probe(m);
        return;
    }
    m->linked = false;
    uv_timer_stop(&m->probe_timer);
    lab_drv_error_t e;
    lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "%s: %s", lab_drv_str(m->d, "modbus"),
                      reason ? reason : lab_strerror(err));
    lab_drv_set_state(m->d, LAB_INST_OFFLINE, &e);
}

/* ---- the driver ---- */

static void mt_defer_due(uv_timer_t *t)
{
    mt_t *m = t->data;
    if (m->steps && m->deferred.code != LAB_OK) {
        lab_drv_error_t e = m->deferred;
        memset(&m->deferred, 0, sizeof m->deferred);
        mt_end(m, &e);
    }
}

static void mt_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    mt_t *m = lab_drv_priv(d);
    m->seq++;
    m->at = 0;
    json_decref(m->result);
    m->result = json_object();
    if (strcmp(a->name, "status") == 0) {
        m->steps = steps_status;
    } else if (strcmp(a->name, "set_temperature") == 0) {
        m->steps = steps_set;
        m->want = json_number_value(json_object_get(params, "temperature_c"));
        modbus_access_t acc;
        if (modbus_reg_encode(m->sv, m->want, m->decimals, 0, &acc) != LAB_OK) {
            double lim = 32767 / pow(10, m->decimals);
            lab_drv_error_set(&m->deferred, LAB_EINVAL, NULL,
                              "temperature_c %g is outside what the %s set point register holds "
                              "(%g..%g degC with %d decimal%s)",
                              m->want, m->model->model, -lim - 1 / pow(10, m->decimals), lim,
                              m->decimals, m->decimals == 1 ? "" : "s");
            uv_timer_start(&m->defer_timer, mt_defer_due, 0, 0);
            return;
        }
    } else { /* run, stop */
        m->steps = steps_run;
        m->want = strcmp(a->name, "run") == 0;
    }
    mt_step(m);
}

static void mt_abort(lab_driver_t *d)
{
    mt_t *m = lab_drv_priv(d);
    m->seq++; /* whatever is still on the bus answers into nothing */
    m->steps = NULL;
    memset(&m->deferred, 0, sizeof m->deferred);
    uv_timer_stop(&m->defer_timer);
    json_decref(m->result);
    m->result = NULL;
}

static int mt_open(lab_driver_t *d, char *err, size_t errlen)
{
    mt_t *m = lab_drv_priv(d);
    m->d = d;
    int map = lab_drv_enum(d, "map");
    if (map < 0 || map >= (int)(sizeof mt_models / sizeof mt_models[0])) {
        snprintf(err, errlen, "map: unknown register map '%s'", lab_drv_str(d, "map"));
        return LAB_EINVAL;
    }
    m->model = &mt_models[map];
    m->pv = modbus_map_find(m->model->dev, m->model->pv);
    m->sv = modbus_map_find(m->model->dev, m->model->sv);
    m->run = modbus_map_find(m->model->dev, m->model->run);
    m->out = m->model->out ? modbus_map_find(m->model->dev, m->model->out) : NULL;
    /* the tables and mt_models agree */
    LAB_ASSERT(m->pv && m->sv && m->run && (m->out || !m->model->out));
    m->unit = (int)lab_drv_int(d, "unit");
    m->decimals = (int)lab_drv_int(d, "decimals");
    m->timeout_ms = (unsigned)lab_drv_int(d, "timeout_ms");
    lab_drv_set_info(d, "model", json_string(m->model->model));
    lab_drv_set_info(d, "map", json_string(m->model->key));
    lab_drv_set_info(d, "unit", json_integer(m->unit));

    uv_timer_t *timers[] = {&m->probe_timer, &m->defer_timer};
    for (int i = 0; i < 2; i++) {
        uv_timer_init(lab_drv_loop(d), timers[i]);
        timers[i]->data = m;
        m->handles++;
    }
    /* The bus connects at once: created here, while file descriptors are still low. */
    lab_modbus_settings_t s;
    lab_modbus_settings_init(&s);
    s.uri = lab_drv_str(d, "modbus");
    s.baud = (int)lab_drv_int(d, "baud");
    s.data_bits = (int)lab_drv_int(d, "data_bits");
    s.parity =
        lab_drv_has(d, "parity") ? (lab_parity_t)lab_drv_enum(d, "parity") : m->model->parity;
    s.stop_bits = (int)lab_drv_int(d, "stop_bits");
    char why[200];
    int rc = lab_modbus_bus_new(lab_drv_loop(d), &s, lab_driver_id(d), mt_bus_state, m, &m->bus,
                                why, sizeof why);
    if (rc != LAB_OK) {
        snprintf(err, errlen, "modbus: %s", why);
        return rc;
    }
    return 0;
}

static void mt_start(lab_driver_t *d)
{
    (void)d; /* the bus is already connecting; its state callback reports */
}

static void mt_stop(lab_driver_t *d)
{
    mt_t *m = lab_drv_priv(d);
    m->closing = true;
    mt_abort(d);
    uv_timer_stop(&m->probe_timer);
    if (m->bus)
        lab_modbus_bus_close(m->bus); /* answers still queued come back as shutdown, ignored */
    m->bus = NULL;
}

static void mt_timer_closed(uv_handle_t *h)
{
    mt_t *m = h->data;
    if (--m->handles == 0)
        lab_drv_closed(m->d);
}

static void mt_close(lab_driver_t *d)
{
    mt_t *m = lab_drv_priv(d);
    mt_stop(d);
    if (!m->handles) { /* open failed before the timers existed */
        lab_drv_closed(d);
        return;
    }
    uv_close((uv_handle_t *)&m->probe_timer, mt_timer_closed);
    uv_close((uv_handle_t *)&m->defer_timer, mt_timer_closed);
}

/* What its actions do in a workflow step (the scheduler asks by role, never by name). */
static const lab_drv_role_action_t mt_roles[] = {
    {LAB_DRV_ROLE_SET_TEMP, "set_temperature"},
    {LAB_DRV_ROLE_RUN, "run"},
    {LAB_DRV_ROLE_STOP, "stop"},
    {LAB_DRV_ROLE_NONE, NULL},
};

const lab_driver_ops_t lab_driver_modbus_temperature = {
    .name = "modbus-temperature",
    .kind = "temperature",
    .model = "Omega CN7500 / Eurotherm 3200",
    .keys = mt_keys,
    .actions = mt_actions,
    .roles = mt_roles,
    .poll_action = "status",
    .poll_default_s = 2,
    .priv_size = sizeof(mt_t),
    .open = mt_open,
    .start = mt_start,
    .stop = mt_stop,
    .close = mt_close,
    .invoke = mt_invoke,
    .abort = mt_abort,
};
