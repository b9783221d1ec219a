#!/usr/bin/env python3
"""The soak workloads of scripts/soak.sh (run that; this is its client).

cache: cache-aside over a key space larger than the store. Zipf-distributed
GETs in pipelined batches; every miss is followed by a SET of the key (1-64
KiB values, TTLs from 1 s to 1 h or none, both fixed per key). Beside the
server, the same trace runs through an exact LRU cache (with the same TTLs)
holding --lru-bytes of records, so the two hit ratios compare. At the end,
GET-only batches of the same keys (nothing written, nothing evicted) give
the read latency without eviction, to set beside the latency while eviction
ran.

ttl: keys that all have TTLs (1-10 s), written at a rate whose live set fits
the store: with noeviction, no write may be refused.
"""
import argparse
import bisect
import collections
import random
import sys
import time

import redis

REC_OVERHEAD = 32 + 16  # record header and alignment, about


def zipf_cdf(n, theta):
    weights = [1.0 / (i + 1) ** theta for i in range(n)]
    total = sum(weights)
    acc, cdf = 0.0, []
    for w in weights:
        acc += w / total
        cdf.append(acc)
    return cdf


def key_size(k):
    return 1024 * (1 + (k * 2654435761 % 2 ** 32) % 64)  # 1..64 KiB


def key_ttl_ms(k):
    r = (k * 40503 % 2 ** 16) / 2 ** 16
    if r < 0.25:
        return 0  # no TTL
    return int(1000 * 3600 ** ((r - 0.25) / 0.75))  # 1 s .. 1 h, log-uniform


class ExactLru:
    def __init__(self, capacity):
        self.cap, self.used = capacity, 0
        self.d = collections.OrderedDict()  # key -> (bytes, expires_at)

    def get(self, k, now):
        e = self.d.get(k)
        if e is None:
            return False
        if e[1] and e[1] <= now:
            self.used -= e[0]
            del self.d[k]
            return False
        self.d.move_to_end(k)
        return True

    def set(self, k, size, ttl_ms, now):
        if k in self.d:
            self.used -= self.d.pop(k)[0]
        while self.used + size > self.cap and self.d:
            self.used -= self.d.popitem(last=False)[1][0]
        self.d[k] = (size, now + ttl_ms / 1000 if ttl_ms else 0)
        self.used += size


def info(r):
    i = r.info("all")
    return {k: i.get(k, 0) for k in (
        "segments_free", "segments_total", "write_amplification", "evicted_keys",
        "expired_keys", "live_bytes", "writes_refused_full")}


def pct(lat, q):
    if not lat:
        return 0.0
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e3


