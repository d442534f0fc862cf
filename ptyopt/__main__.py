"""Command line, configured by Hydra (``conf/``):

- ``python -m ptyopt study=<name> [overrides]``: run (or resume) an Optuna study;
- ``python -m ptyopt report study=<name>``: write its report to ``reports/<name>/``;
- ``python -m ptyopt reconstruct [dataset=…|dataset_file=D.h5] [engine=…] [out=DIR]``:
  one reconstruction of the configured plan, written to ``DIR/reconstruction.h5`` and
  ``DIR/reconstruction.png`` and scored against the ground truth where there is one;
- ``python -m ptyopt apply study=<name> dataset_file=D.h5 [out=DIR]``: reconstruct D
  with the best plan of the study (:mod:`ptyopt.reconstruction.apply`), written like
  ``reconstruct``'s;
- ``python -m ptyopt simulate dataset=<name>``: simulate (or find) the dataset only;
- ``python -m ptyopt import source=PATH out=DATASET.h5 [metadata=META.yaml]
  [metadata.KEY=VALUE ...]``: write a dataset file from a user's 4D-STEM data
  (:mod:`ptyopt.io`; not through Hydra).

Overrides select config-group options (``engine=lsqml``) or set values
(``study.n_trials=50``); ``--help`` lists the groups and ``--cfg job`` prints the
composed configuration. Bad configuration (Hydra's own errors included: an unknown
option of a config group, bad override syntax, an unknown key) fails before any compute
with one line naming the key (exit status 2), and so does a folder ptyopt cannot write;
Ctrl-C ends with ``ptyopt: interrupted`` (exit status 130), the running trial told FAIL.
"""

from __future__ import annotations

import errno
import os
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ptyopt.errors import ConfigError, did_you_mean, hydra_message
from ptyopt.paths import conf_dir

COMMANDS = ("study", "report", "reconstruct", "apply", "simulate")
_command = {"name": "study"}
#: errno values of a folder or file that cannot be written
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def _fail(message: str) -> None:
    print(f"ptyopt: error: {message}", file=sys.stderr)
    sys.exit(2)


def _cli_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _study(config, plan_values) -> None:
    from ptyopt.study.runner import run_study

    overrides = _cli_overrides()
    if config.study.arms:
        from ptyopt.study.arms import arms_of

        for arm in arms_of(config, overrides):  # every arm validated before any runs
            _summarise(run_study(arm.config, arm.plan_values, overrides=overrides), arm.config)
    else:
        _summarise(run_study(config, plan_values, overrides=overrides), config)
    print("  report: " + " ".join(["python -m ptyopt report", *sys.argv[1:]]))


def _summarise(study, config) -> None:
    from ptyopt.study.report.tables import parameters_text

    states = [t.state.name for t in study.trials]
    print(
        f"study {config.study.name}: "
        + ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
    )
    if len(study.directions) == 1 and any(s == "COMPLETE" for s in states):
        best = study.best_trial
        print(
            f"  best trial {best.number}: {config.objective.metrics[0]} = {best.value:.4g} "
            f"with {parameters_text(best.params)}"
        )


def _report(config, plan_values) -> None:
    from ptyopt.paths import reports_dir
    from ptyopt.study.publication import report_folder, unpublished_because
    from ptyopt.study.report import write_study_report
    from ptyopt.study.runner import trial_budget

    command = " ".join(["python -m ptyopt report", *sys.argv[1:]])
    overrides = _cli_overrides()
    if config.study.arms:
        from ptyopt.study.arms import arms_of
        from ptyopt.study.comparison import ArmResult, write_comparison_report

        results = [
            ArmResult(arm, _load_study(arm.config, required=False))
            for arm in arms_of(config, overrides)
        ]
        if not any(r.study for r in results):
            raise ConfigError(
                f"study.name: no arm of {config.study.name!r} has been run; "
                f"run python -m ptyopt study={config.study.name} first"
            )
        studies = [(r.study, trial_budget(r.arm.config)) for r in results if r.study]
        reason = unpublished_because(studies, overrides)
        out_dir = report_folder(reports_dir(), config.study.name, reason, config.publish)
        written = write_comparison_report(config.study.name, results, out_dir, command)
    else:
        study = _load_study(config, required=True)
        reason = unpublished_because([(study, trial_budget(config))], overrides)
        out_dir = report_folder(reports_dir(), config.study.name, reason, config.publish)
        written = write_study_report(study, out_dir, command)
    print(f"wrote {len(written)} files to {out_dir}")
    if reason is not None:
        print(
            f"  {'published anyway (publish=true)' if config.publish else 'not published'}: "
            f"{reason}"
            + ("" if config.publish else f"; publish=true replaces reports/{config.study.name}/")
        )


