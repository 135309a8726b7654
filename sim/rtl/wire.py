"""What crosses between the host process and the rtl server: socket messages and the design's name.

Cocotb- and Amaranth-free, so both sides import it.

**Socket messages.** Each message is ``kind u8 · length u32 LE · payload``:

====  =========  ====================================================================
kind  direction  meaning
====  =========  ====================================================================
1     both       DATA: bytes for the design's ``rx`` pin / bytes from its ``tx`` pin
2     host→sim   RUN: the host is waiting for bytes; keep simulating even if idle
3     host→sim   HOLD: the host stopped waiting; the sim may pause when the link idles
4     both       STATS: request (empty) / reply (JSON counters)
5     host→sim   BYE: finish (the sim answers with a last STATS and exits)
6     sim→host   HELLO: JSON (free-running cycles/s, divisor, width, ...) once calibrated
====  =========  ====================================================================

**The design on the command line.** The host names the design factory by a reference derived
from the object itself (:func:`ref_of`: ``"module:qualname"``, or ``"/path/file.py:qualname"``
for a module the server cannot import by name, such as a script or a test file) and passes its
arguments as JSON (:func:`encode_args`). An argument with ``to_dict()`` and a classmethod
``from_dict()`` (``SoCConfig``, ``Params``) travels as ``{"__object__": ref, "state": to_dict()}``
and is rebuilt (and so validated again) by :func:`decode_args` in the server.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import json
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Msg", "MSG_HEADER", "MAX_MSG", "pack_msg", "MsgReader", "ref_of", "resolve", "encode_args",
           "decode_args", "source_file", "OBJECT_KEY"]

#: ``kind u8 · length u32``.
MSG_HEADER = struct.Struct("<BI")
#: Largest payload accepted (a corrupt stream fails loudly instead of allocating gigabytes).
MAX_MSG = 1 << 24


class Msg(enum.IntEnum):
    DATA = 1
    RUN = 2
    HOLD = 3
    STATS = 4
    BYE = 5
    HELLO = 6


def pack_msg(kind: Msg, payload: bytes = b"") -> bytes:
    return MSG_HEADER.pack(int(kind), len(payload)) + bytes(payload)


class MsgReader:
    """Incremental parser: ``feed(bytes) -> [(Msg, payload), ...]``."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Msg, bytes]]:
        buf = self._buf
        buf += data
        out, pos = [], 0
        while len(buf) - pos >= MSG_HEADER.size:
            kind, n = MSG_HEADER.unpack_from(buf, pos)
            if n > MAX_MSG:
                raise ValueError(f"link message length must be at most {MAX_MSG}, not {n}")
            end = pos + MSG_HEADER.size + n
            if end > len(buf):
                break
            try:
                k = Msg(kind)
            except ValueError:
                raise ValueError(f"unknown link message kind {kind}") from None
            out.append((k, bytes(buf[pos + MSG_HEADER.size:end])))
            pos = end
        del buf[:pos]
        return out


# ---------------------------------------------------------------------------------------- references
def _lookup(obj, qualname: str):
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def ref_of(obj) -> str:
    """The reference the server resolves back to ``obj``: ``"module:qualname"``, or
    ``"/abs/path/file.py:qualname"`` when ``obj`` comes from ``__main__``.

    Raises
    ------
    ValueError
        If ``obj`` is not a module-level class or function (a lambda, a local function, a
        bound method, an instance): the server could not import it.
    """
    mod_name, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    module = sys.modules.get(mod_name) if isinstance(mod_name, str) else None
    why = "must be a module-level class or function (the server imports it by name)"
    if not callable(obj) or not isinstance(qual, str) or module is None or "<" in qual:
        raise ValueError(f"the design factory {why}, not {obj!r}")
    try:
        found = _lookup(module, qual)
    except AttributeError:
        found = None
    if found is not obj:
        raise ValueError(f"the design factory {why}, not {obj!r} ({mod_name}.{qual} is not it)")
    if mod_name == "__main__":
        path = getattr(module, "__file__", None)
        if not path:
            raise ValueError(f"the design factory {why}, not {obj!r} (defined interactively)")
        return f"{Path(path).resolve()}:{qual}"
    return f"{mod_name}:{qual}"


def _load_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"_spikeloop_dut_{path.stem}", path)
    if spec is None or not path.is_file():
        raise ValueError(f"dut file {path} does not exist")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def resolve(ref: str, fallback_file: str | None = None):
    """``"package.module:name"`` or ``"path/to/file.py:name"`` (``name`` may be dotted) -> the
    object it names. ``fallback_file`` is loaded instead when the module cannot be imported by
    name here (a test module the host imported from its own ``sys.path``)."""
    mod_name, sep, attr = ref.rpartition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"dut must be 'module:callable' or 'file.py:callable', not {ref!r}")
    if mod_name.endswith(".py"):
        module = _load_file(Path(mod_name).resolve())
    else:
        try:
            module = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            parts = mod_name.split(".")
            ours = e.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            if not (ours and fallback_file):
                raise
            module = _load_file(Path(fallback_file).resolve())
    try:
        return _lookup(module, attr)
    except AttributeError:
        raise ValueError(f"{mod_name} has no {attr!r}") from None


def source_file(obj) -> str | None:
    """The file of ``obj``'s module (what :func:`resolve` falls back to), if it has one."""
    path = getattr(sys.modules.get(getattr(obj, "__module__", None) or ""), "__file__", None)
    return str(Path(path).resolve()) if path else None


# ---------------------------------------------------------------------------------------- arguments
#: Marks an encoded object in :func:`encode_args`' JSON.
OBJECT_KEY = "__object__"


def _encode(v, where: str):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_encode(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, Mapping):
        if not all(isinstance(k, str) for k in v) or OBJECT_KEY in v:
            raise TypeError(f"design argument {where} must have string keys other than {OBJECT_KEY!r}")
        return {k: _encode(x, f"{where}[{k!r}]") for k, x in v.items()}
    to_dict, from_dict = getattr(v, "to_dict", None), getattr(type(v), "from_dict", None)
    if callable(to_dict) and callable(from_dict):
        return {OBJECT_KEY: ref_of(type(v)), "state": _encode(to_dict(), f"{where}.to_dict()")}
    raise TypeError(f"design argument {where} must be JSON data or have to_dict()/from_dict(), "
                    f"not {type(v).__name__}")


def _decode(v):
    if isinstance(v, list):
        return [_decode(x) for x in v]
    if isinstance(v, dict):
        if OBJECT_KEY in v:
            return resolve(v[OBJECT_KEY]).from_dict(v["state"])
        return {k: _decode(x) for k, x in v.items()}
    return v


def encode_args(args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> str:
    """``args`` and ``kwargs`` of the design factory as one JSON text (tuples become lists).

    Raises
    ------
    TypeError
        If a value is neither JSON data nor an object with ``to_dict()``/``from_dict()``.
    """
    return json.dumps({"args": _encode(list(args), "args"), "kwargs": _encode(dict(kwargs or {}), "kwargs")})


def decode_args(text: str) -> tuple[list, dict]:
    """The inverse of :func:`encode_args`: ``(args, kwargs)``, objects rebuilt with ``from_dict``."""
    d = json.loads(text)
    return _decode(d.get("args", [])), _decode(d.get("kwargs", {}))
