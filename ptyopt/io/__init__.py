"""Import users' 4D-STEM data as ptyopt dataset files (``python -m ptyopt import``).

One module per source kind — :mod:`~ptyopt.io.arrays` (.npy, HDF5 datasets),
:mod:`~ptyopt.io.abtem_zarr` (abTEM's saved diffraction patterns),
:mod:`~ptyopt.io.rsciio_files` (detector files through rosettasciio) — each returning a
:class:`~ptyopt.io.source.SourceScan`; the shared pieces: :mod:`~ptyopt.io.metadata`
(the typed metadata), :mod:`~ptyopt.io.scan` (positions), :mod:`~ptyopt.io.detector`
(orientation, centre, crop, bin), :mod:`~ptyopt.io.ground_truth` and
:mod:`~ptyopt.io.build`, which makes the dataset; :mod:`~ptyopt.io.cli` is the command.
"""
