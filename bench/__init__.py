"""Load harness for ``realname serve`` on PostgreSQL: ``python -m bench`` (or ``make bench``).

Each scenario is measured next to a ceiling taken in the same run on the same machine, so the
ratios hold even where the absolute numbers drift. See ``bench/README.md``.
"""
