/*
 * test_config.c - config/: the table, the layers and every refusal.
 *
 * The expected keys, defaults and bounds are written out here again (want[]),
 * from the issue, not read from config.c's table, so a wrong row fails.
 *
 * 1. Defaults: every field by hand; the table has exactly want[]'s keys in
 *    order, and cfg_to_json of the defaults is want[]'s defaults.
 * 2. Layers: one key set in file, environment and flags (each alone, each
 *    pair, all three): later wins, and keys set only in an earlier layer
 *    survive; VITFIT_CONFIG names the file, --config wins over it; the last
 *    of a repeated flag wins.
 * 3. Flags: both spellings, '=' inside a value, a value beginning with '-'.
 * 4. Booleans: bare flag, every accepted form by flag and by environment,
 *    refused forms, and a bare bool flag followed by a word.
 * 5. Integers: every int key at min and max (accepted, stored exactly) and
 *    at min-1 / max+1 (refused naming the key and the bound); text that is
 *    no integer (spaces, trailing bytes, hex, reals, empty), overflow.
 * 6. Strings: the longest value fits whole, one more byte is refused (never
 *    truncated); required keys refuse empty; host and default_task forms; the
 *    enum; a secret is never echoed in a message.
 * 7. Unknown flag / environment variable / file key, positional arguments,
 *    missing values; the VITFIT_* allow-list passes; other variables ignored.
 * 8. The file: strict JSON types (a real for an int key), duplicate keys,
 *    bad JSON, non-object, missing file, directory, FIFO, /dev/null, the
 *    1 MiB cap at and over the limit.
 * 9. --help / -h (even beside a bad flag); cfg_print_help names every key's
 *    flag and variable and the allow-list.
 * 10. cfg_to_json hides api_key; its output loads back as a config file.
 * 11. config/vitfit.example.json has exactly the table's keys and loads to
 *    the defaults.
 * Every failed load must leave the defaults in c and one line in err.
 */
#include "config.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

static char tmpdir[] = "/tmp/vitfit-test-config-XXXXXX";

/* The keys as issue 8 lists them.  def is the default as JSON text; for
 * integer keys lo/hi are the bounds. */
typedef struct want_key {
    const char *name;
    const char *def;
    long long lo, hi;
    int is_int;
} want_key;

#define I(name, def, lo, hi) {name, #def, lo, hi, 1}
#define O(name, def) {name, def, 0, 0, 0}
static const want_key want[] = {
    O("host", "\"127.0.0.1\""),
    I("port", 8080, 0, 65535),
    O("model", "\"(the build's: cfg_default_model)\""),
    O("data_dir", "\"data\""),
    O("hub_url", "\"https://huggingface.co\""),
    O("cache", "\"\""),
    O("hub_offline", "false"),
    I("hub_max_bytes", 4294967296, 1024, 1099511627776),
    I("workers", 1, 1, 64),
    I("threads_per_worker", 0, 0, 256),
    O("oversubscribe", "false"),
    O("precision", "\"fp32\""),
    I("max_batch", 8, 1, 256),
    I("max_batch_delay_ms", 50, 0, 1000),
    I("queue_capacity", 64, 1, 100000),
    I("max_images_per_request", 32, 1, 256),
    I("request_timeout_ms", 30000, 1, 3600000),
    I("max_body_bytes", 33554432, 1024, 1073741824),
    I("max_image_pixels", 16777216, 1, 100000000),
    I("max_connections", 256, 1, 65535),
    I("connection_timeout_s", 30, 1, 3600),
    I("http_threads", 2, 1, 64),
    I("decode_threads", 2, 1, 64),
    I("max_concurrent_fetches", 8, 1, 256),
    I("url_connect_timeout_ms", 3000, 1, 600000),
    I("url_timeout_ms", 10000, 1, 600000),
    I("url_max_bytes", 16777216, 1024, 1073741824),
    I("url_max_redirects", 3, 0, 20),
    O("allow_private_urls", "false"),
    O("default_task", "\"\""),
    I("task_memory_mb", 256, 1, 1048576),
    I("task_reload_ms", 2000, 50, 600000),
    I("max_running_jobs", 1, 1, 16),
    I("max_queued_jobs", 16, 1, 10000),
    I("serve_reserved_threads", 1, 0, 256),
    I("job_checkpoint_every_steps", 0, 0, 100000000),
    I("job_lease_ms", 15000, 1000, 3600000),
    O("role", "\"all\""),
    O("api_key", "\"\""),
    I("drain_timeout_ms", 10000, 0, 600000),
    O("log_format", "\"json\""),
};
#define NWANT (sizeof want / sizeof want[0])

/* VITFIT_* variables that are not keys and must pass (config.c other_env). */
static const char *const allowed_env[] = {
    "VITFIT_NO_AVX512=1", "VITFIT_SOURCE_ROOT=/x", "VITFIT_BIN=/x/vitfit", "VITFIT_CI=1",
    "VITFIT_WITH_FUZZ=0", "VITFIT_WITH_REFERENCE=1", "VITFIT_SKIP_STAGES=fuzz",
    "VITFIT_TEST_CPUS=8", "VITFIT_TEST_FAIL_THREAD=2", "VITFIT_FUZZ_TASK_SEEDS=/x",
    "VITFIT_BF16_EMULATE=1", "VITFIT_WITH_BROWSER=0", "VITFIT_TEST_LEASE_REMOTE=1",
};
#define NALLOWED (sizeof allowed_env / sizeof allowed_env[0])

