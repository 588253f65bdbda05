"""Twin speed: seconds per training step (forward + backward + Adam, 36 x 64 images) of the
default core (width and pooling from :data:`reprlab.v1.train.PRESETS`, kernels 13, 5, 5; half its width as a row),
dense factorised vs Gaussian-position readout, 2,000 and 13,000 neurons, batch 64 and the
default preset's batch (:data:`reprlab.v1.train.PRESETS`); and the resulting wall and CPU
seconds per epoch of 4,000 distinct training images (``--paper`` adds the thesis'
full-resolution 16 x 8 core). Threads: ``REPRLAB_BENCH_THREADS`` (default 1; 1 is fastest on a shared machine). Prints JSON and writes
bench/results/v1_twin.json. Ratios are measured in one run (the machine may be shared).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from reprlab.v1.model import V1Twin, default_config
from reprlab.v1.train import PRESETS, poisson_loss


def step_time(features: int, pool: int, readout: str, n_neurons: int, batch: int = 64,
              reps: int = 3) -> tuple[float, float]:
    """Best wall and CPU seconds of one training step over ``reps`` (after one warm-up)."""
    torch.manual_seed(0)
    animals = [(f"a{i}", n_neurons // 4) for i in range(4)]
    cfg = default_config(animals, core=dict(features=features, num_rotations=8, kernel_sizes=[13, 5, 5], pool=pool),
                         readout={"kind": readout})
    model = V1Twin(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 36, 64) * 0.2
    y = torch.poisson(torch.ones(batch, n_neurons // 4))
    times, cpus = [], []
    for _ in range(reps + 1):
        t, c = time.perf_counter(), time.process_time()
        feats = model._features(x)
        loss = sum(poisson_loss(model.readout(a)(feats), y) for a, _ in animals)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(times[1:]), min(cpus[1:])


def main() -> dict:
    threads = int(os.environ.get("REPRLAB_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    default_batch = int(PRESETS["default"]["batch_size"])
    f, pool = int(PRESETS["default"]["features"]), int(PRESETS["default"]["pool"])
    cases = [(f, pool, "gaussian", 2000, 64), (f, pool, "gaussian", 2000, default_batch),
             (f, pool, "factorized", 2000, 64), (f, pool, "gaussian", 13000, 64), (f, pool, "factorized", 13000, 64),
             (f // 2, pool, "gaussian", 2000, 64)]
    if "--paper" in sys.argv:
        cases += [(16, 1, "gaussian", 2000, 64), (16, 1, "factorized", 2000, 64)]
    seen = set()
    for features, pool, readout, n, batch in cases:
        if (features, pool, readout, n, batch) in seen:
            continue
        seen.add((features, pool, readout, n, batch))
        s, c = step_time(features, pool, readout, n, batch)
        rows.append({"features": features, "orientations": 8, "pool_after_layer1": pool, "readout": readout,
                     "n_neurons": n, "batch_size": batch, "seconds_per_step": s, "cpu_seconds_per_step": c,
                     "seconds_per_epoch_4000_images": s * 4000 / batch,
                     "cpu_seconds_per_epoch_4000_images": c * 4000 / batch})

    def find(f, r, n, b=64):
        return next(x["seconds_per_step"] for x in rows
                    if x["features"] == f and x["readout"] == r and x["n_neurons"] == n and x["batch_size"] == b)
    report = {
        "threads": threads,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "default_preset_batch_size": default_batch,
        "image_shape": [36, 64],
        "note": f"rows use the default core unless features/pool differ; the default preset is features={f}, pool={pool}",
        "rows": rows,
        "dense_over_gaussian_2000": find(f, "factorized", 2000) / find(f, "gaussian", 2000),
        "dense_over_gaussian_13000": find(f, "factorized", 13000) / find(f, "gaussian", 13000),
    }
    out = Path(__file__).resolve().parent / "results" / "v1_twin.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
