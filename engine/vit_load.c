/*
 * vit_load.c - checkpoint loading: detect the layout, work out the config,
 * copy every tensor into the canonical arenas.
 *
 * A checkpoint is a model-hub style directory (model.safetensors, optional
 * config.json, preprocessor_config.json and labels.txt) or a single
 * .safetensors file.  The weights are mapped, converted to f32 tensor by
 * tensor into the arenas, and unmapped: the model never points into the file.
 *
 * Every file is untrusted: each is opened without blocking, must be a regular
 * file and is read up to a cap (read_side_file, st_open), and the config that
 * results is checked against the tensors before anything is allocated for it
 * (vit_check_tensors).  vit_model_from_parts does everything after the reads,
 * on bytes; vit_model_load_memory exposes it, and the config fuzzer drives
 * the same code through it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vit_impl.h"

#define MAX_CONFIG_BYTES ((size_t)16 << 20) /* config.json, preprocessor_config.json */
#define MAX_LABEL_BYTES ((size_t)64 << 20)  /* labels.txt */
#define MAX_LABEL_LEN 4095                  /* bytes of one label */
#define MAX_LABELS 1000000

/* Shape with leading 1s dropped, so (1, 1, C) and (C) compare equal. */
static int squeeze(const int64_t *shape, int ndim, int64_t *out)
{
    int first = 0;
    while (first < ndim - 1 && shape[first] == 1)
        first++;
    for (int i = first; i < ndim; i++)
        out[i - first] = shape[i];
    return ndim - first;
}

/* Checks that source tensor t can fill (a slice of) p under row's op. */
static vit_status check_shape(const vit_param *p, const vit_name_row *row, const st_tensor *t,
                              vit_error *err)
{
    int64_t want[4], got[ST_MAX_DIMS];
    int want_nd = p->ndim;
    memcpy(want, p->shape, sizeof want);
    if (row->op == VIT_NAME_PART)
        want[0] /= row->parts;
    if (row->op == VIT_NAME_TRANSPOSE) {
        int64_t tmp = want[0];
        want[0] = want[1];
        want[1] = tmp;
    }
    int64_t sw[4];
    int sw_nd = squeeze(want, want_nd, sw);
    int got_nd = squeeze(t->shape, t->ndim, got);
    int same = sw_nd == got_nd && (row->op != VIT_NAME_TRANSPOSE || t->ndim == 2);
    for (int i = 0; same && i < got_nd; i++)
        same = sw[i] == got[i];
    if (!same) {
        char a[96], b[96];
        st_format_shape(a, sizeof a, t->ndim, t->shape);
        st_format_shape(b, sizeof b, want_nd, want);
        return vit_error_set(err, VIT_ERR_MISMATCH,
                             "tensor '%s' has shape %s but the model config needs %s for %s",
                             t->name, a, b, p->name);
    }
    return VIT_OK;
}

/* Copies the source t into dst (numel floats), transposing a 2-D source. */
static vit_status copy_tensor(const st_file *f, const st_tensor *t, const vit_name_row *row,
                              float *dst, vit_error *err)
{
    if (row->op != VIT_NAME_TRANSPOSE)
        return st_read_f32(f, t, dst, err);
    size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    float *tmp = malloc(t->numel * sizeof *tmp);
    if (!tmp)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory transposing '%s'", t->name);
    vit_status st = st_read_f32(f, t, tmp, err);
    if (st == VIT_OK)
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < cols; c++)
                dst[c * rows + r] = tmp[r * cols + c];
    free(tmp);
    return st;
}

/* Splits "blocks.7.norm1.weight" into pattern "blocks.{i}.norm1.weight" and 7. */
static int canonical_pattern(const char *name, char *pattern, size_t len)
{
    int block = 0, consumed = 0;
    if (sscanf(name, "blocks.%d.%n", &block, &consumed) == 1 && consumed > 0) {
        snprintf(pattern, len, "blocks.{i}.%s", name + consumed);
        return block;
    }
    snprintf(pattern, len, "%s", name);
    return 0;
}

/* Loads one canonical parameter: each of its parts from the first row that
 * exists in the file.  With p->data NULL it only checks that every part is
 * there with the right shape. */
