/*
 * test_cli_resume.c - `vitfit train --checkpoint-dir / --resume` as a user
 * runs it: the real binary, killed with SIGKILL mid-run, then resumed.
 *
 * - A run killed (kill -9) after its first checkpoint and resumed with
 *   --resume ends with the same task as the uninterrupted run with the same
 *   flags: every tensor bit-identical and every metadata entry equal except
 *   "created" (a wall-clock timestamp, so the files themselves may differ by
 *   that string).  The checkpoint the kill leaves behind is checked to be
 *   mid-run (step < total), so the resume really starts part-way.
 * - --resume of a directory with no checkpoint: exit 1, one line.
 * - --resume with another --lr: exit 1, the line names lr.
 * - --checkpoint-every-steps without --checkpoint-dir: exit 2.
 * - --method full with --checkpoint-dir: exit 2, the line says why.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "run_cli.h"
#include "safetensors.h"
#include "test_util.h"
#include "trainer.h"

#define FASHION_TEST "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
#define FASHION_NAMES "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"

static char tmpdir[64], model_dir[4096];

static const char *tmp_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

/* The flags every run of the crash test shares (NULL-terminated). */
#define RUN_FLAGS                                                                              \
    "--model", model_dir, "--train", FASHION_TEST, "--class-names", FASHION_NAMES,             \
        "--limit-train", "160", "--batch-size", "8", "--epochs", "2", "--seed", "7",           \
        "--head", "new", "--threads", "1", "--loader-threads", "2", "--log-every", "0"

/* Starts vitfit with argv (argv[0] is replaced by $VITFIT_BIN), its output
 * to files in tmpdir; the pid, or -1. */
static pid_t spawn_vitfit(char **argv)
{
    const char *bin = getenv("VITFIT_BIN");
    argv[0] = (char *)(bin ? bin : "vitfit");
    char out[256], err[256];
    tmp_path(out, sizeof out, "child.out");
    tmp_path(err, sizeof err, "child.err");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    CHECKF(rc == 0, "posix_spawn %s: %s", argv[0], strerror(rc));
    return rc == 0 ? pid : -1;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Every tensor of a and b bit-identical, every metadata entry equal except
 * "created"; says what differs.  1 when they match. */
static int same_task(const char *a, const char *b)
{
    st_file *fa = NULL, *fb = NULL;
    vit_error err = {0};
    int ok = st_open(a, &fa, &err) == VIT_OK;
    CHECKF(ok, "%s: %s", a, err.message);
    ok = ok && st_open(b, &fb, &err) == VIT_OK;
    CHECKF(!fa || fb, "%s: %s", b, err.message);
    if (!ok) {
        st_close(fa);
        return 0;
    }
    int same = st_count(fa) == st_count(fb) && st_count(fa) > 0;
    CHECKF(same, "%s has %zu tensors, %s %zu", a, st_count(fa), b, st_count(fb));
    for (size_t i = 0; same && i < st_count(fa); i++) {
        const st_tensor *ta = st_tensor_at(fa, i), *tb = st_find(fb, ta->name);
        same = tb && ta->dtype == tb->dtype && ta->numel == tb->numel && ta->dtype == ST_F32;
        CHECKF(same, "tensor %s: absent or another shape in %s", ta->name, b);
        float *x = same ? malloc(ta->numel * sizeof *x) : NULL, *y = same ? malloc(ta->numel * sizeof *y) : NULL;
        same = same && x && y && st_read_f32(fa, ta, x, &err) == VIT_OK &&
               st_read_f32(fb, tb, y, &err) == VIT_OK;
        for (size_t k = 0; same && k < ta->numel; k++)
            if (memcmp(&x[k], &y[k], sizeof(float)) != 0) {
                CHECKF(0, "tensor %s differs at %zu: %.9g vs %.9g", ta->name, k, x[k], y[k]);
                same = 0;
            }
        free(x);
        free(y);
    }
    int meta = st_metadata_count(fa) == st_metadata_count(fb);
    CHECKF(meta, "%zu vs %zu metadata entries", st_metadata_count(fa), st_metadata_count(fb));
    for (size_t i = 0; meta && i < st_metadata_count(fa); i++) {
        const char *key, *va, *vb;
        st_metadata_at(fa, i, &key, &va);
        if (strcmp(key, "created") == 0)
            continue;
        vb = st_metadata(fb, key);
        meta = vb && strcmp(va, vb) == 0;
        CHECKF(meta, "metadata %s: '%s' vs '%s'", key, va, vb ? vb : "(absent)");
    }
    st_close(fa);
    st_close(fb);
    return same && meta;
}

/* The step and total of the checkpoint in dir (metadata), or -1. */
static long ckpt_value(const char *dir, const char *key)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, TRAINER_CHECKPOINT_FILE);
    st_file *f = NULL;
    vit_error err = {0};
    if (st_open(path, &f, &err) != VIT_OK) {
        CHECKF(0, "%s: %s", path, err.message);
        return -1;
    }
    const char *v = st_metadata(f, key);
    long n = v ? strtol(v, NULL, 10) : -1;
    st_close(f);
    return n;
}

