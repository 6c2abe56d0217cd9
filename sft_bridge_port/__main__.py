"""``python -m sft_bridge_port ...`` is the ``sft-bridge-port`` command (see :mod:`sft_bridge_port.cli`)."""

import sys

from sft_bridge_port.cli import main

if __name__ == "__main__":
    sys.exit(main())
