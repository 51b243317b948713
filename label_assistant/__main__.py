"""``python -m label_assistant`` = ``label-assistant``."""

import sys

from label_assistant.cli import main

sys.exit(main())
