/*
 * test_url_guard.c - the address classifier and the IPv4 spelling parser
 * (api/url_guard.h).  No connection is made anywhere: addresses are built
 * as sockaddrs in memory.
 *
 * 1. url_guard_classify over every range of the table in url_guard.h: each
 *    private/reserved block at its first and last address and just outside
 *    both ends (172.16/12 in particular, whose edges are easy to get wrong),
 *    IPv6 blocks likewise, and the IPv4-in-IPv6 forms (mapped, compatible,
 *    SIIT, NAT64, 6to4) classified as the address they carry.  Public
 *    examples (8.8.8.8, 1.1.1.1, 2001:4860::8888) are PUBLIC.
 * 2. Malformed sockaddrs: NULL, short lengths, an unknown family are
 *    RESERVED, never PUBLIC.
 * 3. url_guard_allowed: PUBLIC always; loopback/private/link-local only with
 *    allow_private; multicast/unspecified/reserved never, whatever the flag.
 *    url_guard_class_name names every class distinctly.
 * 4. url_guard_parse_ipv4 on hex, octal, short and single-number spellings
 *    of 127.0.0.1 and others, and on invalid ones; and it agrees with the C
 *    library's inet_aton on a list of spellings (inet_aton is the oracle:
 *    what the resolver will do with such a host).
 */
#include "url_guard.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "check.h"

/* ---- building addresses ---- */

static url_guard_class class_of(const char *text)
{
    if (strchr(text, ':')) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons(80);
        if (inet_pton(AF_INET6, text, &a.sin6_addr) != 1) {
            fprintf(stderr, "test bug: bad IPv6 literal %s\n", text);
            return (url_guard_class)-1;
        }
        return url_guard_classify((const struct sockaddr *)&a, sizeof a);
    }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(80);
    if (inet_pton(AF_INET, text, &a.sin_addr) != 1) {
        fprintf(stderr, "test bug: bad IPv4 literal %s\n", text);
        return (url_guard_class)-1;
    }
    return url_guard_classify((const struct sockaddr *)&a, sizeof a);
}

#define PUB URL_GUARD_PUBLIC
#define LOOP URL_GUARD_LOOPBACK
#define PRIV URL_GUARD_PRIVATE
#define LINK URL_GUARD_LINK_LOCAL
#define MCAST URL_GUARD_MULTICAST
#define UNSPEC URL_GUARD_UNSPECIFIED
#define RSVD URL_GUARD_RESERVED

