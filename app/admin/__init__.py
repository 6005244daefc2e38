"""The server-rendered admin web UI, mounted under ``/admin/``.

Plain HTML forms over the same services as the JSON admin API (``app/routers/admin.py``), with the
same role rules: reviewers decide, auditors only read, admins also manage clients and erase.
``web`` holds the plumbing (templates, cookie sessions, CSRF, security headers, error pages);
``routes`` holds the pages.
"""
