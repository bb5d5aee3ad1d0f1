"""The compile cache: whole artifacts keyed by what they were compiled from.

A key covers the model (the bytes of an ONNX file or ModelProto, or a graph's text and constants), the
name, the options that change code, the target description, the training-state mapping, and the
compiler itself (path, size and mtime of every source file: an edited compiler never reuses old code).
A hit skips importing, passes, lowering and LLVM: the artifact is read (and verified) from one file.

An ONNX file's bytes are hashed once per (path, size, mtime, inode): a small index remembers the digest,
so compiling an unchanged file again does not read it at all. Models with external weight files record
those files' digests; a hit is only taken while they still match.

Entries live in ``$TENSORFORGE_CACHE_DIR`` (default ``~/.cache/tensorforge``) as ``<key>.tfa``;
``TENSORFORGE_CACHE=0`` turns the cache off. A damaged entry is removed and the model compiled again.
The cache keeps at most ``$TENSORFORGE_CACHE_SIZE`` bytes of artifacts (default 4 GiB; suffixes K, M,
G): after a store, the least recently used entries go first (a hit refreshes an entry's time).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import warnings

import llvmlite
import numpy as np
import onnx

from ..codegen.targets import Target
from ..ir.graph import Graph
from ..runtime.artifact import Artifact, ArtifactError
from ..runtime.cache import cache_dir
from ..util.files import atomic_write

SUFFIX = ".tfa"
DEFAULT_LIMIT = 4 << 30


@functools.cache
def compiler_fingerprint() -> str:
    """Every source file of tensorforge (relative path, size, mtime) and the versions of the libraries whose
    behaviour the code depends on."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256(f"llvmlite {llvmlite.__version__} onnx {onnx.__version__} numpy {np.__version__}".encode())
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                h.update(f"{os.path.relpath(os.path.join(d, f), root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def graph_digest(g: Graph) -> str:
    """A graph's text (structure, types, attributes) and the bytes of its constants."""
    h = hashlib.sha256(str(g).encode())
    h.update(repr(list(g.output_names)).encode())
    for v in g.constants():
        h.update(f"{v.name} {v.type}".encode())
        h.update(np.ascontiguousarray(v.const).tobytes())
    return h.hexdigest()


def model_digest(model) -> str | None:
    """A digest of what ``model`` is, or None when it cannot be had cheaply (then the cache is not used)."""
    if isinstance(model, Graph):
        return graph_digest(model)
    if isinstance(model, onnx.ModelProto):
        return "onnx:" + hashlib.sha256(model.SerializeToString()).hexdigest()
    if isinstance(model, bytes | bytearray):
        return "onnx:" + hashlib.sha256(model).hexdigest()
    if isinstance(model, str | os.PathLike):
        return _file_digest(os.fspath(model))
    return None


def _file_digest(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # the importer reports the missing file
    d = cache_dir()
    if d is None:
        return None
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    index = os.path.join(d, "sources", hashlib.sha256(os.path.abspath(path).encode()).hexdigest() + ".json")
    try:
        with open(index) as f:
            entry = json.load(f)
        if entry.get("stamp") == stamp:
            return entry["digest"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    content = _sha256_file(path)
    if not content:
        return None
    digest = "onnx:" + content
    try:
        atomic_write(index, json.dumps({"path": os.path.abspath(path), "stamp": stamp, "digest": digest}))
    except OSError:
        pass
    return digest


def artifact_key(digest: str, name: str | None, target: Target, options, state: dict[int, int] | None = None,
                 until: str = "object") -> str:  # fmt: skip
    parts = [digest, repr(name), repr(target), repr(options.cache_fields()), repr(sorted((state or {}).items())),
             until, compiler_fingerprint()]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:48]


def _path(key: str) -> str | None:
    d = cache_dir()
    return None if d is None else os.path.join(d, key + SUFFIX)


def load(key: str) -> Artifact | None:
    """The cached artifact for ``key``, or None. A damaged or foreign entry is deleted (with a warning) and
    reported as a miss, so the next compile replaces it."""
    wait(key)
    path = _path(key)
    if path is None or not os.path.exists(path):
        return None
    try:
        art = Artifact.load(path, key=key)
    except ArtifactError as e:
        warnings.warn(f"tensorforge: removing a damaged compile-cache entry: {e}", RuntimeWarning, stacklevel=3)
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    if not _external_files_unchanged(art.metadata.get("external_data", {})):
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:
        pass
    return art


_PENDING: dict[str, threading.Thread] = {}  # keys being written in the background


def store(key: str, artifact: Artifact, background: bool = False) -> None:
    """Save ``artifact`` under ``key`` (atomically; a full or read-only disk only costs the cache). In the
    ``background`` the caller goes on at once (writing a large model's weights and texts takes a while): a
    ``load`` of the key waits for the write, and the interpreter waits for it at exit (not a daemon)."""
    if not background:
        _store(key, artifact)
        return

    def run() -> None:
        try:
            _store(key, artifact)
        finally:
            _PENDING.pop(key, None)

    t = threading.Thread(target=run, name=f"tensorforge-cache-{key[:8]}")
    _PENDING[key] = t
    t.start()


def wait(key: str | None = None) -> None:
    """Wait for the background write of ``key`` (of every key when None) to finish."""
    for k, t in list(_PENDING.items()):
        if (key is None or k == key) and t is not threading.current_thread():
            t.join()


def _store(key: str, artifact: Artifact) -> None:
    path = _path(key)
    if path is None:
        return
    try:
        artifact.save(path, key=key)
    except OSError as e:
        warnings.warn(f"tensorforge: could not write the compile cache ({e})", RuntimeWarning, stacklevel=3)
        return
    evict(os.path.dirname(path), size_limit())


def size_limit() -> int:
    """``$TENSORFORGE_CACHE_SIZE`` in bytes (e.g. ``500M``, ``8G``), default 4 GiB."""
    text = os.environ.get("TENSORFORGE_CACHE_SIZE", "").strip().upper()
    if not text:
        return DEFAULT_LIMIT
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        return int(float(text.rstrip("KMGB") or "0") * scale)
    except ValueError:
        warnings.warn(f"tensorforge: TENSORFORGE_CACHE_SIZE={text!r} is not a size; using 4G", RuntimeWarning,
                      stacklevel=3)  # fmt: skip
        return DEFAULT_LIMIT


def evict(d: str, limit: int) -> list[str]:
    """Remove the least recently used artifacts of cache directory ``d`` until they fit ``limit`` bytes;
    returns the removed paths. (An entry another process still reads stays readable: it is unlinked,
    and the reader holds the file open.)"""
    entries = []
    for name in os.listdir(d):
        if name.endswith(SUFFIX):
            try:
                st = os.stat(os.path.join(d, name))
            except OSError:
                continue
            entries.append((st.st_mtime, st.st_size, os.path.join(d, name)))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, path in sorted(entries):
        if total <= limit:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def external_data_digests(model) -> dict[str, str]:
    """For an ONNX file whose initializers live in other files: {path: sha256} of those files."""
    if not isinstance(model, str | os.PathLike):
        return {}
    base = os.path.dirname(os.path.abspath(os.fspath(model)))
    try:
        proto = onnx.load(os.fspath(model), load_external_data=False)
    except Exception:
        return {}
    out = {}
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            if loc is not None:
                path = os.path.join(base, loc)
                out[path] = out.get(path) or _sha256_file(path)
    return out


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def _external_files_unchanged(files: dict[str, str]) -> bool:
    return all(_sha256_file(p) == d for p, d in files.items())


__all__ = ["artifact_key", "compiler_fingerprint", "evict", "graph_digest", "load", "model_digest", "size_limit",
           "store"]  # fmt: skip