static const struct {
    const char *addr;
    url_guard_class want;
} cases[] = {
    /* 0.0.0.0/8 */
    {"0.0.0.0", UNSPEC}, {"0.255.255.255", UNSPEC}, {"1.0.0.0", PUB},
    /* 10/8 */
    {"9.255.255.255", PUB}, {"10.0.0.0", PRIV}, {"10.0.0.1", PRIV}, {"10.255.255.255", PRIV},
    {"11.0.0.0", PUB},
    /* 100.64/10 */
    {"100.63.255.255", PUB}, {"100.64.0.0", PRIV}, {"100.127.255.255", PRIV},
    {"100.128.0.0", PUB},
    /* 127/8 */
    {"126.255.255.255", PUB}, {"127.0.0.0", LOOP}, {"127.0.0.1", LOOP}, {"127.1.2.3", LOOP},
    {"127.255.255.255", LOOP}, {"128.0.0.0", PUB},
    /* 169.254/16: the metadata service */
    {"169.253.255.255", PUB}, {"169.254.0.0", LINK}, {"169.254.169.254", LINK},
    {"169.254.255.255", LINK}, {"169.255.0.0", PUB},
    /* 172.16/12: both edges and just outside */
    {"172.15.255.255", PUB}, {"172.16.0.0", PRIV}, {"172.16.0.1", PRIV}, {"172.31.255.255", PRIV},
    {"172.32.0.0", PUB},
    /* 192.0.0/24, 192.0.2/24, 192.88.99/24 */
    {"191.255.255.255", PUB}, {"192.0.0.0", RSVD}, {"192.0.0.255", RSVD}, {"192.0.1.0", PUB},
    {"192.0.2.0", RSVD}, {"192.0.2.255", RSVD}, {"192.0.3.0", PUB}, {"192.88.98.255", PUB},
    {"192.88.99.1", RSVD}, {"192.88.100.0", PUB},
    /* 192.168/16 */
    {"192.167.255.255", PUB}, {"192.168.0.0", PRIV}, {"192.168.1.1", PRIV},
    {"192.168.255.255", PRIV}, {"192.169.0.0", PUB},
    /* 198.18/15, 198.51.100/24, 203.0.113/24 */
    {"198.17.255.255", PUB}, {"198.18.0.0", RSVD}, {"198.19.255.255", RSVD}, {"198.20.0.0", PUB},
    {"198.51.99.255", PUB}, {"198.51.100.7", RSVD}, {"198.51.101.0", PUB},
    {"203.0.112.255", PUB}, {"203.0.113.9", RSVD}, {"203.0.114.0", PUB},
    /* 224/4 multicast, 240/4 reserved, broadcast */
    {"223.255.255.255", PUB}, {"224.0.0.0", MCAST}, {"224.0.0.1", MCAST},
    {"239.255.255.255", MCAST}, {"240.0.0.0", RSVD}, {"250.1.2.3", RSVD},
    {"255.255.255.254", RSVD}, {"255.255.255.255", RSVD},
    /* public examples */
    {"8.8.8.8", PUB}, {"1.1.1.1", PUB}, {"93.184.216.34", PUB}, {"172.217.0.1", PUB},
    /* IPv6 specials */
    {"::", UNSPEC}, {"::1", LOOP}, {"::2", UNSPEC} /* compat 0.0.0.2 */,
    {"fc00::", PRIV}, {"fc00::1", PRIV}, {"fd12:3456::1", PRIV},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PRIV}, {"fbff:ffff::1", RSVD} /* outside 2000::/3 */,
    {"fe00::1", RSVD}, {"fe7f:ffff::1", RSVD}, {"fe80::", LINK}, {"fe80::1", LINK},
    {"febf:ffff::1", LINK}, {"fec0::1", PRIV}, {"feff::1", PRIV}, {"ff00::", MCAST},
    {"ff02::1", MCAST}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", MCAST},
    /* IPv4-mapped ::ffff:a.b.c.d */
    {"::ffff:10.0.0.1", PRIV}, {"::ffff:127.0.0.1", LOOP}, {"::ffff:169.254.169.254", LINK},
    {"::ffff:0.0.0.0", UNSPEC}, {"::ffff:224.0.0.1", MCAST}, {"::ffff:8.8.8.8", PUB},
    {"::ffff:7f00:1", LOOP},
    /* IPv4-compatible ::a.b.c.d */
    {"::10.0.0.1", PRIV}, {"::127.0.0.1", LOOP}, {"::192.168.0.1", PRIV}, {"::8.8.8.8", PUB},
    /* SIIT ::ffff:0:a.b.c.d */
    {"::ffff:0:127.0.0.1", LOOP}, {"::ffff:0:10.1.1.1", PRIV}, {"::ffff:0:8.8.4.4", PUB},
    /* NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48 */
    {"64:ff9b::7f00:1", LOOP}, {"64:ff9b::10.0.0.1", PRIV}, {"64:ff9b::169.254.169.254", LINK},
    {"64:ff9b::8.8.8.8", PUB}, {"64:ff9b:1::8.8.8.8", PRIV},
    /* 6to4 2002:aabb:ccdd::/48 */
    {"2002:7f00:1::1", LOOP}, {"2002:a00:1::", PRIV}, {"2002:a9fe:a9fe::1", LINK},
    {"2002:c0a8:101::1", PRIV}, {"2002:808:808::1", PUB},
    /* reserved IPv6 blocks */
    {"100::1", RSVD}, {"100::ffff:ffff:ffff:ffff", RSVD}, {"100:0:0:1::1", RSVD} /* outside 2000::/3 */,
    {"2001::1", RSVD}, {"2001:0:ffff::1", RSVD}, {"2001:1::1", PUB}, {"2001:2::1", RSVD},
    {"2001:2:1::1", PUB}, {"2001:10::1", RSVD}, {"2001:1f::1", RSVD}, {"2001:20::1", PUB},
    {"2001:db8::1", RSVD}, {"2001:db9::1", PUB}, {"3fff::1", RSVD}, {"3fff:fff::1", RSVD},
    {"3fff:1000::1", PUB}, {"4000::1", RSVD}, {"1fff:ffff::1", RSVD}, {"::1:0:0:1", RSVD},
    /* public IPv6 */
    {"2001:4860::8888", PUB}, {"2001:4860:4860::8888", PUB}, {"2606:4700:4700::1111", PUB},
    {"2a00:1450:4001:81b::200e", PUB}, {"3ffe::1", PUB},
};

