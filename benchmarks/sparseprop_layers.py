#!/usr/bin/env python3
"""The prunable linear layers of a config, forward + backward, in one command: PyTorch's dense
nn.Linear, SparseProp's SparseLinear (IST-DASLab, PyPI `sparseprop`, compiled with
-march=native at install) and svite's sparse kernels (`svite bench sparse`), on the same
shapes, densities and threads. Masks are uniform at each density.

  /opt/ref/bin/python benchmarks/sparseprop_layers.py [--config deit-tiny] [--lane-batch 32]
      [--density 0.1 --density 0.05] [--threads 1] [--repeats 5] [--svite .build/release/svite]

Needs the reference environment (torch, sparseprop) outside the repo and a release build.
svite's lane runs on one thread; give --threads 1 to compare like with like.
"""
import argparse
import json
import subprocess
import time

import torch
from sparseprop.modules import SparseLinear

SHAPES = {  # config: (tokens per image, dim, hidden)
    "deit-tiny": (197, 192, 768),
    "fmnist-tiny": (50, 96, 384),
    "fmnist-6head": (50, 96, 384),
}


def best_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="deit-tiny", choices=sorted(SHAPES))
    p.add_argument("--lane-batch", type=int, default=32)
    p.add_argument("--density", type=float, action="append")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--svite", default=".build/release/svite")
    a = p.parse_args()
    densities = a.density or [0.1, 0.05]
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tokens, d, h = SHAPES[a.config]
    rows = a.lane_batch * tokens

    svite = json.loads(subprocess.run(
        [a.svite, "bench", "sparse", "--config", a.config, "--lane-batch", str(a.lane_batch), "--repeats", str(a.repeats),
         "--json", "--log-level", "error"] + sum((["--density", str(x)] for x in densities), []),
        check=True, capture_output=True, text=True).stdout)
    ours = {(r["layer"], round(r["density"], 6)): r for r in svite["rows"]}

    print(f"{a.config}, {rows} rows (lane of {a.lane_batch}), {a.threads} thread(s), fp32, forward + backward, ms (best of {a.repeats})")
    print(f"torch {torch.__version__}; svite: {svite['machine']['cpu']}")
    print("layer  shape             density | torch dense  SparseProp  svite dense  svite sparse | svite sparse vs SparseProp")
    for name, i, o in [("qkv", d, 3 * d), ("proj", d, d), ("fc1", d, h), ("fc2", h, d)]:
        x = torch.randn(rows, i, requires_grad=True)
        g = torch.randn(rows, o)
        dense = torch.nn.Linear(i, o)

        def step(layer):
            x.grad = None
            for q in layer.parameters():
                q.grad = None
            layer(x).backward(g)

        dense_ms = best_ms(lambda: step(dense), a.repeats)
        for density in densities:
            w = dense.weight.detach().clone()
            w[torch.rand_like(w) >= density] = 0
            sparse = SparseLinear(w, bias=torch.nn.Parameter(dense.bias.detach().clone()))
            sp_ms = best_ms(lambda: step(sparse), a.repeats)
            r = ours[(name, round(density, 6))]
            print(f"{name:<6} {rows}x{i}->{o:<5} {density:7.3f} | {dense_ms:11.2f} {sp_ms:11.2f} {r['dense_ms']:12.2f} {r['rows_ms']:13.2f} |"
                  f" {sp_ms / r['rows_ms']:6.2f}x")


if __name__ == "__main__":
    main()
