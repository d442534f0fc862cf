"""Plain arrays: a ``.npy`` file, or one dataset of an HDF5 file named as
``FILE.h5:/path/in/file``. They carry no calibration; the metadata supplies it.

Patterns are (scan_y, scan_x, k_y, k_x) or (n_positions, k_y, k_x); positions
(``metadata.positions_A``) are (n_positions, 2) (y, x) [Å], from the same kinds of file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ptyopt.io.source import FileCalibration, SourceScan, import_error

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")


def split_inner_path(text: str) -> tuple[Path, str | None]:
    """``FILE.h5:/inner/path`` → (FILE.h5, "/inner/path"); a plain path → (path, None).
    The split is at the first ``:`` whose left side is an existing file."""
    path = Path(text)
    if path.exists() or ":" not in text:
        return path, None
    for index, char in enumerate(text):
        if char == ":" and Path(text[:index]).is_file():
            return Path(text[:index]), text[index + 1 :] or "/"
    return path, None


def hdf5_datasets(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """Every dataset of an HDF5 file as (path, shape), for messages."""
    found: list[tuple[str, tuple[int, ...]]] = []
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, node: (
                found.append(("/" + name, node.shape)) if isinstance(node, h5py.Dataset) else None
            )
        )
    return found


def read_array(text: str, key: str) -> np.ndarray:
    """The array in ``text`` (a .npy file or ``FILE.h5:/path``); ``key`` names the
    setting in errors. Raises ConfigError naming the file and key."""
    path, inner = split_inner_path(text)
    if not path.is_file():
        raise import_error(path, key, "does not exist")
    if inner is None and path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise import_error(path, key, f"is not a readable .npy file ({err})") from None
    if inner is None:
        raise import_error(
            path,
            key,
            "name the array: a .npy file, or an HDF5 dataset as FILE.h5:/path/in/file",
        )
    try:
        with h5py.File(path, "r") as file:
            node = file.get(inner)
            if not isinstance(node, h5py.Dataset):
                listing = ", ".join(f"{name} {shape}" for name, shape in hdf5_datasets(path))
                problem = "is missing" if node is None else "is a group, not a dataset"
                raise import_error(
                    path, f"{key} {inner}", f"{problem}; the file holds: {listing or 'nothing'}"
                )
            return node[()]
    except OSError as err:
        raise import_error(path, key, f"is not a readable HDF5 file ({err})") from None


def read_plain_source(text: str) -> SourceScan:
    """Patterns from a .npy file or an HDF5 dataset, with no calibration."""
    path, inner = split_inner_path(text)
    patterns = read_array(text, "source")
    return SourceScan(
        patterns=patterns,
        calibration=FileCalibration(),
        kind="npy" if inner is None else "hdf5",
        label=str(path) if inner is None else f"{path}:{inner}",
    )
