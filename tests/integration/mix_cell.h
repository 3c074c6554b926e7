/* What the closed-loop tests share: a cell of labloop-sim instruments without an arm (the STAR
 * with substrate and inhibitor, a Liconic taking plates from it, a BioTek reading them), and the
 * workflow a campaign's plates run (each well its own volumes, a short incubation, a read). */
#ifndef LAB_TESTS_MIX_CELL_H
#define LAB_TESTS_MIX_CELL_H

#include "tests/harness/harness.h"

#include <stdio.h>

static const char mix_workflow[] =
    "{\"name\":\"mix\",\"steps\":["
    "{\"name\":\"dispense\",\"op\":\"dispense\",\"on\":\"liquid_handler\",\"duration_s\":600,"
    "\"params\":{\"design\":true}},"
    "{\"name\":\"incubate\",\"op\":\"incubate\",\"on\":\"incubator\",\"duration_s\":120,"
    "\"params\":{\"temperature_c\":37},\"start_within_s\":900},"
    "{\"name\":\"read\",\"op\":\"read_absorbance\",\"on\":\"plate_reader\",\"duration_s\":90,"
    "\"params\":{\"wavelength_nm\":450},\"start_within_s\":120}],"
    "\"on_failure\":{\"action\":\"retry\",\"retries\":1}}";

/* The cell's [instrument] sections: ptys under dir, the reader on TCP port reader_port. */
static inline void mix_cell_sections(char *out, size_t cap, const char *dir, int reader_port)
{
    snprintf(out, cap,
             "[instrument inc1]\ndriver = liconic-stx\nrack_type = liconic_rack_17mm_22\nport = "
             "%s/inc1\n"
             "sim_step_seconds = 2\ncapacity = 8\nsim_from = star1\nsim_to = reader1\n"
             "[instrument star1]\ndriver = hamilton-star\nport = %s/star1\n"
             "sim_reagents = substrate,inhibitor\nsim_step_seconds = 2\n"
             "reagents = substrate,inhibitor\n"
             "[instrument reader1]\ndriver = biotek-synergy\nport = tcp://127.0.0.1:%d\n",
             dir, dir, reader_port);
}

/* The daemon's MQTT topic root, from its config (the harness numbers the cells). */
static inline void mix_topic_root(const h_daemon_t *d, char *out, size_t cap)
{
    FILE *f = fopen(d->conf, "r");
    char line[256];
    out[0] = '\0';
    while (f && fgets(line, sizeof line, f)) {
        char cell[64];
        if (sscanf(line, "cell = %63s", cell) == 1)
            snprintf(out, cap, "labloop/v1/lab/%s", cell);
    }
    if (f)
        fclose(f);
}

#endif
