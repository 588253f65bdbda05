"""Training of ECON (appendix C.3), presets per scale, checkpoints and model files.

Adam (lr 5e-4), validation every ``eval_every`` iterations on a fixed validation set; when
the validation loss has not improved for ``patience`` evaluations the learning rate is
divided by √10, and training stops after ``max_decays`` decays (or ``max_steps`` /
``max_minutes``). Training scenes are drawn on the fly from a generator seeded by
(seed, step), so a run is deterministic and resumes exactly from its checkpoint.

Competition schedule (`default` presets): the competition is soft (τ = ``temperature_start``
= 1 on the per-pixel score) for the first ``anneal_start`` iterations, so that experts still
win regions they explain a little worse — the stochastic competition of §5.2 that prevents
early collapse — and is then sharpened geometrically to the model's τ (0.1) over
``anneal_steps``, so that each class ends with the expert that explains it best. Measured
on 200 test scenes (`data/scenes/README.md`): 2,000 soft iterations alone leave triangles
split between two experts (54 % to the top one); the sharpening moves them to one.

``single_object_steps`` (off by default) starts training with a curriculum of one-object
scenes decomposed in two steps; measured with a designated background expert, it did not
teach the object experts to explain objects before the background (data card).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from reprlab import __version__
from reprlab import device as pick_device
from reprlab.io import load_checkpoint, save_checkpoint
from reprlab.scales import current_scale
from reprlab.scenes.econ import ECON, ECONConfig
from reprlab.scenes.metrics import evaluate
from reprlab.scenes.sprites import COLOUR_MODES, make_scenes

MODEL_KIND = "reprlab.scenes.econ"
MODEL_SCHEMA = 1

# Model sizes per scale. `paper` = appendix C.4 best models (64 px, U-Net 32-64-64-64).
MODEL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "unique": dict(image_size=16, latent_dim=3, vae_layers=2, vae_channels=8, attention_channels=(8, 16), attention_mlp=32, beta=1.0, gamma=1.0, lam=1.0),
        "random": dict(image_size=16, latent_dim=4, vae_layers=2, vae_channels=8, attention_channels=(8, 16), attention_mlp=32, beta=1.0, gamma=3.26, lam=0.0),
    },
    "default": {
        "unique": dict(image_size=32, latent_dim=3, vae_layers=3, vae_channels=16, attention_channels=(8, 16, 32), attention_mlp=64, beta=1.0, gamma=1.0, lam=1.0, temperature=0.1),
        "random": dict(image_size=32, latent_dim=5, vae_layers=3, vae_channels=16, attention_channels=(8, 16, 32), attention_mlp=64, beta=1.0, gamma=3.26, lam=0.0, temperature=0.1),
    },
    "paper": {
        "unique": dict(image_size=64, latent_dim=2, vae_layers=4, vae_channels=32, attention_channels=(32, 64, 64, 64), attention_mlp=128, beta=9.54, gamma=0.52, lam=1.0),
        "random": dict(image_size=64, latent_dim=5, vae_layers=3, vae_channels=32, attention_channels=(32, 64, 64, 64), attention_mlp=128, beta=1.0, gamma=3.26, lam=0.0),
    },
}

TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(batch_size=8, max_steps=40, eval_every=10, n_val=24, temperature_start=None, anneal_steps=0, threads=1),
    "default": dict(batch_size=16, max_steps=3000, eval_every=100, n_val=100, temperature_start=1.0,
                    anneal_start=2000, anneal_steps=500),
    "paper": dict(batch_size=32, max_steps=None, eval_every=100, n_val=100, temperature_start=None, anneal_steps=0),
}


@dataclass
class TrainConfig:
    """Optimisation settings (appendix C.3)."""

    colour_mode: str = "unique"
    batch_size: int = 32
    lr: float = 5e-4
    max_steps: int | None = None
    max_minutes: float | None = None
    eval_every: int = 100
    patience: int = 5
    decay_factor: float = math.sqrt(10.0)
    max_decays: int = 5
    n_val: int = 100
    seed: int = 0
    temperature_start: float | None = None
    anneal_start: int = 0
    anneal_steps: int = 0
    expected_loss: bool = False
    single_object_steps: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.colour_mode not in COLOUR_MODES:
            raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {self.colour_mode!r}")
        for name in ("batch_size", "eval_every", "patience", "max_decays", "n_val"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.decay_factor > 1:
            raise ValueError(f"need lr > 0 and decay_factor > 1, got {self.lr}, {self.decay_factor}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 or None, got {self.max_steps}")
        if self.anneal_start < 0 or self.anneal_steps < 0:
            raise ValueError(f"anneal_start and anneal_steps must be >= 0, got {self.anneal_start}, {self.anneal_steps}")
        if self.temperature_start is not None and not self.temperature_start > 0:
            raise ValueError(f"temperature_start must be > 0 or None, got {self.temperature_start}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not isinstance(self.single_object_steps, int) or self.single_object_steps < 0:
            raise ValueError(f"TrainConfig.single_object_steps must be an int >= 0, got {self.single_object_steps!r}")
        if not isinstance(self.expected_loss, bool):
            raise ValueError(f"TrainConfig.expected_loss must be True or False, got {self.expected_loss!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {sorted(unknown)}")
        return cls(**d)


def make_configs(scale: str | None = None, colour_mode: str = "unique", **overrides: Any) -> tuple[ECONConfig, TrainConfig]:
    """Model and training configs of a scale preset; ``overrides`` go to whichever has the key."""
    name = current_scale(scale)
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    model_d = dict(MODEL_PRESETS[name][colour_mode])
    train_d = dict(TRAIN_PRESETS[name], colour_mode=colour_mode)
    model_keys = {f.name for f in fields(ECONConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    for key, value in overrides.items():
        if value is None and key not in ("max_steps", "max_minutes", "temperature_start", "threads"):
            continue
        if key in model_keys:
            model_d[key] = value
        elif key in train_keys:
            train_d[key] = value
        else:
            raise ValueError(f"unknown setting {key!r}; model keys {sorted(model_keys)}, training keys {sorted(train_keys)}")
    return ECONConfig(**model_d), TrainConfig(**train_d)


def training_batch(cfg: TrainConfig, image_size: int, step: int) -> np.ndarray:
    """The (deterministic) training images of iteration ``step``.

    The first ``cfg.single_object_steps`` iterations (a curriculum; not in the paper) show one
    object of a random class on the background; later ones the training distribution.
    """
    rng = np.random.default_rng([cfg.seed, step, 1])
    if step < cfg.single_object_steps:
        return make_scenes(cfg.batch_size, image_size, cfg.colour_mode, n_objects=1, classes="random", random_state=rng).images
    return make_scenes(cfg.batch_size, image_size, cfg.colour_mode, random_state=rng).images


def validation_scenes(cfg: TrainConfig, image_size: int):
    """The fixed validation set (training distribution, a seed disjoint from training)."""
    return make_scenes(cfg.n_val, image_size, cfg.colour_mode, random_state=np.random.default_rng([cfg.seed, 2]))


def temperature_at(step: int, model_cfg: ECONConfig, cfg: TrainConfig) -> float:
    """Competition temperature: ``temperature_start`` until ``anneal_start``, then geometric to τ."""
    if cfg.temperature_start is None:
        return model_cfg.temperature
    if step <= cfg.anneal_start:
        return float(cfg.temperature_start)
    frac = min(1.0, (step - cfg.anneal_start) / max(1, cfg.anneal_steps))
    return float(cfg.temperature_start ** (1 - frac) * model_cfg.temperature**frac)


def _roles(spec: dict) -> dict[str, int | None]:
    return dict(spec["top_expert"])


def _jsonable_eval(ev: dict) -> dict:
    out = dict(ev)
    spec = dict(ev["specialisation"])
    spec["table"] = np.asarray(spec["table"]).tolist()
    out["specialisation"] = spec
    return out


# Settings added after files were written, with the value those older files were trained with.
LEGACY_MODEL_DEFAULTS: dict[str, Any] = dict(competition_norm="sum", last_step_region_kl=True)


def legacy_model_config(saved: dict) -> ECONConfig:
    """The ECONConfig of a saved file; keys it predates get the behaviour it was trained with."""
    return ECONConfig.from_dict({**LEGACY_MODEL_DEFAULTS, **saved})


def train(
    model_cfg: ECONConfig,
    cfg: TrainConfig,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    callback: Callable[[int, float, dict], bool | None] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[ECON, dict]:
    """Train ECON; returns the best model (lowest validation loss) and a report.

    ``checkpoint``: path of the resumable training checkpoint, written atomically at every
    validation. With ``resume`` and an existing file, training continues from it (the
    configs stored in the checkpoint must match). ``callback(step, loss, state)`` is called
    after every iteration; returning True stops training.
    """
    dev = pick_device(device)
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(cfg.seed)  # deterministic initialisation
    model = ECON(model_cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state: dict[str, Any] = dict(step=0, lr=cfg.lr, best_val=float("inf"), bad_evals=0, n_decays=0,
                                 history=[], elapsed=0.0, best_state=None, best_eval=None, stop_reason=None)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        saved = load_checkpoint(ckpt_path, map_location=dev)
        if legacy_model_config(saved.get("model_config", {})).to_dict() != model_cfg.to_dict():
            raise ValueError(f"{ckpt_path} was trained with model config {saved.get('model_config')}, not {model_cfg.to_dict()}")
        saved_train = TrainConfig.from_dict(saved.get("train_config", {})).to_dict()  # defaults for newer keys
        now = cfg.to_dict()
        for key in ("max_steps", "max_minutes", "threads"):  # budget settings may change on resume
            saved_train.pop(key, None)
            now.pop(key, None)
        if saved_train != now:
            raise ValueError(f"{ckpt_path} was trained with {saved['train_config']}, not {cfg.to_dict()}")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state.update(saved["state"])
        if state["stop_reason"] != "lr_decays":  # budgets may be extended on resume
            state["stop_reason"] = None
    for group in opt.param_groups:
        group["lr"] = state["lr"]
    val = validation_scenes(cfg, model_cfg.image_size)
    gen = torch.Generator()

    def save() -> None:
        if ckpt_path is None:
            return
        save_checkpoint(ckpt_path, dict(
            kind="reprlab.scenes.train", reprlab_version=__version__,
            model_config=model_cfg.to_dict(), train_config=cfg.to_dict(),
            model=model.state_dict(), optimizer=opt.state_dict(), state=state,
        ))

    start = time.monotonic()
    elapsed0 = state["elapsed"]
    total = cfg.max_steps
    bar = tqdm(total=total, initial=state["step"], disable=not progress, desc=f"ECON {cfg.colour_mode}")
    model.train()
    try:
        while state["stop_reason"] is None:
            step = state["step"]
            if cfg.max_steps is not None and step >= cfg.max_steps:
                state["stop_reason"] = "max_steps"
                break
            if cfg.max_minutes is not None and (time.monotonic() - start) / 60 >= cfg.max_minutes:
                state["stop_reason"] = "max_minutes"
                break
            x = torch.from_numpy(training_batch(cfg, model_cfg.image_size, step)).to(dev)
            gen.manual_seed(cfg.seed * 1_000_003 + step)
            tau = temperature_at(step, model_cfg, cfg)
            steps = 2 if step < cfg.single_object_steps else None  # curriculum: object + background
            d = model.decompose(x, n_steps=steps, stochastic=True, generator=gen, temperature=tau,
                                expected_loss=cfg.expected_loss)
            loss = d.loss.mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] = step + 1
            state["elapsed"] = elapsed0 + time.monotonic() - start
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.1f}", lr=f"{state['lr']:.1e}")
            if state["step"] % cfg.eval_every == 0:
                ev = evaluate(model, val)
                entry = dict(step=state["step"], train_loss=float(loss.item()), val_loss=ev["loss"],
                             ari_fg=ev["ari_fg"], msc=ev["msc"], mse=ev["mse"],
                             spec_min=ev["specialisation"]["min_fraction"],
                             dedicated=ev["specialisation"]["dedicated"],
                             table=np.asarray(ev["specialisation"]["table"]).tolist(),
                             lr=state["lr"], temperature=tau, elapsed=state["elapsed"])
                state["history"].append(entry)
                if ev["loss"] < state["best_val"]:
                    state["best_val"] = ev["loss"]
                    state["bad_evals"] = 0
                    state["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    state["best_eval"] = _jsonable_eval(ev)
                    state["best_step"] = state["step"]
                else:
                    state["bad_evals"] += 1
                    if state["bad_evals"] >= cfg.patience:
                        state["n_decays"] += 1
                        state["bad_evals"] = 0
                        state["lr"] /= cfg.decay_factor
                        for group in opt.param_groups:
                            group["lr"] = state["lr"]
                        if state["n_decays"] >= cfg.max_decays:
                            state["stop_reason"] = "lr_decays"
                save()
            if callback is not None and callback(state["step"], float(loss.item()), state):
                state["stop_reason"] = "callback"
    finally:
        bar.close()
    save()
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    report = dict(steps=state["step"], stop_reason=state["stop_reason"], best_val=state["best_val"],
                  best_step=state.get("best_step"), elapsed_s=state["elapsed"],
                  s_per_step=state["elapsed"] / max(1, state["step"]), history=state["history"])
    return model, report


# ---------------------------------------------------------------------------- model files
def save_model(path: str | os.PathLike, model: ECON, train_config: TrainConfig | None = None, roles: dict | None = None,
               metrics: dict | None = None, provenance: dict | None = None, role_latents: dict | None = None) -> Path:
    """Write a small, weights-only model file (no optimiser state) atomically.

    ``role_latents``: fitted latent Gaussians per role (``generate.fit_role_latents``).
    """
    state = dict(kind=MODEL_KIND, schema=MODEL_SCHEMA, reprlab_version=__version__,
                 config=model.config.to_dict(), train_config=train_config.to_dict() if train_config else None,
                 state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
                 roles=roles or {}, metrics=metrics or {}, provenance=provenance or {},
                 role_latents=role_latents or {})
    return save_checkpoint(path, state)


def load_model(path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[ECON, dict]:
    """Load a model file written by :func:`save_model` or a training checkpoint.

    Returns the model (eval mode) and the file's metadata (config, roles, metrics, provenance).
    """
    saved = load_checkpoint(path)
    if saved.get("kind") == MODEL_KIND:
        if saved.get("schema") != MODEL_SCHEMA:
            raise ValueError(f"{path}: model schema {MODEL_SCHEMA} expected, found {saved.get('schema')!r}")
        cfg, sd = saved["config"], saved["state_dict"]
    elif saved.get("kind") == "reprlab.scenes.train":
        cfg = saved["model_config"]
        sd = saved["state"].get("best_state") or saved["model"]
        saved = dict(saved, roles={}, metrics=saved["state"].get("best_eval") or {}, provenance={})
    else:
        raise ValueError(f"{path}: not an ECON model file (kind {saved.get('kind')!r})")
    model = ECON(legacy_model_config(cfg))
    model.load_state_dict(sd)
    model.to(pick_device(device)).eval()
    meta = {k: v for k, v in saved.items() if k not in ("state_dict", "model", "optimizer")}
    return model, meta


def roles_from_eval(ev: dict) -> dict[str, int | None]:
    """Class -> expert mapping (and 'background') from an evaluation's specialisation."""
    return _roles(ev["specialisation"])