def _load_study(config, required: bool):
    """The study's storage entry; ``None`` (or a ConfigError if ``required``) when it has not
    been run. Storage is never created: a study kept in the other local storage's file
    (``journal.log``, ``study.db``) is a ConfigError naming the storage option to add."""
    import optuna

    from ptyopt.study.components import make_storage
    from ptyopt.study.runner import study_dir

    folder = study_dir(config.study.name)
    missing = f"study.name: no study {config.study.name!r} under {folder.parent}; run it first"
    kind = config.storage.kind
    files = {"journal": folder / "journal.log", "sqlite": folder / "study.db"}
    local = kind == "journal" or (kind == "sqlite" and not config.storage.url)
    if local and not files[kind].exists():  # opening the storage would create it
        for other, path in files.items():
            if other != kind and path.exists():
                raise ConfigError(
                    f"storage: study {config.study.name!r} is stored in {path}: add storage={other}"
                )
        if required:
            raise ConfigError(missing)
        return None
    try:
        return optuna.load_study(
            study_name=config.study.name, storage=make_storage(config.storage, folder)
        )
    except KeyError:
        if required:
            raise ConfigError(missing) from None
        return None


def _reconstruct(config, plan_values, applied=None) -> None:
    """One reconstruction of the configured dataset by ``plan_values``, written to
    ``out``; ``applied``: the study trial the plan comes from (``apply``)."""
    from pathlib import Path

    from ptyopt.legend import with_unit
    from ptyopt.observers import EveryKScores, IterationLog
    from ptyopt.reconstruction import Reconstruction, default_output
    from ptyopt.reconstruction.figure import plot_reconstruction
    from ptyopt.reconstruction.file import write_reconstruction
    from ptyopt.study.runner import dataset_for, enable_compilation_cache, score_metrics
    from ptyopt.truth_free import held_out_positions

    enable_compilation_cache()
    dataset, dataset_path = dataset_for(config)
    o = config.objective
    held = held_out_positions(dataset.n_positions, o.validation_fraction, o.validation_seed)
    reconstruction = Reconstruction(dataset, plan_values, held)  # every check before compute
    folder = Path(config.out).expanduser() if config.out else default_output(dataset.name)
    total = sum(engine.iterations for engine in reconstruction.plan.engines)
    truth = dataset.ground_truth is not None
    scores = (
        EveryKScores(
            lambda s: score_metrics(s.object, dataset, reconstruction.measurements)["nrmse"],
            config.study.score_every,
            total,
        )
        if truth
        else None
    )
    log = IterationLog(total, sys.stdout, scores, label="NRMSE")
    state = reconstruction.run([scores, log] if truth else [log])
    print(
        f"{' → '.join(f'{e.kind} ×{e.iterations}' for e in reconstruction.plan.engines)} on "
        f"{dataset.name}: {reconstruction.seconds:.1f} s (compilation included)"
    )
    free = reconstruction.truth_free_scores()
    h5 = write_reconstruction(
        folder / "reconstruction.h5",
        reconstruction,
        dataset_path,
        applied.provenance() if applied else None,
        free,
    )
    png = plot_reconstruction(reconstruction, folder / "reconstruction.png")
    print(f"  wrote {h5} and {png}")
    if truth:
        final = score_metrics(state.object, dataset, reconstruction.measurements)
        print("  NRMSE by iteration: " + ", ".join(f"{i}: {v:.3f}" for i, v in scores.history))
        print("  final: " + ", ".join(with_unit(name, value) for name, value in final.items()))
    else:
        print(f"  {dataset_path} has no ground truth: no scores against it")
    print("  without ground truth: " + ", ".join(with_unit(k, v) for k, v in free.items()))


