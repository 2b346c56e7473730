/*
 * task.c - task bias sets: create, save as deltas, load and verify.
 *
 * In memory a task is a small arena laid out like the backbone's trainable
 * arena (task.h): the bias section, in param order and at the same offsets as
 * in m->trainable, then head.weight (K, F) and head.bias (K).  The backbone is
 * only ever read here.
 *
 * On disk (DESIGN.md 3) each backbone bias is stored as a delta vs the
 * backbone (task - backbone, in float) under its canonical name, the head as
 * is, and __metadata__ carries labels, base_model, method, created,
 * num_classes and the caller's extra keys.  Loading adds the deltas back.
 * That round trip is exact whenever the task value is within a factor of two
 * of the backbone's (Sterbenz) or the change is smaller than the backbone
 * value (Fast2Sum); otherwise it is within about one float ulp of the larger
 * of the two.
 *
 * Task files are untrusted input: K and label lengths are bounded, every
 * name, shape and the label count are checked against the model, unknown
 * tensors and non-finite values are refused, and every error names the file.
 *
 * A task_slot is a replaceable shared reference: readers take their own
 * reference under the slot's lock, writers swap the pointer under it and drop
 * the old reference outside it.
 */
#include "task.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "safetensors.h"
#include "sha256.h"

/* ======================================================================== */
/* helpers                                                                  */
/* ======================================================================== */

/* Reports a failure about task file `path`: "task 'path': <message>". */
static vit_status task_fail(vit_error *err, const char *path, vit_status code, const char *fmt,
                            ...) __attribute__((format(printf, 4, 5)));
