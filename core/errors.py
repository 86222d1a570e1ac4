"""User-facing errors: the CLI prints ``error: <message>`` on one line and exits with code 2."""
from __future__ import annotations

import errno

# errno → what the user is told when a write (or read) of a path fails for a reason outside the program
_DISK = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
         errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
         errno.EPERM: "operation not permitted", errno.EFBIG: "file too large"}


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing data, foreign run directory...)."""


def disk_error(e: BaseException, path=None, action: str = "access") -> UserError | None:
    """A one-line ``UserError`` for an ``OSError`` a user must fix on the file system (disk full,
    read-only or unreadable path), naming the path; ``None`` for any other exception."""
    if not isinstance(e, OSError) or e.errno not in _DISK:
        return None
    where = path if path is not None else (e.filename or "a file")
    hint = ("; free some space and rerun with --resume (finished work is kept)" if e.errno in (errno.ENOSPC, errno.EDQUOT)
            else "; choose another --out" if e.errno == errno.EROFS
            else "; check its permissions")
    return UserError(f"cannot {action} {where}: {_DISK[e.errno]}{hint}")
