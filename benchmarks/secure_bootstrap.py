"""One CKKS bootstrap at 128-bit security, plain OpenFHE in one process: what it costs.

The 128-bit ``ckks-bootstrap`` preset (depth 10, 16 slots — sparse: full slots do not fit
in this machine's memory) is what a real deployment refreshes with. This measures, in
one process with the threads OpenMP gives it: key generation, the size of the public
context (evaluation and bootstrapping keys), peak resident memory, and the time of
``--boots`` bootstraps through ``crypto.baseline`` (plain OpenFHE calls). The swarm
itself is not run at this preset on a 23 GiB machine: the client's key set alone takes
most of it (see docs/claims.md).

    python benchmarks/secure_bootstrap.py [--boots 2] [--json PATH]

Needs about 24 GiB of memory. It asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from hswarm import bench
from hswarm.crypto import baseline, keys, params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ckks-bootstrap")
    parser.add_argument("--boots", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    prm = params.preset(args.preset)
    began = time.perf_counter()
    keyset = keys.generate_keys(prm)
    keygen = time.perf_counter() - began
    public = keyset.public_context()
    ct = keyset.encrypt(np.full(prm.slots, 0.5))[0]
    steps = [(1, "bootstrap", (0,), {})]
    times = []
    for _ in range(args.boots):
        run = baseline.run(public, steps, {0: ct}, [1])
        times.append(run.seconds)
    out = {
        "preset": prm.label,
        "ring_dim": int(keyset.cc.GetRingDimension()),
        "machine": bench.machine(),
        "keygen_s": round(keygen, 2),
        "public_context_bytes": public.size,
        "ciphertext_bytes": len(ct),
        "bootstrap_s": [round(t, 2) for t in times],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
