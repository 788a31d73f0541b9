"""Pick a run's validated step by its worst margin against reference scores (a rule other than the best mean).

    python benchmarks/pick_step.py RUN [--ref RainTrainL=31.03 --ref SIRR_val=25.50 ...] [--min-noharm 45]
        [--min-noharm-min 40] [--max-shift 0.5] [--by margin|noharm-min]

Reads ``RUN/val_log.csv`` (one row per validation; a run with ``validation.keep`` also has each step's weights in
``RUN/validated/``) and prints, per validated step, every family's Y-PSNR minus its reference, the worst of those
margins and the validation no harm (mean, lowest image, mean shift; where logged). A step qualifies when its no harm
(where logged) is at least ``--min-noharm``, and with ``--min-noharm-min`` / ``--max-shift`` when its lowest
rain-free image is at least that and its shift at most that many levels from 0 (a step that did not log them does
not qualify; a log where none did is an error, as is one for ``--by noharm-min``). The chosen step: ``--by margin``
(the default) the qualifying one with the largest worst margin; ``--by noharm-min`` among the qualifying steps with
no family below its reference (worst margin ≥ 0), the one whose lowest rain-free image is highest (ties: the larger
worst margin, then the earlier step), else, where no qualifying step clears every reference, as ``--by margin``.
The last line names the step and the rule that chose it. A family is the validation set's name up
to ``-holdout``. The default references are version 7's validation scores (MODEL_CARD.md, "Validation"): a candidate
for ``default`` ships only if no family is below them.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from derain.evaluation.validation import validation_families

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
    for key in validation_families(row):
        family = key[: -len("_psnr")].split("-holdout")[0]
        if family in ref:
            if family in found:
                raise LogError(f"val_log.csv has two columns for {family}")
            found[family] = float(row[key]) - ref[family]
    missing = set(ref) - set(found)
    if missing:
        raise LogError(f"val_log.csv has no column for {', '.join(sorted(missing))}")
    return found


def _logged(row: dict[str, str], key: str) -> float | None:
    return float(row[key]) if row.get(key) else None


def pick(rows: list[dict[str, str]], ref: dict[str, float], min_noharm: float, min_noharm_min: float | None = None,
         max_shift: float | None = None, by: str = "margin") -> tuple[str, float, str]:
    """The (step, worst margin, how it was chosen) among ``rows`` (the module docstring's rule); prints the table."""
    if not rows:
        raise LogError("val_log.csv has no validation yet")
    needed = [key for key, asked in (("noharm_min", min_noharm_min is not None or by == "noharm-min"),
                                     ("noharm_shift", max_shift is not None)) if asked]
    for key in needed:
        if all(_logged(row, key) is None for row in rows):
            raise LogError(f"no validated step has {key} (logged by runs with validation.noharm since it was added)")
    qualifying = []
    print("| step | " + " | ".join(ref) + " | worst | mean | no harm | no harm min | shift |")
    print("|---" * (len(ref) + 6) + "|")
    for row in rows:
        m = margins(row, ref)
        worst = min(m.values())
        noharm, low, shift = (_logged(row, k) for k in ("noharm_psnr", "noharm_min", "noharm_shift"))
        shown = [f"{v:{fmt}}" if v is not None else "-" for v, fmt in ((noharm, ".2f"), (low, ".2f"), (shift, "+.2f"))]
        print(f"| {row['step']} | " + " | ".join(f"{m[k]:+.2f}" for k in ref) + f" | {worst:+.2f} | "
              f"{float(row['mean_psnr']):.2f} | " + " | ".join(shown) + " |")
        if ((noharm is None or noharm >= min_noharm)
                and (min_noharm_min is None or (low is not None and low >= min_noharm_min))
                and (max_shift is None or (shift is not None and abs(shift) <= max_shift))):
            qualifying.append((row["step"], worst, low))
    if not qualifying:
        raise LogError("no validated step meets the no-harm bounds")
    clear = [q for q in qualifying if q[1] >= 0 and q[2] is not None]
    if by == "noharm-min":
        if clear:
            step, worst, low = max(clear, key=lambda q: (q[2], q[1], -int(q[0])))
            return step, worst, f"by noharm-min: its lowest rain-free image {low:.2f} dB, no family below its reference"
        step, worst, _ = max(qualifying, key=lambda q: (q[1], -int(q[0])))
        return step, worst, "by margin: no qualifying step clears every reference"
    step, worst, _ = max(qualifying, key=lambda q: (q[1], -int(q[0])))
    return step, worst, "by margin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder (with val_log.csv)")
    parser.add_argument("--ref", action="append", type=reference, default=None, metavar="FAMILY=DB",
                        help="a family's reference Y-PSNR; repeatable (default: version 7's four)")
    parser.add_argument("--min-noharm", type=float, default=45.0, help="validation no harm at least this, dB (default 45)")
    parser.add_argument("--min-noharm-min", type=float, default=None, help="lowest rain-free image at least this, dB")
    parser.add_argument("--max-shift", type=float, default=None, help="|mean shift| at most this, 8-bit levels")
    parser.add_argument("--by", choices=("margin", "noharm-min"), default="margin",
                        help="margin: the best worst margin; noharm-min: the highest lowest image among steps above every reference")
    args = parser.parse_args()
    ref = dict(args.ref) if args.ref else dict(VERSION7)
    log = args.run if args.run.is_file() else args.run / "val_log.csv"
    if not log.is_file():
        sys.exit(f"{log}: no validation log")
    try:
        with open(log, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        step, worst, how = pick(rows, ref, args.min_noharm, args.min_noharm_min, args.max_shift, args.by)
    except (LogError, UnicodeDecodeError, csv.Error, KeyError, ValueError) as err:
        sys.exit(f"{log}: {err if isinstance(err, LogError) else 'not a validation log (' + type(err).__name__ + ')'}")
    kept = log.parent / "validated" / f"step{int(step):07d}.safetensors"
    print(f"chosen: step {step} (worst margin {worst:+.2f} dB; {how})" + (f": {kept}" if kept.is_file() else ""))


if __name__ == "__main__":
    main()
