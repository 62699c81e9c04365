"""Sealed evaluation: every defense instance and every attack runs in a process of its own.

A plugin is an adversary (docs/design.md, "Threat model of the harness"). The harness, not the
plugin, decides what the cloud sees and what an attack can touch:

- **Defense hosts.** Each defense instance, the owner's and every clone an attack fits, lives
  alone in a fresh process started the same way, driven by the same request loop. Every fit is
  ``fit(public images, seed=..., public=public images)``: the key depends only on the seed, and the
  owner's private images reach the defense only through ``transform``. Every ``transform`` request
  is cut into requests of harness-drawn sizes, each holding a drawn share of the caller's images
  and public images for the rest, in shuffled order (except for defenses that mix the images of a
  batch, ``Defense.mixes_images``): the size of the caller's batch is not visible either.
  Every answer is checked here, outside the defense's process: finite float32 values, the declared
  output shape, one row per input (or valid ``source`` rows); a defense that raises or answers
  badly raises :class:`DefenseFault`.
- **Attack sandboxes.** An attack runs in a fresh process holding copies of what its threat view
  grants and nothing else: no truth, no splits, no store, no salt, no fitted owner defense. Its
  ``view.defense`` is a stand-in whose ``fit``/``transform`` go to a defense host through the
  driver; its oracle is a request the driver answers with the owner's host.
- **Untrusted bytes.** What comes back from a plugin process is decoded with an unpickler that
  builds only plain containers and numbers; tensors travel as raw bytes.
- **Audit hook.** Plugin processes may not open the results database, its salt, the model cache
  or the artifacts, or another process's files under ``/proc``; nor connect to SQLite or to a
  local socket, start programs or signal another process.

Processes come from a fork server that has imported torch and the registered plugins once, so a
sandbox starts in milliseconds; the harness's own trainings (a model an attack asks for, the
label baseline) and its worker processes come from it too.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import multiprocessing
import os
import pickle
import random
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy
import torch

from disguisebench.api import (
    Data, Defense, NotApplicable, Outcome, PluginError, ThreatView, check_images, device,
)
from disguisebench.cache import data_digest

log = logging.getLogger("disguisebench")

# Largest request a defense host gets; sizes are drawn uniformly from [1, MAX_CHUNK], whoever asks
# and however much they ask for; each request holds between half and all of its rows from the
# caller (fewer when the caller has fewer left) and public images for the rest.
MAX_CHUNK = 512
# Clone hosts one attack may hold at once (each is a process).
MAX_HOSTS = 64


class DefenseFault(PluginError):
    """The defense raised, or answered with invalid output, while the harness or an attack used it."""


class QueryBudgetExceeded(PluginError):
    """An oracle request beyond the plan's query budget, refused to the attack."""


class PluginUnavailable(PluginError):
    """A plugin could not be rebuilt in its own process (not importable, or its __init__ raised)."""


class SandboxError(RuntimeError):
    """A plugin process died or broke the protocol."""


# --- plain encoding of untrusted answers -------------------------------------------------------

_TENSOR = "__tensor__"
_DATA = "__data__"


