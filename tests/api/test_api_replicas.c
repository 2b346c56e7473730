/*
 * test_api_replicas.c - several `vitfit serve` processes sharing one
 * data_dir, as replicas on one volume (issue 12): tasks seen by all, jobs
 * run once each by whichever replica claims them, handed over when that
 * replica dies.
 *
 * Three replicas on loopback ports, one data_dir: R1 role all, R2 role
 * train, R3 role serve; task_reload_ms 500, job_lease_ms 2000 (renewed every
 * 500 ms), and VITFIT_TEST_LEASE_REMOTE=1 so that a dead replica's lease is
 * judged by its renewals alone, as for replicas on other hosts (without it,
 * a replica on the same kernel sees at once that the pid is gone:
 * test_job_lease checks that).  Data: a Fashion-MNIST ImageFolder of 3 x 60
 * PNGs; the backbone models/fashion-vit-tiny, so a job takes a second or two.
 *
 *  roles     R2 (train) answers classify 503 not_serving with Retry-After
 *            (and KServe V2 infer and model-ready the same, in the
 *            protocol's error shape);
 *            R3 (serve) never trains (below: no job says it ran there).
 *  tasks     a task PUT on R2 is classified by R1 and R3 as `vitfit
 *            classify --task <file>` classifies it; then, 7 times, a new
 *            version PUT on R1 while R3 holds the old one resident: R3
 *            answers with the new version within task_reload_ms (plus
 *            3 s for a loaded machine); the median and worst times are
 *            printed.  A DELETE on R3 removes it everywhere (classify on R1:
 *            404 task_not_found; GET on R2: 404).  A truncated task file
 *            moved into tasks/ by hand is logged by every replica as not
 *            usable; classify with it answers 422 task_unusable and all stay
 *            healthy.
 *  taskdir   a plain file in place of tasks/: every replica's /readyz
 *            answers 503 not_ready; the file removed (no tasks/ at all):
 *            200 again, and no replica makes tasks/ by itself; a PUT on R3
 *            makes it, and R1 classifies with its task; tasks/ removed
 *            while R1 holds the task resident: R1 and R3 answer 404; made
 *            again by hand with the task copied in: both classify with it.
 *            The times are printed.
 *  once      three jobs submitted to R1, R2 and R3, each known at once to
 *            the other two (GET, events); each succeeds once --
 *            one started event, no resumed one, one succeeded -- on R1 or
 *            R2 (its started event names the replica; that replica's log
 *            alone says it ran it), never on R3; GET /v1/finetune/{id}
 *            answers the same on every replica, and every list holds them;
 *            no lease, cancel or checkpoint file is left.
 *  cancel    a long job submitted to R3 runs on a trainer; POST cancel on
 *            R3 answers cancel_requested: true and the job ends cancelled
 *            (the holder saw R3's cancel file at its renew), no task.
 *  handover  an uninterrupted reference job, then the same job (same seed)
 *            whose replica is killed with SIGKILL after its first
 *            checkpoint, while every replica says it is running: the other
 *            trainer takes it over once the lease has gone stale (a resumed
 *            event naming it, from the checkpoint), it succeeds, and its
 *            task's tensors are bit-identical to the reference's.  The
 *            hand-over time (kill to resumed event) is printed.
 *
 * Every wait is bounded and fails printing the last state seen.  Sections
 * can be left out with TEST_API_REPLICAS_SKIP=name,name (test.sh's TSan
 * stage leaves out handover: its threads are once's, its training 4x
 * slower there).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fmnist_fixture.h"
#include "safetensors.h"
#include "serve_harness.h"
#include "test_util.h"

#define RELOAD_MS 500
#define LEASE_MS 2000
#define WAIT_MS 300000.0  /* bound on a job's wait (sanitizer builds are slow) */
#define ROUNDS 7          /* task replacements timed */
#define NREP 3

static CURL *h;
static char dir[256];        /* the shared data_dir */
static char scratch[256];    /* task files made outside it */
static serve_proc R[NREP];   /* R1 all, R2 train, R3 serve */
static const char *const role_of[NREP] = {"all", "train", "serve"};
static char *image_b64;
static char image_file[1024];

/* ---- helpers ------------------------------------------------------------ */

/* Whether TEST_API_REPLICAS_SKIP names section. */
static bool skipped(const char *section)
{
    const char *env = getenv("TEST_API_REPLICAS_SKIP");
    size_t n = strlen(section);
    for (const char *p = env; p && *p;) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, section, n) == 0) {
            fprintf(stderr, "== %s: skipped (TEST_API_REPLICAS_SKIP)\n", section);
            return true;
        }
        p += len + (p[len] == ',');
    }
    return false;
}

static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