def cache(args, r):
    n = args.keys
    cdf = zipf_cdf(n, args.theta)
    rng = random.Random(args.seed)
    # Shuffle ranks over keys so hot keys are spread over the key space.
    perm = list(range(n))
    rng.shuffle(perm)
    lru = ExactLru(args.lru_bytes)
    t0 = time.time()
    last = t0
    ops = hits = lhits = gets = errors = 0
    iv_ops = iv_hits = iv_gets = 0
    lat = []
    val = b"v" * (64 << 10)
    while time.time() - t0 < args.duration:
        keys = [perm[bisect.bisect_left(cdf, rng.random())] for _ in range(args.batch)]
        p = r.pipeline(transaction=False)
        for k in keys:
            p.get(b"k%d" % k)
        s = time.time()
        got = p.execute(raise_on_error=False)
        lat.append(time.time() - s)
        now = time.time()
        missed = []
        for k, v in zip(keys, got):
            if isinstance(v, Exception):
                errors += 1
                continue
            if v is not None:
                hits += 1
                iv_hits += 1
                if len(v) != key_size(k):
                    print(f"WRONG VALUE for k{k}: {len(v)} bytes", file=sys.stderr)
                    errors += 1
            else:
                missed.append(k)
            if lru.get(k, now):
                lhits += 1
            else:
                lru.set(k, key_size(k) + REC_OVERHEAD, key_ttl_ms(k), now)
        gets += len(keys)
        iv_gets += len(keys)
        if missed:
            p = r.pipeline(transaction=False)
            for k in dict.fromkeys(missed):
                ttl = key_ttl_ms(k)
                if ttl:
                    p.set(b"k%d" % k, val[:key_size(k)], px=ttl)
                else:
                    p.set(b"k%d" % k, val[:key_size(k)])
            for x in p.execute(raise_on_error=False):
                if isinstance(x, Exception):
                    errors += 1
                    if errors < 5:
                        print(f"error: {x}", file=sys.stderr)
            ops += len(missed)
            iv_ops += len(missed)
        ops += len(keys)
        iv_ops += len(keys)
        if now - last >= args.every:
            i = info(r)
            print(f"t={now - t0:6.0f}s ops/s={iv_ops / (now - last):8.0f} "
                  f"hit={iv_hits / max(iv_gets, 1):.3f} hit_total={hits / max(gets, 1):.3f} "
                  f"lru_total={lhits / max(gets, 1):.3f} wa={i['write_amplification']} "
                  f"free={i['segments_free']}/{i['segments_total']} evicted={i['evicted_keys']} "
                  f"expired={i['expired_keys']} errors={errors} get_p99_ms={pct(lat[-2000:], 0.99):.2f}",
                  flush=True)
            last, iv_ops, iv_hits, iv_gets = now, 0, 0, 0
    evicting_lat = lat[len(lat) // 2:]
    # The same reads with nothing written: no eviction, no compaction.
    quiet = [0.0]
    t1 = time.time()
    while time.time() - t1 < args.quiet:
        keys = [perm[bisect.bisect_left(cdf, rng.random())] for _ in range(args.batch)]
        p = r.pipeline(transaction=False)
        for k in keys:
            p.get(b"k%d" % k)
        s = time.time()
        p.execute(raise_on_error=False)
        quiet.append(time.time() - s)
    i = info(r)
    hr, lr = hits / max(gets, 1), lhits / max(gets, 1)
    p_ev, p_q = pct(evicting_lat, 0.99), pct(quiet, 0.99)
    print(f"RESULT cache: duration={args.duration}s gets={gets} hit_ratio={hr:.4f} "
          f"exact_lru_hit_ratio={lr:.4f} (lru_bytes={args.lru_bytes}) ratio={hr / max(lr, 1e-9):.3f} "
          f"write_amplification={i['write_amplification']} evicted={i['evicted_keys']} "
          f"expired={i['expired_keys']} errors={errors}")
    if args.quiet > 0:
        print(f"RESULT latency: GET batch of {args.batch} p99 in the second half={p_ev:.2f} ms, "
              f"same reads without writes={p_q:.2f} ms, ratio={p_ev / max(p_q, 1e-9):.2f}")
    print(f"RESULT get_p99_ms={p_ev:.3f}")
    return errors


def ttl_only(args, r):
    rng = random.Random(args.seed)
    t0 = time.time()
    last = t0
    ops = errors = wrong = sets = 0
    iv = 0
    val = b"t" * (64 << 10)
    written = {}  # key -> (size, expires_at)
    while time.time() - t0 < args.duration:
        now = time.time()
        p = r.pipeline(transaction=False)
        batch = []
        for _ in range(args.batch):
            k = rng.randrange(args.keys)
            size = key_size(k)
            ttl = rng.randint(1000, 10000)
            p.set(b"t%d" % k, val[:size], px=ttl)
            batch.append((k, size, now + ttl / 1000))
        for (k, size, exp), x in zip(batch, p.execute(raise_on_error=False)):
            if isinstance(x, Exception):
                errors += 1
                if errors < 5:
                    print(f"error: {x}", file=sys.stderr)
            else:
                written[k] = (size, exp)
        sets += len(batch)
        # Read back a few keys written recently: within their TTL they
        # must hold their value; after it, nil.
        probe = rng.sample(list(written), min(8, len(written)))
        p = r.pipeline(transaction=False)
        for k in probe:
            p.get(b"t%d" % k)
        t_read = time.time()
        for k, v in zip(probe, p.execute(raise_on_error=False)):
            size, exp = written[k]
            if v is not None and len(v) != size:
                wrong += 1
            if v is not None and t_read > exp + 0.05:
                wrong += 1  # an expired value read back
        ops += len(batch) + len(probe)
        iv += len(batch) + len(probe)
        if args.rate:
            time.sleep(max(0.0, len(batch) / args.rate - (time.time() - now)))
        if now - last >= args.every:
            i = info(r)
            print(f"t={now - t0:6.0f}s ops/s={iv / (now - last):8.0f} wa={i['write_amplification']} "
                  f"free={i['segments_free']}/{i['segments_total']} live={i['live_bytes']} "
                  f"expired={i['expired_keys']} errors={errors} wrong={wrong}", flush=True)
            last, iv = now, 0
    i = info(r)
    print(f"RESULT ttl: duration={args.duration}s sets={sets} errors={errors} wrong={wrong} "
          f"write_amplification={i['write_amplification']} expired={i['expired_keys']} "
          f"segments_free={i['segments_free']}/{i['segments_total']}")
    return errors + wrong


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["cache", "ttl"])
    ap.add_argument("--port", type=int, default=12800)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--keys", type=int, required=True)
    ap.add_argument("--lru-bytes", type=int, default=0)
    ap.add_argument("--theta", type=float, default=0.99)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rate", type=float, default=0, help="ttl: SETs per second")
    ap.add_argument("--every", type=float, default=5)
    ap.add_argument("--quiet", type=float, default=15)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    r = redis.Redis(port=args.port, socket_timeout=30)
    bad = cache(args, r) if args.workload == "cache" else ttl_only(args, r)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
