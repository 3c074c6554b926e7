/* Sobol low-discrepancy sequence in dimensions 1..20 with the Joe–Kuo (2008) direction numbers,
 * generated in Gray-code order (point 0 is the origin), with an optional random digital shift:
 * every coordinate's 32-bit integer is XORed with a per-dimension word drawn from the seed, which
 * keeps the net's stratification while moving it off the corner. Pure C, no shared state. */
#ifndef LAB_LEARNER_SOBOL_H
#define LAB_LEARNER_SOBOL_H

#include <stdint.h>

#define LAB_SOBOL_MAXDIM 20
#define LAB_SOBOL_BITS 32

typedef struct lab_sobol {
    int dim;
    uint64_t index;                               /* the next point handed out */
    uint32_t v[LAB_SOBOL_MAXDIM][LAB_SOBOL_BITS]; /* direction numbers, left-aligned */
    uint32_t x[LAB_SOBOL_MAXDIM];                 /* the point at index, unshifted */
    uint32_t shift[LAB_SOBOL_MAXDIM];             /* digital shift, 0 without a seed */
} lab_sobol_t;

/* Returns 0, or LAB_EINVAL (core/err.h) when dim is outside 1..20. seed 0 = no shift (the published
 * points). */
int lab_sobol_init(lab_sobol_t *s, int dim, uint64_t seed);
/* Moves n points ahead (O(dim * 32), whatever n). */
void lab_sobol_skip(lab_sobol_t *s, uint64_t n);
/* Writes the next point, dim values in [0,1). After 2^32 points the sequence wraps. */
void lab_sobol_next(lab_sobol_t *s, double *point);

#endif