static vit_status task_fail(vit_error *err, const char *path, vit_status code, const char *fmt,
                            ...)
{
    char msg[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vit_error_set(err, code, "task '%s': %s", path, msg);
}

/* Adds a "task 'path'" prefix to an error set by a callee; returns code. */
static vit_status task_context(vit_error *err, const char *path, vit_status code)
{
    if (err)
        vit_error_prefix(err, "task '%s'", path);
    return code;
}

/* Copies untrusted text for an error message: at most 60 bytes, anything
 * but printable ASCII shown as '?'. */
static const char *show(char *buf, size_t n, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 4 < n && i < 60; i++)
        buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (s[i]) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* The head's tensors are the task's own; everything else is the backbone. */
static int is_head(const vit_param *p)
{
    return strncmp(p->name, "head.", 5) == 0;
}

/* A backbone bias: a trainable tensor that is not the head. */
static int is_bias(const vit_param *p)
{
    return p->trainable && !is_head(p);
}

/* Offset of bias param p in the trainable arena (and in a task's arena). */
static size_t bias_offset(const vit_model *m, const vit_param *p)
{
    VIT_ASSERT(p->data >= m->trainable && p->data + p->numel <= m->trainable + task_bias_len(m));
    return (size_t)(p->data - m->trainable);
}

/* Canonical param by name, or NULL. */
static const vit_param *find_param(const vit_model *m, const char *name)
{
    for (size_t i = 0; i < m->num_params; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return &m->params[i];
    return NULL;
}

/* Floats of a task of K classes for m (bias section + K*F + K); 0 on overflow. */
static size_t task_len(const vit_model *m, int k)
{
    size_t f = (size_t)vit_config_feature_dim(&m->cfg), kk = (size_t)k, bias = task_bias_len(m);
    if (kk > (SIZE_MAX - bias) / (f + 1))
        return 0;
    return bias + kk * (f + 1);
}

/* Is label acceptable: non-NULL, at most TASK_MAX_LABEL bytes, valid UTF-8
 * (json_string refuses anything else)? */
static int label_valid(const char *label)
{
    if (!label || strlen(label) > TASK_MAX_LABEL)
        return 0;
    json_t *s = json_string(label);
    json_decref(s);
    return s != NULL;
}

static void free_labels(char **labels, int n)
{
    if (!labels)
        return;
    for (int i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

/* ======================================================================== */
/* fingerprint                                                              */
/* ======================================================================== */

/* Streams n floats into c as little-endian bytes, whatever the host order. */
static void hash_floats(sha256_ctx *c, const float *x, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    sha256_update(c, x, n * sizeof *x); /* the memory already holds those bytes */
#else
    uint8_t buf[4096];
    size_t fill = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        buf[fill] = (uint8_t)u;
        buf[fill + 1] = (uint8_t)(u >> 8);
        buf[fill + 2] = (uint8_t)(u >> 16);
        buf[fill + 3] = (uint8_t)(u >> 24);
        fill += 4;
        if (fill == sizeof buf) {
            sha256_update(c, buf, fill);
            fill = 0;
        }
    }
    sha256_update(c, buf, fill);
#endif
}

/* sha256 over, in param order, each non-head param's name, a NUL, and its
 * data as little-endian f32. */
vit_status vit_model_fingerprint(const vit_model *m, char hex[65], vit_error *err)
{
    (void)err; /* cannot fail; the status keeps room for a future mmap'd arena */
    VIT_ASSERT(m && hex);
    if (m->fingerprint[0]) { /* cached when the unpacked weights were released */
        memcpy(hex, m->fingerprint, 65);
        return VIT_OK;
    }
    sha256_ctx c;
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_init(&c);
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        if (is_head(p))
            continue;
        sha256_update(&c, p->name, strlen(p->name) + 1);
        hash_floats(&c, p->data, p->numel);
    }
    sha256_final(&c, digest);
    sha256_hex(digest, hex);
    return VIT_OK;
}

size_t task_bias_len(const vit_model *m)
{
    return vit_model_bias_count(m);
}

/* ======================================================================== */
/* create / free / names                                                    */
/* ======================================================================== */

vit_status task_create(const vit_model *m, int num_classes, const char *const *labels,
                       vit_task **out, vit_error *err)
{
    VIT_ASSERT(m && out);
    *out = NULL;
    if (num_classes < 1 || num_classes > TASK_MAX_CLASSES)
        return vit_error_set(err, VIT_ERR_INVALID, "a task needs 1 to %d classes, got %d",
                             TASK_MAX_CLASSES, num_classes);
    if (!labels)
        return vit_error_set(err, VIT_ERR_INVALID, "a task needs labels");
    for (int i = 0; i < num_classes; i++)
        if (!label_valid(labels[i]))
            return vit_error_set(err, VIT_ERR_INVALID,
                                 "label %d is missing, longer than %d bytes or not UTF-8", i,
                                 TASK_MAX_LABEL);
    size_t len = task_len(m, num_classes);
    if (len == 0)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "a head of %d classes is too large",
                             num_classes);

    vit_task *t = calloc(1, sizeof *t);
    if (!t)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");
    atomic_init(&t->refs, 1);
    t->num_classes = num_classes;
    t->trainable_len = len;
    t->labels = calloc((size_t)num_classes, sizeof *t->labels);
    t->trainable = calloc(len, sizeof *t->trainable);
    int ok = t->labels && t->trainable;
    for (int i = 0; ok && i < num_classes; i++)
        ok = (t->labels[i] = strdup(labels[i])) != NULL;
    if (!ok) {
        task_free(t);
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory for a task of %zu floats", len);
    }
    memcpy(t->trainable, m->trainable, task_bias_len(m) * sizeof *t->trainable);
    snprintf(t->method, sizeof t->method, "bitfit");
    *out = t;
    return VIT_OK;
}

vit_task *task_retain(vit_task *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    return t;
}

void task_free(vit_task *t)
{
    if (!t)
        return;
    /* acq_rel: the freeing thread sees every other holder's last use */
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    free_labels(t->labels, t->num_classes);
    free(t->trainable);
    free(t);
}

/* ======================================================================== */
/* shared slots (task.h: why a lock)                                        */
/* ======================================================================== */

vit_status task_slot_init(task_slot *s, vit_error *err)
{
    VIT_ASSERT(s);
    s->task = NULL;
    if (pthread_mutex_init(&s->lock, NULL) != 0)
        return vit_error_set(err, VIT_ERR_NOMEM, "cannot create a task slot's lock");
    return VIT_OK;
}

void task_slot_destroy(task_slot *s)
{
    if (!s)
        return;
    task_free(s->task);
    s->task = NULL;
    pthread_mutex_destroy(&s->lock);
}

vit_task *task_slot_get(task_slot *s)
{
    VIT_ASSERT(pthread_mutex_lock(&s->lock) == 0);
    vit_task *t = task_retain(s->task); /* while the slot's reference pins it */
    pthread_mutex_unlock(&s->lock);
    return t;
}

vit_task *task_slot_exchange(task_slot *s, vit_task *t)
{
    VIT_ASSERT(pthread_mutex_lock(&s->lock) == 0);
    vit_task *old = s->task;
    s->task = t;
    pthread_mutex_unlock(&s->lock);
    return old; /* freed by the caller, outside the lock */
}

void task_slot_set(task_slot *s, vit_task *t)
{
    task_free(task_slot_exchange(s, t));
}

int task_name_valid(const char *name)
{
    if (!name)
        return 0;
    size_t n = 0;
    for (; name[n]; n++) {
        char c = name[n];
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (n == 0 || (c != '.' && c != '_' && c != '-')))
            return 0;
        if (n + 1 > TASK_NAME_MAX)
            return 0;
    }
    return n > 0;
}

