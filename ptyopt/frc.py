"""Fourier ring correlation (FRC) of a reconstruction with the ground truth, its
thresholds and its scalar summaries (DESIGN §12).

Images (h, w) with pixel ``sampling_A`` [Å], each apodised by a Hann window; frequencies
in 1/Å. The scores use rings as wide as the crystal's reciprocal-lattice spacing
(:func:`reciprocal_spacing_per_A`), never narrower than 2 Fourier pixels
(:func:`frc_rings`). Summaries of the curve (:func:`frc`):

- the resolutions where it falls below 0.5 and where it falls below the half-bit curve
  (:func:`halfbit_threshold`), from ring 1 on: ring 0 holds the gauge-emptied zero
  frequency (:func:`frc_resolution_A`);
- ``frc_area``, its mean up to Nyquist (:func:`frc_area`).

The FRC cannot see a pure low-pass blur (a smooth radial filter scales a whole ring,
and a correlation ignores scale): it tells blur only where the blurred signal sinks
below the noise. Never report it alone. The resolutions saturate at 2 pixels when the
information limit lies beyond Nyquist (the ``fine`` dataset samples finer than the
shipped ones). Pure numpy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def reciprocal_spacing_per_A(
    cell: np.ndarray, sampling_A: float, power_fraction: float = 0.9
) -> float:
    """Reciprocal-lattice spacing [1/Å] of a periodic ``cell`` (…, ny, nx), the coarser
    of the two axes. A supercell of p repeats along an axis puts its spectral power on
    multiples of p there: the largest p holding ``power_fraction`` of the non-constant
    power gives the spacing p/(n·dx) (a thermal mean keeps ~97 % there, not 100 %)."""
    power = (np.abs(np.fft.fft2(cell)) ** 2).reshape(-1, *cell.shape[-2:]).sum(axis=0)
    power[0, 0] = 0.0
    spacings = []
    for axis, n in enumerate(cell.shape[-2:]):
        marginal, index = power.sum(axis=1 - axis), np.fft.fftfreq(n, 1.0 / n).round().astype(int)
        repeats = [
            p
            for p in range(1, n // 2 + 1)
            if marginal[index % p == 0].sum() >= power_fraction * marginal.sum()
        ]
        spacings.append(max(repeats, default=1) / (n * sampling_A))
    return max(spacings)


@lru_cache(maxsize=16)
def frc_rings(
    shape: tuple[int, int], sampling_A: float, ring_width_per_A: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings of the FRC of (h, w) images with pixel ``sampling_A`` [Å]: ring i holds the
    frequencies |k| nearest to i·Δk up to Nyquist 1/(2·dx); Δk = ``ring_width_per_A``
    [1/Å], never below 2 Fourier pixels (the Hann window's resolution), also the
    default. Returns (frequency (R,) [1/Å], ring of each Fourier pixel (h·w,), with R
    for pixels beyond the last ring, pixels per ring (R,))."""
    h, w = shape
    k = np.hypot(
        *np.meshgrid(np.fft.fftfreq(h, sampling_A), np.fft.fftfreq(w, sampling_A), indexing="ij")
    )
    width = max(ring_width_per_A or 0.0, 2.0 / (min(h, w) * sampling_A))
    rings = int(0.5 / sampling_A / width) + 1
    ring = np.minimum(np.rint(k / width).astype(int).ravel(), rings)
    pixels = np.bincount(ring, minlength=rings + 1)[:rings]
    frequency = width * np.arange(rings)
    for array in (frequency, ring, pixels):
        array.setflags(write=False)
    return frequency, ring, pixels


def frc(
    a: np.ndarray, b: np.ndarray, sampling_A: float, ring_width_per_A: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images (h, w) with pixel ``sampling_A`` [Å],
    each apodised by a Hann window, on the rings of :func:`frc_rings`. Returns
    (frequency (R,) [1/Å], FRC (R,), NaN for an empty ring or one without power)."""
    h, w = a.shape
    frequency, ring, _ = frc_rings((h, w), float(sampling_A), ring_width_per_A)
    window = np.outer(np.hanning(h), np.hanning(w))
    fa, fb = np.fft.fft2(a * window).ravel(), np.fft.fft2(b * window).ravel()

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, values, minlength=len(frequency) + 1)[: len(frequency)]

    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = ring_sum(np.real(fa * np.conj(fb))) / np.sqrt(
            ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2)
        )
    return frequency, correlation


def halfbit_threshold(ring_pixels: np.ndarray) -> np.ndarray:
    """Half-bit threshold curve (van Heel & Schatz 2005) for rings of n pixels (R,):
    T = (0.2071 + 1.9102/√n)/(1.2071 + 0.9102/√n) (1 at n = 1, → 0.1716 for large n).

    It was derived for the FRC between two half-datasets with independent noise; ours
    correlates a reconstruction with the noise-free ground truth, whose FRC is about the
    square root of the half-dataset one where the noise is independent, so the crossing
    is a comparative figure (finer is better), not a claim of half a bit per pixel."""
    root = np.sqrt(np.asarray(ring_pixels, dtype=np.float64))
    return (0.2071 * root + 1.9102) / (1.2071 * root + 0.9102)


def frc_resolution_A(
    frequency_per_A: np.ndarray, correlation: np.ndarray, threshold: float | np.ndarray = 0.5
) -> float:
    """Resolution [Å] = 1/k where the FRC first falls below ``threshold`` (a number, or
    a curve (R,) per ring) from ring 1 on, linear between rings (an empty ring counts as
    0): ring 0 (|k| < Δk/2) holds the zero frequency, which the gauge removal empties
    and where a crystal has no lattice signal, so its noise does not decide. inf if
    ring 1 is already below; 1/(finest ring) — a bound — if the FRC never falls below."""
    margin = np.nan_to_num(correlation, nan=0.0) - np.broadcast_to(threshold, correlation.shape)
    below = np.flatnonzero(margin[1:] < 0) + 1
    if below.size == 0:
        return float(1.0 / frequency_per_A[-1])
    i = below[0]
    if i == 1:
        return float("inf")
    crossing = frequency_per_A[i - 1] + margin[i - 1] / (margin[i - 1] - margin[i]) * (
        frequency_per_A[i] - frequency_per_A[i - 1]
    )
    return float(1.0 / crossing)


def frc_area(frequency_per_A: np.ndarray, correlation: np.ndarray, sampling_A: float) -> float:
    """∫₀^{k_N} FRC dk / k_N, k_N = 1/(2·``sampling_A``) the Nyquist frequency [1/Å]:
    each ring's correlation held over the band of frequencies nearest to it (the last
    up to k_N), an empty ring counting 0. 1 for a perfect reconstruction, ~0 for noise."""
    nyquist = 0.5 / sampling_A
    width = frequency_per_A[1] - frequency_per_A[0] if len(frequency_per_A) > 1 else nyquist
    edges = np.clip(np.append(frequency_per_A - width / 2, nyquist), 0.0, nyquist)
    return float(np.nan_to_num(correlation, nan=0.0) @ np.diff(edges) / nyquist)
