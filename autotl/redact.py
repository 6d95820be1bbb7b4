"""Passwords out of every text autotl shows or writes: `mask` hides the password of each URL.

A storage URL (``postgresql://user:secret@host/db``) reaches error messages, logs and
reports through the drivers' own exception texts as much as through ours, so whatever
text leaves autotl goes through `mask` rather than each message being built with care.
"""

from __future__ import annotations

import logging
import re

HIDDEN = "***"

# scheme://user:PASSWORD@ — the user may be empty (redis://:pw@host). The password runs to
# the last "@" before the next blank or quote (an unescaped "@" in a password must not
# leave its tail visible), but never into a next URL ("a://u:p@h,b://v:q@h" is two).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)"
    r"(?P<password>(?:(?!://)[^\s'\"])*)"
    r"(?=@)"
)
# libpq's keyword form, which psycopg echoes in some errors: "host=db password=secret".
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<password>'[^']*'|[^\s'\"]+)", re.IGNORECASE)


def mask(text: str) -> str:
    """`text` with the password of every URL in it (and any ``password=...``) as ``***``;
    text without credentials is returned unchanged."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + HIDDEN if m["password"] else m[0], text)
    return _KEYWORD_PASSWORD.sub(lambda m: m["head"] + HIDDEN, text)


class MaskingFormatter(logging.Formatter):
    """A logging formatter whose output — message and traceback alike — goes through `mask`:
    set it on the handlers autotl's front ends install."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))
