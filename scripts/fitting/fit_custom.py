#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.fit_custom (console command: nphm-fit-custom)."""
import sys

from nphm.cli.fit_custom import main

if __name__ == "__main__":
    sys.exit(main())