/* ======================================================================== */
/* save                                                                     */
/* ======================================================================== */

/* Metadata keys task_save writes itself; extra metadata may not use them. */
static const char *const reserved_keys[] = {"labels", "base_model", "method", "created",
                                            "num_classes"};

/* JSON array of t's labels (caller frees), or NULL if one is not valid UTF-8
 * or memory ran out. */
static char *labels_json(const vit_task *t)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < t->num_classes; i++) {
        if (json_array_append_new(arr, json_string(t->labels[i])) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    char *s = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return s;
}

/* Fills w with t's tensors (deltas + head) and metadata. */
static vit_status build_file(const vit_model *m, const vit_task *t, const task_meta *extra,
                             st_writer *w, vit_error *err)
{
    size_t bias_len = task_bias_len(m), max_numel = 1;
    for (size_t i = 0; i < m->num_params; i++)
        if (is_bias(&m->params[i]) && m->params[i].numel > max_numel)
            max_numel = m->params[i].numel;
    float *delta = malloc(max_numel * sizeof *delta);
    if (!delta)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory");

    vit_status s = VIT_OK;
    for (size_t i = 0; i < m->num_params && s == VIT_OK; i++) {
        const vit_param *p = &m->params[i];
        if (!is_bias(p))
            continue;
        const float *tv = t->trainable + bias_offset(m, p);
        for (size_t j = 0; j < p->numel; j++)
            delta[j] = tv[j] - p->data[j];
        s = st_writer_add_f32(w, p->name, p->ndim, p->shape, delta, err);
    }
    free(delta);
    if (s != VIT_OK)
        return s;

    int64_t k = t->num_classes, f = vit_config_feature_dim(&m->cfg);
    int64_t hw_shape[2] = {k, f}, hb_shape[1] = {k};
    s = st_writer_add_f32(w, "head.weight", 2, hw_shape, t->trainable + bias_len, err);
    if (s == VIT_OK)
        s = st_writer_add_f32(w, "head.bias", 1, hb_shape,
                              t->trainable + bias_len + (size_t)(k * f), err);
    if (s != VIT_OK)
        return s;

    /* extra first, so that a reserved key could never override ours */
    for (size_t i = 0; extra && extra->keys && extra->keys[i]; i++) {
        for (size_t r = 0; r < sizeof reserved_keys / sizeof reserved_keys[0]; r++)
            if (strcmp(extra->keys[i], reserved_keys[r]) == 0)
                return vit_error_set(err, VIT_ERR_INVALID,
                                     "metadata key '%s' is reserved for the task itself",
                                     reserved_keys[r]);
        if (!extra->values || !extra->values[i])
            return vit_error_set(err, VIT_ERR_INVALID, "metadata key '%s' has no value",
                                 extra->keys[i]);
        if ((s = st_writer_set_metadata(w, extra->keys[i], extra->values[i], err)) != VIT_OK)
            return s;
    }

    char fp[65], created[32], classes[16];
    vit_model_fingerprint(m, fp, err);
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm) || !strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return vit_error_set(err, VIT_ERR_IO, "cannot read the clock");
    snprintf(classes, sizeof classes, "%d", t->num_classes);
    char *labels = labels_json(t);
    if (!labels)
        return vit_error_set(err, VIT_ERR_INVALID, "labels are not valid UTF-8 (or out of memory)");
    s = st_writer_set_metadata(w, "labels", labels, err);
    free(labels);
    if (s == VIT_OK)
        s = st_writer_set_metadata(w, "base_model", fp, err);
    if (s == VIT_OK)
        s = st_writer_set_metadata(w, "method", t->method[0] ? t->method : "bitfit", err);
    if (s == VIT_OK)
        s = st_writer_set_metadata(w, "created", created, err);
    if (s == VIT_OK)
        s = st_writer_set_metadata(w, "num_classes", classes, err);
    return s;
}

