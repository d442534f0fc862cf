"""Compile once per study (DESIGN §10): five reconstructions with different values of
every hyperparameter and the same shapes compile each engine's iteration once, and the
constraints' array work once: scheduled values, noise ε, regularizer weights, solver
constants (Adam's b1/b2, SGD momentum and the Nesterov switch), the position clip
``max_step_px``, the propagators' band limit and the object low pass's fraction and taper;
and the microscope a plan assumes (initial probe optics, thickness, scan calibration)."""

from __future__ import annotations

import importlib

import pytest

from ptyopt import constraints
from ptyopt.engines.common import run_plan
from ptyopt.initial import measurements_from
from ptyopt.plan import parse_plan

TRIALS = {
    "gradient": [
        {
            "object_solver": {"learning_rate": lr, "b1": 0.8 + lr, "b2": 0.99 + lr / 10},
            "probe_solver": {"learning_rate": lr / 5, "b1": 0.95 - lr},
            "noise": {"model": "amplitude", "epsilon": eps},
            "regularizers": {
                "object_l2": {"weight": w},
                "object_tikhonov": {"weight": {"kind": "cosine", "value": w}},
            },
            "position_correction": {"start": 1, "step": 0.05 * lr, "max_step_px": 10 * lr},
        }
        for lr, eps, w in [
            (0.01, 0.0, 0.1),
            (0.02, 0.5, 0.01),
            (0.03, 1.0, 0.2),
            (0.05, 2.0, 0.0),
            (0.04, 0.1, 1.0),
        ]
    ],
    "gradient_sgd": [
        {
            "object_solver": {"name": "sgd", "learning_rate": lr, "momentum": m, "nesterov": n},
            "probe_solver": {"name": "sgd", "learning_rate": lr / 5, "momentum": m / 2},
            "position_correction": {"start": 1, "step": 0.02, "max_step_px": 0.1 + m},
        }
        for lr, m, n in [
            (1e-5, 0.0, False),
            (2e-5, 0.9, True),
            (5e-6, 0.5, False),
            (1e-5, 0.95, True),
            (3e-5, 0.3, True),
        ]
    ],
    "epie": [
        {
            "beta_object": b,
            "beta_probe": {"kind": "cosine", "value": b},
            "alpha_object": {"kind": "cosine", "value": b, "end": b / 2},
            "object_normalization": normalization,
            "noise": {"model": "amplitude", "epsilon": eps},
            "probe_update_start": start,
            "position_correction": {"start": 1, "step": 0.1 * b, "max_step_px": b},
        }
        for b, eps, start, normalization in [
            (1.0, 0.0, 0, "position"),
            (0.5, 0.3, 1, "group"),
            (0.8, 1.0, 2, "position"),
            (0.3, 0.1, 0, "group"),
            (0.9, 2.0, 1, "group"),
        ]
    ],
    "lsqml": [
        {
            "beta_object": b,
            "beta_probe": b,
            "illum_reg_object": r,
            "illum_reg_probe": {"kind": "exponential", "value": r, "rate": 0.5},
            "noise": {"model": "poisson", "epsilon": eps},
            "position_correction": {"start": 1, "step": 0.05, "max_step_px": r * 10},
        }
        for b, r, eps in [
            (0.9, 1e-2, 1.0),
            (0.5, 1e-3, 0.5),
            (1.0, 1e-1, 2.0),
            (0.7, 3e-2, 0.1),
            (0.3, 5e-3, 0.8),
        ]
    ],
}
ITERATION_FUNCTIONS = {
    "gradient": ("ptyopt.engines.gradient", "gradient_iteration"),
    "gradient_sgd": ("ptyopt.engines.gradient", "gradient_iteration"),
    "epie": ("ptyopt.engines.epie", "epie_iteration"),
    "lsqml": ("ptyopt.engines.lsqml", "lsqml_iteration"),
}


@pytest.mark.parametrize("kind", sorted(TRIALS))
def test_each_engine_step_compiles_once_across_trials(small_dataset, kind):
    module, name = ITERATION_FUNCTIONS[kind]
    compiled = getattr(importlib.import_module(module), name)
    constraint_steps = (constraints._filter_log, constraints._bandlimit_mask)
    for function in (compiled, *constraint_steps):
        function.clear_cache()
    measurements = measurements_from(small_dataset)
    # 48 px at the small dataset's cell reach 40.3 mrad: band limits from 0.7 pass 25 mrad
    for trial, values in enumerate(TRIALS[kind]):
        low_pass = {"fraction": 0.5 + 0.1 * trial, "taper": 0.01 * trial}
        engine = {
            "kind": kind.removesuffix("_sgd"),
            "iterations": 3,
            "group_size": 16,
            "constraints": {"object_low_pass": low_pass},
            **values,
        }
        plan = parse_plan({"bandlimit": 0.7 + 0.07 * trial, "engines": [engine]})
        run_plan(plan, measurements)
    assert compiled._cache_size() == 1
    assert [f._cache_size() for f in constraint_steps] == [1, 1]


MICROSCOPES = [
    {
        "probe": {
            "defocus_A": defocus,
            "Cs_A": cs,
            "astigmatism_A": astigmatism,
            "astigmatism_angle_deg": angle,
            "semiangle_mrad": semiangle,
        },
        "thickness_A": thickness,
        "scan": {"rotation_deg": rotation, "step_scale": scale},
    }
    for defocus, cs, astigmatism, angle, semiangle, thickness, rotation, scale in [
        (None, None, None, None, None, None, None, None),  # the nominal microscope
        (90.0, 1.0e4, 5.0, 30.0, 22.0, 5.0, 2.0, 1.02),
        (-10.0, 0.0, 20.0, -45.0, 24.0, 12.0, -3.0, 0.97),
        (40.0, -2.0e4, 0.0, 0.0, 25.0, 9.76, 0.5, 1.0),
        (0.0, 5.0e3, 12.0, 170.0, 19.0, 7.0, -1.0, 1.04),
    ]
]


@pytest.mark.parametrize("kind", ["gradient", "epie", "lsqml"])
def test_the_microscope_settings_compile_once(small_dataset, kind):
    """Probe defocus, Cs, astigmatism and its angle, semi-angle, thickness (2 slices)
    and scan rotation and step scale: five microscopes, one compilation."""
    module, name = ITERATION_FUNCTIONS[kind]
    compiled = getattr(importlib.import_module(module), name)
    compiled.clear_cache()
    measurements = measurements_from(small_dataset)
    for microscope in MICROSCOPES:
        engine = {"kind": kind, "iterations": 2, "group_size": 16}
        run_plan(parse_plan({"slices": 2, **microscope, "engines": [engine]}), measurements)
    assert compiled._cache_size() == 1
