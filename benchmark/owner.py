"""The data owner's side: disguise real images before uploading them, keep the key, undo it.

The key file is a safetensors file (no pickle: loading it runs no code). Its tensors are the
defense's secret tensors; its header metadata holds the defense's spec (registry name and every
hyperparameter) and the scalar secrets as JSON. It is created with mode 0600 and refused when
group or others can read or write it. Keys are never printed or logged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disguisebench import registry
from disguisebench.api import Data, Defense, PluginError, check_images

log = logging.getLogger("disguisebench")

KEY_FORMAT = "disguisebench-key/1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ----------------------------------------------------------------------------- key files


def _encode_secrets(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    as_bytes: list[str] = []
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous().clone()
        elif isinstance(value, (bytes, bytearray)):
            tensors[name] = torch.frombuffer(bytearray(value), dtype=torch.uint8).clone()
            as_bytes.append(name)
        else:
            try:
                json.dumps(value)
            except TypeError:
                raise PluginError(f"cannot store secret attribute {name!r} of type "
                                  f"{type(value).__name__} in a key file") from None
            scalars[name] = value
    return tensors, {"scalars": json.dumps(scalars), "bytes": json.dumps(as_bytes)}


def _decode_secrets(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, Any]:
    def restore(value: Any) -> Any:
        # JSON has no tuples; secret sequences (image shapes) are tuples.
        return tuple(restore(v) for v in value) if isinstance(value, list) else value

    state: dict[str, Any] = {k: restore(v) for k, v in json.loads(meta["scalars"]).items()}
    as_bytes = set(json.loads(meta["bytes"]))
    for name, tensor in tensors.items():
        state[name] = tensor.numpy().tobytes() if name in as_bytes else tensor
    return state


def write_key(path: str | os.PathLike, defense: Defense) -> None:
    """Write ``defense``'s key to a new file created with mode 0600 (never overwriting one).

    Beside the defense's secrets the file holds a random fingerprint key: uploads carry an HMAC
    of the secrets under it (:func:`fingerprint`), which tells keys apart without letting the
    cloud test guesses of a defense's key (it would need the fingerprint key as well).
    """
    from safetensors.torch import save

    tensors, meta = _encode_secrets(defense.secret_state())
    meta.update(format=KEY_FORMAT, defense=json.dumps(defense.spec(), sort_keys=True),
                fingerprint_key=secrets.token_hex(32))
    payload = save(tensors, metadata=meta)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PluginError(f"key file {str(path)!r} already exists") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
    except BaseException:
        os.unlink(path)
        raise


def read_key(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """The defense spec ({"name", "params"}) and the secret state stored in a key file."""
    spec, state, _ = _read_key_file(path)
    return spec, state


def fingerprint(path: str | os.PathLike) -> str | None:
    """A keyed hash (HMAC-SHA256 under the key file's fingerprint key) of the defense and its
    secrets: equal for one key file, different for any other key; never the key itself. None for
    a key file written before fingerprints existed."""
    import hashlib
    import hmac

    spec, state, meta = _read_key_file(path)
    if "fingerprint_key" not in meta:
        return None
    mac = hmac.new(bytes.fromhex(meta["fingerprint_key"]), digestmod=hashlib.sha256)
    mac.update(json.dumps(spec, sort_keys=True).encode())
    for name in sorted(state):
        value = state[name]
        mac.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            array = value.detach().cpu().contiguous().numpy()
            mac.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
        elif isinstance(value, (bytes, bytearray)):
            mac.update(bytes(value))
        else:
            mac.update(json.dumps(value, sort_keys=True).encode())
    return mac.hexdigest()


def _read_key_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    from safetensors.torch import load

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise PluginError(f"no key file at {str(path)!r}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & 0o077:
            raise PluginError(f"key file {str(path)!r} has mode {mode:04o}: group or others may "
                              f"access it; run `chmod 600 {path}` if it is still secret")
        payload = f.read()
    try:
        (size,) = np.frombuffer(payload[:8], dtype="<u8")
        meta = json.loads(payload[8:8 + int(size)]).get("__metadata__") or {}
        if meta.get("format") != KEY_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        spec = json.loads(meta["defense"])
        state = _decode_secrets(load(payload), meta)
    except (ValueError, KeyError, TypeError) as err:
        raise PluginError(f"{str(path)!r} is not a {KEY_FORMAT} key file ({err})") from None
    return spec, state, meta


def defense_for_key(path: str | os.PathLike, name: str | None,
                    params: dict[str, Any] | None) -> Defense:
    """The defense stored in a key file, with its key; ``name`` and ``params``, when given,
    must describe that same defense."""
    spec, state = read_key(path)
    stored = registry.create("defense", spec["name"], spec["params"])
    if name is not None:
        wanted = registry.create("defense", name, params).spec()
        if wanted["name"] != stored.name:
            raise PluginError(f"key file {str(path)!r} belongs to defense {stored.name!r}, not "
                              f"{wanted['name']!r}; use a new key file for another defense")
        differ = [k for k in wanted["params"] if wanted["params"][k] != stored.get_params()[k]]
        if differ:
            have = ", ".join(f"{k}={stored.get_params()[k]!r}" for k in differ)
            want = ", ".join(f"{k}={wanted['params'][k]!r}" for k in differ)
            raise PluginError(f"key file {str(path)!r} belongs to {stored.name} with {have}, not "
                              f"{want}; use a new key file for other hyperparameters")
    return stored.load_secret_state(state)


# ----------------------------------------------------------------------------- images


def read_images(path: str | os.PathLike) -> tuple[Data, list[str] | None]:
    """An image folder (PNG/JPEG, sub-folders included, sorted by relative path, no labels) or an
    .npz with ``x`` (N, H, W), (N, C, H, W) or (N, H, W, C), uint8 or floats in [0, 1], and
    optionally labels ``y`` and file ``names``; and the images' relative file names (None for an
    .npz without names)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.suffix == ".npz" and path.is_file():
        return _read_npz(path)
    raise PluginError(f"{str(path)!r} is neither an image folder nor an .npz file")