/* ---- helpers ------------------------------------------------------------ */

/* NULL-terminated argument / environment lists as compound literals. */
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE ((const char *const[]){NULL})

static char err[8192];

/* cfg_load with NULL-terminated argv and env lists. */
static int load(vit_cfg *c, const char *const *env, const char *const *argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    memset(c, 0x5a, sizeof *c); /* cfg_load must fill every byte */
    memset(err, 'E', sizeof err);
    err[sizeof err - 1] = '\0';
    return cfg_load(c, argc, (char *const *)argv, (char *const *)env, err, sizeof err);
}

/* A load that must succeed; the result in *c. */
static int expect_ok(const char *what, vit_cfg *c, const char *const *env,
                     const char *const *argv)
{
    int rc = load(c, env, argv);
    CHECKF(rc == CFG_OK, "%s: rc %d, err \"%s\"", what, rc, err);
    if (rc == CFG_OK)
        CHECKF(err[0] == '\0', "%s: err not cleared on success: \"%.60s\"", what, err);
    return rc == CFG_OK;
}

/* A load that must fail with a message containing needle and needle2 (either
 * may be NULL), one line, and the defaults left in c. */
static void expect_err(const char *what, const char *const *env, const char *const *argv,
                       const char *needle, const char *needle2)
{
    vit_cfg c, d;
    int rc = load(&c, env, argv);
    fprintf(stderr, "  %-36s -> %s\n", what, rc == CFG_ERROR ? err : "(no error)");
    CHECKF(rc == CFG_ERROR, "%s: rc %d, want CFG_ERROR", what, rc);
    if (rc != CFG_ERROR)
        return;
    CHECKF(err[0] != '\0' && strchr(err, '\n') == NULL, "%s: message empty or multi-line", what);
    if (needle)
        CHECKF(strstr(err, needle) != NULL, "%s: message lacks \"%s\"", what, needle);
    if (needle2)
        CHECKF(strstr(err, needle2) != NULL, "%s: message lacks \"%s\"", what, needle2);
    cfg_defaults(&d);
    CHECKF(memcmp(&c, &d, sizeof c) == 0, "%s: c is not the defaults after an error", what);
}

/* Writes len bytes of text to tmpdir/name; returns the path, in one of 8
 * rotating static buffers (good for the next 7 calls). */
static const char *write_file(const char *name, const char *text, size_t len)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    CHECKF(f != NULL, "cannot write %s", p);
    if (f) {
        CHECK(fwrite(text, 1, len, f) == len);
        CHECK(fclose(f) == 0);
    }
    return p;
}

