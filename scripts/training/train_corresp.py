#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.train_corresp (console command: nphm-train-corresp)."""
import sys

from nphm.cli.train_corresp import main

if __name__ == "__main__":
    sys.exit(main())
