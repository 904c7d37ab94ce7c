"""``python -m evaluation [--optimizer NAME=FILE.npz] --out DIR``; see :mod:`evaluation.cli`."""

import sys

from evaluation.cli import main

sys.exit(main())
