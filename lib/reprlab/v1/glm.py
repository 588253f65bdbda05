"""Poisson GLM baseline on pixels, vectorised across neurons and L2 penalties.

Digital-twin Methods, "GLM model": a Poisson likelihood with log link per neuron, the L2
coefficient cross-validated per neuron over 48 log-spaced values in ``[0.1, 5]``. We use the
scikit-learn ``PoissonRegressor`` convention for the objective, per neuron ``n`` and penalty
``alpha``::

    f(b, w) = mean_t [ exp(b + x_t . w) - y_tn (b + x_t . w) ] + alpha / 2 ||w||^2

(the intercept is not penalised). ``x_t`` are the image pixels average-pooled by
``downsample`` and z-scored per pixel with the training statistics.

All ``N x L`` problems (neurons x penalties) are solved together by a batched L-BFGS. Working
in the principal axes ``Z = X V`` of the training pixels (the penalty is rotation invariant),
the initial inverse Hessian is the Jacobi diagonal ``1 / (sum_t Z_tk^2 mu_t / T + alpha)``,
and a per-problem Armijo backtracking line search sets the step; every iteration is two
matrix products of size ``T x D x (N L)``. The penalty is selected per neuron by the Poisson log-likelihood on
the validation trials. ``tests/test_v1_glm.py`` checks the solution against scikit-learn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from reprlab._device import device as pick_device

__all__ = ["DEFAULT_ALPHAS", "PoissonGLM", "glm_alphas"]


def glm_alphas(n: int = 48, low: float = 0.1, high: float = 5.0) -> np.ndarray:
    """The Methods' grid: ``n`` log-spaced L2 strengths in ``[low, high]``."""
    if n < 1 or not (0 < low <= high):
        raise ValueError(f"need n >= 1 and 0 < low <= high, got n={n}, low={low}, high={high}")
    return np.logspace(math.log10(low), math.log10(high), n)


DEFAULT_ALPHAS = glm_alphas()


