/*
 * config.c - the table of `vitfit serve` settings and the one path every
 * value takes into vit_cfg (config.h).
 *
 * Design: cfg_table below is the only place a key is described.  A value
 * arrives as text (a default, a flag, an environment variable) or as a typed
 * JSON value (the config file); set_text parses text by the row's type and
 * hands the result to the same setters the file uses (set_int, set_bool,
 * set_string), which check range, length and form and write the field at
 * the row's offset.  Defaults are text too and go through set_text, so a
 * default that breaks its own row's rules aborts at the first cfg_defaults
 * call (a bug, caught by every test).
 *
 * Messages name the source first: "--max-batch: ...", "VITFIT_PORT: ...",
 * "config file F: max_batch: ...".  Values are echoed quoted, cut at 64
 * bytes, with unprintable bytes as '?'; a CFG_SECRET value is never echoed.
 *
 * VITFIT_* variables that are not keys are errors -- a misspelt
 * VITFIT_MAX_BACH would otherwise be ignored in silence -- except those the
 * rest of vitfit reads (other_env below): keep that list in step with the
 * code that reads them (grep -r 'VITFIT_').
 */
#include "config.h"
#include "config_build.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_FILE_MAX (1 << 20) /* bytes of a config file */
#define NAME_SIZE 64           /* a flag or variable name built from a key */
#define LABEL_SIZE (CFG_PATH_SIZE + 128)

/* ---- checks of string keys (NULL = fine, else the reason) ---------------- */

/* A listen address: non-empty (CFG_REQUIRED), no spaces or control bytes. */
static const char *check_host(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return "is not a host name (it has a space or control character)";
    return NULL;
}

/* Empty, or a task name as DESIGN.md section 3 defines it. */
static const char *check_task(const char *s)
{
    static const char *why = "is not a task name (^[a-z0-9][a-z0-9._-]{0,63}$)";
    size_t n = strlen(s);
    if (n == 0)
        return NULL;
    if (n > 64)
        return why;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        int alnum = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '.' && ch != '_' && ch != '-')))
            return why;
    }
    return NULL;
}

/* An http(s) URL without spaces, a query or a fragment (server/hub.c checks
 * the rest -- https, or http to a loopback address -- when it is used). */
static const char *check_hub_url(const char *s)
{
    if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
        return "is not an https:// URL";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p >= 0x7f || *p == '?' || *p == '#')
            return "is not a URL without spaces, a query or a fragment";
    return NULL;
}

static const char *const log_format_names[] = {"json", "text", NULL};
static const char *const precision_names[] = {"fp32", "bf16", NULL};
static const char *const role_names[] = {"all", "serve", "train", NULL};

/* ---- the table ----------------------------------------------------------- */