def encode(obj: Any) -> Any:
    """``obj`` with tensors as raw bytes and Data as tuples: plain values an unpickler can trust."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return (_TENSOR, dtype, tuple(t.shape), raw)
    if isinstance(obj, Data):
        return (_DATA, encode(obj.x), encode(obj.y), encode(obj.source))
    return _each(obj, encode)


def _each(obj: Any, f: Callable[[Any], Any]) -> Any:
    """``f`` applied inside tuples, lists and dicts; anything else as it is."""
    if isinstance(obj, tuple):
        return tuple(f(v) for v in obj)
    if isinstance(obj, list):
        return [f(v) for v in obj]
    if isinstance(obj, dict):
        return {k: f(v) for k, v in obj.items()}
    return obj


_DTYPES = {"float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
           "uint8", "bool"}


def decode(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == _TENSOR:
        _, dtype, shape, raw = obj
        if dtype not in _DTYPES or not isinstance(raw, bytes):
            raise SandboxError(f"a plugin process sent a tensor of dtype {dtype!r}")
        kind = getattr(torch, dtype)
        if not (isinstance(shape, tuple) and all(type(v) is int and v >= 0 for v in shape)):
            raise SandboxError(f"a plugin process sent a tensor of shape {shape!r}")
        if len(raw) != math.prod(shape) * kind.itemsize:
            raise SandboxError(f"a plugin process sent {len(raw)} bytes for a tensor of shape "
                               f"{shape} and dtype {dtype}")
        t = torch.empty(shape, dtype=kind)
        flat = t.reshape(-1).view(torch.uint8)
        if raw:
            flat.numpy()[:] = numpy.frombuffer(raw, dtype=numpy.uint8)  # one copy, aligned
        return t
    if isinstance(obj, tuple) and len(obj) == 4 and obj[0] == _DATA:
        x, y, source = (decode(v) for v in obj[1:])
        if not isinstance(x, torch.Tensor):
            raise SandboxError("a plugin process sent Data without an image tensor")
        return Data(x, y, source)
    return _each(obj, decode)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise SandboxError(f"a plugin process sent an object of class {module}.{name}")


def receive(conn: Any) -> Any:
    """One message from a plugin process, built from plain values only."""
    raw = conn.recv_bytes()
    try:
        return decode(_PlainUnpickler(io.BytesIO(raw)).load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as err:
        raise SandboxError(f"a plugin process sent an unreadable message ({err})") from None


def send_plain(conn: Any, obj: Any) -> None:
    conn.send_bytes(pickle.dumps(encode(obj), protocol=pickle.HIGHEST_PROTOCOL))


def send_copy(conn: Any, obj: Any) -> None:
    """Send ``obj`` to a plugin process by value, tensors as raw bytes. ``Connection.send`` would
    move a tensor's memory into shared memory and map it there, so a plugin could write into the
    driver's tensors (the public pool, the training set); plain pickling would pass each tensor
    through ``torch.save``, milliseconds a tensor."""
    conn.send_bytes(pickle.dumps(encode(obj), protocol=pickle.HIGHEST_PROTOCOL))


def receive_copy(conn: Any) -> Any:
    """In a plugin process: what the driver sent with ``send_copy``."""
    return decode(conn.recv())


# --- processes ---------------------------------------------------------------------------------

_context: Any = None
# A cell may run several attacks at once, each served by a driver thread: starting a process
# (which briefly edits ``__main__``) happens one at a time.
_starting = threading.RLock()
# Attack and training processes now running, so that an interrupted cell can end them all;
# once it has, no new one starts until the next cell.
_live: set[Any] = set()
_stopping = threading.Event()


class Interrupted(RuntimeError):
    """An interrupted cell asked for no more plugin or training processes."""


def context() -> Any:
    """The multiprocessing context of plugin processes: a fork server that preloaded the plugins."""
    global _context
    with _starting:
        if _context is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                _context = multiprocessing.get_context("forkserver")
                multiprocessing.set_forkserver_preload(["disguisebench._preload"])
                from multiprocessing import forkserver

                with _without_main():
                    forkserver.ensure_running()
            else:  # pragma: no cover - platforms without fork
                _context = multiprocessing.get_context("spawn")
        return _context


@contextlib.contextmanager
def _without_main() -> Iterator[None]:
    """Start processes that do not import ``__main__``: multiprocessing would run a script again
    in every plugin process (plugins must live in importable modules)."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            main.__dict__.pop("__spec__", None)


def shared_server() -> dict[str, Any]:
    """What a worker forked from this process's fork server needs to start its plugin processes
    from that same server (``join_server``)."""
    from multiprocessing import forkserver

    context()
    server = forkserver._forkserver
    return {"address": getattr(server, "_forkserver_address", None),
            "authkey": getattr(server, "_forkserver_authkey", None)}


def join_server(shared: dict[str, Any]) -> None:
    """In a worker forked from the fork server: start plugin processes from that same server
    rather than from one of its own (a new interpreter importing torch and the plugins, seconds).

    multiprocessing has no public way to share a fork server with a child, so this sets its
    private state, then starts one process to check; where anything differs from what it
    expects, the worker is left to start a server of its own, as it would anyway."""
    global _context
    from multiprocessing import forkserver, resource_tracker

    server = forkserver._forkserver
    if not shared.get("address") or getattr(server, "_forkserver_pid", 0) is not None \
            or getattr(server, "_forkserver_alive_fd", None) is None:
        return
    server._forkserver_address = shared["address"]
    if shared.get("authkey") is not None:
        server._forkserver_authkey = shared["authkey"]
    server.ensure_running = resource_tracker.ensure_running  # the driver keeps it running
    ctx = multiprocessing.get_context("forkserver")
    try:
        with _without_main():
            probe = ctx.Process(target=int, daemon=True)
            probe.start()
        probe.join(timeout=30)
        if probe.is_alive():
            probe.kill()
        if probe.exitcode != 0:
            raise OSError(f"a process from the shared fork server ended with {probe.exitcode}")
    except Exception as err:  # noqa: BLE001 - fall back to a server of the worker's own
        log.debug("worker starts its own fork server: %s", err)
        del server.ensure_running
        server._forkserver_address = None
        return
    with _starting:
        _context = ctx


@contextlib.contextmanager
def starting() -> Iterator[Any]:
    """Start processes of the fork server's context (yielded) inside: one thread at a time, and
    without ``__main__`` (the harness's worker processes start this way too)."""
    ctx = context()
    with _starting, _without_main():
        yield ctx


def _start(target: Callable[..., None], args: tuple, *,
           track: bool = False) -> tuple[Any, Any]:
    """A plugin process running ``target(conn, *args)``, and the driver's end of its pipe. The
    arguments travel by value (see ``send_copy``), as the process's first message. With
    ``track``, the process is known to ``kill_attacks`` from its start, and none starts once an
    interrupted cell has called it."""
    message = pickle.dumps(encode((target, args)), protocol=pickle.HIGHEST_PROTOCOL)
    ctx = context()
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_unpack, args=(child,), daemon=True)
    with starting():
        if track and _stopping.is_set():
            child.close()
            conn.close()
            raise Interrupted("the cell was interrupted")
        proc.start()
        if track:
            _live.add(proc)
    child.close()
    try:
        conn.send_bytes(message)
    except (BrokenPipeError, OSError):
        pass  # the process is gone; the caller's first read says so
    return proc, conn


