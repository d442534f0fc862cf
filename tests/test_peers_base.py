"""The peers' shared base: plan validation, the worker file exchange, and placing a
peer's object on ptyopt's grid by whole pixels."""

import numpy as np
import pytest

from ptyopt.errors import ConfigError
from ptyopt.initial import Geometry
from ptyopt.peers import base, exchange
from ptyopt.peers.base import PeerPlan, PeerRunError, on_ptyopt_grid


def _band_limited_object(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.zeros(shape, complex)
    spectrum[:4, :4] = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    return np.fft.ifft2(spectrum) * shape[0] * shape[1] / 8 + 1


@pytest.mark.parametrize("shift", [(7.3, -2.6), (-3.0, 11.0), (0.49, 0.51)])
def test_peer_object_lands_on_the_whole_pixel_nearest_to_its_probe_centres(shift):
    peer = _band_limited_object((41, 46))
    peer_positions = np.array([[10.0, 12.0], [20.0, 25.0], [15.3, 18.1]])
    ours = Geometry(peer_positions + shift, np.zeros(2), (53, 50), (16, 16))
    placed = on_ptyopt_grid(peer[None], peer_positions, ours)
    assert placed.shape == (1, 53, 50)
    whole = np.round(shift).astype(int)
    for p in ([20, 20], [25, 30], [14, 17]):
        assert placed[0, p[0], p[1]] == peer[p[0] - whole[0], p[1] - whole[1]]
    assert placed[0, 52, 0] == 1  # outside the peer's object: vacuum


def test_positions_that_are_not_a_translation_are_a_convention_error():
    peer_positions = np.array([[10.0, 12.0], [20.0, 25.0], [15.0, 18.0]])
    swapped = Geometry(peer_positions[:, ::-1].copy(), np.zeros(2), (40, 40), (16, 16))
    with pytest.raises(PeerRunError, match="not a translation"):
        on_ptyopt_grid(np.ones((1, 40, 40), complex), peer_positions, swapped)


def test_exchange_round_trips_arrays_and_settings(tmp_path):
    values = {"patterns": np.arange(6.0).reshape(2, 3), "settings": {"beta": 0.5}, "name": "x"}
    exchange.save(tmp_path / "v.npz", values)
    loaded = exchange.load(tmp_path / "v.npz")
    np.testing.assert_array_equal(loaded["patterns"], values["patterns"])
    assert loaded["settings"] == {"beta": 0.5} and loaded["name"] == "x"


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"engine": "dm"}, "engine"),
        ({"group_size": 0}, "group_size"),
        ({"step": {"beta_object": -1}}, "beta_object"),
        ({"noise_model": "x"}, "noise_model"),
    ],
)
def test_impossible_peer_plans_are_refused_naming_the_key(changes, key):
    plan = {"engine": "lsqml", "iterations": 2, "group_size": 4, **changes}
    with pytest.raises(ConfigError, match=key):
        PeerPlan(**plan)


def test_peak_rss_is_the_worker_own_not_its_parents():
    """A fresh interpreter reports its own peak memory, however large the parent."""
    import subprocess
    import sys
    from pathlib import Path

    ballast = np.ones(50_000_000)  # 400 MB in this (parent) process
    folder = Path(exchange.__file__).parent
    code = (
        f"import sys; sys.path.insert(0, {str(folder)!r}); "
        "import exchange; print(exchange.peak_rss_MB())"
    )
    child = float(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert ballast.sum() > 0 and child < 200


def test_reset_peak_rss_forgets_what_was_freed_before_it():
    """The peak after a reset is what the process holds from then on, not a freed
    array's: the engine benchmarks' peaks are their reconstructions', not the data's."""
    ballast = np.ones(50_000_000)  # 400 MB, freed before the reset
    assert ballast.sum() > 0
    with_ballast = exchange.peak_rss_MB()
    del ballast
    if not exchange.reset_peak_rss():
        pytest.skip("this kernel cannot reset the peak (/proc/self/clear_refs)")
    assert exchange.peak_rss_MB() < with_ballast - 300
    kept = np.ones(25_000_000)  # 200 MB after the reset: counted
    assert kept.sum() > 0 and exchange.peak_rss_MB() > with_ballast - 400 + 150


def test_a_peer_that_is_installed_but_does_not_import_is_unavailable(monkeypatch, tmp_path):
    python = tmp_path / "brokenpeer" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'ImportError: libtorch_cuda.so missing' >&2\nexit 1\n")
    python.chmod(0o755)
    monkeypatch.setenv("PTYOPT_PEERS_DIR", str(tmp_path))
    with pytest.raises(base.PeerUnavailableError, match="does not import.*libtorch_cuda"):
        base.peer_version("brokenpeer", "brokenpeer", "brokenpeer")
    python.write_text("#!/bin/sh\necho 1.2.3\n")
    assert base.peer_version("brokenpeer", "brokenpeer", "brokenpeer") == "1.2.3"
