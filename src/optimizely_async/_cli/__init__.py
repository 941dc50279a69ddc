"""The commands of ``python -m optimizely_async`` besides the demo: ``validate``, ``decide`` and ``explain``.

Exit codes (also in ``--help`` and docs/cli.md):

* 0: done (``validate``: the datafile is usable, warnings or not);
* 1: the datafile is invalid (the message names the field at fault) or could not be fetched;
* 2: a usage error: unknown option, missing argument, malformed ``--attr``, unreadable file;
* 3: ``decide`` / ``explain``: a flag key given is not in the datafile (the other flags are still shown).
"""

from __future__ import annotations

from .commands import COMMANDS, EXIT_CODES, run

__all__ = ["COMMANDS", "EXIT_CODES", "run"]
