import sys

from chaussettes.notify.cli import main

sys.exit(main())
