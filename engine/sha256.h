/*
 * sha256.h - SHA-256 (FIPS 180-4), incremental.
 *
 * Used to fingerprint a backbone's weights (task.c) so that a task file can
 * name the exact model it was trained on.  Not constant-time; nothing secret
 * is hashed here.
 *
 *   sha256_ctx c;
 *   sha256_init(&c);
 *   sha256_update(&c, data, len);      // any number of times
 *   sha256_final(&c, digest);          // 32 bytes; c must be re-initialised to reuse
 */
#ifndef VIT_SHA256_H
#define VIT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA256_HEX_LEN 64 /* characters, without the terminating NUL */

/* Running state of one hash computation. */
typedef struct sha256_ctx {
    uint32_t h[8];         /* chaining value */
    uint64_t bytes;        /* message length so far */
    uint8_t block[64];     /* partial block */
    size_t fill;           /* bytes in block */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
/* Pads and writes the 32-byte digest into out; re-initialise c to reuse it. */
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_DIGEST_LEN]);

/* Lower-case hex of a digest: 64 characters plus NUL into hex. */
void sha256_hex(const uint8_t digest[SHA256_DIGEST_LEN], char hex[SHA256_HEX_LEN + 1]);

/* One-shot convenience: hex digest of len bytes. */
void sha256_hex_of(const void *data, size_t len, char hex[SHA256_HEX_LEN + 1]);

#endif