def _read_folder(folder: Path) -> tuple[Data, list[str]]:
    from PIL import Image

    files = sorted((p for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise PluginError(f"no PNG or JPEG images in {str(folder)!r} or its sub-folders")
    names = [p.relative_to(folder).as_posix() for p in files]
    arrays = []
    for file in files:
        try:
            with Image.open(file) as im:
                arrays.append(np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB")))
        except OSError as err:
            raise PluginError(f"cannot read the image {str(file)!r}: {err}") from None
    if any(a.ndim == 3 for a in arrays):  # colour wins: grey images become three equal channels
        arrays = [a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays]
    sizes = [a.shape[:2] for a in arrays]
    common = max(set(sizes), key=sizes.count)
    odd = [(name, size) for name, size in zip(names, sizes) if size != common]
    if odd:
        (name, (h, w)), more = odd[0], len(odd) - 1
        raise PluginError(
            f"{name} in {str(folder)!r} is {w}×{h} pixels, but {sizes.count(common)} of the "
            f"{len(names)} images are {common[1]}×{common[0]}"
            + (f" ({more} other image(s) differ too)" if more else "")
            + "; resize them to one size first")
    x = np.stack(arrays)
    return _to_data(x if x.ndim == 4 else x[:, :, :, None], None, channels_last=True), names


def _read_npz(path: Path) -> tuple[Data, list[str] | None]:
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f:
            raise PluginError(f"{str(path)!r} has no array 'x' (found: {', '.join(f.files)})")
        x, y = f["x"], f["y"] if "y" in f else None
        names = _names(f, path, len(x))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise PluginError(f"'x' in {str(path)!r} has shape {x.shape}; expected (N, H, W), "
                          "(N, C, H, W) or (N, H, W, C)")
    channels_last = x.shape[1] not in (1, 3) and x.shape[3] in (1, 3)
    return _to_data(x, y, channels_last=channels_last), names


def _names(f: Any, path: Path, n: int) -> list[str] | None:
    """The relative file names stored in an .npz, checked to stay inside an output folder."""
    if "names" not in f:
        return None
    names = [str(name) for name in f["names"].tolist()]
    if len(names) != n:
        raise PluginError(f"{str(path)!r} holds {len(names)} names for {n} images")
    for name in names:
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise PluginError(f"{str(path)!r} holds the file name {name!r}; names must be "
                              "relative paths inside the folder")
    return names


def _to_data(x: np.ndarray, y: np.ndarray | None, *, channels_last: bool) -> Data:
    if channels_last:
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(x)).float() / 255
    elif np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        raise PluginError(f"images must be uint8 or floats in [0, 1], got {x.dtype}")
    data = Data(t, None if y is None else torch.from_numpy(np.asarray(y)))
    check_images(data, what="input images")
    return data


def _output_file(out_dir: str | os.PathLike, source: str | os.PathLike) -> Path:
    target = Path(out_dir) / f"{Path(source).stem}.npz"
    if target.exists():
        raise PluginError(f"{str(target)!r} already exists; remove it or choose another --out")
    return target


def _npz_arrays(data: Data, names: list[str] | None, fingerprint_hex: str | None
                ) -> dict[str, np.ndarray]:
    arrays = {"x": data.x.numpy().astype(np.float32)}
    if data.y is not None:
        arrays["y"] = data.y.numpy()
    if names is not None:
        arrays["names"] = np.array(names, dtype=str)
    if fingerprint_hex is not None:
        arrays["key_fingerprint"] = np.array(fingerprint_hex)
    return arrays


class _Undo:
    """What a command created, removed again when the command fails: no empty output folder,
    half-written file or unused new key is left behind."""

    def __init__(self) -> None:
        self._paths: list[Path] = []

    def mkdir(self, folder: Path) -> None:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self._paths += sorted(missing, key=lambda p: len(p.parts))

    def created(self, path: Path) -> Path:
        self._paths.append(path)
        return path

    def __enter__(self) -> _Undo:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            return
        import shutil

        for path in reversed(self._paths):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            except OSError as err:  # the original error matters more than the clean-up's
                log.warning("could not remove %s after the failure: %s", path, err)


def _save_npz(target: Path, arrays: dict[str, np.ndarray], undo: _Undo) -> None:
    undo.mkdir(target.parent)
    partial = undo.created(target.with_name(f".{target.name}.partial"))
    with open(partial, "wb") as f:
        np.savez(f, **arrays)
    os.replace(partial, undo.created(target))


# ----------------------------------------------------------------------------- commands


def disguise(source: str | os.PathLike, out_dir: str | os.PathLike, key: str | os.PathLike,
             name: str | None = None, params: dict[str, Any] | None = None) -> Path:
    """Disguise an image folder or .npz into ``out_dir/<name>.npz``, drawing a new key into
    ``key`` unless that file exists, in which case its key is re-used (test images must be
    disguised with the training key). The file keeps the images' relative file names and the
    key's fingerprint. Returns the written file; on failure nothing is left behind."""
    data, names = read_images(source)
    target = _output_file(out_dir, source)
    with _Undo() as undo:
        if os.path.lexists(key):
            defense = defense_for_key(key, name, params)
            log.info("re-using the key in %s for %s", key, defense.label())
        else:
            if name is None:
                raise PluginError("--defense is needed to draw a new key")
            defense = registry.create("defense", name, params)
            # The owner's key comes from the operating system, not from a benchmark seed.
            defense.fit(data, seed=secrets.randbits(63))
            write_key(key, defense)
            undo.created(Path(key))
            log.info("drew a new key for %s into %s", defense.label(), key)
        disguised = defense.transform(data)
        _save_npz(target, _npz_arrays(Data(disguised.x, data.y), names, fingerprint(key)), undo)
    return target


def undisguise(source: str | os.PathLike, out_dir: str | os.PathLike, key: str | os.PathLike,
               *, png: bool = False) -> Path:
    """Undo a disguise with its key (RMT, permutations, AES; added noise stays) into
    ``out_dir/<name>.npz`` and, when ``png``, into PNG images under their original relative
    names (numbered when the upload kept none). A key other than the upload's is refused."""
    path = Path(source)
    if path.suffix != ".npz" or not path.is_file():
        raise PluginError(f"{str(source)!r} is not an .npz file written by `disguisebench disguise`")
    with np.load(path, allow_pickle=False) as f:
        if "x" not in f:
            raise PluginError(f"{str(path)!r} has no array 'x'")
        x, y = f["x"], f["y"] if "y" in f else None
        names = _names(f, path, len(x))
        stored = str(f["key_fingerprint"]) if "key_fingerprint" in f else None
    if x.ndim != 4:
        raise PluginError(f"'x' in {str(path)!r} has shape {x.shape}; expected (N, C, H, W)")
    target = _output_file(out_dir, source)
    defense = defense_for_key(key, None, None)
    mine = fingerprint(key)
    if stored is not None and mine is not None and stored != mine:
        raise PluginError(f"{str(path)!r} was disguised with another key than {str(key)!r} "
                          "(their fingerprints differ); undisguise it with the key file it was "
                          "disguised with")
    if stored is None or mine is None:
        log.warning("cannot check that %s was disguised with %s: %s has no key fingerprint",
                    path, key, "the upload" if stored is None else "the key file")
    data = Data(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                None if y is None else torch.from_numpy(y))
    plain = defense.inverse(data)
    with _Undo() as undo:
        _save_npz(target, _npz_arrays(plain, names, None), undo)
        if png:
            _write_pngs(target.with_suffix(""), plain.x, names, undo)
    return target


def png_names(names: list[str] | None, n: int) -> list[str]:
    """Where each image goes as a PNG: its relative name with a .png suffix (kept in full when
    that would collide, ``a.jpg`` -> ``a.jpg.png``), else numbered in input order."""
    if names is None:
        width = max(6, len(str(n - 1)))
        return [f"{i:0{width}d}.png" for i in range(n)]
    stems = [str(Path(name).with_suffix(".png")) for name in names]
    clash = {s for s in stems if stems.count(s) > 1}
    return [s if s not in clash else f"{name}.png" for s, name in zip(stems, names)]


def _write_pngs(folder: Path, x: torch.Tensor, names: list[str] | None, undo: _Undo) -> None:
    from PIL import Image

    if folder.exists():
        raise PluginError(f"{str(folder)!r} already exists; remove it or choose another --out")
    undo.mkdir(folder)
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for name, image in zip(png_names(names, len(pixels)), pixels):
        file = folder / name
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(file)
