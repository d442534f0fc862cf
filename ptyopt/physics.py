"""Electron-optical physics: wavelength, interaction constant, probe, propagator, shifts.

Units: lengths in Å, angles in mrad (aberration azimuths in rad), energy in eV,
spatial frequencies in 1/Å. Arrays are ordered (..., y, x) and unshifted (zero
frequency at index 0) unless a docstring says otherwise.

Conventions match abTEM 1.0, against which they are tested:
- aberration phase χ(α, φ) = 2π/λ · Σ_nm C_nm α^(n+1)/(n+1) · cos(m(φ − φ_nm)) with
  α = λ|k| and φ the azimuth of k measured from +x towards +y;
  the probe in reciprocal space is A(k)·exp(−iχ(k));
- ``C10 = −defocus``: with a positive defocus the crossover lies below the entrance
  surface (χ = −πλΔf|k|² for pure defocus);
- propagator over Δz: exp(−iπλΔz|k|²) times a band limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import jax.numpy as jnp

from ptyopt.precision import SINGLE

# CODATA 2018, as in ase.units / scipy.constants.
PLANCK_J_S = 6.62607015e-34
ELECTRON_MASS_KG = 9.1093837015e-31
ELEMENTARY_CHARGE_C = 1.602176634e-19
SPEED_OF_LIGHT_M_S = 299792458.0

_POLAR_SYMBOL = re.compile(r"^C(\d)(\d)$")

DEFAULT_BANDLIMIT = 2 / 3
"""Propagator band limit as a fraction of the object grid's Nyquist frequency (abTEM's
anti-aliasing aperture): products of up to three band-limited factors stay unaliased."""


def wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength λ = h / sqrt(2 m0 e E (1 + eE/(2 m0 c²))) [Å]."""
    if energy_eV <= 0:
        raise ValueError(f"energy must be positive, got {energy_eV} eV")
    e_joule = ELEMENTARY_CHARGE_C * energy_eV
    momentum = math.sqrt(
        2
        * ELECTRON_MASS_KG
        * e_joule
        * (1 + e_joule / (2 * ELECTRON_MASS_KG * SPEED_OF_LIGHT_M_S**2))
    )
    return PLANCK_J_S / momentum * 1e10


def interaction_constant(energy_eV: float) -> float:
    """σ = 2π m e λ / h² with the relativistic mass m = m0 + eE/c² [rad/(V·Å)].

    A slice of projected potential V [V·Å] has the phase σ·V [rad].
    """
    mass = ELECTRON_MASS_KG + ELEMENTARY_CHARGE_C * energy_eV / SPEED_OF_LIGHT_M_S**2
    lam_m = wavelength_A(energy_eV) * 1e-10
    sigma_per_V_m = 2 * math.pi * mass * ELEMENTARY_CHARGE_C * lam_m / PLANCK_J_S**2
    return sigma_per_V_m * 1e-10


def reconstruction_pixel_size_A(
    energy_eV: float, n_pixels: int, angular_sampling_mrad: float
) -> float:
    """Real-space pixel dx = λ / (N·Δα) [Å] for N detector pixels of pitch Δα [mrad]."""
    return wavelength_A(energy_eV) / (n_pixels * angular_sampling_mrad * 1e-3)


