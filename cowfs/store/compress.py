"""Layer stream decompression for the extractor: sniff, decompress, hash, bound.

Owns: detecting the compression of a layer blob by its magic (never by name or
media type), the bounded decompressing readers (a decompression bomb is refused
by ``max_size``), and the hashing wrappers that give a layer's digest (of the
stream as given) and DiffID (of the uncompressed tar). Must not touch the
filesystem; the extractor (``unpack.py``) and the store use these streams.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
import zlib
from collections.abc import Callable
from typing import BinaryIO, Final, cast

from cowfs import format as fmt
from cowfs.errors import CorruptLayer, HostileInput

CHUNK: Final = 1 << 20
"""Read size for compressed and uncompressed streams (big reads, few syscalls)."""

_MAGIC_LEN: Final = 6


class _Stream(io.RawIOBase):
    """Base of the stream wrappers below: ``readinto`` and ``drain`` on top of ``read``."""

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end (hashing on the way where the stream hashes)."""
        while self.read(CHUNK):
            pass


class HashingReader(_Stream):
    """Wrap a binary stream: hash and count every byte read through it.

    The extractor reads the compressed blob through this to get the layer digest
    and compressed size; ``drain()`` reads trailing bytes so the digest covers the
    whole blob (umoci 0.4.7: trailing junk after the tar is part of the blob).
    """

    def __init__(self, src: BinaryIO,
                 progress: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._src = src
        self._hash = hashlib.sha256()
        self.count = 0
        self._progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(CHUNK if size is None or size < 0 else size)
        if data:
            self._hash.update(data)
            self.count += len(data)
            if self._progress is not None:
                self._progress(len(data))
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _Prefixed(_Stream):
    """A stream that first returns already-sniffed bytes, then the rest of ``src``."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._src = src

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._src.read(size)


class _GzipReader(_Stream):
    """Streaming gzip decoder accepting concatenated members (eStargz, pigz)."""

    def __init__(self, src: BinaryIO) -> None:
        super().__init__()
        self._src = src
        self._d = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        while not self._eof:
            if self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            elif self._pending:
                data, self._pending = self._pending, b""
            else:
                data = self._src.read(CHUNK)
                if not data:
                    if not self._d.eof:
                        raise CorruptLayer("decompress layer: truncated gzip stream")
                    self._eof = True
                    break
            try:
                out = self._d.decompress(data, size)
            except zlib.error as exc:
                raise CorruptLayer(f"decompress layer: bad gzip data: {exc}") from None
            if self._d.eof:
                # Another member may follow (pigz, eStargz); anything else after the
                # last member is trailing junk, ignored here (the caller still hashes it).
                rest = self._d.unused_data or self._src.read(CHUNK)
                self._d = zlib.decompressobj(wbits=31)
                if rest[:2] == fmt.GZIP_MAGIC:
                    self._pending = rest
                else:
                    self._eof = True
            if out:
                return out
        return b""


class BoundedReader(_Stream):
    """Hash and count an uncompressed stream; refuse more than ``max_size`` bytes."""

    def __init__(self, src: BinaryIO, max_size: int | None, *, hashing: bool = True) -> None:
        super().__init__()
        self._src = src
        self._max = max_size
        self._hash = hashlib.sha256()
        self._hashing = hashing
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        data = self._src.read(size)
        if data:
            self.count += len(data)
            if self._max is not None and self.count > self._max:
                raise HostileInput(
                    f"decompress layer: more than {self._max} uncompressed bytes "
                    "(decompression bomb?)")
            if self._hashing:
                self._hash.update(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def sniff(head: bytes) -> str:
    """Return the OCI layer media type for a blob starting with ``head``.

    Raises:
        CorruptLayer: for a compression cowfs does not read (bzip2, xz).
    """
    if head.startswith(fmt.GZIP_MAGIC):
        return fmt.MT_OCI_LAYER_GZIP
    if head.startswith(fmt.ZSTD_MAGIC):
        return fmt.MT_OCI_LAYER_ZSTD
    if head.startswith(fmt.XZ_MAGIC):
        raise CorruptLayer("decompress layer: xz-compressed layers are not supported")
    if head.startswith(fmt.BZIP2_MAGIC) and len(head) >= 4 and head[3:4].isdigit():
        raise CorruptLayer("decompress layer: bzip2-compressed layers are not supported")
    return fmt.MT_OCI_LAYER


def _read_head(src: BinaryIO) -> bytes:
    head = b""
    while len(head) < _MAGIC_LEN:
        more = src.read(_MAGIC_LEN - len(head))
        if not more:
            break
        head += more
    return head


def open_decompressed(src: BinaryIO) -> tuple[BinaryIO, str]:
    """Return ``(stream, media_type)``: the uncompressed tar stream of a layer blob.

    Compression is sniffed from the magic bytes: none, gzip or zstd. The returned
    stream reads ``src`` lazily; it is not bounded (see ``unpack_layer``'s
    ``max_size``) and does not hash.

    Raises:
        CorruptLayer: unsupported compression.
    """
    head = _read_head(src)
    media_type = sniff(head)
    joined: BinaryIO = _Prefixed(head, src)  # type: ignore[assignment]
    if media_type == fmt.MT_OCI_LAYER_GZIP:
        return _GzipReader(joined), media_type  # type: ignore[return-value]
    if media_type == fmt.MT_OCI_LAYER_ZSTD:
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        reader = dctx.stream_reader(joined, read_size=CHUNK, read_across_frames=True)
        return _ZstdGuard(reader), media_type  # type: ignore[return-value]
    return joined, media_type


class _ZstdGuard(_Stream):
    """Map zstandard's errors to CorruptLayer."""

    def __init__(self, reader: BinaryIO) -> None:
        super().__init__()
        self._r = reader

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        import zstandard

        try:
            return self._r.read(CHUNK if size is None or size < 0 else size)
        except zstandard.ZstdError as exc:
            raise CorruptLayer(f"decompress layer: bad zstd data: {exc}") from None


_DONE: Final = object()


class Prefetcher(_Stream):
    """Run ``fill()`` (read + decompress + hash, mostly GIL-free C) in a thread.

    The extractor's thread parses and writes while this one reads ahead at most
    ``depth`` chunks. ``counter()`` is sampled after each chunk so that progress
    is reported from the caller's thread, never from the worker. Errors raised by
    the worker (e.g. HostileInput for a bomb) are re-raised by ``read``.
    """

    def __init__(self, src: BinaryIO, counter: Callable[[], int],
                 progress: Callable[[int], None] | None, depth: int = 4) -> None:
        super().__init__()
        self._src = src
        self._counter = counter
        self._progress = progress
        self.reported = 0
        """Compressed bytes already passed to ``progress``."""
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._rest = b""
        self._eof = False
        self._thread = threading.Thread(target=self._work, name="cowfs-unpack-read",
                                        daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._src.read(CHUNK)
                if not self._put((data, self._counter())) or not data:
                    return
        except BaseException as exc:  # handed to the reading thread
            self._put(exc)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._rest:
            data, self._rest = self._rest, b""
        elif self._eof:
            return b""
        else:
            item = self._q.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            data, count = cast("tuple[bytes, int]", item)
            if self._progress is not None and count > self.reported:
                self._progress(count - self.reported)
                self.reported = count
            if not data:
                self._eof = True
                return b""
        if size is not None and 0 <= size < len(data):
            data, self._rest = data[:size], data[size:]
        return data

    def close(self) -> None:
        """Stop and join the worker (safe to call twice, and after errors)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        super().close()


class Direct(_Stream):
    """``Prefetcher``'s interface without a thread (for uncompressed blobs, where the
    only work to overlap is one hash and a thread costs more than it saves when the
    CPUs are busy)."""

    def __init__(self, src: BinaryIO, counter: Callable[[], int],
                 progress: Callable[[int], None] | None) -> None:
        super().__init__()
        self._src = src
        self._counter = counter
        self._progress = progress
        self.reported = 0
        """Compressed bytes already passed to ``progress``."""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(CHUNK if size is None or size < 0 else size)
        if self._progress is not None:
            count = self._counter()
            if count > self.reported:
                self._progress(count - self.reported)
                self.reported = count
        return data

