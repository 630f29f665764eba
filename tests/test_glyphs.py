"""The glyphs dataset on real font files: matplotlib (a dependency) ships DejaVu, STIX and the
Computer Modern fonts, so every machine that runs the tests has a small real font set."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from horkd.data import DataNotFoundError, build_splits
from horkd.data.digest import data_digest
from horkd.data.glyphs import CHARACTERS, cache
from horkd.data.glyphs.fonts import family_key, named_otherwise
from horkd.data.glyphs.render import FaceRenderer

FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "STIXGeneral.ttf",
         "STIXGeneralBol.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf"]
LACKING = "DejaVuSansDisplay.ttf"  # draws a few symbols only
PLACEHOLDERS = "LastResortHE-Regular.ttf"  # maps every character to one placeholder box
SYMBOLS = ["cmsy10.ttf", "cmex10.ttf"]  # maths symbols and delimiters at the Latin code points


def _matplotlib_fonts() -> Path:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    if not all((folder / name).is_file() for name in [*FONTS, LACKING, PLACEHOLDERS, *SYMBOLS]):
        pytest.skip(f"matplotlib's bundled fonts are not all in {folder}")
    return folder


@pytest.fixture
def font_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Eight usable faces in five families, one lacking characters, one drawing placeholders,
    two symbol fonts, and a renamed copy of a face (a duplicate); the cache in the test's own
    folder."""
    source = _matplotlib_fonts()
    fonts = tmp_path / "fonts"
    (fonts / "more").mkdir(parents=True)
    for name in [*FONTS, LACKING, PLACEHOLDERS, *SYMBOLS]:
        shutil.copy(source / name, fonts / name)
    shutil.copy(source / "cmr10.ttf", fonts / "more" / "copy-of-cmr10.ttf")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return fonts


