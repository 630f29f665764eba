"""Which run an output directory holds, and which of its stages are still valid.

Rerunning the same command continues the run (finished stages are loaded, an interrupted one
resumes from its last saved state). A different config is refused unless the user says what to do:
``--overwrite`` replaces the run, ``--resume`` keeps every stage whose own settings did not change
and retrains the rest. Each stage records a fingerprint of exactly the settings it depends on, so
fixing a typo in the student's section does not retrain the teacher.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from horkd.checkpoint import SHIP_FILE, atomic_write
from horkd.config import ExperimentConfig, dump_config
from horkd.data.digest import data_digest
from horkd.data.images import stored_channels
from horkd.data.partition import with_partition_digest
from horkd.run_lock import LOCK_FILE

CONFIG_FILE = "config.yaml"
RUN_MARKERS = (CONFIG_FILE, "run.json")


class RunDirError(ValueError):
    """The output directory holds another run; refuse rather than mix two experiments."""


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def flat_settings(node: dict[str, Any]) -> dict[str, Any]:
    """Nested settings as ``{"a.b.c": value}``: what :func:`changed_keys` compares."""
    return _flat(node)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def prepare_run_dir(
    cfg: ExperimentConfig, run_dir: Path, *, resume: bool = False, overwrite: bool = False
) -> None:
    """Make ``run_dir`` ready for ``cfg``: new, continued, resumed with changes, or replaced."""
    config_path = run_dir / CONFIG_FILE
    text = dump_config(cfg)
    is_run = any((run_dir / marker).exists() for marker in RUN_MARKERS)
    held = run_dir / LOCK_FILE  # this process's own lock: never the user's content
    # a process killed while it wrote config.yaml leaves only the atomic writer's temporary:
    # horkd's own, so the run continues there instead of refusing the folder
    torn = f".{CONFIG_FILE}."
    if run_dir.exists() and not is_run and any(
            p != held and not p.name.startswith(torn) for p in run_dir.iterdir()):
        raise RunDirError(
            f"output directory {run_dir} is not empty and does not hold a horkd run; choose "
            "another output_dir (horkd never deletes folders it did not create)"
        )
    if is_run:
        old_text = config_path.read_text() if config_path.exists() else ""
        if overwrite:  # everything but the lock this process holds on the directory
            for entry in run_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry != held:
                    entry.unlink()
        elif _same_config(old_text, cfg):
            print(f"continuing the run in {run_dir} (finished stages are reused)", flush=True)
        elif not _trained_anything(run_dir):  # e.g. stopped by a data check: nothing to keep
            pass  # the folder only says a run was tried: start it, as in an empty folder
        elif resume:
            print(
                f"resuming {run_dir} with a changed config ({_changes(old_text, text)}); stages "
                "whose settings changed are retrained",
                flush=True,
            )
            (run_dir / "config.previous.yaml").write_text(old_text)
            (run_dir / SHIP_FILE).unlink(missing_ok=True)  # chosen among the old config's
        else:
            raise RunDirError(
                f"output directory {run_dir} already holds a run with a different config "
                f"(changed: {_changes(old_text, text)}); pass --resume to keep its unchanged "
                "stages, --overwrite to replace it, or use another output_dir"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(config_path, lambda tmp: Path(tmp).write_text(text))


def _trained_anything(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything a run made: a stage's weights or resumable state, a
    finished stage, or results (a run that only scored given checkpoints has no weights)."""
    made = ("train_state*.safetensors", "model.safetensors", "done.json", "results.json")
    return any(next(run_dir.rglob(pattern), None) is not None for pattern in made)


def _changes(old_text: str, new_text: str) -> str:
    """The first changed keys between two dumped configs, for a message."""
    try:
        diff = changed_keys(yaml.safe_load(old_text) or {}, yaml.safe_load(new_text))
    except yaml.YAMLError:
        return "the old config.yaml is unreadable"
    return (", ".join(diff[:8]) + (", ..." if len(diff) > 8 else "")) or "unknown"


def _same_config(old_text: str, cfg: ExperimentConfig) -> bool:
    """Compared as validated configs, so a setting added later with its default is no change."""
    try:
        old = ExperimentConfig.model_validate(yaml.safe_load(old_text) or {})
    except (ValueError, yaml.YAMLError):
        return False
    return old == cfg


def _dump(model: Any) -> Any:
    """Settings as the fingerprint sees them: only what differs from the defaults, so adding a
    setting (at its default) in a later version does not invalidate finished stages."""
    return model.model_dump(mode="json", exclude_defaults=True)