static const char *write_json(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

/* The flag and variable names of a key by the rule, built here. */
static void names_of(const char *key, char *flag, char *env)
{
    size_t i;
    flag[0] = flag[1] = '-';
    for (i = 0; key[i]; i++)
        flag[2 + i] = key[i] == '_' ? '-' : key[i];
    flag[2 + i] = '\0';
    memcpy(env, "VITFIT_", 7);
    for (i = 0; key[i]; i++)
        env[7 + i] = key[i] >= 'a' && key[i] <= 'z' ? (char)(key[i] - 'a' + 'A') : key[i];
    env[7 + i] = '\0';
}

/* ---- 1. defaults ---------------------------------------------------------- */

static void test_defaults(void)
{
    vit_cfg d, c;
    memset(&d, 0x5a, sizeof d);
    cfg_defaults(&d);
    CHECK(strcmp(d.host, "127.0.0.1") == 0);
    CHECK(d.port == 8080);
    /* the bundled model by its absolute path, so it is found from any directory */
    CHECK(strcmp(d.model, cfg_default_model()) == 0 && d.model[0] == '/');
    CHECK(strcmp(d.data_dir, "data") == 0);
    CHECK(d.workers == 1);
    CHECK(d.threads_per_worker == 0);
    CHECK(d.oversubscribe == false);
    CHECK(d.max_batch == 8);
    CHECK(d.max_batch_delay_ms == 50);
    CHECK(d.queue_capacity == 64);
    CHECK(d.max_images_per_request == 32);
    CHECK(d.request_timeout_ms == 30000);
    CHECK(d.max_body_bytes == 33554432);
    CHECK(d.max_image_pixels == 16777216);
    CHECK(d.max_connections == 256);
    CHECK(d.connection_timeout_s == 30);
    CHECK(d.http_threads == 2);
    CHECK(d.decode_threads == 2);
    CHECK(d.max_concurrent_fetches == 8);
    CHECK(d.url_connect_timeout_ms == 3000);
    CHECK(d.url_timeout_ms == 10000);
    CHECK(d.url_max_bytes == 16777216);
    CHECK(d.url_max_redirects == 3);
    CHECK(d.allow_private_urls == false);
    CHECK(strcmp(d.default_task, "") == 0);
    CHECK(d.task_memory_mb == 256);
    CHECK(strcmp(d.api_key, "") == 0);
    CHECK(d.drain_timeout_ms == 10000);
    CHECK(d.log_format == CFG_LOG_JSON);
    CHECK(d.task_reload_ms == 2000);
    CHECK(d.job_lease_ms == 15000);
    CHECK(d.role == CFG_ROLE_ALL);

    /* no flags, no environment (NULL and empty): the defaults, byte for byte */
    if (expect_ok("no arguments", &c, NONE, NONE))
        CHECK(memcmp(&c, &d, sizeof c) == 0);
    memset(&c, 0x5a, sizeof c);
    CHECK(cfg_load(&c, 0, NULL, NULL, NULL, 0) == CFG_OK);
    CHECK(memcmp(&c, &d, sizeof c) == 0);

    /* the table: exactly want[]'s keys, in order */
    size_t n;
    const cfg_key *keys = cfg_keys(&n);
    CHECKF(n == NWANT, "table has %zu keys, want %zu", n, NWANT);
    for (size_t i = 0; i < n && i < NWANT; i++)
        CHECKF(strcmp(keys[i].name, want[i].name) == 0, "key %zu: %s, want %s", i, keys[i].name,
               want[i].name);

    /* the JSON view of the defaults is want[]'s defaults */
    json_t *j = cfg_to_json(&d);
    CHECK(j != NULL);
    CHECKF(j && json_object_size(j) == NWANT, "cfg_to_json has %zu keys",
           j ? json_object_size(j) : 0);
    for (size_t i = 0; j && i < NWANT; i++) {
        json_t *w = strcmp(want[i].name, "model") == 0
                        ? json_string(cfg_default_model()) /* fixed at build time */
                        : json_loads(want[i].def, JSON_DECODE_ANY, NULL);
        json_t *got = json_object_get(j, want[i].name);
        CHECKF(w && got && json_equal(w, got), "default of %s differs from %s", want[i].name,
               want[i].def);
        json_decref(w);
    }
    json_decref(j);
}

/* ---- 2. layers ------------------------------------------------------------ */

static void test_layers(void)
{
    vit_cfg c;
    char arg[600], envc[600];
    const char *f1 = write_json("layers1.json", "{\"port\": 1111, \"workers\": 3}");
    snprintf(arg, sizeof arg, "--config=%s", f1);
    snprintf(envc, sizeof envc, "VITFIT_CONFIG=%s", f1);
    const char *f2 = write_json("layers2.json", "{\"port\": 4444}");

    if (expect_ok("file", &c, NONE, L("--config", f1)))
        CHECK(c.port == 1111 && c.workers == 3);
    if (expect_ok("file (--config=F)", &c, NONE, L(arg)))
        CHECK(c.port == 1111 && c.workers == 3);
    if (expect_ok("env", &c, L("VITFIT_PORT=2222"), NONE))
        CHECK(c.port == 2222 && c.workers == 1);
    if (expect_ok("flag", &c, NONE, L("--port", "3333")))
        CHECK(c.port == 3333);
    if (expect_ok("file < env", &c, L("VITFIT_PORT=2222"), L("--config", f1)))
        CHECKF(c.port == 2222 && c.workers == 3, "port %d workers %d", c.port, c.workers);
    if (expect_ok("file < flag", &c, NONE, L("--port", "3333", "--config", f1)))
        CHECKF(c.port == 3333 && c.workers == 3, "port %d workers %d", c.port, c.workers);
    if (expect_ok("env < flag", &c, L("VITFIT_PORT=2222"), L("--port=3333")))
        CHECKF(c.port == 3333, "port %d", c.port);
    if (expect_ok("file < env < flag", &c, L("VITFIT_PORT=2222", "VITFIT_MAX_BATCH=5"),
                  L("--config", f1, "--port", "3333")))
        CHECKF(c.port == 3333 && c.workers == 3 && c.max_batch == 5, "port %d workers %d batch %d",
               c.port, c.workers, c.max_batch);
    /* VITFIT_CONFIG names the file; --config wins over it */
    if (expect_ok("VITFIT_CONFIG", &c, L(envc), NONE))
        CHECK(c.port == 1111 && c.workers == 3);
    if (expect_ok("VITFIT_CONFIG < env", &c, L(envc, "VITFIT_PORT=2222"), NONE))
        CHECK(c.port == 2222 && c.workers == 3);
    if (expect_ok("--config over VITFIT_CONFIG", &c, L(envc), L("--config", f2)))
        CHECKF(c.port == 4444 && c.workers == 1, "port %d workers %d", c.port, c.workers);
    /* repeated: the last wins */
    if (expect_ok("flag twice", &c, NONE, L("--port", "1", "--port=2")))
        CHECK(c.port == 2);
    if (expect_ok("--config twice", &c, NONE, L("--config", f1, "--config", f2)))
        CHECK(c.port == 4444 && c.workers == 1);
}

/* ---- 3. flag spellings ---------------------------------------------------- */

static void test_flags(void)
{
    vit_cfg c;
    if (expect_ok("--max-batch 16", &c, NONE, L("--max-batch", "16")))
        CHECK(c.max_batch == 16);
    if (expect_ok("--max-batch=17", &c, NONE, L("--max-batch=17")))
        CHECK(c.max_batch == 17);
    if (expect_ok("--queue-capacity 9 --data-dir D", &c, NONE,
                  L("--queue-capacity", "9", "--data-dir", "/srv/d")))
        CHECK(c.queue_capacity == 9 && strcmp(c.data_dir, "/srv/d") == 0);
    if (expect_ok("'=' in a value", &c, NONE, L("--model=a=b")))
        CHECKF(strcmp(c.model, "a=b") == 0, "model '%s'", c.model);
    if (expect_ok("value starting with '-'", &c, NONE, L("--model", "-m")))
        CHECKF(strcmp(c.model, "-m") == 0, "model '%s'", c.model);
    if (expect_ok("--log-format text", &c, NONE, L("--log-format", "text")))
        CHECK(c.log_format == CFG_LOG_TEXT);
    if (expect_ok("VITFIT_LOG_FORMAT=text", &c, L("VITFIT_LOG_FORMAT=text"), NONE))
        CHECK(c.log_format == CFG_LOG_TEXT);
    if (expect_ok("--precision bf16", &c, NONE, L("--precision", "bf16")))
        CHECK(c.precision == CFG_PRECISION_BF16);
    if (expect_ok("VITFIT_PRECISION=bf16", &c, L("VITFIT_PRECISION=bf16"), NONE))
        CHECK(c.precision == CFG_PRECISION_BF16);
    expect_err("precision fp16", NONE, L("--precision=fp16"), "--precision", "not one of");
    if (expect_ok("--role serve", &c, NONE, L("--role", "serve")))
        CHECK(c.role == CFG_ROLE_SERVE);
    if (expect_ok("VITFIT_ROLE=train", &c, L("VITFIT_ROLE=train"), NONE))
        CHECK(c.role == CFG_ROLE_TRAIN);
    expect_err("role both", NONE, L("--role=both"), "--role", "not one of");
    if (expect_ok("--threads-per-worker 4", &c, NONE, L("--threads-per-worker", "4")))
        CHECK(c.threads_per_worker == 4);
    if (expect_ok("+80", &c, NONE, L("--port", "+80")))
        CHECK(c.port == 80);
    expect_err("--port -1 (value taken)", NONE, L("--port", "-1"), "--port",
               "-1 is below the minimum 0");
}

/* ---- 4. booleans ------------------------------------------------------------ */

static void test_bools(void)
{
    static const struct { const char *text; bool v; } forms[] = {
        {"true", true}, {"1", true}, {"yes", true}, {"TRUE", true}, {"Yes", true},
        {"false", false}, {"0", false}, {"no", false}, {"FALSE", false}, {"No", false},
    };
    vit_cfg c;
    char flag[64], env[64], what[96];
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        /* start from the opposite value so an ignored value fails */
        const char *start =
            forms[i].v ? "VITFIT_ALLOW_PRIVATE_URLS=0" : "VITFIT_ALLOW_PRIVATE_URLS=1";
        snprintf(flag, sizeof flag, "--allow-private-urls=%s", forms[i].text);
        snprintf(what, sizeof what, "bool flag %s", flag);
        if (expect_ok(what, &c, L(start), L(flag)))
            CHECKF(c.allow_private_urls == forms[i].v, "%s: got %d", what, c.allow_private_urls);
        snprintf(env, sizeof env, "VITFIT_OVERSUBSCRIBE=%s", forms[i].text);
        snprintf(what, sizeof what, "bool env %s", env);
        if (expect_ok(what, &c, L(env), NONE))
            CHECKF(c.oversubscribe == forms[i].v, "%s: got %d", what, c.oversubscribe);
    }
    if (expect_ok("bare --allow-private-urls", &c, L("VITFIT_ALLOW_PRIVATE_URLS=no"),
                  L("--allow-private-urls")))
        CHECK(c.allow_private_urls == true && c.oversubscribe == false);
    if (expect_ok("bare --oversubscribe then more", &c, NONE, L("--oversubscribe", "--port", "81")))
        CHECK(c.oversubscribe == true && c.port == 81);
    const char *bad[] = {"maybe", "", "2", "on", "true "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(flag, sizeof flag, "--oversubscribe=%s", bad[i]);
        expect_err(flag, NONE, L(flag), "--oversubscribe", "not a boolean");
        snprintf(env, sizeof env, "VITFIT_OVERSUBSCRIBE=%s", bad[i]);
        expect_err(env, L(env), NONE, "VITFIT_OVERSUBSCRIBE", "not a boolean");
    }
    /* a bare bool flag takes no following word: "true" is a stray argument */
    expect_err("--oversubscribe true", NONE, L("--oversubscribe", "true"), "'true'",
               "unexpected argument");
}

