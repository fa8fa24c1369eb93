"""Convert the ICT Face Model Light arrays into the project's compact head-model asset.

Reads KIT/ict_face_model_light.npz, KIT/vertex_indices.json and KIT/LICENSE; writes FILE (the
shipped asset is src/nphm/data/heads/ict_light.npz) and copies the license beside it.

Example:
    python scripts/dataset/convert_ict_facekit.py --kit /path/to/ict_facekit --out src/nphm/data/heads/ict_light.npz
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", type=Path, required=True, metavar="DIR",
                   help="folder with ict_face_model_light.npz, vertex_indices.json and LICENSE")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .npz asset to write")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nphm.data.heads.convert_ict import convert_ict_facekit

    convert_ict_facekit(args.kit, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
