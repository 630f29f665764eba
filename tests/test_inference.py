"""Using a trained model on users' files: predict, search, verify and the Python API.

The models are tiny and trained here in seconds; what is checked is that the commands see the
images exactly as the model's own evaluation does (equal accuracy, equal Recall@1), reuse what
they may, and turn every bad input into a line of output or one clear error.
"""

from __future__ import annotations

import csv
import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from horkd import Recogniser
from horkd.cli import main
from horkd.config import config_from_dict
from horkd.data.vision import DEBIAN_FASHION_MNIST
from horkd.experiment import build_context, run_experiment
from horkd.metrics import recall_at_k
from tests.conftest import tiny_config_dict
from tests.test_tasks import _identity_tree


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(str(path) + ".gz", "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _digits_as_fashion_mnist(folder: Path) -> None:
    """scikit-learn's digits (real images) in Fashion-MNIST's IDX files, 28x28."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=28, mode="bilinear")
    pixels = (images.squeeze(1).clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    folder.mkdir(parents=True)
    _idx(folder / "train-images-idx3-ubyte", pixels[:1400])
    _idx(folder / "train-labels-idx1-ubyte", digits.target[:1400])
    _idx(folder / "t10k-images-idx3-ubyte", pixels[1400:])
    _idx(folder / "t10k-labels-idx1-ubyte", digits.target[1400:])


def _stage(epochs: int = 2) -> dict:
    return {"epochs": epochs, "batch_size": 32, "max_steps_per_epoch": 15,
            "optimizer": {"lr": 0.05}}


def _classifier(out: Path, root: Path | None) -> Path:
    raw = tiny_config_dict(out, methods=["scratch"])
    raw["data"] = {"dataset": "fashion_mnist", "root": str(root) if root else None,
                   "hr_size": 28, "val_fraction": 0.1, "train_subset": 600, "test_subset": 120}
    raw["degrade"] = {"lr_size": 7}
    raw["train"] = {"teacher": _stage(0), "assistant": _stage(), "student": _stage(3)}
    run_experiment(config_from_dict(raw), progress=False)
    return out / "seed0/students/scratch"


@pytest.fixture(scope="module", params=["digits", "fashion_mnist"])
def classifier(request, tmp_path_factory) -> tuple[Path, Path]:
    """A trained native-7px student and its own test images written as PNG class folders."""
    tmp = tmp_path_factory.mktemp(request.param)
    root = None
    if request.param == "digits":
        _digits_as_fashion_mnist(tmp / "idx")
        root = tmp / "idx"
    elif not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    model = _classifier(tmp / "run", root)
    cfg = config_from_dict(yaml.safe_load((tmp / "run/config.yaml").read_text()))
    test = build_context(cfg, 0).splits.test
    names = Recogniser.load(model).classes
    for i in range(len(test)):
        image, label = test[i]
        folder = tmp / "png" / names[label].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image[0] * 255).round().byte().numpy()
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return model, tmp / "png"


def _accuracy(rows: list[dict]) -> float:
    hits = [Path(r["path"]).parent.name == r["label"].replace("/", "_") for r in rows]
    return 100.0 * sum(hits) / len(hits)


def test_predict_equals_eval_and_onnx_gives_the_same_labels(classifier, tmp_path, capsys):
    model, pngs = classifier
    assert main(["eval", str(model), "--sizes", "7"]) == 0
    evaluated = float(capsys.readouterr().out.strip().splitlines()[-1].split()[-1])
    assert main(["predict", str(model), str(pngs), "--out", str(tmp_path / "p.csv"),
                 "--top-k", "3"]) == 0
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == len(list(pngs.rglob("*.png")))
    assert {"label", "score", "label_2", "score_3", "error"} <= set(rows[0])
    assert b"\r" not in (tmp_path / "p.csv").read_bytes()  # Unix lines, for cut/awk/diff
    assert round(_accuracy(rows), 2) == evaluated  # equal, not close
    # the exported model carries the metadata and gives the same labels
    assert main(["export", str(model), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", str(tmp_path / "m.onnx"), str(pngs),
                 "--out", str(tmp_path / "o.csv")]) == 0
    onnx_rows = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert [r["label"] for r in onnx_rows] == [r["label"] for r in rows]


def test_the_documented_onnxruntime_example_runs_on_an_export(classifier, tmp_path, capfd,
                                                             monkeypatch):
    """docs/usage.md's onnxruntime example, as written, on a fresh export: it gives the
    probabilities horkd's own ONNX path gives; the export itself prints only its one line."""
    for extra in ("onnx", "onnxscript", "onnxruntime"):  # pip install 'horkd[export]'
        pytest.importorskip(extra)
    from tests.test_doc_examples import ROOT, examples

    model, pngs = classifier
    capfd.readouterr()
    assert main(["export", str(model), "--out", str(tmp_path / "model.onnx")]) == 0
    said = capfd.readouterr()
    assert "[torch.onnx]" not in said.out + said.err  # quiet unless --verbose
    assert said.out.startswith("wrote ") and len(said.out.strip().splitlines()) == 1
    # the one file: no weights left beside it under the temporary's hidden name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    side = Recogniser.load(model).input.size
    capture = Image.open(sorted(pngs.rglob("*.png"))[0]).resize((side, side))
    capture.save(tmp_path / "capture.png")  # a real LR capture: already the model's size
    block = next(e for e in examples(ROOT / "docs" / "usage.md")
                 if "onnxruntime.InferenceSession" in e.text)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.text, block.name, "exec"), scope)
    label = capfd.readouterr().out.strip()
    logits = torch.from_numpy(scope["logits"])
    assert scope["x"].dtype == np.float32 and scope["embedding"].shape[0] == 1
    ours = Recogniser.load(tmp_path / "model.onnx").predict([tmp_path / "capture.png"], top_k=1,
                                                            kind="lr")
    assert label == ours[0][0][0]
    assert float(logits.softmax(1).max()) == pytest.approx(ours[0][0][1], abs=1e-5)
    # a larger capture is shrunk as training made its LR images: by area (pixel averages)
    big = np.random.default_rng(0).integers(0, 256, (2 * side, 2 * side), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "capture.png")
    exec(compile(block.text, block.name, "exec"), scope)
    area = torch.nn.functional.avg_pool2d(torch.from_numpy(big).float()[None, None] / 255, 2)
    assert torch.from_numpy(scope["x"]).sub(area).abs().max() <= 1 / 255 + 1e-6  # uint8 steps