/* The key's name is the field's name (#f), so the two cannot drift apart. */
#define FIELD(f) offsetof(vit_cfg, f), sizeof(((vit_cfg *)0)->f)
#define INT(f, def, lo, hi, help) {#f, CFG_INT, #def, lo, hi, FIELD(f), NULL, 0, NULL, help}
#define INT64(f, def, lo, hi, help) {#f, CFG_INT64, #def, lo, hi, FIELD(f), NULL, 0, NULL, help}
#define BOOL(f, def, help) {#f, CFG_BOOL, #def, 0, 1, FIELD(f), NULL, 0, NULL, help}
#define STRING(f, def, flags, check, help) \
    {#f, CFG_STRING, def, 0, 0, FIELD(f), NULL, flags, check, help}
#define ENUM(f, def, names, help) {#f, CFG_ENUM, def, 0, 0, FIELD(f), names, 0, NULL, help}

static const cfg_key cfg_table[] = {
    /* listening */
    STRING(host, "127.0.0.1", CFG_REQUIRED, check_host,
           "Address to listen on (0.0.0.0 or :: for every interface)."),
    INT(port, 8080, 0, 65535, "TCP port to listen on; 0 picks any free port."),
    /* model and data */
    STRING(model, VITFIT_DEFAULT_MODEL, CFG_REQUIRED, NULL,
           "Backbone checkpoint: a model directory or a .safetensors file."),
    STRING(data_dir, "data", CFG_REQUIRED, NULL,
           "Directory of tasks/, datasets/ and jobs/; nothing outside it is read or written."),
    /* model download: --model hf:ORG/NAME[@REVISION] (server/hub.c) */
    STRING(hub_url, "https://huggingface.co", CFG_REQUIRED, check_hub_url,
           "Model hub of hf:ORG/NAME[@REVISION] models (files from URL/ORG/NAME/resolve/REVISION/"
           "FILE): https, or http to a loopback address."),
    STRING(cache, "", 0, NULL,
           "Directory of downloaded models (hub/ORG/NAME/snapshots/REVISION); empty = "
           "~/.cache/vitfit."),
    BOOL(hub_offline, false,
         "Take hf: models from the cache only, never from the network (HF_HUB_OFFLINE=1 too)."),
    INT64(hub_max_bytes, 4294967296, 1024, 1099511627776,
          "Largest file downloaded from the hub; a larger one is refused before it is fetched."),
    /* inference */
    INT(workers, 1, 1, 64, "Inference workers, each running one batch at a time."),
    INT(threads_per_worker, 0, 0, 256,
        "Compute threads per worker; 0 = usable CPUs / workers."),
    BOOL(oversubscribe, false,
         "Allow workers x threads_per_worker above the usable CPUs (otherwise refused)."),
    ENUM(precision, "fp32", precision_names,
         "Matrix products of classify: fp32, or bf16 operands with fp32 accumulation (twice "
         "the multiply-adds per instruction; needs a CPU with avx512_bf16)."),
    INT(max_batch, 8, 1, 256, "Most images in one forward pass."),
    INT(max_batch_delay_ms, 50, 0, 1000,
        "Longest a worker waits for a batch to fill while more images are being prepared "
        "(never when none are, and never over a quarter of a full batch's forward time)."),
    INT(queue_capacity, 64, 1, 100000,
        "Images waiting for a worker; beyond it requests are refused at once (429/503)."),
    INT(max_images_per_request, 32, 1, 256, "Most images in one request (a request also names at most 32 tasks; images x tasks "
        "rows must fit queue_capacity)."),
    INT(request_timeout_ms, 30000, 1, 3600000,
        "Longest a request may wait and run before it fails with a timeout."),
    /* HTTP */
    INT64(max_body_bytes, 33554432, 1024, 1073741824,
          "Largest request body; a longer one is refused with 413."),
    INT64(max_image_pixels, 16777216, 1, 100000000,
          "Largest image (width x height), checked before decoding."),
    INT(max_connections, 256, 1, 65535, "Most open HTTP connections."),
    INT(connection_timeout_s, 30, 1, 3600, "Idle time after which a connection is closed."),
    INT(http_threads, 2, 1, 64, "Threads serving HTTP connections (they never compute)."),
    INT(decode_threads, 2, 1, 64, "Threads decoding and preprocessing images."),
    /* image URLs */
    INT(max_concurrent_fetches, 8, 1, 256, "Image URLs fetched at the same time."),
    INT(url_connect_timeout_ms, 3000, 1, 600000, "Time allowed to connect to an image URL's host."),
    INT(url_timeout_ms, 10000, 1, 600000, "Time allowed for a whole image URL fetch."),
    INT64(url_max_bytes, 16777216, 1024, 1073741824, "Largest image fetched from a URL."),
    INT(url_max_redirects, 3, 0, 20, "Redirects followed when fetching an image URL."),
    BOOL(allow_private_urls, false,
         "Fetch from loopback, private and link-local addresses (off: refused, for SSRF safety)."),
    /* tasks */
    STRING(default_task, "", 0, check_task,
           "Task used when a request names none; empty = the backbone's own head."),
    INT(task_memory_mb, 256, 1, 1048576, "Memory for loaded task bias sets, in MiB."),
    INT(task_reload_ms, 2000, 50, 600000,
        "Rescan tasks/ this often for files other replicas or an operator added, replaced or "
        "removed (inotify sees this machine's changes at once; the rescan covers network file "
        "systems)."),
    /* fine-tune jobs */
    INT(max_running_jobs, 1, 1, 16, "Fine-tune jobs that train at once."),
    INT(max_queued_jobs, 16, 1, 10000,
        "Fine-tune jobs that may wait to run; one more is refused with 429."),
    INT(serve_reserved_threads, 1, 0, 256,
        "CPUs kept for classify while a job trains: training uses the rest (at least 1)."),
    INT(job_checkpoint_every_steps, 0, 0, 100000000,
        "Checkpoint a job every this many steps as well as after every epoch (0: epochs only)."),
    INT(job_lease_ms, 15000, 1000, 3600000,
        "A replica running a job renews its lease in jobs/ every quarter of this; a lease not "
        "renewed for this long is taken over by another replica, which resumes the job from "
        "its last checkpoint."),
    ENUM(role, "all", role_names,
         "What this replica does: all (classify and train), serve (classify; jobs submitted "
         "here are trained by another replica) or train (trains jobs; classify answers 503)."),
    /* operation */
    STRING(api_key, "", CFG_SECRET, NULL,
           "If set, requests must send Authorization: Bearer KEY (the key is never printed)."),
    INT(drain_timeout_ms, 10000, 0, 600000,
        "On SIGTERM, how long in-flight requests may finish before the server stops."),
    ENUM(log_format, "json", log_format_names,
         "Log lines as one JSON object each (json) or as plain text (text)."),
};

#define NKEYS (sizeof cfg_table / sizeof cfg_table[0])

/* VITFIT_* variables read elsewhere in vitfit (not config keys): passed over
 * by cfg_load.  VITFIT_CONFIG is cfg_load's own. */
static const char *const other_env[] = {
    "VITFIT_NO_AVX512",      /* engine: force the portable kernels */
    "VITFIT_BF16_EMULATE",   /* engine: bf16 on CPUs without avx512_bf16 (tests) */
    "VITFIT_SOURCE_ROOT",    /* tests: the source tree */
    "VITFIT_BIN",            /* tests: the vitfit binary */
    "VITFIT_CI",             /* test.sh: running in CI */
    "VITFIT_WITH_FUZZ",      /* test.sh */
    "VITFIT_WITH_BROWSER",   /* tools/install-deps.sh: chromium, nodejs, npm */
    "VITFIT_WITH_REFERENCE", /* test.sh / tools: PyTorch reference */
    "VITFIT_SKIP_STAGES",    /* test.sh */
    "VITFIT_TEST_CPUS",      /* tests/unit/fake_cpus.c */
    "VITFIT_TEST_FAIL_THREAD", /* tests/unit/fail_pthread_create.c */
    "VITFIT_TEST_LEASE_REMOTE", /* tests: judge job leases as if replicas were on other hosts */
    "VITFIT_FUZZ_TASK_SEEDS", /* tests/fuzz/fuzz_task.c */
    NULL,
};

const cfg_key *cfg_keys(size_t *n)
{
    *n = NKEYS;
    return cfg_table;
}

/* ---- names and messages -------------------------------------------------- */

/* "--queue-capacity" for queue_capacity. */
static void flag_name(const cfg_key *k, char *buf, size_t n)
{
    snprintf(buf, n, "--%s", k->name);
    for (char *p = buf + 2; *p; p++)
        if (*p == '_')
            *p = '-';
}

/* "VITFIT_QUEUE_CAPACITY" for queue_capacity. */
static void env_name(const cfg_key *k, char *buf, size_t n)
{
    snprintf(buf, n, "VITFIT_%s", k->name);
    for (char *p = buf + 7; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
}

/* s (its first len bytes) quoted for a message: at most 64 bytes, others
 * cut to "...", bytes outside printable ASCII as '?'. */
static const char *quote(const char *s, size_t len, char *buf, size_t n)
{
    size_t o = 0, shown = len < 64 ? len : 64;
    buf[o++] = '\'';
    for (size_t i = 0; i < shown && o + 5 < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = ch >= ' ' && ch < 0x7f ? (char)ch : '?';
    }
    if (shown < len && o + 5 < n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

/* A value of key k quoted for a message, or "the value" for a secret; a URL's
 * user:password (scheme://user:password@host) is shown as ***. */
static const char *show(const cfg_key *k, const char *s, char *buf, size_t n)
{
    if (k->flags & CFG_SECRET) {
        snprintf(buf, n, "the value");
        return buf;
    }
    const char *scheme = strstr(s, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
    if (at && (!slash || at < slash)) {
        char redacted[512];
        snprintf(redacted, sizeof redacted, "%.*s***%s", (int)(scheme + 3 - s), s, at);
        return quote(redacted, strlen(redacted), buf, n);
    }
    return quote(s, strlen(s), buf, n);
}

/* Writes "label: <formatted>" into err; returns CFG_ERROR. */
__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t n, const char *label, const char *fmt, ...)
{
    if (!err || n == 0)
        return CFG_ERROR;
    int w = snprintf(err, n, "%s: ", label);
    if (w >= 0 && (size_t)w < n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + w, n - (size_t)w, fmt, ap);
        va_end(ap);
    }
    return CFG_ERROR;
}

/* ---- setters: one per kind of value; label names key and source --------- */

/* Stores v into k's int or int64_t field after the range check. */
static int set_int(vit_cfg *c, const cfg_key *k, int64_t v, const char *label, char *err,
                   size_t n)
{
    if (v < k->min)
        return fail(err, n, label, "%lld is below the minimum %lld", (long long)v,
                    (long long)k->min);
    if (v > k->max)
        return fail(err, n, label, "%lld is above the maximum %lld", (long long)v,
                    (long long)k->max);
    char *field = (char *)c + k->offset;
    if (k->type == CFG_INT)
        *(int *)(void *)field = (int)v; /* bounds are within int (table check) */
    else
        *(int64_t *)(void *)field = v;
    return CFG_OK;
}

static void set_bool(vit_cfg *c, const cfg_key *k, bool v)
{
    *(bool *)(void *)((char *)c + k->offset) = v;
}

/* Stores the len bytes of s into k's string field (NUL-padded) or, for an
 * enum, the index of the choice s names.  Refuses embedded NULs, values too
 * long for the field, empty required ones and what k->check refuses. */
static int set_string(vit_cfg *c, const cfg_key *k, const char *s, size_t len,
                      const char *label, char *err, size_t n)
{
    char q[96];
    if (memchr(s, '\0', len))
        return fail(err, n, label, "the value contains a NUL byte");
    if (k->type == CFG_ENUM) {
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(k->choices[i], s) == 0) {
                *(int *)(void *)((char *)c + k->offset) = i;
                return CFG_OK;
            }
        char list[128] = "";
        for (int i = 0; k->choices[i]; i++) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", k->choices[i]);
        }
        return fail(err, n, label, "%s is not one of %s", show(k, s, q, sizeof q), list);
    }
    if (len >= k->size)
        return fail(err, n, label, "the value is %zu bytes long; the limit is %zu", len,
                    k->size - 1);
    if (len == 0 && (k->flags & CFG_REQUIRED))
        return fail(err, n, label, "must not be empty");
    const char *why = k->check ? k->check(s) : NULL;
    if (why)
        return fail(err, n, label, "%s %s", show(k, s, q, sizeof q), why);
    char *field = (char *)c + k->offset;
    memset(field, 0, k->size);
    memcpy(field, s, len);
    return CFG_OK;
}

/* true/false, 1/0, yes/no (any case) into *v; -1 for anything else. */
static int parse_bool(const char *s, bool *v)
{
    static const char *const yes[] = {"true", "1", "yes"}, *const no[] = {"false", "0", "no"};
    for (int i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return *v = true, 0;
        if (strcasecmp(s, no[i]) == 0)
            return *v = false, 0;
    }
    return -1;
}

/* Parses the text s by k's type and stores it: decimal integers only (an
 * optional sign, no spaces, nothing after the digits, within int64). */
static int set_text(vit_cfg *c, const cfg_key *k, const char *s, const char *label, char *err,
                    size_t n)
{
    char q[96];
    switch (k->type) {
    case CFG_INT:
    case CFG_INT64: {
        /* strtoll skips leading spaces and stops at anything: check both */
        if (*s == '\0' || !(*s == '-' || *s == '+' || (*s >= '0' && *s <= '9')))
            return fail(err, n, label, "%s is not an integer", show(k, s, q, sizeof q));
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || *end != '\0')
            return fail(err, n, label, "%s is not an integer", show(k, s, q, sizeof q));
        if (errno == ERANGE)
            return fail(err, n, label, "%s is out of range (%lld to %lld)",
                        show(k, s, q, sizeof q), (long long)k->min, (long long)k->max);
        return set_int(c, k, v, label, err, n);
    }
    case CFG_BOOL: {
        bool v;
        if (parse_bool(s, &v) != 0)
            return fail(err, n, label, "%s is not a boolean (true/false, 1/0, yes/no)",
                        show(k, s, q, sizeof q));
        set_bool(c, k, v);
        return CFG_OK;
    }
    case CFG_STRING:
    case CFG_ENUM:
        return set_string(c, k, s, strlen(s), label, err, n);
    }
    return fail(err, n, label, "internal error: bad key type");
}

