#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.check_training (console command: nphm-check-training)."""
import sys

from nphm.cli.check_training import main

if __name__ == "__main__":
    sys.exit(main())
