"""The ``horkd`` command: run the pipeline from a YAML config, train one stage, evaluate, demo.

Every user-facing error ends as one readable line and exit status 2; ``--debug`` shows the
traceback for bug reports.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from horkd import __version__

EPILOG = """examples:
  horkd demo                                   Fashion-MNIST 28px -> 7px, 3% of the labels
  horkd run configs/fashion_mnist.yaml         whole pipeline + baselines + results table
  horkd run cfg.yaml train.student.epochs=20 degrade.lr_size=14
  horkd train cfg.yaml --stage teacher         one stage (earlier stages are reused)
  horkd eval runs/x --sizes 28,14,7            the student the run chose, at each size
  horkd ablate cfg.yaml                        the effect of each order
  horkd report runs/x runs/x_ablation          report.md with tables and figures
  horkd export runs/x --format onnx            the run's chosen student (runs/x/ship.json)
  horkd predict runs/x photos/ --top-k 3 --out labels.csv
  horkd search MODEL --gallery hr_images/ --query lr_images/
  horkd verify MODEL enrolment.jpg probe.png --input lr
  horkd split cfg.yaml --part teacher=0.5 --part students=rest --out parts.json
  horkd list                                   models, methods, datasets, losses
"""


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override config values, e.g. train.student.epochs=20 data.root=/data",
    )
    parser.add_argument("--data-root", help="folder holding the dataset (sets data.root)")
    parser.add_argument("--output-dir", help="where the run is written (sets output_dir)")
    parser.add_argument(
        "--resume", action="store_true",
        help="output_dir holds a run made with a different config: keep its stages whose own "
        "settings did not change and retrain the rest (the old config is kept as "
        "config.previous.yaml). Not needed to continue: rerunning the same command continues "
        "where it stopped",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a different run already in output_dir"
    )
    _add_run_flags(parser)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars: a line per epoch (as when output goes to a file)")
    parser.add_argument("--no-report", action="store_true", help="skip RUN/report/ at the end")
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave unreadable image files out (counted) instead of stopping at the first",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow weight files that need full unpickling (can run code: trusted files only)",
    )


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds like 0,1,2, got '{text}'")
    return seeds


def _fractions(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected shares like 0.01,0.1, got '{text}'") from None


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of pixel sizes such as 28,14,7"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text}")
    return sizes


def _add_run_commands(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="train teacher, assistant, student and every baseline; print the results table",
        description="Run the whole pipeline of a config and write RUN/results.{md,csv,json}.",
    )
    _add_config_args(run)
    train = sub.add_parser(
        "train",
        help="train one stage (teacher, assistant or one student method) or all",
        description=(
            "Train one stage of a config. Earlier stages the stage needs are trained first, or "
            "reused from output_dir when they finished there."
        ),
    )
    _add_config_args(train)
    train.add_argument(
        "--stage", choices=["teacher", "assistant", "student", "all"], default="all"
    )
    train.add_argument("--method", help="student method for --stage student (default: all)")
    demo = sub.add_parser(
        "demo",
        help="the embedded demo: Fashion-MNIST 28 -> 7 px with 3%% of the labels, its baselines",
        description="Run the embedded demo config; KEY=VALUE overrides apply to it.",
    )
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    demo.add_argument("--data-root", help="folder holding the Fashion-MNIST IDX files")
    demo.add_argument("--output-dir", default=None, help="default: runs/demo")
    demo.add_argument("--resume", action="store_true",
                      help="after changing an override: keep the stages it did not change "
                      "(rerunning the same command continues without it)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace a different run already in the output directory")
    _add_run_flags(demo)
    ablate = sub.add_parser(
        "ablate",
        help="train the student with each subset of orders {1},{2},{3},...,{1,2,3}",
        description=(
            "The effect of each order (the paper's Fig. 4): every listed method of group 'ours' "
            "trained with every subset of orders, same teacher/assistant, budget and seeds, "
            "beside the listed baselines; writes ablation.json."
        ),
    )
    _add_config_args(ablate)


def _add_model_commands(sub: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="accuracy of a checkpoint at several input sizes",
        description=(
            "Evaluate a checkpoint on the test split of the dataset it was trained on, with HR "
            "images degraded to each size (the size equal to HR means the HR images)."
        ),
    )
    ev.add_argument("checkpoint", metavar="MODEL", help=MODEL_HELP.replace(", or an .onnx file "
                                                                        "from horkd export", ""))
    ev.add_argument(
        "--sizes", type=_sizes, default=None,
        help="comma-separated sizes, e.g. 28,14,7 (default: the HR size and every LR size the "
        "model was trained at)"
    )
    ev.add_argument("--data-root", help="folder holding the dataset")
    ev.add_argument(
        "--upsample",
        choices=["auto", "yes", "no"],
        default="auto",
        help="feed LR re-upsampled to HR size (auto: as the model was trained)",
    )
    export = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript, checked against PyTorch",
        description="Write a deployable file and print the max |difference| from PyTorch.",
    )
    export.add_argument("checkpoint", metavar="MODEL",
                        help=MODEL_HELP.replace(", or an .onnx file from horkd export", ""))
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("--out", help="output file (default: beside the checkpoint)")
    export.add_argument("--verbose", action="store_true",
                        help="show the exporter's own progress messages and warnings")


MODEL_HELP = (
    "a trained model: a run directory (runs/x: the student the run chose to ship), a stage "
    "directory (runs/x/seed0/students/horkd), its 'model' stem, model.safetensors, or an .onnx "
    "file from horkd export"
)
INPUT_HELP = (
    "hr (default): the images are high-resolution pictures, degraded by the model's own "
    "degradation to its LR size; lr: they are real low-resolution captures, only resized"
)


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", choices=["hr", "lr"], default="hr", help=INPUT_HELP)
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader processes decoding images"
    )


def _add_use_commands(sub: Any) -> None:
    predict = sub.add_parser(
        "predict",
        help="labels (classifiers) or embeddings (retrieval, face) of your own images",
        description=(
            "Run a trained model on image files and folders (searched recursively for png, "
            "jpg, jpeg, bmp, webp, tif). Classifiers write CSV (path, label, score, then "
            "label_2, score_2, ... up to --top-k); retrieval and face models write embeddings "
            "(.npy beside <stem>.paths.txt, or .safetensors with the paths in its metadata). "
            "Unreadable files are listed with their error; the exit status is 1 when any failed."
        ),
    )
    predict.add_argument("model", help=MODEL_HELP)
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    predict.add_argument("--top-k", type=int, default=1, help="labels per image (classifiers)")
    predict.add_argument(
        "--out", help="CSV (default: standard output) or .npy/.safetensors for embeddings"
    )
    _add_input_args(predict)
    search = sub.add_parser(
        "search",
        help="find LR query images in an HR gallery",
        description=(
            "Embed the gallery once (kept in an index file beside --out, reused while the "
            "gallery and model are unchanged) and write, for each query, the --top-k most "
            "similar gallery images (cosine similarity) as CSV."
        ),
    )
    search.add_argument("model", help=MODEL_HELP + " (embeds the queries)")
    search.add_argument("--gallery", required=True, help="folder of HR gallery images")
    search.add_argument("--query", required=True, help="folder (or file) of query images")
    search.add_argument(
        "--gallery-model",
        help="embed the gallery with this model instead (e.g. the teacher); needs a query "
        "model trained with an embedding term toward it",
    )
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--out", default="search.csv", help="CSV of the results")
    _add_input_args(search)
    verify = sub.add_parser(
        "verify",
        help="do two face images show the same person?",
        description=(
            "Cosine similarity of IMAGE_A (a reference, HR) and IMAGE_B (the probe, taken as "
            "--input says), and same/different at the threshold the face model's training chose "
            "on validation pairs (or --threshold)."
        ),
    )
    verify.add_argument("model", help=MODEL_HELP)
    verify.add_argument("image_a", help="the reference image (HR)")
    verify.add_argument("image_b", help="the probe image")
    verify.add_argument("--input", choices=["hr", "lr"], default="hr", help=INPUT_HELP)
    verify.add_argument("--threshold", type=float, default=None, help="override the threshold")


def _add_result_commands(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="Markdown report with tables and figures from one or more run directories",
        description=(
            "Read finished run directories (results, per-epoch metrics, resolution curves, "
            "ablations, checkpoints) and write report.md, CSV tables and PNG figures."
        ),
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", help="output folder (default: FIRST_RUN_DIR/report)")
    _add_study_commands(sub)
    sub.add_parser("list", help="the registered models, methods (by group), datasets and losses")


def _add_study_commands(sub: Any) -> None:
    study = sub.add_parser(
        "study",
        help="regimes x methods x seeds with a validation search; writes RESULTS.md",
        description=(
            "Train the study's teachers once, score every method's search candidates on the "
            "validation split, train the chosen settings with every seed, score them once on the "
            "test split and write a Markdown page with tables, intervals and figures. Rerunning "
            "continues where it stopped."
        ),
    )
    study.add_argument("study_file", help="study YAML (see configs/study/)")
    study.add_argument("--workers", type=int, default=None, help="parallel runs (default: file)")
    study.add_argument(
        "--threads", type=int, default=None,
        help="threads per worker (default: OMP_NUM_THREADS, else the CPUs this process may run "
        "on / workers; the log says which)"
    )
    study.add_argument("--doc", default=None, help="where RESULTS.md goes (default: OUT/RESULTS.md)")
    study.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: write the page from the recorded runs (missing ones are pending)",
    )
    study.add_argument(
        "--only",
        action="append",
        metavar="REGIME[/METHOD]",
        help="train only this regime (or one method of it; repeatable), with the search it takes "
        "its choices from; everything else is read from the records (the page lists the rest as "
        "pending)",
    )
    study.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        default=None,
        help="where runs train: a local process pool, a Ray cluster, or SLURM through submitit "
        "(default: the study file's executor, else local; docs/scale.md)",
    )
    study.add_argument(
        "--address",
        default=None,
        help="--executor ray: the cluster (auto, HOST:PORT or ray://HOST:PORT); none starts Ray "
        "on this machine",
    )
    study.add_argument(
        "--status",
        action="store_true",
        help="train nothing: print what is recorded, running and pending",
    )
    study.add_argument(
        "--register",
        action="append",
        metavar="REGIME",
        help="start a new registration of a confirmatory regime's design (the former one is "
        "kept beside it): its design may change only so, and says so",
    )
    study.add_argument(
        "--reproduce",
        metavar="RECORD",
        help="train one recorded run again from its settings and say whether it reproduces the "
        "recorded scores (exit status 1 when it does not)",
    )
    _add_study_init(sub)
    _add_split(sub)


def _add_split(sub: Any) -> None:
    split = sub.add_parser(
        "split",
        help="partition the training images into named, disjoint parts (data.split_file)",
        description="Write a partition manifest of a dataset's training images: stratified, "
        "seeded parts that configs train on (data.part) or test on (data.test_part). Sized "
        "parts are drawn only from images that no --avoid config validated, tested or kept its "
        "students on, computed from those configs with the runs' own carving.",
    )
    split.add_argument("config", help="experiment or study YAML naming the data (its data: "
                       "section, or the study's base)")
    split.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="override config values, e.g. data.root=/data")
    split.add_argument("--part", action="append", required=True, metavar="NAME=SIZE",
                       help="a part: NAME=N images (or a share below 1), NAME=from:FILE (the "
                       "training images FILE's runs train and validate on; a study file: its "
                       "students') or NAME=rest (repeatable)")
    split.add_argument("--avoid", action="append", default=[], metavar="FILE",
                       help="experiment or study YAML of an earlier round: sized parts skip "
                       "every image its runs scored or kept their students on (repeatable)")
    split.add_argument("--data-root", help="folder holding the dataset (sets data.root)")
    split.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    split.add_argument("--out", required=True, help="the manifest to write (JSON)")
    split.add_argument("--overwrite", action="store_true",
                       help="replace a different manifest already at --out")
    split.set_defaults(output_dir=None)


def _add_study_init(sub: Any) -> None:
    init = sub.add_parser(
        "study-init", prog="horkd study init",
        help="write a study file for an image folder (also: horkd study init ...)",
        description="Write (to stdout, or --out FILE) a study file for an image folder (a sub-folder "
        "per class, directly or under train/; without test/ 20% of each class is held out as the "
        "test split): a teacher, every method beside the label-only student, the "
        "same search budget for each, several seeds. `horkd study FILE` runs it as written.",
    )
    init.add_argument("--data", required=True, metavar="FOLDER", help="the image folder")
    init.add_argument("--lr-size", type=int, default=None, help="LR side (default: HR / 4)")
    init.add_argument("--hr-size", type=int, default=None,
                      help="HR side (default: the training images' median side, at most 224)")
    init.add_argument("--labels", type=_fractions, default=None, metavar="F[,F...]",
                      help="also regimes where the students use this share of the labels, "
                      "e.g. 0.01,0.1")
    init.add_argument("--seeds", type=_seeds, default=None, metavar="N[,N...]",
                      help="final seeds (default: 0,1,2)")
    init.add_argument("--methods", type=lambda t: [m for m in t.split(",") if m], default=None,
                      metavar="M[,M...]",
                      help="methods beside the teacher rows (default: scratch, hinton_kd, "
                      "kd_rkd, rkd, horkd_no_assistant, horkd; semi_supervised is added to the "
                      "--labels regimes)")
    init.add_argument("--channels", type=int, choices=(1, 3), default=None,
                      help="1 (grey) or 3 (RGB); default: 1 where the images are grey")
    init.add_argument("--teacher-epochs", type=int, default=30, metavar="N",
                      help="the teacher's epochs (default 30)")
    init.add_argument("--student-epochs", type=int, default=15, metavar="N",
                      help="each assistant's and student's epochs (default 15); fewer for a "
                      "first look, at the cost of under-trained students")
    init.add_argument("--skip-bad-images", action="store_true",
                      help="leave unreadable image files out (counted), here and in every run")
    init.add_argument("--out", metavar="FILE", default=None,
                      help="write the study file here, only once it is complete (default: "
                      "standard output; a refusal then leaves no file behind)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="horkd",
        description=(
            "Hybrid order relational knowledge distillation: turn a strong high-resolution "
            "recogniser into a small low-resolution one through a teacher -> assistant -> "
            "student chain."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"horkd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(sub)
    _add_model_commands(sub)
    _add_use_commands(sub)
    _add_result_commands(sub)
    return parser


def _config(args: argparse.Namespace, raw: dict[str, Any] | None = None) -> Any:
    from horkd.config import config_from_dict, load_config

    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if getattr(args, "skip_bad_images", False):
        overrides.append("data.skip_bad_images=true")
    if raw is not None:
        return config_from_dict(raw, overrides)
    return load_config(args.config, overrides)


DEMO_INTRO = (
    "horkd demo: the few-label regime - a 7x7 Fashion-MNIST student with the labels of 3% of "
    "its training images and every image for distillation, from an HR teacher trained first on "
    "every label (as a strong model trained elsewhere would come): where an HR teacher's "
    "knowledge is needed (docs/RESULTS.md). About 10 minutes on 2 CPU cores."
)


def demo_config_dict() -> dict[str, Any]:
    text = resources.files("horkd").joinpath("demo.yaml").read_text()
    return yaml.safe_load(text)


def is_main() -> bool:
    """Whether this is the process that prints (torchrun starts several); imports torch lazily."""
    from horkd.distributed import is_main as main_process

    return main_process()


def _print_results(run_dir: Path, seconds: float) -> None:
    print((run_dir / "results.md").read_text())
    record = json.loads((run_dir / "run.json").read_text())
    skipped = record.get("skipped_images", {}).get("count", 0)
    if skipped:
        print(f"left out {skipped} unusable image file(s) (listed in {run_dir / 'run.json'})")
    report = run_dir / "report" / "report.md"
    if report.exists():
        print(f"report: {report.resolve()}")
    print(f"run directory: {run_dir.resolve()}  ({seconds / 60:.1f} min)")


def cmd_run(args: argparse.Namespace, raw: dict[str, Any] | None = None) -> int:
    from horkd.experiment import run_experiment

    cfg = _config(args, raw)
    started = time.time()
    outcome = run_experiment(
        cfg,
        progress=not args.no_progress,
        resume=args.resume,
        overwrite=args.overwrite,
        report=not getattr(args, "no_report", False),
    )
    if is_main():
        _print_results(outcome.run_dir, time.time() - started)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from horkd.experiment import owning

    cfg = _config(args)
    # Training a later stage reuses finished earlier ones, so the run dir is always resumable.
    with owning(cfg, resume=True, overwrite=args.overwrite):
        _train_stages(cfg, args)
    return 0


def _train_stages(cfg: Any, args: argparse.Namespace) -> None:
    from horkd.experiment import open_seed
    from horkd.methods import METHODS

    for seed in cfg.seeds:
        _, networks = open_seed(cfg, seed, progress=not args.no_progress)
        if args.stage in ("teacher", "all"):
            networks.teacher()
        if args.stage in ("assistant", "all"):
            networks.assistant()
        if args.stage in ("student", "all"):
            names = [args.method] if args.method else cfg.methods
            for name in names:
                if METHODS.get(name).trains:
                    networks.student(name)
        if is_main():
            print(f"seed {seed}: stage '{args.stage}' done in {networks.stages.seed_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    from horkd.eval_checkpoint import evaluate_checkpoint

    sizes = args.sizes
    upsample = {"auto": None, "yes": True, "no": False}[args.upsample]
    for line in evaluate_checkpoint(args.checkpoint, sizes, args.data_root, upsample):
        print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from horkd.report import build_report

    path = build_report(args.run_dirs, args.out)
    print(f"report: {path.resolve()}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from horkd.experiment import run_ablation

    cfg = _config(args)
    result = run_ablation(
        cfg, progress=not args.no_progress, resume=args.resume, overwrite=args.overwrite
    )
    if not is_main():
        return 0
    print(f"student {result.metric} by orders distilled (mean over seeds {result.seeds}):")
    for method, by_tag in result.orders.items():
        means = "  ".join(f"{tag} {sum(v) / len(v):.2f}" for tag, v in by_tag.items())
        print(f"  {method}: {means}")
    for name, values in result.baselines.items():
        print(f"  {name} (baseline): {sum(values) / len(values):.2f}")
    print(f"run directory: {Path(cfg.output_dir).resolve()}  (horkd report draws the chart)")
    return 0


def _training_args(argv: list[str]) -> list[str]:
    """The study command as it trains everything: without --no-train and --only, which only
    say what this invocation trained."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--only":
            skip = True
        elif arg != "--no-train" and not arg.startswith("--only="):
            out.append(arg)
    return out


def cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from horkd.study import run_study, write_document

    for flag in ("workers", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag} must be >= 1, got {value}")
    if args.status:
        from horkd.study.runner import study_status

        if args.only or args.no_train or args.reproduce:
            raise ValueError("--status shows the whole study and trains nothing: use it alone")

        print(study_status(args.study_file))
        return 0
    if args.reproduce:
        from horkd.study.runner import reproduce

        same = reproduce(args.study_file, args.reproduce)
        print("reproduced: identical scores" if same else "NOT reproduced: the scores differ")
        return 0 if same else 1
    from horkd.notes import once_per_invocation

    with once_per_invocation():  # the page reads the data again: its notes were said already
        summary = run_study(
            args.study_file, workers=args.workers, threads=args.threads, train=not args.no_train,
            only=args.only, executor=_executor(args), register=args.register,
        )
        doc = Path(args.doc) if args.doc else summary.parent / "RESULTS.md"
        command = (shlex.join(["horkd", *_training_args(sys.argv[1:])]) if len(sys.argv) > 1
                   else None)
        path = write_document(summary, doc, command)
    print(f"results: {path.resolve()}  (summary: {summary})")
    return 0


def _executor(args: argparse.Namespace) -> Any:
    """The study file's executor with --executor and --address on top (None: the file's)."""
    if args.executor is None and args.address is None:
        return None
    from horkd.study import load_study

    given = load_study(args.study_file)[0].executor
    kind = args.executor or given.kind
    if args.address is not None and kind != "ray":
        raise ValueError("--address names a Ray cluster: use it with --executor ray")
    return given.model_copy(update={"kind": kind, "address": args.address or given.address})


