#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.fitting_pointclouds (console command: nphm-fitting-pointclouds)."""
import sys

from nphm.cli.fitting_pointclouds import main

if __name__ == "__main__":
    sys.exit(main())
