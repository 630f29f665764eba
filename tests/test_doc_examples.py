"""The examples in README.md and docs/ hold: a renamed key, verb or option fails here, not a reader.

Every ```bash and ```python block is an example, checked by what the HTML comment on the line
above it says:

- nothing: executed in a scratch folder with tiny settings appended to the training commands (the
  README's in ``make test``; docs/' are slow: ``make test-all``), and checked statically too;
- ``<!-- example: static REASON -->``: every horkd command is parsed by the real command line and
  its config (or study file) validated with its overrides, every named file must exist, Python is
  compiled and its horkd imports resolved;
- ``<!-- example: skip REASON -->``: not checked (it needs machines the tests do not have).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_tree
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"<!--\s*example:\s*(static|skip)\b\s*(.*?)\s*-->")
# what a training command gets on top of the example's own settings: seconds, not hours
TINY = ["train.teacher.epochs=1", "train.assistant.epochs=1", "train.student.epochs=1",
        "train.teacher.max_steps_per_epoch=2", "train.assistant.max_steps_per_epoch=2",
        "train.student.max_steps_per_epoch=2", "train.teacher.batch_size=16",
        "train.assistant.batch_size=16", "train.student.batch_size=16", "device=cpu"]
TINY_BY_DATASET = {
    "image_folder": ["data.hr_size=16", "report.resolution_sizes=[16,8]"],
    "fashion_mnist": ["data.train_subset=null", "data.test_subset=null"],
}
TRAINING = {"run", "train", "ablate"}


@dataclass(frozen=True)
class Example:
    path: Path
    line: int
    language: str
    text: str
    mode: str  # "run" | "static" | "skip"
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def examples(path: Path) -> list[Example]:
    """The ```bash and ```python blocks of one Markdown file, with how each is checked."""
    found, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in ("bash", "python"):
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            mark = MARK.search(above)
            found.append(Example(path, i + 1, fence.group(1), "\n".join(lines[i + 1:end]),
                                 mark.group(1) if mark else "run", mark.group(2) if mark else ""))
        i = end + 1
    return found


ALL = [e for path in DOCS for e in examples(path)]


def commands(text: str) -> list[list[str]]:
    """The shell commands of a bash block: continuations joined, comments dropped, an output
    redirection (``> FILE``) left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        if ">" in tokens:
            tokens = tokens[:tokens.index(">")]
        if tokens:
            out.append(tokens)
    return out


def written(text: str) -> set[str]:
    """Files a block writes by redirection or ``--out FILE``: a later command of the block may
    read them."""
    return set(re.findall(r"(?:>|--out)\s+(\S+)", text)) | set(re.findall(r">(\S+)", text))


def horkd_argv(tokens: list[str]) -> list[str] | None:
    """The horkd arguments of a command (``horkd ...``, ``python -m horkd ...``, ``torchrun ...
    -m horkd ...``); None for any other command."""
    if tokens[0] == "horkd":
        return tokens[1:]
    if "-m" in tokens and tokens[tokens.index("-m") + 1:][:1] == ["horkd"]:
        return tokens[tokens.index("-m") + 2:]
    return None


def check_statically(tokens: list[str], where: str, made: frozenset[str] = frozenset()) -> None:
    """A command as a reader would type it, checked without training anything."""
    from horkd.cli import _config, parse_args
    from horkd.study.config import load_study

    argv = horkd_argv(tokens)
    if argv is None:
        if tokens[0] == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
            assert set(tokens[1:]) <= set(targets), f"{where}: no make target {tokens[1:]}"
        elif tokens[0] in ("python", "python3") and tokens[1].endswith(".py"):
            assert (ROOT / tokens[1]).is_file(), f"{where}: {tokens[1]} does not exist"
        elif tokens[0] not in ("pip", "git", "cd", "export", "apt-get"):
            pytest.fail(f"{where}: '{tokens[0]}' is not a command this test knows; mark the "
                        "block `<!-- example: skip REASON -->` if it cannot be checked")
        return
    if argv[:1] in (["--help"], ["--version"]) or "--help" in argv:
        return
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `horkd {' '.join(argv)}` is not a valid command line ({exc})")
    if getattr(args, "config", None) and args.command != "eval":
        _config(args)  # the config file with its overrides, validated as the command would
    if args.command == "study" and args.study_file not in made:
        load_study(args.study_file)


