"""``python -m training.engine`` (also under ``accelerate launch -m training.engine``)."""

import sys

from training.engine.cli import main

sys.exit(main())
