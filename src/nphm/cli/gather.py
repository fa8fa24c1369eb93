"""Gather the per-scan metrics of eval.py into totals, per-subject tables and a report.

Writes into RESULTS_DIR/evaluation/: total_metrics.csv and total_metrics_face.csv (mean
over all scans, the release's keys), per_subject_metrics.csv and per_subject_metrics_face.csv
(mean over each subject's expressions), report.md and report.html (tables and links to
the per-scan pictures); prints the tables as markdown.

Example:
    python scripts/evaluation/gather.py --results_dir work/fitting/forward_nphm/test
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", type=Path, required=True, help="folder that eval.py evaluated")
    p.add_argument("--subjects", type=int, nargs="+", default=None, help="only these subjects (default: all found)")
    p.add_argument("--no_pages", action="store_true", help="do not write report.md / report.html")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.evaluation import gather, per_subject_markdown, totals_markdown

    try:
        g = gather(args.results_dir, subjects=args.subjects, pages=not args.no_pages)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for problem in g.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"## Totals ({len(g.scans)} scans, distances in mm)\n")
    print(totals_markdown(g))
    print("\n## Per subject\n")
    print(per_subject_markdown(g))
    print(f"\nwritten to {args.results_dir / 'evaluation'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