/* ---- defaults ------------------------------------------------------------- */

/* A table row that breaks its own rules is a bug: say which and abort. */
static void table_bug(const cfg_key *k, const char *what)
{
    fprintf(stderr, "config.c: table row '%s': %s\n", k->name, what);
    abort();
}

void cfg_defaults(vit_cfg *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        const cfg_key *k = &cfg_table[i];
        size_t want = k->type == CFG_INT64 ? sizeof(int64_t)
                      : k->type == CFG_BOOL ? sizeof(bool)
                      : k->type == CFG_INT || k->type == CFG_ENUM ? sizeof(int)
                                                                   : k->size;
        if (k->size != want || (k->type == CFG_STRING && k->size < 2))
            table_bug(k, "field size does not fit the type");
        if (k->type == CFG_INT && (k->min < -2147483647 - 1 || k->max > 2147483647))
            table_bug(k, "bounds outside int");
        char err[256];
        if (set_text(c, k, k->def, k->name, err, sizeof err) != CFG_OK)
            table_bug(k, err);
    }
}

/* ---- the config file ------------------------------------------------------ */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

/* Applies the JSON value v of key k from the file (label names both): the
 * JSON type must be the key's own -- an integer for int keys (8.0 is
 * refused), true/false for booleans, a string for strings and enums. */
