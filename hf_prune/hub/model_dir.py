"""All-or-nothing saves into a directory that may also hold other files (checkpoints, logs).

Layout after a save::

    save_directory/
        config.json       -> .hf_prune/current/config.json
        model.safetensors -> .hf_prune/current/model.safetensors
        README.md         -> .hf_prune/current/README.md        (and the card's plots)
        .hf_prune/current -> v-<random>                        (the commit: one link)
        .hf_prune/v-<random>/config.json, model.safetensors, README.md, ...

A save writes a complete version folder, then switches ``current`` with one rename. Readers
(``from_pretrained``, vanilla transformers, Hub uploads) open the top-level names and follow the
links, so after a failure or a SIGKILL at any moment they see the complete old version or the
complete new one. Top-level files the save does not write are never touched; a plain file the
save replaces (an older save's, a user's ``README.md``) is first adopted into the current version.
:func:`write_text_atomic` gives one file the same guarantee (run reports, the pruning state).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid

STORE = ".hf_prune"
CURRENT = "current"
_VERSION_PREFIX = "v-"
_TEMP_PREFIX = ".hf_prune-tmp-"
_LEGACY_STAGING_PREFIX = ".hf_prune-staging-"  # left by killed saves of hf_prune <= 0.1


def new_version(directory: str | os.PathLike) -> str:
    """A fresh, empty version folder in ``directory``'s store (leftovers of killed saves are removed first)."""
    store = os.path.join(directory, STORE)
    os.makedirs(store, exist_ok=True)
    remove_leftovers(directory)
    return tempfile.mkdtemp(prefix=_VERSION_PREFIX, dir=store)


def publish(directory: str | os.PathLike, version: str) -> None:
    """Make the complete folder ``version`` the model of ``directory``: one rename commits it."""
    names = sorted(os.listdir(version))
    _make_readable(version)
    _fsync(version)
    for name in names:
        _adopt_plain_file(directory, name)
    for name in names:
        if not _is_published_link(directory, name):
            _replace_with_link(os.path.join(directory, name), os.path.join(STORE, CURRENT, name))
    store = os.path.join(directory, STORE)
    _replace_with_link(os.path.join(store, CURRENT), os.path.basename(version))
    _fsync(store)
    _fsync(directory)
    remove_leftovers(directory)


def discard(directory: str | os.PathLike, version: str) -> None:
    """Remove an unpublished ``version`` (a failed save); a published one stays."""
    if current_version(directory) != os.path.realpath(version):
        shutil.rmtree(version, ignore_errors=True)


def current_version(directory: str | os.PathLike) -> str | None:
    """The real path of the published version folder, or ``None`` before the first save."""
    link = os.path.join(directory, STORE, CURRENT)
    return os.path.realpath(link) if os.path.islink(link) and os.path.isdir(link) else None


def remove_leftovers(directory: str | os.PathLike) -> None:
    """Remove old versions, temporary links and staging folders of killed saves, and dangling links."""
    store = os.path.join(directory, STORE)
    current = current_version(directory)
    for name in os.listdir(store) if os.path.isdir(store) else ():
        path = os.path.join(store, name)
        if name != CURRENT and os.path.realpath(path) != current:
            _remove(path)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        dangling = _is_published_link(directory, name) and not os.path.exists(path)
        if dangling or name.startswith((_TEMP_PREFIX, _LEGACY_STAGING_PREFIX)):
            _remove(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` all or nothing: into a synced file beside it, then renamed over it.

    A killed write leaves a ``.hf_prune-tmp-*`` file that the next save into the directory removes.
    """
    temporary = os.path.join(os.path.dirname(path), _TEMP_PREFIX + uuid.uuid4().hex)
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _adopt_plain_file(directory: str | os.PathLike, name: str) -> None:
    """Move a top-level ``name`` that is not our link into the current version, keeping its content readable."""
    path = os.path.join(directory, name)
    if not os.path.lexists(path) or _is_published_link(directory, name):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        raise ValueError(f"{path} is a directory: move it away, a model file is saved under that name")
    store = os.path.join(directory, STORE)
    current = current_version(directory)
    if current is None:
        current = tempfile.mkdtemp(prefix=_VERSION_PREFIX, dir=store)
        _make_readable(current)
        _replace_with_link(os.path.join(store, CURRENT), os.path.basename(current))
    staged = os.path.join(store, _TEMP_PREFIX + uuid.uuid4().hex)
    if os.path.exists(path):
        try:
            os.link(path, staged)
        except OSError:  # another file system, or links not supported
            shutil.copy2(path, staged)
        os.replace(staged, os.path.join(current, name))
    _replace_with_link(path, os.path.join(STORE, CURRENT, name))


def _is_published_link(directory: str | os.PathLike, name: str) -> bool:
    path = os.path.join(directory, name)
    return os.path.islink(path) and os.readlink(path) == os.path.join(STORE, CURRENT, name)


def _replace_with_link(path: str, target: str) -> None:
    temporary = os.path.join(os.path.dirname(path), _TEMP_PREFIX + uuid.uuid4().hex)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def _make_readable(folder: str) -> None:
    """Give a ``mkdtemp`` folder (private) the permissions of any new folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def _fsync(directory: str | os.PathLike) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
