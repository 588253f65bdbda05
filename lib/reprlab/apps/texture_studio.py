"""Texture studio: live texture synthesis from a single layer of random filters (thesis ch. 3).

A Panel component around :func:`reprlab.textures.synthesis.synthesize`: pick a bundled texture or
upload one, choose which filter sizes of the Random-Multiscale bank to use (paper section 2:
3, 5, 7, 11, 15, 23, 37, 55), how many maps per scale, the nonlinearity and the image size, then
press Start. L-BFGS-B minimises the Gram loss of eq. (5) in a background thread; the synthesised
image, the loss curve, the iteration counter and the elapsed time update live, and Stop cancels the run
within about one loss evaluation.

Threading model: the worker thread only writes into a lock-protected :class:`_LiveState`; a Panel
periodic callback on the UI thread (:meth:`TextureStudio.refresh`) copies the latest snapshot into
the plots. Widgets are therefore only ever touched from the UI thread and the page never waits for
the optimiser. The same object works under ``panel serve`` and inside a JupyterLab cell::

    from reprlab.apps.texture_studio import TextureStudio
    TextureStudio().panel()
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn

FILTER_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23, 37, 55)
NONLINEARITIES: tuple[str, ...] = ("relu", "sigmoid", "none")
UPLOAD_PREFIX = "upload: "
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
REFRESH_MS = 300
PLOT_SIZE = 300

# Defaults sized so that a 2-core CPU shows a recognisable texture within seconds.
DEFAULTS: dict[str, Any] = dict(
    sizes=(3, 5, 7, 11, 15, 23),
    maps_per_scale=32,
    nonlinearity="relu",
    image_size=96,
    seed=0,
    iters=300,
    grayscale=False,
)


# Panel >= 1.9 renames widget/button options (name -> label, button_type -> color,
# button_style -> variant); older Panel only knows the old names.
_NEW_WIDGET_API = "label" in pn.widgets.Widget.param and "variant" in pn.widgets.Button.param


def _opts(label: str | None = None, color: str | None = None, variant: str | None = None) -> dict:
    """Widget keyword arguments spelled for the installed Panel version."""
    new = _NEW_WIDGET_API
    kw: dict[str, str] = {}
    if label is not None:
        kw["label" if new else "name"] = label
    if color is not None:
        kw["color" if new else "button_type"] = color
    if variant is not None:
        kw["variant" if new else "button_style"] = variant
    return kw


def _to_hwc(image: Any) -> np.ndarray:
    """(C,H,W) or (N,C,H,W) tensor/array in [0,1] -> (H,W,3) float array for display."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape (C,H,W), got shape {arr.shape}")
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return np.clip(np.transpose(arr[:3], (1, 2, 0)), 0.0, 1.0)


def _rgb(data: np.ndarray) -> hv.RGB:
    h, w = data.shape[:2]
    return hv.RGB(data, bounds=(0, 0, w, h), kdims=["x", "y"])