/* ---- 5. integers --------------------------------------------------------------- */

/* The int or int64 field of key name in c, read by name (not by the table). */
static long long int_field(const vit_cfg *c, const char *name)
{
#define F(f) if (strcmp(name, #f) == 0) return (long long)c->f
    F(port); F(workers); F(threads_per_worker); F(max_batch); F(max_batch_delay_ms);
    F(queue_capacity); F(max_images_per_request); F(request_timeout_ms); F(max_body_bytes);
    F(max_image_pixels); F(max_connections); F(connection_timeout_s); F(http_threads);
    F(decode_threads); F(max_concurrent_fetches); F(url_connect_timeout_ms); F(url_timeout_ms);
    F(url_max_bytes); F(url_max_redirects); F(task_memory_mb); F(max_running_jobs); F(max_queued_jobs);
    F(serve_reserved_threads); F(job_checkpoint_every_steps); F(drain_timeout_ms);
    F(task_reload_ms); F(job_lease_ms);
    F(hub_max_bytes);
#undef F
    CHECKF(0, "int_field: no field %s", name);
    return -1;
}

static void test_ints(void)
{
    vit_cfg c;
    char flag[128], env[256], arg[64], what[256], needle[96];
    /* every integer key at both bounds and one past each, by flag and env */
    for (size_t i = 0; i < NWANT; i++) {
        if (!want[i].is_int)
            continue;
        char fname[64], ename[64];
        names_of(want[i].name, fname, ename);
        long long ok[2] = {want[i].lo, want[i].hi};
        for (int b = 0; b < 2; b++) {
            snprintf(flag, sizeof flag, "%s=%lld", fname, ok[b]);
            if (expect_ok(flag, &c, NONE, L(flag)))
                CHECKF(int_field(&c, want[i].name) == ok[b], "%s: stored %lld", flag,
                       int_field(&c, want[i].name));
            snprintf(env, sizeof env, "%s=%lld", ename, ok[b]);
            if (expect_ok(env, &c, L(env), NONE))
                CHECKF(int_field(&c, want[i].name) == ok[b], "%s: stored %lld", env,
                       int_field(&c, want[i].name));
        }
        snprintf(arg, sizeof arg, "%lld", want[i].lo - 1);
        snprintf(needle, sizeof needle, "%lld is below the minimum %lld", want[i].lo - 1,
                 want[i].lo);
        snprintf(what, sizeof what, "%s %s", fname, arg);
        expect_err(what, NONE, L(fname, arg), fname, needle);
        snprintf(arg, sizeof arg, "%lld", want[i].hi + 1);
        snprintf(needle, sizeof needle, "%lld is above the maximum %lld", want[i].hi + 1,
                 want[i].hi);
        snprintf(env, sizeof env, "%s=%s", ename, arg);
        expect_err(env, L(env), NONE, ename, needle);
    }

    /* text that is not an integer */
    static const char *const notint[] = {"abc", "12abc", " 12", "12 ", "", "0x10", "1.5",
                                         "1e3", "-", "--5", "\t8", "8\n"};
    for (size_t i = 0; i < sizeof notint / sizeof notint[0]; i++) {
        snprintf(flag, sizeof flag, "--port=%s", notint[i]);
        snprintf(what, sizeof what, "--port='%s'", notint[i]);
        expect_err(what, NONE, L(flag), "--port", "is not an integer");
        snprintf(env, sizeof env, "VITFIT_PORT=%s", notint[i]);
        snprintf(what, sizeof what, "VITFIT_PORT='%s'", notint[i]);
        expect_err(what, L(env), NONE, "VITFIT_PORT", "is not an integer");
    }
    expect_err("VITFIT_PORT=abc (the brief's wording)", L("VITFIT_PORT=abc"), NONE,
               "VITFIT_PORT: 'abc' is not an integer", NULL);
    expect_err("--max-batch 0 (the brief's wording)", NONE, L("--max-batch", "0"),
               "--max-batch: 0 is below the minimum 1", NULL);
    /* beyond int64 */
    expect_err("overflow", NONE, L("--max-body-bytes", "99999999999999999999"),
               "--max-body-bytes", "out of range");
    expect_err("negative overflow", L("VITFIT_PORT=-99999999999999999999"), NONE, "VITFIT_PORT",
               "out of range");
    /* fits int64 but not int: must not wrap into range (2^32 -> 0 is a valid port) */
    expect_err("2^32 for an int key", NONE, L("--port", "4294967296"), "--port",
               "4294967296 is above the maximum 65535");
    expect_err("int64 max", NONE, L("--max-image-pixels", "9223372036854775807"),
               "--max-image-pixels", "above the maximum 100000000");
}

