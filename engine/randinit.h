/*
 * randinit.h - deterministic pseudo-random tensors that PyTorch can reproduce.
 *
 * Tests and benchmarks need real-shaped ViT weights without shipping 340 MB
 * files.  Element i of the tensor called `name` (canonical name, see vit.h) is
 *
 *   h    = fnv1a64(name) ^ seed
 *   z    = splitmix64(h + i)                    (uint64 wrap-around)
 *   u    = (z >> 40) * 2^-24                    (exact float in [0, 1))
 *   v    = (float)((2u - 1) * scale + offset)   (computed in double)
 *
 * with (scale, offset) from randinit_kind_for(name):
 *   names ending in "bias"                       -> (0.02, 0)
 *   LayerNorm gains (norm*.weight, fc_norm.weight,
 *   norm_pre.weight)                             -> (0.1, 1)
 *   everything else                              -> (0.035, 0)
 * tools/reference/randinit.py implements the same recipe in numpy.
 */
#ifndef VIT_RANDINIT_H
#define VIT_RANDINIT_H

#include <stddef.h>
#include <stdint.h>

uint64_t randinit_fnv1a64(const char *s);
uint64_t randinit_splitmix64(uint64_t x);

/* Fills dst[0..n) per the recipe above with explicit scale and offset. */
void randinit_fill(float *dst, size_t n, const char *name, uint64_t seed, double scale,
                   double offset);

/* The (scale, offset) rule above for a canonical tensor name. */
void randinit_kind_for(const char *name, double *scale, double *offset);

/* randinit_fill with randinit_kind_for(name). */
void randinit_tensor(float *dst, size_t n, const char *name, uint64_t seed);

#endif
