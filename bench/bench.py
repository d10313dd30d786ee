#!/usr/bin/env python3
"""peftrun vs PyTorch + transformers + PEFT on one named case; see bench/README.md."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peftbench.driver import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
