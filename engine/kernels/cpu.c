/*
 * cpu.c - instruction-set checks and the usable CPU count (see cpu.h).
 *
 * The CPU count is split in two: cpu_max_cpus / cpu_usable_from decide from
 * parsed inputs and touch nothing, so tests feed them synthetic masks and
 * cpu.max texts; cpu_usable_in walks a cgroup tree from a given root and a
 * given /proc/self/cgroup text, so tests build a fake tree in a temporary
 * directory; cpu_usable_count only gathers the real inputs
 * (sched_getaffinity, /proc/self/cgroup, /sys/fs/cgroup).
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_ALLOC */
#include "cpu.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

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

bool cpu_has_avx512_bf16(void)
{
    if (!cpu_has_avx512())
        return false;
#if defined(__x86_64__) && defined(VIT_HAVE_AVX512_KERNELS)
    /* CPUID leaf 7, sub-leaf 1, EAX bit 5; the OS's zmm state was checked
     * by cpu_has_avx512 */
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx))
        return false;
    return (eax >> 5) & 1u;
#else
    return false;
#endif
}

bool cpu_bf16_emulate_requested(void)
{
    const char *on = getenv("VITFIT_BF16_EMULATE");
    return on && *on && *on != '0';
}

/* ---- the decision, on parsed inputs ---- */

/* Reads a decimal number of at most 2^53 at *p and advances past it. */
static bool parse_count(const char **p, unsigned long long *out)
{
    const char *s = *p;
    unsigned long long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        v = v * 10 + (unsigned)(*s - '0');
        if (v > (1ull << 53))
            return false;
    }
    if (s == *p)
        return false;
    *p = s;
    *out = v;
    return true;
}

int cpu_max_cpus(const char *text)
{
    if (!text)
        return -1;
    const char *p = text;
    unsigned long long quota = 0, period = 0;
    bool unlimited = strncmp(p, "max", 3) == 0;
    if (unlimited)
        p += 3;
    else if (!parse_count(&p, &quota) || quota == 0)
        return -1;
    if (*p == ' ') {
        p++;
        if (!parse_count(&p, &period) || period == 0)
            return -1;
    } else if (!unlimited) {
        return -1; /* a quota needs its period */
    }
    if (*p == '\n')
        p++;
    if (*p != '\0')
        return -1;
    if (unlimited)
        return 0;
    /* rounded up: 1.5 CPUs of quota keep two threads busy part of the time */
    unsigned long long cpus = quota / period + (quota % period != 0);
    return cpus > INT_MAX ? INT_MAX : (int)cpus;
}

int cpu_usable_from(int affinity_cpus, const char *const *cpu_max, int levels)
{
    int n = affinity_cpus < 1 ? 1 : affinity_cpus;
    for (int i = 0; i < levels; i++) {
        int limit = cpu_max_cpus(cpu_max[i]);
        if (limit > 0 && limit < n)
            n = limit;
    }
    return n;
}

/* ---- gathering the inputs ---- */

/* CPUs in this thread's affinity mask (inherited from taskset, cpuset
 * cgroups, a container runtime), or the online count if that fails. */
