/*
 * train_check.h - what the tests that hold one training path to another
 * share (test_train_paths, test_last_block): the small model they reshape
 * and the gradient comparison at test_train's golden bounds.
 */
#ifndef VIT_TEST_TRAIN_CHECK_H
#define VIT_TEST_TRAIN_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "vit.h"

/* A model case: a name for the messages, a config. */
typedef struct shape_case {
    const char *name;
    vit_config cfg;
} shape_case;

/* vit-tiny with timm's defaults spelled out, for a case to reshape. */
static inline vit_config train_check_config(void)
{
    vit_config c;
    vit_error err;
    vit_config_preset("vit-tiny", &c, &err);
    c.ln_eps = 1e-6f;
    c.act = VIT_ACT_GELU;
    c.pool = VIT_POOL_CLS;
    c.ln_pre = false;
    c.patch_bias = true;
    c.proj_dim = 0;
    return c;
}

/* want's parameter of p's name, or NULL. */
static inline const vit_param *train_check_param(const vit_model *want, const char *name)
{
    for (size_t i = 0; i < want->num_params; i++)
        if (strcmp(want->params[i].name, name) == 0)
            return &want->params[i];
    return NULL;
}

/* Every gradient of got's model against want's for the parameter of the same
 * name (the same model, or one with other parameters too):
 * |diff| <= 1e-4 max|want| + 1e-3 |want|, test_train's golden bounds.  The
 * frozen ones only when got_frozen is not NULL.  Returns the worst
 * |diff| / max|want|. */
static inline double train_check_grads(const char *what, const vit_model *got,
                                       const float *got_train, const float *got_frozen,
                                       const vit_model *want, const float *want_train,
                                       const float *want_frozen)
{
    double worst = 0;
    char name[300];
    for (size_t i = 0; i < got->num_params; i++) {
        const vit_param *p = &got->params[i], *q = train_check_param(want, p->name);
        const float *g, *w;
        if (!q || q->numel != p->numel) {
            CHECKF(0, "%s: no %s to compare with", what, p->name);
            continue;
        }
        if (p->trainable) {
            g = got_train + (p->data - got->trainable);
            w = want_train + (q->data - want->trainable);
        } else if (got_frozen) {
            g = got_frozen + (p->data - got->frozen);
            w = want_frozen + (q->data - want->frozen);
        } else {
            continue;
        }
        double max_ref = 0, diff = 0;
        for (size_t j = 0; j < p->numel; j++) {
            max_ref = fmax(max_ref, fabs(w[j]));
            diff = fmax(diff, fabs((double)g[j] - w[j]));
        }
        snprintf(name, sizeof name, "%s %s", what, p->name);
        check_close(name, g, w, p->numel, 1e-4 * max_ref + 1e-9, 1e-3);
        if (max_ref > 0)
            worst = fmax(worst, diff / max_ref);
    }
    return worst;
}

#endif
