/*
 * cpu.h - which instruction-set paths this CPU may take.
 */
#ifndef VIT_CPU_H
#define VIT_CPU_H

#include <stdbool.h>

/* True when the CPU runs AVX-512 F/VL/BW/DQ and the environment does not
 * set VITFIT_NO_AVX512 (which forces the portable OpenBLAS + scalar path, so
 * tests can run both on one machine). */
bool cpu_has_avx512(void);

#endif
