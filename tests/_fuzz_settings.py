"""How many examples each fuzz test draws: a fast subset in the default run, many more in the ``slow`` one.

``STRUCTMAT_FUZZ_EXAMPLES`` overrides the slow count (e.g. for an overnight run)."""

import os

#: Examples per fuzz test (most are parametrized by family) in the default run.
FAST = 6
#: Examples per fuzz test in ``-m slow``.
SLOW = int(os.environ.get("STRUCTMAT_FUZZ_EXAMPLES", "200"))