static int set_json(vit_cfg *c, const cfg_key *k, const json_t *v, const char *label,
                    char *err, size_t n)
{
    switch (k->type) {
    case CFG_INT:
    case CFG_INT64:
        if (json_is_integer(v))
            return set_int(c, k, (int64_t)json_integer_value(v), label, err, n);
        if (json_is_real(v))
            return fail(err, n, label, "the real number %.17g is not an integer (write it "
                        "without '.' or an exponent)", json_real_value(v));
        return fail(err, n, label, "expects an integer, not %s", json_type_name(v));
    case CFG_BOOL:
        if (json_is_boolean(v)) {
            set_bool(c, k, json_is_true(v));
            return CFG_OK;
        }
        return fail(err, n, label, "expects true or false, not %s", json_type_name(v));
    case CFG_STRING:
    case CFG_ENUM:
        if (json_is_string(v))
            return set_string(c, k, json_string_value(v), json_string_length(v), label, err, n);
        return fail(err, n, label, "expects a string, not %s", json_type_name(v));
    }
    return fail(err, n, label, "internal error: bad key type");
}

/* Reads the regular file path (at most CFG_FILE_MAX bytes) into a malloc'd
 * buffer (caller frees) of *len bytes.  Never blocks on a FIFO or device:
 * opened O_NONBLOCK and refused unless fstat says regular file. */