/* The crash test: T1 uninterrupted; a second run killed with SIGKILL once its
 * first checkpoint is on disk, resumed into T2; T2 must equal T1. */
static void test_kill_and_resume(void)
{
    char t1[256], t2[256], c1[256], c2[256], ck[512];
    tmp_path(t1, sizeof t1, "t1.safetensors");
    tmp_path(t2, sizeof t2, "t2.safetensors");
    tmp_path(c1, sizeof c1, "ck1");
    tmp_path(c2, sizeof c2, "ck2");
    snprintf(ck, sizeof ck, "%s/%s", c2, TRAINER_CHECKPOINT_FILE);

    run_result *r = run_vitfit("train", RUN_FLAGS, "--out", t1, "--checkpoint-dir", c1,
                               "--checkpoint-every-steps", "3", NULL);
    CHECKF(r->status == 0, "uninterrupted run: exit %d: %s", r->status, r->err);

    /* up to 3 tries: a machine so fast that the run ends before the kill
     * lands would make the try prove nothing */
    int killed_mid_run = 0;
    for (int attempt = 0; attempt < 3 && !killed_mid_run; attempt++) {
        unlink(ck);
        char *argv[] = {NULL, "train", RUN_FLAGS, "--out", t2, "--checkpoint-dir", c2,
                        "--checkpoint-every-steps", "3", NULL};
        pid_t pid = spawn_vitfit(argv);
        if (pid < 0)
            return;
        /* bounded poll: 60 s at most */
        struct stat sb;
        int seen = 0;
        for (int i = 0; i < 12000 && !seen; i++) {
            seen = stat(ck, &sb) == 0;
            if (!seen) {
                int ws;
                if (waitpid(pid, &ws, WNOHANG) == pid) {
                    char e[256], msg[4096];
                    slurp(tmp_path(e, sizeof e, "child.err"), msg, sizeof msg);
                    CHECKF(0, "the run ended (status %d) before any checkpoint: %s", ws, msg);
                    return;
                }
                sleep_ms(5);
            }
        }
        CHECKF(seen, "no checkpoint %s within 60 s", ck);
        kill(pid, SIGKILL);
        int ws = 0;
        waitpid(pid, &ws, 0);
        if (!seen)
            return;
        long step = ckpt_value(c2, "step"), total = ckpt_value(c2, "total_steps");
        killed_mid_run = WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL && step > 0 && step < total;
        fprintf(stderr, "  attempt %d: killed (%d) with the checkpoint at step %ld of %ld\n",
                attempt, WIFSIGNALED(ws), step, total);
    }
    CHECKF(killed_mid_run, "no attempt was killed mid-run");
    struct stat sb;
    CHECKF(stat(t2, &sb) != 0, "the killed run wrote its --out %s", t2);

    r = run_vitfit("train", RUN_FLAGS, "--out", t2, "--resume", c2,
                   "--checkpoint-every-steps", "3", NULL);
    CHECKF(r->status == 0, "resumed run: exit %d: %s", r->status, r->err);
    if (r->status == 0)
        CHECKF(same_task(t1, t2), "the resumed task %s differs from the uninterrupted %s", t2, t1);
}

/* The refusals, each exit code and its one line. */
static void test_refusals(void)
{
    char out[256], none[256], ck[256];
    tmp_path(out, sizeof out, "refused.safetensors");
    tmp_path(none, sizeof none, "no-such-dir");
    tmp_path(ck, sizeof ck, "ck1"); /* the uninterrupted run's (lr: the default) */

    run_result *r = run_vitfit("train", RUN_FLAGS, "--out", out, "--resume", none, NULL);
    CHECKF(r->status == 1 && count_lines(r->err) == 1, "resume of a missing dir: exit %d: %s",
           r->status, r->err);

    r = run_vitfit("train", RUN_FLAGS, "--out", out, "--resume", ck, "--lr", "0.0123", NULL);
    CHECKF(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "lr"),
           "resume with another lr: exit %d: %s", r->status, r->err);
    fprintf(stderr, "  another lr -> %s", r->err);

    r = run_vitfit("train", RUN_FLAGS, "--out", out, "--checkpoint-every-steps", "3", NULL);
    CHECKF(r->status == 2 && strstr(r->err, "--checkpoint-dir"),
           "--checkpoint-every-steps alone: exit %d: %s", r->status, r->err);

    r = run_vitfit("train", RUN_FLAGS, "--out", out, "--method", "full", "--checkpoint-dir", ck,
                   NULL);
    CHECKF(r->status == 2 && strstr(r->err, "full"), "--method full --checkpoint-dir: exit %d: %s",
           r->status, r->err);
    struct stat sb;
    CHECKF(stat(out, &sb) != 0, "a refused run wrote %s", out);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitfit_cli_resume_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_path(model_dir, sizeof model_dir, "models/fashion-vit-tiny");
    struct stat sb;
    if (stat(FASHION_TEST, &sb) != 0) {
        fprintf(stderr, "%s is missing (Debian's dataset-fashion-mnist)\n", FASHION_TEST);
        return 1;
    }
    test_kill_and_resume();
    test_refusals();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (check_failures == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_result();
}
