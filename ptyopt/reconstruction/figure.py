"""``reconstruction.png``: the phase of the summed object and of each slice over the
scanned field of view (colour bars in rad), the strongest probe mode's amplitude and
phase, and the data error per iteration. Drawn with matplotlib's Agg backend (no
display), as the study reports are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ptyopt.metrics import potential_on_fov
from ptyopt.reconstruction import Reconstruction
from ptyopt.study.report.figures import save_figure

_SLICE_COLUMNS = 6


def slice_phases(reconstruction: Reconstruction) -> np.ndarray:
    """Phase [rad] of each slice (S, h, w) over the field of view spanned by the
    initial probe centres, each slice's global phase removed and its phase unwrapped
    where it wraps (:func:`ptyopt.metrics.potential_on_fov` with σ = 1: phase = σ·V)."""
    fov = reconstruction.measurements.geometry.field_of_view()
    return potential_on_fov(np.asarray(reconstruction.state.object), 1.0, fov)


def _image(fig: Figure, ax, image: np.ndarray, extent, title: str, label: str, **style) -> None:
    shown = ax.imshow(image, extent=extent, **style)
    fig.colorbar(shown, ax=ax, label=label, shrink=0.85)
    ax.set_title(title)
    ax.set_xlabel("x [Å]")
    ax.set_ylabel("y [Å]")


def plot_reconstruction(reconstruction: Reconstruction, path: Path) -> Path:
    """Draw the run ``reconstruction`` to ``path`` (PNG); returns the path."""
    state = reconstruction.state
    pixel = reconstruction.measurements.pixel_size_A
    phases = slice_phases(reconstruction)
    n_slices, h, w = phases.shape
    extent = (0.0, w * pixel, h * pixel, 0.0)
    rows = 0 if n_slices == 1 else -(-n_slices // _SLICE_COLUMNS)
    fig = Figure(figsize=(16, 3.8 * (1 + rows)), layout="constrained")
    top, *bottom = fig.subfigures(1 + min(rows, 1), 1, squeeze=False)[:, 0]
    axes = top.subplots(1, 4)
    thickness = sum(state.slice_thicknesses_A)
    about = "unknown thickness" if np.isnan(thickness) else f"{thickness:.1f} Å"
    _image(
        top,
        axes[0],
        phases.sum(axis=0),
        extent,
        f"summed phase, {n_slices} slice{'s' * (n_slices > 1)} ({about})",
        "phase [rad]",
        cmap="magma",
    )
    probe = np.asarray(state.probe)
    power = np.sum(np.abs(probe) ** 2, axis=(-2, -1))
    mode = probe[int(np.argmax(power))]
    n = mode.shape[-1]
    window = (-n / 2 * pixel, n / 2 * pixel, n / 2 * pixel, -n / 2 * pixel)
    share = f" (mode of {power.max() / power.sum():.0%} of the power)" if len(probe) > 1 else ""
    _image(
        top,
        axes[1],
        np.abs(mode),
        window,
        f"probe amplitude{share}",
        "amplitude [√counts]",
        cmap="gray",
    )
    _image(
        top,
        axes[2],
        np.angle(mode),
        window,
        "probe phase",
        "phase [rad]",
        cmap="twilight",
        vmin=-np.pi,
        vmax=np.pi,
    )
    ax = axes[3]
    losses = np.asarray(reconstruction.losses)
    ax.semilogy(np.arange(1, len(losses) + 1), losses, color="C0")
    for start, engine in zip(
        reconstruction.engine_starts[1:], reconstruction.plan.engines[1:], strict=True
    ):
        ax.axvline(start + 0.5, color="0.6", lw=0.8)
        ax.text(start + 1, losses.max(), engine.kind, va="top", fontsize=8, color="0.4")
    ax.set_xlabel("iteration")
    ax.set_ylabel("data error per position")
    ax.set_title(f"{reconstruction.plan.engines[0].kind}: data error")
    if rows:
        slice_axes = bottom[0].subplots(rows, _SLICE_COLUMNS, squeeze=False).ravel()
        limit = float(np.abs(phases).max()) or 1.0
        dz = state.slice_thicknesses_A[0]
        for index, ax in enumerate(slice_axes):
            if index >= n_slices:
                ax.set_axis_off()
                continue
            _image(
                bottom[0],
                ax,
                phases[index],
                extent,
                f"slice {index} ({index * dz:.1f}–{(index + 1) * dz:.1f} Å)",
                "phase [rad]",
                cmap="magma",
                vmin=-limit,
                vmax=limit,
            )
    fig.suptitle(
        f"{reconstruction.dataset.name}: {state.iterations_done} iterations, field of view "
        "spanned by the initial probe positions"
    )
    return save_figure(fig, path)
