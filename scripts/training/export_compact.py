#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.export_compact (console command: nphm-export-compact)."""
import sys

from nphm.cli.export_compact import main

if __name__ == "__main__":
    sys.exit(main())