def spatial_frequencies(
    shape: tuple[int, int], sampling_A: float, dtype=SINGLE.real
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(ky, kx) grids of shape ``shape`` [1/Å], unshifted, for a pixel size [Å]."""
    ky = jnp.fft.fftfreq(shape[0], sampling_A, dtype=dtype)
    kx = jnp.fft.fftfreq(shape[1], sampling_A, dtype=dtype)
    return jnp.broadcast_to(ky[:, None], shape), jnp.broadcast_to(kx[None, :], shape)


def aberration_phase(
    shape: tuple[int, int],
    sampling_A: float,
    energy_eV: float,
    aberrations: Mapping[str, float],
    dtype=SINGLE.real,
) -> jnp.ndarray:
    """Aberration phase χ(k) [rad] on an unshifted (ny, nx) grid (see module docstring).

    ``aberrations`` holds polar coefficients ``Cnm`` [Å] and azimuths ``phinm`` [rad].
    """
    lam = wavelength_A(energy_eV)
    ky, kx = spatial_frequencies(shape, sampling_A, dtype)
    alpha = lam * jnp.sqrt(ky**2 + kx**2)
    phi = jnp.arctan2(ky, kx)
    chi = jnp.zeros(shape, dtype)
    for symbol, value in aberrations.items():
        match = _POLAR_SYMBOL.match(symbol)
        if match is None:
            if not re.match(r"^phi\d\d$", symbol):
                raise ValueError(
                    f"unknown aberration {symbol!r}: use polar symbols Cnm (Å) and phinm (rad)"
                )
            continue
        n, m = int(match.group(1)), int(match.group(2))
        if value == 0.0:
            continue
        angle = aberrations.get(f"phi{n}{m}", 0.0)
        chi = chi + value * alpha ** (n + 1) / (n + 1) * jnp.cos(m * (phi - angle))
    return (2 * jnp.pi / lam) * chi


def soft_aperture(
    shape: tuple[int, int],
    sampling_A: float,
    energy_eV: float,
    semiangle_mrad: float,
    dtype=SINGLE.real,
) -> jnp.ndarray:
    """Probe-forming aperture on an unshifted grid: 1 inside α ≤ α_c, 0 outside, with a
    linear edge one detector pixel wide (abTEM's anti-aliased ``soft`` aperture)."""
    lam = wavelength_A(energy_eV)
    ky, kx = spatial_frequencies(shape, sampling_A, dtype)
    alpha = lam * jnp.sqrt(ky**2 + kx**2)
    phi = jnp.arctan2(ky, kx)
    pitch_y = lam / (shape[0] * sampling_A)
    pitch_x = lam / (shape[1] * sampling_A)
    edge = jnp.sqrt((jnp.cos(phi) * pitch_x) ** 2 + (jnp.sin(phi) * pitch_y) ** 2)
    edge = edge.at[0, 0].set(1.0)
    aperture = jnp.clip((semiangle_mrad * 1e-3 - alpha) / edge + 0.5, 0.0, 1.0)
    return aperture.at[0, 0].set(1.0)


def probe_wave(
    shape: tuple[int, int],
    sampling_A: float,
    energy_eV: float,
    semiangle_mrad: float,
    aberrations: Mapping[str, float],
    dtype=SINGLE.complex,
) -> jnp.ndarray:
    """Real-space probe ψ(r) (ny, nx) centred on pixel (ny//2, nx//2), Σ|ψ|² = 1.

    ψ = F⁻¹[A(k)·exp(−iχ(k))], built from the aperture and aberrations.
    """
    real = jnp.finfo(dtype).dtype
    amplitude = soft_aperture(shape, sampling_A, energy_eV, semiangle_mrad, real)
    chi = aberration_phase(shape, sampling_A, energy_eV, aberrations, real)
    reciprocal = amplitude * jnp.exp(-1j * chi).astype(dtype)
    wave = jnp.fft.ifft2(reciprocal, norm="ortho")
    wave = jnp.roll(wave, (shape[0] // 2, shape[1] // 2), axis=(-2, -1))
    return (wave / jnp.sqrt(jnp.sum(jnp.abs(wave) ** 2))).astype(dtype)


def bandlimit_mask(
    shape: tuple[int, int],
    sampling_A: float,
    fraction: float | None = DEFAULT_BANDLIMIT,
    taper: float = 0.01,
    dtype=SINGLE.real,
) -> jnp.ndarray:
    """Band limit on an unshifted grid: 1 below ``fraction`` of the Nyquist frequency,
    0 above, with a raised-cosine edge of width ``taper``/sampling [1/Å] (abTEM's
    anti-aliasing aperture for fraction 2/3, taper 0.01; taper 0 is a hard edge).
    ``fraction=None`` gives ones. Fraction and taper may be traced arrays."""
    if fraction is None:
        return jnp.ones(shape, dtype)
    ky, kx = spatial_frequencies(shape, sampling_A, dtype)
    k = jnp.sqrt(ky**2 + kx**2)
    cutoff = fraction / (2 * sampling_A)
    width = taper / sampling_A
    safe_width = jnp.where(width > 0, width, 1.0)
    edge = 0.5 * (1 + jnp.cos(jnp.pi * (k - cutoff + width) / safe_width))
    return jnp.where(k > cutoff, 0.0, jnp.where(k > cutoff - width, edge, 1.0)).astype(dtype)


def fresnel_propagator(
    shape: tuple[int, int],
    sampling_A: float,
    energy_eV: float,
    thickness_A: float,
    bandlimit: float | None = DEFAULT_BANDLIMIT,
    dtype=SINGLE.complex,
) -> jnp.ndarray:
    """Fresnel propagator P(k) = exp(−iπλΔz|k|²)·band limit, unshifted (ny, nx)."""
    real = jnp.finfo(dtype).dtype
    lam = wavelength_A(energy_eV)
    ky, kx = spatial_frequencies(shape, sampling_A, real)
    phase = -jnp.pi * lam * thickness_A * (ky**2 + kx**2)
    return (jnp.exp(1j * phase) * bandlimit_mask(shape, sampling_A, bandlimit, dtype=real)).astype(
        dtype
    )


def nyquist_angle_mrad(energy_eV: float, sampling_A: float) -> float:
    """Scattering angle λ/(2·dx) [mrad] of the Nyquist frequency of a grid of pixel
    ``sampling_A`` [Å]: the half-width of the detector that gives that pixel."""
    return wavelength_A(energy_eV) / (2 * sampling_A) * 1e3


def fourier_shift_ramp(shifts_px: jnp.ndarray, shape: tuple[int, int]) -> jnp.ndarray:
    """Phase ramps exp(−2πi k·s) that shift an image by ``shifts_px`` (..., 2) pixels
    (y, x) when multiplied onto its unshifted FFT. Returns (..., ny, nx) complex.

    The ramp is separable, exp(−2πi k_y s_y)·exp(−2πi k_x s_x): ny + nx complex
    exponentials per shift and one product per pixel, not ny·nx exponentials."""
    fy = jnp.fft.fftfreq(shape[0], dtype=shifts_px.dtype)
    fx = jnp.fft.fftfreq(shape[1], dtype=shifts_px.dtype)
    ramp_y = jnp.exp(-2j * jnp.pi * shifts_px[..., 0, None] * fy)
    ramp_x = jnp.exp(-2j * jnp.pi * shifts_px[..., 1, None] * fx)
    return ramp_y[..., :, None] * ramp_x[..., None, :]


def probe_radius_A(energy_eV: float, semiangle_mrad: float, defocus_A: float) -> float:
    """Rough radius containing the probe [Å]: geometric defocus blur |Δf|·α plus a few
    diffraction-limited widths λ/α. Used to check that windows hold the probe."""
    alpha = semiangle_mrad * 1e-3
    return abs(defocus_A) * alpha + 3 * wavelength_A(energy_eV) / alpha
