"""Generate a synthetic head dataset in the NPHM release layout.

Writes OUT/{subject:03d}/{expression:03d}/{registration,flame,scan}.ply + s/R/t.npy, the
template assets in OUT/assets/ and the description OUT/dataset.json (splits: first ~70 %
train, next ~10 % eval, last ~20 % test; expression 0 = neutral closed, 1 = neutral open).
The same seed gives byte-identical files. Finished scans are skipped unless --overwrite.

Sources (--source): "ict" (default) makes realistic heads from the shipped ICT Face Model
(real-scan identities with hair, eyes, mouth interior and teeth; ARKit expressions; scans as a
scanner sees them), "procedural" the small implicit heads of the first synthetic set (the
shipped compact models were trained on those). A folder keeps the source it was made with.

Example:
    python scripts/dataset/make_synthetic.py --subjects 50 --expressions 10 --seed 0 --workers 2
    python scripts/dataset/make_synthetic.py --source procedural --subjects 30 --expressions 8 --out work/proc
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nphm import paths


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=["ict", "procedural"], default="ict",
                   help="kind of heads: realistic ICT heads or procedural ones (default: %(default)s)")
    p.add_argument("--subjects", type=int, default=50, help="number of subjects (default: %(default)s)")
    p.add_argument("--expressions", type=int, default=10,
                   help="expressions per subject, >= 2 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=paths.DATA, help="output folder (default: %(default)s)")
    p.add_argument("--first-subject", type=int, default=0,
                   help="id of the first subject; folders are {id:03d} (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="regenerate scans that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.data.synthetic import generate_dataset

    start = time.perf_counter()
    try:
        report = generate_dataset(args.out, n_subjects=args.subjects, n_expressions=args.expressions,
                                  seed=args.seed, workers=args.workers, overwrite=args.overwrite,
                                  first_subject=args.first_subject, progress=not args.quiet, source=args.source)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    per_scan = f" ({elapsed / report.written:.2f} s per scan)" if report.written else ""
    print(f"{report.written} {args.source} scans written, {report.skipped} already there, {len(report.failures)} "
          f"failed in {elapsed:.1f} s{per_scan} -> {report.description_path}")
    for subject, expression, message in report.failures:
        print(f"failed: subject {subject:03d} expression {expression:03d}: {message}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