static int affinity_cpus(void)
{
    for (int cpus = 1024; cpus <= (1 << 16); cpus *= 2) {
        cpu_set_t *set = CPU_ALLOC(cpus);
        if (!set)
            break;
        size_t size = CPU_ALLOC_SIZE(cpus);
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        CPU_FREE(set);
        if (errno != EINVAL) /* EINVAL: the kernel's mask is larger; retry */
            break;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

/* Reads at most len-1 bytes of a small file into buf (NUL-terminated). */
static bool read_small(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0;
}

enum { MAX_LEVELS = 32, TEXT = 64, PATH = 4200 };

/* buf = dir + "/" + file; false when it does not fit. */
static bool join_path(char *buf, const char *dir, const char *file)
{
    int n = snprintf(buf, PATH, "%s/%s", dir, file);
    return n > 0 && n < PATH;
}

/* Appends the cpu.max text of cgroup directory dir (v2), or the v1 CFS quota
 * and period written the same way, to texts. */
static void read_level(const char *dir, bool v2, char (*texts)[TEXT], int *levels)
{
    char path[PATH];
    if (*levels >= MAX_LEVELS)
        return;
    char *t = texts[*levels];
    if (v2) {
        if (join_path(path, dir, "cpu.max") && read_small(path, t, TEXT))
            (*levels)++;
        return;
    }
    char quota[TEXT / 2 - 1], period[TEXT / 2 - 1];
    if (!join_path(path, dir, "cpu.cfs_quota_us") || !read_small(path, quota, sizeof quota) ||
        !join_path(path, dir, "cpu.cfs_period_us") || !read_small(path, period, sizeof period))
        return;
    quota[strcspn(quota, "\n")] = '\0';
    period[strcspn(period, "\n")] = '\0';
    /* v1 writes -1 for no limit */
    int n = snprintf(t, TEXT, "%s %s", strcmp(quota, "-1") == 0 ? "max" : quota, period);
    if (n > 0 && n < TEXT)
        (*levels)++;
}

/* Reads the limit of cgroup `path` (as /proc/self/cgroup names it) and of
 * each ancestor up to the mount's root; in a container with its own cgroup
 * namespace the path is "/" and the root is the container's cgroup.  Why every
 * level: a quota on a parent (a container's or a systemd slice's) binds its
 * children, whose own cpu.max usually says "max". */
static void read_hierarchy(const char *mount, const char *path, bool v2, char (*texts)[TEXT],
                           int *levels)
{
    char cur[PATH], dir[PATH];
    int n = snprintf(cur, sizeof cur, "%s", strcmp(path, "/") == 0 ? "" : path);
    if (n < 0 || n >= PATH)
        return;
    for (;;) {
        n = snprintf(dir, sizeof dir, "%s%s", mount, cur);
        if (n > 0 && n < PATH)
            read_level(dir, v2, texts, levels);
        char *slash = strrchr(cur, '/');
        if (!slash)
            break;
        *slash = '\0'; /* up to the parent */
    }
}

/* True when the comma-separated list names controller `name` exactly (so
 * "cpuacct" or "cpuset" is not "cpu"). */
static bool has_controller(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list;; p++) {
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return true;
        if (!(p = strchr(p, ',')))
            return false;
    }
}

int cpu_usable_in(int mask_cpus, const char *cgroup_root, const char *proc_cgroup)
{
    char texts[MAX_LEVELS][TEXT];
    const char *ptrs[MAX_LEVELS];
    int levels = 0;
    char line[PATH], mount[PATH];
    for (const char *p = proc_cgroup ? proc_cgroup : ""; *p;) {
        /* one line "ID:CONTROLLERS:PATH"; a line too long for PATH is skipped */
        size_t len = strcspn(p, "\n");
        bool fits = len < sizeof line;
        if (fits) {
            memcpy(line, p, len);
            line[len] = '\0';
        }
        p += len + (p[len] == '\n');
        if (!fits)
            continue;
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/')
            continue;
        *c1 = *c2 = '\0';
        const char *controllers = c1 + 1, *path = c2 + 1;
        int n = -1;
        bool v2 = strcmp(line, "0") == 0 && *controllers == '\0';
        if (v2) {
            /* unified hierarchy: the mount itself, or beside v1 (hybrid) */
            n = snprintf(mount, sizeof mount, "%s/cgroup.controllers", cgroup_root);
            bool pure = n > 0 && n < PATH && access(mount, F_OK) == 0;
            n = snprintf(mount, sizeof mount, "%s%s", cgroup_root, pure ? "" : "/unified");
        } else if (has_controller(controllers, "cpu")) {
            n = snprintf(mount, sizeof mount, "%s/cpu", cgroup_root);
        }
        if (n > 0 && n < PATH)
            read_hierarchy(mount, path, v2, texts, &levels);
    }
    for (int i = 0; i < levels; i++)
        ptrs[i] = texts[i];
    return cpu_usable_from(mask_cpus, ptrs, levels);
}

int cpu_usable_count(void)
{
    /* /proc/self/cgroup: a line per v1 hierarchy (a dozen) plus the unified one */
    enum { PROC_TEXT = 1 << 15 };
    char *text = malloc(PROC_TEXT);
    if (text && !read_small("/proc/self/cgroup", text, PROC_TEXT))
        text[0] = '\0';
    else if (text && strlen(text) == PROC_TEXT - 1) {
        char *last = strrchr(text, '\n'); /* cut off a line read in part */
        *(last ? last + 1 : text) = '\0';
    }
    int n = cpu_usable_in(affinity_cpus(), "/sys/fs/cgroup", text);
    free(text);
    return n;
}
