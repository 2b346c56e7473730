/*
 * cpu.h - which instruction-set paths this CPU may take, and how many CPUs
 * this process may actually use.
 */
#ifndef VIT_CPU_H
#define VIT_CPU_H

#include <stdbool.h>

/* True when the CPU runs AVX-512 F/VL/BW/DQ and the environment does not
 * set VITFIT_NO_AVX512 (which forces the portable OpenBLAS + scalar path, so
 * tests can run both on one machine). */
bool cpu_has_avx512(void);

/* True when cpu_has_avx512() and the CPU has avx512_bf16 (vdpbf16ps). */
bool cpu_has_avx512_bf16(void);

/* True when VITFIT_BF16_EMULATE is set (and not "0"): run bf16 products on
 * an emulation of vdpbf16ps where the CPU lacks it, for tests and accuracy
 * checks; otherwise such a CPU refuses bf16. */
bool cpu_bf16_emulate_requested(void);

/* CPUs one cgroup v2 `cpu.max` text allows: "QUOTA PERIOD" (microseconds)
 * gives ceil(QUOTA / PERIOD), at least 1; "max" or "max PERIOD" gives 0 (no
 * limit); anything else -- empty, signs, zero or missing fields, trailing
 * garbage, numbers past 2^53 -- gives -1.  A trailing newline is allowed. */
int cpu_max_cpus(const char *cpu_max);

/* The CPUs a process may use, from parsed inputs: affinity_cpus (CPUs in its
 * affinity mask; < 1 means unknown and counts as 1) lowered to the smallest
 * limit among cpu_max[0..levels) (the cpu.max texts of its cgroup and every
 * ancestor; a NULL text, "max" or a malformed one limits nothing).  Pure, so
 * tests can feed it any mask size and file contents. */
int cpu_usable_from(int affinity_cpus, const char *const *cpu_max, int levels);

/* cpu_usable_from(mask_cpus, ...) over the cgroup tree mounted at
 * cgroup_root (normally /sys/fs/cgroup) for a process whose
 * /proc/self/cgroup reads proc_cgroup
 * (NULL: no lines): for the unified line "0::PATH", the cpu.max of PATH and
 * of every ancestor up to the root, under cgroup_root itself when it holds
 * cgroup.controllers (v2) and under cgroup_root/unified otherwise (hybrid);
 * for a v1 line whose controller list names "cpu" exactly, the
 * cpu.cfs_quota_us / cpu.cfs_period_us of PATH and its ancestors under
 * cgroup_root/cpu.  Missing files limit nothing.  Reads only files. */
int cpu_usable_in(int mask_cpus, const char *cgroup_root, const char *proc_cgroup);

/* cpu_usable_in over this process's sched_getaffinity mask, /sys/fs/cgroup
 * and /proc/self/cgroup.  Unlike _SC_NPROCESSORS_ONLN this honours `taskset`
 * and a container's CPU quota.  At least 1; reads a few small files per call. */
int cpu_usable_count(void);

#endif
