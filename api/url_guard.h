/*
 * url_guard.h - which network addresses an image URL may make vitfit connect to.
 *
 * A URL in a classify request is untrusted: without a guard it lets any
 * client make the server fetch from its own loopback, the cloud metadata
 * service (169.254.169.254), or hosts on the private network behind it
 * (server-side request forgery).  Host names prove nothing (DNS can answer
 * anything, and change its answer between a check and the connect), so the
 * guard judges the *address actually connected to*: api_fetch calls
 * url_guard_classify from libcurl's open-socket callback, for every connect
 * of every redirect hop.
 *
 * The classes (RFC 6890 and the IANA special-purpose registries):
 *   PUBLIC       everything below does not match: globally routable unicast.
 *   LOOPBACK     127.0.0.0/8, ::1.
 *   PRIVATE      10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade NAT),
 *                fc00::/7 (unique local), fec0::/10 (old site-local),
 *                64:ff9b:1::/48 (local-use NAT64).
 *   LINK_LOCAL   169.254/16 (the metadata service lives here), fe80::/10.
 *   MULTICAST    224/4, ff00::/8.
 *   UNSPECIFIED  0.0.0.0/8 ("this network": 0.0.0.0 connects to the local
 *                host on Linux), ::.
 *   RESERVED     240/4 and 255.255.255.255 (broadcast); 192.0.0/24 (IETF
 *                protocol assignments), 192.0.2/24, 198.51.100/24,
 *                203.0.113/24 (documentation), 198.18/15 (benchmarking),
 *                192.88.99/24 (6to4 relay anycast, deprecated); IPv6 outside
 *                2000::/3 (global unicast) that no rule above names, 100::/64
 *                (discard), 2001::/32 (Teredo: its embedded client address
 *                is obfuscated and may be anything), 2001:2::/48
 *                (benchmarking), 2001:10::/28 (ORCHID), 2001:db8::/32 and
 *                3fff::/20 (documentation); an address family other than
 *                AF_INET / AF_INET6, or a length too short for its family.
 * IPv6 forms that carry an IPv4 address are classified as that IPv4 address:
 *   ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated; :: and ::1
 *   keep their own class), ::ffff:0:a.b.c.d (SIIT), 64:ff9b::a.b.c.d
 *   (well-known NAT64 prefix) and 2002:aabb:ccdd::/48 (6to4).  So
 *   ::ffff:127.0.0.1 is LOOPBACK, 64:ff9b::a00:1 PRIVATE, and 2002:0808:0808::1
 *   PUBLIC (the class of 8.8.8.8).  (A NAT64 or 6to4 form of a private
 *   address gets the private class, not RESERVED: the message then names
 *   what the URL was aiming at.)
 */
#ifndef VIT_API_URL_GUARD_H
#define VIT_API_URL_GUARD_H

#include <stdbool.h>

#include <netinet/in.h>
#include <sys/socket.h>

/* What kind of address a socket address is (see the table above). */
typedef enum url_guard_class {
    URL_GUARD_PUBLIC,
    URL_GUARD_LOOPBACK,
    URL_GUARD_PRIVATE,
    URL_GUARD_LINK_LOCAL,
    URL_GUARD_MULTICAST,
    URL_GUARD_UNSPECIFIED,
    URL_GUARD_RESERVED,
} url_guard_class;

/* The class of the address in sa (AF_INET or AF_INET6; len its size).
 * Anything else, sa == NULL, or len too short for the family: RESERVED.
 * Pure: no I/O, no lookups. */
url_guard_class url_guard_classify(const struct sockaddr *sa, socklen_t len);

/* A short lower-case name for messages: "public", "loopback", "private",
 * "link-local", "multicast", "unspecified", "reserved". */
const char *url_guard_class_name(url_guard_class c);

/* Whether a connection to an address of class c may be made: PUBLIC always;
 * LOOPBACK, PRIVATE and LINK_LOCAL only with allow_private (the
 * `allow_private_urls` setting: for tests and for deployments that fetch from
 * their own network); MULTICAST, UNSPECIFIED and RESERVED never. */
bool url_guard_allowed(url_guard_class c, bool allow_private);

/* Whether host is an IPv4 address as the C library's inet_aton reads one
 * (and with it getaddrinfo, and curl's URL parser, which turns such hosts
 * into dotted quads): one to four parts separated by dots, each decimal,
 * octal (a leading 0: "0177") or hex ("0x7f"); the last part fills the
 * remaining bytes, so "127.1" is 127.0.0.1, "10.1.2" 10.1.0.2 and
 * "2130706433" or "0x7f000001" is 127.0.0.1.  A part over its range
 * ("256.1.1.1"), a bad digit ("08"), an empty part, "0x" with no digits, a
 * trailing dot ("127.0.0.1.", which inet_aton refuses too), a sign, spaces
 * (which inet_aton would accept after the address) or any other byte: not an
 * address, returns false.  On true *out holds the address (network order).
 * Used to test spellings of hosts without connecting anywhere. */
bool url_guard_parse_ipv4(const char *host, struct in_addr *out);

#endif
