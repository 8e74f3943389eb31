"""Sums a flat `perf report --sort dso,symbol` by what the work is, for scripts/profile-clicks.

Arguments: the report, utime and stime (clock ticks) of the server before and after the measured
load, the clock tick rate, and the load generator's JSON summary (its `ok` is the clicks).
Prints each category's share of the server's sampled time and its µs per click.
"""

import json
import re
import sys

# First match wins; the order puts specific crypto before the generic patterns.
CATEGORIES = [
    ("key exchange: X25519", r"curve25519|x25519"),
    ("key exchange: ML-KEM-768", r"mlkem|ml_kem|kyber|[Kk]eccak|sha3_|SHA3|SHAKE|\bshake"),
    ("signature: ECDSA P-256", r"nistz256|p256|ecdsa|ECDSA|bignum_|bn_|BN_|ec_GFp|EC_"),
    ("hashing: transcript, HKDF, HMAC", r"sha256|sha512|SHA256|SHA384|SHA512|HMAC|HKDF|hkdf|hmac|digest|Digest|::hash::"),
    ("record and token encryption: AES-GCM, ChaCha20-Poly1305", r"aes|gcm|GCM|AES|ghash|aead|Aead|AEAD|chacha|poly1305"),
    ("allocation (jemalloc)", r"rjem|jemalloc|je_|malloc|free|calloc|realloc|sdallocx|rallocx|tcache_|edata"),
    ("memcpy, memset", r"memmove|memcpy|memset|memcmp"),
    ("kernel: TCP, sockets, epoll, scheduling", r"^\[kernel"),
    ("rustls (handshake logic, record layer)", r"rustls::|tokio_rustls::"),
    ("HTTP (hyper, http, httparse)", r"hyper::|hyper_util::|httparse|http::|h2::"),
    ("tokio runtime, timers, I/O driver", r"tokio::|mio::|tokio_util::"),
    ("clickedge: SNI, certificate, token, verdict, click line", r"clickedge::|moka::|dashmap::"),
    ("other aws-lc", r"aws_lc|aws-lc"),
    ("libc, vdso", r"libc\.so|\[vdso\]|ld-linux"),
]


def main():
    report, before, after, tck, load = sys.argv[1:6]
    ticks = sum(map(int, after.split())) - sum(map(int, before.split()))
    ok = json.load(open(load))["ok"]
    us_per_click = ticks / int(tck) * 1e6 / ok
    sums = {name: 0.0 for name, _ in CATEGORIES}
    sums["other"] = 0.0
    line = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*?)\s*$")
    for text in open(report):
        m = line.match(text)
        if not m:
            continue
        share, dso, symbol = float(m.group(1)), m.group(2), m.group(3)
        # The DSO counts for the kernel and the C library only: the edge's own binary may be
        # named anything (`EDGE=`), and its name must not decide a category.
        if dso.startswith("[kernel"):
            key = f"{dso} {symbol}"
        elif re.search(r"libc\.so|\[vdso\]|ld-linux", dso):
            key = f"{symbol} {dso}"
        else:
            key = symbol
        for name, pattern in CATEGORIES:
            if re.search(pattern, key):
                sums[name] += share
                break
        else:
            sums["other"] += share
    print(f"clicks: {ok}, server CPU per click: {us_per_click:.1f} µs (utime+stime)")
    print(f"| where | share | µs per click |")
    print(f"| --- | ---: | ---: |")
    for name, share in sorted(sums.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {share:.1f}% | {share / 100 * us_per_click:.1f} |")


main()
