#!/usr/bin/env python3
"""Does gzip pay off for the Python client? Times Stores of large values,
compressible (JSON-like text) and not (random bytes), with and without
gzip, against a running devstack ($CACHE_ADDR, $CACHE_CA as cachectl.py).

    /usr/bin/python3 final/clients/python/gzipbench.py
"""
import os
import random
import sys
import time
import zlib

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cache_pb2  # noqa: E402
import cache_pb2_grpc  # noqa: E402
import cachectl  # noqa: E402


def text(n, rnd):
    parts, size = [], 0
    while size < n:
        s = '{"user":"u%d","score":%d,"tags":["alpha","beta","gamma"]},' % (rnd.randrange(10**6), rnd.randrange(1000))
        parts.append(s)
        size += len(s)
    return "".join(parts)[:n].encode()


def main():
    tgt, name = cachectl.target(os.environ.get("CACHE_ADDR", cachectl.DEFAULT_ADDR))
    with open(os.environ.get("CACHE_CA", ".dev/ca.crt"), "rb") as f:
        tls = grpc.ssl_channel_credentials(root_certificates=f.read())
    creds = grpc.composite_channel_credentials(tls, grpc.access_token_call_credentials(os.environ.get("CACHE_TOKEN", "inconshreveable")))
    options = [("grpc.service_config", cachectl.SERVICE_CONFIG), ("grpc.default_authority", name)]
    if cachectl.is_ip(name):
        options.append(("grpc.ssl_target_name_override", name))
    rnd = random.Random(1)
    values = [("text", text(900_000, rnd)), ("random", os.urandom(900_000)), ("text", text(64_000, rnd))]
    with grpc.secure_channel(tgt, creds, options=options) as ch:
        cache = cache_pb2_grpc.CacheStub(ch)
        print("value    bytes    gzip ratio   none ms/Store   gzip ms/Store")
        for kind, val in values:
            ms = []
            for comp in (None, grpc.Compression.Gzip):
                req = cache_pb2.StoreReq(key="gzipbench-%s-%d" % (kind, len(val)), val=val)
                cache.Store(req, timeout=10, compression=comp)  # connects, and the key exists
                n = 40
                t = time.perf_counter()
                for _ in range(n):
                    cache.Store(req, timeout=10, compression=comp)
                ms.append((time.perf_counter() - t) / n * 1000)
            ratio = len(val) / len(zlib.compress(val, 6))
            print("%-6s %8d  %8.1fx  %14.2f  %14.2f" % (kind, len(val), ratio, ms[0], ms[1]))


if __name__ == "__main__":
    sys.exit(main())
