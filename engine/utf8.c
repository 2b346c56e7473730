/* utf8.c - see utf8.h. */
#include "utf8.h"

size_t utf8_sequence(const unsigned char *p, size_t left, uint32_t *cp)
{
    unsigned c = p[0];
    if (c < 0x80) {
        if (cp)
            *cp = c;
        return 1;
    }
    /* the lead byte gives the length and the range of the second byte that
     * rules out overlong forms, surrogates and code points past U+10FFFF */
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (left < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((p[k] & 0xc0) != 0x80)
            return 0;
    if (cp) {
        uint32_t v = c & (0x7fu >> n);
        for (size_t k = 1; k < n; k++)
            v = v << 6 | (p[k] & 0x3fu);
        *cp = v;
    }
    return n;
}
