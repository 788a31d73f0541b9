"""Pick a run's validated step by its worst margin against reference scores (a rule other than the best mean).

    python benchmarks/pick_step.py RUN [--ref RainTrainL=31.03 --ref SIRR_val=25.50 ...] [--min-noharm 45]

Reads ``RUN/val_log.csv`` (one row per validation; a run with ``validation.keep`` also has each step's weights in
``RUN/validated/``) and prints, per validated step, every family's Y-PSNR minus its reference and the worst of
those margins; the chosen step is the one with the largest worst margin among the steps whose validation no harm
(where logged) is at least ``--min-noharm``. A family is the validation set's name up to ``-holdout``. The default
references are version 7's validation scores (MODEL_CARD.md, "Validation"): a candidate for ``default`` ships only
if no family is below them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

VERSION7 = {"RainTrainL": 31.03, "SIRR_val": 25.50, "RainTrainH_val": 21.43, "JORDER_heavy5": 23.79}


class LogError(ValueError):
    """A validation log that cannot answer the question."""


def reference(item: str) -> tuple[str, float]:
    """``FAMILY=DB`` → (family, dB); an argparse ``type``."""
    family, sep, value = item.partition("=")
    try:
        if not sep or not family:
            raise ValueError
        return family, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FAMILY=DB, got {item!r}") from None


def margins(row: dict[str, str], ref: dict[str, float]) -> dict[str, float]:
    """Each reference family's PSNR in ``row`` minus its reference; :class:`LogError` when a family has no column or
    more than one."""
    found: dict[str, float] = {}
    for key, value in row.items():
        if key.endswith("_psnr") and key not in ("mean_psnr", "noharm_psnr"):
            family = key[: -len("_psnr")].split("-holdout")[0]
            if family in ref:
                if family in found:
                    raise LogError(f"val_log.csv has two columns for {family}")
                found[family] = float(value) - ref[family]
    missing = set(ref) - set(found)
    if missing:
        raise LogError(f"val_log.csv has no column for {', '.join(sorted(missing))}")
    return found


def pick(rows: list[dict[str, str]], ref: dict[str, float], min_noharm: float) -> tuple[str, float]:
    """The (step, worst margin) chosen among ``rows``; prints the table on the way."""
    if not rows:
        raise LogError("val_log.csv has no validation yet")
    best = None
    print("| step | " + " | ".join(ref) + " | worst | mean | no harm |")
    print("|---" * (len(ref) + 4) + "|")
    for row in rows:
        m = margins(row, ref)
        worst = min(m.values())
        noharm = float(row["noharm_psnr"]) if row.get("noharm_psnr") else None
        shown = f"{noharm:.2f}" if noharm is not None else "-"
        print(f"| {row['step']} | " + " | ".join(f"{m[k]:+.2f}" for k in ref) + f" | {worst:+.2f} | {float(row['mean_psnr']):.2f} | {shown} |")
        if (noharm is None or noharm >= min_noharm) and (best is None or worst > best[1]):
            best = (row["step"], worst)
    if best is None:
        raise LogError(f"no validated step has no harm >= {min_noharm} dB")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--ref", action="append", type=reference, default=None, metavar="FAMILY=DB")
    parser.add_argument("--min-noharm", type=float, default=45.0)
    args = parser.parse_args()
    ref = dict(args.ref) if args.ref else dict(VERSION7)
    log = args.run / "val_log.csv"
    if not log.is_file():
        sys.exit(f"{log}: no validation log")
    with open(log) as f:
        rows = list(csv.DictReader(f))
    try:
        step, worst = pick(rows, ref, args.min_noharm)
    except LogError as err:
        sys.exit(f"{log}: {err}")
    kept = args.run / "validated" / f"step{int(step):07d}.safetensors"
    print(f"chosen: step {step} (worst margin {worst:+.2f} dB)" + (f": {kept}" if kept.is_file() else ""))


if __name__ == "__main__":
    main()
