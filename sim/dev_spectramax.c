/* Simulated Molecular Devices SpectraMax: CR-ended commands answered with '>'-ended fields as
 * PyLabRobot's tests show a reader answer (backend_tests.py: "OK>\r\n" line 36, a FAIL after an
 * OK "OK\t\r\n>FAIL\t 107" line 1659, a FAIL alone "FAIL\t 999" line 1666), each command with
 * the number of fields PyLabRobot waits for (COMMAND_TERMINATORS; "!READTYPE PLA", the 384
 * Plus's form, with one). The data field of !STATUS is "0\tIDLE" (or BUSY for sim_step_seconds
 * lab seconds after a !READ; the first word's meaning is not documented, the second is what
 * PyLabRobot waits for), of !TEMP the set point and the current temperature, of !TRANSFER an
 * absorbance read in PyLabRobot's data format, values from the world at the !WAVELENGTH given
 * (the plate named by sim_plate, sim_wells 96 or 384; in a flow the reader's queue, as the
 * BioTek's). !STRIP for another plate format than sim_wells is error 111 (invalid read
 * settings), !TRANSFER with nothing read 107, an unknown command 100, and an injected "error"
 * answers the next command with sim_error_code (default 400, carriage motion error). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/spectramax.h"
#include "sim/device.h"
#include "sim/log.h"

#define SIM_SMAX_ROOM_C 22.5

static void send_text(sim_inst_t *in, const char *s)
{
    sim_inst_send(in, s, strlen(s));
}

static void send_ok(sim_inst_t *in, const char *data, int fields)
{
    send_text(in, "OK>\r\n");
    if (fields > 1) {
        send_text(in, data ? data : "");
        send_text(in, ">\r\n");
    }
}

static void send_fail(sim_inst_t *in, int code, int fields)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%sFAIL\t %d>\r\n", fields > 1 ? "OK\t\r\n>" : "", code);
    send_text(in, buf);
}

static bool flowing(const sim_inst_t *in)
{
    for (int i = 0; i < in->sim->cfg.n; i++)
        if (strcmp(in->sim->cfg.inst[i].to, in->cfg->id) == 0)
            return true;
    return false;
}

/* !READ: the plate goes into the tray (in a flow); the reader is busy for a step. */
static void start_read(sim_inst_t *in)
{
    if (flowing(in))
        sim_world_reader_plate(&in->sim->world, in->cfg->id);
    in->smax_ready_at = sim_lab_now(in->sim) + in->cfg->step_s;
    in->smax_data = 1;
}

static void send_transfer(sim_inst_t *in, int fields)
{
    static smax_plate_t plate; /* large; the loop is single-threaded */
    static char data[SMAX_FIELD_MAX];
    memset(&plate, 0, sizeof plate);
    plate.rows = in->cfg->wells == 384 ? 16 : 8;
    plate.cols = in->cfg->wells == 384 ? 24 : 12;
    plate.wavelength_nm = in->nm;
    plate.temperature = in->reader_temp;
    plate.time = sim_lab_now(in->sim);
    /* Incubation is accounted lazily; bring it up to now before the values depend on it. */
    for (int i = 0; i < in->sim->cfg.n; i++)
        if (in->sim->cfg.inst[i].driver == SIM_LICONIC && in->sim->inst[i].flags)
            sim_liconic_tick(&in->sim->inst[i]);
    sim_plate_t *p = NULL;
    if (flowing(in)) {
        char tray[96];
        snprintf(tray, sizeof tray, "tray:%s", in->cfg->id);
        p = sim_world_at(&in->sim->world, tray);
    }
    if (!p)
        p = sim_world_plate(&in->sim->world, in->cfg->plate);
    for (int r = 0; r < plate.rows; r++)
        for (int c = 0; c < plate.cols; c++) {
            plate.state[r][c] = p ? SMAX_WELL_VALUE : SMAX_WELL_NOVALUE;
            if (p)
                plate.value[r][c] = sim_world_absorbance(&in->sim->world, p, r, c, in->nm);
        }
    int n = smax_encode_data(&plate, data, sizeof data);
    if (n <= 0) {
        sim_warn("spectramax", "%s: data: %s", in->cfg->id, lab_strerror(n));
        send_fail(in, 206, fields);
        return;
    }
    in->smax_data = 0;
    send_ok(in, data, fields);
}

