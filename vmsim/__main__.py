import sys

from vmsim.cli import main

sys.exit(main())
