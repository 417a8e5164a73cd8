/*
 * ps_md5: MD5 (RFC 1321), written for hashmod relabeling only.
 *
 * Prometheus's hashmod takes the MD5 of the joined source values; we need the
 * exact digest, not a cryptographic hash, and want no OpenSSL dependency.
 * Pure functions over caller storage: nothing allocates, nothing fails.
 */
#ifndef PS_MD5_H
#define PS_MD5_H

#include <stddef.h>
#include <stdint.h>

struct ps_md5 {
    uint32_t h[4];         /* chaining state A, B, C, D */
    uint64_t len;          /* bytes hashed so far */
    unsigned char buf[64]; /* partial block */
};

void ps_md5_init(struct ps_md5 *m);
void ps_md5_update(struct ps_md5 *m, const void *data, size_t n);
void ps_md5_final(struct ps_md5 *m, unsigned char out[16]);
/* One-shot convenience: out = MD5(data[0..n)). */
void ps_md5(const void *data, size_t n, unsigned char out[16]);

#endif
