"""Compile once per study (DESIGN §10): five reconstructions with different
hyperparameter values and the same shapes compile each engine's iteration once."""

from __future__ import annotations

import importlib

import pytest

from ptyopt.engines.common import run_plan
from ptyopt.initial import measurements_from
from ptyopt.plan import parse_plan

TRIALS = {
    "gradient": [
        {
            "object_solver": {"learning_rate": lr},
            "probe_solver": {"learning_rate": lr / 5},
            "noise": {"model": "amplitude", "epsilon": eps},
            "regularizers": {
                "object_l2": {"weight": w},
                "object_tikhonov": {"weight": {"kind": "cosine", "value": w}},
            },
            "position_correction": {"start": 1, "step": 0.05 * lr},
        }
        for lr, eps, w in [
            (0.01, 0.0, 0.1),
            (0.02, 0.5, 0.01),
            (0.03, 1.0, 0.2),
            (0.05, 2.0, 0.0),
            (0.04, 0.1, 1.0),
        ]
    ],
    "epie": [
        {
            "beta_object": b,
            "beta_probe": {"kind": "cosine", "value": b},
            "noise": {"model": "amplitude", "epsilon": eps},
            "probe_update_start": start,
            "position_correction": {"start": 1, "step": 0.1 * b},
        }
        for b, eps, start in [
            (1.0, 0.0, 0),
            (0.5, 0.3, 1),
            (0.8, 1.0, 2),
            (0.3, 0.1, 0),
            (0.9, 2.0, 1),
        ]
    ],
    "lsqml": [
        {
            "beta_object": b,
            "beta_probe": b,
            "illum_reg_object": r,
            "illum_reg_probe": {"kind": "exponential", "value": r, "rate": 0.5},
            "noise": {"model": "poisson", "epsilon": eps},
            "position_correction": {"start": 1, "step": 0.05},
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
    "epie": ("ptyopt.engines.epie", "epie_iteration"),
    "lsqml": ("ptyopt.engines.lsqml", "lsqml_iteration"),
}


@pytest.mark.parametrize("kind", sorted(TRIALS))
def test_each_engine_step_compiles_once_across_trials(small_dataset, kind):
    module, name = ITERATION_FUNCTIONS[kind]
    compiled = getattr(importlib.import_module(module), name)
    compiled.clear_cache()
    measurements = measurements_from(small_dataset)
    for values in TRIALS[kind]:
        plan = parse_plan(
            {"engines": [{"kind": kind, "iterations": 3, "group_size": 16, **values}]}
        )
        run_plan(plan, measurements)
    assert compiled._cache_size() == 1
