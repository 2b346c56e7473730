/*
 * test_api_readme.c - the curl examples of README.md's "Serving over HTTP"
 * section, run against a real `vitfit serve`, so the README stays true.
 *
 * Every fenced block after a `<!-- serve-example -->` line is run with
 * /bin/sh (`set -e`, from a scratch directory where `models` links to the
 * source tree's and shoes.safetensors / clothes.safetensors are tasks made
 * here), after two substitutions: http://127.0.0.1:8080 becomes the test's
 * server, and https://example.com/ a loopback server of the test's that
 * answers every path with a sample PNG (so the server runs with
 * --allow-private-urls).  Each curl command's output is checked: never an
 * error object; classify replies have the documented shape (labels and
 * scores of one length, best first, probabilities), name the task the
 * command asked for (a V2 inference: both outputs of one shape), and, for a
 * file upload or a raw image body, equal
 * `vitfit classify --json` on that file with that task and top_k.  The
 * examples must cover a task PUT, a multipart upload, a raw body, a URL and
 * the "tasks" form, and the `<!-- serve-start -->` block must start the
 * server the way this test does.
 *
 * The fine-tuning walk-through runs the same way (`data` in the scratch
 * directory is the server's data_dir): the job is submitted, its event
 * stream must end with `succeeded` (the stream ends with the job, so the
 * next command classifies with a finished task), and that classify equals
 * `vitfit classify` with the task file the job wrote.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "loopback_http.h"
#include "serve_harness.h"
#include "test_util.h"

#define MAX_CMDS 32

static char scratch[256];

/* ---- README parsing ------------------------------------------------------ */

/* One command of a block: the text (continuations joined) and its output. */
typedef struct example {
    char *cmd;
    char *out;
} example;

/* The fenced block after the first line at or after *pos that equals
 * marker; its body (caller frees) or NULL.  *pos moves past the block. */
static char *next_block(const char *readme, size_t *pos, const char *marker)
{
    const char *m = strstr(readme + *pos, marker);
    if (!m)
        return NULL;
    const char *fence = strstr(m, "```");
    if (!fence)
        return NULL;
    const char *body = strchr(fence, '\n');
    if (!body)
        return NULL;
    body++;
    const char *end = strstr(body, "\n```");
    if (!end)
        return NULL;
    *pos = (size_t)(end + 4 - readme);
    size_t n = (size_t)(end - body) + 1;
    char *b = malloc(n + 1);
    VIT_ASSERT(b);
    memcpy(b, body, n);
    b[n] = 0;
    return b;
}