static const char *jdump(const json_t *j)
{
    static char buf[4][2048];
    static int k;
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    char *out = buf[k++ % 4];
    snprintf(out, sizeof buf[0], "%.2000s", s ? s : "(null)");
    free(s);
    return out;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool start_replica(int i)
{
    const char *flags[] = {"--role", role_of[i], "--task-reload-ms", "500", "--job-lease-ms",
                           "2000", "--job-checkpoint-every-steps", "5", "--max-running-jobs", "1",
                           "--serve-reserved-threads", "0", NULL};
    /* every replica trains with the same threads (role all keeps none for
     * classify here), so a resumed run is bit-identical to a whole one */
    bool ok = serve_start(&R[i], dir, NULL, flags);
    CHECKF(ok, "replica R%d (%s) did not start", i + 1, role_of[i]);
    return ok;
}

/* The whole log of replica i (caller frees; "" when unreadable). */
static char *log_of(int i)
{
    size_t n;
    char *text = (char *)serve_read_file(R[i].log_path, &n);
    return text ? text : strdup("");
}

/* Lines of replica i's log holding both a and b. */
static int log_lines(int i, const char *a, const char *b)
{
    char *text = log_of(i);
    int n = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        n += strstr(line, a) && (!b || strstr(line, b));
    free(text);
    return n;
}

/* POST /v1/classify {"image", "task", "top_k": 16} to replica i. */
static void classify(int i, const char *task, serve_resp *r)
{
    json_t *j = json_pack("{sssssi}", "image", image_b64, "task", task, "top_k", 16);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    VIT_ASSERT(body);
    serve_request(&R[i], h, &(serve_req){.path = "/v1/classify", .content_type = "application/json",
                                         .body = body, .len = strlen(body)},
                  r);
    free(body);
}

/* Whether replica i classifies with task `name` as ref says. */
static bool classifies_as(int i, const char *name, const serve_ref *ref)
{
    serve_resp r;
    classify(i, name, &r);
    json_t *j = r.status == 200 ? serve_json(&r) : NULL;
    char why[256];
    bool same = j && serve_result_matches(j, name, ref, 16, why, sizeof why);
    json_decref(j);
    serve_resp_free(&r);
    return same;
}

static long put_task(int i, const char *name, const void *bytes, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/tasks/%s", name);
    serve_resp r;
    serve_request(&R[i], h, &(serve_req){.method = "PUT", .path = path,
                                         .content_type = "application/octet-stream",
                                         .body = bytes, .len = len},
                  &r);
    long st = r.status;
    CHECKF(st == 200 || st == 201, "PUT %s on R%d: %ld %s", name, i + 1, st, r.body);
    serve_resp_free(&r);
    return st;
}

static json_t *get_job(int i, const char *id)
{
    char path[300];
    snprintf(path, sizeof path, "/v1/finetune/%s", id);
    serve_resp r;
    serve_request(&R[i], h, &(serve_req){.path = path}, &r);
    json_t *j = serve_check_ok(path, &r);
    serve_resp_free(&r);
    return j;
}

/* POSTs a job to replica i; its id into id ("" on failure). */
static void submit(int i, const char *task, int epochs, int seed, char id[64])
{
    json_t *j = json_pack("{sssssisisi}", "task", task, "train", "fm/train", "epochs", epochs,
                          "batch_size", 8, "seed", seed);
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    serve_resp r;
    serve_request(&R[i], h, &(serve_req){.path = "/v1/finetune", .content_type = "application/json",
                                         .body = body, .len = strlen(body)},
                  &r);
    free(body);
    json_t *job = r.status == 201 ? serve_json(&r) : NULL;
    CHECKF(job, "POST job %s to R%d: %ld %s", task, i + 1, r.status, r.body);
    snprintf(id, 64, "%s", jstr(json_object_get(job, "id")));
    json_decref(job);
    serve_resp_free(&r);
}

static bool is_final(const char *st)
{
    return !strcmp(st, "succeeded") || !strcmp(st, "failed") || !strcmp(st, "cancelled");
}

/* Polls job id on replica i until its status is final; the last object
 * (caller decrefs). */
static json_t *wait_final(int i, const char *id)
{
    double deadline = serve_now_ms() + WAIT_MS;
    json_t *last = NULL;
    for (;;) {
        json_t *j = get_job(i, id);
        if (j) {
            json_decref(last);
            last = j;
            if (is_final(jstr(json_object_get(j, "status"))))
                return last;
        }
        if (serve_now_ms() > deadline) {
            CHECKF(0, "job %s did not end within %.0f s on R%d: %s", id, WAIT_MS / 1e3, i + 1,
                   jdump(last));
            return last;
        }
        sleep_ms(20);
    }
}

/* The events of job id as its events.jsonl holds them (an array). */
static json_t *events_of(const char *id)
{
    char path[512];
    snprintf(path, sizeof path, "%s/jobs/%s/events.jsonl", dir, id);
    json_t *ev = json_array();
    size_t n;
    char *text = (char *)serve_read_file(path, &n);
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *e = json_loads(line, 0, NULL);
        if (e)
            json_array_append_new(ev, e);
    }
    free(text);
    return ev;
}

static int count_type(const json_t *ev, const char *type)
{
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(ev, i, e) n += strcmp(jstr(json_object_get(e, "type")), type) == 0;
    return n;
}

/* The first event of that type, or NULL. */
static json_t *first_of(const json_t *ev, const char *type)
{
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e) if (strcmp(jstr(json_object_get(e, "type")), type) == 0) return e;
    return NULL;
}

