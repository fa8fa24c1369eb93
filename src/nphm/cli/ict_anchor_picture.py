"""Draw the ICT head model's anchor picture (nphm.pictures.heads.ict_anchor_figure).

The template's skin in the nphm frame with its 39 anchors (red), the release's mean anchors
(blue) and the part below the neck cut plane (tan); front, side and back views.

Example:
    python -m nphm.cli.ict_anchor_picture --out docs/images/ict_anchors.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/images/ict_anchors.png"), metavar="FILE",
                   help="the PNG to write (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.pictures.heads import ict_anchor_figure

    print(ict_anchor_figure(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
