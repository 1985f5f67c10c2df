"""Run directories: what one holds and how it is opened for writing and resumed
(:mod:`~pyrovae.runs.directory`), under the lock of :mod:`~pyrovae.runs.lock`, what pyrovae wrote there and
the output sets of commands committed as one (:mod:`~pyrovae.runs.outputs`), and a run's configuration
and loading (:mod:`~pyrovae.runs.run`: :class:`~pyrovae.runs.run.RunConfig`,
:func:`~pyrovae.runs.run.load_run`). Files are written through :mod:`pyrovae.storage`.
"""