def cmd_split(args: argparse.Namespace) -> int:
    from horkd.checkpoint import write_text
    from horkd.data.carve import draw_partition, parse_part
    from horkd.data.partition import dump_manifest

    specs = [parse_part(text) for text in args.part]
    overrides = [*args.overrides, *([f"data.root={args.data_root}"] if args.data_root else [])]
    content, lines = draw_partition(args.config, overrides, specs, args.avoid, args.seed)
    text = dump_manifest(content)
    out = Path(args.out)
    if out.exists() and not args.overwrite and out.read_text() != text:
        raise ValueError(f"{out} holds another partition: pass --overwrite to replace it (every "
                         "stage that trained on it trains again)")
    print("\n".join(lines))
    write_text(out, text, "a partition manifest")
    print(f"wrote {out}")
    return 0


def cmd_study_init(args: argparse.Namespace) -> int:
    from horkd.study.template import study_for_folder

    text = study_for_folder(args.data, lr_size=args.lr_size, hr_size=args.hr_size,
                            labels=args.labels, seeds=args.seeds, methods=args.methods,
                            skip_bad_images=args.skip_bad_images, out=args.out,
                            channels=args.channels, teacher_epochs=args.teacher_epochs,
                            student_epochs=args.student_epochs)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    from horkd.checkpoint import write_text

    write_text(Path(args.out), text, "the study file")  # whole or not at all
    print(f"study file: {args.out}  (run it: horkd study {args.out} --doc RESULTS.md)",
          file=sys.stderr)
    return 0


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _report(outcome: Any, what: str) -> int:
    where = outcome.out if outcome.out is not None else "standard output"
    print(f"{what} of {outcome.used} image(s) written to {where}", file=sys.stderr)
    if outcome.failed:
        print(f"{len(outcome.failed)} file(s) could not be used (listed in the output), e.g. "
              f"{outcome.failed[0]}", file=sys.stderr)
    return outcome.status


