"""Fourier resampling of periodic images: a band-limited periodic image held on one
grid, given on another by cropping or zero-padding its centred spectrum."""

from __future__ import annotations

import numpy as np


def fourier_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Periodic images (…, ny, nx) resampled to (…, *shape) by cropping or zero-padding
    their centred spectrum; values (not sums) are preserved, exactly for a band-limited
    periodic image whose band fits both grids."""
    ny, nx = image.shape[-2:]
    spectrum = np.fft.fftshift(np.fft.fft2(image), axes=(-2, -1))
    out = np.zeros((*image.shape[:-2], *shape), complex)
    # overlap of the two centred spectra (zero frequency at n//2 in both)
    dst = [
        slice(max(0, s // 2 - n // 2), max(0, s // 2 - n // 2) + min(n, s))
        for n, s in zip((ny, nx), shape, strict=True)
    ]
    src = [
        slice(max(0, n // 2 - s // 2), max(0, n // 2 - s // 2) + min(n, s))
        for n, s in zip((ny, nx), shape, strict=True)
    ]
    out[..., dst[0], dst[1]] = spectrum[..., src[0], src[1]]
    resampled = np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1)))
    return np.real(resampled) * (shape[0] * shape[1]) / (ny * nx)
