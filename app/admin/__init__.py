"""The admin: two faces over the same services, with the same role rules.

- ``auth``: admin accounts, sign-in, sessions, TOTP, roles and the current-admin dependencies
  of both faces (reviewers decide, auditors only read, admins also manage clients and erase).
- ``api``: the JSON API under ``/v1/admin`` (bearer session token; in the OpenAPI document).
- ``pages``: the server-rendered pages under ``/admin/`` (session cookie, CSRF tokens).

Neither face imports the other; both import ``auth`` and the services.
"""