DATA_DIR = Path(__file__).resolve().parents[3] / "data" / "scenes"


def pretrained_path(colour_mode: str = "unique") -> Path:
    """Where the shipped model for ``colour_mode`` lives (``data/scenes/econ_<mode>.pt``)."""
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    return DATA_DIR / f"econ_{colour_mode}.pt"


def load_pretrained(
    colour_mode: str = "unique", path: str | os.PathLike | None = None, fallback: bool = True,
    fallback_steps: int = 60, device: str | torch.device | None = None,
) -> tuple[ECON, dict, str]:
    """The shipped ECON model, or (``fallback``) a tiny smoke-scale model trained right now.

    Returns (model, metadata, note); the note says which one you got.
    """
    p = Path(path) if path is not None else pretrained_path(colour_mode)
    if p.is_file():
        model, meta = load_model(p, device=device)
        prov = meta.get("provenance") or {}
        return model, meta, f"loaded {p} ({prov.get('steps_trained', '?')} training steps, {prov.get('date', '?')})"
    if not fallback:
        raise FileNotFoundError(f"no shipped ECON model at {p}")
    from reprlab.scenes.generate import evaluate_all

    model_cfg, cfg = make_configs("smoke", colour_mode, max_steps=fallback_steps)
    model, report = train(model_cfg, cfg, checkpoint=None, device=device, progress=False)
    ev = evaluate_all(model, colour_mode, n=20, generation_samples=4)
    meta = dict(config=model_cfg.to_dict(), train_config=cfg.to_dict(), roles=ev.pop("roles"),
                role_latents=ev.pop("role_latents"), metrics=ev,
                provenance=dict(steps_trained=report["steps"], note="smoke fallback"))
    return model, meta, (f"NOTE: {p} is missing — using a tiny smoke-scale model trained just now for "
                         f"{report['steps']} steps; its decompositions are not representative.")
