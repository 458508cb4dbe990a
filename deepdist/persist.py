"""The one on-disk format of deepdist: a wire frame in a file, written atomically.

Models (``GibbsLDAModel.save``), the Gibbs sampler's checkpoints and the server's
:class:`~deepdist.Checkpointer` all write one :mod:`deepdist.wire` frame per file: named
little-endian arrays plus a JSON header (``meta``), never pickle, so a file from an untrusted
place cannot run code when it is read. ``meta["format"]`` names what the file holds and its
version, so a reader refuses a file of another kind with a clear message.

A file is written to a temporary name, flushed, fsynced and renamed, and the directory is fsynced:
a crash leaves the old file or the new one, never half of one. Temporary names carry the writer's
host and process id, so :func:`remove_leftovers` can tell a dead writer's leftovers from a live
writer's file in progress.

    >>> import numpy as np, tempfile, os
    >>> from deepdist.persist import write_frame, read_frame
    >>> path = os.path.join(tempfile.mkdtemp(), "model.ddw")
    >>> write_frame(path, {"w": np.arange(3.0)}, {"format": "example/1"})
    >>> arrays, meta = read_frame(path, expect="example/1")
    >>> arrays["w"].tolist(), meta["format"]
    ([0.0, 1.0, 2.0], 'example/1')
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import tempfile

import numpy as np

from . import wire
from .errors import ConfigurationError

__all__ = ["read_frame", "remove_leftovers", "write_frame"]

log = logging.getLogger(__name__)

#: temporary files of a writer: this prefix, then its host and pid
TMP_PREFIX = ".tmp-deepdist-"
#: the header of a file may hold a vocabulary; the 1 MiB bound of a request does not apply
MAX_FILE_HEADER_BYTES = 1 << 31


def _tmp_prefix() -> str:
    return f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def write_frame(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` and ``meta`` as one frame to ``path``, atomically (see the module)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_tmp_prefix())
    try:
        with os.fdopen(fd, "wb") as out:
            for part in wire.encode_parts(arrays, meta):
                out.write(part)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)  # the rename itself survives a power cut
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_frame(path, expect: str | None = None) -> tuple[dict, dict]:
    """``(arrays, meta)`` of the frame in ``path``; with ``expect``, refuse a file whose
    ``meta["format"]`` is not that one. The arrays are writable copies."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        body = f.read()
    try:
        frame = wire.decode(body, max_header_bytes=MAX_FILE_HEADER_BYTES)
    except wire.WireFormatError as err:
        raise ConfigurationError(f"{path} is not a deepdist file: {err}") from err
    meta = frame.meta
    if expect is not None and meta.get("format") != expect:
        raise ConfigurationError(f"{path} holds {meta.get('format')!r}; this version reads {expect!r}")
    return {name: np.array(array) for name, array in frame.arrays.items()}, meta


def remove_leftovers(directory: str) -> list:
    """Delete the temporary files of writers on this host that died mid-write; return their paths."""
    removed = []
    host = socket.gethostname()
    for path in glob.glob(os.path.join(glob.escape(directory), TMP_PREFIX + "*")):
        rest = os.path.basename(path)[len(TMP_PREFIX):]
        writer_host, _, pid = rest.rpartition("-")[0].rpartition("-")
        if writer_host != host or not pid.isdigit():
            continue  # another host's writer (a shared directory), or a name not ours
        try:
            os.kill(int(pid), 0)
            continue  # a live writer
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    if removed:
        log.warning("removed %d temporary file(s) of writers that died mid-write in %s", len(removed), directory)
    return removed


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
