"""The student a run ships: chosen on validation (never the test split), its lead and whether
that lead is noise; the run directory then names it for predict, export, eval and Python."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from horkd import Recogniser
from horkd.checkpoint import CheckpointError
from horkd.cli import main
from horkd.config import config_from_dict
from horkd.experiment import run_experiment
from horkd.experiment.ship import (
    SeedEvidence,
    candidates,
    choose,
    describe,
    wilson_lower,
)
from tests.conftest import tiny_config_dict


def _evidence(seed: int, hits: dict[str, list[int]], classes: int | None = None) -> SeedEvidence:
    e = SeedEvidence(seed, classes=classes)
    for name, row in hits.items():
        e.hits[name] = torch.tensor(row, dtype=torch.float)
        e.scores[name] = 100.0 * sum(row) / len(row)
        e.stage_dirs[name] = f"seed{seed}/students/{name}"
    return e


def test_references_are_bounds_not_candidates():
    assert candidates(["teacher_lr", "lr_oracle", "scratch", "hinton_kd", "horkd"]) == [
        "scratch", "hinton_kd", "horkd"]


def test_a_lead_a_few_images_wide_on_few_images_is_noise_and_a_wide_one_is_not():
    # 20 images: horkd right on 12, hinton_kd on 10 - two images apart, within noise
    close = _evidence(0, {"hinton_kd": [1] * 10 + [0] * 10, "horkd": [1] * 12 + [0] * 8})
    choice = choose([close], "validation top-1 at 4 px")
    assert (choice["method"], choice["runner_up"]) == ("horkd", "hinton_kd")
    assert choice["lead"] == pytest.approx(10.0)
    assert choice["within_noise"] is True and choice["standard_error"] > 5.0
    # 200 images, 30 points apart: far beyond noise
    far = _evidence(0, {"scratch": [1] * 100 + [0] * 100, "horkd": [1] * 160 + [0] * 40})
    choice = choose([far], "validation top-1 at 4 px")
    assert choice["method"] == "horkd" and choice["within_noise"] is False
    assert choice["cut"] == pytest.approx(1.96, abs=1e-3)  # one seed: the normal quantile


def test_the_method_with_the_best_mean_ships_from_its_best_seed():
    seeds = [_evidence(0, {"scratch": [1, 1, 0, 0], "horkd": [1, 0, 0, 0]}),
             _evidence(1, {"scratch": [1, 0, 0, 0], "horkd": [1, 1, 1, 1]})]
    choice = choose(seeds, "validation top-1 at 4 px")
    assert choice["method"] == "horkd" and choice["seed"] == 1  # mean 62.5 against 37.5
    assert choice["path"] == "seed1/students/horkd"
    assert choice["validation"] == {"horkd": 62.5, "scratch": 37.5}
    # two seeds: Student's t at 1 df, and the call names the spread it holds
    assert choice["cut"] == pytest.approx(12.706, abs=1e-3)
    assert choice["noise"] == ("the spread of 2 per-seed leads on the same 4 images (another "
                               "draw of images not included), Student's t at 1 df")
    assert "Student's t at 1 df" in describe(choice) and "12.71 standard errors" in describe(choice)


def test_one_seeds_noise_call_says_it_leaves_the_seeds_spread_out():
    one = _evidence(0, {"hinton_kd": [1] * 10 + [0] * 10, "horkd": [1] * 12 + [0] * 8})
    choice = choose([one], "validation top-1 at 4 px")
    assert choice["noise"].endswith("one seed: seed-to-seed spread not included")
    assert "one seed: seed-to-seed spread not included" in describe(choice)


def test_wilson_lower_bound_matches_the_formula():
    # 8 of 13 right: p = 0.615, n = 13 -> Wilson's lower end 35.5%
    assert wilson_lower(torch.tensor([1.0] * 8 + [0.0] * 5)) == pytest.approx(35.52, abs=0.01)
    assert wilson_lower(torch.ones(1000)) > 99.5 and wilson_lower(torch.zeros(10)) == 0.0


def test_a_near_chance_student_is_said_to_be_not_worth_shipping():
    # 4 classes (chance 25): 7 of 20 right is 35%, but its 95% lower bound (18.1) is near chance
    weak = _evidence(0, {"scratch": [1] * 6 + [0] * 14, "horkd": [1] * 7 + [0] * 13}, classes=4)
    choice = choose([weak], "validation top-1 at 4 px")
    assert choice["method"] == "horkd" and choice["chance"] == 25.0
    assert choice["near_chance"] is True and choice["lower_bound"] < 30.0
    text = describe(choice)
    assert text.startswith("Near chance: not worth shipping; more labels/epochs.")
    assert "Best of a poor lot `horkd`" in text and "Deploy" not in text  # never both
    # 18 of 20: far above chance, no warning
    strong = _evidence(0, {"scratch": [1] * 6 + [0] * 14, "horkd": [1] * 18 + [0] * 2}, classes=4)
    choice = choose([strong], "validation top-1 at 4 px")
    assert choice["near_chance"] is False and "chance" not in describe(choice).lower()
    assert describe(choice).startswith("Deploy `horkd`")


def _one_method(hits: list[tuple[int, int]], classes: int) -> dict:
    """The choice where ``horkd`` (right on r of n images per seed) beats a weaker ``scratch``."""
    seeds = [_evidence(i, {"scratch": [0] * n, "horkd": [1] * r + [0] * (n - r)}, classes)
             for i, (r, n) in enumerate(hits)]
    return choose(seeds, "validation top-1 at 4 px")


def test_near_chance_means_the_lower_bound_within_5_points_of_chance():
    # 10 classes (chance 10): 14% of 10,000 is sure but only 4 points over chance: near it
    assert _one_method([(1400, 10000)], 10)["near_chance"] is True
    # 40% of 10,000: far from it
    assert _one_method([(4000, 10000)], 10)["near_chance"] is False
    # 40% of 20 images: its lower bound (21.9) is within 5 points of chance 25 (4 classes),
    # though not of chance 10 (10 classes)
    assert _one_method([(8, 20)], 4)["near_chance"] is True
    assert _one_method([(8, 20)], 10)["near_chance"] is False
    choice = _one_method([(8, 20)], 4)
    assert describe(choice).startswith("Near chance: not worth shipping; more labels/epochs. "
                                       "`horkd`'s validation top-1 is within 5 points of chance")


def test_near_chance_pools_the_chosen_methods_seeds_not_its_best_seed():
    # 4 classes: seeds at 65% and 15% of 20. The best seed's lower bound (43.3) clears 30;
    # the method's 16 of 40 (lower bound 26.3) does not
    choice = _one_method([(13, 20), (3, 20)], 4)
    assert choice["seed"] == 0 and choice["lower_bound_images"] == 40
    assert choice["lower_bound"] == pytest.approx(26.35, abs=0.01)
    assert choice["near_chance"] is True


def test_a_run_whose_student_learnt_nothing_says_so_where_it_names_it(tmp_path, capsys):
    """The run's closing lines (results.md, printed) and ship.json: near chance, not worth
    shipping - here a student trained one step at a vanishing learning rate."""
    import yaml

    raw = tiny_config_dict(tmp_path / "run", methods=["scratch"])
    raw["train"] = {"student": {"epochs": 1, "batch_size": 32, "max_steps_per_epoch": 1,
                                "optimizer": {"lr": 1e-9}}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--no-progress", "--no-report"]) == 0
    assert "Near chance: not worth shipping; more labels/epochs." in capsys.readouterr().out
    choice = json.loads((tmp_path / "run" / "ship.json").read_text())
    assert choice["near_chance"] is True and choice["lower_bound"] <= choice["chance"] + 5
    Recogniser.load(tmp_path / "run")  # using it says so again
    assert "near chance on validation" in capsys.readouterr().err


def test_a_task_without_per_image_hits_chooses_without_a_noise_call():
    e = SeedEvidence(0, {"scratch": "s", "horkd": "h"}, {"scratch": 40.0, "horkd": 45.0})
    choice = choose([e], "validation recall@1 at 4 px")
    assert choice["method"] == "horkd" and choice["within_noise"] is None


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ship") / "run"
    raw = tiny_config_dict(out, methods=["teacher_lr", "scratch", "hinton_kd"])
    raw["seeds"] = [0, 1]
    raw["train"] = {s: {"epochs": 2, "batch_size": 32, "max_steps_per_epoch": 3}
                    for s in ("teacher", "assistant", "student")}
    run_experiment(config_from_dict(raw), progress=False)
    return out


def test_a_run_names_its_student_from_the_validation_split(two_seed_run):
    choice = json.loads((two_seed_run / "ship.json").read_text())
    assert set(choice["validation"]) == {"scratch", "hinton_kd"}  # teacher_lr: a bound
    # the scores are the validation scores that picked each student's epoch, not the test's
    for name, mean in choice["validation"].items():
        best = [json.loads((two_seed_run / f"seed{s}/students/{name}/done.json").read_text())
                ["best_score"] for s in (0, 1)]
        assert mean == pytest.approx(sum(best) / 2, abs=1e-3), name
    assert choice["method"] == max(choice["validation"], key=choice["validation"].get)
    assert (two_seed_run / choice["path"] / "model.json").is_file()
    results = (two_seed_run / "results.md").read_text()
    assert "## The student to ship" in results and f"Deploy `{choice['method']}`" in results
    # each seed carved its own validation split (no data.split_seed): the noise call says so
    assert choice["noise"] == ("the spread of 2 per-seed leads on each seed's own images, "
                               "Student's t at 1 df")
    # chance on validation, from the chosen method's hits pooled over both seeds, and the report
    # says what results.md says (a near-chance student's warning first)
    assert choice["chance"] == pytest.approx(10.0)  # ten digits
    assert choice["lower_bound_images"] == 2 * choice["validation_images"]
    assert choice["summary"].startswith("Near chance") == choice["near_chance"]
    assert main(["report", str(two_seed_run)]) == 0
    report = (two_seed_run / "report" / "report.md").read_text()
    assert "### The student to ship" in report and choice["summary"] in report


def test_the_run_directory_is_the_chosen_model(two_seed_run, tmp_path, capsys):
    choice = json.loads((two_seed_run / "ship.json").read_text())
    stage = two_seed_run / choice["path"]
    image = torch.rand(1, 16, 16)
    assert Recogniser.load(two_seed_run).predict([image]) == Recogniser.load(stage).predict([image])
    assert f"using the run's chosen student, {choice['method']}" in capsys.readouterr().err
    assert main(["eval", str(two_seed_run), "--sizes", "4"]) == 0
    said = capsys.readouterr()
    assert f"({choice['method']})" in said.out and choice["method"] in said.err
    # a run directory without its choice (unfinished, or from an older version) says so
    older = tmp_path / "older"
    shutil.copytree(two_seed_run, older)
    (older / "ship.json").unlink()
    with pytest.raises(CheckpointError, match="without a chosen student"):
        Recogniser.load(older)


def test_a_study_page_names_per_regime_the_method_it_would_ship():
    from horkd.study.document import ship_line

    def final(method, vals):
        return {"regime": "r", "method": method, "val": {str(s): v for s, v in enumerate(vals)}}

    summary = {"study": {"seeds": [0, 1, 2], "regimes": {"r": {}}},
               "finals": [final("lr_oracle", [99, 99, 99]),  # a bound, never shipped
                          final("scratch", [80.0, 81.0, 79.0]),
                          final("horkd", [82.0, 83.5, 81.0]),
                          final("hinton_kd", [81.0, 82.0])]}  # a seed still to come
    line, facts = ship_line(summary, "r")
    assert facts["method"] == "horkd" and facts["runner_up"] == "scratch"
    assert line.startswith("Would ship: `horkd`") and "(beyond noise)" in line
    assert "+2.17 [" in line and line.endswith("pending: hinton_kd.")
    summary["finals"][1] = final("scratch", [83.0, 80.0, 83.0])  # level within the seeds' spread
    line, _ = ship_line(summary, "r")
    assert "within noise: the interval holds 0" in line


def test_a_study_pages_ship_lead_pairs_only_runs_of_one_teacher():
    """As every pair on the page: a seed whose two runs learnt from different teachers is left
    out of the lead, and said to be."""
    from horkd.study.document import ship_line

    def final(method, vals, weights):
        return {"regime": "r", "method": method, "val": {str(s): v for s, v in enumerate(vals)},
                "weights": {str(s): w for s, w in enumerate(weights)}}

    summary = {"study": {"seeds": [0, 1, 2, 3], "regimes": {"r": {}}},
               "finals": [final("hinton_kd", [82.0, 83.0, 81.0, 90.0], ["a", "a", "a", "b"]),
                          final("horkd", [81.0, 82.5, 80.0, 70.0], ["a", "a", "a", "a"])]}
    line, facts = ship_line(summary, "r")
    assert facts["method"] == "hinton_kd" and facts["runner_up"] == "horkd"
    assert facts["lead"]["mean"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)  # seeds 0-2 only
    assert "(seed 3 left out: the two runs learnt from different teachers)" in line


def test_resuming_with_a_changed_config_drops_the_old_choice(two_seed_run, tmp_path):
    import yaml

    from horkd.run_dir import prepare_run_dir

    run = tmp_path / "run"
    shutil.copytree(two_seed_run, run)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["output_dir"], raw["methods"] = str(run), ["scratch"]
    prepare_run_dir(config_from_dict(raw), run, resume=True)
    assert not (run / "ship.json").exists()  # until the resumed run chooses again
