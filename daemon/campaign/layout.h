/* A campaign's plate layout, as pure functions: well names, which wells are free around the
 * controls, and each plate's quality and normalisation from its control wells. */
#ifndef LAB_CAMPAIGN_LAYOUT_H
#define LAB_CAMPAIGN_LAYOUT_H

#include <jansson.h>
#include <stdbool.h>

#define LAB_WELL_NAME 5 /* "P24" and a NUL */

/* "B7" on a plate of format 96 or 384: 0-based row and 1-based column; false when off the plate. */
bool lab_well_parse(const char *name, int format, int *row, int *col);
void lab_well_name(int row, int col, char out[LAB_WELL_NAME]);

/* The wells of the format that hold no control, column by column (A1, B1, ..., H1, A2, ...):
 * candidates go there in this order. Returns how many (at most cap were written). */
int lab_layout_free_wells(int format, const json_t *positive_wells, const json_t *negative_wells,
                          char (*wells)[LAB_WELL_NAME], int cap);

/* A plate's controls: means and sample standard deviations, and
 * Z' = 1 - 3 (sd_pos + sd_neg) / |mu_pos - mu_neg|. */
typedef struct lab_qc {
    double mu_pos, sd_pos, mu_neg, sd_neg;
    double z_prime;
    int n_pos, n_neg;
} lab_qc_t;

/* false (with why) when a control has fewer than 2 values or the two means are equal (the
 * plate cannot be normalised). */
bool lab_qc_compute(const double *pos, int npos, const double *neg, int nneg, lab_qc_t *out,
                    char *why, size_t whylen);
/* (x - mu_neg) / (mu_pos - mu_neg): 0 at the negative controls, 1 at the positive ones. */
double lab_qc_normalise(const lab_qc_t *q, double x);

#endif
