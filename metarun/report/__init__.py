"""``metarun-report``: compare the members of a sweep offline, from the files each run writes.

``members`` reads a multirun directory (``episodes`` each run's per-episode scores), ``tables``
finds the swept keys and aggregates seeds (with ``stats``), ``comparisons`` pairs configurations
on the episodes they share (with ``paired``'s tests), ``display`` formats cells for people,
``files`` writes Markdown and CSV, ``plots`` the validation curves and paired differences,
``terminal`` the rich or plain table, and ``cli`` is the command.
"""
