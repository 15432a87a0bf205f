"""python -m deploy.fleet: see deploy/fleet/cli.py."""
import sys

from deploy.fleet.cli import main

sys.exit(main())
