"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST
(``train-images-idx3-ubyte`` etc., plain or gzipped).

An IDX file is: two zero bytes, a type code (0x08 = unsigned byte, the only type these datasets
use), the number of dimensions, one big-endian uint32 per dimension, then the data in C order.
Every way a file can be wrong ends in :class:`IDXError` naming the file and the problem.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

UBYTE = 0x08
HEADER_BYTES = 4
DIM_BYTES = 4


class IDXError(ValueError):
    """A file that is not a well-formed unsigned-byte IDX file."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_bytes(path) -> bytes:
    """The (decompressed) bytes of IDX file ``path``."""
    return _read_bytes(Path(path))


def _read_bytes(path: Path) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"{path}: cannot read ({type(e).__name__}: {e}); the file is damaged or "
                       f"not {'gzip' if path.suffix == '.gz' else 'an IDX file'}") from None


def parse(raw: bytes, where: str = "<bytes>") -> np.ndarray:
    """The array stored in IDX bytes ``raw`` (uint8, shape from the header)."""
    if len(raw) < HEADER_BYTES:
        raise IDXError(f"{where}: {len(raw)} bytes, too short for an IDX header")
    zero0, zero1, code, ndim = raw[:HEADER_BYTES]
    if zero0 or zero1:
        raise IDXError(f"{where}: not an IDX file (first bytes {raw[:HEADER_BYTES].hex()}, expected 0000..)")
    if code != UBYTE:
        raise IDXError(f"{where}: IDX type code 0x{code:02x}, only unsigned bytes (0x08) are supported")
    start = HEADER_BYTES + DIM_BYTES * ndim
    if ndim == 0 or len(raw) < start:
        raise IDXError(f"{where}: truncated IDX header ({ndim} dimensions, {len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[HEADER_BYTES:start])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(raw) - start != expected:
        raise IDXError(f"{where}: header says shape {shape} ({expected} bytes of data) but the file "
                       f"holds {len(raw) - start}; the file is truncated or damaged")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(shape)


def read(path) -> np.ndarray:
    """The uint8 array in the IDX file ``path`` (gzipped when its name ends in ``.gz``)."""
    path = Path(path)
    return parse(_read_bytes(path), str(path))


def encode(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array (the inverse of :func:`parse`; used by tests and tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write(path, array: np.ndarray) -> None:
    path = Path(path)
    with (gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb")) as f:
        f.write(encode(array))