def _apply(config, plan_values) -> None:
    from ptyopt.reconstruction.apply import best_plan
    from ptyopt.study.report.tables import parameters_text

    if config.dataset_file is None:
        raise ConfigError(
            "dataset_file: apply reconstructs your data with the study's best plan; "
            "give it as dataset_file=D.h5"
        )
    if config.study.arms:
        from ptyopt.study.arms import arm_study_name

        names = ", ".join(arm_study_name(config.study.name, arm) for arm in config.study.arms)
        raise ConfigError(
            f"study.arms: {config.study.name!r} compares arms, each a study of its own "
            f"({names}); apply one: study=<its member study> study.name=<arm's study>"
        )
    applied = best_plan(_load_study(config, required=True), plan_values)
    values = ", ".join(f"{name} {value:.4g}" for name, value in applied.values.items())
    print(
        f"applying trial {applied.trial} of study {applied.study} ({values} on its "
        f"dataset), {applied.iterations} iterations: {parameters_text(applied.params)}"
    )
    if applied.microscope_params:
        print(
            "  note: tuned microscope settings carried over as found on the study's dataset: "
            + ", ".join(applied.microscope_params)
        )
    _reconstruct(config, applied.plan_values, applied)


def _simulate(config, plan_values) -> None:
    from ptyopt.study.runner import dataset_for

    dataset, path = dataset_for(config)
    print(f"dataset {dataset.name}: {path}")
    print(
        f"  {dataset.n_positions} positions, {dataset.detector_shape[0]}² px, "
        f"pixel {dataset.pixel_size_A:.3f} Å, dose {dataset.dose_e_per_A2:g} e/Å²"
    )


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def _app(cfg: DictConfig) -> None:
    from ptyopt.data.file import DatasetFileError
    from ptyopt.engines.common import DivergenceError
    from ptyopt.study.settings import validate

    try:
        command = _command["name"]
        config, plan_values = validate(cfg, study=command not in ("reconstruct", "apply"))
        {
            "study": _study,
            "report": _report,
            "reconstruct": _reconstruct,
            "apply": _apply,
            "simulate": _simulate,
        }[command](config, plan_values)
    except (ConfigError, DatasetFileError, DivergenceError) as err:
        _fail(str(err))
    except OSError as err:
        if err.errno not in _NOT_WRITABLE:
            raise
        _fail(f"cannot write {err.filename}: {err.strerror}")


def _close_progress_bars() -> None:
    """Close the progress bars an interrupted study left open, so that ptyopt's last
    line comes after them."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _unknown_command(word: str) -> str:
    """The error for a first argument that is neither a command, an option nor an
    override, with the closest command where one is close."""
    known = [*COMMANDS, "import"]
    return f"unknown command {word!r}; choose one of {', '.join(known)}" + did_you_mean(word, known)


def main() -> None:
    """Entry point: an optional command word, then Hydra's arguments (``import`` parses
    its own). Hydra's errors reach ptyopt (``HYDRA_FULL_ERROR``) and end in one line,
    unless the user set ``HYDRA_FULL_ERROR=1`` for Hydra's full traceback."""
    if len(sys.argv) > 1 and sys.argv[1] == "import":
        from ptyopt.io.cli import main as import_main

        sys.exit(import_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        _command["name"] = sys.argv.pop(1)
    elif len(sys.argv) > 1 and not sys.argv[1].startswith(("-", "~")) and "=" not in sys.argv[1]:
        _fail(_unknown_command(sys.argv[1]))
    traceback_wanted = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
    except KeyboardInterrupt:
        _close_progress_bars()
        print("ptyopt: interrupted", file=sys.stderr)
        sys.exit(130)
    except (HydraException, OmegaConfBaseException) as err:
        if traceback_wanted:
            raise
        _fail(hydra_message(err))


if __name__ == "__main__":
    main()