@pytest.mark.parametrize("example", [e for e in ALL if e.mode != "skip"], ids=lambda e: e.name)
def test_example_holds_statically(example, monkeypatch):
    monkeypatch.chdir(ROOT)
    if example.language == "python":
        code = compile(example.text, example.name, "exec")
        imports = [line for line in example.text.splitlines()
                   if re.match(r"(from horkd[\w.]* import |import horkd)", line)]
        exec(compile("\n".join(imports), example.name, "exec"), {})
        assert code is not None
        return
    for tokens in commands(example.text):
        check_statically(tokens, example.name, frozenset(written(example.text)))


def test_every_mark_says_why():
    for example in ALL:
        if example.mode != "run":
            assert example.reason, f"{example.name}: say why it is {example.mode}"


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = np.zeros((24, 24, 3), np.uint8)
    base[..., seed % 3] = 200  # each class its own colour, so the tiny models learn something
    Image.fromarray(np.clip(base + rng.integers(0, 55, base.shape), 0, 255).astype(np.uint8)).save(
        path)


def sandbox(folder: Path) -> Path:
    """A reader's working folder: the repository's configs, an image folder with train/ and
    test/ (three classes), loose photos, and Fashion-MNIST's IDX files."""
    (folder / "configs").symlink_to(ROOT / "configs")
    for c, name in enumerate(("cat", "dog", "bird")):  # one folder per class, no split made
        (folder / "my_images" / name).mkdir(parents=True)
        for i in range(30):
            _image(folder / "my_images" / name / f"{i:03d}.png", c + 3 * i)
    for photos in ("new_photos", "my_photos", "photos"):
        (folder / photos).mkdir()
        for i in range(3):
            _image(folder / photos / f"{i}.jpg", i)
    for name, seed in (("cat.jpg", 0), ("dog.png", 1), ("boot.png", 2), ("bag.jpg", 3)):
        _image(folder / name, seed)
    idx_tree(folder / "fashion-mnist", n_train=120, n_test=40)
    return folder


def run_example(example: Example, folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    if example.language == "python":
        exec(compile(example.text, example.name, "exec"), {"__name__": "__example__"})
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for tokens in commands(example.text):
        argv = horkd_argv(tokens)
        if argv is None:
            continue  # make, pip, python benchmarks: checked statically
        if argv and argv[0] in TRAINING:
            from horkd.config import load_config

            dataset = load_config(folder / argv[1]).data.dataset
            argv = [*argv, *TINY, *TINY_BY_DATASET.get(dataset, [])]
            if dataset == "fashion_mnist":
                argv.append(f"data.root={folder / 'fashion-mnist'}")
        done = subprocess.run([sys.executable, "-m", "horkd", *argv], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (
            f"{example.name}: `horkd {' '.join(argv)}` failed ({done.returncode}):\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def _run_in_order(examples_: list[Example], folder: Path, monkeypatch) -> None:
    sandbox(folder)
    for example in examples_:
        run_example(example, folder, monkeypatch)


def test_readme_examples_run(tmp_path, monkeypatch):
    """The README's walkthrough in order, as a reader runs it: a folder of images to a run, a
    prediction, an export, the Python API."""
    readme = [e for e in ALL if e.path.name == "README.md" and e.mode == "run"]
    assert len(readme) >= 3
    _run_in_order(readme, tmp_path, monkeypatch)
    assert (tmp_path / "labels.csv").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in DOCS[1:]
                                  if any(e.mode == "run" for e in examples(p))],
                         ids=lambda p: p.name)
def test_docs_examples_run(path, tmp_path, monkeypatch):
    _run_in_order([e for e in examples(path) if e.mode == "run"], tmp_path, monkeypatch)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else None]


def _confirm_facts() -> dict:
    return _facts("RESULTS-confirm")


def _facts(page: str) -> dict:
    import json

    return json.loads((ROOT / "docs" / f"{page}-figures" / "facts.json").read_text())


CONFIRM_COLUMNS = ["scratch", "semi_supervised", "hinton_kd", "kd_rkd", "horkd_no_assistant",
                   "horkd"]
CONFIRM_ROWS = {"width 8": "w8_labels1", "width 32": "w32_labels1"}
# the README's rows of the two confirmatory rounds: label -> (page, regime); its claims table has
# a column for each, in this order
DOMAIN_ROWS = {"Fashion-MNIST, width 8": ("RESULTS-confirm", "w8_labels1"),
               "Fashion-MNIST, width 32": ("RESULTS-confirm", "w32_labels1"),
               "glyphs, width 8": ("RESULTS-glyphs", "w8_labels1"),
               "glyphs, width 32": ("RESULTS-glyphs", "w32_labels1")}