vit_status task_save(const vit_model *m, const vit_task *t, const task_meta *extra,
                     const char *path, vit_error *err)
{
    VIT_ASSERT(m && t && path);
    size_t want = t->num_classes >= 1 && t->num_classes <= TASK_MAX_CLASSES
                      ? task_len(m, t->num_classes)
                      : 0;
    if (want == 0 || t->trainable_len != want || !t->trainable || !t->labels)
        return task_fail(err, path, VIT_ERR_MISMATCH,
                         "cannot save: the task has %zu floats for %d classes but this model "
                         "needs %zu",
                         t->trainable_len, t->num_classes, want);
    st_writer *w = st_writer_create();
    if (!w)
        return task_fail(err, path, VIT_ERR_NOMEM, "out of memory");
    vit_status s = build_file(m, t, extra, w, err);
    if (s != VIT_OK)
        s = task_context(err, path, s);
    else
        s = st_writer_save(w, path, err); /* its messages name the path */
    st_writer_free(w);
    return s;
}

/* ======================================================================== */
/* load                                                                     */
/* ======================================================================== */

#define TASK_MAX_HEADER (8u << 20) /* bytes of a task file's header (task_load_fingerprint) */

/* Parses the labels metadata: a JSON array of exactly k strings, each at
 * most TASK_MAX_LABEL bytes and shown as is (vit_label_problem).  On success
 * *out holds k copies. */
