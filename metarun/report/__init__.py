"""``metarun-report``: compare the members of a sweep offline, from the files each run writes.

``members`` reads a multirun directory, ``tables`` finds the swept keys and aggregates seeds
(with ``stats``), ``display`` formats cells for people, ``files`` writes Markdown and CSV,
``plots`` the validation curves, ``terminal`` the rich or plain table, and ``cli`` is the command.
"""