def _loss_curves(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> hv.Overlay:
    """Loss of every evaluation (L-BFGS-B line-search trials included) and the best so far."""
    evals, losses, best = data
    each = hv.Curve((evals, losses), kdims=["evaluation"], vdims=["loss"], label="each evaluation")
    low = hv.Curve((evals, best), kdims=["evaluation"], vdims=["loss"], label="best so far")
    return each.opts(color="#b0b0b0", line_width=1, backend="bokeh") * low.opts(
        color="#1f77b4", line_width=2.5, backend="bokeh"
    )


@dataclass
class _LiveState:
    """What the worker thread publishes; read by the UI thread under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    evals: list[int] = field(default_factory=list)  # loss evaluations (the callback's step)
    losses: list[float] = field(default_factory=list)  # eq. (5) loss at each evaluation
    best: list[float] = field(default_factory=list)  # lowest loss so far
    iteration: int = 0  # completed L-BFGS-B iterations
    image: np.ndarray | None = None  # image with the lowest loss so far, (H, W, 3)
    version: int = 0
    started: float = 0.0
    seconds: float | None = None
    finished: bool = False
    stopped: bool = False
    error: str | None = None
    phase: str = "preparing"
    result: Any = None


class TextureStudio:
    """Interactive texture synthesis (Panel component). Call :meth:`panel` to get the layout.

    The parameters set the widgets' initial values: ``texture`` a bundled texture name
    (default the first), ``sizes`` the filter sizes of the Random-Multiscale bank in use,
    ``maps_per_scale`` random filters per size, ``nonlinearity`` 'relu' | 'sigmoid' | 'none',
    ``image_size`` the side of the reference and the synthesis (pixels), ``seed`` both the
    filters' and the starting noise's seed, ``iters`` the L-BFGS-B iteration limit.
    """

    def __init__(
        self,
        texture: str | None = None,
        sizes: tuple[int, ...] | list[int] = DEFAULTS["sizes"],
        maps_per_scale: int = DEFAULTS["maps_per_scale"],
        nonlinearity: str = DEFAULTS["nonlinearity"],
        image_size: int = DEFAULTS["image_size"],
        seed: int = DEFAULTS["seed"],
        iters: int = DEFAULTS["iters"],
        grayscale: bool = DEFAULTS["grayscale"],
    ) -> None:
        import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh plot options)

        from reprlab.textures.images import bundled_textures

        bad = [s for s in sizes if s not in FILTER_SIZES]
        if bad:
            raise ValueError(f"filter sizes must be among {FILTER_SIZES}, got {bad}")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        names = list(bundled_textures())
        if not names:
            raise ValueError("no bundled textures found: reprlab.textures.bundled_textures() is empty")
        if texture is None:
            texture = names[0]
        elif texture not in names:
            raise ValueError(f"texture must be one of the bundled textures {names}, got {texture!r}")

        self._uploads: dict[str, tuple[str, bytes]] = {}
        self._live = _LiveState(finished=True)
        self._shown_version = -1
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._poller: Any = None
        self._target: Any = None
        self._final_image: np.ndarray | None = None
        self._run_config: dict[str, Any] = {}

        # --- controls -------------------------------------------------------------------------
        self.texture = pn.widgets.Select(**_opts("Texture"), options=names, value=texture)
        self.upload = pn.widgets.FileInput(
            **_opts("Upload"), accept=".png,.jpg,.jpeg,.bmp,.tif,.tiff,.gif,.webp", multiple=False
        )
        self.sizes = pn.widgets.CheckButtonGroup(
            **_opts("Filter sizes", "primary", "outline"), options=list(FILTER_SIZES),
            value=list(sizes), sizing_mode="stretch_width",
        )
        self.maps_per_scale = pn.widgets.IntSlider(
            **_opts("Maps per scale"), start=4, end=128, step=4, value=int(maps_per_scale)
        )
        self.nonlinearity = pn.widgets.RadioButtonGroup(
            **_opts("Nonlinearity", "primary", "outline"), options=list(NONLINEARITIES),
            value=nonlinearity,
        )
        self.image_size = pn.widgets.IntSlider(
            **_opts("Image size (px)"), start=32, end=256, step=8, value=int(image_size)
        )
        self.seed = pn.widgets.IntInput(**_opts("Seed"), value=int(seed), start=0, width=120)
        self.iters = pn.widgets.IntInput(
            **_opts("Max L-BFGS-B iterations"), value=int(iters), start=1, end=100_000, width=150
        )
        self.grayscale = pn.widgets.Checkbox(**_opts("Grayscale"), value=bool(grayscale))
        self.start_button = pn.widgets.Button(**_opts("Start", "success"), width=120)
        self.stop_button = pn.widgets.Button(
            **_opts("Stop", "danger"), width=120, disabled=True
        )
        self.download = pn.widgets.FileDownload(
            callback=self._png_bytes, filename="synthesis.png",
            **_opts("Download synthesis (PNG)", "light"), disabled=True, sizing_mode="stretch_width",
        )

        # --- outputs --------------------------------------------------------------------------
        self.message = pn.pane.Alert(
            "Pick a texture and press **Start**.", alert_type="info", sizing_mode="stretch_width"
        )
        self.status = pn.pane.Markdown(self._status_text(), sizing_mode="stretch_width")
        self.progress = pn.indicators.Progress(
            **_opts("Progress"), value=0, max=int(iters), sizing_mode="stretch_width", height=12
        )
        placeholder = np.full((int(image_size), int(image_size), 3), 0.5)
        self._reference_pipe = hv.streams.Pipe(data=placeholder)
        self._synthesis_pipe = hv.streams.Pipe(data=placeholder.copy())
        self._loss_pipe = hv.streams.Pipe(data=(np.zeros(0), np.zeros(0), np.zeros(0)))
        image_opts = dict(
            width=PLOT_SIZE, height=PLOT_SIZE, data_aspect=1, xlabel="x (px)", ylabel="y (px)",
            toolbar=None, framewise=True, fontscale=1.1,
        )
        self.reference_view = hv.DynamicMap(_rgb, streams=[self._reference_pipe]).opts(
            title="Reference", backend="bokeh", **image_opts
        )
        self.synthesis_view = hv.DynamicMap(_rgb, streams=[self._synthesis_pipe]).opts(
            title="Synthesis", backend="bokeh", **image_opts
        )
        self.loss_view = hv.DynamicMap(_loss_curves, streams=[self._loss_pipe]).opts(
            {
                "Curve": dict(logy=True, framewise=True, show_grid=True),
                "Overlay": dict(
                    title="Loss (eq. 5)", logy=True, width=PLOT_SIZE + 70, height=PLOT_SIZE,
                    xlabel="loss evaluation", ylabel="Gram loss (log scale)", framewise=True,
                    toolbar=None, fontscale=1.1, show_grid=True, legend_position="top_right",
                ),
            },
            backend="bokeh",
        )

        self.start_button.on_click(lambda _event: self.start())
        self.stop_button.on_click(lambda _event: self.stop())
        self.upload.param.watch(self._on_upload, ["value"])
        self.texture.param.watch(self._on_reference_change, ["value"])
        self.image_size.param.watch(self._on_reference_change, ["value"])
        self.grayscale.param.watch(self._on_reference_change, ["value"])
        self.iters.param.watch(lambda e: setattr(self.progress, "max", max(1, int(e.new))), ["value"])
        self._layout: pn.viewable.Viewable | None = None
        self.show_reference()

    # ------------------------------------------------------------------------------- layout --
    def panel(self) -> pn.viewable.Viewable:
        """The component's layout (controls left, reference/synthesis/loss right)."""
        if self._layout is None:
            controls = pn.Column(
                "### Texture",
                self.texture,
                pn.pane.Markdown("or upload a PNG/JPEG image:", margin=(0, 10)),
                self.upload,
                "### Model (random filters)",
                pn.pane.Markdown("Filter sizes (f×f, random Glorot-uniform):", margin=(0, 10)),
                self.sizes,
                self.maps_per_scale,
                pn.pane.Markdown("Nonlinearity:", margin=(0, 10)),
                self.nonlinearity,
                "### Synthesis",
                self.image_size,
                pn.Row(self.seed, self.iters),
                self.grayscale,
                pn.Row(self.start_button, self.stop_button),
                self.download,
                width=320,
            )
            plots = pn.Row(
                pn.pane.HoloViews(self.reference_view, backend="bokeh"),
                pn.pane.HoloViews(self.synthesis_view, backend="bokeh"),
                pn.pane.HoloViews(self.loss_view, backend="bokeh"),
            )
            main = pn.Column(
                "## Texture studio: synthesis from one layer of random filters",
                self.message,
                self.status,
                self.progress,
                plots,
                sizing_mode="stretch_width",
            )
            self._layout = pn.Row(controls, main, sizing_mode="stretch_width")
            doc = pn.state.curdoc
            if doc is not None and doc.session_context is not None:
                pn.state.on_session_destroyed(lambda _ctx: self.stop())
        return self._layout

    def __panel__(self) -> pn.viewable.Viewable:
        return self.panel()

    # ------------------------------------------------------------------------------ helpers --
    def _say(self, text: str, kind: str = "info") -> None:
        self.message.object = text
        self.message.alert_type = kind

    def _status_text(self) -> str:
        live = self._live
        with live.lock:
            iteration, n_evals = live.iteration, len(live.evals)
            loss = live.best[-1] if live.best else None
            started, seconds = live.started, live.seconds
            finished, stopped, phase, error = live.finished, live.stopped, live.phase, live.error
        if not started:
            return "**Iteration** 0 · **evaluations** 0 · **best loss** – · **elapsed** 0.0 s · idle"
        elapsed = seconds if seconds is not None else time.monotonic() - started
        if not finished:
            state = "stopping…" if self._stop_event.is_set() else phase
        else:
            state = "failed" if error else "stopped" if stopped else "done"
        loss_txt = f"{loss:.4g}" if loss is not None else "–"
        total = self._run_config.get("iters", self.iters.value)
        return (
            f"**Iteration** {iteration} / {total} · **evaluations** {n_evals} · "
            f"**best loss** {loss_txt} · **elapsed** {elapsed:.1f} s · {state}"
        )

    def _texture_source(self, label: str) -> str:
        """Path or bundled name for ``label``; uploads are written to a temporary file."""
        if label.startswith(UPLOAD_PREFIX) and label in self._uploads:
            filename, data = self._uploads[label]
            suffix = Path(filename).suffix.lower() or ".png"
            fd, path = tempfile.mkstemp(prefix="reprlab_upload_", suffix=suffix)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return path
        return label

    def _load(self, label: str, size: int | None, grayscale: bool):
        from reprlab.textures.images import load_texture

        source = self._texture_source(label)
        if source == label:
            return load_texture(source, size=size, grayscale=grayscale)
        try:  # an upload: report errors under the uploaded file's name, not the temp path
            return load_texture(source, size=size, grayscale=grayscale)
        except Exception as exc:
            raise ValueError(str(exc).replace(source, self._uploads[label][0])) from None
        finally:
            Path(source).unlink(missing_ok=True)

    def show_reference(self) -> bool:
        """Load the selected texture at the chosen size and show it; False (and a message) on error."""
        try:
            target = self._load(self.texture.value, int(self.image_size.value), self.grayscale.value)
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a message
            self._say(f"Could not load texture **{self.texture.value}**: {exc}", "danger")
            return False
        self._target = target
        self._reference_pipe.send(_to_hwc(target))
        return True

    def _on_reference_change(self, _event: Any = None) -> None:
        if not self.running and self.show_reference():
            c, h, w = self._target.shape
            self._say(f"Reference **{self.texture.value}**: {w}×{h} px, {c} channel(s).", "info")

    def _on_upload(self, event: Any) -> None:
        data, filename = event.new, self.upload.filename or "upload"
        if data is None:
            return
        if isinstance(data, list):  # pragma: no cover - multiple=False
            data, filename = data[0], filename[0]
        name = Path(str(filename)).name
        if not data:
            self._say(f"Upload **{name}** is empty: expected a PNG or JPEG image.", "danger")
            return
        if len(data) > MAX_UPLOAD_BYTES:
            self._say(
                f"Upload **{name}** is {len(data) / 1e6:.1f} MB; the limit is "
                f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB.", "danger",
            )
            return
        label = UPLOAD_PREFIX + name
        self._uploads[label] = (name, bytes(data))
        try:
            self._load(label, int(self.image_size.value), self.grayscale.value)
        except Exception as exc:  # noqa: BLE001 - a bad upload must become a message, not a trace
            del self._uploads[label]
            self._say(f"Could not use upload **{name}**: {exc}", "danger")
            return
        options = list(self.texture.options)
        if label not in options:
            self.texture.options = options + [label]
        if self.texture.value == label:
            self._on_reference_change()
        else:
            self.texture.value = label  # triggers _on_reference_change

    def _png_bytes(self) -> io.BytesIO:
        from PIL import Image

        image = self._final_image if self._final_image is not None else self._live.image
        buf = io.BytesIO()
        if image is not None:
            Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
        buf.seek(0)
        return buf

    # ------------------------------------------------------------------------------ control --
    @property
    def running(self) -> bool:
        """True while a synthesis thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def displayed_image(self) -> np.ndarray:
        """The (H,W,3) array currently shown as the synthesis."""
        return np.asarray(self._synthesis_pipe.data)

    @property
    def displayed_losses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(evaluation, loss, best loss so far) arrays currently shown in the loss plot."""
        evals, losses, best = self._loss_pipe.data
        return np.asarray(evals), np.asarray(losses), np.asarray(best)

    @property
    def result(self) -> Any:
        """The last finished :class:`~reprlab.textures.synthesis.SynthesisResult`, or None."""
        return self._run_config.get("result")

    def config(self) -> dict[str, Any]:
        """The synthesis settings currently chosen in the widgets."""
        return dict(
            texture=self.texture.value,
            sizes=tuple(sorted(int(s) for s in self.sizes.value)),
            maps_per_scale=int(self.maps_per_scale.value),
            nonlinearity=str(self.nonlinearity.value),
            image_size=int(self.image_size.value),
            seed=int(self.seed.value),
            iters=int(self.iters.value),
            grayscale=bool(self.grayscale.value),
        )

    def start(self) -> bool:
        """Start a synthesis in a background thread (what the Start button calls).

        Returns False, with a message in the page, when the settings are invalid or a run is
        already going.
        """
        if self.running:
            self._say("A synthesis is already running; press **Stop** first.", "warning")
            return False
        cfg = self.config()
        if not cfg["sizes"]:
            self._say("Select at least one filter size.", "danger")
            return False
        if cfg["iters"] < 1:
            self._say("Max L-BFGS-B iterations must be at least 1.", "danger")
            return False
        if not self.show_reference():
            return False
        target = self._target

        self._stop_event = threading.Event()
        self._live = _LiveState(started=time.monotonic(), phase="building filters")
        self._shown_version = -1
        self._final_image = None
        self._run_config = dict(cfg)
        self._loss_pipe.send((np.zeros(0), np.zeros(0), np.zeros(0)))
        self.progress.max = cfg["iters"]
        self.progress.value = 0
        self._set_running_ui(True)
        n_maps = cfg["maps_per_scale"] * len(cfg["sizes"])
        self._say(
            f"Synthesising **{cfg['texture']}** at {cfg['image_size']} px with {n_maps} random "
            f"filters (sizes {', '.join(map(str, cfg['sizes']))}; {cfg['nonlinearity']}).",
            "info",
        )
        self._thread = threading.Thread(
            target=self._worker, args=(target, cfg, self._live, self._stop_event),
            name="texture-studio-synthesis", daemon=True,
        )
        self._thread.start()
        if self._poller is None:
            self._poller = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS)
        return True

    def stop(self) -> None:
        """Ask the running synthesis to stop (returns at once; the thread ends within ~1 step)."""
        if self.running:
            self._stop_event.set()
            self.status.object = self._status_text()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the synthesis thread, then refresh the display; True if it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        self.refresh()
        return not self.running

    def _set_running_ui(self, running: bool) -> None:
        self.start_button.disabled = running
        self.stop_button.disabled = not running
        for widget in (self.texture, self.upload, self.sizes, self.maps_per_scale,
                       self.nonlinearity, self.image_size, self.seed, self.iters, self.grayscale):
            widget.disabled = running
        self.download.disabled = running or self._final_image is None

    @staticmethod
    def _worker(target: Any, cfg: dict[str, Any], live: _LiveState, stop: threading.Event) -> None:
        """Background thread: build the model, run L-BFGS-B, publish progress into ``live``."""
        try:
            from reprlab.textures.filterbanks import random_multiscale_bank
            from reprlab.textures.model import TextureModel
            from reprlab.textures.synthesis import synthesize

            bank = random_multiscale_bank(
                sizes=cfg["sizes"], maps_per_scale=cfg["maps_per_scale"],
                in_channels=int(target.shape[0]), seed=cfg["seed"],
            )
            model = TextureModel(bank, nonlinearity=cfg["nonlinearity"])
            with live.lock:
                live.phase = "running"

            def callback(step: int, loss: float, state: dict[str, Any]) -> bool:
                loss = float(loss)
                improved = not live.best or loss < live.best[-1]
                image = state.get("image") if improved else None
                snapshot = _to_hwc(image) if image is not None else None
                with live.lock:
                    live.evals.append(int(step))
                    live.losses.append(loss)
                    live.best.append(loss if improved else live.best[-1])
                    live.iteration = int(state.get("iteration", live.iteration))
                    if snapshot is not None:
                        live.image = snapshot
                    live.version += 1
                return stop.is_set()

            result = synthesize(
                target, model, iters=cfg["iters"], seed=cfg["seed"], callback=callback,
                progress=False,
            )
            final = _to_hwc(result.images)
            with live.lock:
                live.image = final
                live.iteration = int(sum(np.atleast_1d(result.iterations)))
                live.seconds = float(result.seconds)
                live.stopped = bool(result.stopped)
                live.result = result
                live.version += 1
        except Exception as exc:  # noqa: BLE001 - shown in the page by refresh()
            with live.lock:
                live.error = f"{type(exc).__name__}: {exc}"
                live.seconds = time.monotonic() - live.started
        finally:
            with live.lock:
                live.finished = True
                live.version += 1

    def refresh(self) -> None:
        """Copy the worker's latest snapshot into the plots (UI thread; periodic callback)."""
        live = self._live
        with live.lock:
            version = live.version
            changed = version != self._shown_version
            if changed:
                image = live.image
                evals = np.asarray(live.evals, dtype=np.int64)
                losses = np.asarray(live.losses, dtype=np.float64)
                best = np.asarray(live.best, dtype=np.float64)
                iteration = live.iteration
                finished, stopped, error = live.finished, live.stopped, live.error
                result = live.result
        self.status.object = self._status_text()
        if not changed:
            return
        self._shown_version = version
        if image is not None:
            self._synthesis_pipe.send(image)
        if len(evals):
            self._loss_pipe.send((evals, losses, best))
        self.progress.value = int(min(iteration, self.progress.max))
        if finished and self._run_config and "done" not in self._run_config:
            self._run_config["done"] = True
            self._run_config["result"] = result
            self._final_image = image
            self._set_running_ui(False)
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            if error is not None:
                self._say(f"Synthesis failed: {error}", "danger")
            elif result is not None:
                what = "Stopped" if stopped else "Finished"
                first, last = (losses[0], best[-1]) if len(best) else (np.nan, np.nan)
                self._say(
                    f"{what} after {iteration} iterations ({len(evals)} loss evaluations) in "
                    f"{result.seconds:.1f} s; loss {first:.4g} → {last:.4g}.",
                    "success" if not stopped else "warning",
                )
