#!/usr/bin/env python3
"""The release's entry point; the job is nphm.cli.sample_deformation_field (console command: nphm-sample-deformation-field)."""
import sys

from nphm.cli.sample_deformation_field import main

if __name__ == "__main__":
    sys.exit(main())
