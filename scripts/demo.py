#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.demo (console command: nphm-demo)."""
import sys

from nphm.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
