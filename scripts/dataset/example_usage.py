#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.example_usage (console command: nphm-example-usage)."""
import sys

from nphm.cli.example_usage import main

if __name__ == "__main__":
    sys.exit(main())