def _splits(root: Path, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("glyph_min_families", 3)
    return build_splits("glyphs", root=str(root), hr_size=16, glyph_renders=2, **kw)


def test_glyph_set_splits_by_family_and_leaves_bad_faces_out(font_dir: Path) -> None:
    splits = _splits(font_dir)
    assert splits.info.num_classes == 62 and splits.info.class_names == list(CHARACTERS)
    image, label = splits.test[0]
    assert image.shape == (1, 16, 16) and 0 <= label < 62
    base = splits.train.dataset
    families = {name: set(base.families[torch.as_tensor(part.indices)].tolist())
                for name, part in (("train", splits.train), ("val", splits.val))}
    test = set(splits.test.families.tolist())
    assert families["train"] and families["val"] and test
    assert not (families["train"] & test) and not (families["val"] & test)
    assert not (families["train"] & families["val"])
    assert len(splits.train) + len(splits.val) + len(splits.test) == 8 * 2 * 62
    found = cache.load_glyphs(str(font_dir), 16, 2)
    counts = found.manifest["counts"]
    assert counts["usable_faces"] == 8 and counts["families"] == 5
    assert counts["excluded"] == {"unreadable": 0, "missing_characters": 1,
                                  "other_characters": 2, "indistinct": 1, "small_capitals": 0,
                                  "duplicate": 1}
    symbols = {Path(e["file"]).name for e in found.manifest["excluded"]["other_characters"]}
    assert symbols == set(SYMBOLS)
    assert "cmr10.ttf" in found.manifest["excluded"]["duplicate"][0]["why"]
    listing = list(found.folder.glob("split[0-9]*-test*.json"))
    assert len(listing) == 1 and "DejaVu" in listing[0].read_text()


def test_glyph_set_is_read_back_from_its_cache(font_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = _splits(font_dir)
    monkeypatch.setattr(cache, "render_set", lambda *a, **k: pytest.fail("rendered again"))
    again = _splits(font_dir)
    assert torch.equal(first.test.images, again.test.images)


def test_font_changes_change_the_data_digest(font_dir: Path) -> None:
    before = data_digest("glyphs", str(font_dir))
    assert before is not None and data_digest("glyphs", str(font_dir)) == before
    (font_dir / "more" / "copy-of-cmr10.ttf").unlink()
    assert data_digest("glyphs", str(font_dir)) != before


def test_too_few_fonts_is_one_line_saying_what_to_do(font_dir: Path) -> None:
    """A folder of one's own is told to hold more families (``make glyphs`` fills the system's
    folders, not it), and a lower floor is offered only where the fonts can still split."""
    with pytest.raises(DataNotFoundError) as caught:
        _splits(font_dir, glyph_min_families=6)
    message = str(caught.value)
    assert "\n" not in message and "5 design groups" in message and "make glyphs" not in message
    assert f"add fonts of other families to {font_dir}" in message
    assert "data.glyph_min_families=5" in message
    for path in font_dir.rglob("*.ttf"):
        if "DejaVu" not in path.name:
            path.unlink()
    with pytest.raises(DataNotFoundError) as caught:
        _splits(font_dir)
    message = str(caught.value)
    assert "\n" not in message and "1 design groups" in message
    assert "add fonts of other families" in message and "glyph_min_families=1" not in message


def test_the_render_command_says_in_one_line_what_to_do(
        font_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m horkd.data.glyphs``: a missing or empty folder is one line (no traceback);
    a set a run would refuse is rendered and says so."""
    from horkd.data.glyphs.__main__ import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "a.woff").write_bytes(b"wOFF")
    for folder, said in ((tmp_path / "absent", "does not exist"),
                         (tmp_path / "empty", "no .ttf/.otf/.ttc font file under"),
                         (tmp_path / "web", "only 1 font file of other kinds (.woff); convert them")):
        with pytest.raises(SystemExit) as caught:
            main(["--root", str(folder), "--hr-size", "8", "--renders", "1"])
        assert said in str(caught.value) and "\n" not in str(caught.value)
        assert "make glyphs" not in str(caught.value)
    (font_dir / "more" / "x.ttf").write_bytes(bytes(range(256)) * 8)  # not a font
    (font_dir / "more" / "web.woff2").write_bytes(b"wOF2")
    with pytest.raises(SystemExit) as refused:  # a set a run refuses: exit status 1
        main(["--root", str(font_dir), "--hr-size", "8", "--renders", "1"])
    assert refused.value.code == 1
    out = capsys.readouterr().out
    assert "8 usable faces in 5 design groups" in out
    assert "1 render per character" in out  # one render, one word
    # each font left out is named, where it lies under the root, with why
    assert "left out (unreadable) more/x.ttf: TTLibError" in out
    assert "left out (other characters) cmex10.ttf" in out
    assert "left out (missing characters) DejaVuSansDisplay.ttf: lacks all 62" in out
    assert "not read: 1 font file of other kinds (.woff2)" in out
    assert "a run refuses this set" in out and "data.glyph_min_families=5" in out
    main(["--root", str(font_dir), "--hr-size", "8", "--renders", "1", "--min-families", "5"])
    assert "refuses" not in capsys.readouterr().out


def test_train_subset_validates_on_the_validation_fonts_in_proportion(font_dir: Path) -> None:
    splits = _splits(font_dir, train_subset=124, val_fraction=0.2)
    assert len(splits.train) == 124 and len(splits.val) == 31
    whole = _splits(font_dir, val_fraction=0.2)
    assert set(splits.val.indices) <= set(whole.val.indices)


def test_each_face_of_a_font_collection_is_a_face(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``.ttc`` (how many systems ship a family's weights) gives every face it holds, each
    named by its number, rendered from its own outlines."""
    from fontTools.ttLib import TTCollection, TTFont

    source = _matplotlib_fonts()
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    fonts = tmp_path / "fonts"
    fonts.mkdir()
    collection = TTCollection()
    collection.fonts = [TTFont(str(source / "DejaVuSans.ttf")), TTFont(str(source / "cmr10.ttf"))]
    collection.save(str(fonts / "pair.ttc"))
    shutil.copy(source / "cmss10.ttf", fonts / "cmss10.ttf")
    found = cache.load_glyphs(str(fonts), 8, 1)
    names = sorted(Path(face["file"]).name for face in found.manifest["faces"])
    assert names == ["cmss10.ttf", "pair.ttc#0", "pair.ttc#1"]
    assert found.manifest["counts"]["families"] == 3
    faces = [Path(face["file"]).name for face in found.manifest["faces"]]
    first, second = (found.images[found.faces == faces.index(f"pair.ttc#{i}")] for i in range(2))
    assert first.shape == second.shape == (62, 8, 8) and not np.array_equal(first, second)


def test_a_collection_header_that_claims_more_faces_than_its_file_holds_is_one_bad_face(
        tmp_path: Path) -> None:
    """A damaged ``.ttc`` whose header claims 2**31 - 1 faces (an offset table far beyond the
    file) is read as one face, left out as unreadable, not two billion face numbers."""
    from horkd.data.glyphs.fonts import faces_in

    damaged = tmp_path / "damaged.ttc"
    damaged.write_bytes(b"ttcf" + (1 << 16).to_bytes(4, "big") + (2**31 - 1).to_bytes(4, "big"))
    assert faces_in(damaged) == [0]
    honest = tmp_path / "two.ttc"
    honest.write_bytes(b"ttcf" + (1 << 16).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(8))
    assert faces_in(honest) == [0, 1]


def test_small_capitals_are_told_from_small_letters() -> None:
    """A face drawing smaller capitals for its small letters (small caps, titling) is found;
    a text face, and the same face cut out of boxes (reverse video), are not."""
    from PIL import Image

    from horkd.data.glyphs.render import small_as_capitals
    from horkd.data.glyphs.selection import SMALL_CAPITALS_LIMIT

    canvases = FaceRenderer(str(_matplotlib_fonts() / "DejaVuSans.ttf"), 32).canvases
    assert len(small_as_capitals(canvases)) <= 12  # c o s u v w x z and a few
    small_caps = list(canvases)
    for capital in CHARACTERS[10:36]:
        big = Image.fromarray(canvases[CHARACTERS.index(capital)])
        shrunk = np.asarray(big.resize((big.width * 7 // 10, big.height * 7 // 10)))
        canvas = np.zeros_like(canvases[0])
        canvas[-shrunk.shape[0]:, :shrunk.shape[1]] = shrunk
        small_caps[CHARACTERS.index(capital.lower())] = canvas
    assert len(small_as_capitals(small_caps)) > SMALL_CAPITALS_LIMIT
    boxed = []
    for canvas in canvases:
        rows, cols = np.nonzero(canvas > 127)
        box = np.zeros_like(canvas)
        box[max(0, rows.min() - 16):rows.max() + 17, max(0, cols.min() - 16):cols.max() + 17] = 255
        boxed.append(np.where(canvas > 127, 0, box).astype(np.uint8))
    assert len(small_as_capitals(boxed)) <= 12


def test_glyph_names_tell_a_symbol_font_from_a_text_font() -> None:
    """Greek, dingbat and maths names at the Latin code points are other characters; variant
    suffixes, numbered names and private-use old-style figures are the character itself."""
    assert named_otherwise({"A": "Alpha", "B": "a105", "0": "prime", "a": "a"}) == "AB0"
    assert named_otherwise({"a": "a.ss01", "A": "uni0041", "b": "glyph36", "c": "cid00034",
                            "0": "zerooldstyle", "1": "one.tf"}) == ""


def test_the_data_digest_changes_with_the_rules_the_set_is_made_by(
        font_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import horkd.data.glyphs as glyphs

    before = data_digest("glyphs", str(font_dir))
    monkeypatch.setattr(glyphs, "RENDER_VERSION", glyphs.RENDER_VERSION + 1)
    assert data_digest("glyphs", str(font_dir)) != before


def test_family_key_keeps_the_cuts_of_one_design_together() -> None:
    assert family_key("DejaVu Sans Condensed") == family_key("DejaVu Serif") == "dejavu"
    assert family_key("LM Roman 10") == "lm"
    assert family_key("Go Smallcaps") == family_key("Go Mono") == "go"
    assert family_key("B612 Mono") == "b612"
    assert family_key("Liberation Sans") != family_key("Lato")
    # words run together (family names without spaces) are the same design's
    assert family_key("OCRACondensed") == family_key("OCRA Bold") == "ocra"
    assert family_key("OpenDyslexicMono") == family_key("OpenDyslexic") != family_key("Open Sans")


def test_designs_that_share_a_name_word_split_as_one() -> None:
    """The leaks a split by family key left in the system set: each pair sat on both sides."""
    from horkd.data.glyphs.designs import design_groups

    names = ["Cabin", "CabinSketch", "Cabin Sketch", "Anonymous Pro", "Anonymous Pro Minus",
             "Tiresias Infofont", "Infofont Z", "Linux Biolinum O", "Biolinum Keyboard O",
             "Go", "Go Mono", "Karla", "Lato", "DejaVu Sans", "B612 Mono"]
    group = design_groups([(n, family_key(n)) for n in names])

    def of(name: str) -> str:
        return group[family_key(name)]

    for first, second in [("Cabin", "CabinSketch"), ("Cabin", "Cabin Sketch"),
                          ("Anonymous Pro", "Anonymous Pro Minus"),
                          ("Tiresias Infofont", "Infofont Z"),
                          ("Linux Biolinum O", "Biolinum Keyboard O"), ("Go", "Go Mono")]:
        assert of(first) == of(second), (first, second)
    # short or common words tie nothing: these stay designs of their own
    apart = ["Cabin", "Anonymous Pro", "Infofont Z", "Go", "Karla", "Lato", "DejaVu Sans",
             "B612 Mono", "Linux Biolinum O"]
    assert len({of(n) for n in apart}) == len(apart)
    kinds = [("Dancing Script", "Kaushan Script"), ("Routed Gothic", "URW Gothic"),
             ("Berenis ADF Pro Math", "DejaVu Math TeX Gyre"), ("OCR A", "OCR B")]
    grouped = design_groups([(n, family_key(n)) for pair in kinds for n in pair])
    for first, second in kinds:
        assert grouped[family_key(first)] != grouped[family_key(second)], (first, second)


def test_faces_drawing_nearly_the_same_letters_split_as_one_design() -> None:
    """Unrelated names, one design (STIX General and Nimbus Roman both draw Times): a face
    whose binarised letters differ from another's in under NEAR_TWIN of the pixels joins its
    group; one that differs in more stays apart."""
    from horkd.data.glyphs.designs import NEAR_TWIN, design_groups, near_twins

    rng = np.random.default_rng(0)
    pixels = 62 * 16 * 16
    times = rng.random(pixels) < 0.3
    clone = times.copy()
    clone[rng.choice(pixels, int(0.5 * NEAR_TWIN * pixels), replace=False)] ^= True
    other = times.copy()
    other[rng.choice(pixels, int(2 * NEAR_TWIN * pixels), replace=False)] ^= True
    shapes = np.stack([np.packbits(x) for x in (times, clone, other)])
    assert near_twins(shapes, pixels) == [(0, 1)]
    names = [("Nimbus Roman", "nimbus"), ("STIX General", "stix general"), ("Karla", "karla")]
    group = design_groups(names, twins=[("stix general", "nimbus")])
    assert group["stix general"] == group["nimbus"] != group["karla"]


def test_renders_are_seeded_and_varied() -> None:
    font = str(_matplotlib_fonts() / "DejaVuSans.ttf")
    renderer = FaceRenderer(font, 16)
    one, same, other = renderer.varied(2, 1), renderer.varied(2, 1), renderer.varied(2, 2)
    assert one.shape == (124, 16, 16) and one.dtype == np.uint8
    assert np.array_equal(one, same) and not np.array_equal(one, other)
    assert not np.array_equal(one[:62], one[62:])  # the two renders differ
    plain = renderer.plain().astype(float)
    # an "o" is drawn smaller than an "O": the case is kept, not scaled away
    assert plain[CHARACTERS.index("o")].sum() < 0.8 * plain[CHARACTERS.index("O")].sum()


def test_the_page_pictures_confusable_glyphs_of_test_fonts_at_hr_and_lr(
        font_dir: Path, tmp_path: Path) -> None:
    from conftest import tiny_config_dict
    from PIL import Image

    from horkd.study.data_figure import data_section

    splits = _splits(font_dir)
    picked, titles, what = splits.test.picture_columns(columns=14)
    families = splits.test.families[picked].tolist()
    assert [CHARACTERS[int(splits.test.labels[i])] for i in picked] == titles
    assert titles[:7] == list("0O1lI5S")
    # one face per family, each family a test family (the split's own), named in the caption
    assert len(set(families)) == len(picked) // 7
    assert all(families[i] == families[i - i % 7] for i in range(len(picked)))
    faces = {int(splits.test.faces[i]) for i in picked}
    assert all(f"`{splits.test.face_families[f]}`" in what for f in faces)  # their own names

    base = tiny_config_dict(tmp_path / "runs")
    # a test_subset (as the glyph study takes) still pictures whole test fonts
    base["data"] = {"dataset": "glyphs", "root": str(font_dir), "hr_size": 16,
                    "glyph_renders": 2, "glyph_min_families": 3, "test_subset": 20}
    study = {"base": base, "regimes": {
        "plain": {"overrides": []},
        "hard": {"overrides": ["degrade.lr_size=3", "degrade.noise_std=0.05"]}}}
    lines, _ = data_section(study, tmp_path)
    assert "- LR 4 px: `plain`" in lines and "- LR 3 px, noise 0.05: `hard`" in lines
    assert any("test font" in line for line in lines)
    assert np.asarray(Image.open(tmp_path / "data.png").convert("L")).std() > 20
    # the split sizes, and the faces and design groups each is drawn from, as the splits hold
    test_faces = splits.test.faces.unique().numel()
    test_groups = splits.test.families.unique().numel()
    sizes = next(line for line in lines if line.startswith("The base run's images:"))
    assert f"{len(splits.test):,} test ({test_faces} faces in {test_groups} design groups), " \
           "of which each run scores a stratified 20." in sizes
    assert f"{len(splits.val):,} validation (" in sizes
    # and the whole set they are drawn from: files read, faces kept, groups, faces left out
    c = cache.load_glyphs(str(font_dir), 16, 2).manifest["counts"]
    assert (f" They are drawn from the glyph set of {c['font_files']} font files: "
            f"{c['usable_faces']} usable faces in {c['families']} design groups (left out: ") \
        in sizes
    assert f"{c['excluded']['duplicate']} duplicate" in sizes


def test_an_experiment_trains_on_glyphs_and_validates_on_the_validation_fonts(
        font_dir: Path, tmp_path: Path) -> None:
    """The data settings reach the builder through a run (renders, the family floor), and the
    teacher's top-1 beats chance (1 in 62) on the test fonts after a few steps."""
    from conftest import tiny_config_dict

    from horkd.config import config_from_dict
    from horkd.experiment import run_experiment

    cfg = tiny_config_dict(tmp_path / "run", methods=["scratch"])
    cfg["data"] = {"dataset": "glyphs", "root": str(font_dir), "hr_size": 16,
                   "glyph_renders": 2, "glyph_min_families": 3,
                   "augment": {"crop_padding": 0, "hflip": False}}
    stage = {"epochs": 8, "batch_size": 32,
             "optimizer": {"name": "adam", "lr": 0.003, "weight_decay": 0}}
    cfg["train"] = {"teacher": stage, "assistant": stage, "student": stage}
    outcome = run_experiment(config_from_dict(cfg), progress=False)
    teacher = next(row for row in outcome.table if row["method"] == "teacher")
    assert teacher["hr_top1"] > 3 * 100 / 62, teacher  # 14.2 here; untrained 1.6


def test_font_halves_keep_teachers_and_students_on_disjoint_families(font_dir: Path) -> None:
    """data.glyph_fonts: the teacher half and the students' half of the training families share
    no family, cover the training fonts between them, keep the validation and test fonts, are
    the same every time, and change the stage fingerprints."""
    from conftest import tiny_config_dict

    from horkd.config import ConfigError, config_from_dict
    from horkd.run_dir import teacher_fingerprint

    def families(splits) -> set[int]:  # type: ignore[no-untyped-def]
        base = splits.train.dataset
        return set(base.families[torch.as_tensor(splits.train.indices)].tolist())

    whole = _splits(font_dir, val_fraction=0.2, test_fraction=0.1)
    teacher = _splits(font_dir, val_fraction=0.2, test_fraction=0.1, glyph_fonts="teacher")
    students = _splits(font_dir, val_fraction=0.2, test_fraction=0.1, glyph_fonts="students")
    assert families(teacher) and families(students)
    assert not families(teacher) & families(students)
    assert families(teacher) | families(students) == families(whole)
    assert len(teacher.train) + len(students.train) == len(whole.train)
    def val_images(splits) -> torch.Tensor:  # type: ignore[no-untyped-def]
        base = splits.val.dataset
        return base.images[torch.as_tensor(splits.val.indices)]

    # the same validation images (the validation fonts), not only as many
    assert torch.equal(val_images(teacher), val_images(whole))
    assert torch.equal(val_images(students), val_images(whole))
    assert torch.equal(teacher.test.images, whole.test.images)
    again = _splits(font_dir, val_fraction=0.2, test_fraction=0.1, glyph_fonts="teacher")
    assert families(again) == families(teacher)
    # what the page says each half is drawn from: its groups and faces, as the halves hold them
    def faces(splits) -> int:  # type: ignore[no-untyped-def]
        return splits.train.dataset.faces[torch.as_tensor(splits.train.indices)].unique().numel()

    said = students.train.dataset.drawn_from
    assert said == teacher.train.dataset.drawn_from
    assert (f"its training groups halved: the teachers' {len(families(teacher))} "
            f"({faces(teacher)} faces), the students' {len(families(students))} "
            f"({faces(students)} faces)") in said
    assert faces(teacher) + faces(students) == faces(whole)
    assert "halved" not in whole.train.dataset.drawn_from and whole.test.drawn_from is None

    cfg = tiny_config_dict(font_dir.parent / "run", methods=["scratch"])
    cfg["data"] = {"dataset": "glyphs", "root": str(font_dir)}
    prints = set()
    for fonts in ("all", "teacher", "students"):
        cfg["data"]["glyph_fonts"] = fonts
        prints.add(teacher_fingerprint(config_from_dict(cfg), 0))
    assert len(prints) == 3
    cfg["data"] = {"dataset": "fashion_mnist", "glyph_fonts": "teacher"}
    with pytest.raises(ConfigError, match="glyph_fonts"):
        config_from_dict(cfg)


def test_val_size_takes_that_many_validation_glyphs_and_a_manifest_is_refused(
        font_dir: Path) -> None:
    whole = _splits(font_dir)
    sized = _splits(font_dir, val_size=62)
    assert len(sized.val) == 62 and set(sized.val.indices) <= set(whole.val.indices)
    from horkd.data import labels_of

    assert len(set(labels_of(sized.val).tolist())) == 62  # stratified: one of each character
    # with a training subset, val_size draws from every validation-font image, so it can exceed
    # the subset's proportional share (val_fraction of the two together)
    proportional = _splits(font_dir, train_subset=124)
    larger = _splits(font_dir, train_subset=124, val_size=len(whole.val))
    assert len(proportional.val) < len(larger.val) == len(whole.val)
    assert set(larger.val.indices) == set(whole.val.indices)
    with pytest.raises(ValueError, match=f"holds {len(whole.val)} validation images"):
        _splits(font_dir, train_subset=124, val_size=len(whole.val) + 1)
    with pytest.raises(ValueError, match="split_file"):
        _splits(font_dir, split_file="parts.json", part="students")
    from pydantic import ValidationError

    from horkd.config import DataConfig

    with pytest.raises(ValidationError, match="glyphs holds its validation and test images apart"):
        DataConfig(dataset="glyphs", split_file="parts.json", part="students")


def test_glyphs_refuse_mirroring_in_one_line() -> None:
    """A shipped config's hflip (image folders flip) on glyphs would turn b into d: refused."""
    from horkd.config import DataConfig

    with pytest.raises(ValueError, match="hflip") as refusal:
        DataConfig(dataset="glyphs", augment={"hflip": True})
    assert "mirrored b is a d" in str(refusal.value)
    DataConfig(dataset="glyphs", augment={"hflip": False})


def test_a_half_of_one_training_group_is_one_line_naming_the_setting(font_dir: Path) -> None:
    """Five families with most held out for validation and test leave one training group: the
    students' half holds it, the teachers' half nothing - one line naming data.glyph_fonts,
    not an empty training split."""
    with pytest.raises(DataNotFoundError, match=r"data\.glyph_fonts=teacher takes half of the "
                                                r"training fonts' design groups, and 1 cannot"):
        _splits(font_dir, test_fraction=0.45, val_fraction=0.45, glyph_fonts="teacher")
    assert len(_splits(font_dir, test_fraction=0.45, val_fraction=0.45,
                       glyph_fonts="students").train) > 0


def test_a_split_that_one_large_design_group_fills_is_named() -> None:
    """Whole groups go to test first: a 12-face superfamily that lands there makes the test
    fonts most of a small set, and the render command says so, naming the group; a split near
    the share asked says nothing."""
    from horkd.data.glyphs.messages import lopsided_splits

    faces = ([{"key": "super", "split": "test"}] * 12 + [{"key": f"g{i}", "split": "train"}
                                                         for i in range(8)]
             + [{"key": "v", "split": "val"}] * 2)
    lines = lopsided_splits({"faces": faces}, {"test": 0.2, "val": 0.1})
    assert lines == ["the test fonts are 55% of the faces (20% asked): splits take whole design "
                     "groups, and `super` alone has 12 faces; add fonts of other designs for "
                     "shares nearer the ones asked"]
    faces = faces[8:]  # 4 test, 8 train, 2 validation faces: 29% and 14% of 14, near enough
    assert lopsided_splits({"faces": faces}, {"test": 0.2, "val": 0.1}) == []


def test_variable_fonts_and_other_cached_sets_are_named(tmp_path: Path) -> None:
    """A variable font is drawn at its default instance only, and old glyph sets take disk
    beside the current one: the render command names both, and neither when there is none."""
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.tables._f_v_a_r import Axis, table__f_v_a_r

    from horkd.data.glyphs.fonts import is_variable
    from horkd.data.glyphs.messages import other_sets, variable_fonts

    static = _matplotlib_fonts() / FONTS[0]
    font = TTFont(str(static))
    axis = Axis()
    axis.axisTag, axis.axisNameID = "wght", 256
    axis.minValue, axis.defaultValue, axis.maxValue = 100.0, 400.0, 900.0
    fvar = table__f_v_a_r()
    fvar.axes, fvar.instances = [axis], []
    font["fvar"] = fvar
    font.save(str(tmp_path / "Variable.ttf"))
    assert is_variable(str(tmp_path / "Variable.ttf")) and not is_variable(str(static))
    faces = [{"file": str(static)}, {"file": str(tmp_path / "Variable.ttf")}]
    assert variable_fonts(faces) == ("1 variable font (Variable.ttf): each is drawn at its "
                                     "default instance only; add static cuts for its other "
                                     "weights and widths")
    assert variable_fonts(faces[:1]) is None

    here = tmp_path / "cache" / "32px-4r-new"
    here.mkdir(parents=True)
    assert other_sets(here) is None
    (tmp_path / "cache" / "32px-4r-old").mkdir()
    (tmp_path / "cache" / "32px-4r-old" / "images.npy").write_bytes(b"\0" * 2**20)
    assert other_sets(here) == ("1 other glyph set cached beside this one (1 MiB in "
                                f"{tmp_path / 'cache'}): remove any no run needs")