/* The replica (index) whose pid an owner id "host/pid/..." names; -1. */
static int replica_of_owner(const char *owner)
{
    const char *slash = strchr(owner, '/');
    long pid = slash ? strtol(slash + 1, NULL, 10) : -1;
    for (int i = 0; i < NREP; i++)
        if (R[i].pid && R[i].pid == (pid_t)pid)
            return i;
    return -1;
}

/* The pid named by the newest lease file of job id (0: none). */
static pid_t lease_holder_pid(const char *id)
{
    char jd[512];
    snprintf(jd, sizeof jd, "%s/jobs/%s", dir, id);
    DIR *d = opendir(jd);
    if (!d)
        return 0;
    long top = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "lease.", 6) == 0 && atol(e->d_name + 6) > top)
            top = atol(e->d_name + 6);
    closedir(d);
    if (!top)
        return 0;
    char path[600];
    snprintf(path, sizeof path, "%s/lease.%ld", jd, top);
    size_t n;
    char *text = (char *)serve_read_file(path, &n);
    const char *p = text ? strstr(text, "\npid ") : NULL;
    pid_t pid = p ? (pid_t)strtol(p + 5, NULL, 10) : 0;
    free(text);
    return pid;
}

/* Leftovers a finished job must not have: lease files, a cancel file, a
 * checkpoint. */
static void check_no_leftovers(const char *what, const char *id)
{
    char jd[512];
    snprintf(jd, sizeof jd, "%s/jobs/%s", dir, id);
    DIR *d = opendir(jd);
    CHECKF(d, "%s: no directory %s", what, jd);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        CHECKF(strncmp(e->d_name, "lease.", 6) != 0 && strcmp(e->d_name, "cancel") != 0 &&
                   strcmp(e->d_name, "checkpoint") != 0,
               "%s: %s/%s is left after the job ended", what, jd, e->d_name);
    closedir(d);
}

/* Every tensor of task files a and b bit-identical (metadata aside). */
static bool same_tensors(const char *a, const char *b)
{
    st_file *fa = NULL, *fb = NULL;
    vit_error err = {0};
    if (st_open(a, &fa, &err) != VIT_OK || st_open(b, &fb, &err) != VIT_OK) {
        CHECKF(0, "cannot open %s or %s: %s", a, b, err.message);
        st_close(fa);
        return false;
    }
    bool same = st_count(fa) == st_count(fb) && st_count(fa) > 0;
    size_t floats = 0;
    for (size_t i = 0; same && i < st_count(fa); i++) {
        const st_tensor *ta = st_tensor_at(fa, i), *tb = st_find(fb, ta->name);
        same = tb && ta->dtype == ST_F32 && tb->dtype == ST_F32 && ta->numel == tb->numel;
        float *x = same ? malloc((ta->numel + 1) * sizeof *x) : NULL;
        float *y = same ? malloc((ta->numel + 1) * sizeof *y) : NULL;
        same = same && x && y && st_read_f32(fa, ta, x, &err) == VIT_OK &&
               st_read_f32(fb, tb, y, &err) == VIT_OK;
        for (size_t k = 0; same && k < ta->numel; k++)
            if (memcmp(&x[k], &y[k], sizeof *x) != 0) {
                CHECKF(0, "tensor %s differs at %zu: %.9g vs %.9g", ta->name, k, x[k], y[k]);
                same = false;
            }
        floats += same ? ta->numel : 0;
        free(x);
        free(y);
    }
    CHECKF(same, "the tasks %s and %s differ", a, b);
    if (same)
        fprintf(stderr, "  %zu tensors, %zu floats bit-identical\n", st_count(fa), floats);
    st_close(fa);
    st_close(fb);
    return same;
}

/* ---- roles ---------------------------------------------------------------- */

static void test_roles(void)
{
    fprintf(stderr, "== roles\n");
    serve_resp r;
    classify(1, "none", &r);
    serve_check_error("classify on the train replica", &r, 503, "not_serving");
    char ra[32];
    CHECKF(serve_header(&r, "Retry-After", ra, sizeof ra), "not_serving without Retry-After");
    serve_resp_free(&r);
    /* the KServe V2 infer route: the same refusal, in the protocol's error shape */
    json_t *v2 = json_pack("{s:[{s:s,s:[i],s:s,s:[s]}]}", "inputs", "name", "image", "shape", 1,
                           "datatype", "BYTES", "data", image_b64);
    char *body = json_dumps(v2, JSON_COMPACT);
    json_decref(v2);
    serve_request(&R[1], h, &(serve_req){.path = "/v2/models/_backbone/infer",
                                         .content_type = "application/json", .body = body,
                                         .len = strlen(body)},
                  &r);
    free(body);
    json_t *e = serve_json(&r);
    CHECKF(r.status == 503 && !strcmp(jstr(json_object_get(e, "code")), "not_serving") &&
               json_is_string(json_object_get(e, "error")) &&
               serve_header(&r, "Retry-After", ra, sizeof ra),
           "V2 infer on the train replica: %ld %s", r.status, r.body);
    json_decref(e);
    serve_resp_free(&r);
    /* a model is not "ready" where its infer answers not_serving */
    serve_request(&R[1], h, &(serve_req){.path = "/v2/models/_backbone/ready"}, &r);
    e = serve_json(&r);
    CHECKF(r.status == 503 && !strcmp(jstr(json_object_get(e, "code")), "not_serving"),
           "V2 model ready on the train replica: %ld %s", r.status, r.body);
    json_decref(e);
    serve_resp_free(&r);
    serve_request(&R[2], h, &(serve_req){.path = "/v2/models/_backbone/ready"}, &r);
    CHECKF(r.status == 200, "V2 model ready on the serve replica: %ld %s", r.status, r.body);
    serve_resp_free(&r);
    for (int i = 0; i < NREP; i++) {
        serve_request(&R[i], h, &(serve_req){.path = "/readyz"}, &r);
        CHECKF(r.status == 200, "R%d /readyz: %ld", i + 1, r.status);
        serve_resp_free(&r);
    }
}

