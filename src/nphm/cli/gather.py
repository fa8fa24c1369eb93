"""Gather the per-scan metrics of eval.py into totals, per-subject tables and a report.

Writes into RESULTS_DIR/evaluation/: total_metrics.csv and total_metrics_face.csv (mean
over all scans, the release's keys), per_subject_metrics.csv and per_subject_metrics_face.csv
(mean over each subject's expressions), report.md and report.html (tables and links to
the per-scan pictures and the failed scans); prints the tables as markdown, then the scans that
failed or were not evaluated according to the evaluation's ledger (RESULTS_DIR/evaluation/ledger,
all runs, merged from every worker).

Exit code: 0 every scan of the ledger evaluated, 3 the ledger holds failed scans (the totals
are over the others), 2 nothing to gather (no evaluated scan, or no such folder).

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
    from nphm.utils.batch import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE
    from nphm.utils.ledger import describe_item

    try:
        g = gather(args.results_dir, subjects=args.subjects, pages=not args.no_pages)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    for problem in g.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"## Totals ({len(g.scans)} scans, distances in mm)\n")
    print(totals_markdown(g))
    print("\n## Per subject\n")
    print(per_subject_markdown(g))
    if g.failures or g.skipped:
        print(f"\n## Not in the totals ({len(g.failures)} failed, {len(g.skipped)} skipped; all runs)\n")
        for f in g.failures:
            print(f"- failed {describe_item(f['subject'], f['expression'])}: {f['error']}")
        for line in g.skipped:
            print(f"- skipped {line}")
    print(f"\nwritten to {args.results_dir / 'evaluation'}")
    return EXIT_ITEMS_FAILED if g.failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
