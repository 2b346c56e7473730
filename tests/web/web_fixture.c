/*
 * web_fixture.c - writes the browser test's data sets (tests/web/web_page.mjs)
 * into a fresh data_dir, from Debian's dataset-fashion-mnist through
 * tests/api/fmnist_fixture.c, the same real images the API tests train on:
 *
 *   web_fixture DATA_DIR CLASSES TRAIN_PER_CLASS EVAL_PER_CLASS
 *
 * writes DATA_DIR/datasets/fm/train and DATA_DIR/datasets/fm/test,
 * ImageFolders that share no image, of CLASSES classes: 3 (bag, sneaker,
 * trouser: the test's quick job) or 10 (all of them: the screenshot's
 * longer job).  Exit 0, or 1 with a message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fmnist_fixture.h"

int main(int argc, char **argv)
{
    /* Fashion-MNIST's labels 0..9; the first three are the quick set */
    static const int classes[10] = {8, 7, 1, 0, 2, 3, 4, 5, 6, 9};
    static const char *const names[10] = {"bag",  "sneaker", "trouser", "t-shirt", "pullover",
                                          "dress", "coat",   "sandal",  "shirt",   "ankle-boot"};
    int n = argc == 5 ? atoi(argv[2]) : 0;
    int train = argc == 5 ? atoi(argv[3]) : 0, eval = argc == 5 ? atoi(argv[4]) : 0;
    if ((n != 3 && n != 10) || train < 1 || eval < 1 || train + eval > 1000) {
        fprintf(stderr, "usage: web_fixture DATA_DIR 3|10 TRAIN_PER_CLASS EVAL_PER_CLASS "
                        "(together at most 1000)\n");
        return 1;
    }
    char dir[2][4096];
    if (snprintf(dir[0], sizeof dir[0], "%s/datasets/fm/train", argv[1]) >= (int)sizeof dir[0] ||
        snprintf(dir[1], sizeof dir[1], "%s/datasets/fm/test", argv[1]) >= (int)sizeof dir[1]) {
        fprintf(stderr, "web_fixture: DATA_DIR too long\n");
        return 1;
    }
    fm_source src;
    if (!fm_source_load(&src))
        return 1;
    bool ok = true;
    for (int k = 0; ok && k < 2; k++) {
        fm_folder_spec spec = {.dir = dir[k], .classes = classes, .names = names, .nclasses = n,
                               .per_class = k == 0 ? train : eval, .skip = k == 0 ? 0 : train};
        ok = fm_write_folder(&src, &spec);
    }
    fm_source_free(&src);
    return ok ? 0 : 1;
}
