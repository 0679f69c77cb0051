"""``python -m chaussettes.generator``."""

import sys

from chaussettes.generator.cli import main

sys.exit(main())
