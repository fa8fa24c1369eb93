#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.quality (console command: nphm-quality)."""
import sys

from nphm.cli.quality import main

if __name__ == "__main__":
    sys.exit(main())