static int number(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

/* Commands that only set something (or move the tray): "OK", and an empty data field where
 * the reply has two. */
static bool is_setting(const char *w)
{
    static const char *const words[] = {"!OPEN",   "!CLOSE", "!XPOS",      "!YPOS",
                                        "!CSPEED", "!SHAKE", "!CALIBRATE", "!MODE",
                                        "!ORDER",  "!SPEED", "!TAG",       "!NVRAM"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(w, words[i]) == 0)
            return true;
    return false;
}

static void on_command(sim_inst_t *in, const smax_cmd_t *c, int fields)
{
    const char *w = c->argv[0];
    char buf[64];
    double v;
    if (strcmp(w, "!") == 0) {
        send_ok(in, NULL, 1);
    } else if (strcmp(w, "!STATUS") == 0) {
        bool busy = in->smax_data && sim_lab_now(in->sim) < in->smax_ready_at;
        send_ok(in, busy ? "0\tBUSY" : "0\tIDLE", fields);
    } else if (strcmp(w, "!TEMP") == 0) {
        if (c->argc > 2 || (c->argc == 2 && number(c->argv[1], 0, 45, &v))) {
            send_fail(in, c->argc > 2 ? 102 : 101, fields);
            return;
        }
        if (c->argc == 2) {
            /* The incubator is taken to reach its set point at once; off, the room's. */
            in->smax_setpoint = v;
            in->reader_temp = v > 0 ? v : SIM_SMAX_ROOM_C;
        }
        snprintf(buf, sizeof buf, "%.1f\t%.1f", in->smax_setpoint, in->reader_temp);
        send_ok(in, buf, fields);
    } else if (strcmp(w, "!WAVELENGTH") == 0) {
        if (c->argc != 2 || number(c->argv[1], 190, 1000, &v)) {
            send_fail(in, c->argc != 2 ? 103 : 101, fields);
            return;
        }
        in->nm = (int)v;
        send_ok(in, NULL, fields);
    } else if (strcmp(w, "!STRIP") == 0) {
        int cols = in->cfg->wells == 384 ? 24 : 12;
        if (c->argc != 3 || atoi(c->argv[2]) != cols) {
            send_fail(in, 111, fields);
            return;
        }
        send_ok(in, NULL, fields);
    } else if (strcmp(w, "!CLEAR") == 0) {
        if (c->argc == 2 && strcmp(c->argv[1], "DATA") == 0)
            in->smax_data = 0;
        send_ok(in, NULL, fields);
    } else if (strcmp(w, "!READ") == 0) {
        start_read(in);
        send_ok(in, NULL, fields);
    } else if (strcmp(w, "!TRANSFER") == 0) {
        if (!in->smax_data || sim_lab_now(in->sim) < in->smax_ready_at) {
            send_fail(in, in->smax_data ? 106 : 107, fields);
            return;
        }
        send_transfer(in, fields);
    } else if (strcmp(w, "!READTYPE") == 0) {
        /* The 384 Plus's "PLA" takes one field (spectramax_384_plus_backend.py line 28). */
        send_ok(in, "", c->argc == 2 && strcmp(c->argv[1], "PLA") == 0 ? 1 : fields);
    } else if (is_setting(w)) {
        send_ok(in, "", fields);
    } else {
        send_fail(in, 100, 1);
    }
}

static int on_line(void *ud, const char *line, size_t len, int err)
{
    sim_inst_t *in = ud;
    smax_cmd_t c;
    if (err) {
        sim_warn("spectramax", "%s: %s", in->cfg->id, lab_strerror(err));
        send_fail(in, 104, 1); /* input line too long */
        return 0;
    }
    sim_inst_command(in);
    if (smax_cmd_parse(line, len, &c) != LAB_OK) {
        send_fail(in, 100, 1);
        return 0;
    }
    int fields = smax_reply_fields(c.argv[0], strlen(c.argv[0]));
    if (in->error_next) {
        in->error_next = 0;
        send_fail(in, in->cfg->error_code >= 0 ? in->cfg->error_code : 400, fields);
        return 0;
    }
    on_command(in, &c, fields);
    return 0;
}

void sim_spectramax_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    proto_lines_feed(&in->lines, data, n, on_line, in);
}

void sim_spectramax_init(sim_inst_t *in)
{
    proto_lines_init(&in->lines);
    in->reader_temp = SIM_SMAX_ROOM_C;
    in->smax_setpoint = 0;
    in->nm = 450;
}
