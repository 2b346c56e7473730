/*
 * url_guard.c - the address classifier behind the image fetcher (url_guard.h).
 *
 * Two tables of prefixes, one per family, checked in order; IPv6 forms that
 * embed an IPv4 address are unwrapped first and judged as that address.
 * Everything is integer arithmetic on the address bytes: no lookups, no I/O.
 */
#include <stdint.h>
#include <string.h>

#include "url_guard.h"

/* ---- IPv4 ---------------------------------------------------------------- */

/* One IPv4 prefix: addresses whose top `bits` bits equal those of net. */
typedef struct v4_range {
    uint32_t net;   /* host order */
    int bits;
    url_guard_class cls;
} v4_range;

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (uint32_t)(d))

static const v4_range v4_ranges[] = {
    {V4(0, 0, 0, 0), 8, URL_GUARD_UNSPECIFIED},
    {V4(10, 0, 0, 0), 8, URL_GUARD_PRIVATE},
    {V4(100, 64, 0, 0), 10, URL_GUARD_PRIVATE},      /* carrier-grade NAT */
    {V4(127, 0, 0, 0), 8, URL_GUARD_LOOPBACK},
    {V4(169, 254, 0, 0), 16, URL_GUARD_LINK_LOCAL},
    {V4(172, 16, 0, 0), 12, URL_GUARD_PRIVATE},
    {V4(192, 0, 0, 0), 24, URL_GUARD_RESERVED},      /* IETF protocol assignments */
    {V4(192, 0, 2, 0), 24, URL_GUARD_RESERVED},      /* TEST-NET-1 */
    {V4(192, 88, 99, 0), 24, URL_GUARD_RESERVED},    /* 6to4 relay anycast */
    {V4(192, 168, 0, 0), 16, URL_GUARD_PRIVATE},
    {V4(198, 18, 0, 0), 15, URL_GUARD_RESERVED},     /* benchmarking */
    {V4(198, 51, 100, 0), 24, URL_GUARD_RESERVED},   /* TEST-NET-2 */
    {V4(203, 0, 113, 0), 24, URL_GUARD_RESERVED},    /* TEST-NET-3 */
    {V4(224, 0, 0, 0), 4, URL_GUARD_MULTICAST},
    {V4(240, 0, 0, 0), 4, URL_GUARD_RESERVED},       /* includes 255.255.255.255 */
};

/* The class of an IPv4 address given in host order. */
static url_guard_class classify_v4(uint32_t a)
{
    for (size_t i = 0; i < sizeof v4_ranges / sizeof v4_ranges[0]; i++) {
        uint32_t mask = 0xffffffffu << (32 - v4_ranges[i].bits); /* bits is 4..24 */
        if ((a & mask) == v4_ranges[i].net)
            return v4_ranges[i].cls;
    }
    return URL_GUARD_PUBLIC;
}

/* The IPv4 address in 4 bytes of network order, as a host-order integer. */
static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ---- IPv6 ---------------------------------------------------------------- */

/* One IPv6 prefix: addresses whose top `bits` bits equal those of net. */
typedef struct v6_range {
    uint8_t net[16];
    int bits;
    url_guard_class cls;
} v6_range;

/* Checked after the IPv4-embedding forms (classify_v6). */
static const v6_range v6_ranges[] = {
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, URL_GUARD_PRIVATE},   /* local-use NAT64 */
    {{0x01, 0x00}, 64, URL_GUARD_RESERVED},                          /* discard-only */
    {{0x20, 0x01, 0x00, 0x00}, 32, URL_GUARD_RESERVED},              /* Teredo */
    {{0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, URL_GUARD_RESERVED},  /* benchmarking */
    {{0x20, 0x01, 0x00, 0x10}, 28, URL_GUARD_RESERVED},              /* ORCHID */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, URL_GUARD_RESERVED},              /* documentation */
    {{0x3f, 0xff}, 20, URL_GUARD_RESERVED},                          /* documentation */
    {{0xfc}, 7, URL_GUARD_PRIVATE},                                  /* unique local */
    {{0xfe, 0x80}, 10, URL_GUARD_LINK_LOCAL},
    {{0xfe, 0xc0}, 10, URL_GUARD_PRIVATE},                           /* old site-local */
    {{0xff}, 8, URL_GUARD_MULTICAST},
};

