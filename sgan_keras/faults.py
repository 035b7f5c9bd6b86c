"""Write failures (a full disk, an unwritable file) as one-line errors.

An ``OSError`` whose errno says that the disk is full or the file cannot be
written (``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EROFS``, ``EACCES``, ``EPERM``),
or a TensorFlow ``OpError`` carrying one of those reasons (TensorFlow's file
system reports ``ENOSPC`` as ``ResourceExhaustedError`` and ``EROFS`` as
``PermissionDeniedError``, with the ``strerror`` text in the message), raised
while an output is written becomes a :class:`WriteError` that names the output.
Any other error keeps its type and traceback.

Every writer of the package replaces its file in one step (a temporary file,
then a rename; see ``callbacks._replace_atomically``, ``checkpoint`` and
``export``), so a failed write leaves the earlier version in place.
"""

import contextlib
import errno
import os

import tensorflow as tf

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)


class WriteError(OSError):
    """An output could not be written (disk full, read-only or not permitted); one line."""


def disk_reason(error):
    """The ``strerror`` text when ``error`` is a disk-full or unwritable-file
    failure, else ``None``."""
    if isinstance(error, OSError) and error.errno in DISK_ERRNOS:
        return error.strerror or os.strerror(error.errno)
    if isinstance(error, tf.errors.OpError):
        for code in DISK_ERRNOS:
            if os.strerror(code) in str(error.message):
                return os.strerror(code)
    return None


@contextlib.contextmanager
def writing(what):
    """Turns a disk-full or unwritable-file error raised in the block into a
    :class:`WriteError` ``cannot write <what> (<reason>)``."""
    try:
        yield
    except WriteError:
        raise
    except (OSError, tf.errors.OpError) as error:
        reason = disk_reason(error)
        if reason is None:
            raise
        raise WriteError(f"cannot write {what} ({reason})") from None