/* ---- tasks ---------------------------------------------------------------- */

static void test_tasks(void)
{
    fprintf(stderr, "== tasks\n");
    char file[2][512];
    serve_ref ref[2];
    uint8_t *bytes[2];
    size_t len[2];
    const char *imgs[] = {image_file};
    for (int v = 0; v < 2; v++) {
        snprintf(file[v], sizeof file[v], "%s/shared-v%d.safetensors", scratch, v);
        VIT_ASSERT(serve_make_task(serve_model(), file[v], 6 + v, v ? "two" : "one",
                                   100 + (uint64_t)v));
        VIT_ASSERT(serve_reference(file[v], imgs, 1, &ref[v]));
        bytes[v] = serve_read_file(file[v], &len[v]);
        VIT_ASSERT(bytes[v]);
    }
    /* added on the train replica, classified by the others */
    put_task(1, "shared", bytes[0], len[0]);
    CHECKF(classifies_as(0, "shared", &ref[0]), "R1 does not classify the task PUT on R2");
    CHECKF(classifies_as(2, "shared", &ref[0]), "R3 does not classify the task PUT on R2");

    /* replaced on R1 while R3 has the old version resident: timed */
    double ms[ROUNDS], after_put[ROUNDS];
    int seen = 0;
    for (int k = 0; k < ROUNDS; k++) {
        int v = (k + 1) % 2, old = k % 2;
        CHECKF(classifies_as(2, "shared", &ref[old]), "round %d: R3 is not on version %d", k,
               old);
        double t0 = serve_now_ms();
        put_task(0, "shared", bytes[v], len[v]);
        double t_put = serve_now_ms();
        CHECKF(classifies_as(0, "shared", &ref[v]), "round %d: R1 does not answer with its own "
               "PUT at once", k);
        bool ok;
        while (!(ok = classifies_as(2, "shared", &ref[v])) && serve_now_ms() - t0 < 20000)
            sleep_ms(1);
        ms[k] = serve_now_ms() - t0;
        after_put[k] = serve_now_ms() - t_put;
        CHECKF(ok, "round %d: R3 still answers with the old version after %.0f ms", k, ms[k]);
        CHECKF(!ok || ms[k] <= RELOAD_MS + 3000, "round %d: R3 took %.0f ms, over "
               "task_reload_ms (%d) + 3 s", k, ms[k], RELOAD_MS);
        seen += ok;
    }
    qsort(ms, ROUNDS, sizeof *ms, cmp_double);
    qsort(after_put, ROUNDS, sizeof *after_put, cmp_double);
    fprintf(stderr, "  PUT sent to R1 -> R3 classifies with the new version: median %.1f ms, "
            "min %.1f, max %.1f (%d rounds; task_reload_ms %d); from the PUT's reply: median "
            "%.1f ms (a classify on R1 included)\n", ms[ROUNDS / 2], ms[0], ms[ROUNDS - 1], seen,
            RELOAD_MS, after_put[ROUNDS / 2]);

    /* deleted on R3: gone everywhere */
    double t0 = serve_now_ms();
    serve_resp r;
    serve_request(&R[2], h, &(serve_req){.method = "DELETE", .path = "/v1/tasks/shared"}, &r);
    CHECKF(r.status == 200, "DELETE on R3: %ld %s", r.status, r.body);
    serve_resp_free(&r);
    long status = 0;
    while (serve_now_ms() - t0 < 20000) {
        classify(0, "shared", &r);
        status = r.status;
        if (status == 404)
            serve_check_error("classify a task deleted on another replica", &r, 404,
                              "task_not_found");
        serve_resp_free(&r);
        if (status == 404)
            break;
        sleep_ms(1);
    }
    CHECKF(status == 404, "R1 still classifies with the deleted task (%ld)", status);
    fprintf(stderr, "  DELETE on R3 -> R1 answers 404 after %.1f ms\n", serve_now_ms() - t0);
    serve_request(&R[1], h, &(serve_req){.path = "/v1/tasks/shared"}, &r);
    serve_check_error("GET a deleted task on R2", &r, 404, "task_not_found");
    serve_resp_free(&r);
    for (int i = 0; i < NREP; i++) {
        serve_request(&R[i], h, &(serve_req){.path = "/v1/tasks"}, &r);
        CHECKF(r.status == 200 && r.body && !strstr(r.body, "\"shared\""),
               "R%d still lists the deleted task: %s", i + 1, r.body);
        serve_resp_free(&r);
    }

    /* a truncated file moved in by hand: logged as not usable everywhere */
    char tmp[600], dest[600];
    snprintf(tmp, sizeof tmp, "%s/tasks/.tmp-broken-abc123", dir);
    snprintf(dest, sizeof dest, "%s/tasks/broken.safetensors", dir);
    VIT_ASSERT(serve_write_file(tmp, bytes[0], len[0] / 2));
    VIT_ASSERT(rename(tmp, dest) == 0);
    for (int i = 0; i < NREP; i++) {
        double t1 = serve_now_ms();
        while (log_lines(i, "task file not usable", "broken") == 0 &&
               serve_now_ms() - t1 < 20000)
            sleep_ms(5);
        CHECKF(log_lines(i, "task file not usable", "broken") == 1,
               "R%d logged the truncated task %d times, want once", i + 1,
               log_lines(i, "task file not usable", "broken"));
        CHECKF(log_lines(i, ".tmp-broken", NULL) == 0, "R%d logged the temporary file", i + 1);
    }
    classify(0, "broken", &r);
    serve_check_error("classify with a truncated task", &r, 422, "task_unusable");
    serve_resp_free(&r);
    for (int i = 0; i < NREP; i++) {
        serve_request(&R[i], h, &(serve_req){.path = "/healthz"}, &r);
        CHECKF(r.status == 200, "R%d after the truncated task: /healthz %ld", i + 1, r.status);
        serve_resp_free(&r);
    }
    VIT_ASSERT(unlink(dest) == 0);
    free(bytes[0]);
    free(bytes[1]);
}