/* s with every `from` replaced by `to` (caller frees). */
static char *replace_all(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), count = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from))
        count++;
    char *out = malloc(strlen(s) + count * (tl > fl ? tl - fl : 0) + 1), *o = out;
    VIT_ASSERT(out);
    for (const char *p = s, *q; (q = strstr(p, from)) || *p; p = q + fl) {
        if (!q) {
            strcpy(o, p);
            o += strlen(p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
    }
    *o = 0;
    return out;
}

/* Splits a block into commands (lines ending in a backslash joined; blank
 * and comment lines dropped). */
static int split_commands(const char *block, example *cmds, int max)
{
    int n = 0;
    char line[8192], cmd[16384];
    size_t cl = 0;
    cmd[0] = 0;
    for (const char *s = block; *s && n < max;) {
        const char *eol = strchr(s, '\n');
        size_t ll = eol ? (size_t)(eol - s) : strlen(s);
        snprintf(line, sizeof line, "%.*s", (int)ll, s);
        s += ll + (eol ? 1 : 0);
        bool more = ll > 0 && line[ll - 1] == '\\';
        if (more)
            line[ll - 1] = ' ';
        const char *t = line + strspn(line, " ");
        if (cl == 0 && (*t == 0 || *t == '#'))
            continue;
        cl += (size_t)snprintf(cmd + cl, sizeof cmd - cl, "%s", line);
        if (!more) {
            cmds[n].cmd = strdup(cmd);
            cmds[n].out = NULL;
            n++;
            cl = 0;
            cmd[0] = 0;
        }
    }
    return n;
}

/* ---- checks -------------------------------------------------------------- */

static const char *jstr(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "";
}

/* The value of `key=` in cmd (up to a space, quote, & or end) into buf, or NULL. */
static const char *arg_value(const char *cmd, const char *key, char *buf, size_t len)
{
    const char *p = strstr(cmd, key);
    if (!p)
        return NULL;
    p += strlen(key);
    size_t n = strcspn(p, " '\"&\\");
    snprintf(buf, len, "%.*s", (int)n, p);
    return buf;
}

/* Checks one classify reply object: shape, task. */
static void check_shape(const char *cmd, const json_t *o, const char *task)
{
    json_t *labels = json_object_get(o, "labels"), *scores = json_object_get(o, "scores");
    size_t n = json_array_size(labels);
    CHECKF(n >= 1 && json_array_size(scores) == n, "%s: %zu labels, %zu scores", cmd, n,
           json_array_size(scores));
    double prev = 1.0 + 1e-9;
    for (size_t i = 0; i < n; i++) {
        double v = json_number_value(json_array_get(scores, i));
        CHECKF(json_is_string(json_array_get(labels, i)) && v >= 0 && v <= prev,
               "%s: scores[%zu] = %g not in best-first order", cmd, i, v);
        prev = v;
    }
    json_t *t = json_object_get(o, "task");
    if (task)
        CHECKF(json_is_string(t) && strcmp(json_string_value(t), task) == 0,
               "%s: reply task is not %s", cmd, task);
    else
        CHECKF(json_is_null(t), "%s: reply task is not null", cmd);
}

/* For a file upload or raw body: the reply equals vitfit classify on that
 * file with that task (from scratch/<task>.safetensors) and top_k. */
static void check_against_cli(const char *cmd, const json_t *o, const char *task)
{
    const char *at = strstr(cmd, "=@");
    at = at ? at + 2 : strstr(cmd, "--data-binary @");
    if (at && at[0] == '-')
        at += strlen("--data-binary @");
    if (!at)
        return;
    char rel[512], path[1024], task_file[512], k[16];
    snprintf(rel, sizeof rel, "%.*s", (int)strcspn(at, " '\""), at);
    if (!strstr(rel, ".png") && !strstr(rel, ".jpg"))
        return;
    snprintf(path, sizeof path, "%s/%s", scratch, rel);
    int top_k = arg_value(cmd, "top_k=", k, sizeof k) ? atoi(k) : 5;
    if (task) { /* a task file of the scratch directory, or one a job wrote */
        snprintf(task_file, sizeof task_file, "%s/%s.safetensors", scratch, task);
        if (access(task_file, F_OK) != 0)
            snprintf(task_file, sizeof task_file, "%s/data/tasks/%s.safetensors", scratch, task);
    }
    serve_ref ref;
    const char *imgs[] = {path};
    CHECKF(serve_reference(task ? task_file : NULL, imgs, 1, &ref), "%s: no reference", cmd);
    char why[256];
    CHECKF(serve_result_matches(o, task, &ref, top_k, why, sizeof why),
           "%s: differs from vitfit classify: %s", cmd, why);
    fprintf(stderr, "  (equal to vitfit classify on %s, task %s, top_k %d)\n", rel,
            task ? task : "none", top_k);
}

/* Checks the output of one command. */
static void check_output(const example *e)
{
    const char *cmd = e->cmd, *out = e->out ? e->out : "";
    size_t word = strcspn(cmd, " =");
    if (!strstr(cmd, "curl ") || cmd[word] == '=')
        return; /* another command, or an assignment */
    fprintf(stderr, "$ %s\n%.400s\n", cmd, out);
    CHECKF(*out, "%s: no output", cmd);
    if (strstr(cmd, "text/event-stream")) { /* a job's events, to its end */
        static const char first[] = "id: 1\nevent: created\ndata: {";
        CHECKF(strncmp(out, first, sizeof first - 1) == 0,
               "%s: the stream does not begin with event 1, created", cmd);
        const char *last = strstr(out, "event: succeeded\ndata: {");
        CHECKF(last != NULL, "%s: the stream has no succeeded event", cmd);
        CHECKF(!strstr(out, "event: failed") && !strstr(out, "event: cancelled"),
               "%s: the job did not succeed", cmd);
        return;
    }
    if (strstr(cmd, "/metrics")) {
        CHECKF(strstr(out, "vitfit_http_requests_total") != NULL, "%s: no metrics", cmd);
        return;
    }
    json_t *j = json_loads(out, 0, NULL);
    CHECKF(json_is_object(j), "%s: output is not a JSON object", cmd);
    json_t *error = json_object_get(j, "error"); /* a job's is null; a V2 error a string */
    CHECKF(!error || json_is_null(error), "%s: an error", cmd);
    json_t *outputs = json_object_get(j, "model_name") ? json_object_get(j, "outputs") : NULL;
    if (outputs) { /* a V2 inference: labels and scores of one shape [batch, k] */
        json_t *l = json_array_get(outputs, 0), *s = json_array_get(outputs, 1);
        CHECKF(json_array_size(outputs) == 2 &&
                   strcmp(jstr(json_object_get(l, "name")), "labels") == 0 &&
                   strcmp(jstr(json_object_get(s, "name")), "scores") == 0 &&
                   json_equal(json_object_get(l, "shape"), json_object_get(s, "shape")) &&
                   json_array_size(json_object_get(l, "data")) ==
                       json_array_size(json_object_get(s, "data")) &&
                   json_array_size(json_object_get(l, "data")) > 0,
               "%s: not a V2 reply with labels and scores", cmd);
    }
    char task[64];
    const char *t = arg_value(cmd, "task=", task, sizeof task);
    if (!t && strstr(cmd, "\\\"task\\\": \\\""))
        t = arg_value(cmd, "\\\"task\\\": \\\"", task, sizeof task);
    if (!t && strstr(cmd, "\"task\": \""))
        t = arg_value(cmd, "\"task\": \"", task, sizeof task);
    if (json_object_get(j, "scores")) { /* a classify reply */
        check_shape(cmd, j, t);
        check_against_cli(cmd, j, t);
    }
    json_t *results = json_object_get(j, "results");
    if (results) {
        CHECKF(json_array_size(results) >= 2, "%s: %zu results", cmd, json_array_size(results));
        for (size_t i = 0; i < json_array_size(results); i++)
            check_shape(cmd, json_array_get(results, i),
                        strstr(cmd, "tasks") ? jstr(json_object_get(json_array_get(results, i),
                                                                    "task"))
                                             : t);
        if (strstr(cmd, "\\\"tasks\\\": [\\\"shoes\\\", \\\"clothes\\\"]"))
            CHECKF(strcmp(jstr(json_object_get(json_array_get(results, 0), "task")), "shoes") == 0 &&
                       strcmp(jstr(json_object_get(json_array_get(results, 1), "task")),
                              "clothes") == 0,
                   "%s: results not in the order of \"tasks\"", cmd);
    }
    if (strstr(cmd, "-X PUT"))
        CHECKF(json_is_string(json_object_get(j, "name")), "%s: PUT reply without a name", cmd);
    if (strstr(cmd, "/v1/finetune") && !strstr(cmd, "?"))
        CHECKF(strcmp(jstr(json_object_get(j, "object")), "finetune.job") == 0 &&
                   strncmp(jstr(json_object_get(j, "id")), "ftjob-", 6) == 0,
               "%s: not a job object", cmd);
    if (strstr(cmd, "/v1/finetune/") && !strstr(cmd, "events"))
        CHECKF(strcmp(jstr(json_object_get(j, "status")), "succeeded") == 0,
               "%s: the job has not succeeded", cmd);
    json_decref(j);
}

/* ---- main ---------------------------------------------------------------- */

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    char readme_path[1024], data_dir[256];
    size_t len;
    char *readme = (char *)serve_read_file(test_path(readme_path, sizeof readme_path, "README.md"),
                                           &len);
    VIT_ASSERT(readme);
    VIT_ASSERT(serve_tmpdir("readme", data_dir, sizeof data_dir));
    VIT_ASSERT(serve_tmpdir("readme-cwd", scratch, sizeof scratch));

    /* the start command is the one this test runs (with a free port) */
    size_t pos = 0;
    char *start = next_block(readme, &pos, "<!-- serve-start -->");
    CHECKF(start && strstr(start, "vitfit serve --model models/fashion-vit-tiny --data-dir data"),
           "README: no serve-start block starting `vitfit serve --model models/fashion-vit-tiny "
           "--data-dir data`");
    free(start);

    /* the scratch directory: models/ and two tasks */
    char link_target[1024], link_path[512], f[512];
    test_path(link_target, sizeof link_target, "models");
    snprintf(link_path, sizeof link_path, "%s/models", scratch);
    VIT_ASSERT(symlink(link_target, link_path) == 0);
    snprintf(link_path, sizeof link_path, "%s/data", scratch); /* the server's data_dir */
    VIT_ASSERT(symlink(data_dir, link_path) == 0);
    snprintf(f, sizeof f, "%s/shoes.safetensors", scratch);
    VIT_ASSERT(serve_make_task(serve_model(), f, 3, "shoe", 11));
    snprintf(f, sizeof f, "%s/clothes.safetensors", scratch);
    VIT_ASSERT(serve_make_task(serve_model(), f, 10, "cloth", 12));

    char png_path[1024];
    size_t png_len;
    uint8_t *png = serve_read_file(
        test_path(png_path, sizeof png_path, "models/fashion-vit-tiny/samples/0_ankle_boot.png"),
        &png_len);
    VIT_ASSERT(png);
    loopback_http *origin = loopback_http_start(
        &(loopback_http_behaviour){.kind = LOOPBACK_HTTP_BODY, .body = png, .body_len = png_len,
                                   .content_type = "image/png"},
        AF_INET);
    VIT_ASSERT(origin);
    char origin_base[128];
    loopback_http_url(origin, "/", origin_base, sizeof origin_base);

    serve_proc p;
    const char *extra[] = {"--allow-private-urls", NULL};
    bool up = serve_start(&p, data_dir, NULL, extra);
    CHECKF(up, "the server did not start");
    int blocks = 0, cmds_run = 0;
    bool saw_put = false, saw_form = false, saw_raw = false, saw_url = false, saw_tasks = false;
    bool saw_job = false, saw_stream = false, saw_job_task = false;
    for (char *block; up && (block = next_block(readme, &pos, "<!-- serve-example -->"));) {
        blocks++;
        char *b1 = replace_all(block, "http://127.0.0.1:8080", p.base);
        char *b2 = replace_all(b1, "https://example.com/", origin_base);
        free(block);
        free(b1);
        example cmds[MAX_CMDS];
        int n = split_commands(b2, cmds, MAX_CMDS);
        /* one script: cd, set -e, each command followed by a separator line */
        size_t cap = strlen(b2) + 4096 + (size_t)n * 64;
        char *script = malloc(cap);
        VIT_ASSERT(script);
        size_t sl = (size_t)snprintf(script, cap, "set -e\ncd '%s'\n", scratch);
        for (int i = 0; i < n; i++)
            sl += (size_t)snprintf(script + sl, cap - sl, "%s\nprintf '\\n@@end-of-command@@\\n'\n",
                                   cmds[i].cmd);
        static char out[1 << 20], err[1 << 14];
        const char *argv[] = {"/bin/sh", "-c", script, NULL};
        int st = serve_run(argv, out, sizeof out, err, sizeof err, 120000);
        CHECKF(st == 0, "README block %d: exit %d\n%s\nstderr: %s", blocks, st, b2, err);
        char *o = out;
        for (int i = 0; i < n; i++) {
            char *sep = strstr(o, "\n@@end-of-command@@\n");
            if (sep)
                *sep = 0;
            cmds[i].out = o;
            check_output(&cmds[i]);
            cmds_run++;
            saw_put |= strstr(cmds[i].cmd, "-X PUT") != NULL;
            saw_form |= strstr(cmds[i].cmd, "-F image=@") != NULL;
            saw_raw |= strstr(cmds[i].cmd, "Content-Type: image/") != NULL;
            saw_url |= strstr(cmds[i].cmd, origin_base) != NULL;
            saw_tasks |= strstr(cmds[i].cmd, "tasks\\\": [") != NULL;
            saw_job |= strstr(cmds[i].cmd, "/v1/finetune") && strstr(cmds[i].cmd, "\"train\"");
            saw_stream |= strstr(cmds[i].cmd, "text/event-stream") != NULL;
            saw_job_task |= strstr(cmds[i].cmd, "-F task=fashion") != NULL;
            o = sep ? sep + strlen("\n@@end-of-command@@\n") : o + strlen(o);
            free(cmds[i].cmd);
        }
        free(script);
        free(b2);
    }
    fprintf(stderr, "%d README blocks, %d commands; the URL was fetched %u times\n", blocks,
            cmds_run, loopback_http_requests(origin));
    CHECKF(blocks >= 5 && cmds_run >= 10, "only %d blocks / %d commands in the README", blocks,
           cmds_run);
    CHECKF(saw_put && saw_form && saw_raw && saw_url && saw_tasks,
           "README examples lack: %s%s%s%s%s", saw_put ? "" : "a task PUT; ",
           saw_form ? "" : "a file upload (-F image=@); ", saw_raw ? "" : "a raw image body; ",
           saw_url ? "" : "an image URL (https://example.com/); ",
           saw_tasks ? "" : "the \"tasks\" form");
    CHECKF(loopback_http_requests(origin) >= 1, "the README's URL example fetched nothing");
    CHECKF(saw_job && saw_stream && saw_job_task,
           "README's fine-tuning walk-through lacks: %s%s%s", saw_job ? "" : "a job POST; ",
           saw_stream ? "" : "the event stream; ", saw_job_task ? "" : "classify with its task");
    if (up) {
        int st = serve_stop(&p, SIGTERM, 60000);
        CHECKF(st == 0, "server: exit %d", st);
    }
    loopback_http_stop(origin);
    free(png);
    free(readme);
    serve_model_free();
    curl_global_cleanup();
    serve_rmtree(data_dir);
    serve_rmtree(scratch);
    int hf = serve_harness_failures();
    return check_result() || hf;
}
