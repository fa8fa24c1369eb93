#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.eval (console command: nphm-eval)."""
import sys

from nphm.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
