"""Atomic artifact writing, versioned bundles and safe checkpoint loading.

Everything reprlab writes goes through a temporary file in the destination folder
followed by ``os.replace``, so a crash or a bad input never leaves a half-written
artifact. Checkpoints are loaded with ``torch.load(weights_only=True)``: no arbitrary
unpickling.

A *bundle* is a folder holding ``manifest.json`` (schema version, kind, config,
package version, per-file SHA-256) plus named ``.npy`` arrays and ``.json`` documents.
It is written into a temporary sibling folder and renamed into place as a whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

BUNDLE_SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def _package_version() -> str:
    from reprlab import __version__

    return __version__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and tuples into JSON-serialisable values."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy/torch values converted)."""
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (no pickles allowed)."""
    arr = np.asarray(array)
    if arr.dtype == object:
        raise ValueError(f"refusing to save an object array to {path}: expected numeric/str dtype")
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file without allowing pickles; clear error if missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"expected a .npy file at {p}, found nothing")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{p} is not a valid .npy array file: {err}") from err


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Save a checkpoint dict (tensors, numbers, strings, nested dicts/lists) atomically."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"expected a checkpoint file at {p}, found nothing")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"{p} is not a loadable reprlab checkpoint (weights_only): {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a checkpoint dict, found {type(state).__name__}")
    return state


# --------------------------------------------------------------------------- bundles
def write_bundle(
    path: str | os.PathLike,
    kind: str,
    arrays: Mapping[str, np.ndarray] | None = None,
    documents: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a versioned artifact bundle folder atomically.

    ``arrays`` become ``<name>.npy``, ``documents`` become ``<name>.json``; names may contain
    ``/`` for sub-folders. The manifest records kind, schema version, config, package version
    and each file's SHA-256. The whole folder is renamed into place at the end.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"bundle {target} exists and overwrite=False")
    arrays = dict(arrays or {})
    documents = dict(documents or {})
    clash = set(arrays) & set(documents)
    if clash:
        raise ValueError(f"names used both as array and document: {sorted(clash)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        files: dict[str, str] = {}
        for name, arr in arrays.items():
            rel = f"{name}.npy"
            atomic_save_npy(tmp_dir / rel, arr)
            files[rel] = sha256_file(tmp_dir / rel)
        for name, doc in documents.items():
            rel = f"{name}.json"
            atomic_write_json(tmp_dir / rel, doc)
            files[rel] = sha256_file(tmp_dir / rel)
        manifest = {
            "schema_version": BUNDLE_SCHEMA_VERSION,
            "kind": kind,
            "reprlab_version": _package_version(),
            "config": to_jsonable(dict(config or {})),
            "files": files,
        }
        atomic_write_json(tmp_dir / MANIFEST, manifest)
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(tmp_dir, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp_dir, target)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return target


class Bundle:
    """A loaded artifact bundle: ``manifest``, lazy ``array(name)`` and ``document(name)``."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self._cache: dict[str, Any] = {}

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def config(self) -> dict:
        return self.manifest.get("config", {})

    def names(self) -> list[str]:
        """Names of all arrays and documents in the bundle (without extension)."""
        return sorted(f.rsplit(".", 1)[0] for f in self.manifest["files"])

    def has(self, name: str) -> bool:
        return f"{name}.npy" in self.manifest["files"] or f"{name}.json" in self.manifest["files"]

    def array(self, name: str) -> np.ndarray:
        rel = f"{name}.npy"
        if rel not in self.manifest["files"]:
            raise KeyError(f"bundle {self.path} has no array {name!r}; it has {self.names()}")
        if rel not in self._cache:
            self._cache[rel] = load_npy(self.path / rel)
        return self._cache[rel]

    def document(self, name: str) -> Any:
        rel = f"{name}.json"
        if rel not in self.manifest["files"]:
            raise KeyError(f"bundle {self.path} has no document {name!r}; it has {self.names()}")
        if rel not in self._cache:
            self._cache[rel] = json.loads((self.path / rel).read_text())
        return self._cache[rel]


def read_bundle(path: str | os.PathLike, kind: str | None = None, verify: bool = False) -> Bundle:
    """Open a bundle folder; check schema version, ``kind`` and (optionally) file hashes."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"expected a reprlab bundle folder at {p}, found nothing")
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise ValueError(f"{p} is not a reprlab bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{mpath} is not valid JSON: {err}") from err
    version_found = manifest.get("schema_version")
    if version_found != BUNDLE_SCHEMA_VERSION:
        raise ValueError(
            f"{p}: bundle schema version {BUNDLE_SCHEMA_VERSION} expected, found {version_found!r}"
        )
    if kind is not None and manifest.get("kind") != kind:
        raise ValueError(f"{p}: expected a bundle of kind {kind!r}, found {manifest.get('kind')!r}")
    for rel, digest in manifest.get("files", {}).items():
        fp = p / rel
        if not fp.is_file():
            raise ValueError(f"{p}: manifest lists {rel} but the file is missing")
        if verify and sha256_file(fp) != digest:
            raise ValueError(f"{p}: {rel} does not match its SHA-256 in the manifest (corrupt?)")
    return Bundle(p, manifest)