/* ---- 6. strings ------------------------------------------------------------------ */

static void test_strings(void)
{
    vit_cfg c;
    static char big[CFG_PATH_SIZE + 64], arg[CFG_PATH_SIZE + 128];
    /* the longest path fits whole; one more byte is refused */
    memset(big, 'p', CFG_PATH_SIZE - 1);
    big[CFG_PATH_SIZE - 1] = '\0';
    if (expect_ok("model of 4095 bytes", &c, NONE, L("--model", big)))
        CHECKF(strlen(c.model) == CFG_PATH_SIZE - 1 && c.model[0] == 'p', "model length %zu",
               strlen(c.model));
    memset(big, 'p', CFG_PATH_SIZE);
    big[CFG_PATH_SIZE] = '\0';
    expect_err("model of 4096 bytes", NONE, L("--model", big), "--model",
               "4096 bytes long; the limit is 4095");
    snprintf(arg, sizeof arg, "VITFIT_DATA_DIR=%s", big);
    expect_err("data_dir of 4096 bytes", L(arg), NONE, "VITFIT_DATA_DIR", "limit is 4095");
    /* a refused URL is quoted without its user:password */
    expect_err("hub_url with a password and a space", NONE,
               L("--hub-url", "https://u:hunter2@hub.example/a b"), "'https://***@hub.example/a b'",
               "without spaces");
    CHECKF(!strstr(err, "hunter2"), "the message shows the password: %s", err);

    memset(big, 'h', 255);
    big[255] = '\0';
    if (expect_ok("host of 255 bytes", &c, NONE, L("--host", big)))
        CHECK(strlen(c.host) == 255);
    big[255] = 'h';
    big[256] = '\0';
    expect_err("host of 256 bytes", NONE, L("--host", big), "--host", "limit is 255");

    /* the secret: kept whole, never echoed */
    memset(big, 'K', 255);
    big[255] = '\0';
    if (expect_ok("api_key of 255 bytes", &c, NONE, L("--api-key", big)))
        CHECK(strlen(c.api_key) == 255);
    big[255] = 'K';
    big[256] = '\0';
    expect_err("api_key of 256 bytes", NONE, L("--api-key", big), "--api-key", "limit is 255");
    CHECKF(strstr(err, "KKKK") == NULL, "the secret is echoed: %s", err);
    if (expect_ok("VITFIT_API_KEY", &c, L("VITFIT_API_KEY=s3cret"), NONE))
        CHECK(strcmp(c.api_key, "s3cret") == 0);

    /* required strings refuse empty, from every source */
    expect_err("--host=", NONE, L("--host="), "--host", "must not be empty");
    expect_err("--model ''", NONE, L("--model", ""), "--model", "must not be empty");
    expect_err("VITFIT_DATA_DIR=", L("VITFIT_DATA_DIR="), NONE, "VITFIT_DATA_DIR",
               "must not be empty");
    expect_err("file model \"\"", NONE,
               L("--config", write_json("emptymodel.json", "{\"model\": \"\"}")), "model",
               "must not be empty");

    /* host: loosely, no spaces or control characters */
    expect_err("host with a space", NONE, L("--host", "a b"), "--host", "not a host name");
    expect_err("host with a tab", L("VITFIT_HOST=a\tb"), NONE, "VITFIT_HOST", "not a host name");
    if (expect_ok("host ::", &c, NONE, L("--host", "::")))
        CHECK(strcmp(c.host, "::") == 0);

    /* default_task: empty or a task name */
    static const char *const good[] = {"fashion", "a", "0-x_y.z", ""};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (expect_ok(good[i], &c, L("VITFIT_DEFAULT_TASK=zzz"), L("--default-task", good[i])))
            CHECKF(strcmp(c.default_task, good[i]) == 0, "default_task '%s'", c.default_task);
    memset(big, 'a', 64);
    big[64] = '\0';
    if (expect_ok("task name of 64", &c, NONE, L("--default-task", big)))
        CHECK(strlen(c.default_task) == 64);
    big[64] = 'a';
    big[65] = '\0';
    expect_err("task name of 65", NONE, L("--default-task", big), "--default-task", NULL);
    static const char *const badtask[] = {"Fashion", ".x", "-x", "_x", "a b", "a/b", "é"};
    for (size_t i = 0; i < sizeof badtask / sizeof badtask[0]; i++)
        expect_err(badtask[i], NONE, L("--default-task", badtask[i]), "--default-task",
                   "is not a task name");

    /* the enum */
    expect_err("log_format xml", NONE, L("--log-format=xml"), "--log-format",
               "'xml' is not one of json, text");
    expect_err("log_format JSON", L("VITFIT_LOG_FORMAT=JSON"), NONE, "VITFIT_LOG_FORMAT",
               "not one of");
    expect_err("log_format \"\"", NONE, L("--log-format="), "--log-format", "not one of");
}