/* ---- the task directory removed and made again ------------------------- */

/* Waits until every replica's /readyz answers `want`; the time it took, or
 * -1 (reported) when one did not within 20 s. */
static double wait_all_ready(long want, const char *what)
{
    double t0 = serve_now_ms();
    long got[NREP] = {0};
    bool shown = false; /* one 503's body checked: the rest are the same */
    for (;;) {
        int at = 0;
        for (int i = 0; i < NREP; i++) {
            serve_resp r;
            serve_request(&R[i], h, &(serve_req){.path = "/readyz"}, &r);
            got[i] = r.status;
            if (r.status == 503 && !shown) {
                serve_check_error(what, &r, 503, "not_ready");
                shown = true;
            }
            serve_resp_free(&r);
            at += got[i] == want;
        }
        if (at == NREP)
            return serve_now_ms() - t0;
        if (serve_now_ms() - t0 > 20000) {
            CHECKF(0, "%s: /readyz answers %ld %ld %ld, want %ld", what, got[0], got[1], got[2],
                   want);
            return -1;
        }
        sleep_ms(10);
    }
}

/* Waits until replica i answers classify with task `name` as ref says
 * (ref NULL: 404 task_not_found); the time it took, or -1 (reported). */
static double wait_classify(int i, const char *name, const serve_ref *ref, const char *what)
{
    double t0 = serve_now_ms();
    for (;;) {
        bool ok;
        if (ref) {
            ok = classifies_as(i, name, ref);
        } else {
            serve_resp r;
            classify(i, name, &r);
            ok = r.status == 404;
            serve_resp_free(&r);
        }
        if (ok)
            return serve_now_ms() - t0;
        if (serve_now_ms() - t0 > 20000) {
            CHECKF(0, "R%d: %s", i + 1, what);
            return -1;
        }
        sleep_ms(5);
    }
}

