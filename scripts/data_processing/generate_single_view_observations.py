#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.generate_single_view_observations (console command: nphm-generate-single-view-observations)."""
import sys

from nphm.cli.generate_single_view_observations import main

if __name__ == "__main__":
    sys.exit(main())
