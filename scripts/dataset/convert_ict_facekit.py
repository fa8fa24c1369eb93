#!/usr/bin/env python3
"""Convert the ICT Face Model Light into the shipped asset; the job is nphm.cli.convert_ict_facekit."""
import sys

from nphm.cli.convert_ict_facekit import main

if __name__ == "__main__":
    sys.exit(main())