static vit_status load_param(const vit_param *p, const vit_layout_desc *d, const st_file *f,
                             vit_error *err)
{
    char pattern[96];
    int block = canonical_pattern(p->name, pattern, sizeof pattern);
    int parts = 1;
    for (size_t r = 0; r < d->num_rows; r++)
        if (strcmp(d->rows[r].canonical, pattern) == 0)
            parts = d->rows[r].parts;
    for (int part = 0; part < parts; part++) {
        const st_tensor *t = NULL;
        const vit_name_row *row = NULL;
        char first_name[256] = "";
        for (size_t r = 0; r < d->num_rows && !t; r++) {
            if (strcmp(d->rows[r].canonical, pattern) != 0 || d->rows[r].part != part)
                continue;
            row = &d->rows[r];
            char name[256];
            vit_name_expand(name, sizeof name, row->source, block);
            if (!first_name[0])
                snprintf(first_name, sizeof first_name, "%s", name);
            t = vit_layout_source(d, f, name);
        }
        if (!t)
            return vit_error_set(err, VIT_ERR_NOT_FOUND,
                                 "%s checkpoint has no tensor '%s' (needed for %s)", d->name,
                                 first_name[0] ? first_name : pattern, p->name);
        vit_status st = check_shape(p, row, t, err);
        if (st != VIT_OK)
            return st;
        if (!p->data)
            continue;
        size_t slice = p->numel / (size_t)parts;
        st = copy_tensor(f, t, row, p->data + slice * (size_t)part, err);
        if (st != VIT_OK)
            return st;
        st_evict(f, t); /* copied: the file's pages need not stay resident beside the copy */
    }
    return VIT_OK;
}

vit_status vit_check_tensors(const vit_config *cfg, const vit_layout_desc *d, const st_file *f,
                             vit_error *err)
{
    vit_param *plan;
    size_t n;
    vit_status st = vit_params_plan(cfg, &plan, &n, err);
    for (size_t i = 0; st == VIT_OK && i < n; i++)
        st = load_param(&plan[i], d, f, err); /* data == NULL: check only */
    free(plan);
    return st;
}

vit_status vit_load_tensors(vit_model *m, const vit_layout_desc *d, const st_file *f,
                            vit_error *err)
{
    for (size_t i = 0; i < m->num_params; i++) {
        vit_status st = load_param(&m->params[i], d, f, err);
        if (st != VIT_OK)
            return st;
    }
    return VIT_OK;
}

/* ---- side files: config.json, preprocessor_config.json, labels.txt ---- */

/* Reads side file dir/name of a checkpoint directory whole into a
 * NUL-terminated malloc'd buffer (*out, caller frees; NULL when the file does
 * not exist).  Messages name the file; the caller adds the directory.
 * Side files are untrusted like the weights: the file is opened O_NONBLOCK so
 * that a FIFO cannot block open(); the descriptor (not the name, which could
 * be swapped in between) must be a regular file of at most cap bytes; and at
 * most st_size + 1 bytes are read, so neither a device behind a symlink nor a
 * file growing underneath can make the read run on. */
