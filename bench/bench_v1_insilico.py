"""Benchmark: optimal Gabors of 2,000 twin neurons, fast equivariant path vs the straightforward loop.

Both run in the same process on the same model: the default-scale twin architecture of
``reprlab.v1.train.PRESETS['default']`` (Hermite layers, features x rotations, input downsampling
and core pooling as configured there; 36 x 64 input, point readouts) with random weights and
2,000 readouts at random RF positions (speed does not depend on the weights). The grid is the
default ``GaborGrid``.

* fast: ``optimal_gabors(model, grid)`` - one valid core pass per centred candidate and
  sub-orientation, all neurons x rotations x offsets read from the shared bank, then per-neuron
  refinement on crops;
* straightforward loop: every candidate rendered as a full image at each neuron's RF centre and
  passed through the model's own forward pass, one neuron at a time
  (``optimal_gabors(..., fast=False, straightforward=True)``). It would take hours, so it is run
  on a subset (a few neurons x the first candidates) and extrapolated linearly in the number of
  neuron-stimulus evaluations; the JSON says so.

Writes ``bench/results/v1_insilico.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from reprlab.v1 import insilico as ins
from reprlab.v1.cores import RotationEquivariantCore
from reprlab.v1.train import PRESETS

N_NEURONS = int(os.environ.get("BENCH_V1_NEURONS", 2000))
LOOP_NEURONS = 2
LOOP_CANDIDATES = 256


def main() -> dict:
    torch.manual_seed(0)
    shape = (36, 64)
    arch = PRESETS["default"]
    Fd, O = int(arch["features"]), int(arch["num_rotations"])
    core = RotationEquivariantCore(features=Fd, num_rotations=O, kernel_sizes=tuple(arch["kernel_sizes"]),
                                   pool=int(arch.get("pool", 1))).eval()
    W = torch.randn(N_NEURONS, Fd, O) / np.sqrt(Fd * O)
    pos = torch.stack([torch.rand(N_NEURONS) * 40 + 12, torch.rand(N_NEURONS) * 16 + 10], 1)
    model = ins.EquivariantModel(core, W, torch.zeros(N_NEURONS), pos, lambda z: F.elu(z) + 1, shape,
                                 downsample=int(arch.get("downsample", 1)))
    grid = ins.gabor_grid("default")
    n_cand = len(ins.gabor_candidates(grid, model.n_rotations, model.stride))

    t0 = time.perf_counter()
    fast = ins.optimal_gabors(model, grid)
    t_fast = time.perf_counter() - t0
    ev_fast = fast.stats["neuron_stimulus_evaluations"]

    # straightforward loop on a subset: the first LOOP_CANDIDATES candidates of LOOP_NEURONS neurons
    cand = ins.gabor_candidates(grid, model.n_rotations, model.stride)[:LOOP_CANDIDATES]
    t0 = time.perf_counter()
    best = []
    for n in range(LOOP_NEURONS):
        p = cand.copy()
        p[:, :2] += pos[n].numpy()
        r = ins._full_diag_gabors(model, torch.as_tensor(p, dtype=torch.float32), torch.full((len(p),), n))
        best.append(float(r.max()))
    t_loop_sub = time.perf_counter() - t0
    ev_loop_sub = LOOP_NEURONS * len(cand)
    loop_rate = ev_loop_sub / t_loop_sub
    ev_total = N_NEURONS * n_cand
    t_loop_extrap = ev_total / loop_rate

    # the same subset through the fast path's crop evaluator (no bank): isolates the crop saving
    t0 = time.perf_counter()
    for n in range(LOOP_NEURONS):
        p = cand.copy()
        p[:, :2] += pos[n].numpy()
        model.diag_gabors(torch.as_tensor(p, dtype=torch.float32), torch.full((len(p),), n))
    crop_rate = ev_loop_sub / (time.perf_counter() - t0)

    out = {
        "n_neurons": N_NEURONS, "candidates_per_neuron": n_cand, "grid": grid.__dict__,
        "model": {"architecture": {k: arch[k] for k in ("features", "num_rotations", "kernel_sizes", "downsample", "pool")
                                   if k in arch}, "weights": "random"},
        "torch_threads": torch.get_num_threads(),
        "fast": {"seconds_total": t_fast, "seconds_grid": fast.stats["seconds_grid"],
                 "neuron_stimulus_evaluations": ev_fast,
                 "refine_evaluations": fast.stats["refine_evaluations"],
                 "evaluations_per_second": ev_fast / fast.stats["seconds_grid"]},
        "straightforward_loop": {"measured_neurons": LOOP_NEURONS, "measured_candidates": len(cand),
                                 "measured_seconds": t_loop_sub, "evaluations_per_second": loop_rate,
                                 "extrapolated_seconds_total": t_loop_extrap,
                                 "note": "measured on a subset, extrapolated linearly to all neurons x candidates"},
        "crop_loop_evaluations_per_second": crop_rate,
        "speedup_total_time": t_loop_extrap / t_fast,
        "speedup_evaluations_per_second": (ev_fast / fast.stats["seconds_grid"]) / loop_rate,
        "target_speedup": 20.0,
        "load_average_1min": os.getloadavg()[0],
    }
    Path(__file__).parent.joinpath("results").mkdir(exist_ok=True)
    Path(__file__).parent.joinpath("results", "v1_insilico.json").write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main()
