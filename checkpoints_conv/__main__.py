"""``python -m checkpoints_conv import|export|verify``."""

import sys

from checkpoints_conv.cli import main

if __name__ == "__main__":  # dist_checkpointing spawns workers: the guard keeps them from re-running the CLI
    sys.exit(main())
