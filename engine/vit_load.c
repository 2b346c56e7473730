/*
 * vit_load.c - checkpoint loading: detect the layout, work out the config,
 * copy every tensor into the canonical arenas.
 *
 * A checkpoint is a model-hub style directory (model.safetensors, optional
 * config.json and labels.txt) or a single .safetensors file.  The file is
 * mapped, converted to f32 tensor by tensor into the arenas, and unmapped:
 * the model never points into the file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vit_impl.h"

#define MAX_CONFIG_BYTES (16u << 20)
#define MAX_LABEL_BYTES (64u << 20)

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
 * exists in the file. */
static vit_status load_param(vit_param *p, const vit_layout_desc *d, const st_file *f,
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
        size_t slice = p->numel / (size_t)parts;
        st = copy_tensor(f, t, row, p->data + slice * (size_t)part, err);
        if (st != VIT_OK)
            return st;
    }
    return VIT_OK;
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

/* Reads labels.txt (one label per line) if present.  Missing file: OK, no labels. */
static vit_status read_labels_txt(const char *path, char ***labels, int *n, vit_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return errno == ENOENT ? VIT_OK
                               : vit_error_set(err, VIT_ERR_IO, "cannot open %s: %s", path,
                                               strerror(errno));
    char **out = NULL;
    int count = 0, cap = 0;
    size_t total = 0;
    char line[4096];
    vit_status st = VIT_OK;
    while (fgets(line, sizeof line, fp)) {
        total += strlen(line);
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        if (len == 0)
            continue;
        if (total > MAX_LABEL_BYTES || count >= 1000000) {
            st = vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is too large", path);
            break;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(out, (size_t)cap * sizeof *grown);
            if (!grown) {
                st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            out = grown;
        }
        if (!(out[count] = strdup(line))) {
            st = vit_error_set(err, VIT_ERR_NOMEM, "out of memory reading %s", path);
            break;
        }
        count++;
    }
    fclose(fp);
    if (st != VIT_OK) {
        vit_labels_free(out, count);
        return st;
    }
    *labels = out;
    *n = count;
    return VIT_OK;
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

/* Parses <dir>/config.json if it exists into cfg and labels. */
static vit_status apply_config_file(const char *path, vit_config *cfg, char ***labels,
                                    int *num_labels, vit_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return errno == ENOENT ? VIT_OK
                               : vit_error_set(err, VIT_ERR_IO, "cannot stat %s: %s", path,
                                               strerror(errno));
    if (sb.st_size > (off_t)MAX_CONFIG_BYTES)
        return vit_error_set(err, VIT_ERR_TOO_LARGE, "%s is larger than %u bytes", path,
                             MAX_CONFIG_BYTES);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return vit_error_set(err, VIT_ERR_FORMAT, "%s: line %d: %s", path, jerr.line, jerr.text);
    vit_status st = vit_config_apply_json(root, cfg, labels, num_labels, err);
    json_decref(root);
    return st;
}

vit_status vit_model_load(const char *path, vit_model **out, vit_error *err)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return vit_error_set(err, errno == ENOENT ? VIT_ERR_NOT_FOUND : VIT_ERR_IO,
                             "cannot open model %s: %s", path, strerror(errno));
    int is_dir = S_ISDIR(sb.st_mode);
    char weights[4096], config[4096], labels_txt[4096];
    if (is_dir) {
        snprintf(weights, sizeof weights, "%s/model.safetensors", path);
        snprintf(config, sizeof config, "%s/config.json", path);
        snprintf(labels_txt, sizeof labels_txt, "%s/labels.txt", path);
        if (stat(weights, &sb) != 0)
            return vit_error_set(err, VIT_ERR_NOT_FOUND,
                                 "%s has no model.safetensors (only safetensors checkpoints are "
                                 "read; PyTorch .bin/.pth pickles are not)",
                                 path);
    } else {
        snprintf(weights, sizeof weights, "%s", path);
    }

    st_file *f = NULL;
    vit_model *m = NULL;
    char **labels = NULL;
    int num_labels = 0;
    const vit_layout_desc *d = NULL;
    vit_config cfg;
    vit_status st = st_open(weights, &f, err); /* its messages name the file already */
    if (st != VIT_OK)
        return st;
    st = vit_layout_detect(f, &d, err);
    if (st == VIT_OK)
        st = vit_config_infer(d, f, &cfg, err);
    if (st == VIT_OK && is_dir)
        st = apply_config_file(config, &cfg, &labels, &num_labels, err);
    if (st == VIT_OK && is_dir && !labels)
        st = read_labels_txt(labels_txt, &labels, &num_labels, err);
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
    st_close(f);
    if (st == VIT_OK)
        st = vit_model_pack(m, err);
    if (st != VIT_OK) {
        vit_labels_free(labels, num_labels);
        vit_model_free(m);
        vit_error_prefix(err, "%s", path);
        return st;
    }
    m->layout = d->layout;
    m->labels = labels;
    *out = m;
    return VIT_OK;
}
