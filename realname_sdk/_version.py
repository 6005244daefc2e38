"""The SDK's version (kept in one place: the User-Agent and ``realname_sdk.__version__``)."""

__version__ = "0.1.0"