def _unpack(conn: Any) -> None:
    target, args = receive_copy(conn)
    target(conn, *args)


def _seal(protected: Iterable[str], threads: int) -> None:
    """In a plugin process: forbid touching the harness's files and starting programs."""
    roots = tuple(os.path.realpath(p) for p in protected)
    own = str(os.getpid())

    def inside(path: Any) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        parts = real.split(os.sep)
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != own:
            return True  # another process's memory, environment or open files
        return any(real == r or real.startswith(r + os.sep) for r in roots)

    def hook(event: str, args: tuple) -> None:
        if event in ("open", "os.remove", "os.rename", "os.truncate", "os.chmod", "os.listdir",
                     "os.scandir", "shutil.rmtree", "os.symlink", "os.link"):
            if args and (inside(args[0]) or (event in ("os.rename", "os.symlink", "os.link")
                                             and len(args) > 1 and inside(args[1]))):
                raise PermissionError(f"a sandboxed plugin may not touch {args[0]!r}")
        elif event in ("sqlite3.connect", "subprocess.Popen", "os.system", "os.exec",
                       "os.posix_spawn", "os.spawn", "pty.spawn", "os.killpg"):
            raise PermissionError(f"a sandboxed plugin may not use {event}")
        elif event == "socket.connect" and args and \
                getattr(args[0], "family", None) == getattr(socket, "AF_UNIX", None):
            # Local sockets: the fork server's among them, which would start a process this
            # hook is not in.
            raise PermissionError(f"a sandboxed plugin may not connect to {args[1]!r}")
        elif event == "os.kill" and args and args[0] != os.getpid():
            # The owner's defense host, another attack, the driver: a plugin that stopped them
            # could make a defense look as if it had refused.
            raise PermissionError(f"a sandboxed plugin may not signal process {args[0]}")

    sys.addaudithook(hook)
    torch.set_num_threads(max(1, threads))


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _build(cls: type, params: dict[str, Any]) -> Any:
    plugin = cls(**params)
    plugin.validate()
    return plugin


def _defense_main(conn: Any, cls: type, params: dict[str, Any], pool: Data,
                  protected: list[str], threads: int) -> None:
    """A defense host: one defense instance, driven by requests until the driver closes it."""
    _seal(protected, threads)
    try:
        defense = _build(cls, params)
    except BaseException as err:  # noqa: BLE001 - reported to the driver
        send_plain(conn, ("error", _error_text(err)))
        return
    send_plain(conn, ("ok", None))
    while True:
        try:
            request = receive_copy(conn)
        except EOFError:
            return
        method, kwargs = request
        # One thread for the harness's chunks (at most MAX_CHUNK rows): a defense's work on one is
        # short, and waking a second thread for each op costs more than it saves; whole batches
        # (defenses that mix images, the oracle's large requests) get every thread.
        data = kwargs.get("data")
        torch.set_num_threads(threads if isinstance(data, Data) and len(data) > MAX_CHUNK else 1)
        try:
            if method == "fit":
                data = kwargs["data"] if kwargs["data"] is not None else pool
                defense.fit(data, seed=kwargs["seed"], public=pool)
                result: Any = None
            elif method == "transform":
                result = defense.transform(kwargs["data"], epoch=kwargs["epoch"])
            elif method in ("test_inputs", "inverse"):
                result = getattr(defense, method)(kwargs["data"])
            elif method == "output_shape":
                result = tuple(int(v) for v in defense.output_shape(tuple(kwargs["shape"])))
            else:
                raise SandboxError(f"unknown request {method!r}")
            if isinstance(result, Data):
                result = Data(result.x, result.y, result.source)  # plain fields only
            send_plain(conn, ("ok", result))
        except BaseException as err:  # noqa: BLE001 - every failure goes back to the driver
            send_plain(conn, ("error", _error_text(err)))


def _check_output(out: Any, n_in: int, shape: tuple[int, ...], what: str,
                  allow_source: bool) -> Data:
    if not isinstance(out, Data):
        raise DefenseFault(f"{what} returned {type(out).__name__}, not Data")
    x = out.x
    if x.dtype != torch.float32:
        raise DefenseFault(f"{what} returned dtype {x.dtype}; expected float32")
    if tuple(x.shape[1:]) != tuple(shape):
        raise DefenseFault(f"{what} returned images of shape {tuple(x.shape[1:])} for a batch of "
                           f"{n_in}; the defense declares {tuple(shape)}")
    if not numpy.isfinite(x.numpy()).all():  # numpy: no thread pool to wake for one check
        bad = int((~torch.isfinite(x)).sum())
        raise DefenseFault(f"{what} returned {bad} NaN or infinite values in a batch of {n_in}")
    if out.source is None:
        if len(out) != n_in:
            raise DefenseFault(f"{what} returned {len(out)} images for {n_in} without a source map")
    else:
        src = out.source
        if not allow_source:
            raise DefenseFault(f"{what} returned a source map")
        if src.dim() != 2 or src.dtype not in (torch.int64, torch.int32) or len(src) != len(out):
            raise DefenseFault(f"{what} returned a source map of shape {tuple(src.shape)}")
        if len(src) and (int(src.min()) < -1 or int(src.max()) >= n_in or
                         not bool((src >= 0).any(1).all())):
            raise DefenseFault(f"{what} returned source indices outside [0, {n_in})")
    if out.y is not None and (out.y.shape[0] != len(out) or
                              (out.y.is_floating_point() and not torch.isfinite(out.y).all())):
        raise DefenseFault(f"{what} returned invalid labels")
    return out