static void test_taskdir(void)
{
    fprintf(stderr, "== taskdir\n");
    char tasks[300], file[600], copy[640], dest[640];
    snprintf(tasks, sizeof tasks, "%s/tasks", dir);
    snprintf(file, sizeof file, "%s/dir-v0.safetensors", scratch);
    snprintf(dest, sizeof dest, "%s/dir.safetensors", tasks);
    VIT_ASSERT(serve_make_task(serve_model(), file, 5, "dir", 300));
    serve_ref ref;
    const char *imgs[] = {image_file};
    VIT_ASSERT(serve_reference(file, imgs, 1, &ref));
    size_t len;
    uint8_t *bytes = serve_read_file(file, &len);
    VIT_ASSERT(bytes);

    /* a plain file in its place: no replica can use it, none is ready */
    serve_rmtree(tasks);
    VIT_ASSERT(serve_write_file(tasks, "not a directory", 15));
    double broken = wait_all_ready(503, "/readyz with tasks/ a plain file");
    VIT_ASSERT(unlink(tasks) == 0);
    /* no tasks/ at all: no tasks, and ready (a PUT makes it) */
    double missing = wait_all_ready(200, "/readyz with no tasks/");
    struct stat sb;
    CHECKF(stat(tasks, &sb) != 0, "a replica made tasks/ again by itself");
    CHECKF(put_task(2, "dir", bytes, len) == 201 && exists(dest), "PUT on R3 with no tasks/");
    double after_put = wait_classify(0, "dir", &ref, "the task PUT on R3 is not classified");

    /* removed with the task R1 holds resident: gone from every replica */
    CHECK(classifies_as(2, "dir", &ref));
    serve_rmtree(tasks);
    double t_rm = serve_now_ms();
    for (int i = 0; i < NREP; i += 2)
        wait_classify(i, "dir", NULL, "still classifies with a task of a removed tasks/");
    double gone = serve_now_ms() - t_rm;
    /* made again by hand and a task copied in (tmp + rename) */
    VIT_ASSERT(mkdir(tasks, 0755) == 0);
    snprintf(copy, sizeof copy, "%s/.tmp-dir-abc123", tasks);
    VIT_ASSERT(serve_write_file(copy, bytes, len));
    VIT_ASSERT(rename(copy, dest) == 0);
    for (int i = 0; i < NREP; i += 2)
        wait_classify(i, "dir", &ref, "does not classify with a task copied into a new tasks/");
    fprintf(stderr, "  tasks/ a plain file -> every /readyz 503 after %.0f ms; removed -> 200 "
            "after %.0f ms; PUT on R3 -> R1 classifies after %.0f ms; tasks/ removed -> its "
            "task 404 on R1 and R3 after %.0f ms (task_reload_ms %d)\n", broken, missing,
            after_put, gone, RELOAD_MS);
    for (int i = 0; i < NREP; i++)
        CHECKF(log_lines(i, "task directory missing", NULL) >= 1,
               "R%d did not log that tasks/ went", i + 1);
    unlink(dest);
    free(bytes);
}

/* ---- jobs run once ------------------------------------------------------- */

static char once_id[NREP][64];

static void test_once(void)
{
    fprintf(stderr, "== each job runs once\n");
    static const char *const task[NREP] = {"job-a", "job-b", "job-c"};
    for (int i = 0; i < NREP; i++) {
        submit(i, task[i], 1, 11 + i, once_id[i]);
        /* at once on the others: read from the shared directory, no tick waited for */
        for (int k = 1; *once_id[i] && k < NREP; k++) {
            int o = (i + k) % NREP;
            char path[300];
            snprintf(path, sizeof path, "/v1/finetune/%s/events", once_id[i]);
            serve_resp r;
            serve_request(&R[o], h, &(serve_req){.path = path}, &r);
            json_t *ev = serve_check_ok("the events of a job just created elsewhere", &r);
            CHECKF(ev && strstr(r.body, "\"created\""), "R%d: the events of %s, created on "
                   "R%d a moment ago: %s", o + 1, once_id[i], i + 1, r.body);
            json_decref(ev);
            serve_resp_free(&r);
            json_t *j = get_job(o, once_id[i]);
            CHECKF(j, "R%d does not know job %s, created on R%d a moment ago", o + 1,
                   once_id[i], i + 1);
            json_decref(j);
        }
    }
    for (int k = 0; k < NREP; k++) {
        const char *id = once_id[k];
        if (!*id)
            continue;
        json_t *fin = wait_final(2, id);
        CHECKF(strcmp(jstr(json_object_get(fin, "status")), "succeeded") == 0,
               "job %s (%s): %s", id, task[k], jdump(fin));
        /* the same answer from every replica, once each has seen the end
         * (a replica learns of another's writes at its next sync tick: one
         * may still say running the moment R3 says succeeded) */
        for (int i = 0; i < NREP; i++) {
            json_t *j = wait_final(i, id);
            CHECKF(j && json_equal(j, fin), "job %s: R%d answers %s, R3 %s", id, i + 1,
                   jdump(j), jdump(fin));
            json_decref(j);
        }
        json_decref(fin);
        json_t *ev = events_of(id);
        CHECKF(count_type(ev, "started") == 1 && count_type(ev, "resumed") == 0 &&
                   count_type(ev, "succeeded") == 1,
               "job %s: %d started, %d resumed, %d succeeded events", id,
               count_type(ev, "started"), count_type(ev, "resumed"),
               count_type(ev, "succeeded"));
        const char *owner =
            jstr(json_object_get(json_object_get(first_of(ev, "started"), "data"), "replica"));
        int ran = replica_of_owner(owner);
        CHECKF(ran == 0 || ran == 1, "job %s started on '%s' (replica %d): not a trainer", id,
               owner, ran + 1);
        int logged = 0;
        for (int i = 0; i < NREP; i++) {
            int n = log_lines(i, id, "\"status\":\"running\"");
            CHECKF(n == (i == ran), "job %s: R%d's log says it ran it %d times (it ran on R%d)",
                   id, i + 1, n, ran + 1);
            logged += n;
        }
        fprintf(stderr, "  %s (%s, submitted to R%d): ran on R%d, logged by %d replica\n", id,
                task[k], k + 1, ran + 1, logged);
        json_decref(ev);
        check_no_leftovers(id, id);
        char tf[512];
        snprintf(tf, sizeof tf, "%s/tasks/%s.safetensors", dir, task[k]);
        CHECKF(exists(tf), "job %s left no task file %s", id, tf);
    }
    /* every list holds them; the serving replica classifies with a task it
     * did not train */
    for (int i = 0; i < NREP; i++) {
        serve_resp r;
        serve_request(&R[i], h, &(serve_req){.path = "/v1/finetune?limit=100"}, &r);
        for (int k = 0; k < NREP; k++)
            CHECKF(r.body && *once_id[k] && strstr(r.body, once_id[k]),
                   "R%d's list lacks job %s", i + 1, once_id[k]);
        serve_resp_free(&r);
    }
    serve_resp r;
    classify(2, "job-a", &r);
    CHECKF(r.status == 200, "R3 classifies with job-a: %ld %s", r.status, r.body);
    serve_resp_free(&r);
}

