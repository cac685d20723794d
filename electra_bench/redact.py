"""Secrets out of everything the harness writes or prints (issue #17): one masker, `mask`, used by every printer
(the CLI's stdout/stderr, the log records of the libraries it drives) and every writer of artifacts.

Masked: the password of a URL's user info, whatever it contains (`/`, `@`, `:`: everything up to the URL's last `@`
is user info), a user name given alone (a token as the user: `https://ghp_xxx@host`), the values of query-string
parameters whose name says secret (token, password, key, secret, signature, auth, credential, ...), and every
secret `remember`ed from the configured URLs in their raw and percent-decoded forms (MLflow prints the URL it
was given, decoded or not).
"""
from __future__ import annotations

import io
import logging
import re
from urllib.parse import unquote

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^\s'\"<>()]*)@(?=[^\s'\"<>()@]*)")
_QUERY = re.compile(r"(?P<name>[?&;][\w.\-]*(?:token|passw(?:or)?d|pwd|secret|key|signature|sig|auth|credential)"
                    r"[\w.\-]*=)(?P<value>[^&#\s'\"<>]+)", re.IGNORECASE)
_known: set[str] = set()


def _userinfo(m: re.Match) -> str:
    user, sep, _ = m.group("info").partition(":")
    return f"{m.group('scheme')}{user}:{MASK}@" if sep else f"{m.group('scheme')}{MASK}@"


def mask(text: str) -> str:
    """`text` with every credential it carries replaced by ***."""
    if not text:
        return text
    for secret in sorted(_known, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _QUERY.sub(lambda m: m.group("name") + MASK, _USERINFO.sub(_userinfo, text))


def secrets_in(url: str) -> set[str]:
    """The secrets of one URL (password or lone user name, secret query values), raw and percent-decoded."""
    found: set[str] = set()
    m = _USERINFO.search(url)
    if m:
        user, sep, password = m.group("info").partition(":")
        if sep or len(user) >= 20:  # a lone user name is remembered when it is token-long, not `postgres`
            found.add(password if sep else user)
    found.update(q.group("value") for q in _QUERY.finditer(url))
    return {f for s in found if len(s) >= 3 for f in (s, unquote(s))}


def remember(*urls: str | None) -> None:
    """Mask these URLs' secrets wherever they appear from now on (this process)."""
    for url in urls:
        if url:
            _known.update(secrets_in(url))


class MaskingStream(io.TextIOBase):
    """A text stream that masks what is written to it before passing it on (sys.stdout / sys.stderr)."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(mask(s))
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self):
        return getattr(self.inner, "encoding", "utf-8")


class MaskingFilter(logging.Filter):
    """Masks a log record's message (the libraries' handlers hold their own stream, not sys.stderr)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask(record.getMessage()), ()
        return True


def mask_logging() -> None:
    """Put the masking filter on every handler there is now (root and named loggers)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, MaskingFilter) for f in h.filters):
                h.addFilter(MaskingFilter())