COST_ROWS = {"Fashion-MNIST: minutes, width 32 (wall)": "RESULTS-confirm",
             "glyphs: CPU-minutes, width 32": "RESULTS-glyphs"}
CONFIRM_CLAIMS = {"the teacher's worth: Hinton KD - semi-supervised": ("hinton_kd",
                                                                       "semi_supervised"),
                  "HORKD - Hinton KD": ("horkd", "hinton_kd"),
                  "HORKD - (Hinton KD + RKD)": ("horkd", "kd_rkd"),
                  "HORKD without assistant - Hinton KD": ("horkd_no_assistant", "hinton_kd")}


def test_readme_results_are_the_pages():
    """The README's confirmatory tables say only what the two confirmatory pages show: each
    mean, each CPU cell, each claim's paired difference, interval and Holm-adjusted call read
    from the page's facts ("not declared" where the study file did not declare the claim);
    every other figure of the section found on one of the pages."""
    from horkd.study.compute import cost_cell
    from horkd.study.stats import Difference

    section = _section((ROOT / "README.md").read_text(), "## What the study found")
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 1:
            rows[cells[0]] = cells[1:]
    for label, (page, regime) in DOMAIN_ROWS.items():
        cells = next(v for k, v in rows.items() if k == label or k.startswith(label + " ("))
        methods = _facts(page)[regime]["lr_top1"]["methods"]
        assert cells == [f"{methods[m]['mean']:.2f}" for m in CONFIRM_COLUMNS], label
    for label, page in COST_ROWS.items():
        w32 = _facts(page)["w32_labels1"]["lr_top1"]["methods"]
        assert rows[label] == [cost_cell(w32[m]["cpu_seconds"]) for m in CONFIRM_COLUMNS], label
    for claim, (method, other) in CONFIRM_CLAIMS.items():
        for cell, (page, regime) in zip(rows[claim], DOMAIN_ROWS.values(), strict=True):
            c = next((c for c in _facts(page)[regime]["lr_top1"]["comparisons"]
                      if (c["method"], c["comparator"]) == (method, other)), None)
            if c is None:
                assert cell == "not declared", (claim, page, regime)
                continue
            interval = Difference(c["mean"], c["low"], c["high"], c["n"], c["level"]).interval()
            call = c["call"] if c["call"] in ("inconclusive", "pending") else f"**{c['call']}**"
            assert cell == f"{interval} {call}", (claim, page, regime)
    pages = "".join((ROOT / "docs" / f"{page}.md").read_text()
                    for page in ("RESULTS-confirm", "RESULTS", "RESULTS-glyphs",
                                 "RESULTS-glyphs-temperature"))
    prose = "\n".join(line for line in section.splitlines() if not line.startswith("|"))
    for number in re.findall(r"[+-]?\d+\.\d\d\b", prose):
        assert number in pages, f"README says {number}; no results page does"
    flat = " ".join(prose.split())
    for interval in re.findall(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", flat):
        assert interval in pages, f"README says {interval}; no results page does, whole"


def test_the_glyph_discussion_quotes_only_the_pages():
    """The discussion of the second domain says only what a results page shows: each figure
    with two decimals in its section is on the glyph page, or (where it sets the two domains
    side by side) on a Fashion-MNIST page; each difference with its interval is the glyph
    page's, whole; each share of the gap closed ("45% (82.64)") is a row of the page's
    every-label table; and it says "not met" as often as the page's Targets table does."""
    section = _section((ROOT / "docs" / "results-discussion.md").read_text(),
                       "## The second domain: glyphs from real fonts")
    glyphs = (ROOT / "docs" / "RESULTS-glyphs.md").read_text()
    pages = glyphs + "".join((ROOT / "docs" / f"{page}.md").read_text()
                             for page in ("RESULTS-confirm", "RESULTS", "RESULTS-glyphs-temperature"))
    for number in re.findall(r"[+-]?\d+\.\d\d\b", section):
        assert number in pages, f"the discussion says {number}; no results page does"
    intervals = re.findall(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", " ".join(section.split()))
    assert len(intervals) > 10
    follow_up = (ROOT / "docs" / "RESULTS-glyphs-temperature.md").read_text()
    for interval in intervals:  # a difference and its interval, whole, as a glyph page has it
        assert interval in glyphs + follow_up, f"the discussion says {interval}; no glyph page does"
    shares = re.findall(r"(\d+)% \((\d+\.\d\d)\)", " ".join(section.split()))
    assert shares
    for share, mean in shares:  # a method's test mean and its gap share on one table row
        assert any(f"| {mean} |" in row and f"| {share}% |" in row
                   for row in glyphs.splitlines()), (share, mean)
    targets = glyphs[glyphs.index("## Targets"):glyphs.index("\n## ", glyphs.index("## Targets") + 3)]
    not_met = targets.count("**not met")
    assert " ".join(section.split()).count(": not met") == not_met


def test_readme_findings_are_re_derived_from_the_pages_facts():
    """The confirmatory bullets' counted claims recomputed from the confirmatory page's facts
    (the teacher's worth over the best teacher-free student by validation, what ten seeds
    detect, what is below after Holm); the exploratory bullet's from the exploratory page's
    (its declared comparisons and their calls after Holm, the gains over scratch)."""
    import json
    from collections import Counter

    prose = " ".join(_section((ROOT / "README.md").read_text(),
                              "## What the study found").split())
    confirm = _confirm_facts()
    for regime in CONFIRM_ROWS.values():
        table = confirm[regime]["lr_top1"]
        for method in ("hinton_kd", "horkd"):
            c = next(c for c in table["comparisons"] if (c["method"], c["comparator"]) == (
                method, "semi_supervised"))
            assert f"{c['mean']:.2f}" in prose and c["call"] == "above", (regime, method)
        mdd = next(c for c in table["comparisons"]
                   if (c["method"], c["comparator"]) == ("horkd", "hinton_kd"))["mdd"]
        assert f"{mdd:.2f}" in prose, regime
    below = [(r, c["method"]) for r in CONFIRM_ROWS.values()
             for c in confirm[r]["lr_top1"]["comparisons"] if c["call"] == "below"]
    assert below == [("w8_labels1", "horkd_no_assistant")] or "below after it" not in prose

    facts = json.loads((ROOT / "docs" / "RESULTS-figures" / "facts.json").read_text())
    tables = [t for regime in facts.values() if isinstance(regime, dict)
              for t in regime.values() if isinstance(t, dict) and t.get("comparisons")]
    family = [c for t in tables for c in t["comparisons"]]
    calls = Counter(c["call"] for c in family)
    assert f"of {len(family)} comparisons" in prose
    assert ("none is above or below after correction" in prose) == (
        calls["above"] + calls["below"] == 0)
    assert f"{calls['equivalent']} are equivalent within ±0.5" in prose
    for regime in ("labels1", "labels3", "labels10"):
        gain = next(iter(facts[regime].values()))["methods"]["horkd"]["vs_scratch"]["mean"]
        assert f"{gain:.2f}" in prose, regime
    for regime in ("full", "w16_full", "w32_full"):  # every label: what the widths gain
        gain = next(iter(facts[regime].values()))["methods"]["horkd"]["vs_scratch"]["mean"]
        assert f"{gain:+.2f}" in prose, regime


def test_readme_says_which_glyph_students_validation_ships_as_the_page_does():
    """"Hinton KD ... in N of M glyph regimes" and "HORKD with or without assistant in two,
    within noise" are counted from the glyph page's ship facts (the runner-up's interval
    holding 0)."""
    from collections import Counter

    section = " ".join(_section((ROOT / "README.md").read_text(),
                                "## What the study found").split())
    ships = [regime["lr_top1"]["ship"] for regime in _facts("RESULTS-glyphs").values()]
    counts = Counter(ship["method"] for ship in ships)
    assert f"in {counts['hinton_kd']} of {len(ships)} glyph regimes" in section
    others = [s for s in ships if s["method"] != "hinton_kd"]
    assert {s["method"] for s in others} <= {"horkd", "horkd_no_assistant"}
    words = {1: "one", 2: "two", 3: "three"}
    assert f"HORKD with or without assistant in {words[len(others)]} glyph regimes, within noise" in section
    assert all(s["lead"]["low"] <= 0 <= s["lead"]["high"] for s in others)


def test_readme_caption_says_what_the_intervals_show():
    """The caption under the picture: the few-label gain as its interval's ends, the every-label
    gain as the upper end of the figure's width-8 student (what its interval rules out), and "no
    difference" only where no HORKD - Hinton KD comparison is above or below after Holm."""
    import json

    text = (ROOT / "README.md").read_text()
    caption = " ".join(re.search(r"\n\*(Fashion-MNIST.*?)\*\n", text, re.S).group(1).split())
    facts = json.loads((ROOT / "docs" / "RESULTS-figures" / "facts.json").read_text())

    def gain(regime: str) -> dict:
        return next(iter(facts[regime].values()))["methods"]["horkd"]["vs_scratch"]

    few = gain("labels1")
    assert f"{few['low']:+.2f} to {few['high']:+.2f} points with 1% of the labels" in caption
    every = gain("full")["high"]  # the figure's width-8 student with every label
    assert f"at most {every:+.2f} with every label" in caption
    calls = [c["call"] for regime in facts.values() if isinstance(regime, dict)
             for t in regime.values() if isinstance(t, dict)
             for c in t.get("comparisons") or []
             if c["method"] == "horkd" and c["comparator"] == "hinton_kd"]
    assert calls and ("HORKD and Hinton KD: no difference found" in caption) == (
        "above" not in calls and "below" not in calls)


def test_readme_across_sizes_bullet_is_the_pages_specialists_table():
    """The one-student-for-every-size bullet quotes HORKD's row of the page's table against the
    specialists: "no difference found" only where both intervals hold 0, the lowest end named as
    not ruled out, and the worst size's gain with its interval, above 0."""
    section = " ".join(_section((ROOT / "README.md").read_text(),
                                "## What the study found").split())
    bullet = re.search(r"\*\*One student for every size\*\*.*?(?= - \*\*|\[docs/results-)",
                       section).group(0)
    page = (ROOT / "docs" / "RESULTS.md").read_text()
    table = page[page.index("### `sizes_5x` against the single-size specialists"):]
    row = next(line for line in table.splitlines() if line.startswith("| horkd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    interval = r"([+-]\d+\.\d\d) \[([+-]\d+\.\d\d), ([+-]\d+\.\d\d)\]"
    at_sizes = [re.search(interval, c).groups() for c in cells[1:3]]
    for mean, low, high in at_sizes:
        assert f"{mean} [{low}, {high}]" in bullet
    held = all(float(low) <= 0 <= float(high) for _, low, high in at_sizes)
    assert ("no difference found" in bullet) == held
    lowest = min(float(low) for _, low, _ in at_sizes)
    assert f"up to {-lowest:.2f} below not ruled out" in bullet
    mean, low, high = re.search(interval, cells[3]).groups()
    assert f"{mean} [{low}, {high}] above" in bullet and float(low) > 0


def test_readme_names_the_semi_supervised_student_with_what_the_page_holds():
    """The control that separates the teacher from the unlabelled images is named where the
    teacher's worth is confirmed, with its difference from scratch as the page has it."""
    section = " ".join(_section((ROOT / "README.md").read_text(),
                                "## What the study found").split())
    bullet = section[section.index("**The teacher's knowledge"):section.index("- **HORKD against")]
    assert "`semi_supervised`" in bullet
    semi = _confirm_facts()["w8_labels1"]["lr_top1"]["methods"]["semi_supervised"]
    gain = semi["vs_scratch"]
    assert f"{gain['mean']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}]" in bullet


def test_yaml_examples_are_valid_settings():
    """A ```yaml block of the docs parses, and its study or executor settings validate."""
    import yaml

    from horkd.study.executors import ExecutorConfig

    blocks = [m.group(1) for path in DOCS
              for m in re.finditer(r"```yaml\n(.*?)```", path.read_text(), re.S)]
    assert blocks
    for text in blocks:
        raw = yaml.safe_load(text)
        if isinstance(raw, dict) and "executor" in raw:
            ExecutorConfig.model_validate(raw["executor"])


def test_the_front_door_stays_short_and_the_reference_stays_a_reference():
    """README: at most 1,500 words of prose, no paragraph over 150, the picture and both
    commands in its first 40 lines; config.md: no table cell over 60 words (findings live on
    the results page, linked)."""
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    assert len(prose.split()) <= 1500
    paragraphs = [p for p in re.split(r"\n\s*\n", prose)
                  if p.strip() and not p.lstrip().startswith(("|", "#", "- ", "* ", "<!--"))]
    assert max(len(p.split()) for p in paragraphs) <= 150
    first = "\n".join(text.splitlines()[:40])
    assert "![" in first and "make demo" in first and "make test" in first
    # the setup-only step a new user wants, named, and nothing but the environment
    assert "make setup" in first and "make\nsetup`" in text.split("source .venv/bin/activate")[2]
    assert re.search(r"^setup: \$\(STAMP\)\n\n", (ROOT / "Makefile").read_text(), re.M)
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", first).group(1)
    assert (ROOT / image).is_file()
    reference = (ROOT / "docs" / "config.md").read_text()
    cells = [c for line in reference.splitlines() if line.startswith("|")
             for c in line.strip().strip("|").split("|")]
    assert max(len(c.split()) for c in cells) <= 60
