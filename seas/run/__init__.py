"""The run: configuration, the stage registry, the output layout, studies, resume, runtime helpers, errors.

Floor 0: imports nothing else of the project (pure Python, no torch at import time: the Snakefile imports it)."""
