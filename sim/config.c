/* labloop-sim configuration: the part of labloopd's INI file the simulator needs. Other sections
 * and keys belong to the daemon and are ignored; a bad value in what is read is an error naming
 * file:line. */
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "protocols/modbus_maps.h"
#include "protocols/cytomat.h"
#include "protocols/liconic.h"
#include "sim/sim.h"

typedef struct cfg_ctx {
    sim_cfg_t *cfg;
    const char *path;
    FILE *f;
    int line;
    int section_line; /* where the current [section] header is */
    char *err;
    size_t errcap;
    int failed;
} cfg_ctx_t;

static char *reader(char *str, int num, void *stream)
{
    cfg_ctx_t *c = stream;
    char *r = fgets(str, num, c->f);
    if (r) {
        c->line++;
        const char *p = r + strspn(r, " \t");
        if (*p == '[')
            c->section_line = c->line;
    }
    return r;
}

static int fail(cfg_ctx_t *c, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof msg, fmt, a, b);
    snprintf(c->err, c->errcap, "%s:%d: %s", c->path, c->line, msg);
    c->failed = 1;
    return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi))
        return -1;
    *out = d;
    return 0;
}

static int parse_tcp(const char *v, char *host, size_t cap, int *port)
{
    if (strncmp(v, "tcp://", 6) != 0)
        return -1;
    const char *h = v + 6, *colon = strrchr(h, ':');
    if (!colon || colon == h || (size_t)(colon - h) >= cap)
        return -1;
    double p;
    if (parse_double(colon + 1, 1, 65535, &p) || p != (int)p)
        return -1;
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = 0;
    *port = (int)p;
    return 0;
}

static const struct {
    const char *name;
    sim_driver_t d;
} drivers[] = {
    {"liconic-stx", SIM_LICONIC},
    {"biotek-synergy", SIM_BIOTEK},
    {"hamilton-star", SIM_STAR},
    {"modbus-temperature", SIM_MODBUS_TEMP},
    {"spectramax", SIM_SPECTRAMAX}, /* Molecular Devices SpectraMax */
    {"keyence-sr", SIM_KEYENCE},
    /* a Cytomat's rack_type is read by its driver: it comes after driver = */
    {"thermo-cytomat", SIM_CYTOMAT},
    {"opentrons", SIM_OPENTRONS},
};

static const struct {
    const char *name;
    int dev;
} maps[] = {{"omega-cn7500", MODBUS_DEV_CN7500}, {"eurotherm-3200", MODBUS_DEV_EUROTHERM3200}};

static sim_inst_cfg_t *inst_for(cfg_ctx_t *c, const char *id)
{
    sim_cfg_t *cfg = c->cfg;
    for (int i = 0; i < cfg->n; i++)
        if (strcmp(cfg->inst[i].id, id) == 0)
            return &cfg->inst[i];
    if (cfg->n == SIM_INST_MAX || strlen(id) >= sizeof cfg->inst[0].id)
        return NULL;
    sim_inst_cfg_t *in = &cfg->inst[cfg->n++];
    memset(in, 0, sizeof *in);
    snprintf(in->id, sizeof in->id, "%s", id);
    in->driver = -1;
    in->map = -1;
    in->wells = 96;
    in->step_s = 2;
    in->ambient = 22;
    in->unit = 1;
    in->tau = 60;
    in->error_code = -1;
    in->line = c->section_line;
    snprintf(in->plate, sizeof in->plate, "PLATE1");
    snprintf(in->reagents, sizeof in->reagents, "substrate,inhibitor,buffer");
    return in;
}

