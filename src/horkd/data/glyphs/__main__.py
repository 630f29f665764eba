"""``python -m horkd.data.glyphs [--root DIR] [--hr-size 32] [--renders 4]``: render the glyph
set into its cache now (``make glyphs`` does) and say what it holds, how long it took and, in one
line, whether a run with ``--min-families`` (``data.glyph_min_families``) would take it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from horkd.config import DataConfig
from horkd.data.glyphs.cache import load_glyphs
from horkd.data.glyphs.messages import (
    lopsided_splits,
    other_sets,
    set_summary,
    too_few_families,
    unread_fonts,
    variable_fonts,
)
from horkd.data.glyphs.splits import MIN_FAMILIES
from horkd.data.registry import DataNotFoundError

SHOWN_LEFT_OUT = 10  # fonts left out named one a line; the manifest lists them all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m horkd.data.glyphs", description=__doc__)
    parser.add_argument("--root", default=None, help="a folder of fonts (default: the system's)")
    parser.add_argument("--hr-size", type=int, default=32)
    parser.add_argument("--renders", type=int, default=4)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--min-families", type=int,
                        default=DataConfig.model_fields["glyph_min_families"].default,
                        help="the data.glyph_min_families a run is checked against")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        found = load_glyphs(args.root, args.hr_size, args.renders, args.test_fraction,
                            args.val_fraction, args.processes)
    except DataNotFoundError as exc:  # no fonts there: one line saying what to do
        raise SystemExit(str(exc)) from None
    m, c = found.manifest, found.manifest["counts"]
    print(f"glyphs: {set_summary(m)}")
    for line in _left_out_lines(m["excluded"], args.root, found.folder / "manifest.json"):
        print(line)
    unread = unread_fonts(args.root)
    if unread:
        print(f"  not read: {unread}: convert them to .ttf or .otf to use them")
    for name in ("train", "val", "test"):
        s = c[name]
        print(f"  {name:5s} {s['families']:4d} groups {s['faces']:4d} faces "
              f"{s['images']:7d} images")
    notes = lopsided_splits(m, {"test": args.test_fraction, "val": args.val_fraction})
    notes += [line for line in (variable_fonts(m["faces"]), other_sets(found.folder)) if line]
    for line in notes:
        print(f"  note: {line}")
    renders = f"{m['renders']} render" + ("s" if m["renders"] != 1 else "")
    processes = f"{m['processes']} process" + ("es" if m["processes"] != 1 else "")
    print(f"  {m['side']} px, {renders} per character; rendered once, in {m['seconds']} s "
          f"on {processes}; this call {time.perf_counter() - start:.1f} s; "
          f"cache: {found.folder}")
    short = too_few_families(c, max(MIN_FAMILIES, args.min_families), args.root)
    if short:
        print(f"a run refuses this set: {short}")
        raise SystemExit(1)  # a script that renders, then trains, stops here


def _left_out_lines(excluded: dict[str, list[dict[str, str]]], root: str | None, manifest: Path,
                    shown: int = SHOWN_LEFT_OUT) -> list[str]:
    """A line per font left out, naming it and why (the first ``shown``; the manifest has all),
    so a user can find the file a count stands for."""
    rows = [(reason.replace("_", " "), row) for reason, rows in excluded.items() for row in rows]
    base = Path(root) if root and Path(root).is_dir() else None
    lines = []
    for reason, row in rows[:shown]:
        path = Path(row["file"])
        name = path.relative_to(base) if base and path.is_relative_to(base) else path
        why = row["why"] if len(row["why"]) <= 100 else row["why"][:99] + "..."
        lines.append(f"  left out ({reason}) {name}: {why}")
    if len(rows) > shown:
        lines.append(f"  ... and {len(rows) - shown} more left out: {manifest}")
    return lines


if __name__ == "__main__":
    main()