static vit_status read_side_file(const char *dir, const char *name, size_t cap, char **out,
                                 size_t *len, vit_error *err)
{
    *out = NULL;
    *len = 0;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return vit_error_set(err, VIT_ERR_INVALID, "model path %.64s... is too long", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? VIT_OK
                               : vit_error_set(err, VIT_ERR_IO, "cannot open %s: %s", name,
                                               strerror(errno));
    struct stat sb;
    vit_status st = VIT_OK;
    char *buf = NULL;
    size_t got = 0;
    if (fstat(fd, &sb) != 0)
        st = vit_error_set(err, VIT_ERR_IO, "cannot stat %s: %s", name, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = vit_error_set(err, VIT_ERR_IO, "%s is not a regular file", name);
    else if ((uintmax_t)sb.st_size > cap)
        st = vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is larger than %zu bytes", name, cap);
    else if (!(buf = malloc((size_t)sb.st_size + 2)))
        st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", name);
    while (st == VIT_OK && got <= (size_t)sb.st_size) { /* one byte more: did it grow? */
        ssize_t n = read(fd, buf + got, (size_t)sb.st_size + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            st = vit_error_set(err, VIT_ERR_IO, "cannot read %s: %s", name, strerror(errno));
        else if (n == 0)
            break;
        else
            got += (size_t)n;
    }
    close(fd);
    if (st == VIT_OK && got > (size_t)sb.st_size)
        st = vit_error_set(err, VIT_ERR_IO, "%s changed while it was read", name);
    if (st != VIT_OK) {
        free(buf);
        return st;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return VIT_OK;
}

/* Parses labels.txt: one label per line ("\n" or "\r\n"), blank lines
 * skipped.  A NUL byte, a line over MAX_LABEL_LEN bytes or one that
 * vit_label_problem refuses (not UTF-8, control characters) is an error,
 * never a silent split or truncation: labels end up in JSON replies,
 * terminals and task files. */
static vit_status parse_labels_txt(const char *text, size_t len, char ***labels, int *n,
                                   vit_error *err)
{
    *labels = NULL;
    *n = 0;
    if (memchr(text, '\0', len))
        return vit_error_set(err, VIT_ERR_FORMAT, "labels.txt contains a NUL byte");
    char **out = NULL;
    int count = 0, cap = 0;
    size_t line = 0;
    vit_status st = VIT_OK;
    for (size_t pos = 0; pos < len && st == VIT_OK;) {
        const char *start = text + pos;
        const char *nl = memchr(start, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - start) : len - pos;
        pos += end + (nl != NULL);
        line++;
        if (end > 0 && start[end - 1] == '\r')
            end--;
        if (end == 0)
            continue;
        size_t at;
        const char *problem = end <= MAX_LABEL_LEN ? vit_label_problem(start, end, &at) : NULL;
        if (end > MAX_LABEL_LEN) {
            st = vit_error_set(err, VIT_ERR_FORMAT,
                               "labels.txt: line %zu is %zu bytes long; at most %d are allowed",
                               line, end, MAX_LABEL_LEN);
        } else if (problem) {
            st = vit_error_set(err, VIT_ERR_FORMAT, "labels.txt: line %zu has %s at byte %zu",
                               line, problem, at);
        } else if (count >= MAX_LABELS) {
            st = vit_error_set(err, VIT_ERR_TOO_LARGE, "labels.txt has more than %d labels",
                               MAX_LABELS);
        } else if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(out, (size_t)cap * sizeof *grown);
            if (!grown)
                st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels.txt");
            else
                out = grown;
        }
        if (st == VIT_OK && !(out[count++] = strndup(start, end))) {
            count--;
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading labels.txt");
        }
    }
    if (st != VIT_OK) {
        vit_labels_free(out, count);
        return st;
    }
    *labels = out;
    *n = count;
    return VIT_OK;
}

/* Parses a JSON side file; jansson's message is quoted with everything but
 * printable ASCII replaced, since it can echo bytes of the file. */
static vit_status parse_json(const char *name, const char *text, size_t len, json_t **out,
                             vit_error *err)
{
    json_error_t jerr;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (*out)
        return VIT_OK;
    for (char *c = jerr.text; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    return vit_error_set(err, VIT_ERR_FORMAT, "%s: line %d: %s", name, jerr.line, jerr.text);
}

/* Labels "class_0".."class_{n-1}" for a head that came without names. */
static vit_status default_labels(int n, char ***labels, vit_error *err)
{
    char **out = calloc((size_t)n, sizeof *out);
    if (!out)
        return vit_error_set(err, VIT_ERR_NOMEM, "out of memory making labels");
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "class_%d", i);
        if (!(out[i] = strdup(name))) {
            vit_labels_free(out, n);
            return vit_error_set(err, VIT_ERR_NOMEM, "out of memory making labels");
        }
    }
    *labels = out;
    return VIT_OK;
}

/* Applies the JSON side files to cfg; labels come from config.json if it
 * names them. */
static vit_status apply_side_json(const vit_side_files *side, vit_config *cfg, char ***labels,
                                  int *num_labels, vit_error *err)
{
    json_t *root = NULL;
    vit_status st = VIT_OK;
    if (side->config) {
        st = parse_json("config.json", side->config, side->config_len, &root, err);
        if (st == VIT_OK)
            st = vit_config_apply_json(root, cfg, labels, num_labels, err);
        json_decref(root);
    }
    if (st == VIT_OK && side->preprocessor) {
        st = parse_json("preprocessor_config.json", side->preprocessor, side->preprocessor_len,
                        &root, err);
        if (st == VIT_OK)
            st = vit_config_apply_preprocessor_json(root, cfg, err);
        json_decref(root);
    }
    return st;
}

vit_status vit_model_from_parts(const st_file *f, const vit_side_files *side,
                                const vit_load_options *opt, vit_model **out,
                                vit_error *err)
{
    *out = NULL;
    vit_model *m = NULL;
    char **labels = NULL;
    int num_labels = 0;
    const vit_layout_desc *d = NULL;
    vit_config cfg;
    vit_status st = vit_layout_detect(f, &d, err);
    if (st == VIT_OK)
        st = vit_config_infer(d, f, &cfg, err);
    if (st == VIT_OK)
        st = apply_side_json(side, &cfg, &labels, &num_labels, err);
    /* Every tensor is found and its shape checked before the arenas exist:
     * a small file whose config.json claims a huge architecture is refused
     * here instead of asking for terabytes. */
    if (st == VIT_OK)
        st = vit_check_tensors(&cfg, d, f, err);
    if (st == VIT_OK && !labels && side->labels)
        st = parse_labels_txt(side->labels, side->labels_len, &labels, &num_labels, err);
    if (st == VIT_OK && cfg.num_classes == 0) {
        vit_labels_free(labels, num_labels); /* a feature extractor has no classes to name */
        labels = NULL;
        num_labels = 0;
    }
    if (st == VIT_OK && labels && num_labels != cfg.num_classes)
        st = vit_error_set(err, VIT_ERR_MISMATCH, "%d labels are named but the head has %d classes",
                           num_labels, cfg.num_classes);
    if (st == VIT_OK && !labels && cfg.num_classes > 0) {
        st = default_labels(cfg.num_classes, &labels, err);
        num_labels = cfg.num_classes;
    }
    if (st == VIT_OK)
        st = vit_model_create(&cfg, &m, err);
    if (st == VIT_OK)
        st = vit_load_tensors(m, d, f, err);
    if (st == VIT_OK && opt && opt->one_copy)
        st = vit_model_pack_release(m, opt->precision, err);
    else if (st == VIT_OK)
        st = vit_model_pack_precision(m, opt ? opt->precision : VIT_PRECISION_FP32, err);
    if (st != VIT_OK) {
        vit_labels_free(labels, num_labels);
        vit_model_free(m);
        return st;
    }
    m->layout = d->layout;
    m->labels = labels;
    *out = m;
    return VIT_OK;
}

vit_status vit_model_load_memory(const void *weights, size_t len, const vit_side_files *side,
                                 vit_model **out, vit_error *err)
{
    *out = NULL;
    vit_side_files none = {0};
    st_file *f = NULL;
    vit_status st = st_open_memory(weights, len, &f, err);
    if (st == VIT_OK)
        st = vit_model_from_parts(f, side ? side : &none, NULL, out, err);
    st_close(f);
    return st;
}

vit_status vit_model_load(const char *path, vit_model **out, vit_error *err)
{
    return vit_model_load_with(path, NULL, out, err);
}

vit_status vit_model_load_with(const char *path, const vit_load_options *opt, vit_model **out,
                               vit_error *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot open model %s: %s", path, strerror(errno));
    bool is_dir = S_ISDIR(sb.st_mode);
    char weights[4096];
    char *config_text = NULL, *pre_text = NULL, *labels_text = NULL;
    vit_side_files side = {0};
    vit_status st = VIT_OK;
    if (is_dir) {
        if ((size_t)snprintf(weights, sizeof weights, "%s/model.safetensors", path) >=
            sizeof weights)
            return vit_error_set(err, VIT_ERR_INVALID, "model path %.64s... is too long", path);
        if (stat(weights, &sb) != 0)
            return vit_error_set(err, VIT_ERR_NOT_FOUND,
                                 "%s has no model.safetensors (only safetensors checkpoints are "
                                 "read; PyTorch .bin/.pth pickles are not)",
                                 path);
        st = read_side_file(path, "config.json", MAX_CONFIG_BYTES, &config_text,
                            &side.config_len, err);
        if (st == VIT_OK)
            st = read_side_file(path, "preprocessor_config.json", MAX_CONFIG_BYTES, &pre_text,
                                &side.preprocessor_len, err);
        if (st == VIT_OK)
            st = read_side_file(path, "labels.txt", MAX_LABEL_BYTES, &labels_text,
                                &side.labels_len, err);
        side.config = config_text;
        side.preprocessor = pre_text;
        side.labels = labels_text;
    }
    st_file *f = NULL;
    if (st == VIT_OK) /* st_open refuses FIFOs and devices like read_side_file */
        st = st_open(is_dir ? weights : path, &f, err);
    if (st == VIT_OK)
        st = vit_model_from_parts(f, &side, opt, out, err);
    st_close(f);
    free(config_text);
    free(pre_text);
    free(labels_text);
    if (st != VIT_OK)
        vit_error_prefix(err, "%s", path);
    return st;
}