def distinct_encodings(encodings: dict[int, Data]) -> Data:
    """Per-epoch encodings as one upload: each distinct encoding once, in epoch order, with the
    plaintext rows each came from (``source``) kept."""
    seen, parts = set(), []
    for epoch in sorted(encodings):
        enc = encodings[epoch]
        digest = data_digest(enc.x, enc.y, enc.sources())
        if digest not in seen:
            seen.add(digest)
            parts.append(enc)
    if len(parts) == 1:
        return Data(parts[0].x, parts[0].y, parts[0].sources())
    width = max(p.sources().shape[1] for p in parts)
    sources = [torch.cat([p.sources(), p.sources().new_full((len(p), width - p.sources().shape[1]),
                                                            -1)], 1) for p in parts]
    has_y = all(p.y is not None for p in parts)
    return Data(torch.cat([p.x for p in parts]),
                torch.cat([p.y for p in parts]) if has_y else None, torch.cat(sources))


class DefenseHost:
    """The driver's handle on one defense instance living in its own process.

    Every defense instance of an evaluation, the owner's and each clone an attack fits, is one of
    these, created and driven identically; only the seed of ``fit`` differs.
    """

    def __init__(self, cls: type[Defense], params: dict[str, Any], pool: Data, *,
                 chunk_seed: int, protected: list[str], threads: int, epochs: int = 1) -> None:
        self.cls, self.name = cls, getattr(cls, "name", cls.__name__)
        self.epochs = max(1, int(epochs))
        self._chunks = random.Random(chunk_seed)
        self._rows = torch.Generator().manual_seed(chunk_seed)
        self._pool = pool
        self._mixes = bool(getattr(cls, "mixes_images", False))
        self._shapes: dict[tuple, tuple] = {}
        self._proc, self._conn = _start(_defense_main, (cls, params, pool, protected, threads))
        try:
            self._answer("start")
        except DefenseFault as err:
            self.close()
            raise PluginUnavailable(
                f"{err}; a defense is rebuilt in its own process from its module and class name "
                f"({cls.__module__}.{cls.__qualname__}), so it must live in an importable module "
                "and build from its hyperparameters") from None

    def _answer(self, what: str) -> Any:
        try:
            reply = receive(self._conn)
        except (EOFError, OSError):
            self._proc.join(timeout=1)
            raise DefenseFault(f"{self.name}.{what}: the defense's process exited "
                               f"(code {self._proc.exitcode})") from None
        except SandboxError as err:
            raise DefenseFault(f"{self.name}.{what}: {err}") from None
        if not (isinstance(reply, tuple) and len(reply) == 2 and reply[0] in ("ok", "error")):
            raise DefenseFault(f"{self.name}.{what}: the defense's process broke the protocol")
        if reply[0] == "error":
            raise DefenseFault(f"{self.name}.{what}: {reply[1]}")
        return reply[1]

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            send_copy(self._conn, (method, kwargs))
        except (BrokenPipeError, OSError):
            raise DefenseFault(f"{self.name}.{method}: the defense's process exited") from None
        return self._answer(method)

    def fit(self, *, seed: int, data: Data | None = None) -> None:
        """Draw a key: ``fit(public images, seed=seed, public=public images)`` in the host."""
        self._call("fit", seed=seed, data=data)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if shape not in self._shapes:
            out = self._call("output_shape", shape=shape)
            if not (isinstance(out, tuple) and len(out) == 3 and all(v > 0 for v in out)):
                raise DefenseFault(f"{self.name}.output_shape({shape}) returned {out!r}")
            self._shapes[shape] = out
        return self._shapes[shape]

    def _fillers(self, data: Data, count: int) -> Data | None:
        """``count`` public images shaped like ``data`` (labels too when it has them), or None."""
        pool = self._pool
        if pool.image_shape != data.image_shape or len(pool) == 0:
            return None
        rows = torch.randint(len(pool), (count,), generator=self._rows)
        if data.y is None:
            return Data(pool.x[rows])
        if pool.y is None:
            return None
        y = pool.y[rows]
        if data.y.dim() == 2 and y.dim() == 1:
            if int(y.max(initial=0)) >= data.y.shape[1]:
                return None
            y = torch.nn.functional.one_hot(y, data.y.shape[1]).to(data.y.dtype)
        elif data.y.dim() != y.dim():
            return None
        return Data(pool.x[rows], y.to(data.y.dtype))

    def _chunked(self, method: str, data: Data, shape: tuple[int, ...], **kwargs: Any) -> Data:
        """``method`` over ``data`` in requests of drawn sizes, padded with public images."""
        if self._mixes or len(data) == 0:
            out = self._call(method, data=data, **kwargs)
            return _check_output(out, len(data), shape, f"{self.name}.{method}",
                                 allow_source=method == "transform")
        parts, start = [], 0
        while start < len(data):
            size = self._chunks.randint(1, MAX_CHUNK)
            real = min(len(data) - start, self._chunks.randint((size + 1) // 2, size))
            chunk = data[start:start + real]
            fill = self._fillers(chunk, size - real) if size > real else None
            if fill is not None:
                order = torch.randperm(size, generator=self._rows)
                x = torch.cat([chunk.x, fill.x])[order]
                y = None if chunk.y is None else torch.cat([chunk.y, fill.y])[order]
                request = Data(x, y)
                keep = torch.argsort(order)[:real]  # where each of the caller's rows went
            else:
                request, keep = Data(chunk.x, chunk.y), None
            out = _check_output(self._call(method, data=request, **kwargs), len(request), shape,
                                f"{self.name}.{method}", allow_source=False)
            parts.append(out if keep is None else out[keep])
            start += real
        if len(parts) == 1:
            return parts[0]
        has_y = all(p.y is not None for p in parts)
        return Data(torch.cat([p.x for p in parts]),
                    torch.cat([p.y for p in parts]) if has_y else None)

    def transform(self, data: Data, *, epoch: int | None = None) -> Data:
        """Disguise ``data``. For a defense that re-encodes per epoch, ``epoch=None`` means what the
        owner uploads: the encodings of epochs 0 .. epochs-1, each distinct one once, asked for
        one epoch at a time exactly as the owner's upload is (no call tells them apart)."""
        shape = self.output_shape(data.image_shape)
        if epoch is None and self.cls.reencodes_per_epoch:
            return distinct_encodings({e: self._chunked("transform", data, shape, epoch=e)
                                       for e in range(self.epochs)})
        return self._chunked("transform", data, shape, epoch=epoch)

    def test_inputs(self, data: Data) -> Data:
        shape = self.output_shape(data.image_shape) if self.cls.encodes_test else data.image_shape
        return self._chunked("test_inputs", data, shape)

    def inverse(self, data: Data, plain_shape: tuple[int, ...]) -> Data:
        out = self._call("inverse", data=Data(data.x, data.y))
        return _check_output(out, len(data), plain_shape, f"{self.name}.inverse",
                             allow_source=False)

    def close(self) -> None:
        """End the host. Nothing a closed defense still does is used, so its process is killed
        rather than waited for (an interpreter's teardown costs tens of milliseconds a host)."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join()
        self._conn.close()

    def __enter__(self) -> DefenseHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- attack sandboxes ---------------------------------------------------------------------------

class _Channel:
    """The attack process's line to the driver: defense hosts and the oracle, by request."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        # Hosts of clones collected by the garbage collector, closed before the next request (a
        # collection can run in the middle of a request, so it must not send one itself).
        self.released: list[int] = []

    def request(self, op: str, **kwargs: Any) -> Any:
        while self.released:
            host = self.released.pop()
            send_plain(self.conn, ("request", "close", {"host": host}))
            receive_copy(self.conn)
        send_plain(self.conn, ("request", op, kwargs))
        status, value = receive_copy(self.conn)
        if status == "fault":
            raise DefenseFault(value)
        if status == "refused":
            raise PluginError(value)
        return value


def _remote_defense(cls: type[Defense], channel: _Channel) -> type[Defense]:
    """A subclass of the defense whose keyed operations run in defense hosts of the driver's.

    Hyperparameters, class attributes and public helpers behave as the real class's do; ``fit``,
    ``transform``, ``test_inputs`` and ``inverse`` are requests.
    """

    class Remote(cls):  # type: ignore[misc, valid-type]
        def fit(self, data: Data, *, seed: int, public: Data | None = None) -> Remote:
            old = self.__dict__.pop("_host", None)
            if old is not None:
                channel.request("close", host=old)
            self.__dict__["_host"] = channel.request("new", data=data, seed=int(seed))
            self.fitted_ = True
            return self

        def _remote(self, method: str, **kwargs: Any) -> Data:
            if "_host" not in self.__dict__:
                raise PluginError(f"{self.name}: call fit() before {method}()")
            return channel.request("call", host=self.__dict__["_host"], method=method, **kwargs)

        def transform(self, data: Data, *, epoch: int | None = None) -> Data:
            return self._remote("transform", data=data, epoch=epoch)

        def test_inputs(self, data: Data) -> Data:
            return self._remote("test_inputs", data=data)

        def inverse(self, data: Data) -> Data:
            return self._remote("inverse", data=data)

        def secret_state(self) -> dict[str, Any]:
            raise PluginError(f"{self.name}: an attacker's clone holds its key in a defense host")

        def __del__(self) -> None:
            host = self.__dict__.get("_host")
            if host is not None:
                channel.released.append(host)

    Remote.__name__, Remote.__qualname__ = cls.__name__, cls.__qualname__
    Remote.__module__ = cls.__module__
    return Remote


class SealedTask:
    """The task as public knowledge: architecture, training recipe, prediction; no data.

    ``train`` is a request: the driver trains the model in a process of its own
    (``train_apart``; task code is trusted) and shares it with every attack of the run that asks
    for the same recipe, data and seed, like the plaintext model of ``visual-reid``.
    """

    def __init__(self, task: Any, channel: _Channel) -> None:
        object.__setattr__(self, "_task", task)
        object.__setattr__(self, "_channel", channel)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._task, name, value)

    def clone(self) -> SealedTask:
        return SealedTask(self._task.clone(), self._channel)

    def load(self, *args: Any, **kwargs: Any) -> Any:
        raise PluginError("the task's data is not part of an attacker's view; use view.public")

    def train(self, data: Data, *, seed: int, num_classes: int,
              reencode: Callable[[int], Data] | None = None, progress: bool = False) -> Any:
        if reencode is not None:
            return self._task.train(data, seed=seed, num_classes=num_classes, reencode=reencode)
        model = self._channel.request("train", params=self._task.get_params(), data=data,
                                      seed=int(seed), num_classes=int(num_classes))
        return model.to(device())

    def __repr__(self) -> str:
        return repr(self._task)


def _trainer_main(conn: Any, task_cls: type, params: dict[str, Any], data: Data, seed: int,
                  num_classes: int, threads: int) -> None:
    """A training process: the task's own recipe, its weights sent back as plain tensors."""
    torch.set_num_threads(max(1, threads))
    try:
        model = _build(task_cls, params).train(data, seed=seed, num_classes=num_classes)
        send_plain(conn, ("ok", {k: v.cpu() for k, v in model.state_dict().items()}))
    except BaseException as err:  # noqa: BLE001 - raised again in the driver
        send_plain(conn, ("error", _error_text(err)))


def train_apart(task: Any, data: Data, *, seed: int, num_classes: int, threads: int) -> Any:
    """``task.train(data, ...)`` in a process of its own on ``threads`` threads: trainings in
    the driver would share torch's process-wide generator (and the interpreter) with each other
    and with the attacks a cell runs at once; apart, each is alone, and the same inputs give the
    same model whatever else runs."""
    args = (type(task), task.get_params(), data, int(seed), int(num_classes), int(threads))
    with _live_process(_trainer_main, args) as (proc, conn):
        try:
            status, state = receive(conn)
        except (EOFError, OSError):
            proc.join(timeout=5)
            raise RuntimeError(f"training {task.name} failed: its process exited "
                               f"(code {proc.exitcode})") from None
    if status != "ok":  # bad data in the request, or the recipe: the asker's to handle
        raise PluginError(f"training {task.name} failed: {state}")
    model = task.build_model(data.image_shape, num_classes)
    model.load_state_dict(state)
    return model.eval()


# Models the driver trained for attacks, by (recipe, data, seed): the same request gets the same
# model without training it again; concurrent requests for one model wait for the first.
_TRAINED: dict[str, Any] = {}
_TRAINED_MAX = 8
_trained_lock = threading.Lock()
_training: dict[str, threading.Lock] = {}


def _train_for_attack(task_cls: type, kwargs: dict[str, Any], threads: int) -> Any:
    data: Data = kwargs["data"]
    if not isinstance(data, Data):
        raise PluginError("train needs Data")
    recipe = json.dumps([task_cls.__module__, task_cls.__qualname__, kwargs["params"],
                         kwargs["seed"], kwargs["num_classes"]], sort_keys=True, default=str)
    key = recipe + "/" + data_digest(data.x, data.y)
    with _trained_lock:
        lock = _training.setdefault(key, threading.Lock())
    with lock:
        with _trained_lock:
            model = _TRAINED.get(key)
        if model is None:
            model = train_apart(_build(task_cls, kwargs["params"]), data, seed=kwargs["seed"],
                                num_classes=kwargs["num_classes"], threads=threads)
            with _trained_lock:
                while len(_TRAINED) >= _TRAINED_MAX:
                    oldest = next(iter(_TRAINED))
                    del _TRAINED[oldest]
                    _training.pop(oldest, None)
                _TRAINED[key] = model
    return copy.deepcopy(model)


def _attack_main(conn: Any, payload: dict[str, Any]) -> None:
    """An attack sandbox: build the view from copies, run the attack, send back its prediction."""
    _seal(payload["protected"], payload["threads"])
    channel = _Channel(conn)
    try:
        attack = _build(payload["attack_cls"], payload["attack_params"])
        fields = dict(payload["view"])
        fields["task"] = SealedTask(_build(payload["task_cls"], payload["task_params"]), channel)
        if fields.get("model") is not None and torch.cuda.is_available():
            fields["model"] = fields["model"].to(device())
        if payload["defense_cls"] is not None:
            remote = _remote_defense(payload["defense_cls"], channel)
            fields["defense"] = remote(**payload["defense_params"])
        if payload["oracle"]:
            fields["oracle"] = lambda data: channel.request("oracle", data=data)
        view = ThreatView(**fields)
        outcome = Outcome.of(attack, attack.run(view, seed=payload["seed"]))
        send_plain(conn, ("done", outcome.prediction, outcome.diagnostics))
    except NotApplicable as err:
        send_plain(conn, ("not-applicable", _error_text(err)))
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the driver
        log.debug("attack failed:\n%s", traceback.format_exc())
        send_plain(conn, ("error", _error_text(err)))


class AttackOutcome:
    """What came back from one attack sandbox."""

    def __init__(self, prediction: torch.Tensor | None, report: dict[str, float],
                 error: str | None, refusal: str | None, queries: int,
                 not_applicable: str | None = None) -> None:
        self.prediction, self.report = prediction, report
        self.error, self.refusal, self.queries = error, refusal, queries
        self.not_applicable = not_applicable


class _AttackServer:
    """The driver's side of one attack sandbox: its requests for clones (each a defense host),
    the oracle (the owner's host, counting queries) and training, answered one at a time. A
    defense fault is remembered as the defense's refusal, whatever the attack does with it."""

    def __init__(self, *, task: Any, defense: Defense | None, oracle: DefenseHost | None,
                 pool: Data, protected: list[str], threads: int, chunk_seed: int,
                 epochs: int, budget: int | None = None) -> None:
        self.task, self.defense, self.oracle, self.pool = task, defense, oracle, pool
        self.budget = budget  # oracle queries the attack may make; None: unlimited
        self.protected, self.threads, self.epochs = protected, threads, epochs
        self.hosts: dict[int, DefenseHost] = {}
        self.counter = iter(range(1, 1 << 62))
        self.chunk_rng = random.Random(chunk_seed)
        self.refusal: str | None = None
        self.queries = 0

    def serve(self, op: str, kwargs: dict[str, Any]) -> Any:
        data = kwargs.get("data")
        if op in ("oracle", "call") and isinstance(data, Data) and len(data) == 0:
            # The attack's mistake, refused here: the defense must not be blamed for it.
            raise PluginError(f"an attack's {op} request holds no images; ask for at least one")
        try:
            return self._serve(op, kwargs)
        except DefenseFault as err:
            unlike = self._unlike_owner(op, kwargs)
            if unlike is None:
                raise
            # A defense need only handle what an owner gives it; an attack cannot manufacture
            # a break by feeding it something else.
            raise PluginError(f"{err} (not counted as the defense's refusal: the request held "
                              f"{unlike}, which no owner sends)") from None

    def _unlike_owner(self, op: str, kwargs: dict[str, Any]) -> str | None:
        """How a request differs from anything the owner asks of a defense, or None when it
        does not: images of the task's shape, float32, finite, in [0, 1], with no labels or the
        task's kind of labels. An inverse on a clone is never the owner's."""
        if op == "call" and kwargs.get("method") == "inverse":
            return "an inverse"
        data = kwargs.get("data")
        if data is None:
            return None
        if not isinstance(data, Data):
            return f"a {type(data).__name__}, not Data"
        if data.image_shape != self.pool.image_shape:
            return f"images of shape {data.image_shape}"
        try:
            check_images(data, what="the request")  # float32, finite, in [0, 1], not empty
        except PluginError as err:
            return str(err)
        return None if data.y is None else self._unlike_labels(data.y)

    def _unlike_labels(self, y: torch.Tensor) -> str | None:
        classes = None
        if self.pool.y is not None and len(self.pool):
            classes = int(self.pool.hard_labels().max()) + 1
        if y.dim() == 1 and not y.is_floating_point():
            if len(y) and (int(y.min()) < 0 or (classes is not None and int(y.max()) >= classes)):
                return "class labels outside the task's classes"
            return None
        if y.dim() == 2 and y.is_floating_point() and bool(torch.isfinite(y).all()) \
                and bool((y >= 0).all()) and (classes is None or y.shape[1] == classes):
            return None
        return f"labels of shape {tuple(y.shape)} and dtype {y.dtype}"

    def _serve(self, op: str, kwargs: dict[str, Any]) -> Any:
        if op == "train":
            return _train_for_attack(type(self.task), kwargs, self.threads)
        if op == "oracle":
            if self.oracle is None:
                raise PluginError("the oracle was not granted")
            data = kwargs["data"]
            self._spend(len(data))
            return self.oracle.transform(Data(data.x, data.y))
        if self.defense is None:
            raise PluginError("the defense was not granted")
        if op == "new":
            return self._new(kwargs)
        if op == "close":
            host = self.hosts.pop(kwargs["host"], None)
            if host is not None:
                host.close()
            return None
        if op == "call":
            return self._call(kwargs)
        raise SandboxError(f"unknown request {op!r}")

    def _spend(self, n: int) -> None:
        """Count ``n`` oracle queries, or refuse the whole request when it would exceed the
        budget (the harness enforces the budget; the attack may go on with what it got)."""
        if self.budget is not None and self.queries + n > self.budget:
            raise QueryBudgetExceeded(
                f"oracle query budget: {n} images asked, {self.budget - self.queries} of "
                f"{self.budget} queries left; ask for at most that many")
        self.queries += n

    def _new(self, kwargs: dict[str, Any]) -> int:
        if len(self.hosts) >= MAX_HOSTS:
            raise PluginError(f"an attack may hold at most {MAX_HOSTS} fitted clones at once")
        defense = self.defense
        host = DefenseHost(type(defense), defense.get_params(), self.pool,
                           chunk_seed=self.chunk_rng.getrandbits(62), protected=self.protected,
                           threads=self.threads, epochs=self.epochs)
        hid = next(self.counter)
        self.hosts[hid] = host
        data = kwargs["data"]
        same = isinstance(data, Data) and data.image_shape == self.pool.image_shape
        host.fit(seed=kwargs["seed"], data=None if same else data)
        return hid

    def _call(self, kwargs: dict[str, Any]) -> Data:
        host = self.hosts.get(kwargs["host"])
        if host is None:
            raise PluginError("that clone was closed or never fitted")
        method, data = kwargs["method"], kwargs["data"]
        if method == "transform":
            return host.transform(data, epoch=kwargs.get("epoch"))
        if method == "test_inputs":
            return host.test_inputs(data)
        if method == "inverse":
            return host.inverse(data, self.pool.image_shape)
        raise SandboxError(f"unknown request {method!r}")

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()


def run_attack(attack: Any, view: dict[str, Any], *, seed: int, task: Any,
               defense: Defense | None, oracle: DefenseHost | None, pool: Data,
               protected: list[str], threads: int, chunk_seed: int,
               epochs: int = 1, queries: int | None = None) -> AttackOutcome:
    """Run ``attack`` sealed: ``view`` holds the granted tensors and model, copied into its process.

    ``defense`` is the unfitted spec-built defense (its class and hyperparameters travel); clones the
    attack fits become defense hosts; ``oracle`` is the owner's host, answering at most
    ``queries`` images in all (None: unlimited). A defense fault during the attack is remembered
    as the defense's refusal, whatever the attack does with it.
    """
    payload = {
        "attack_cls": type(attack), "attack_params": attack.get_params(),
        "task_cls": type(task), "task_params": task.get_params(),
        "defense_cls": None if defense is None else type(defense),
        "defense_params": None if defense is None else defense.get_params(),
        "oracle": oracle is not None, "view": view, "seed": seed,
        "protected": protected, "threads": threads,
    }
    with _live_process(_attack_main, (payload,)) as (proc, conn):
        server = _AttackServer(task=task, defense=defense, oracle=oracle, pool=pool,
                               protected=protected, threads=threads, chunk_seed=chunk_seed,
                               epochs=epochs, budget=queries)
        try:
            return _serve(server, proc, conn)
        finally:
            server.close()


def _serve(server: _AttackServer, proc: Any, conn: Any) -> AttackOutcome:
    """Answer an attack process's requests until it sends its outcome or exits."""
    while True:
        try:
            message = receive(conn)
        except (EOFError, OSError):
            proc.join(timeout=5)
            return AttackOutcome(None, {}, f"the attack's process exited (code "
                                 f"{proc.exitcode})", server.refusal, server.queries)
        kind = message[0] if isinstance(message, tuple) and message else None
        if kind == "request":
            _, op, kwargs = message
            try:
                send_copy(conn, ("ok", server.serve(op, kwargs)))
            except DefenseFault as err:
                server.refusal = server.refusal or str(err)
                send_copy(conn, ("fault", str(err)))
            except PluginError as err:  # refused by the harness, not the defense's fault
                send_copy(conn, ("refused", str(err)))
        elif kind == "done":
            _, prediction, report = message
            return AttackOutcome(prediction, report, None, server.refusal, server.queries)
        elif kind == "error":
            return AttackOutcome(None, {}, str(message[1]), server.refusal, server.queries)
        elif kind == "not-applicable":
            return AttackOutcome(None, {}, None, server.refusal, server.queries,
                                 str(message[1]))
        else:
            raise SandboxError("the attack's process broke the protocol")


@contextlib.contextmanager
def _live_process(target: Callable[..., None], args: tuple) -> Iterator[tuple[Any, Any]]:
    """A plugin or training process (``_start``) and its pipe, known to ``kill_attacks`` while
    it runs. On leaving, the process is killed: its answer is in, and nothing it still does
    (interpreter and thread-pool teardown, which can take a second) is worth waiting for."""
    proc, conn = _start(target, args, track=True)
    try:
        yield proc, conn
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        conn.close()
        with _starting:
            _live.discard(proc)


def kill_attacks() -> None:
    """End every running attack and training process (an interrupted run) and start no more
    until ``resume_attacks``; each one's driver thread then reads that its process exited."""
    with _starting:
        _stopping.set()
        for proc in list(_live):
            if proc.is_alive():
                proc.kill()


def resume_attacks() -> None:
    """Start attack and training processes again (a new cell, after an interrupted one)."""
    _stopping.clear()
