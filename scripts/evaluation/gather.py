#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.gather (console command: nphm-gather)."""
import sys

from nphm.cli.gather import main

if __name__ == "__main__":
    sys.exit(main())
