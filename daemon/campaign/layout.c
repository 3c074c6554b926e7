/* A campaign plate's geometry, layout and quality control: pure functions, no engine state. */
#include "daemon/campaign/layout.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool lab_well_parse(const char *name, int format, int *row, int *col)
{
    int rows = format == 384 ? 16 : 8, cols = format == 384 ? 24 : 12;
    if (!name || !isalpha((unsigned char)name[0]) || !isdigit((unsigned char)name[1]))
        return false;
    char *end;
    long c = strtol(name + 1, &end, 10);
    int r = toupper((unsigned char)name[0]) - 'A';
    if (*end || name[1] == '0' || r < 0 || r >= rows || c < 1 || c > cols)
        return false;
    *row = r;
    *col = (int)c;
    return true;
}

void lab_well_name(int row, int col, char out[LAB_WELL_NAME])
{
    snprintf(out, LAB_WELL_NAME, "%c%d", 'A' + (row < 0 || row > 15 ? 0 : row),
             col < 1 || col > 24 ? 1 : col);
}

static bool listed(const json_t *wells, int format, int row, int col)
{
    size_t i;
    json_t *w;
    json_array_foreach(wells, i, w)
    {
        int r, c;
        if (lab_well_parse(json_string_value(w), format, &r, &c) && r == row && c == col)
            return true;
    }
    return false;
}

int lab_layout_free_wells(int format, const json_t *positive_wells, const json_t *negative_wells,
                          char (*wells)[LAB_WELL_NAME], int cap)
{
    int rows = format == 384 ? 16 : 8, cols = format == 384 ? 24 : 12, n = 0;
    for (int c = 1; c <= cols; c++)
        for (int r = 0; r < rows; r++) {
            if (listed(positive_wells, format, r, c) || listed(negative_wells, format, r, c))
                continue;
            if (n < cap)
                lab_well_name(r, c, wells[n]);
            n++;
        }
    return n;
}

static void mean_sd(const double *v, int n, double *mu, double *sd)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mu = s / n;
    for (int i = 0; i < n; i++)
        ss += (v[i] - *mu) * (v[i] - *mu);
    *sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

bool lab_qc_compute(const double *pos, int npos, const double *neg, int nneg, lab_qc_t *out,
                    char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    out->n_pos = npos;
    out->n_neg = nneg;
    if (npos < 2 || nneg < 2) {
        snprintf(why, whylen,
                 "the plate has %d positive and %d negative control values; QC needs "
                 "at least 2 of each",
                 npos, nneg);
        return false;
    }
    mean_sd(pos, npos, &out->mu_pos, &out->sd_pos);
    mean_sd(neg, nneg, &out->mu_neg, &out->sd_neg);
    double range = fabs(out->mu_pos - out->mu_neg);
    if (!(range > 0) || !isfinite(range)) {
        snprintf(why, whylen,
                 "the positive and negative controls have the same mean (%.4g): "
                 "nothing to normalise against",
                 out->mu_pos);
        out->z_prime = -INFINITY;
        return false;
    }
    out->z_prime = 1 - 3 * (out->sd_pos + out->sd_neg) / range;
    return true;
}

double lab_qc_normalise(const lab_qc_t *q, double x)
{
    return (x - q->mu_neg) / (q->mu_pos - q->mu_neg);
}
