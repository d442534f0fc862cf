"""The metadata of an import: a typed structured config from a YAML file and/or
``metadata.KEY=VALUE`` overrides (the overrides win), every key optional here; what is
required is decided once the source's own calibration is known (:mod:`ptyopt.io.build`).

Units: energy kV, angles mrad (rotation degrees), lengths Å, pixels px; pairs are
(y, x). Paths in a YAML file are relative to that file's folder; on the command line,
to the current directory.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ptyopt.errors import ConfigError
from ptyopt.schema import to_dataclass


@dataclass
class ImportMetadata:
    """What the microscopist knows of an acquisition (``None``: not given).

    name: the dataset's name (default: the source's file name without suffix).
    energy_kV: beam energy [kV]. semiangle_mrad: convergence semi-angle [mrad].
    defocus_A: abTEM's defocus [Å] (C10 = −defocus; positive: crossover below the
    entrance surface). Cs_A: spherical aberration C30 [Å] (default 0).
    scan_shape: (scan_y, scan_x) of a stack of patterns. scan_step_A: raster step [Å], a
    number or (y, x). scan_origin_A: (y, x) position of the first pattern [Å] (default:
    the file's, else 0). scan_rotation_deg: the fast axis's angle from the detector's x
    axis, positive from +x towards +y (default 0; :mod:`ptyopt.io.scan`).
    positions_A: (n, 2) (y, x) scan positions [Å] in a .npy or ``FILE.h5:/path``, in
    place of a raster. detector_mrad_per_px: detector pitch [mrad].
    pattern_centre_px: (y, x) zero frequency in the file's detector pixels (default:
    the file's if it knows it exactly, else the bright-field disc's centre).
    crop_px: crop to a square of N px around the centre. bin: sum b×b pixels (default 1).
    transpose_detector: swap k_y and k_x; flip_detector: reverse the detector rows (k_y)
    after any transpose (both default false). thickness_A: nominal specimen thickness
    [Å]; slices: nominal number of slices. dose_e_per_A2: electron dose [e/Å²] (recorded;
    the patterns are counts as they are). ground_truth: a potential file to score
    against (:mod:`ptyopt.io.ground_truth`).
    """

    name: str | None = None
    energy_kV: float | None = None
    semiangle_mrad: float | None = None
    defocus_A: float | None = None
    Cs_A: float | None = None
    scan_shape: list[int] | None = None
    scan_step_A: Any = None
    scan_origin_A: list[float] | None = None
    scan_rotation_deg: float | None = None
    positions_A: str | None = None
    detector_mrad_per_px: float | None = None
    pattern_centre_px: list[float] | None = None
    crop_px: int | None = None
    bin: int | None = None
    transpose_detector: bool | None = None
    flip_detector: bool | None = None
    thickness_A: float | None = None
    slices: int | None = None
    dose_e_per_A2: float | None = None
    ground_truth: str | None = None


PATH_KEYS = ("positions_A", "ground_truth")
METADATA_KEYS = tuple(f.name for f in fields(ImportMetadata))


@dataclass(frozen=True)
class Metadata:
    """Typed metadata and, for each key given, where it was given (a YAML file's path
    or ``"command line"``), for messages."""

    values: ImportMetadata
    given_in: dict[str, str]

    def where(self, key: str) -> str:
        """`` (from <origin>)`` of a given key, for messages."""
        return f" (from {self.given_in[key]})" if key in self.given_in else ""


def _relative_to(folder: Path, text: str) -> str:
    """A path given in a YAML file, relative to the file's folder unless absolute."""
    return text if Path(text).is_absolute() else str(folder / text)


def load_metadata(yaml_path: str | None, overrides: dict[str, Any]) -> Metadata:
    """Metadata from ``yaml_path`` (keys at its top level) merged with ``overrides``
    (which win). Unknown keys and wrong types raise ConfigError naming the file and
    ``metadata.KEY``."""
    given: dict[str, str] = {}
    values: dict[str, Any] = {}
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"{path}: metadata: does not exist")
        try:
            loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as err:  # yaml.YAMLError and OmegaConf's errors
            message = " ".join(str(err).split())
            raise ConfigError(f"{path}: metadata: is not a YAML mapping ({message})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: metadata: is not a YAML mapping of metadata keys")
        for key, value in loaded.items():
            if key in PATH_KEYS and isinstance(value, str):
                value = _relative_to(path.parent, value)
            values[key] = value
            given[str(key)] = str(path)
        try:
            to_dataclass(ImportMetadata, values, "metadata")
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    for key, value in overrides.items():
        values[key] = value
        given[key] = "command line"
    try:
        typed = to_dataclass(ImportMetadata, values, "metadata")
    except ConfigError as err:
        raise ConfigError(f"command line: {err}") from None
    return Metadata(typed, given)