static vit_status parse_labels(const char *text, int k, const char *path, char ***out,
                               vit_error *err)
{
    /* an array of k labels is one bracket and k - 1 commas: count them
     * (outside strings) before jansson spends ~80 bytes on each item of an
     * 8 MiB list of "" */
    size_t entries, items;
    st_json_census(text, strlen(text), &entries, &items);
    if (items > (size_t)k)
        return task_fail(err, path, VIT_ERR_FORMAT, "\"labels\" names more than the %d classes "
                         "of head.bias", k);
    json_error_t jerr;
    json_t *arr = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!arr)
        return task_fail(err, path, VIT_ERR_FORMAT, "\"labels\" is not valid JSON: %s",
                         jerr.text);
    vit_status s = VIT_OK;
    char **labels = NULL;
    if (!json_is_array(arr)) {
        s = task_fail(err, path, VIT_ERR_FORMAT, "\"labels\" is not a JSON array");
    } else if (json_array_size(arr) != (size_t)k) {
        s = task_fail(err, path, VIT_ERR_FORMAT,
                      "\"labels\" names %zu classes but head.bias has %d", json_array_size(arr),
                      k);
    } else if (!(labels = calloc((size_t)k, sizeof *labels))) {
        s = task_fail(err, path, VIT_ERR_NOMEM, "out of memory for %d labels", k);
    }
    for (int i = 0; s == VIT_OK && i < k; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        const char *problem;
        size_t at;
        if (!json_is_string(v))
            s = task_fail(err, path, VIT_ERR_FORMAT, "label %d is not a string", i);
        else if (json_string_length(v) > TASK_MAX_LABEL)
            s = task_fail(err, path, VIT_ERR_TOO_LARGE, "label %d is longer than %d bytes", i,
                          TASK_MAX_LABEL);
        else if ((problem = vit_label_problem(json_string_value(v), json_string_length(v), &at)))
            s = task_fail(err, path, VIT_ERR_FORMAT, "label %d has %s at byte %zu", i, problem,
                          at);
        else if (!(labels[i] = strdup(json_string_value(v))))
            s = task_fail(err, path, VIT_ERR_NOMEM, "out of memory");
    }
    json_decref(arr);
    if (s != VIT_OK) {
        free_labels(labels, labels ? k : 0);
        return s;
    }
    *out = labels;
    return VIT_OK;
}

/* 64 lower-case hex digits? */
static int is_fingerprint(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

/* Checks that tensor name in f has shape want (ndim, dims); NOT_FOUND or
 * MISMATCH naming it otherwise. */
static vit_status check_shape(const st_file *f, const char *name, int ndim, const int64_t *dims,
                              const char *path, const st_tensor **out, vit_error *err)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        return task_fail(err, path, VIT_ERR_NOT_FOUND, "has no tensor '%s'", name);
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == dims[d];
    if (!same) {
        char got[64], want[64];
        return task_fail(err, path, VIT_ERR_MISMATCH, "tensor '%s' has shape %s, expected %s",
                         name, st_format_shape(got, sizeof got, t->ndim, t->shape),
                         st_format_shape(want, sizeof want, ndim, dims));
    }
    *out = t;
    return VIT_OK;
}

/* Reads tensor t into dst and refuses non-finite values. */
static vit_status read_tensor(const st_file *f, const st_tensor *t, float *dst, const char *path,
                              vit_error *err)
{
    vit_status s = st_read_f32(f, t, dst, err);
    if (s != VIT_OK)
        return task_context(err, path, s);
    for (size_t i = 0; i < t->numel; i++)
        if (!isfinite(dst[i]))
            return task_fail(err, path, VIT_ERR_FORMAT, "tensor '%s' holds a non-finite value",
                             t->name);
    return VIT_OK;
}

/* Task name from a path: its basename without ".safetensors", if valid. */
static void name_from_path(const char *path, char name[TASK_NAME_MAX + 1])
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    static const char ext[] = ".safetensors";
    if (n > sizeof ext - 1 && strcmp(base + n - (sizeof ext - 1), ext) == 0)
        n -= sizeof ext - 1;
    name[0] = '\0';
    if (n > TASK_NAME_MAX)
        return;
    memcpy(name, base, n);
    name[n] = '\0';
    if (!task_name_valid(name))
        name[0] = '\0';
}