/* ---- 7. unknown names, stray arguments ------------------------------------------- */

static void test_unknown(void)
{
    vit_cfg c;
    expect_err("unknown flag", NONE, L("--max-bach", "3"), "'--max-bach'", "unknown flag");
    expect_err("unknown flag with =", NONE, L("--max-bach=3"), "'--max-bach'", "unknown flag");
    expect_err("flag with '_'", NONE, L("--max_batch", "3"), "'--max_batch'", "unknown flag");
    expect_err("flag of a file-only word", NONE, L("--port-number=1"), "'--port-number'",
               "unknown flag");
    expect_err("unknown env", L("VITFIT_MAX_BACH=3"), NONE, "VITFIT_MAX_BACH",
               "unknown VITFIT_ environment variable");
    expect_err("bare VITFIT_", L("VITFIT_=3"), NONE, "'VITFIT_'", "unknown");
    expect_err("unknown file key", NONE,
               L("--config", write_json("unknown.json", "{\"port\": 1, \"max_bach\": 3}")),
               "config file /tmp/vitfit-test-config-", "unknown key 'max_bach'");
    expect_err("file key in flag form", NONE,
               L("--config", write_json("dash.json", "{\"max-batch\": 3}")), "config file",
               "unknown key 'max-batch'");

    expect_err("positional", NONE, L("--port", "80", "foo"), "'foo'", "unexpected argument");
    expect_err("single dash", NONE, L("-p", "80"), "'-p'", "unexpected argument");
    expect_err("--", NONE, L("--"), "'--'", "unexpected argument");
    expect_err("--port at the end", NONE, L("--port"), "--port", "needs a value");
    expect_err("--port before a flag", NONE, L("--port", "--workers", "2"), "--port",
               "needs a value");
    expect_err("--config at the end", NONE, L("--config"), "--config", "needs a value");
    expect_err("--config=", NONE, L("--config="), "--config", "names no file");
    expect_err("VITFIT_CONFIG=", L("VITFIT_CONFIG="), NONE, "VITFIT_CONFIG", "names no file");

    /* the allow-list passes; variables without the prefix are not ours */
    const char *env[NALLOWED + 5];
    for (size_t i = 0; i < NALLOWED; i++)
        env[i] = allowed_env[i];
    env[NALLOWED] = "PORT=1";
    env[NALLOWED + 1] = "vitfit_port=1";
    env[NALLOWED + 2] = "XVITFIT_PORT=1";
    env[NALLOWED + 3] = "VITFIT_PORT"; /* no '=': not a variable */
    env[NALLOWED + 4] = NULL;
    if (expect_ok("allow-listed VITFIT_*", &c, env, NONE)) {
        vit_cfg d;
        cfg_defaults(&d);
        CHECK(memcmp(&c, &d, sizeof c) == 0);
    }
    /* one past an allow-listed name is not allowed */
    expect_err("VITFIT_CIX", L("VITFIT_CIX=1"), NONE, "VITFIT_CIX", "unknown");
    expect_err("VITFIT_CONFIGX", L("VITFIT_CONFIGX=1"), NONE, "VITFIT_CONFIGX", "unknown");
}

/* ---- 8. the file -------------------------------------------------------------------- */