def settings_digest(parts: Any) -> str:
    """A short, stable name for JSON-able settings: equal settings, equal digest."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


LABEL_SETTINGS = frozenset({"label_fraction", "labeled_batch_size"})


def _data_settings(cfg: ExperimentConfig, seed: int, labels: bool = True) -> dict[str, Any]:
    """What a stage's data is; ``labels=False`` for the stages that see every label (the
    teacher, the LR oracle), so a few-label setting does not retrain them."""
    exclude = {"num_workers"} | (set() if labels else LABEL_SETTINGS)
    data = cfg.data.model_dump(mode="json", exclude_defaults=True, exclude=exclude)
    # (how fast data loads does not change what a stage learns; a partition counts by its parts)
    data = with_partition_digest(data)
    if cfg.data.dataset == "image_folder" and cfg.data.channels is None and cfg.data.root \
            and Path(cfg.data.root).is_dir() and stored_channels(cfg.data.root) == 1:
        data["channels_found"] = 1  # a grey folder once trained as RGB: those stages retrain
    return {
        "seed": seed,
        "data": data,
        "data_files": data_digest(cfg.data.dataset, cfg.data.root),  # what the settings point at
        "task": cfg.task,
        "task_loss": _dump(cfg.task_loss),
        "retrieval": _dump(cfg.retrieval),
        "face": _dump(cfg.face),
        "deterministic": cfg.deterministic,
    }


def teacher_fingerprint(cfg: ExperimentConfig, seed: int) -> str:
    return settings_digest(
        {
            **_data_settings(cfg, seed, labels=False),
            "teacher": _dump(cfg.teacher),
            "train": _dump(cfg.train.teacher),
        }
    )


def assistant_fingerprint(cfg: ExperimentConfig, seed: int) -> str:
    return settings_digest(
        {
            "teacher": teacher_fingerprint(cfg, seed),
            "assistant": _dump(cfg.assistant),
            "train": _dump(cfg.train.assistant),
            # warm_start concerns the students only
            "distill_loss": _dump(cfg.distill.loss.settled(_loss_defaults(cfg, "assistant"))),
            "labels": cfg.data.model_dump(mode="json", include=LABEL_SETTINGS),
            # named only when it is LR, so an HR assistant keeps the fingerprint it had
            **({"input": "lr", "degrade": _degrade_settings(cfg)}
               if cfg.distill.assistant_input == "lr" else {}),
        }
    )


def student_fingerprint(
    cfg: ExperimentConfig,
    seed: int,
    method: str,
    *,
    teacher: bool,
    assistant: bool,
    upstream: ExperimentConfig | None = None,
    network: str = "student",
) -> str:
    """``cfg`` is the config the student trains with (the ablation changes its orders);
    ``upstream`` the one the teacher and assistant it learns from were trained with.

    A student that learns from labels alone (no teacher, no assistant) ignores the distillation
    settings, so changing them does not retrain it.
    """
    distils = teacher or assistant
    upstream = upstream or cfg  # the config the run's teacher and assistant were trained with
    return settings_digest(
        {
            **_data_settings(cfg, seed, labels=network != "teacher"),
            "method": method,
            "teacher": teacher_fingerprint(upstream, seed) if teacher else None,
            "assistant": assistant_fingerprint(upstream, seed) if assistant else None,
            "student": _dump(getattr(cfg, network)),
            "assistant_model": _dump(cfg.assistant) if distils else None,  # warm start, joint
            "train": _dump(getattr(cfg.train, network)),
            "distill": _dump(cfg.distill.settled(_loss_defaults(cfg, method))) if distils else None,
            "degrade": _degrade_settings(cfg),
            **(_size_statistics(cfg) if network == "student" else {}),
            **_method_settings(cfg, method),
        }
    )


def _method_settings(cfg: ExperimentConfig, method: str) -> dict[str, Any]:
    """The ``distill`` sections a method reads besides the loss (``MethodSpec.settings``: the
    semi-supervised student's ``pseudo_label``), which a method that learns from no teacher
    would otherwise leave out; named only for a method that has some, so every other stage keeps
    its fingerprint."""
    from horkd.methods import METHODS

    sections = METHODS.get(method).settings if method in METHODS else ()
    if not sections:
        return {}
    return {"settings": {name: _dump(getattr(cfg.distill, name)) for name in sections}}


def _loss_defaults(cfg: ExperimentConfig, method: str) -> Mapping[str, float]:
    """The weights ``method`` trains with where the config leaves them null: a stage's settings
    are what it trains with, so a changed method default retrains it."""
    from horkd.methods import METHODS  # the methods import the config, not the run directory
    from horkd.tasks import TASKS

    if method not in METHODS:
        return {}
    return METHODS.get(method).loss_defaults(TASKS.get(cfg.task).uses_logits)


def _size_statistics(cfg: ExperimentConfig) -> dict[str, Any]:
    """How a student across sizes keeps its BatchNorm statistics; named only where it applies,
    so every other student keeps its fingerprint (and per_size the one it had as the default)."""
    degrade = cfg.degrade
    if not degrade.norm_sizes:
        return {}
    if degrade.size_statistics == "recomputed":
        return {"size_statistics": "recomputed", "statistics_images": degrade.statistics_images}
    return {"size_statistics": "per_size"}


def _degrade_settings(cfg: ExperimentConfig) -> dict[str, Any]:
    """What LR a student learnt from. The work size is named only where a student computes at
    one (an int, or ``auto`` where the HR side is the data's own), so the stages trained before
    it existed, and every single-size student, keep their fingerprints."""
    degrade = cfg.degrade.model_dump(
        mode="json", exclude_defaults=True,
        exclude={"eval_sizes", "work_size", "size_statistics", "statistics_images"})
    if cfg.degrade.size_statistics == "shared":  # named as it was when not the default
        degrade["size_statistics"] = "shared"
    hr = cfg.data.hr_size
    if hr is not None:
        work = cfg.degrade.resolved_work_size(hr)
    else:
        work = cfg.degrade.work_size if cfg.degrade.native_across_sizes else None
    if work is not None:
        degrade["work_size"] = work
    return degrade


def finished_stage(stage_dir: Path, fingerprint: str) -> bool:
    """A stage is reused only when it finished with the settings asked for now (whether its
    weights can be read, the stage runner finds out when it loads them: they outrank this)."""
    done = stage_dir / "done.json"
    if not done.exists():
        return False
    try:
        record = json.loads(done.read_text())
    except (OSError, ValueError):  # a damaged done.json: the stage trains again
        return False
    return isinstance(record, dict) and record.get("fingerprint") == fingerprint
