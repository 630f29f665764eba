"""Partitions of the training images (data.split_file, horkd split) and data.val_size: parts are
disjoint, stratified and drawn the same way twice; sized parts skip exactly what earlier configs
scored; runs on two parts never share an image; the parts enter fingerprints; a bad manifest is
one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import idx_tree

from horkd.cli import main
from horkd.config import ConfigError, config_from_dict
from horkd.data import build_splits, labels_of
from horkd.data.carve import PartSpec, draw_partition, union
from horkd.data.partition import PartitionError, dump_manifest, load_partition
from horkd.data.split import stratified_split, stratified_subset, students_validation
from horkd.data.vision import DEBIAN_FASHION_MNIST

N_TRAIN = 400  # labels cycle 0-9: 40 images per class


@pytest.fixture
def fashion(tmp_path: Path) -> Path:
    root = tmp_path / "fashion"
    idx_tree(root, n_train=N_TRAIN, n_test=20)
    return root


def _config(tmp_path: Path, name: str, data: dict, **top) -> Path:
    raw = {"seeds": [0], "methods": ["scratch"], "data": {"dataset": "fashion_mnist", **data},
           **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _write(content: dict, path: Path) -> Path:
    path.write_text(dump_manifest(content))
    return path


def _three_parts(tmp_path: Path, root: Path, seed: int = 0, name: str = "parts.json") -> Path:
    cfg = _config(tmp_path, "data", {"root": str(root)})
    specs = [PartSpec("teacher", count=100), PartSpec("confirm", count=0.25),
             PartSpec("students", rest=True)]
    return _write(draw_partition(str(cfg), [], specs, [], seed)[0], tmp_path / name)


def _base_indices(dataset) -> torch.Tensor:
    index = None
    while hasattr(dataset, "indices"):
        step = torch.as_tensor(dataset.indices)
        index = step if index is None else step[index]
        dataset = dataset.dataset
    return index


def test_parts_are_disjoint_stratified_and_drawn_the_same_twice(tmp_path, fashion):
    first = _three_parts(tmp_path, fashion)
    again = _three_parts(tmp_path, fashion, name="again.json")
    other = _three_parts(tmp_path, fashion, seed=1, name="other.json")
    assert first.read_text() == again.read_text()
    parts = load_partition(first).parts
    assert parts["teacher"].numel() == 100 and parts["confirm"].numel() == 100
    assert parts["students"].numel() == 200
    every = torch.cat(list(parts.values()))
    assert every.unique().numel() == N_TRAIN  # disjoint, and the rest takes every other image
    labels = torch.arange(N_TRAIN) % 10
    for index, per_class in ((parts["teacher"], 10), (parts["confirm"], 10)):
        assert torch.bincount(labels[index], minlength=10).tolist() == [per_class] * 10
    assert not torch.equal(load_partition(other).parts["teacher"], parts["teacher"])
    counts = json.loads(first.read_text())["counts"]
    assert counts["confirm"] == {"total": 100, "per_class": [10] * 10}


def test_sized_parts_skip_exactly_what_earlier_configs_scored(tmp_path, fashion):
    """Checked against the split functions themselves: a teacher's own validation split (seed 1),
    the students' subset (seed 0) and the held-out teacher's validation images."""
    root = str(fashion)
    teacher = _config(tmp_path, "teacher", {"root": root, "val_fraction": 0.1}, seeds=[1])
    students = _config(tmp_path, "students", {"root": root, "val_fraction": 0.1,
                                              "split_seed": 0, "train_subset": 200})
    heldout = _config(tmp_path, "heldout", {"root": root, "val_fraction": 0.1, "split_seed": 0,
                                            "val_from_subset": 200})
    labels = torch.arange(N_TRAIN) % 10
    scored = torch.zeros(N_TRAIN, dtype=torch.bool)
    scored[stratified_split(labels, 0.1, 1)[1]] = True
    subset = stratified_subset(labels, 200, 0)
    scored[subset] = True
    scored[students_validation(labels, 200, 0.1, 0)] = True
    data = config_from_dict(yaml.safe_load(students.read_text())).data
    seen, _ = union([str(teacher), str(students), str(heldout)], data, labels)
    assert torch.equal(~(seen.scored | seen.subset), ~scored)
    assert int((~scored).sum()) > 150  # the teacher's seed-1 validation reaches outside the subset

    specs = [PartSpec("students", source=str(students)), PartSpec("confirm", count=100),
             PartSpec("teacher", rest=True)]
    content, lines = draw_partition(str(students), [], specs,
                                    [str(teacher), str(students), str(heldout)], 0)
    parts = load_partition(_write(content, tmp_path / "p.json")).parts
    assert torch.equal(parts["students"], subset.sort().values)
    assert not scored[parts["confirm"]].any() and parts["confirm"].numel() == 100
    assert content["drawn"]["avoided"]["never_scored"] == int((~scored).sum())
    assert any(line.split()[:2] == ["confirm", "100"] for line in lines)


def test_a_study_file_counts_every_regime_seed_and_its_teachers(tmp_path, fashion):
    """A regime that carves per run seed (split_seed null) scores the union of its seeds',
    the search seed's included."""
    root = str(fashion)
    _config(tmp_path, "teacher", {"root": root, "val_fraction": 0.1}, seeds=[3])  # teacher.yaml
    base = {"data": {"dataset": "fashion_mnist", "root": root, "val_fraction": 0.1,
                     "split_seed": 0, "train_subset": 100}}
    study = {"teachers": {"t": "teacher.yaml"}, "base": base, "seeds": [0, 1],
             "methods": ["scratch"], "baselines": ["scratch"], "main_regime": "main",
             "regimes": {"main": {"teacher": "t"},
                         "own": {"teacher": "t", "overrides": ["data.split_seed=null"]}},
             "search": {"seed": 7, "candidates": {"scratch": [["train.student.epochs=1"]]}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    labels = torch.arange(N_TRAIN) % 10
    expected = torch.zeros(N_TRAIN, dtype=torch.bool)
    for seed in (0, 1, 7):
        expected[stratified_subset(labels, 100, seed)] = True
    students_pool = expected.clone()
    expected[stratified_split(labels, 0.1, 3)[1]] = True
    data = config_from_dict(base).data
    seen, _ = union([str(path)], data, labels)
    assert torch.equal(seen.scored | seen.subset, expected)
    assert torch.equal(union([str(path)], data, labels, students_only=True)[0].pool,
                       students_pool)


def test_teacher_and_students_never_share_an_image_and_the_test_part_is_tested(tmp_path,
                                                                               fashion):
    parts = _three_parts(tmp_path, fashion)
    runs = {}
    for part in ("teacher", "students"):
        splits = build_splits("fashion_mnist", root=str(fashion), val_fraction=0.1, seed=0,
                              split_file=str(parts), part=part, test_part="confirm")
        runs[part] = splits
    seen = {part: set(_base_indices(s.train).tolist()) | set(_base_indices(s.val).tolist())
            for part, s in runs.items()}
    assert not seen["teacher"] & seen["students"]
    assert len(seen["teacher"]) == 100 and len(seen["students"]) == 200
    tested = set(_base_indices(runs["students"].test).tolist())
    assert tested == set(load_partition(parts).parts["confirm"].tolist())
    assert not tested & (seen["teacher"] | seen["students"])


def test_val_size_is_honoured_stratified_and_leaves_other_configs_alone(fashion):
    splits = build_splits("fashion_mnist", root=str(fashion), val_fraction=0.1, seed=2,
                          train_subset=300, val_size=30)
    assert len(splits.val) == 30 and len(splits.train) == 270
    assert torch.bincount(labels_of(splits.val), minlength=10).tolist() == [3] * 10
    # a count equal to what a fraction rounds to draws the same images
    by_fraction = build_splits("fashion_mnist", root=str(fashion), val_fraction=0.1, seed=2,
                               train_subset=300)
    assert _base_indices(by_fraction.val).tolist() == _base_indices(splits.val).tolist()
    with pytest.raises(ValueError, match="val_size=300 leaves no image"):
        build_splits("fashion_mnist", root=str(fashion), seed=2, train_subset=300,
                     val_size=300)


def test_fingerprints_and_record_keys_follow_the_parts_not_the_path(tmp_path, fashion):
    from horkd.run_dir import student_fingerprint, teacher_fingerprint
    from horkd.study.records import record_key

    first = _three_parts(tmp_path, fashion)
    moved = tmp_path / "moved.json"
    moved.write_text(first.read_text())
    other = _three_parts(tmp_path, fashion, seed=1, name="other.json")

    def raw(path: Path) -> dict:
        return {"seeds": [0], "methods": ["scratch"],
                "data": {"dataset": "fashion_mnist", "root": str(fashion),
                         "split_file": str(path), "part": "students"}}

    def prints(path: Path) -> tuple[str, str, str]:
        cfg = config_from_dict(raw(path))
        return (teacher_fingerprint(cfg, 0), student_fingerprint(cfg, 0, "scratch", teacher=False,
                                                                 assistant=False),
                record_key(raw(path), "t", 0, "final", True))

    assert prints(first) == prints(moved)
    assert all(a != b for a, b in zip(prints(first), prints(other), strict=True))


def _one_problem(error: ConfigError, needle: str) -> None:
    """A config error is its header and one line per problem: here one line, saying why."""
    lines = str(error).splitlines()
    assert len(lines) == 2 and needle in lines[1], str(error)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.update(layout=m["layout"][:-1]), "places 300 images"),
        (lambda m: m.update(format="other"), "is not a partition manifest"),
        (lambda m: m.pop("layout"), "holds neither"),
        (lambda m: (m.pop("layout"), m.update(parts={"students": ["0-9", 30], "teacher": [
            400]})), "outside the dataset's 0..399"),
        (lambda m: (m.pop("layout"), m.update(parts={"students": ["0-9"], "teacher": [
            "5-12"]})), "share 5 images"),
        (lambda m: m.update(layout=[m["layout"][0].replace("T", "X")] + m["layout"][1:]),
         "'X'"),
    ],
)
def test_a_bad_manifest_is_one_line(tmp_path, fashion, edit, needle):
    content = json.loads(_three_parts(tmp_path, fashion).read_text())
    edit(content)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"dataset": "fashion_mnist", "root": str(fashion),
                                   "split_file": str(path), "part": "students"}})
    _one_problem(err.value, needle)


