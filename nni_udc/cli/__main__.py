"""``python -m nni_udc.cli COMMAND ...``: the ``nni-udc`` command with this interpreter (nnictl trial commands)."""
import sys

from nni_udc.cli import main

sys.exit(main())