static void test_classify(void)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        url_guard_class got = class_of(cases[i].addr);
        if (got != cases[i].want) {
            fprintf(stderr, "classify %s: got %s, want %s\n", cases[i].addr,
                    url_guard_class_name(got), url_guard_class_name(cases[i].want));
            bad++;
        }
    }
    CHECKF(bad == 0, "%d of %zu addresses misclassified", bad, sizeof cases / sizeof cases[0]);
}

/* Garbage in never reads as PUBLIC. */
static void test_malformed_sockaddr(void)
{
    struct sockaddr_in a4;
    memset(&a4, 0, sizeof a4);
    a4.sin_family = AF_INET;
    inet_pton(AF_INET, "8.8.8.8", &a4.sin_addr);
    CHECK(url_guard_classify((struct sockaddr *)&a4, sizeof a4) == PUB);
    CHECK(url_guard_classify((struct sockaddr *)&a4, sizeof a4 - 1) == RSVD);
    CHECK(url_guard_classify((struct sockaddr *)&a4, 0) == RSVD);
    CHECK(url_guard_classify(NULL, sizeof a4) == RSVD);

    struct sockaddr_in6 a6;
    memset(&a6, 0, sizeof a6);
    a6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:4860::8888", &a6.sin6_addr);
    CHECK(url_guard_classify((struct sockaddr *)&a6, sizeof a6) == PUB);
    CHECK(url_guard_classify((struct sockaddr *)&a6, sizeof(struct sockaddr_in)) == RSVD);

    struct sockaddr_un un;
    memset(&un, 0, sizeof un);
    un.sun_family = AF_UNIX;
    CHECK(url_guard_classify((struct sockaddr *)&un, sizeof un) == RSVD);
    a4.sin_family = AF_UNSPEC;
    CHECK(url_guard_classify((struct sockaddr *)&a4, sizeof a4) == RSVD);
}

static void test_allowed(void)
{
    const url_guard_class all[] = {PUB, LOOP, PRIV, LINK, MCAST, UNSPEC, RSVD};
    const bool strict[] = {true, false, false, false, false, false, false};
    const bool lax[] = {true, true, true, true, false, false, false};
    for (size_t i = 0; i < 7; i++) {
        CHECKF(url_guard_allowed(all[i], false) == strict[i], "%s without allow_private",
               url_guard_class_name(all[i]));
        CHECKF(url_guard_allowed(all[i], true) == lax[i], "%s with allow_private",
               url_guard_class_name(all[i]));
        for (size_t j = 0; j < i; j++)
            CHECKF(strcmp(url_guard_class_name(all[i]), url_guard_class_name(all[j])) != 0,
                   "classes %zu and %zu share the name %s", i, j, url_guard_class_name(all[i]));
    }
    CHECK(strcmp(url_guard_class_name(LINK), "link-local") == 0);
}

/* ---- IPv4 spellings ---- */

/* The address url_guard_parse_ipv4 reads, as dotted text, or "-" for none. */
static const char *parsed(const char *host, char *buf, size_t len)
{
    struct in_addr a;
    if (!url_guard_parse_ipv4(host, &a))
        return "-";
    return inet_ntop(AF_INET, &a, buf, (socklen_t)len);
}

