/*
 * utf8.h - UTF-8 as JSON (jansson) accepts it: no overlong forms, no
 * surrogates, nothing above U+10FFFF.
 *
 * One reader of the encoding for the engine's label checks (vit.h
 * vit_label_problem, which data set class names share) and the CLI's
 * escaping of paths that are not text (cli_text).
 *
 *   size_t n = utf8_sequence(p, left, &cp);   // 0: no valid sequence at p
 */
#ifndef VIT_UTF8_H
#define VIT_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the valid UTF-8 sequence at p, with `left` bytes
 * readable there (left >= 1), and its code point in *cp (may be NULL); 0
 * when the bytes at p are not one. */
size_t utf8_sequence(const unsigned char *p, size_t left, uint32_t *cp);

#endif
