"""``python -m horkd`` (and ``torchrun -m horkd``) behave like the ``horkd`` command."""

import sys

from horkd.cli import main

sys.exit(main())