def test_a_manifest_of_other_data_or_a_missing_part_is_refused(tmp_path, fashion):
    parts = _three_parts(tmp_path, fashion)
    data = {"dataset": "fashion_mnist", "root": str(fashion), "split_file": str(parts)}
    refusals = [
        ({**data, "part": "pupils"}, "data.part=pupils"),
        ({**data, "part": "students", "test_part": "exam"}, "data.test_part=exam"),
        ({**data, "split_file": str(tmp_path / "none.json"), "part": "students"},
         "no partition file"),
        ({**data, "part": "students", "test_part": "students"}, "both students"),
        (data, "name the one this run trains on"),
    ]
    for given, needle in refusals:
        with pytest.raises(ConfigError) as err:
            config_from_dict({"data": given})
        _one_problem(err.value, needle)
    # drawn for other data: another dataset, or the same one with other images
    with pytest.raises(PartitionError, match="drawn for fashion_mnist, not for data.dataset=mnist"):
        build_splits("mnist", root=str(fashion), split_file=str(parts), part="students")
    content = json.loads(parts.read_text())
    content["data_files"] = "0123456789abcdef"
    changed = _write(content, tmp_path / "changed.json")
    with pytest.raises(PartitionError, match="images added, removed or replaced") as err:
        build_splits("fashion_mnist", root=str(fashion), split_file=str(changed),
                     part="students")
    assert "\n" not in str(err.value)


