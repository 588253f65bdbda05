"""Rotation alignment speed (reprlab.v1.align): seconds per epoch and in total for N = 2,000 and
13,000 readouts of 128 dims (F = 16 features × O = 8 orientations), on synthetic readouts of 10
shifted periodic-GP families (noise 0.1). Prints JSON and writes bench/results/v1_align.json.

Per N it measures, in one run:
- the β sweep's seconds per epoch with the paper's 20 β × 3 restarts (P = 60 problems) on the
  sweep subsample (1,024 neurons, minibatches of 512): a few epochs, stopped by the callback;
- the fine-tuning's seconds per epoch on all N neurons (one problem, minibatches of 512);
- the exact eq. (3) evaluation over all N(N-1)/2 pairs (chunked);
- the norm-preserving rotations (``normalize=True``, the default) are used throughout;
- a complete fit with a reduced sweep (β ∈ {0.3, 1, 3}, 2 restarts, ≤ 300 sweep epochs, ≤ 30
  fine-tuning epochs) with its phase timings and quality: circular correlation of the recovered
  angles with the planted shifts (per family, weighted) and the ARI of k-means on the aligned
  readouts. A full paper-configuration fit costs ≈ sweep_epochs × (sweep s/epoch) on top.
``--n50k`` adds N = 50,000 (fine-tuning epoch, coordinate alignment and exact loss only).
Per N also the rotation-invariant k-means refinement (:func:`reprlab.v1.cluster.invariant_kmeans`,
50 clusters, 256 grid angles, 5 iterations without early stop) from angles with ~17° errors:
seconds and CPU-seconds per iteration, and the circular correlation before and after.
``--refine-only`` runs just that and merges it into the existing results file.
Threads: $REPRLAB_BENCH_THREADS (default 1; the machine is shared, see load_average).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from reprlab.io import atomic_write_json
from reprlab.v1.align import (
    DEFAULT_BETAS,
    RotationAligner,
    _align_to_reference,
    alignment_loss,
    periodic_gp_readouts,
)
from reprlab.v1.cluster import ReadoutClustering, adjusted_rand, angle_recovery

N_GROUPS = 10


def data(n: int):
    return periodic_gp_readouts(n, N_GROUPS, 8, noise=0.1, lengthscale=1.0, random_state=0, n_features=16)


def epochs_timing(R: np.ndarray, n_epochs: int, **kw) -> float:
    """Seconds per epoch of the sweep phase (the callback stops after n_epochs)."""
    al = RotationAligner(random_state=0, progress=False, callback=lambda s, loss, st: s >= n_epochs, **kw)
    al.fit(R)
    return al.timing_["sweep_seconds_per_epoch"]


def finetune_epoch_seconds(R: np.ndarray, n_epochs: int = 2) -> float:
    """Seconds per fine-tuning epoch over all N (one β, minibatches of 512)."""
    al = RotationAligner(random_state=0, progress=False, betas=(1.0,), n_init=1)
    X = torch.as_tensor(R, dtype=torch.float32)
    rng = np.random.default_rng(0)
    res = al._optimise(X, torch.as_tensor(rng.uniform(0, 2 * np.pi, (1, R.shape[0])), dtype=torch.float32),
                       torch.tensor([2.0]), torch.tensor([1.0]), rng, n_epochs, "bench", 1e-8)
    return res.seconds_per_epoch


def full_fit(d) -> dict:
    t, c = time.perf_counter(), time.process_time()
    al = RotationAligner(betas=(0.3, 1.0, 3.0), n_init=2, max_epochs=300, finetune_epochs=30,
                         random_state=0, progress=False).fit(d.R)
    total, cpu = time.perf_counter() - t, time.process_time() - c
    A = al.transform()
    labels = ReadoutClustering("kmeans", n_clusters=N_GROUPS, n_init=5).fit(A).labels_
    rec = angle_recovery(al.angles_, d.shifts, d.groups, period=2 * np.pi)
    return {
        "seconds_total": total,
        "cpu_seconds_total": cpu,
        "phases": al.timing_,
        "sweep_epochs": al.n_epochs_,
        "temperature": al.temperature_,
        "beta": al.beta_,
        "alignment_loss_mean": al.alignment_loss_,
        "alignment_loss_true_shifts": alignment_loss(d.R, d.shifts, reduction="mean", normalize=al.normalize),
        "angle_circular_correlation_weighted": rec["weighted"],
        "kmeans_ari_aligned": adjusted_rand(labels, d.groups),
        "kmeans_ari_raw": adjusted_rand(
            ReadoutClustering("kmeans", n_clusters=N_GROUPS, n_init=5).fit(d.R).labels_, d.groups),
    }


def refine_timing(d, n_iter: int = 5) -> dict:
    """invariant_kmeans from noisy angles: seconds per iteration (wall and CPU) and the recovery."""
    from reprlab.v1.cluster import invariant_kmeans

    rng = np.random.default_rng(1)
    init = np.mod(d.shifts + 0.3 * rng.standard_normal(d.shifts.size), 2 * np.pi)
    t, c = time.perf_counter(), time.process_time()
    res = invariant_kmeans(d.R, init, 50, n_grid=256, max_iter=n_iter, tol=0.0, random_state=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {
        "n_clusters": 50, "n_grid": 256, "iterations": res.n_iter, "seconds_total": wall, "cpu_seconds_total": cpu,
        "angle_corr_before": angle_recovery(init, d.shifts, d.groups, period=2 * np.pi)["weighted"],
        "angle_corr_after": angle_recovery(res.angles, d.shifts, d.groups, period=2 * np.pi)["weighted"],
        "objective_first_last": [res.history[0], res.history[-1]],
    }


def refine_only(threads: int) -> dict:
    out = Path(__file__).resolve().parent / "results" / "v1_align.json"
    report = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    sizes = [2000, 13000] + ([50000] if "--n50k" in sys.argv else [])
    rows = []
    for n in sizes:
        row = {"n_readouts": n, "dims": 128, "threads": threads, "load_average_before": os.getloadavg()[0],
               **refine_timing(data(n))}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    report["invariant_kmeans"] = rows
    atomic_write_json(out, report)
    print(json.dumps(rows, indent=2))
    return report


def main() -> dict:
    threads = int(os.environ.get("REPRLAB_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    if "--refine-only" in sys.argv:
        return refine_only(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    sizes = [2000, 13000] + ([50000] if "--n50k" in sys.argv else [])
    rows, refine_rows = [], []
    for n in sizes:
        d = data(n)
        row: dict = {"n_readouts": n, "dims": 128, "load_average_before": os.getloadavg()[0]}
        t = time.perf_counter()
        row["exact_eq3_seconds"] = (alignment_loss(d.R, d.shifts, reduction="mean"), time.perf_counter() - t)[1]
        row["finetune_seconds_per_epoch"] = finetune_epoch_seconds(d.R)
        sub = np.random.default_rng(0).choice(n, 1024, replace=False)
        t = time.perf_counter()
        rest = np.setdiff1d(np.arange(n), sub)
        ref = d.R[sub].reshape(1024, -1)
        _align_to_reference(d.R[rest], ref, 10.0, 2 * np.pi, torch.device("cpu"), torch.float32)
        row["coordinate_alignment_seconds"] = time.perf_counter() - t
        if n <= 13000:
            row["sweep_seconds_per_epoch_paper_P60"] = epochs_timing(d.R, 3, betas=DEFAULT_BETAS, n_init=3)
            row["sweep_seconds_per_epoch_P6"] = epochs_timing(d.R, 5, betas=(0.3, 1.0, 3.0), n_init=2)
            row["full_fit_reduced_sweep"] = full_fit(d)
        refine_rows.append({"n_readouts": n, "dims": 128, "threads": threads, **refine_timing(d)})
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    report = {
        "threads": threads,
        "load_average_at_start": load,
        "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "data": "periodic_gp_readouts: 10 families, F=16, O=8, noise 0.1",
        "sweep_subsample": 1024,
        "batch_size": 512,
        "rows": rows,
        "invariant_kmeans": refine_rows,
    }
    out = Path(__file__).resolve().parent / "results" / "v1_align.json"
    atomic_write_json(out, report)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