def cmd_predict(args: argparse.Namespace) -> int:
    from horkd.inference.commands import predict

    _positive(args, "top_k", "batch_size")
    outcome = predict(args.model, args.paths, args.input, args.top_k, args.out,
                      args.batch_size, args.workers)
    return _report(outcome, "predictions")


def cmd_search(args: argparse.Namespace) -> int:
    from horkd.inference.commands import search

    _positive(args, "top_k", "batch_size")
    outcome = search(args.model, args.gallery, args.query, args.gallery_model, args.input,
                     args.top_k, args.out, args.batch_size, args.workers)
    return _report(outcome, "search results")


def cmd_verify(args: argparse.Namespace) -> int:
    from horkd.inference.commands import verify

    similarity, same, threshold = verify(args.model, args.image_a, args.image_b, args.input,
                                         args.threshold)
    verdict = "same" if same else "different"
    print(f"similarity {similarity:.4f}: {verdict} (threshold {threshold})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from horkd.export import export_checkpoint

    out, diff = export_checkpoint(args.checkpoint, args.format, args.out, verbose=args.verbose)
    print(f"wrote {out} ({args.format}); max |difference| from PyTorch on a batch: {diff:.2e}")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    from horkd.data import DATASETS
    from horkd.losses.hybrid import TERM_ORDER
    from horkd.losses.task import TASK_LOSSES
    from horkd.methods import GROUP_MEANING, METHODS, methods_in
    from horkd.methods.registry import default_weights
    from horkd.models import BACKBONES

    print("models:      " + ", ".join(BACKBONES.names()) + ", timm:<name>")
    print("datasets:    " + ", ".join(DATASETS.names()))
    print("task losses: " + ", ".join(TASK_LOSSES.names()) + "  (task_loss.name)")
    terms = ", ".join(f"{term} (order {order})" for term, order in TERM_ORDER.items())
    print(f"distillation terms: {terms}  (distill.loss.*_weight, distill.loss.orders)")
    print("  a weight left null takes the method's default: " + "; ".join(
        f"{who}: " + ", ".join(f"{k.removesuffix('_weight')} {v:g}" for k, v in weights.items())
        for who, weights in (("baselines", default_weights(("embedding",), True)),
                             ("hybrid orders with class logits", default_weights(None, True)),
                             ("hybrid orders without (retrieval, faces)",
                              default_weights(None, False)))) + "; fitnet: hint "
          f"{METHODS.get('fitnet').loss_defaults()['hint_weight']:g}")
    print("methods:")
    for group, meaning in GROUP_MEANING:
        print(f"  {group}: {meaning}")
        for name in methods_in(group):
            print(f"    {name:20s} {METHODS.get(name).description}")
    return 0


# Exit statuses scripts can tell apart.
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as ``main`` reads it (usage errors exit with status 2)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["study", "init"] and not Path("init").is_file():
        argv = ["study-init", *argv[2:]]  # `horkd study init` reads as a verb of `study`
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may also follow options (`run cfg.yaml --output-dir X a.b=1`)
    overrides = [e for e in extra if re.match(r"[A-Za-z_][\w.]*=", e)]
    if extra and hasattr(args, "overrides") and overrides == extra:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# Commands that train: one stop request (SIGINT/SIGTERM handler) for the whole command.
TRAINING_COMMANDS = ("run", "train", "demo", "ablate", "study")


def main(argv: list[str] | None = None) -> int:
    from contextlib import nullcontext

    from horkd import stop
    from horkd.safe_load import trusting_pickles

    try:
        args = parse_args(argv)
        # a command that trains stops at a safe point; the others (predict, export, ...) at once,
        # through their own cleanup (a partial output removed, the previous file left whole)
        training = args.command in TRAINING_COMMANDS
        handling = (stop.handling(immediate=not training)
                    if args.command != "list" else nullcontext())
        with trusting_pickles(getattr(args, "trust_checkpoint", False)), handling as request:
            if training and _waits_on_others(args):  # read the study only once the handler is in
                request.immediate = True
            return _stopped_at_the_end(_dispatch(args))
    except KeyboardInterrupt:  # Ctrl-C before any handler was in place (while importing)
        print("horkd: interrupted before it started: nothing was written", file=sys.stderr)
        return 130
    except stop.TrainingStopped as exc:  # a signal while the command was still importing
        print(f"horkd: {exc} before it started: nothing was written", file=sys.stderr)
        return exc.exit_status


def _waits_on_others(args: argparse.Namespace) -> bool:
    """A study whose runs train on Ray or SLURM: its driver only waits, so a signal stops it at
    once (cancelling the jobs) rather than at a safe point it never reaches."""
    if args.command != "study" or args.status:
        return False
    try:
        config = _executor(args)
        if config is None:
            from horkd.study import load_study

            config = load_study(args.study_file)[0].executor
        return config.kind != "local"
    except Exception:  # a bad study file is reported by the command itself
        return False


def _stopped_at_the_end(status: int) -> int:
    """A stop asked for as the command was finishing (its results written, nothing left to
    start) still ends it with 130/143: whoever sent the signal learns it was received."""
    from horkd import stop

    name = stop.requested()
    if status != 0 or name is None:
        return status
    print(f"horkd: stopped by {name} as the command was finishing: everything it does is "
          "done and saved", file=sys.stderr)
    return stop.exit_status(name)


def _dispatch(args: argparse.Namespace) -> int:
    from horkd import stop

    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "ablate":
            return cmd_ablate(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "study":
            return cmd_study(args)
        if args.command == "study-init":
            return cmd_study_init(args)
        if args.command == "split":
            return cmd_split(args)
        if args.command in ("predict", "search", "verify"):
            return {"predict": cmd_predict, "search": cmd_search,
                    "verify": cmd_verify}[args.command](args)
        if args.command == "demo":
            if is_main():
                print(DEMO_INTRO, flush=True)
            args.config = None
            if args.output_dir is None:
                args.output_dir = "runs/demo"
            return cmd_run(args, raw=demo_config_dict())
        return cmd_list(args)
    except KeyboardInterrupt:  # a second signal (or Ctrl-C where nothing defers it)
        print("horkd: interrupted", file=sys.stderr)
        request = stop.current()
        return stop.exit_status(request.last_signal if request is not None else None)
    except stop.TrainingStopped as exc:  # one line: what stopped, where, what is saved
        print(f"horkd: {exc}", file=sys.stderr)
        return stop.exit_status(exc.signal_name or stop.requested())
    except Exception as exc:  # every user-facing error becomes one line
        if _diverged(exc):
            if args.debug:
                raise
            print(f"horkd: error: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        if args.debug or not _is_user_error(exc):
            raise
        print(f"horkd: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _diverged(exc: Exception) -> bool:
    """A run stopped by non-finite losses. Looked up only where training was imported, so a
    command that trains nothing (predict, export) never pays for importing the training loop."""
    trainer = sys.modules.get("horkd.trainer")
    return trainer is not None and isinstance(exc, trainer.TrainingDiverged)


def _is_user_error(exc: Exception) -> bool:
    """Errors about the user's input or files; anything else is a bug and keeps its traceback."""
    from horkd.registry import UnknownNameError
    from horkd.study.executors import MissingExtraError

    return isinstance(exc, ValueError | OSError | UnknownNameError | MissingExtraError)


if __name__ == "__main__":
    sys.exit(main())