def test_horkd_split_writes_the_manifest_and_keeps_a_different_one(tmp_path, fashion, capsys):
    cfg = _config(tmp_path, "data", {"root": str(fashion)})
    out = tmp_path / "parts.json"
    args = ["split", str(cfg), "--part", "confirm=50", "--part", "rest=rest", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "confirm" in printed and "wrote" in printed
    assert load_partition(out).parts["confirm"].numel() == 50
    assert main(args) == 0  # the same draw again: nothing to refuse
    assert main([*args[:-2], "--seed", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["split", str(cfg), "--part", "a=500", "--out", str(out)]) == 2
    assert "500 images asked for" in capsys.readouterr().err
    digits = tmp_path / "digits.yaml"
    digits.write_text(yaml.safe_dump({"data": {"dataset": "digits"}}))
    assert main(["split", str(cfg), "--part", "a=5", "--avoid", str(digits), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert "covers one dataset's training images" in err and err.count("\n") == 1


def test_a_teacher_on_another_part_is_held_out_from_the_students(tmp_path, tiny_cfg):
    """The guard's question (did the teacher see this run's validation images?) is answered by
    the parts: another part of the same partition, never."""
    from horkd.experiment import open_seed
    from horkd.experiment.bridge import teacher_held_out
    from horkd.experiment.context import build_context

    cfg_path = tmp_path / "digits.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg))
    specs = [PartSpec("teacher", count=0.4), PartSpec("students", rest=True)]
    parts = _write(draw_partition(str(cfg_path), [], specs, [], 0)[0], tmp_path / "d.json")
    on = [f"data.split_file={parts}", "data.split_seed=0"]
    teacher = config_from_dict(tiny_cfg, [*on, "data.part=teacher", "methods=[scratch]",
                                          f"output_dir={tmp_path / 'teacher'}"])
    open_seed(teacher, 0, progress=False)[1].teacher()
    checkpoint = f"teacher.checkpoint={tmp_path / 'teacher' / 'seed0' / 'teacher' / 'model'}"
    apart = config_from_dict(tiny_cfg, [*on, "data.part=students", checkpoint])
    same = config_from_dict(tiny_cfg, [*on, "data.part=teacher", checkpoint])
    carved_else = config_from_dict(tiny_cfg, [*on, "data.part=teacher", "data.val_size=40",
                                              checkpoint])
    plain = config_from_dict(tiny_cfg, [checkpoint])
    assert teacher_held_out(build_context(apart, 0)) is True
    assert teacher_held_out(build_context(same, 0)) is True  # the same carving held them out
    assert teacher_held_out(build_context(carved_else, 0)) is False  # it trained on them
    assert teacher_held_out(build_context(plain, 0)) is None  # cannot tell without parts


CONFIRM = Path(__file__).resolve().parents[1] / "configs" / "study" / \
    "fashion_mnist_confirm_split.json"


def test_the_committed_confirmation_split_is_disjoint_and_stratified():
    partition = load_partition(CONFIRM)
    sizes = {name: index.numel() for name, index in partition.parts.items()}
    assert sizes == {"students": 30000, "confirm": 10000, "teacher": 20000}
    assert torch.cat(list(partition.parts.values())).unique().numel() == 60000
    assert partition.dataset == "fashion_mnist" and partition.images == 60000


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian dataset not installed")
def test_the_committed_confirmation_split_avoids_what_the_earlier_rounds_scored():
    """Recomputed from the earlier rounds' settings: the students' 30k subset (split seed 0) is
    the students' part, and neither it nor the first teacher's own validation split (seed 0)
    nor the held-out teacher's reaches the confirmation split."""
    from horkd.data.digest import data_digest

    labels = labels_of(build_splits("fashion_mnist", val_fraction=0.0).train)
    partition = load_partition(CONFIRM)
    partition.check("fashion_mnist", labels.numel(), data_digest("fashion_mnist", None))
    subset = stratified_subset(labels, 30000, 0)
    assert torch.equal(partition.parts["students"], subset.sort().values)
    scored = torch.zeros(labels.numel(), dtype=torch.bool)
    scored[subset] = True
    scored[stratified_split(labels, 0.1, 0)[1]] = True  # teacher_classification's validation
    assert not scored[partition.parts["confirm"]].any()
    assert not scored[partition.parts["teacher"]].any()
    for index in partition.parts.values():
        counts = torch.bincount(labels[index], minlength=10)
        assert int(counts.max() - counts.min()) == 0
