"""`python -m bake ...` is `python -m bake.cli ...`."""
import sys

from bake.cli import main

sys.exit(main())
