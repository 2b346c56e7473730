/*
 * fmnist_fixture.h - small real data sets for the fine-tune API tests, made
 * from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist,
 * IDX files, gzipped): ImageFolders of 28x28 greyscale PNGs and JSONL / CSV
 * manifests naming the same files, written under a test's data_dir.
 *
 *     fm_source src;
 *     CHECK(fm_source_load(&src));
 *     static const int cls[] = {1, 7, 8};
 *     static const char *const names[] = {"trouser", "sneaker", "bag"};
 *     fm_folder_spec spec = {.dir = ".../datasets/fm/train", .classes = cls, .names = names,
 *                            .nclasses = 3, .per_class = 40};
 *     CHECK(fm_write_folder(&src, &spec));
 *
 * The images are the t10k set's (10,000 images, 1,000 per class), taken in
 * file order per class, so the same spec always writes the same bytes: two
 * data_dirs written from one spec hold identical data sets (the crash test
 * compares runs on them).  Each image file is <dir>/<name>/<i>.png with i
 * counted from spec.skip, so sets written with disjoint [skip, skip +
 * per_class) ranges (train and test) share no image.
 */
#ifndef VIT_TESTS_API_FMNIST_FIXTURE_H
#define VIT_TESTS_API_FMNIST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FM_IMAGES "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
#define FM_LABELS "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
#define FM_SIDE 28

/* The t10k images and labels, in memory. */
typedef struct fm_source {
    int n;           /* images */
    uint8_t *pixels; /* n x 28 x 28, row-major, 0 = black */
    uint8_t *labels; /* n labels 0..9 */
} fm_source;

/* Reads FM_IMAGES and FM_LABELS (checking magic numbers, sizes and labels);
 * true on success, else false with a message on stderr.  fm_source_free
 * releases it. */
bool fm_source_load(fm_source *s);
void fm_source_free(fm_source *s);

/* One ImageFolder to write. */
typedef struct fm_folder_spec {
    const char *dir;             /* the folder (made with its parents) */
    const int *classes;          /* Fashion-MNIST labels (0..9), one per class */
    const char *const *names;    /* the class directory names, same order */
    int nclasses;
    int per_class;               /* images written per class */
    int skip;                    /* images of each class passed over first */
    FILE *jsonl;                 /* not NULL: a line {"image": "<prefix>/<name>/<i>.png",
                                    "label": "<name>"} per image */
    FILE *csv;                   /* not NULL: a line <prefix>/<name>/<i>.png,<name> per image */
    const char *manifest_prefix; /* dir as seen from the manifests' directory */
} fm_folder_spec;

/* Writes spec's images as PNGs (and manifest lines); true on success, else
 * false with a message (too few images of a class in the source, a write
 * error). */
bool fm_write_folder(const fm_source *s, const fm_folder_spec *spec);

/* Image i of the source as PNG bytes (caller frees, *len its size); NULL
 * when out of memory. */
uint8_t *fm_png(const fm_source *s, int i, size_t *len);

/* Index in the source of the k-th (0-based) image with label `label`, -1
 * when there are fewer. */
int fm_nth_of_class(const fm_source *s, int label, int k);

/* Greyscale 8-bit PNG (filter 0 on each row, zlib level 6) of w x h pixels,
 * as bytes (caller frees, *len its size); NULL when out of memory. */
uint8_t *fm_png_encode(const uint8_t *px, int w, int h, size_t *len);

/* mkdir -p (mode 0755); true when path is a directory afterwards. */
bool fm_mkdirs(const char *path);

#endif
