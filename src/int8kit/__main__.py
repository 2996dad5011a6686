"""The ``int8kit`` command: the console script and ``python -m int8kit`` both start in :func:`main`.

A Ctrl-C must end the command with one line, never a traceback, from as early as possible. Until
:func:`main`'s ``try`` is entered nothing can catch it, so this module (like ``int8kit/__init__``)
imports only what Python has loaded at start-up; everything else, the command line included, is
imported inside the ``try``.
"""

import os
import sys

INTERRUPTED = "int8kit: interrupted; no partial output was left behind."


def main() -> int:
    """Run the command line on ``sys.argv`` and return its exit code; after a Ctrl-C, print one line
    and end the process at once with exit code 130."""
    ctrl_c = None
    try:
        from int8kit.runtime import ctrl_c

        ctrl_c.install()  # Python's KeyboardInterrupt, held back while a compiled module initialises
        try:
            from int8kit.cli import main as run

            code = run()
        finally:
            ctrl_c.release()
    except SystemExit:  # argparse: --help, --version, usage errors
        raise
    except BaseException as exc:
        if not (isinstance(exc, KeyboardInterrupt) or (ctrl_c is not None and ctrl_c.seen())):
            raise  # a bug: its traceback is the report
        print(INTERRUPTED, file=sys.stderr)
        # Skip the interpreter's teardown: after a Ctrl-C, onnxruntime's threads can abort it (exit 134).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


if __name__ == "__main__":
    sys.exit(main())
