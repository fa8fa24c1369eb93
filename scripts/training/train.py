#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.train (console command: nphm-train)."""
import sys

from nphm.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
