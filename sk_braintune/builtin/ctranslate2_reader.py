"""Reader for CTranslate2 ``model.bin`` files, in pure numpy (no ``ctranslate2`` needed).

Layout (little-endian), as written by CTranslate2's ``ModelSpec.save`` for binary versions
4 and up::

    u32 binary_version
    str spec_name            (e.g. "WhisperSpec")
    u32 spec_revision
    u32 n_variables
    n_variables x {str name, u8 rank, rank x u32 dim, u8 dtype, u32 n_bytes, n_bytes raw data}
    u32 n_aliases
    n_aliases x {str alias, str target}

where ``str`` is a u16 byte count followed by that many bytes, the last of which is a NUL.
The file is memory-mapped, so the arrays are read-only views that cost no copy until used.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# CTranslate2's DataType enum; bfloat16 has no numpy dtype and is widened by hand.
_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16 bit patterns
}
_BFLOAT16 = 5
_MIN_VERSION = 4  # older files store an item size instead of a dtype code
_MAX_VERSION = 6


@dataclass
class CTranslate2Model:
    """Contents of a CTranslate2 ``model.bin``.

    Attributes
    ----------
    binary_version : int
        Version of the file layout.
    spec_name : str
        Model specification, e.g. ``"WhisperSpec"``.
    spec_revision : int
        Revision of that specification.
    variables : dict of str to ndarray
        Raw arrays by name, with the stored dtype (read-only views into the mapped file;
        bfloat16 is returned widened to float32). Scalars have shape ``()``.
    aliases : dict of str to str
        Alias name -> name of the variable it shares (e.g. a tied output projection).
    """

    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict = field(repr=False)
    aliases: dict = field(default_factory=dict)

    def __contains__(self, name):
        return name in self.variables or name in self.aliases

    def raw(self, name):
        """Stored array of ``name`` (an alias resolves to its target).

        Parameters
        ----------
        name : str

        Returns
        -------
        array : ndarray
        """
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a variable of this {self.spec_name} model") from None

    def float32(self, name):
        """``name`` as float32, de-quantised when stored as int8/int16 with a ``*_scale``.

        CTranslate2 quantises ``q = round(w * scale)`` with one scale per output row (int8)
        or one global scale (int16), stored as ``<name>_scale``; so ``w = q / scale``.

        Parameters
        ----------
        name : str

        Returns
        -------
        array : ndarray of float32
            A fresh array (never a view into the file).
        """
        name = self.aliases.get(name, name)
        array = self.raw(name)
        if array.dtype.kind in "iu":
            scale_name = f"{name}_scale"
            if scale_name in self.variables:
                scale = self.variables[scale_name].astype(np.float32)
                scale = scale.reshape(scale.shape + (1,) * (array.ndim - scale.ndim))
                return (array.astype(np.float32) / scale).astype(np.float32)
        return np.array(array, dtype=np.float32)

    def scalar(self, name):
        """Python value of a scalar variable (e.g. ``encoder/num_heads``).

        Parameters
        ----------
        name : str

        Returns
        -------
        value : int or float
        """
        return self.raw(name).reshape(()).item()


class _Cursor:
    """Sequential little-endian reader over a buffer."""

    def __init__(self, buffer):
        self.buffer = buffer
        self.offset = 0

    def unpack(self, fmt):
        values = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def u32(self):
        return self.unpack("<I")[0]

    def string(self):
        (length,) = self.unpack("<H")
        raw = bytes(self.buffer[self.offset:self.offset + length])
        self.offset += length
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"malformed string at byte {self.offset - length}: no NUL terminator")
        return raw[:-1].decode("utf-8")


def read_ctranslate2_model(path):
    """Read a CTranslate2 ``model.bin``.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``model.bin`` file, or the model directory holding it.

    Returns
    -------
    model : CTranslate2Model

    Raises
    ------
    ValueError
        If the file is truncated, has trailing bytes, or uses an unsupported layout version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    with open(path, "rb") as f:
        # The mapping outlives the file object; the arrays keep it alive.
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    cursor = _Cursor(buffer)
    try:
        version = cursor.u32()
        if not _MIN_VERSION <= version <= _MAX_VERSION:
            raise ValueError(
                f"{path}: CTranslate2 binary version {version} is not supported "
                f"(this reader handles {_MIN_VERSION}-{_MAX_VERSION}); re-convert the model "
                "with a recent ctranslate2")
        spec_name = cursor.string()
        spec_revision = cursor.u32()
        variables = {}
        for _ in range(cursor.u32()):
            name = cursor.string()
            (rank,) = cursor.unpack("<B")
            shape = cursor.unpack(f"<{rank}I") if rank else ()
            code, n_bytes = cursor.unpack("<BI")
            if code not in _DTYPES:
                raise ValueError(f"{path}: variable {name!r} has unknown dtype code {code}")
            dtype = _DTYPES[code]
            count = int(np.prod(shape, dtype=np.int64))
            if count * dtype.itemsize != n_bytes:
                raise ValueError(f"{path}: variable {name!r} of shape {shape} and dtype {dtype} "
                                 f"declares {n_bytes} bytes")
            if cursor.offset + n_bytes > len(buffer):
                raise ValueError(f"{path}: truncated inside variable {name!r}")
            array = np.frombuffer(buffer, dtype=dtype, count=count,
                                  offset=cursor.offset).reshape(shape)
            if code == _BFLOAT16:
                array = (array.astype(np.uint32) << 16).view(np.float32)
            variables[name] = array
            cursor.offset += n_bytes
        aliases = {}
        if cursor.offset < len(buffer):
            for _ in range(cursor.u32()):
                alias = cursor.string()
                aliases[alias] = cursor.string()
    except struct.error as exc:
        raise ValueError(f"{path}: truncated CTranslate2 model file ({exc})") from exc
    if cursor.offset != len(buffer):
        raise ValueError(f"{path}: {len(buffer) - cursor.offset} unexpected trailing bytes")
    return CTranslate2Model(binary_version=version, spec_name=spec_name,
                            spec_revision=spec_revision, variables=variables, aliases=aliases)
