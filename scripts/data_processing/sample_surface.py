#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.sample_surface (console command: nphm-sample-surface)."""
import sys

from nphm.cli.sample_surface import main

if __name__ == "__main__":
    sys.exit(main())
