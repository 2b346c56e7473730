/*
 * task.h - task bias sets: what fine-tuning produces and serving swaps.
 *
 * A task differs from the backbone only in its biases and its head (DESIGN.md
 * 3).  In memory a task is a trainable arena laid out like the backbone's:
 * first the bias section (every backbone bias, in vit_model param order, as
 * absolute values), then head.weight (K, F) and head.bias (K).  Applying a
 * task to the forward pass swaps pointers into this arena; the backbone is
 * never copied or modified.
 *
 * On disk (<data_dir>/tasks/<name>.safetensors) the biases are stored as
 * *deltas* vs the backbone under canonical names (blocks.3.mlp.fc1.bias, ...),
 * plus head.weight and head.bias; __metadata__ holds "labels" (JSON array),
 * "base_model" (vit_model_fingerprint of the backbone), "method", "created"
 * (RFC 3339 UTC) and whatever else the caller adds (hyper-parameters, metrics).
 * Loading checks the fingerprint, every name and shape, and the label count.
 */
#ifndef VIT_TASK_H
#define VIT_TASK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "status.h"
#include "vit.h"

#define TASK_NAME_MAX 64
/* Bound on K, when making a task and when reading one: the classes of the
 * largest real classification sets (ImageNet-21k: 21,843) with room; equal
 * to DS_MAX_CLASSES (dataset.h explains the choice). */
#define TASK_MAX_CLASSES 32768
/* Bound on a head's floats, K x (F + 1) for F features: trainer_run refuses
 * to train a larger one (VIT_ERR_TOO_LARGE) before allocating anything.  K
 * alone does not bound it: F may be a projection of up to 8192 features on
 * a tiny checkpoint, and training holds the head four times (weights,
 * gradients, two AdamW moments).  2^26 floats (256 MiB; 1 GiB in training)
 * fit ImageNet-21k on ViT-G/14's 1664 features (36.4M floats) with room. */
#define TASK_MAX_HEAD_FLOATS ((size_t)1 << 26)
#define TASK_MAX_LABEL 1024      /* bytes in one label */

/* Tasks are reference-counted and immutable once loaded, so a worker can keep
 * one alive for a batch while another thread replaces or removes it. */
typedef struct vit_task {
    atomic_int refs;              /* task_retain / task_free */
    char name[TASK_NAME_MAX + 1]; /* from the file name, or set by the caller */
    int num_classes;              /* K */
    char **labels;                /* K names, owned */
    float *trainable;             /* bias section + head, owned */
    size_t trainable_len;         /* floats */
    char method[16];              /* "bitfit", "linear", ... (metadata) */
    char base_model[65];          /* fingerprint it was made for */
} vit_task;

/* sha256 (hex) over the backbone: every frozen tensor and every bias, in
 * canonical order, as little-endian f32, each preceded by its name; the head
 * is excluded so that a model and its feature extractor agree. */
vit_status vit_model_fingerprint(const vit_model *m, char hex[65], vit_error *err);

/* Floats in the bias section of m's trainable arena (== vit_model_bias_count). */
size_t task_bias_len(const vit_model *m);

/* Makes a task from the backbone's own biases and a new head of K classes
 * (weights zero; caller initialises).  labels are copied. */
vit_status task_create(const vit_model *m, int num_classes, const char *const *labels,
                       vit_task **out, vit_error *err);
/* Adds a reference; returns t.  Only for a reference the caller already
 * holds (or reads under the lock that keeps it alive): to take one from a
 * pointer other threads may replace, use a task_slot. */
vit_task *task_retain(vit_task *t);
/* Drops a reference; the last one frees the task. */
void task_free(vit_task *t);

/* A shared, replaceable reference to a task: a server registry keeps one per
 * task name; workers take their own reference for a batch while another
 * thread replaces or removes the task.  Why a lock and not an atomic pointer:
 * "load the pointer, then retain" lets a replacer drop the last reference
 * between the two steps, and the retain then touches freed memory.  Under the
 * lock a reader's retain always happens while the slot still holds its own
 * reference.  The lock covers a pointer copy and one atomic increment only:
 * nothing is allocated or freed while it is held. */
typedef struct task_slot {
    pthread_mutex_t lock;
    vit_task *task; /* the slot's own reference, or NULL */
} task_slot;

/* An empty slot. */
vit_status task_slot_init(task_slot *s, vit_error *err);
/* Drops the slot's reference; no other thread may use s any more. */
void task_slot_destroy(task_slot *s);
/* A new reference to the slot's task (caller task_free()s it), or NULL when
 * the slot is empty.  Safe against any concurrent task_slot_exchange. */
vit_task *task_slot_get(task_slot *s);
/* Puts t in the slot, taking over the caller's reference to it (t may be
 * NULL: empties the slot), and returns the task it held (or NULL), whose
 * reference now belongs to the caller. */
vit_task *task_slot_exchange(task_slot *s, vit_task *t);
/* task_slot_exchange that frees the previous task's reference. */
void task_slot_set(task_slot *s, vit_task *t);

/* Mixed-task forward (vit_forward_rows): image b uses tasks[b]'s biases and
 * head, or the backbone's own when tasks[b] is NULL; out[b] receives its
 * logits.  Tasks must be made for m.  At most VIT_MAX_MIXED_BATCH images. */
#define VIT_MAX_MIXED_BATCH 256
vit_status task_forward(const vit_model *m, vit_state *s, const float *images, int batch,
                        const vit_task *const *tasks, float *const *out, vit_error *err);

/* Name check: ^[a-z0-9][a-z0-9._-]{0,63}$ */
int task_name_valid(const char *name);

/* Extra metadata for task_save (NULL-terminated key/value arrays). */
typedef struct task_meta {
    const char *const *keys;
    const char *const *values;
} task_meta;

/* Writes t as deltas vs m, atomically (tmp + fsync + rename). */
vit_status task_save(const vit_model *m, const vit_task *t, const task_meta *extra,
                     const char *path, vit_error *err);

/* Reads a task file made for m (fingerprint must match). */
vit_status task_load(const vit_model *m, const char *path, vit_task **out, vit_error *err);

/* task_load with m's fingerprint already computed (hashing ViT-B takes about a
 * second; a server loading many tasks for one backbone computes it once). */
vit_status task_load_fingerprint(const vit_model *m, const char *fingerprint, const char *path,
                                 vit_task **out, vit_error *err);

/* task_load_fingerprint over a task file already in memory, data[0..len) (a
 * mapping of a file the caller opened itself, e.g. beneath a directory
 * without following symlinks): the same checks; `path` only names it in
 * messages and gives the task its name, as in task_load.  Nothing of data is
 * kept after the call. */
vit_status task_load_memory(const vit_model *m, const char *fingerprint, const void *data,
                            size_t len, const char *path, vit_task **out, vit_error *err);

/* The caps st_open_limited applies to a task file of m before parsing its
 * header (its size, its number of tensors): for a caller reading a task
 * file's header itself (its metadata). */
struct st_limits;
void task_file_limits(const vit_model *m, struct st_limits *out);

#endif