def test_every_way_to_name_a_model_and_the_python_api(classifier, tmp_path):
    model, pngs = classifier
    first = sorted(pngs.rglob("*.png"))[0]
    reference = Recogniser.load(model).predict([first], top_k=2)
    for name in (model, model / "model", model / "model.safetensors", model / "model.json"):
        assert Recogniser.load(name).predict([first], top_k=2) == reference
    pil = Image.open(first)
    array = np.array(pil)
    tensor = torch.from_numpy(array).float().div(255).unsqueeze(0)
    rgb = pil.convert("RGB")  # a colour photo for a greyscale model: converted
    api = Recogniser.load(model)
    results = api.predict([first, pil, array, tensor, rgb], top_k=2)
    for ranked in results:  # the same preprocessing whatever the source (one batch of five)
        assert [label for label, _ in ranked] == [label for label, _ in reference[0]]
        assert [s for _, s in ranked] == pytest.approx([s for _, s in reference[0]], abs=1e-5)
    assert api.embed([first]).shape == (1, 16)
    lr = api.predict([pil.resize((7, 7))], kind="lr")  # a real 7px capture, resized only
    assert lr[0][0][0] in api.classes
    for one in (str(first), first, pil, array, tensor):  # one image where a list belongs
        with pytest.raises(TypeError, match=r"pass \[image\] for a single one"):
            api.predict(one)