static void test_parse_ipv4(void)
{
    static const struct {
        const char *host, *want; /* want "-": not an address */
    } spell[] = {
        {"127.0.0.1", "127.0.0.1"},
        {"0x7f000001", "127.0.0.1"},
        {"0X7F000001", "127.0.0.1"},
        {"017700000001", "127.0.0.1"},
        {"2130706433", "127.0.0.1"},
        {"127.1", "127.0.0.1"},
        {"127.0.1", "127.0.0.1"},
        {"0x7f.1", "127.0.0.1"},
        {"0x7f.0.0.1", "127.0.0.1"},
        {"0177.0.0.1", "127.0.0.1"},
        {"0177.0x0.0.01", "127.0.0.1"},
        {"10.1", "10.0.0.1"},
        {"10.1.2", "10.1.0.2"},
        {"10.0x10203", "10.1.2.3"},
        {"167772161", "10.0.0.1"},
        {"0xa9fea9fe", "169.254.169.254"},
        {"0", "0.0.0.0"},
        {"00", "0.0.0.0"},
        {"4294967295", "255.255.255.255"},
        {"0xffffffff", "255.255.255.255"},
        {"037777777777", "255.255.255.255"},
        {"1.2.65535", "1.2.255.255"},
        {"1.16777215", "1.255.255.255"},
        {"8.8.8.8", "8.8.8.8"},
        /* not addresses */
        {"", "-"},
        {"256.1.1.1", "-"},
        {"1.256.1.1", "-"},
        {"1.1.1.256", "-"},
        {"08.1.1.1", "-"},
        {"09", "-"},
        {"0x", "-"},
        {"0x.1.1.1", "-"},
        {"0xg", "-"},
        {"127.0.0.1.", "-"},
        {"127.1.", "-"},
        {".127.0.0.1", "-"},
        {"1..2", "-"},
        {"1.2.3.4.5", "-"},
        {"4294967296", "-"},
        {"0x100000000", "-"},
        {"040000000000", "-"},
        {"99999999999999999999999", "-"},
        {"1.2.65536", "-"},
        {"1.16777216", "-"},
        {"+1.2.3.4", "-"},
        {"-1", "-"},
        {" 127.0.0.1", "-"},
        {"127.0.0.1 ", "-"},
        {"127.0.0.1x", "-"},
        {"localhost", "-"},
        {"example.com", "-"},
        {"1e3", "-"},
        {"::1", "-"},
    };
    char buf[INET_ADDRSTRLEN];
    for (size_t i = 0; i < sizeof spell / sizeof spell[0]; i++) {
        const char *got = parsed(spell[i].host, buf, sizeof buf);
        CHECKF(strcmp(got, spell[i].want) == 0, "parse '%s': got %s, want %s", spell[i].host, got,
               spell[i].want);
        /* the C library agrees (it also takes trailing spaces, and we do not) */
        size_t n = strlen(spell[i].host);
        if (n && spell[i].host[n - 1] == ' ')
            continue;
        struct in_addr a;
        char lbuf[INET_ADDRSTRLEN];
        const char *libc = inet_aton(spell[i].host, &a) ? inet_ntop(AF_INET, &a, lbuf, sizeof lbuf) : "-";
        CHECKF(strcmp(got, libc) == 0, "'%s': we read %s, inet_aton reads %s", spell[i].host, got,
               libc);
    }
    /* NULL out is allowed; NULL host is not an address */
    CHECK(url_guard_parse_ipv4("127.1", NULL));
    CHECK(!url_guard_parse_ipv4(NULL, NULL));
}

/* Every spelling of a loopback/private address classifies as one once read,
 * and allow_private lets it through while a bad class stays refused. */
static void test_spellings_classify(void)
{
    static const struct {
        const char *host;
        url_guard_class want;
    } s[] = {
        {"0x7f000001", LOOP}, {"017700000001", LOOP}, {"127.1", LOOP}, {"2130706433", LOOP},
        {"0xa.1", PRIV}, {"012.0.0.1", PRIV}, {"0xa9fea9fe", LINK}, {"0", UNSPEC},
        {"0xe0000001", MCAST}, {"4294967295", RSVD}, {"0x8080808", PUB},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        CHECKF(url_guard_parse_ipv4(s[i].host, &a.sin_addr), "%s", s[i].host);
        url_guard_class c = url_guard_classify((struct sockaddr *)&a, sizeof a);
        CHECKF(c == s[i].want, "%s: got %s, want %s", s[i].host, url_guard_class_name(c),
               url_guard_class_name(s[i].want));
        bool ok_strict = c == PUB, ok_lax = c == PUB || c == LOOP || c == PRIV || c == LINK;
        CHECKF(url_guard_allowed(c, false) == ok_strict, "%s strict", s[i].host);
        CHECKF(url_guard_allowed(c, true) == ok_lax, "%s with allow_private", s[i].host);
    }
}

int main(void)
{
    test_classify();
    test_malformed_sockaddr();
    test_allowed();
    test_parse_ipv4();
    test_spellings_classify();
    return check_result();
}