/* ---- cancel through another replica -------------------------------------- */

static void test_cancel(void)
{
    fprintf(stderr, "== cancel through a replica that does not run the job\n");
    char id[64];
    submit(2, "long", 500, 3, id);
    if (!*id)
        return;
    double deadline = serve_now_ms() + WAIT_MS;
    json_t *j = NULL;
    for (;;) { /* running, as R3 reads it from the shared record */
        json_decref(j);
        j = get_job(2, id);
        if (!strcmp(jstr(json_object_get(j, "status")), "running") ||
            serve_now_ms() > deadline)
            break;
        sleep_ms(20);
    }
    CHECKF(!strcmp(jstr(json_object_get(j, "status")), "running"), "the long job on R3: %s",
           jdump(j));
    json_decref(j);
    char path[300];
    snprintf(path, sizeof path, "/v1/finetune/%s/cancel", id);
    serve_resp r;
    serve_request(&R[2], h, &(serve_req){.method = "POST", .path = path}, &r);
    j = serve_check_ok("cancel on R3", &r);
    CHECKF(json_is_true(json_object_get(j, "cancel_requested")), "cancel on R3 answers %s",
           jdump(j));
    json_decref(j);
    serve_resp_free(&r);
    double t0 = serve_now_ms();
    json_t *fin = wait_final(2, id);
    CHECKF(!strcmp(jstr(json_object_get(fin, "status")), "cancelled"), "the long job: %s",
           jdump(fin));
    fprintf(stderr, "  cancelled %.0f ms after the request on R3\n", serve_now_ms() - t0);
    json_decref(fin);
    json_t *ev = events_of(id);
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    CHECKF(!strcmp(jstr(json_object_get(last, "type")), "cancelled"),
           "the long job's last event: %s", jdump(last));
    json_decref(ev);
    char tf[512];
    snprintf(tf, sizeof tf, "%s/tasks/long.safetensors", dir);
    CHECKF(!exists(tf), "a cancelled job stored its task");
    check_no_leftovers("the cancelled job", id);
}

/* ---- hand-over after SIGKILL ---------------------------------------------- */