def _as_images(images: Any, name: str) -> torch.Tensor:
    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.dim() != 3:
        raise ValueError(f"{name} must be (n_trials, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return x.float()


def _as_responses(y: Any, n_trials: int, name: str) -> torch.Tensor:
    r = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if r.dim() == 1:
        r = r[:, None]
    if r.dim() != 2 or r.shape[0] != n_trials:
        raise ValueError(f"{name} must be (n_trials={n_trials}, n_neurons), got shape {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError(f"{name} contains NaN or inf values")
    if (r < 0).any():
        raise ValueError(f"{name} must be non-negative (spike counts) for a Poisson GLM")
    return r.float()


class PoissonGLM:
    """Per-neuron Poisson GLM with log link and cross-validated L2 penalty (sklearn style).

    Fitted attributes: ``coef_ (N, D)`` in pooled-pixel space (z-scored inputs),
    ``intercept_ (N,)``, ``alpha_ (N,)`` chosen penalty, ``alpha_index_ (N,)``,
    ``val_loglik_ (N, L)`` mean validation Poisson log-likelihood per penalty (up to the
    ``log y!`` constant), ``n_iter_`` iterations used, ``converged_`` bool.
    """

    def __init__(
        self,
        alphas: Any = None,
        downsample: int = 4,
        max_iter: int = 100,
        tol: float = 1e-6,
        history: int = 8,
        warm_start: int = 6,
        chunk_elements: int = 10_000_000,
        device: str | torch.device | None = None,
        random_state: int = 0,
        progress: bool = False,
    ):
        self.alphas = DEFAULT_ALPHAS if alphas is None else np.asarray(alphas, dtype=np.float64).ravel()
        if self.alphas.size < 1 or not (self.alphas > 0).all():
            raise ValueError(f"alphas must be positive, got {self.alphas}")
        if int(downsample) < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        self.downsample = int(downsample)
        self.max_iter, self.tol = int(max_iter), float(tol)
        if int(history) < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.history = int(history)
        self.warm_start = int(warm_start)
        self.chunk_elements = int(chunk_elements)
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ features
    def _pool(self, images: torch.Tensor) -> torch.Tensor:
        x = images[:, None]
        if self.downsample > 1:
            h, w = x.shape[-2:]
            if h < self.downsample or w < self.downsample:
                raise ValueError(f"images {h}x{w} are smaller than downsample={self.downsample}")
            x = F.avg_pool2d(x, self.downsample)
        return x.flatten(1)

    def _features(self, images: Any, name: str = "images") -> torch.Tensor:
        x = self._pool(_as_images(images, name))
        if x.shape[1] != self.pixel_mean_.shape[0]:
            raise ValueError(f"{name}: expected images of shape {self.image_shape_}, got {tuple(images.shape[1:])}")
        return (x - self.pixel_mean_) / self.pixel_std_

    # ------------------------------------------------------------------ fitting
    def fit(self, images: Any, responses: Any, val_images: Any, val_responses: Any) -> PoissonGLM:
        """Fit all neurons and penalties on ``images (T, H, W)``, ``responses (T, N)``; pick
        each neuron's penalty on the validation trials."""
        dev = pick_device(self.device)
        Xi = _as_images(images, "images")
        Y = _as_responses(responses, Xi.shape[0], "responses")
        Vi = _as_images(val_images, "val_images")
        Yv = _as_responses(val_responses, Vi.shape[0], "val_responses")
        if Y.shape[1] != Yv.shape[1]:
            raise ValueError(f"responses have {Y.shape[1]} neurons but val_responses {Yv.shape[1]}")
        if tuple(Vi.shape[1:]) != tuple(Xi.shape[1:]):
            raise ValueError(f"val_images shape {tuple(Vi.shape[1:])} differs from images {tuple(Xi.shape[1:])}")
        if Xi.shape[0] < 2:
            raise ValueError("need at least 2 training trials")
        self.image_shape_ = tuple(Xi.shape[1:])
        X = self._pool(Xi)
        self.pixel_mean_ = X.mean(0)
        self.pixel_std_ = X.std(0).clamp_min(1e-6)
        X = ((X - self.pixel_mean_) / self.pixel_std_).double()
        Xv = ((self._pool(Vi) - self.pixel_mean_) / self.pixel_std_).double()
        # principal axes of the training pixels: penalty is invariant, Hessian better conditioned
        T = X.shape[0]
        evals, V = torch.linalg.eigh(X.T @ X / T)
        Z = (X @ V).float().to(dev)
        Zv = (Xv @ V).float().to(dev)
        Z2 = (Z * Z).contiguous()
        alphas = torch.as_tensor(self.alphas, dtype=torch.float32, device=dev)
        N, D, L = Y.shape[1], Z.shape[1], len(self.alphas)
        chunk = max(1, self.chunk_elements // max(1, T * L))
        beta = torch.zeros(N, L, D)
        icpt = torch.zeros(N, L)
        val_ll = torch.zeros(N, L)
        n_iter = np.zeros(N, dtype=np.int64)
        converged = np.zeros(N, dtype=bool)
        starts = range(0, N, chunk)
        for s in tqdm(starts, desc="GLM", disable=not self.progress, leave=False):
            sl = slice(s, min(N, s + chunk))
            b, c, it, ok = self._solve_path(Z, Z2, Y[:, sl].to(dev), alphas)
            beta[sl], icpt[sl] = b.cpu(), c.cpu()
            n_iter[sl], converged[sl] = it, ok
            nl = b.shape[0] * L
            eta_v = (Zv @ b.reshape(nl, D).T + c.reshape(nl)[None]).clamp(max=30.0)
            yv = Yv[:, sl].to(dev).repeat_interleave(L, dim=1)
            val_ll[sl] = (yv * eta_v - eta_v.exp()).mean(0).reshape(-1, L).cpu()
        best = val_ll.argmax(1)
        rows = torch.arange(N)
        coef_pc = beta[rows, best]  # (N, D) in principal axes
        self.coef_ = (coef_pc.double() @ V.T).float().numpy()
        self.intercept_ = icpt[rows, best].numpy()
        self.alpha_index_ = best.numpy()
        self.alpha_ = self.alphas[self.alpha_index_]
        self.val_loglik_ = val_ll.numpy()
        self.n_iter_ = n_iter
        self.converged_ = converged
        return self

    def _solve_path(self, Z: torch.Tensor, Z2: torch.Tensor, Y: torch.Tensor, alphas: torch.Tensor):
        """Two-stage continuation: solve a coarse subset of penalties from scratch, then all
        penalties warm-started from the nearest coarse solution (both stages batched)."""
        L = alphas.shape[0]
        if self.warm_start <= 1 or self.warm_start >= L:
            return self._solve(Z, Z2, Y, alphas)
        coarse = torch.unique(torch.linspace(0, L - 1, self.warm_start).round().long())
        b0, c0, it0, _ = self._solve(Z, Z2, Y, alphas[coarse])
        nearest = (torch.arange(L)[:, None] - coarse[None, :]).abs().argmin(1)
        init = torch.cat([b0[:, nearest], c0[:, nearest, None]], dim=2)  # (N, L, D + 1)
        b, c, it, ok = self._solve(Z, Z2, Y, alphas, init=init.reshape(-1, init.shape[-1]))
        return b, c, it0 + it, ok

    def _solve(self, Z: torch.Tensor, Z2: torch.Tensor, Y: torch.Tensor, alphas: torch.Tensor,
               init: torch.Tensor | None = None):
        """Batched L-BFGS for all (neuron, alpha) problems at once.

        Problems are flattened to ``P = N * L`` columns (neuron-major). The parameters of a
        problem are ``theta = (beta (D), intercept)``; the initial inverse Hessian of the
        two-loop recursion is the Jacobi diagonal ``1 / (sum_t Z_tk^2 mu_t / T + alpha)``, the
        step length comes from a per-problem Armijo backtracking line search. Every iteration
        costs two ``(T, D) x (D, P)`` products; line-search retries touch only unaccepted
        problems; converged problems drop out.
        """
        T, D = Z.shape
        N, L = Y.shape[1], alphas.shape[0]
        P, m = N * L, self.history
        dev = Z.device
        # sum_t y_t eta_t = (Y^T Z) . b + c sum_t y_t: the (T, P) response matrix is never formed
        yz = ((Y.T @ Z) / T).repeat_interleave(L, dim=0)  # (P, D)
        ybar = Y.mean(0).repeat_interleave(L)  # (P,)
        a = alphas.repeat(N)  # (P,)
        if init is not None:
            theta = init.to(device=dev, dtype=torch.float32).clone()
        else:
            theta = torch.zeros(P, D + 1, device=dev)
            theta[:, D] = torch.log(Y.mean(0).clamp_min(1e-3)).repeat_interleave(L)
        ZZ2 = torch.cat([Z, Z2], dim=1)

        def objective(th: torch.Tensor, cols: torch.Tensor):
            b, c = th[:, :D], th[:, D]
            mu = torch.addmm(c[None], Z, b.T).clamp_(max=30.0).exp_()
            f = mu.mean(0) - (yz[cols] * b).sum(-1) - ybar[cols] * c + 0.5 * a[cols] * (b * b).sum(-1)
            return f, mu

        def gradient(th: torch.Tensor, mu: torch.Tensor, cols: torch.Tensor):
            both = (mu.T @ ZZ2) / T  # one product for gradient and Jacobi diagonal
            mbar = mu.mean(0)
            g = torch.cat([both[:, :D] - yz[cols] + a[cols, None] * th[:, :D], (mbar - ybar[cols])[:, None]], 1)
            h = torch.cat([both[:, D:] + a[cols, None], mbar.clamp_min(1e-8)[:, None]], 1)
            return g, h

        allc = torch.arange(P, device=dev)
        f, mu = objective(theta, allc)
        g, h = gradient(theta, mu, allc)
        S = torch.zeros(m, P, D + 1, device=dev)
        Yh = torch.zeros(m, P, D + 1, device=dev)
        rho = torch.zeros(m, P, device=dev)
        done = torch.zeros(P, dtype=torch.bool, device=dev)
        n_iter = torch.zeros(P, dtype=torch.long, device=dev)
        for it in range(self.max_iter):
            act = torch.nonzero(~done).squeeze(1)
            if act.numel() == 0:
                break
            ga, ha = g[act], h[act]
            # two-loop recursion (newest first), Jacobi diagonal as initial inverse Hessian
            q = ga.clone()
            order = [(it - 1 - j) % m for j in range(min(it, m))]
            alph = []
            for k in order:
                ak = rho[k, act] * (S[k, act] * q).sum(-1)
                q -= ak[:, None] * Yh[k, act]
                alph.append(ak)
            r = q / ha
            for k, ak in zip(reversed(order), reversed(alph)):
                bk = rho[k, act] * (Yh[k, act] * r).sum(-1)
                r += S[k, act] * (ak - bk)[:, None]
            d = -r
            slope = (ga * d).sum(-1)
            bad = slope >= 0  # not a descent direction: fall back to the Jacobi step
            if bad.any():
                d[bad] = -ga[bad] / ha[bad]
                slope = (ga * d).sum(-1)
            th_a, f_a = theta[act], f[act]
            step = torch.ones(act.numel(), device=dev)
            accepted = torch.zeros(act.numel(), dtype=torch.bool, device=dev)
            new_th, new_f, new_mu = th_a.clone(), f_a.clone(), mu[:, act].clone()
            for _ in range(30):
                pend = torch.nonzero(~accepted).squeeze(1)
                if pend.numel() == 0:
                    break
                trial = th_a[pend] + step[pend, None] * d[pend]
                tf, tmu = objective(trial, act[pend])
                ok = tf <= f_a[pend] + 1e-4 * step[pend] * slope[pend]
                idx = pend[ok]
                new_th[idx], new_f[idx] = trial[ok], tf[ok]
                new_mu[:, idx] = tmu[:, ok]
                accepted[idx] = True
                step[pend[~ok]] *= 0.5
            new_g, new_h = gradient(new_th, new_mu, act)
            k = it % m
            s_k, y_k = new_th - th_a, new_g - ga
            sy = (s_k * y_k).sum(-1)
            S[k, act], Yh[k, act] = s_k, y_k
            rho[k, act] = torch.where(sy > 1e-10, 1.0 / sy.clamp_min(1e-10), torch.zeros_like(sy))
            rel = (f_a - new_f).abs() / f_a.abs().clamp_min(1.0)
            theta[act], f[act], g[act], h[act] = new_th, new_f, new_g, new_h
            mu[:, act] = new_mu
            n_iter[act] += 1
            done[act] = (rel < self.tol) | (~accepted)
        beta = theta[:, :D].reshape(N, L, D)
        icpt = theta[:, D].reshape(N, L)
        return beta, icpt, n_iter.reshape(N, L).max(1).values.cpu().numpy(), done.reshape(N, L).all(1).cpu().numpy()

    # ------------------------------------------------------------------ prediction
    def decision_function(self, images: Any) -> np.ndarray:
        """Linear predictor ``b + x . w`` per trial and neuron ``(B, N)``."""
        self._check_fitted()
        x = self._features(images).double().numpy()
        return x @ self.coef_.T.astype(np.float64) + self.intercept_[None]

    def predict(self, images: Any) -> np.ndarray:
        """Predicted rates ``exp(b + x . w)`` ``(B, N)``."""
        return np.exp(np.minimum(self.decision_function(images), 30.0)).astype(np.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValueError("this PoissonGLM is not fitted yet; call fit() first")

    def filters(self) -> np.ndarray:
        """Coefficients as pooled images ``(N, H/d, W/d)`` (z-scored pixel units)."""
        self._check_fitted()
        h, w = self.image_shape_
        return self.coef_.reshape(-1, h // self.downsample, w // self.downsample)


#: GLM settings per scale (pixels pooled by ``downsample``; the 48 penalties at every scale).
GLM_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(downsample=4, max_iter=30, tol=1e-4),
    "default": dict(downsample=2, max_iter=100, tol=1e-4),
    "paper": dict(downsample=1, max_iter=200, tol=1e-6),
}


def fit_glm_baseline(
    datasets: Any,
    scale: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Fit a :class:`PoissonGLM` per animal (train tier; penalty chosen on validation) and
    evaluate it on the test repeats with :func:`reprlab.v1.metrics.evaluate`.

    Returns ``{"per_neuron": {measure: (N,)}, "alpha": (N,), "animal": (N,), "family": (N,)
    or None, "summary": {...}, "seconds_total": float, "models": {animal: PoissonGLM}}``.
    """
    import time

    from reprlab.scales import pick
    from reprlab.v1 import metrics

    datasets = list(datasets) if not hasattr(datasets, "responses") else [datasets]
    if not datasets:
        raise ValueError("fit_glm_baseline needs at least one dataset")
    cfg = pick(GLM_PRESETS, scale, **overrides)
    t0 = time.perf_counter()
    per: dict[str, list[np.ndarray]] = {}
    alphas, animals, fams, models = [], [], [], {}
    have_fam = True
    for ds in datasets:
        tr, va = ds.split("train"), ds.split("validation")
        if len(va.responses) < 2:
            raise ValueError(f"animal {ds.animal!r}: the GLM needs validation trials to choose the L2 penalty")
        glm = PoissonGLM(device=device, progress=progress, **cfg).fit(tr.images, tr.responses, va.images, va.responses)
        rep, img_idx = ds.repeats_by_image("test", return_images=True)
        pred = glm.predict(ds.images[img_idx])
        for k, v in metrics.evaluate(pred, rep).items():
            per.setdefault(k, []).append(v)
        alphas.append(glm.alpha_)
        animals.append(np.full(ds.n_neurons, ds.animal))
        meta = getattr(ds, "neuron_meta", {}) or {}
        if "family" in meta:
            fams.append(np.asarray(meta["family"]).astype(str))
        else:
            have_fam = False
        models[ds.animal] = glm
    per_neuron = {k: np.concatenate(v) for k, v in per.items()}
    family = np.concatenate(fams) if have_fam and fams else None
    return {
        "per_neuron": per_neuron,
        "alpha": np.concatenate(alphas),
        "animal": np.concatenate(animals),
        "family": family,
        "summary": metrics.summarize(per_neuron, family),
        "seconds_total": time.perf_counter() - t0,
        "models": models,
    }