static void test_file(void)
{
    vit_cfg c;
    struct {
        const char *name, *text, *needle, *needle2;
    } bad[] = {
        {"real.json", "{\"max_batch\": 8.0}", "max_batch", "not an integer"},
        {"exp.json", "{\"max_batch\": 1e1}", "max_batch", "not an integer"},
        {"strint.json", "{\"port\": \"80\"}", "port", "expects an integer, not a string"},
        {"boolint.json", "{\"port\": true}", "port", "expects an integer"},
        {"nullint.json", "{\"port\": null}", "port", "expects an integer, not null"},
        {"intstr.json", "{\"host\": 1}", "host", "expects a string, not an integer"},
        {"intbool.json", "{\"oversubscribe\": 1}", "oversubscribe", "expects true or false"},
        {"strbool.json", "{\"oversubscribe\": \"true\"}", "oversubscribe", "expects true or false"},
        {"intenum.json", "{\"log_format\": 0}", "log_format", "expects a string"},
        {"range.json", "{\"port\": 70000}", "port: 70000 is above the maximum 65535", NULL},
        {"int64.json", "{\"max_body_bytes\": 1023}", "max_body_bytes: 1023 is below", NULL},
        {"bigint.json", "{\"port\": 99999999999999999999}", "config file", "line 1"},
        {"array.json", "[{\"port\": 1}]", "config file", "JSON object"},
        {"number.json", "8080", "config file", "JSON object"},
        {"dup.json", "{\"port\": 1, \"port\": 2}", "config file", "duplicate"},
        {"comma.json", "{\"port\": 1,}", "config file", "line 1"},
        {"garbage.json", "{\"port\": 1} x", "config file", NULL},
        {"empty.json", "", "config file", NULL},
        {"nul.json", "{\"host\": \"a\\u0000b\"}", "config file", NULL},
        {"deep.json", "{\"host\": {\"a\": 1}}", "host", "expects a string, not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_err(bad[i].name, NONE, L("--config", write_json(bad[i].name, bad[i].text)),
                   bad[i].needle, bad[i].needle2);

    char path[600];
    snprintf(path, sizeof path, "%s/missing.json", tmpdir);
    expect_err("missing file", NONE, L("--config", path), "missing.json", "No such file");
    expect_err("directory", NONE, L("--config", tmpdir), tmpdir, "not a regular file");
    expect_err("/dev/null", NONE, L("--config", "/dev/null"), "/dev/null", "not a regular file");
    snprintf(path, sizeof path, "%s/fifo", tmpdir);
    CHECK(mkfifo(path, 0600) == 0);
    /* a blocking open would hang here for ever (meson's timeout catches it) */
    expect_err("FIFO", NONE, L("--config", path), "fifo", "not a regular file");
    unlink(path);

    /* the cap: a valid object padded with spaces to exactly 1 MiB loads,
     * one byte more does not */
    size_t cap = 1u << 20;
    char *text = malloc(cap + 2);
    CHECK(text != NULL);
    if (!text)
        return;
    memset(text, ' ', cap + 1);
    memcpy(text, "{\"port\": 5}", 11);
    const char *at = write_file("cap.json", text, cap);
    if (expect_ok("file of 1 MiB", &c, NONE, L("--config", at)))
        CHECK(c.port == 5);
    const char *over = write_file("over.json", text, cap + 1);
    expect_err("file of 1 MiB + 1", NONE, L("--config", over), "over.json", "over the limit");
    free(text);

    /* an empty object is fine: the defaults */
    if (expect_ok("{}", &c, NONE, L("--config", write_json("obj.json", " {} \n")))) {
        vit_cfg d;
        cfg_defaults(&d);
        CHECK(memcmp(&c, &d, sizeof c) == 0);
    }
    /* every type from the file */
    const char *typed = write_json("typed.json",
                                   "{\"host\": \"0.0.0.0\", \"max_body_bytes\": 1073741824,"
                                   " \"allow_private_urls\": true, \"log_format\": \"text\","
                                   " \"default_task\": \"shoes\", \"api_key\": \"k\"}");
    if (expect_ok("typed file", &c, NONE, L("--config", typed)))
        CHECK(strcmp(c.host, "0.0.0.0") == 0 && c.max_body_bytes == 1073741824 &&
              c.allow_private_urls && c.log_format == CFG_LOG_TEXT &&
              strcmp(c.default_task, "shoes") == 0 && strcmp(c.api_key, "k") == 0);
}

/* ---- 9. help ------------------------------------------------------------------------ */

static void test_help(void)
{
    vit_cfg c, d;
    cfg_defaults(&d);
    const char *const *cases[] = {
        L("--help"), L("-h"), L("--port", "80", "--help"), L("--bogus", "--help"),
        L("--help", "--port", "abc"), L("stray", "-h"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = load(&c, NONE, cases[i]);
        CHECKF(rc == CFG_HELP, "help case %zu: rc %d (%s)", i, rc, err);
        CHECK(memcmp(&c, &d, sizeof c) == 0);
    }
    /* --help as a value is a value, not a request for help */
    expect_err("--port=--help", NONE, L("--port=--help"), "--port", "not an integer");

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f)
        return;
    cfg_print_help(f);
    fclose(f);
    char flag[80], env[80], block[128];
    for (size_t i = 0; i < NWANT; i++) {
        names_of(want[i].name, flag, env);
        /* the flag, then its variable in parentheses, each key in its own block */
        char head[96];
        snprintf(head, sizeof head, "\n  %s", flag);
        const char *at = strstr(text, head);
        while (at && at[strlen(head)] != ' ' && at[strlen(head)] != '[') /* --port vs --port-x */
            at = strstr(at + 1, head);
        CHECKF(at != NULL, "help lacks a block for %s", flag);
        snprintf(block, sizeof block, "(%s)", env);
        CHECKF(strstr(text, block) != NULL, "help lacks %s", block);
        if (at) {
            const char *end = strstr(at + 1, "\n\n");
            size_t blen = end ? (size_t)(end - at) : strlen(at);
            char *b = strndup(at, blen);
            CHECKF(b && strstr(b, "default") != NULL, "help of %s names no default", flag);
            if (b && want[i].is_int) {
                char range[64];
                snprintf(range, sizeof range, "%lld..%lld", want[i].lo, want[i].hi);
                CHECKF(strstr(b, range) != NULL, "help of %s lacks the range %s", flag, range);
            }
            free(b);
        }
    }
    for (size_t i = 0; i < NALLOWED; i++) {
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)strcspn(allowed_env[i], "="), allowed_env[i]);
        CHECKF(strstr(text, name) != NULL, "help lacks the allow-listed %s", name);
    }
    CHECK(strstr(text, "VITFIT_CONFIG") != NULL && strstr(text, "--config") != NULL);
    free(text);
}

