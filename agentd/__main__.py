"""`python -m agentd`: how the image runs it (PYTHONPATH=/opt/agentd /usr/bin/python3 -m agentd)."""
import sys

from agentd.cli import main

sys.exit(main())