static int handler(void *ud, const char *section, const char *name, const char *value)
{
    cfg_ctx_t *c = ud;
    if (c->failed)
        return 0;
    if (strcmp(section, "labloop") == 0) {
        if (strcmp(name, "time_scale") == 0 && parse_double(value, 1e-3, 1e6, &c->cfg->time_scale))
            return fail(c, "time_scale: '%s' is not a number in 0.001..1e6%s", value, "");
        if (strcmp(name, "sim_seed") == 0) {
            double d;
            if (parse_double(value, 0, 1e15, &d))
                return fail(c, "sim_seed: '%s' is not a non-negative integer%s", value, "");
            c->cfg->seed = (uint64_t)d;
        }
        if (strcmp(name, "sim_noise") == 0 && parse_double(value, 0, 1, &c->cfg->noise))
            return fail(c, "sim_noise: '%s' is not in 0..1%s", value, "");
        if (strcmp(name, "sim_design") == 0) {
            char why[160];
            if (sim_design_parse(value, &c->cfg->design, why, sizeof why))
                return fail(c, "sim_design: %s%s", why, "");
        }
        if (strcmp(name, "sim_design_max") == 0) {
            double d;
            if (parse_double(value, 0, 9, &d) || d <= 0)
                return fail(c, "sim_design_max: '%s' is not in 0..9 AU (above 0)%s", value, "");
            c->cfg->design.max_au = d;
        }
        return 1;
    }
    if (strncmp(section, "instrument ", 11) != 0)
        return 1;
    const char *id = section + 11;
    sim_inst_cfg_t *in = inst_for(c, id);
    if (!in)
        return fail(c, "instrument '%s': too many instruments or id too long%s", id, "");
    double d;
    if (strcmp(name, "driver") == 0) {
        for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
            if (strcmp(value, drivers[i].name) == 0)
                in->driver = drivers[i].d;
        if ((int)in->driver < 0)
            return fail(c, "instrument '%s': unknown driver '%s'", id, value);
    } else if (strcmp(name, "port") == 0) {
        if (strncmp(value, "tcp://", 6) == 0) {
            if (parse_tcp(value, in->host, sizeof in->host, &in->tcp_port))
                return fail(c, "instrument '%s': bad port '%s' (tcp://host:port)", id, value);
        } else if (!*value || strlen(value) >= sizeof in->port) {
            return fail(c, "instrument '%s': bad port '%s'", id, value);
        } else {
            snprintf(in->port, sizeof in->port, "%s", value);
        }
    } else if (strcmp(name, "modbus") == 0) {
        /* rtu:PATH: the pty's symlink, which labloopd opens as its RTU line */
        in->modbus_rtu = strncmp(value, "rtu:", 4) == 0;
        if (in->modbus_rtu ? !value[4] || strlen(value + 4) >= sizeof in->port
                           : parse_tcp(value, in->host, sizeof in->host, &in->modbus_port))
            return fail(c, "instrument '%s': bad modbus '%s' (tcp://host:port or rtu:PATH)", id,
                        value);
        if (in->modbus_rtu) {
            snprintf(in->port, sizeof in->port, "%s", value + 4);
            in->modbus_port = 0;
        }
    } else if (strcmp(name, "unit") == 0) {
        if (parse_double(value, 1, 247, &d) || d != (int)d)
            return fail(c, "instrument '%s': bad unit '%s' (1..247)", id, value);
        in->unit = (int)d;
    } else if (strcmp(name, "map") == 0) {
        for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++)
            if (strcmp(value, maps[i].name) == 0)
                in->map = maps[i].dev;
        if (in->map < 0)
            return fail(c, "instrument '%s': unknown map '%s'", id, value);
    } else if (strcmp(name, "sim_wells") == 0) {
        if (strcmp(value, "96") && strcmp(value, "384"))
            return fail(c, "instrument '%s': sim_wells '%s' is not 96 or 384", id, value);
        in->wells = atoi(value);
    } else if (strcmp(name, "sim_plate") == 0) {
        size_t chars = 0; /* a plate's rule: 64 characters (code points) */
        for (const char *q = value; *q; q++)
            chars += ((unsigned char)*q & 0xC0) != 0x80;
        if (!*value || strlen(value) >= sizeof in->plate || chars > LAB_RUN_PLATE_CHARS)
            return fail(c, "instrument '%s': bad sim_plate '%s' (1 to 64 characters)", id, value);
        snprintf(in->plate, sizeof in->plate, "%s", value);
    } else if (strcmp(name, "sim_from") == 0 || strcmp(name, "sim_to") == 0) {
        char *dst = name[4] == 'f' ? in->from : in->to;
        if (!*value || strlen(value) >= sizeof in->from)
            return fail(c, "instrument '%s': bad sim_from/sim_to '%s'", id, value);
        snprintf(dst, sizeof in->from, "%s", value);
    } else if (strcmp(name, "sim_reagents") == 0) {
        if (!*value || strlen(value) >= sizeof in->reagents)
            return fail(c, "instrument '%s': bad sim_reagents '%s'", id, value);
        snprintf(in->reagents, sizeof in->reagents, "%s", value);
    } else if (strcmp(name, "sim_step_seconds") == 0) {
        if (parse_double(value, 0, 86400, &in->step_s))
            return fail(c, "instrument '%s': bad sim_step_seconds '%s'", id, value);
    } else if (strcmp(name, "sim_ambient") == 0) {
        if (parse_double(value, -50, 200, &in->ambient))
            return fail(c, "instrument '%s': bad sim_ambient '%s'", id, value);
    } else if (strcmp(name, "sim_tau") == 0) {
        if (parse_double(value, 0.001, 1e6, &in->tau))
            return fail(c, "instrument '%s': bad sim_tau '%s'", id, value);
    } else if (strcmp(name, "model") == 0) {
        if (cytomat_model_find(value) < 0)
            return fail(c, "instrument '%s': unknown model '%s' (" CYTOMAT_MODEL_CHOICES ")", id,
                        value);
        snprintf(in->cy_model_name, sizeof in->cy_model_name, "%s", value);
    } else if (strcmp(name, "rack_type") == 0 && in->driver == SIM_CYTOMAT) {
        if (!cytomat_rack_find(value))
            return fail(c, "instrument '%s': unknown rack_type '%s' for a Cytomat", id, value);
        snprintf(in->rack_type, sizeof in->rack_type, "%s", value);
    } else if (strcmp(name, "rack_type") == 0) {
        if (!liconic_rack_find(value)) {
            snprintf(c->err, c->errcap,
                     "%s:%d: instrument '%s': unknown rack_type '%s' (one of %s)", c->path, c->line,
                     id, value, LICONIC_RACK_CHOICES);
            c->failed = 1;
            return 0;
        }
        snprintf(in->rack_type, sizeof in->rack_type, "%s", value);
    } else if (strcmp(name, "rack_types") == 0) {
        if (!*value || strlen(value) >= sizeof in->rack_types)
            return fail(c, "instrument '%s': bad rack_types '%.64s' (1:RACK, 2:RACK, ...)", id,
                        value);
        snprintf(in->rack_types, sizeof in->rack_types, "%s", value);
    } else if (strcmp(name, "cassettes") == 0) {
        if (parse_double(value, 1, LICONIC_CASSETTES_MAX, &d) || d != (int)d)
            return fail(c, "instrument '%s': bad cassettes '%s' (1..99)", id, value);
        in->ncassettes = (int)d;
    } else if (strcmp(name, "sim_wake_e1") == 0) {
        if (parse_double(value, 0, 99, &d) || d != (int)d)
            return fail(c, "instrument '%s': bad sim_wake_e1 '%s' (0..99)", id, value);
        in->wake_e1 = (int)d;
    } else if (strcmp(name, "at") == 0) {
        if (!*value || strlen(value) >= sizeof in->at)
            return fail(c, "instrument '%s': bad at '%s'", id, value);
        snprintf(in->at, sizeof in->at, "%s", value);
    } else if (strcmp(name, "sim_mode") == 0) {
        if (strcmp(value, "bl") && strcmp(value, "sr"))
            return fail(c, "instrument '%s': sim_mode '%s' is not bl or sr", id, value);
        in->keyence_sr = strcmp(value, "sr") == 0;
    } else if (strcmp(name, "sim_model") == 0) {
        if (strcmp(value, "ot2") && strcmp(value, "flex"))
            return fail(c, "instrument '%s': sim_model '%s' is not ot2 or flex", id, value);
        in->flex = strcmp(value, "flex") == 0;
    } else if (strcmp(name, "sim_error_code") == 0) {
        if (parse_double(value, 0, 99999, &d) || d != (int)d)
            return fail(c, "instrument '%s': bad sim_error_code '%s'", id, value);
        in->error_code = (int)d;
    }
    return 1;
}

