#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.make_synthetic (console command: nphm-make-synthetic)."""
import sys

from nphm.cli.make_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
