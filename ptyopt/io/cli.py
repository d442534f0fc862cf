"""``python -m ptyopt import source=PATH out=DATASET.h5 [metadata=META.yaml]
[metadata.KEY=VALUE ...]``: write a validated ptyopt dataset file from a user's data.

Arguments are ``key=value`` (OmegaConf dotlist) typed by :class:`ImportArguments`;
``metadata.KEY=VALUE`` sets one metadata key (:class:`~ptyopt.io.metadata.ImportMetadata`)
over the YAML file's. Nothing is written until everything is validated; the file is
written atomically (:func:`ptyopt.data.file.write_dataset`).
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf

from ptyopt.errors import ConfigError
from ptyopt.schema import to_dataclass

USAGE = """\
python -m ptyopt import source=PATH out=DATASET.h5 [metadata=META.yaml] [metadata.KEY=VALUE ...]

  source    patterns: a .npy file or an HDF5 dataset FILE.h5:/path, (scan_y, scan_x, k_y, k_x)
            or (n, k_y, k_x); an abTEM DiffractionPatterns zarr store; or a detector file
            rosettasciio reads (EMPAD .xml, Merlin .mib, .emd, .hspy, ...)
  out       the ptyopt dataset file to write
  metadata  a YAML file of metadata keys; metadata.KEY=VALUE overrides one of them
{keys}
See README.md, "Bring your own data: import"."""


@dataclass
class ImportArguments:
    """source: the data to import; out: the dataset file to write; metadata: a YAML file
    of metadata keys (``None``: none)."""

    source: str = MISSING
    out: str = MISSING
    metadata: str | None = None


def parse_arguments(argv: list[str]) -> tuple[ImportArguments, dict[str, Any]]:
    """Arguments and the metadata overrides (``metadata.`` stripped) of ``argv``."""
    top, overrides = [], []
    for argument in argv:
        if "=" not in argument:
            raise ConfigError(f"command line: {argument!r} is not key=value")
        (overrides if argument.startswith("metadata.") else top).append(argument)
    try:
        top_values = OmegaConf.to_container(OmegaConf.from_dotlist(top))
        override_values = OmegaConf.to_container(OmegaConf.from_dotlist(overrides))
    except Exception as err:  # the dotlist grammar's errors
        raise ConfigError(f"command line: {str(err).splitlines()[0]}") from None
    try:
        arguments = to_dataclass(ImportArguments, top_values)
    except ConfigError as err:
        raise ConfigError(f"command line: {err}") from None
    return arguments, override_values.get("metadata", {})


def run(argv: list[str]) -> None:
    """Import, validate and write; print what was done. Raises ConfigError."""
    from ptyopt.io.metadata import load_metadata

    arguments, overrides = parse_arguments(argv)
    metadata = load_metadata(arguments.metadata, overrides)
    from ptyopt.data.file import write_dataset  # JAX and h5py only once the arguments are valid
    from ptyopt.io.build import import_dataset

    imported = import_dataset(arguments.source, metadata)
    path = write_dataset(arguments.out, imported.dataset)
    d = imported.dataset
    reach = d.detector_shape[0] / 2 * d.angular_sampling_mrad
    print(f"imported {arguments.source} → {path}")
    for note in imported.notes:
        print(f"  {note}")
    print(
        f"  {d.n_positions} positions, {d.detector_shape[0]}² px of "
        f"{d.angular_sampling_mrad:.4g} mrad (to {reach:.1f} mrad), "
        f"centre ({d.pattern_centre_px[0]:.3f}, {d.pattern_centre_px[1]:.3f}) px, "
        f"pixel {d.pixel_size_A:.4f} Å, {d.optics.energy_eV / 1e3:g} kV, "
        f"{d.optics.semiangle_mrad:g} mrad, defocus {-d.optics.aberrations['C10']:g} Å"
        + ("" if d.ground_truth is None else f", ground truth {d.ground_truth.potential_V_A.shape}")
    )


def main(argv: list[str]) -> int:
    """Entry point of ``python -m ptyopt import``; the exit status (2: bad input)."""
    from ptyopt.data.file import DatasetFileError
    from ptyopt.io.metadata import METADATA_KEYS

    if not argv or argv[0] in ("-h", "--help"):
        keys = textwrap.fill(
            "keys: " + ", ".join(METADATA_KEYS),
            90,
            initial_indent=" " * 12,
            subsequent_indent=" " * 18,
        )
        print(USAGE.format(keys=keys))
        return 0 if argv else 2
    try:
        run(argv)
    except (ConfigError, DatasetFileError) as err:
        print(f"ptyopt: error: {err}", file=sys.stderr)
        return 2
    return 0
