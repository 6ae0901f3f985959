"""A Python program for tests/c/malloc_shim.c: run once with glibc's malloc and once with directmem
as its malloc (PYTHONMALLOC=malloc sends every object there), it must print the same lines.
What it does is what puts an allocator to work: threads that allocate and free blocks of every
size and end, fork() while those threads run (multiprocessing) and fork and exec (subprocess),
realloc growth, zlib streams, SQLite, JSON."""

import hashlib
import json
import multiprocessing
import random
import sqlite3
import subprocess
import sys
import threading
import zlib


def churn(seed, results):
    """Blocks of 1 B to 1 MiB, kept a while and dropped at random; returns a digest of them."""
    rng = random.Random(seed)
    kept, digest, dirty = {}, hashlib.sha256(), 0
    for i in range(6000):
        size = rng.choice([rng.randint(1, 600), rng.randint(600, 70000), rng.randint(70000, 1 << 20)])
        dirty += size - bytes(size).count(0)  # bytes(n) is calloc(): every byte must read zero
        block = bytearray(size)
        block[0], block[-1] = i % 251, seed % 251
        kept[rng.randrange(300)] = block
        if i % 7 == 0:
            grown = bytearray()
            for k in range(rng.randint(1, 400)):
                grown += bytes([k % 256]) * 37  # realloc growth
            digest.update(grown)
    for key in sorted(kept):
        digest.update(bytes(kept[key][:1]) + bytes(kept[key][-1:]) + len(kept[key]).to_bytes(4, "little"))
    results[seed] = (digest.hexdigest()[:16], dirty)


def compress(n):
    """A child's work (multiprocessing): zlib streams, four 64 KiB blocks each."""
    data = (str(n) * 300).encode()
    return sum(len(zlib.compress(data[: 100 + k * 10], 6)) for k in range(200))


def main():
    results = {}
    threads = [threading.Thread(target=churn, args=(seed, results)) for seed in range(6)]
    for t in threads:
        t.start()
    # fork() while the churning threads run: the children allocate through the same library.
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        packed = pool.map(compress, range(24))
    echoed = [subprocess.run([sys.executable, "-c", f"print({k} * {k})"], capture_output=True, text=True).stdout.strip()
              for k in range(4)]
    for t in threads:
        t.join()
    print("churn", [results[seed] for seed in range(6)])
    print("children", sum(packed), echoed)

    db = sqlite3.connect(":memory:")
    db.execute("create table t (k integer primary key, v text)")
    db.executemany("insert into t values (?, ?)", ((k, "x" * (k % 900)) for k in range(40000)))
    db.execute("create index t_v on t (v)")
    print("sqlite", db.execute("select count(*), sum(length(v)) from t where v like 'xx%'").fetchone())

    doc = {"items": [{"id": k, "name": f"item {k}", "tags": ["a"] * (k % 5)} for k in range(20000)]}
    text = json.dumps(doc)
    print("json", len(text), json.loads(text)["items"][12345]["name"])


if __name__ == "__main__":
    main()
