import sys

from pefthub.cli import main

sys.exit(main())
