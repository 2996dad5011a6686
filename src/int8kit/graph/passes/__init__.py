"""Graph rewriting passes used by ``int8kit.graph.optimize``.

Each pass takes a ``ModelProto`` (edited in place) and a log list, appends one human-readable line
per change (or a summary line), and returns the number of changes it made.
"""