/* Everything after st_open: metadata, fingerprint, names, shapes, values. */
static vit_status load_from(const vit_model *m, const char *fingerprint, const st_file *f,
                            const char *path, vit_task **out, vit_error *err)
{
    char shown[80];
    const char *labels_text = st_metadata(f, "labels");
    const char *base = st_metadata(f, "base_model");
    if (!labels_text || !base)
        return task_fail(err, path, VIT_ERR_FORMAT,
                         "has no \"%s\" metadata; is it a task file?",
                         labels_text ? "base_model" : "labels");
    if (!is_fingerprint(base))
        return task_fail(err, path, VIT_ERR_FORMAT,
                         "\"base_model\" is '%s', not a sha256 hex digest",
                         show(shown, sizeof shown, base));
    if (strcmp(base, fingerprint) != 0)
        return task_fail(err, path, VIT_ERR_MISMATCH,
                         "task was made for backbone %.12s but this model is %.12s", base,
                         fingerprint);

    /* the head: K from head.bias, bounded before anything is allocated */
    const st_tensor *hb = st_find(f, "head.bias"), *hw;
    if (!hb)
        return task_fail(err, path, VIT_ERR_NOT_FOUND, "has no tensor 'head.bias'");
    if (hb->ndim != 1 || hb->shape[0] < 1)
        return task_fail(err, path, VIT_ERR_FORMAT, "head.bias is not a non-empty vector");
    if (hb->shape[0] > TASK_MAX_CLASSES)
        return task_fail(err, path, VIT_ERR_TOO_LARGE, "head.bias has %lld classes; at most %d",
                         (long long)hb->shape[0], TASK_MAX_CLASSES);
    int k = (int)hb->shape[0];
    int64_t hw_dims[2] = {k, vit_config_feature_dim(&m->cfg)};
    vit_status s = check_shape(f, "head.weight", 2, hw_dims, path, &hw, err);
    if (s != VIT_OK)
        return s;
    const char *nc = st_metadata(f, "num_classes");
    if (nc) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", k);
        if (strcmp(nc, buf) != 0)
            return task_fail(err, path, VIT_ERR_FORMAT,
                             "\"num_classes\" is '%s' but head.bias has %d classes",
                             show(shown, sizeof shown, nc), k);
    }

    /* every tensor must be one of ours; every bias of the model must be there */
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_tensor_at(f, i);
        const vit_param *p = find_param(m, t->name);
        if (!(p && is_bias(p)) && strcmp(t->name, "head.weight") && strcmp(t->name, "head.bias"))
            return task_fail(err, path, VIT_ERR_FORMAT,
                             "unexpected tensor '%s' (not a bias of this model)",
                             show(shown, sizeof shown, t->name));
    }
    for (size_t i = 0; i < m->num_params; i++) {
        const vit_param *p = &m->params[i];
        const st_tensor *t;
        if (!is_bias(p))
            continue;
        s = check_shape(f, p->name, p->ndim, p->shape, path, &t, err);
        if (s != VIT_OK)
            return s;
    }

    char **labels = NULL;
    if ((s = parse_labels(labels_text, k, path, &labels, err)) != VIT_OK)
        return s;
    vit_task *task = calloc(1, sizeof *task);
    if (!task) {
        free_labels(labels, k);
        return task_fail(err, path, VIT_ERR_NOMEM, "out of memory");
    }
    atomic_init(&task->refs, 1);
    size_t bias_len = task_bias_len(m);
    task->num_classes = k;
    task->labels = labels;
    task->trainable_len = task_len(m, k);
    task->trainable = malloc(task->trainable_len * sizeof *task->trainable);
    if (!task->trainable) {
        task_free(task);
        return task_fail(err, path, VIT_ERR_NOMEM, "out of memory for %zu floats",
                         task_len(m, k));
    }

    /* values: backbone + delta for biases, the head as stored */
    for (size_t i = 0; i < m->num_params && s == VIT_OK; i++) {
        const vit_param *p = &m->params[i];
        if (!is_bias(p))
            continue;
        float *dst = task->trainable + bias_offset(m, p);
        s = read_tensor(f, st_find(f, p->name), dst, path, err);
        for (size_t j = 0; s == VIT_OK && j < p->numel; j++) {
            dst[j] += p->data[j];
            if (!isfinite(dst[j]))
                s = task_fail(err, path, VIT_ERR_FORMAT,
                              "tensor '%s' overflows when added to the backbone", p->name);
        }
    }
    if (s == VIT_OK)
        s = read_tensor(f, hw, task->trainable + bias_len, path, err);
    if (s == VIT_OK)
        s = read_tensor(f, hb, task->trainable + bias_len + hw->numel, path, err);
    if (s != VIT_OK) {
        task_free(task);
        return s;
    }

    const char *method = st_metadata(f, "method");
    if (method && strlen(method) < sizeof task->method && task_name_valid(method))
        snprintf(task->method, sizeof task->method, "%s", method);
    memcpy(task->base_model, base, 65);
    name_from_path(path, task->name);
    *out = task;
    return VIT_OK;
}

