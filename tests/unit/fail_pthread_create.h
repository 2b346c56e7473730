/*
 * fail_pthread_create.h - a pthread_create that fails on request, for tests.
 *
 * fail_pthread_create.c is linked only into test binaries, with
 * -Wl,--wrap=pthread_create: every pthread_create call from code linked into
 * the binary (the engine, the CLI) goes through it, while shared libraries
 * (OpenBLAS's own threads) call the real one.  Nothing of this ships in the
 * real `vitfit`.
 */
#ifndef VIT_TESTS_FAIL_PTHREAD_CREATE_H
#define VIT_TESTS_FAIL_PTHREAD_CREATE_H

/* From now on, the nth pthread_create call (1 = the next) fails with EAGAIN;
 * 0 disarms.  A binary that never calls this reads the count from the
 * environment variable VITFIT_TEST_FAIL_THREAD at its first call instead. */
void fail_pthread_create_arm(int nth);

/* pthread_create calls since the last arming (or since start). */
int fail_pthread_create_calls(void);

/* Threads started through the wrapper whose start routine has not returned:
 * after a failed start has unwound, 0 means nothing was left running. */
int fail_pthread_create_live(void);

#endif
