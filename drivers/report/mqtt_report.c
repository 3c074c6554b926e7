/* mqtt-report: an instrument that reports by itself over MQTT (in/instruments/{id}/report). The
 * daemon's bus hands each document to lab_driver_feed; a valid one becomes a telemetry sample
 * and brings the instrument online; an invalid one is refused with its JSON path and costs
 * nothing else. Without a report for stale_s the instrument is offline again. */
#include "drivers/driver.h"
#include "core/clock.h"
#include "protocols/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mqtt_report {
    uv_timer_t stale;
    bool stale_open;
    json_t *last; /* the newest values */
    char last_ts[REPORT_TS_MAX];
    uint64_t reports, refused;
} mqtt_report_t;

static const lab_drv_key_t report_keys[] = {
    {"stale_s", LAB_DRV_KEY_DOUBLE, "300", 0, 86400 * 7, NULL, 0,
     "real seconds without a report before the instrument counts as offline (0: never)"},
    {NULL, 0, NULL, 0, 0, NULL, 0, NULL},
};

static const lab_drv_action_t report_actions[] = {
    {"status", NULL, 10, LAB_DRV_ACT_IMMEDIATE | LAB_DRV_ACT_OFFLINE,
     "the newest reported values and when they came"},
    {NULL, NULL, 0, 0, NULL},
};

static int report_open(lab_driver_t *d, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    mqtt_report_t *r = lab_drv_priv(d);
    uv_timer_init(lab_drv_loop(d), &r->stale);
    r->stale.data = d;
    r->stale_open = true;
    char topic[300];
    if (report_topic(lab_driver_id(d), topic, sizeof topic) == LAB_OK)
        lab_drv_set_info(d, "report_topic", json_string(topic));
    return 0;
}

static void report_went_stale(uv_timer_t *t)
{
    lab_driver_t *d = t->data;
    lab_drv_error_t e;
    lab_drv_set_state(d, LAB_INST_OFFLINE,
                      lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "no report for %g s",
                                        lab_drv_double(d, "stale_s")));
}

static void report_start(lab_driver_t *d)
{
    lab_drv_error_t e;
    lab_drv_set_state(d, LAB_INST_OFFLINE,
                      lab_drv_error_set(&e, LAB_EOFFLINE, NULL, "no report received yet"));
}

static void report_invoke(lab_driver_t *d, const lab_drv_action_t *a, json_t *params)
{
    (void)a;
    (void)params;
    mqtt_report_t *r = lab_drv_priv(d);
    json_t *o = json_pack("{s:O?, s:I, s:I}", "values", r->last, "reports", (json_int_t)r->reports,
                          "refused", (json_int_t)r->refused);
    if (r->last_ts[0])
        json_object_set_new(o, "ts", json_string(r->last_ts));
    lab_drv_done(d, NULL, o);
}

static int report_feed(lab_driver_t *d, const char *doc, size_t len, char *err, size_t errlen)
{
    mqtt_report_t *r = lab_drv_priv(d);
    static report_t rep; /* 20 kB; the loop thread is the only caller */
    report_error_t re;
    if (report_parse(doc, len, &rep, &re) != LAB_OK) {
        r->refused++;
        snprintf(err, errlen, "%s: %s", re.path[0] ? re.path : "(document)", re.message);
        return LAB_EINVAL;
    }
    int64_t ts = 0;
    if (rep.has_ts && lab_time_parse(rep.ts, &ts) != 0)
        ts = 0;
    json_t *vals = json_object();
    for (size_t i = 0; i < rep.n; i++)
        json_object_set_new(vals, rep.values[i].name, json_real(rep.values[i].value));
    json_decref(r->last);
    r->last = json_deep_copy(vals);
    lab_time_iso(ts ? ts : lab_wall_ms(), r->last_ts);
    r->reports++;
    lab_drv_set_state(d, LAB_INST_IDLE, NULL);
    double stale = lab_drv_double(d, "stale_s");
    if (stale > 0)
        uv_timer_start(&r->stale, report_went_stale, (uint64_t)(stale * 1000), 0);
    lab_drv_telemetry(d, ts, vals);
    return 0;
}

static void report_stop(lab_driver_t *d)
{
    mqtt_report_t *r = lab_drv_priv(d);
    uv_timer_stop(&r->stale);
}

static void report_timer_closed(uv_handle_t *h)
{
    lab_driver_t *d = h->data;
    mqtt_report_t *r = lab_drv_priv(d);
    json_decref(r->last);
    r->last = NULL;
    lab_drv_closed(d);
}

static void report_close(lab_driver_t *d)
{
    mqtt_report_t *r = lab_drv_priv(d);
    if (!r->stale_open) {
        lab_drv_closed(d);
        return;
    }
    r->stale_open = false;
    uv_close((uv_handle_t *)&r->stale, report_timer_closed);
}

const lab_driver_ops_t lab_driver_mqtt_report = {
    .name = "mqtt-report",
    .kind = "sensor",
    .model = "an instrument reporting JSON readings over MQTT",
    .keys = report_keys,
    .actions = report_actions,
    .priv_size = sizeof(mqtt_report_t),
    .open = report_open,
    .start = report_start,
    .stop = report_stop,
    .close = report_close,
    .invoke = report_invoke,
    .feed = report_feed,
};