/* Whether the top `bits` bits of a and b agree. */
static bool prefix_equal(const uint8_t *a, const uint8_t *b, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* Whether bytes [from, to) of a are all zero. */
static bool zero_bytes(const uint8_t *a, int from, int to)
{
    for (int i = from; i < to; i++)
        if (a[i])
            return false;
    return true;
}

/* The class of a 16-byte IPv6 address. */
static url_guard_class classify_v6(const uint8_t *a)
{
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b}; /* 64:ff9b::/96 */
    if (zero_bytes(a, 0, 16))
        return URL_GUARD_UNSPECIFIED;
    if (zero_bytes(a, 0, 15) && a[15] == 1)
        return URL_GUARD_LOOPBACK;
    if (zero_bytes(a, 0, 10) && a[10] == 0xff && a[11] == 0xff)
        return classify_v4(be32(a + 12));                  /* ::ffff:a.b.c.d mapped */
    if (zero_bytes(a, 0, 12))
        return classify_v4(be32(a + 12));                  /* ::a.b.c.d compatible */
    if (zero_bytes(a, 0, 8) && a[8] == 0xff && a[9] == 0xff && zero_bytes(a, 10, 12))
        return classify_v4(be32(a + 12));                  /* ::ffff:0:a.b.c.d SIIT */
    if (memcmp(a, nat64, sizeof nat64) == 0)
        return classify_v4(be32(a + 12));                  /* 64:ff9b::a.b.c.d */
    if (a[0] == 0x20 && a[1] == 0x02) {                    /* 2002:aabb:ccdd::/48 6to4 */
        url_guard_class c = classify_v4(be32(a + 2));
        if (c != URL_GUARD_PUBLIC)
            return c;
    }
    for (size_t i = 0; i < sizeof v6_ranges / sizeof v6_ranges[0]; i++)
        if (prefix_equal(a, v6_ranges[i].net, v6_ranges[i].bits))
            return v6_ranges[i].cls;
    if ((a[0] & 0xe0) != 0x20)                             /* outside 2000::/3 */
        return URL_GUARD_RESERVED;
    return URL_GUARD_PUBLIC;
}

/* ---- the interface --------------------------------------------------------- */

url_guard_class url_guard_classify(const struct sockaddr *sa, socklen_t len)
{
    if (!sa || len < (socklen_t)sizeof(sa_family_t))
        return URL_GUARD_RESERVED;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in); /* sa may be any sockaddr buffer: no aliasing cast */
        return classify_v4(be32((const uint8_t *)&in.sin_addr));
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        return classify_v6(in6.sin6_addr.s6_addr);
    }
    return URL_GUARD_RESERVED;
}

const char *url_guard_class_name(url_guard_class c)
{
    switch (c) {
    case URL_GUARD_PUBLIC:
        return "public";
    case URL_GUARD_LOOPBACK:
        return "loopback";
    case URL_GUARD_PRIVATE:
        return "private";
    case URL_GUARD_LINK_LOCAL:
        return "link-local";
    case URL_GUARD_MULTICAST:
        return "multicast";
    case URL_GUARD_UNSPECIFIED:
        return "unspecified";
    case URL_GUARD_RESERVED:
        return "reserved";
    }
    return "reserved";
}

bool url_guard_allowed(url_guard_class c, bool allow_private)
{
    switch (c) {
    case URL_GUARD_PUBLIC:
        return true;
    case URL_GUARD_LOOPBACK:
    case URL_GUARD_PRIVATE:
    case URL_GUARD_LINK_LOCAL:
        return allow_private;
    case URL_GUARD_MULTICAST:
    case URL_GUARD_UNSPECIFIED:
    case URL_GUARD_RESERVED:
        return false;
    }
    return false;
}

/* ---- IPv4 spellings -------------------------------------------------------- */

/* Reads one part of an inet_aton address at *p (decimal, 0-octal or 0x-hex)
 * into *val, advancing *p past it.  False for no digits, a bad digit, or a
 * value over 0xffffffff. */
static bool parse_part(const char **p, uint64_t *val)
{
    const char *s = *p;
    unsigned base = 10;
    bool digits = false;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    } else if (s[0] == '0') {
        base = 8;
        s++;
        digits = true; /* "0" alone is zero */
    }
    uint64_t v = 0;
    for (;; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            break;
        if (d >= base)
            return false; /* 8 or 9 in an octal part */
        v = v * base + d;
        if (v > 0xffffffffu)
            return false;
        digits = true;
    }
    if (!digits)
        return false;
    *p = s;
    *val = v;
    return true;
}

bool url_guard_parse_ipv4(const char *host, struct in_addr *out)
{
    if (!host)
        return false;
    uint64_t parts[4];
    int n = 0;
    const char *p = host;
    for (;;) {
        if (n == 4 || !parse_part(&p, &parts[n]))
            return false;
        n++;
        if (*p == '\0')
            break;
        if (*p != '.')
            return false;
        p++; /* a dot must be followed by another part: no trailing dot */
    }
    /* parts before the last are one byte each; the last fills the rest */
    uint32_t addr = 0;
    for (int i = 0; i < n - 1; i++) {
        if (parts[i] > 0xff)
            return false;
        addr |= (uint32_t)parts[i] << (24 - 8 * i);
    }
    int last_bits = 32 - 8 * (n - 1);
    uint64_t last_max = last_bits == 32 ? 0xffffffffu : ((uint64_t)1 << last_bits) - 1;
    if (parts[n - 1] > last_max)
        return false;
    addr |= (uint32_t)parts[n - 1];
    if (out) {
        uint8_t b[4] = {(uint8_t)(addr >> 24), (uint8_t)(addr >> 16), (uint8_t)(addr >> 8),
                        (uint8_t)addr};
        memcpy(&out->s_addr, b, 4);
    }
    return true;
}