void task_file_limits(const vit_model *m, st_limits *out)
{
    /* A task file holds the model's biases and a head, nothing else: its
     * header is refused before it is parsed when it lists many more tensors
     * than that (a few more get through, so that load_from names the stray
     * one), or holds more than TASK_MAX_HEADER bytes (the labels metadata
     * takes most of them: 8 MiB fits 100k labels of 80 bytes).  A checkpoint's
     * caps, ST_LIMITS_MODEL, would let a 16 MiB header of 16384 tensors in. */
    *out = (st_limits){.max_header = TASK_MAX_HEADER, .max_tensors = 2 + 8};
    for (size_t i = 0; i < m->num_params; i++)
        out->max_tensors += (size_t)is_bias(&m->params[i]);
}

vit_status task_load_fingerprint(const vit_model *m, const char *fingerprint, const char *path,
                                 vit_task **out, vit_error *err)
{
    VIT_ASSERT(m && fingerprint && path && out);
    *out = NULL;
    st_limits limits;
    task_file_limits(m, &limits);
    st_file *f;
    vit_status s = st_open_limited(path, &limits, &f, err); /* its messages name the path */
    if (s != VIT_OK)
        return s;
    s = load_from(m, fingerprint, f, path, out, err);
    st_close(f);
    return s;
}

vit_status task_load_memory(const vit_model *m, const char *fingerprint, const void *data,
                            size_t len, const char *path, vit_task **out, vit_error *err)
{
    VIT_ASSERT(m && fingerprint && (data || len == 0) && path && out);
    *out = NULL;
    st_limits limits;
    task_file_limits(m, &limits);
    st_file *f;
    vit_status s = st_open_memory_limited(data, len, &limits, &f, err);
    if (s != VIT_OK)
        return task_context(err, path, s);
    s = load_from(m, fingerprint, f, path, out, err);
    st_close(f);
    return s;
}

vit_status task_load(const vit_model *m, const char *path, vit_task **out, vit_error *err)
{
    VIT_ASSERT(m && path && out);
    *out = NULL;
    char fp[65];
    vit_status s = vit_model_fingerprint(m, fp, err);
    if (s != VIT_OK)
        return s;
    return task_load_fingerprint(m, fp, path, out, err);
}

vit_status task_forward(const vit_model *m, vit_state *s, const float *images, int batch,
                        const vit_task *const *tasks, float *const *out, vit_error *err)
{
    if (batch < 1 || batch > VIT_MAX_MIXED_BATCH)
        return vit_error_set(err, VIT_ERR_INVALID, "batch %d is outside [1, %d]", batch,
                             VIT_MAX_MIXED_BATCH);
    const float *arenas[VIT_MAX_MIXED_BATCH];
    int classes[VIT_MAX_MIXED_BATCH];
    size_t want = task_bias_len(m);
    for (int b = 0; b < batch; b++) {
        const vit_task *t = tasks[b];
        if (t && t->trainable_len != want + (size_t)t->num_classes *
                                               ((size_t)vit_config_feature_dim(&m->cfg) + 1))
            return vit_error_set(err, VIT_ERR_MISMATCH, "task '%s' was not made for this model",
                                 t->name);
        arenas[b] = t ? t->trainable : NULL;
        classes[b] = t ? t->num_classes : 0;
    }
    return vit_forward_rows(m, s, images, batch, arenas, classes, out, err);
}
