#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.fitting_speed (console command: nphm-fitting-speed)."""
import sys

from nphm.cli.fitting_speed import main

if __name__ == "__main__":
    sys.exit(main())
