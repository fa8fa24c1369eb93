#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.speed (console command: nphm-speed)."""
import sys

from nphm.cli.speed import main

if __name__ == "__main__":
    sys.exit(main())