static char *read_file(const char *path, size_t *len, const char *label, char *err, size_t n)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        fail(err, n, label, "%s", strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        fail(err, n, label, "%s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        fail(err, n, label, "not a regular file");
        goto out;
    }
    if (st.st_size > CFG_FILE_MAX) {
        fail(err, n, label, "%lld bytes is over the limit of %d", (long long)st.st_size,
             CFG_FILE_MAX);
        goto out;
    }
    buf = malloc(CFG_FILE_MAX + 1);
    if (!buf) {
        fail(err, n, label, "out of memory");
        goto out;
    }
    size_t got = 0; /* reads one byte past the limit: the file may have grown */
    while (got <= CFG_FILE_MAX) {
        ssize_t r = read(fd, buf + got, CFG_FILE_MAX + 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fail(err, n, label, "%s", strerror(errno));
            goto drop;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got > CFG_FILE_MAX) {
        fail(err, n, label, "over the limit of %d bytes", CFG_FILE_MAX);
        goto drop;
    }
    *len = got;
    goto out;
drop:
    free(buf);
    buf = NULL;
out:
    close(fd);
    return buf;
}

/* Applies the JSON object in file path: its keys must be table keys (each
 * at most once), its values of the key's JSON type. */
static int load_file(vit_cfg *c, const char *path, char *err, size_t n)
{
    char label[LABEL_SIZE], q[96];
    snprintf(label, sizeof label, "config file %s", path);
    size_t len;
    char *text = read_file(path, &len, label, err, n);
    if (!text)
        return CFG_ERROR;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    free(text);
    if (!root)
        return fail(err, n, label, "line %d column %d: %s", je.line, je.column, je.text);
    int rc = CFG_OK;
    if (!json_is_object(root)) {
        rc = fail(err, n, label, "expects a JSON object of config keys, not %s",
                  json_type_name(root));
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        const cfg_key *k = NULL;
        for (size_t i = 0; i < NKEYS && !k; i++)
            if (strcmp(cfg_table[i].name, key) == 0)
                k = &cfg_table[i];
        if (!k) {
            rc = fail(err, n, label, "unknown key %s", quote(key, strlen(key), q, sizeof q));
            goto out;
        }
        char keylabel[LABEL_SIZE + NAME_SIZE];
        snprintf(keylabel, sizeof keylabel, "%s: %s", label, k->name);
        if ((rc = set_json(c, k, v, keylabel, err, n)) != CFG_OK)
            goto out;
    }
out:
    json_decref(root);
    return rc;
}

/* ---- environment ---------------------------------------------------------- */

/* Applies every VITFIT_* variable of envp that names a key; any other
 * VITFIT_* variable that is not VITFIT_CONFIG or in other_env is an error. */
static int load_env(vit_cfg *c, char *const *envp, char *err, size_t n)
{
    for (size_t e = 0; envp && envp[e]; e++) {
        const char *var = envp[e], *eq = strchr(var, '=');
        if (strncmp(var, "VITFIT_", 7) != 0 || !eq)
            continue;
        size_t len = (size_t)(eq - var);
        char name[NAME_SIZE];
        if (len == strlen("VITFIT_CONFIG") && strncmp(var, "VITFIT_CONFIG", len) == 0)
            continue;
        int other = 0;
        for (size_t i = 0; other_env[i] && !other; i++)
            other = strlen(other_env[i]) == len && strncmp(other_env[i], var, len) == 0;
        if (other)
            continue;
        const cfg_key *k = NULL;
        for (size_t i = 0; i < NKEYS && !k; i++) {
            env_name(&cfg_table[i], name, sizeof name);
            if (strlen(name) == len && strncmp(name, var, len) == 0)
                k = &cfg_table[i];
        }
        if (!k) {
            char q[96];
            return fail(err, n, quote(var, len, q, sizeof q),
                        "unknown VITFIT_ environment variable (no config key has this name; "
                        "vitfit serve --help lists them)");
        }
        env_name(k, name, sizeof name);
        int rc = set_text(c, k, eq + 1, name, err, n);
        if (rc != CFG_OK)
            return rc;
    }
    return CFG_OK;
}

/* ---- flags ---------------------------------------------------------------- */

/* One parsed command-line flag. */
typedef struct flag_tok {
    const cfg_key *key; /* the key set, or NULL for --config */
    const char *value;  /* its text */
} flag_tok;

/* Reads the flag at argv[*i] (and its value, when it is the next argument)
 * into t and moves *i past them.  A bool flag without '=' means true; any
 * other flag without '=' takes the next argument, which must not start with
 * "--".  Errors: a positional argument, an unknown flag, a missing value. */
static int next_flag(int argc, char *const *argv, int *i, flag_tok *t, char *err, size_t n)
{
    const char *arg = argv[(*i)++];
    char q[96], label[NAME_SIZE];
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return fail(err, n, quote(arg, strlen(arg), q, sizeof q),
                    "unexpected argument (vitfit serve takes only --flags)");
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    t->key = NULL;
    if (len == strlen("--config") && strncmp(arg, "--config", len) == 0) {
        snprintf(label, sizeof label, "--config");
    } else {
        for (size_t k = 0; k < NKEYS && !t->key; k++) {
            flag_name(&cfg_table[k], label, sizeof label);
            if (strlen(label) == len && strncmp(label, arg, len) == 0)
                t->key = &cfg_table[k];
        }
        if (!t->key)
            return fail(err, n, quote(arg, len, q, sizeof q),
                        "unknown flag (vitfit serve --help lists them; words are joined by '-')");
    }
    if (eq) {
        t->value = eq + 1;
    } else if (t->key && t->key->type == CFG_BOOL) {
        t->value = "true";
    } else if (*i < argc && strncmp(argv[*i], "--", 2) != 0) {
        t->value = argv[(*i)++];
    } else {
        return fail(err, n, label, "needs a value (%s %s or %s=%s)", label,
                    t->key ? "VALUE" : "FILE", label, t->key ? "VALUE" : "FILE");
    }
    return CFG_OK;
}

static int is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* ---- cfg_load --------------------------------------------------------------- */

/* The layers into *c (already at defaults). */
static int load_layers(vit_cfg *c, int argc, char *const *argv, char *const *envp, char *err,
                       size_t n)
{
    /* pass 1: syntax, --help (wins over any error) and --config */
    const char *file = NULL;
    int help = 0, rc = CFG_OK;
    for (int i = 0; i < argc;) {
        if (is_help(argv[i])) {
            help = 1;
            i++;
            continue;
        }
        flag_tok t;
        if (next_flag(argc, argv, &i, &t, rc == CFG_OK ? err : NULL, rc == CFG_OK ? n : 0)
            != CFG_OK)
            rc = CFG_ERROR;
        else if (!t.key)
            file = t.value;
    }
    if (help)
        return CFG_HELP;
    if (rc != CFG_OK)
        return rc;

    const char *label = "--config";
    if (!file) {
        for (size_t e = 0; envp && envp[e]; e++)
            if (strncmp(envp[e], "VITFIT_CONFIG=", 14) == 0)
                file = envp[e] + 14; /* the last one wins, like setenv's */
        label = "VITFIT_CONFIG";
    }
    if (file && *file == '\0')
        return fail(err, n, label, "names no file (empty)");
    if (file && (rc = load_file(c, file, err, n)) != CFG_OK)
        return rc;

    if ((rc = load_env(c, envp, err, n)) != CFG_OK)
        return rc;

    /* pass 2: the flags' values, in order */
    for (int i = 0; i < argc;) {
        if (is_help(argv[i])) {
            i++;
            continue;
        }
        flag_tok t;
        if (next_flag(argc, argv, &i, &t, err, n) != CFG_OK)
            return CFG_ERROR; /* pass 1 saw none: unreachable */
        if (!t.key)
            continue;
        char name[NAME_SIZE];
        flag_name(t.key, name, sizeof name);
        if ((rc = set_text(c, t.key, t.value, name, err, n)) != CFG_OK)
            return rc;
    }
    return CFG_OK;
}

int cfg_load(vit_cfg *c, int argc, char *const *argv, char *const *envp, char *err,
             size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    vit_cfg *work = malloc(sizeof *work); /* c changes only on success */
    if (!work) {
        cfg_defaults(c);
        if (err && errlen)
            snprintf(err, errlen, "config: out of memory");
        return CFG_ERROR;
    }
    cfg_defaults(work);
    int rc = load_layers(work, argc, argv, envp, err, errlen);
    if (rc == CFG_OK)
        memcpy(c, work, sizeof *c);
    else
        cfg_defaults(c);
    free(work);
    return rc;
}

/* ---- help and JSON view ------------------------------------------------------ */

void cfg_print_help(FILE *out)
{
    fprintf(out,
            "usage: vitfit serve [--config FILE] [--KEY VALUE | --KEY=VALUE]...\n"
            "\n"
            "Each setting comes from, later winning: its default, the JSON config file\n"
            "(--config FILE, else $VITFIT_CONFIG), a VITFIT_* environment variable, a flag.\n"
            "One name in each: queue_capacity <-> --queue-capacity <-> VITFIT_QUEUE_CAPACITY.\n"
            "Booleans: a flag without a value means true; values true/false, 1/0, yes/no.\n"
            "Unknown keys, flags and VITFIT_* variables are errors.\n"
            "\n"
            "  --config FILE  (VITFIT_CONFIG)\n"
            "      A JSON object of the keys below, at most %d bytes\n"
            "      (config/vitfit.example.json lists them all); default: none.\n"
            "  -h, --help\n"
            "      Print this text and exit.\n",
            CFG_FILE_MAX);
    for (size_t i = 0; i < NKEYS; i++) {
        const cfg_key *k = &cfg_table[i];
        char flag[NAME_SIZE], env[NAME_SIZE];
        flag_name(k, flag, sizeof flag);
        env_name(k, env, sizeof env);
        fprintf(out, "\n  %s", flag);
        if (k->type == CFG_ENUM)
            for (int j = 0; k->choices[j]; j++)
                fprintf(out, "%s%s", j ? "|" : " ", k->choices[j]);
        else
            fprintf(out, "%s", k->type == CFG_BOOL     ? "[=BOOL]"
                               : k->type == CFG_STRING ? " TEXT"
                                                       : " N");
        fprintf(out, "  (%s)\n      ", env);
        switch (k->type) {
        case CFG_INT:
        case CFG_INT64:
            fprintf(out, "integer %lld..%lld, default %s", (long long)k->min, (long long)k->max,
                    k->def);
            break;
        case CFG_BOOL:
            fprintf(out, "boolean, default %s", k->def);
            break;
        case CFG_STRING:
            fprintf(out, "%sstring, at most %zu bytes, default %s%s%s",
                    k->flags & CFG_SECRET ? "secret " : "", k->size - 1,
                    *k->def ? "\"" : "", *k->def ? k->def : "empty", *k->def ? "\"" : "");
            if (k->flags & CFG_REQUIRED)
                fprintf(out, ", required");
            break;
        case CFG_ENUM:
            fprintf(out, "one of");
            for (int j = 0; k->choices[j]; j++)
                fprintf(out, "%s %s", j ? "," : "", k->choices[j]);
            fprintf(out, "; default %s", k->def);
            break;
        }
        fprintf(out, "\n      %s\n", k->help);
    }
    fprintf(out, "\nOther VITFIT_* variables, read by vitfit itself or its tests (not keys):\n");
    size_t col = 0;
    for (size_t i = 0; other_env[i]; i++) {
        if (col && col + strlen(other_env[i]) > 76)
            col = 0, fprintf(out, "\n");
        col += (size_t)fprintf(out, "  %s", other_env[i]);
    }
    fprintf(out, "\n");
}

/* A JSON string of s; bytes that make it invalid UTF-8 become '?'. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

json_t *cfg_to_json(const vit_cfg *c)
{
    json_t *obj = json_object();
    for (size_t i = 0; obj && i < NKEYS; i++) {
        const cfg_key *k = &cfg_table[i];
        const char *field = (const char *)c + k->offset;
        json_t *v = NULL;
        switch (k->type) {
        case CFG_INT: v = json_integer(*(const int *)(const void *)field); break;
        case CFG_INT64: v = json_integer(*(const int64_t *)(const void *)field); break;
        case CFG_BOOL: v = json_boolean(*(const bool *)(const void *)field); break;
        case CFG_ENUM: v = json_string(k->choices[*(const int *)(const void *)field]); break;
        case CFG_STRING:
            v = (k->flags & CFG_SECRET) ? json_string(*field ? "***" : "") : json_text(field);
            break;
        }
        if (!v || json_object_set_new(obj, k->name, v) != 0) {
            json_decref(obj);
            obj = NULL;
        }
    }
    return obj;
}

const char *cfg_default_model(void)
{
    return VITFIT_DEFAULT_MODEL;
}
