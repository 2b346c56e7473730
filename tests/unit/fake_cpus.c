/*
 * fake_cpus.c - a test-only stand-in for cpu_usable_count (engine/kernels/cpu.h).
 *
 * Linked with -Wl,--wrap=cpu_usable_count into a test build of `vitfit`
 * (never installed): when $VITFIT_TEST_CPUS is set, the CLI sees that many
 * usable CPUs, so a test can check its thread defaults as on a machine of
 * that size (the CI machine may have 2).  Unset, the real count is used.
 */
#include <stdlib.h>

int __real_cpu_usable_count(void);
int __wrap_cpu_usable_count(void);

int __wrap_cpu_usable_count(void)
{
    const char *n = getenv("VITFIT_TEST_CPUS");
    return n ? atoi(n) : __real_cpu_usable_count();
}
