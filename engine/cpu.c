/* cpu.c - instruction-set checks (see cpu.h). */
#include "cpu.h"

#include <stdlib.h>

bool cpu_has_avx512(void)
{
    const char *off = getenv("VITFIT_NO_AVX512");
    if (off && *off && *off != '0')
        return false;
#if defined(__x86_64__) && defined(VIT_HAVE_AVX512_KERNELS)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}
