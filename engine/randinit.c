/* randinit.c - deterministic tensors shared with tools/reference (see randinit.h). */
#include "randinit.h"

#include <string.h>

uint64_t randinit_fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

uint64_t randinit_splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void randinit_fill(float *dst, size_t n, const char *name, uint64_t seed, double scale,
                   double offset)
{
    uint64_t h = randinit_fnv1a64(name) ^ seed;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(randinit_splitmix64(h + i) >> 40) * (1.0 / 16777216.0);
        dst[i] = (float)((2.0 * u - 1.0) * scale + offset);
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

void randinit_kind_for(const char *name, double *scale, double *offset)
{
    const char *last = strrchr(name, '.');
    const char *module_end = last ? last : name + strlen(name);
    /* the module part's last component, e.g. "norm1" in blocks.0.norm1.weight */
    const char *mod = module_end;
    while (mod > name && mod[-1] != '.')
        mod--;
    int is_norm = strncmp(mod, "norm", 4) == 0 || strncmp(mod, "fc_norm", 7) == 0;
    if (ends_with(name, "bias")) {
        *scale = 0.02;
        *offset = 0.0;
    } else if (is_norm && ends_with(name, ".weight")) {
        *scale = 0.1;
        *offset = 1.0;
    } else {
        *scale = 0.035;
        *offset = 0.0;
    }
}

void randinit_tensor(float *dst, size_t n, const char *name, uint64_t seed)
{
    double scale, offset;
    randinit_kind_for(name, &scale, &offset);
    randinit_fill(dst, n, name, seed, scale, offset);
}