/* ---- 10. the JSON view -------------------------------------------------------------- */

/* Whether obj[key] is the JSON string want. */
static int str_is(const json_t *obj, const char *key, const char *want)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s && strcmp(s, want) == 0;
}

static void test_json(void)
{
    vit_cfg c;
    if (expect_ok("api_key set", &c, L("VITFIT_API_KEY=s3cret-value"), L("--port", "99"))) {
        json_t *j = cfg_to_json(&c);
        char *s = j ? json_dumps(j, 0) : NULL;
        CHECK(s != NULL);
        CHECKF(s && strstr(s, "s3cret") == NULL, "the secret shows: %s", s ? s : "");
        CHECK(j && str_is(j, "api_key", "***"));
        CHECK(j && json_integer_value(json_object_get(j, "port")) == 99);
        free(s);
        json_decref(j);
    }
    /* what cfg_to_json writes loads back as a config file, to the same bytes */
    const char *const *args = L("--port", "1", "--workers", "7", "--max-body-bytes",
                                       "1073741824", "--oversubscribe", "--log-format", "text",
                                       "--default-task", "t.1", "--host", "::1");
    vit_cfg back;
    if (expect_ok("non-default config", &c, NONE, args)) {
        json_t *j = cfg_to_json(&c);
        CHECK(j != NULL);
        CHECK(j && str_is(j, "api_key", ""));
        char *s = j ? json_dumps(j, JSON_INDENT(1)) : NULL;
        if (s) {
            const char *p = write_json("roundtrip.json", s);
            if (expect_ok("cfg_to_json as a file", &back, NONE, L("--config", p)))
                CHECK(memcmp(&back, &c, sizeof c) == 0);
        }
        free(s);
        json_decref(j);
    }
    /* non-UTF-8 bytes in a path show as '?', not a NULL object */
    if (expect_ok("non-UTF-8 model", &c, NONE, L("--model", "m\xff.bin"))) {
        json_t *j = cfg_to_json(&c);
        CHECK(j != NULL);
        CHECK(j && str_is(j, "model", "m?.bin"));
        json_decref(j);
    }
}

/* ---- 11. the example file ------------------------------------------------------------- */

static void test_example(void)
{
    const char *root = getenv("VITFIT_SOURCE_ROOT");
    char path[4096];
    snprintf(path, sizeof path, "%s/config/vitfit.example.json", root ? root : ".");
    json_error_t je;
    json_t *ex = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    CHECKF(ex != NULL, "%s: %s", path, je.text);
    if (!ex)
        return;
    size_t n;
    const cfg_key *keys = cfg_keys(&n);
    CHECKF(json_object_size(ex) == n, "example has %zu keys, the table %zu",
           json_object_size(ex), n);
    for (size_t i = 0; i < n; i++)
        CHECKF(json_object_get(ex, keys[i].name) != NULL, "example lacks %s", keys[i].name);
    /* its values are the defaults, but for the model: the example names it
     * relative to the source tree, the build holds its absolute path */
    vit_cfg d, c;
    cfg_defaults(&d);
    json_t *dj = cfg_to_json(&d);
    const char *ex_model = json_string_value(json_object_get(ex, "model"));
    char ex_path[4096], ex_real[PATH_MAX], def_real[PATH_MAX];
    snprintf(ex_path, sizeof ex_path, "%s/%s", root ? root : ".", ex_model ? ex_model : "");
    CHECKF(ex_model && realpath(ex_path, ex_real) && realpath(cfg_default_model(), def_real) &&
               strcmp(ex_real, def_real) == 0,
           "the example's model %s is not the default %s", ex_model ? ex_model : "(none)",
           cfg_default_model());
    json_object_set_new(ex, "model", json_string(d.model));
    CHECK(dj && json_equal(ex, dj));
    json_decref(dj);
    json_decref(ex);
    if (expect_ok("example file", &c, NONE, L("--config", path))) {
        memcpy(c.model, d.model, sizeof c.model);
        CHECK(memcmp(&c, &d, sizeof c) == 0);
    }
}

int main(void)
{
    CHECK(mkdtemp(tmpdir) != NULL);
    test_defaults();
    test_layers();
    test_flags();
    test_bools();
    test_ints();
    test_strings();
    test_unknown();
    test_file();
    test_help();
    test_json();
    test_example();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0);
    return check_result();
}