def test_predict_lists_unreadable_files_and_says_so(classifier, tmp_path, capsys):
    model, pngs = classifier
    bad = tmp_path / "mixed"
    bad.mkdir()
    (bad / "good.png").write_bytes(next(pngs.rglob("*.png")).read_bytes())
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image and not an image extension: not listed")
    code = main(["predict", str(model), str(bad), "--out", str(tmp_path / "p.csv")])
    assert code == 1
    rows = {Path(r["path"]).name: r for r in csv.DictReader((tmp_path / "p.csv").open())}
    assert set(rows) == {"good.png", "broken.png", "empty.jpg"}
    assert rows["good.png"]["label"] and not rows["good.png"]["error"]
    assert "empty file" in rows["empty.jpg"]["error"] and not rows["broken.png"]["label"]
    for name in ("broken.png", "empty.jpg"):  # the path column names the file, the error why
        assert rows[name]["error"] and name not in rows[name]["error"], rows[name]
    said = capsys.readouterr().err  # the log line, read alone, names the file
    assert "2 file(s) could not be used" in said and str(bad / "broken.png") in said
    # rows follow the order the files were given, an unreadable one in its own place
    pictures = sorted(pngs.rglob("*.png"))[:3]
    given = [pictures[2], bad / "broken.png", pictures[0], bad / "empty.jpg", pictures[1]]
    assert main(["predict", str(model), *map(str, given), "--out", str(tmp_path / "o.csv"),
                 "--batch-size", "2"]) == 1
    rows = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert [r["path"] for r in rows] == list(map(str, given))
    assert [bool(r["error"]) for r in rows] == [False, True, False, True, False]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["predict", "{model}", "{empty}"], "no image files in"),
        (["predict", "{model}", "{missing}"], "no such file or folder"),
        (["predict", "{missing}", "{empty}"], "name a model as"),
        (["predict", "{onnx}", "{empty}"], "carries no horkd metadata"),
        (["verify", "{model}", "{img}", "{img}"], "is a classification model"),
        (["search", "{model}", "--gallery", "{empty}", "--query", "{empty}"], "no image files"),
        (["predict", "{model}", "{img}", "--out", "{empty}/labels.npy"], "labels as CSV"),
    ],
    ids=["empty folder", "missing path", "missing model", "onnx without metadata",
         "verify on a classifier", "search in an empty gallery", "classifier labels as .npy"],
)
def test_bad_inputs_are_one_clear_line(classifier, tmp_path, capfd, args, needle):
    model, pngs = classifier
    (tmp_path / "empty").mkdir()
    plain = tmp_path / "plain.onnx"
    _plain_onnx(plain)
    values = {"model": model, "empty": tmp_path / "empty", "missing": tmp_path / "nowhere",
              "onnx": plain, "img": next(pngs.rglob("*.png"))}
    assert main([a.format(**values) for a in args]) == 2
    err = capfd.readouterr().err
    assert needle in err and "Traceback" not in err and err.startswith("horkd: error:")


def _plain_onnx(path: Path) -> None:
    """An ONNX file some other tool wrote: no horkd metadata."""
    class Net(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)), x.mean(dim=(2, 3))

    torch.onnx.export(Net().eval(), (torch.rand(1, 1, 7, 7),), str(path), input_names=["image"])


# ----------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def retrieval_model(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("retrieval")
    raw = tiny_config_dict(tmp / "run", task="retrieval", methods=["scratch", "embedding_regression"])
    raw["degrade"] = {"lr_size": 4, "student_input": "upsampled"}
    raw["train"] = {"teacher": _stage(), "assistant": _stage(), "student": _stage()}
    run_experiment(config_from_dict(raw), progress=False)
    cfg = config_from_dict(yaml.safe_load((tmp / "run/config.yaml").read_text()))
    test = build_context(cfg, 0).splits.test
    for i in range(len(test)):
        image, label = test[i]
        side = "gallery" if i % 3 == 0 else "query"
        folder = tmp / side / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(folder / f"{i:03d}.png")
    return tmp / "run/seed0", tmp


def test_search_recall_equals_the_librarys_and_the_index_is_reused(retrieval_model, tmp_path):
    seed_dir, images = retrieval_model
    model = seed_dir / "students/scratch"
    out = tmp_path / "s.csv"
    from horkd.inference.commands import search

    first = search(model, images / "gallery", images / "query", out=out, top_k=3)
    assert first.status == 0 and first.index_reused is False
    assert b"\r" not in out.read_bytes()
    rows = [r for r in csv.DictReader(out.open()) if r["rank"] == "1"]
    hits = [Path(r["query"]).parent.name == Path(r["gallery"]).parent.name for r in rows]
    api = Recogniser.load(model)
    gallery = sorted((images / "gallery").rglob("*.png"))
    queries = sorted((images / "query").rglob("*.png"))
    g = api.embed(gallery, kind="hr_raw")
    q = api.embed(queries, kind="hr")
    labels = lambda files: torch.tensor([int(p.parent.name.split("_")[1]) for p in files])  # noqa: E731
    expected = recall_at_k(q, labels(queries), g, labels(gallery), (1,))[1]
    assert 100.0 * sum(hits) / len(hits) == pytest.approx(expected, abs=1e-4)  # float32 mean
    index = out.with_suffix(".index.safetensors")
    stamp = index.stat().st_mtime_ns
    again = search(model, images / "gallery", images / "query", out=out, top_k=3)
    assert again.index_reused is True and index.stat().st_mtime_ns == stamp
    time.sleep(0.01)
    changed = gallery[0]
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(changed)
    third = search(model, images / "gallery", images / "query", out=out, top_k=3)
    assert third.index_reused is False