int sim_cfg_load(const char *path, sim_cfg_t *cfg, char *err, size_t errcap)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->time_scale = 1;
    cfg->seed = 1;
    cfg->noise = 0.002;
    cfg->design.max_au = 2.0;
    cfg_ctx_t c = {.cfg = cfg, .path = path, .err = err, .errcap = errcap};
    c.f = fopen(path, "r");
    if (!c.f) {
        snprintf(err, errcap, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(reader, &c, handler, &c);
    fclose(c.f);
    if (c.failed)
        return -1;
    if (rc) {
        snprintf(err, errcap, "%s:%d: syntax error", path, rc);
        return -1;
    }
    for (int i = 0; i < cfg->n; i++) {
        sim_inst_cfg_t *in = &cfg->inst[i];
        const char *why = NULL;
        if ((int)in->driver < 0)
            why = "no driver";
        else if (in->driver == SIM_MODBUS_TEMP &&
                 ((!in->modbus_port && !in->modbus_rtu) || in->map < 0))
            why = "modbus-temperature needs modbus = tcp://host:port or rtu:PATH, and map";
        else if (in->driver != SIM_MODBUS_TEMP && !in->port[0] && !in->tcp_port)
            why = "no port";
        else if (in->driver == SIM_OPENTRONS && !in->tcp_port)
            why = "opentrons needs port = tcp://host:port (the robot-server is HTTP over TCP)";
        else if (in->driver == SIM_LICONIC && !in->rack_type[0] && !in->rack_types[0])
            why = "no rack_type or rack_types (the cassettes' racks, as labloopd needs them)";
        else if (in->driver == SIM_CYTOMAT && !in->cy_model_name[0])
            why = "a Cytomat needs model";
        char rerr[256];
        if (!why && in->driver == SIM_CYTOMAT) {
            in->cy_model = cytomat_model_find(in->cy_model_name);
            if (cytomat_cassettes_parse(in->rack_type[0] ? in->rack_type : NULL,
                                        in->rack_types[0] ? in->rack_types : NULL, in->ncassettes,
                                        &in->cy_cassettes, rerr, sizeof rerr) != LAB_OK)
                why = rerr;
        }
        if (!why && in->driver == SIM_LICONIC &&
            liconic_cassettes_parse(in->rack_type[0] ? in->rack_type : NULL,
                                    in->rack_types[0] ? in->rack_types : NULL, in->ncassettes,
                                    &in->cassettes, rerr, sizeof rerr) != LAB_OK)
            why = rerr;
        if (why) {
            snprintf(err, errcap, "%s:%d: instrument '%s': %s", path, in->line, in->id, why);
            return -1;
        }
    }
    return 0;
}
