/* Simulated BioTek Synergy: the single-character commands the codec knows with ACK/ETX framing,
 * answered as PyLabRobot's transcripts of real readers show (biotek_tests.py). A command taking
 * a parameter is ACKed alone first, and its parameter is answered without ACK: the plate
 * geometry ('y') by a bare ETX, the read definition ('D') by a 37-digit status and ETX, the focal
 * height ('t') by "0000" ETX, the others ('g' set point, '&', 'i') by a bare ETX. A command
 * without one answers ACK "0000" ETX unless it has its own reply: 'e' version, 'C' serial number,
 * 'h' temperature, 'O' the status followed by the result body of the last 'D' definition, values
 * from the world (the plate named by sim_plate, sim_wells 96 or 384). A parameter the reader
 * cannot take (a bad definition or geometry) and an injected "error" leave the command
 * unanswered, as the reader does with a command it cannot execute. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sim/device.h"
#include "sim/log.h"

#define SIM_BIOTEK_ROOM_C 23.6 /* what PyLabRobot's transcripts read ('h': "2360000") */

/* The status of PyLabRobot's recorded absorbance read: the fields are not documented, so every
 * accepted definition gets these digits. */
static const char read_status[] = "0350000000000000010000000000490300000";

static void send_payload(sim_inst_t *in, const char *payload)
{
    char buf[256];
    int n = biotek_encode_reply(payload, buf, sizeof buf);
    if (n > 0)
        sim_inst_send(in, buf, (size_t)n);
}

/* The answer to a parameter: no ACK. */
static void send_status(sim_inst_t *in, const char *payload)
{
    char buf[64];
    int n = biotek_encode_status(payload, buf, sizeof buf);
    if (n > 0)
        sim_inst_send(in, buf, (size_t)n);
}

static void run_read(sim_inst_t *in)
{
    static biotek_plate_t plate; /* large; the loop is single-threaded */
    static char body[BIOTEK_FRAME_MAX + 1];
    memset(&plate, 0, sizeof plate);
    plate.rows = in->cfg->wells == 384 ? 16 : 8;
    plate.cols = in->cfg->wells == 384 ? 24 : 12;
    /* Incubation is accounted lazily; bring it up to now before the values depend on it. */
    for (int i = 0; i < in->sim->cfg.n; i++)
        if (in->sim->cfg.inst[i].driver == SIM_LICONIC && in->sim->inst[i].flags)
            sim_liconic_tick(&in->sim->inst[i]);
        else if (in->sim->cfg.inst[i].driver == SIM_CYTOMAT && !in->sim->inst[i].replay)
            sim_cytomat_tick(&in->sim->inst[i]);
    bool flow = false;
    for (int i = 0; i < in->sim->cfg.n; i++)
        flow |= strcmp(in->sim->cfg.inst[i].to, in->cfg->id) == 0;
    sim_plate_t *p = flow ? sim_world_reader_plate(&in->sim->world, in->cfg->id) : NULL;
    if (!p)
        p = sim_world_plate(&in->sim->world, in->cfg->plate);
    for (int r = 0; r < plate.rows; r++)
        for (int c = 0; c < plate.cols; c++) {
            plate.state[r][c] = p ? BIOTEK_WELL_VALUE : BIOTEK_WELL_NOVALUE;
            if (p)
                plate.value[r][c] = sim_world_absorbance(&in->sim->world, p, r, c, in->nm);
        }
    biotek_rect_t rect = in->rect;
    if (rect.row1 > plate.rows || rect.col1 > plate.cols || rect.row0 < 1) {
        rect = (biotek_rect_t){1, 1, plate.rows, plate.cols};
    }
    send_payload(in, "0000");
    int n = biotek_encode_body(&plate, &rect, BIOTEK_FMT_ABSORBANCE, 228, body, sizeof body);
    if (n > 0)
        sim_inst_send(in, body, (size_t)n);
    else
        sim_warn("biotek", "%s: body: %s", in->cfg->id, lab_strerror(n));
}

static int on_cmd(void *ud, const biotek_cmd_t *cmd, int phase, int err)
{
    sim_inst_t *in = ud;
    if (err) {
        sim_warn("biotek", "%s: %s", in->cfg->id, lab_strerror(err));
        return 0;
    }
    const biotek_cmd_info_t *info = biotek_cmd_info(cmd->letter);
    if (phase == 0) {
        if (info && info->param != BIOTEK_PARAM_NONE) {
            const char ack = BIOTEK_ACK;
            sim_inst_send(in, &ack, 1);
        }
        return 0;
    }
    if (in->error_next) {
        in->error_next = 0;
        return 0;
    }
    char buf[64];
    int n;
    switch (cmd->letter) {
    case 'x':
        break;
    case 'e':
        send_payload(in, "1650200  Version 1.04   0000");
        break;
    case 'C':
        send_payload(in, "00000000        0000");
        break;
    case 'h':
        n = biotek_encode_temperature(in->reader_temp, buf, sizeof buf);
        if (n > 0)
            sim_inst_send(in, buf, (size_t)n);
        break;
    case 'g': {
        double c;
        if (biotek_parse_setpoint(cmd->param, cmd->param_len, &c) != LAB_OK) {
            sim_warn("biotek", "%s: set point '%s' refused", in->cfg->id, cmd->param);
            break;
        }
        /* The incubator is taken to reach its set point at once; off, the room's temperature. */
        in->reader_temp = c > 0 ? c : SIM_BIOTEK_ROOM_C;
        send_status(in, "");
        break;
    }
    case 'y': {
        biotek_geometry_t g;
        int rc = biotek_parse_geometry(cmd->param, cmd->param_len, &g);
        if (rc != LAB_OK) {
            sim_warn("biotek", "%s: plate geometry: %s", in->cfg->id, lab_strerror(rc));
            break;
        }
        send_status(in, "");
        break;
    }
    case 'D': {
        biotek_rect_t r;
        int nm;
        int rc = biotek_parse_absorbance(cmd->param, cmd->param_len, &r, &nm);
        if (rc != LAB_OK) {
            sim_warn("biotek", "%s: read definition: %s", in->cfg->id, lab_strerror(rc));
            break;
        }
        in->rect = r;
        in->nm = nm;
        send_status(in, read_status);
        break;
    }
    case 't':
        send_status(in, "0000");
        break;
    case '&':
    case 'i':
        send_status(in, "");
        break;
    case 'O':
        run_read(in);
        break;
    default:
        send_payload(in, "0000");
        break;
    }
    return 0;
}

void sim_biotek_feed(sim_inst_t *in, const uint8_t *data, size_t n)
{
    biotek_cmd_rx_feed(&in->brx, data, n, on_cmd, in);
}

void sim_biotek_init(sim_inst_t *in)
{
    biotek_cmd_rx_init(&in->brx);
    in->reader_temp = SIM_BIOTEK_ROOM_C;
    in->nm = 450;
    in->rect =
        (biotek_rect_t){1, 1, in->cfg->wells == 384 ? 16 : 8, in->cfg->wells == 384 ? 24 : 12};
}