def test_search_in_a_teachers_gallery_needs_an_embedding_term_toward_it(retrieval_model,
                                                                       tmp_path, capfd):
    seed_dir, images = retrieval_model
    args = ["search", "--gallery", str(images / "gallery"), "--query", str(images / "query"),
            "--gallery-model", str(seed_dir / "teacher"), "--out", str(tmp_path / "t.csv")]
    assert main(["search", str(seed_dir / "students/embedding_regression"), *args[1:]]) == 0  # its projector
    assert main(["search", str(seed_dir / "students/scratch"), *args[1:]]) == 2
    assert "embedding term toward" in capfd.readouterr().err


def test_embeddings_of_a_retrieval_model_as_npy_and_safetensors(retrieval_model, tmp_path):
    seed_dir, images = retrieval_model
    model = seed_dir / "students/scratch"
    assert main(["predict", str(model), str(images / "query"), "--out",
                 str(tmp_path / "e.npy")]) == 0
    embeddings = np.load(tmp_path / "e.npy")
    paths = (tmp_path / "e.paths.txt").read_text().splitlines()
    assert embeddings.shape == (len(paths), 16) and Path(paths[0]).suffix == ".png"
    assert main(["predict", str(model), str(images / "query"), "--out",
                 str(tmp_path / "e.safetensors")]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "e.safetensors"), "pt") as handle:
        assert len(yaml.safe_load(handle.metadata()["paths"])) == len(paths)
        assert torch.allclose(handle.get_tensor("embeddings"), torch.from_numpy(embeddings))


# ----------------------------------------------------------------------------- verify
def test_verify_uses_the_threshold_chosen_on_validation_pairs(tmp_path, capsys):
    _identity_tree(tmp_path / "faces")
    raw = tiny_config_dict(tmp_path / "run", task="face", methods=["scratch"])
    raw["data"] = {"dataset": "image_folder", "root": str(tmp_path / "faces"), "hr_size": 16,
                   "val_fraction": 0.3}
    raw["degrade"] = {"lr_size": 8, "student_input": "upsampled"}
    raw["face"] = {"sampled_pairs": 40, "probe_sizes": [8]}
    raw["train"] = {"teacher": _stage(1), "assistant": _stage(), "student": _stage(3)}
    run_experiment(config_from_dict(raw), progress=False)
    model = tmp_path / "run/seed0/students/scratch"
    meta = Recogniser.load(model).meta["verification"]
    assert "validation split" in meta["source"] and isinstance(meta["threshold"], float)
    same = sorted((tmp_path / "faces/test/person_1").glob("*.jpg"))
    other = sorted((tmp_path / "faces/test/person_4").glob("*.jpg"))
    capsys.readouterr()
    assert main(["verify", str(model), str(same[0]), str(same[1])]) == 0
    line = capsys.readouterr().out
    assert "similarity" in line and "validation split" in line
    assert main(["verify", str(model), str(same[0]), str(other[0]), "--threshold", "2"]) == 0
    assert "different" in capsys.readouterr().out  # cosine never reaches 2


def test_search_names_each_bad_file_on_its_own_side_whole(retrieval_model, tmp_path):
    """A bad gallery file in the gallery column, a bad query in the query column, each path whole
    (even with ': ' in it), and the same rows again when the gallery index is reused."""
    import shutil

    seed_dir, images = retrieval_model
    gallery, query = tmp_path / "gallery", tmp_path / "query"
    shutil.copytree(images / "gallery", gallery)
    shutil.copytree(images / "query", query)
    bad_gallery = gallery / "class_0" / "scan: 1.png"
    bad_query = query / "class_0" / "probe: 2.png"
    bad_gallery.parent.mkdir(exist_ok=True)
    bad_query.parent.mkdir(exist_ok=True)
    bad_gallery.write_text("not an image")
    bad_query.write_text("not an image")
    from horkd.inference.commands import search

    out = tmp_path / "s.csv"
    for reused in (False, True):
        outcome = search(seed_dir / "students/scratch", gallery, query, out=out, top_k=1)
        assert outcome.index_reused is reused and outcome.status == 1
        bad = [r for r in csv.DictReader(out.open()) if r["error"]]
        assert {(r["query"], r["gallery"]) for r in bad} == {(str(bad_query), ""),
                                                             ("", str(bad_gallery))}
        assert all(r["error"] and "scan" not in r["error"] and "probe" not in r["error"]
                   for r in bad)
