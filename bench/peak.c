/* vitfit-peak: this host's multiply-add ceiling, so benchmark figures can be quoted as a share
 * of it.  Runs T threads of independent AVX-512 fp32 FMAs, then of vdpbf16ps where the CPU has
 * it, and prints GFLOP/s (one multiply-add = 2 flops; vdpbf16ps does two per fp32 lane).
 *
 *   vitfit-peak [THREADS] [--json]        (THREADS defaults to 2)
 *
 * Dev-only (bench/README.md).  The loops keep 12 accumulators in flight, more than the
 * FMA latency times the issue width of any AVX-512 core we have seen, and repeat until a
 * run lasts 0.3 s; the best of five runs is printed, as a peak is a best case. */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ACCUMULATORS = 12, MAX_THREADS = 256 };

typedef double (*peak_loop)(long iterations);

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Returns a value derived from every accumulator so the compiler keeps all the FMAs. */
__attribute__((target("avx512f"))) static double loop_fp32(long iterations)
{
    __m512 acc[ACCUMULATORS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < ACCUMULATORS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iterations; n++)
        for (int i = 0; i < ACCUMULATORS; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 sum = acc[0];
    for (int i = 1; i < ACCUMULATORS; i++)
        sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

#if defined(__GNUC__) && (__GNUC__ >= 10 || defined(__clang__))
#define HAVE_BF16_INTRINSICS 1
__attribute__((target("avx512f,avx512bf16"))) static double loop_bf16(long iterations)
{
    __m512 acc[ACCUMULATORS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);
    for (int i = 0; i < ACCUMULATORS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iterations; n++)
        for (int i = 0; i < ACCUMULATORS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __m512 sum = acc[0];
    for (int i = 1; i < ACCUMULATORS; i++)
        sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}
#endif

struct peak_job {
    peak_loop loop;
    long iterations;
    double sink;
};

static void *peak_thread(void *arg)
{
    struct peak_job *job = arg;
    job->sink = job->loop(job->iterations);
    return NULL;
}

/* Seconds for `threads` threads each running `iterations` of `loop` at once. */
static double run_threads(peak_loop loop, long iterations, int threads)
{
    pthread_t ids[MAX_THREADS];
    struct peak_job jobs[MAX_THREADS];
    double start = now_seconds();
    int started = 0;
    for (; started < threads; started++) {
        jobs[started] = (struct peak_job){ loop, iterations, 0 };
        if (pthread_create(&ids[started], NULL, peak_thread, &jobs[started]) != 0)
            break;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ids[i], NULL);
    if (started < threads) {
        fprintf(stderr, "vitfit-peak: could not start %d threads\n", threads);
        exit(1);
    }
    return now_seconds() - start;
}

/* GFLOP/s of `loop`, where one iteration is ACCUMULATORS instructions of `flops_per_op`. */
static double measure(peak_loop loop, double flops_per_op, int threads)
{
    long iterations = 1 << 16;
    while (run_threads(loop, iterations, threads) < 0.3 && iterations < (1L << 40))
        iterations *= 2;
    double best = 1e300;
    for (int run = 0; run < 5; run++) {
        double seconds = run_threads(loop, iterations, threads);
        if (seconds < best)
            best = seconds;
    }
    return (double)threads * (double)iterations * ACCUMULATORS * flops_per_op / best * 1e-9;
}

int main(int argc, char **argv)
{
    int threads = 2;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            char *end;
            long t = strtol(argv[i], &end, 10);
            if (*end != '\0' || t < 1 || t > MAX_THREADS) {
                fprintf(stderr, "usage: vitfit-peak [THREADS 1..%d] [--json]\n", MAX_THREADS);
                return 2;
            }
            threads = (int)t;
        }
    }
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        fprintf(stderr, "vitfit-peak: this CPU has no AVX-512\n");
        return 1;
    }
    /* 16 lanes x one multiply-add (2 flops) per FMA; vdpbf16ps does two per lane. */
    double fp32 = measure(loop_fp32, 32.0, threads);
    double bf16 = 0;
#ifdef HAVE_BF16_INTRINSICS
    if (__builtin_cpu_supports("avx512bf16"))
        bf16 = measure(loop_bf16, 64.0, threads);
#endif
    if (json) {
        printf("{\"threads\":%d,\"fp32_gflops\":%.1f,\"bf16_gflops\":%.1f}\n", threads, fp32, bf16);
    } else {
        printf("peak on %d threads: fp32 FMA %.1f GFLOP/s", threads, fp32);
        if (bf16 > 0)
            printf(", bf16 vdpbf16ps %.1f GFLOP/s (x%.2f)\n", bf16, bf16 / fp32);
        else
            printf(", bf16 n/a (no avx512_bf16)\n");
    }
    return 0;
}
