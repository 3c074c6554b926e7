/* Sobol points: direction numbers from Joe and Kuo's primitive polynomials and initial m_k
 * (new-joe-kuo-6.21201, dimensions 2..20; dimension 1 is van der Corput), the Gray-code
 * recurrence x_{i+1} = x_i XOR v_c with c the lowest zero bit of i, and a seek that builds x_i
 * straight from the bits of gray(i). */
#include "learner/sobol.h"

#include "core/err.h"

#include <string.h>

/* s (degree), a (the polynomial's inner coefficients), m_1..m_s, for dimensions 2..20. */
static const struct {
    int s, a;
    uint32_t m[7];
} joe_kuo[LAB_SOBOL_MAXDIM - 1] = {
    {1, 0, {1}},
    {2, 1, {1, 3}},
    {3, 1, {1, 3, 1}},
    {3, 2, {1, 1, 1}},
    {4, 1, {1, 1, 3, 3}},
    {4, 4, {1, 3, 5, 13}},
    {5, 2, {1, 1, 5, 5, 17}},
    {5, 4, {1, 1, 5, 5, 5}},
    {5, 7, {1, 1, 7, 11, 19}},
    {5, 11, {1, 1, 5, 1, 1}},
    {5, 13, {1, 1, 1, 3, 11}},
    {5, 14, {1, 3, 5, 5, 31}},
    {6, 1, {1, 3, 3, 9, 7, 49}},
    {6, 13, {1, 1, 1, 15, 21, 21}},
    {6, 16, {1, 3, 1, 13, 27, 49}},
    {6, 19, {1, 1, 1, 15, 7, 5}},
    {6, 22, {1, 3, 1, 15, 13, 25}},
    {6, 25, {1, 1, 5, 5, 19, 61}},
    {7, 1, {1, 3, 7, 11, 23, 15, 103}},
};

static uint64_t splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int lab_sobol_init(lab_sobol_t *s, int dim, uint64_t seed)
{
    if (dim < 1 || dim > LAB_SOBOL_MAXDIM)
        return LAB_EINVAL;
    memset(s, 0, sizeof *s);
    s->dim = dim;
    for (int k = 0; k < LAB_SOBOL_BITS; k++)
        s->v[0][k] = 1u << (LAB_SOBOL_BITS - 1 - k);
    for (int j = 1; j < dim; j++) {
        int deg = joe_kuo[j - 1].s, a = joe_kuo[j - 1].a;
        uint32_t *v = s->v[j];
        for (int k = 0; k < deg && k < LAB_SOBOL_BITS; k++)
            v[k] = joe_kuo[j - 1].m[k] << (LAB_SOBOL_BITS - 1 - k);
        for (int k = deg; k < LAB_SOBOL_BITS; k++) {
            v[k] = v[k - deg] ^ (v[k - deg] >> deg);
            for (int q = 1; q < deg; q++)
                if ((a >> (deg - 1 - q)) & 1)
                    v[k] ^= v[k - q];
        }
    }
    if (seed) {
        uint64_t st = seed;
        for (int j = 0; j < dim; j++)
            s->shift[j] = (uint32_t)(splitmix(&st) >> 32);
    }
    return 0;
}

void lab_sobol_skip(lab_sobol_t *s, uint64_t n)
{
    s->index += n;
    uint64_t g = s->index ^ (s->index >> 1);
    for (int j = 0; j < s->dim; j++) {
        uint32_t x = 0;
        for (int k = 0; k < LAB_SOBOL_BITS; k++)
            if ((g >> k) & 1)
                x ^= s->v[j][k];
        s->x[j] = x;
    }
}

void lab_sobol_next(lab_sobol_t *s, double *point)
{
    for (int j = 0; j < s->dim; j++)
        point[j] = (double)(s->x[j] ^ s->shift[j]) / 4294967296.0;
    int c = 0;
    while (c < LAB_SOBOL_BITS - 1 && ((s->index >> c) & 1))
        c++;
    for (int j = 0; j < s->dim; j++)
        s->x[j] ^= s->v[j][c];
    s->index++;
}