static void test_handover(void)
{
    fprintf(stderr, "== hand-over after kill -9\n");
    char ref_id[64], id[64];
    submit(2, "ref", 2, 7, ref_id);
    if (!*ref_id)
        return;
    json_t *fin = wait_final(2, ref_id);
    CHECKF(!strcmp(jstr(json_object_get(fin, "status")), "succeeded"), "the reference: %s",
           jdump(fin));
    json_int_t total = json_integer_value(json_object_get(json_object_get(fin, "progress"),
                                                          "total_steps"));
    json_decref(fin);

    submit(2, "crash", 2, 7, id);
    if (!*id)
        return;
    /* its first checkpoint, seen in the shared directory */
    double deadline = serve_now_ms() + WAIT_MS;
    json_t *ev = NULL;
    while (serve_now_ms() < deadline) {
        json_decref(ev);
        ev = events_of(id);
        if (count_type(ev, "checkpoint") > 0 || count_type(ev, "succeeded") > 0)
            break;
        sleep_ms(1);
    }
    pid_t holder = lease_holder_pid(id);
    int victim = -1;
    for (int i = 0; i < NREP; i++)
        if (R[i].pid == holder)
            victim = i;
    CHECKF(victim == 0 || victim == 1, "the crash job's lease names pid %d: not a trainer",
           (int)holder);
    bool mid_run = count_type(ev, "checkpoint") > 0 && count_type(ev, "succeeded") == 0;
    CHECKF(mid_run, "no checkpoint before the job ended: %s", jdump(ev));
    json_decref(ev);
    if (victim < 0 || !mid_run)
        return;
    /* every replica says running */
    for (int i = 0; i < NREP; i++) {
        json_t *j = get_job(i, id);
        CHECKF(!strcmp(jstr(json_object_get(j, "status")), "running"),
               "R%d: the crash job before the kill: %s", i + 1, jdump(j));
        json_decref(j);
    }
    double t_kill = serve_now_ms();
    int st = serve_stop(&R[victim], SIGKILL, 10000);
    CHECKF(st == 128 + SIGKILL, "kill -9 of R%d: exit %d", victim + 1, st);
    json_t *before = events_of(id);
    int heir = victim == 0 ? 1 : 0, observer = 2;

    ev = NULL;
    double t_resumed = -1;
    deadline = serve_now_ms() + WAIT_MS;
    while (serve_now_ms() < deadline) {
        json_decref(ev);
        ev = events_of(id);
        if (count_type(ev, "resumed") > 0) {
            t_resumed = serve_now_ms();
            break;
        }
        sleep_ms(2);
    }
    json_decref(ev);
    CHECKF(t_resumed > 0, "nobody took the job over");
    fin = wait_final(observer, id);
    double t_done = serve_now_ms();
    CHECKF(!strcmp(jstr(json_object_get(fin, "status")), "succeeded"), "the crash job: %s",
           jdump(fin));
    json_t *j = get_job(heir, id);
    CHECKF(j && json_equal(j, fin), "the heir R%d answers %s, R3 %s", heir + 1, jdump(j),
           jdump(fin));
    json_decref(j);
    json_decref(fin);
    fprintf(stderr, "  R%d killed at its first checkpoint (%" JSON_INTEGER_FORMAT " steps in "
            "all); R%d resumed the job %.0f ms later (job_lease_ms %d), done %.0f ms after the "
            "kill\n", victim + 1, total, heir + 1, t_resumed - t_kill, LEASE_MS,
            t_done - t_kill);

    ev = events_of(id);
    CHECKF(count_type(ev, "resumed") == 1 && count_type(ev, "started") == 1 &&
               count_type(ev, "succeeded") == 1,
           "crash job: %d resumed, %d started, %d succeeded", count_type(ev, "resumed"),
           count_type(ev, "started"), count_type(ev, "succeeded"));
    json_t *res = json_object_get(first_of(ev, "resumed"), "data");
    CHECKF(json_is_true(json_object_get(res, "from_checkpoint")) &&
               replica_of_owner(jstr(json_object_get(res, "replica"))) == heir,
           "the resumed event: %s (want from R%d's checkpoint)", jdump(res), heir + 1);
    /* what the killed replica wrote is kept, line for line */
    for (size_t i = 0; i < json_array_size(before); i++)
        CHECKF(json_equal(json_array_get(before, i), json_array_get(ev, i)),
               "event %zu changed after the hand-over: %s, was %s", i + 1,
               jdump(json_array_get(ev, i)), jdump(json_array_get(before, i)));
    json_decref(before);
    json_decref(ev);
    check_no_leftovers("the crash job", id);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/tasks/ref.safetensors", dir);
    snprintf(b, sizeof b, "%s/tasks/crash.safetensors", dir);
    same_tensors(a, b);
}

int main(void)
{
    double t_start = serve_now_ms();
    curl_global_init(CURL_GLOBAL_ALL);
    h = curl_easy_init();
    VIT_ASSERT(h);
    VIT_ASSERT(serve_tmpdir("replicas", dir, sizeof dir));
    VIT_ASSERT(serve_tmpdir("replicas-scratch", scratch, sizeof scratch));
    setenv("VITFIT_TEST_LEASE_REMOTE", "1", 1);

    fm_source src;
    VIT_ASSERT(fm_source_load(&src));
    static const int classes[3] = {8, 7, 1};
    static const char *const names[3] = {"bag", "sneaker", "trouser"};
    char train[600];
    snprintf(train, sizeof train, "%s/datasets/fm/train", dir);
    VIT_ASSERT(fm_write_folder(&src, &(fm_folder_spec){.dir = train, .classes = classes,
                                                       .names = names, .nclasses = 3,
                                                       .per_class = 60}));
    size_t png_len;
    uint8_t *png = fm_png(&src, fm_nth_of_class(&src, 7, 200), &png_len);
    VIT_ASSERT(png);
    snprintf(image_file, sizeof image_file, "%s/sneaker.png", scratch);
    VIT_ASSERT(serve_write_file(image_file, png, png_len));
    image_b64 = serve_base64(png, png_len);
    VIT_ASSERT(image_b64);
    free(png);
    fm_source_free(&src);

    bool up = true;
    for (int i = 0; i < NREP; i++)
        up = start_replica(i) && up;
    if (up) {
        if (!skipped("roles"))
            test_roles();
        if (!skipped("tasks"))
            test_tasks();
        if (!skipped("taskdir"))
            test_taskdir();
        if (!skipped("once"))
            test_once();
        if (!skipped("cancel"))
            test_cancel();
        if (!skipped("handover"))
            test_handover();
    }
    for (int i = 0; i < NREP; i++)
        if (R[i].pid) {
            int st = serve_stop(&R[i], SIGTERM, 60000);
            CHECKF(st == 0, "R%d after SIGTERM: exit %d", i + 1, st);
        }
    serve_model_free();
    free(image_b64);
    serve_rmtree(dir);
    serve_rmtree(scratch);
    curl_easy_cleanup(h);
    curl_global_cleanup();
    fprintf(stderr, "the test took %.1f s\n", (serve_now_ms() - t_start) / 1e3);
    return check_result() || serve_harness_failures();
}
