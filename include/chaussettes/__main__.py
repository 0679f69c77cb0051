import sys

from chaussettes.cli import main

sys.exit(main())
