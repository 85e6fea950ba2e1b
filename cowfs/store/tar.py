"""A streaming tar parser for layer extraction: headers in, ``TarEntry`` out.

Owns: reading tar headers from an uncompressed stream with big buffered reads —
ustar, v7, GNU (long names ``L``/``K``, base-256 numbers, old sparse ``S``) and
PAX (``x``/``g`` records, long names, large ids, ns times, ``SCHILY.xattr.*`` and
``LIBARCHIVE.xattr.*`` with binary values, sparse 0.0/0.1/1.0). It hands entry
data to the caller (``copy_to_fd``/``write_sparse``/``skip``). Must not touch the
filesystem beyond writing data to an fd it is given; must not use ``tarfile``.
"""

from __future__ import annotations

import base64
import os
import struct
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Final

from cowfs.errors import CorruptLayer

BLOCK: Final = 512
_READ: Final = 1 << 20
_MAX_META: Final = 16 << 20
"""Largest PAX or GNU long-name payload accepted (bounds memory on hostile input)."""
_ID_LIMIT: Final = 2**32 - 1
"""uid/gid must fit uid_t, and (uid_t)-1 means "unchanged" to chown(2)."""
_MAX_SPARSE: Final = 1 << 20
"""Largest number of sparse map entries accepted."""

# Normalised entry kinds (the POSIX typeflag characters).
REG: Final = ord("0")
LNK: Final = ord("1")
SYM: Final = ord("2")
CHR: Final = ord("3")
BLK: Final = ord("4")
DIR: Final = ord("5")
FIFO: Final = ord("6")

_KINDS: Final = {ord("0"): REG, 0: REG, ord("7"): REG, ord("1"): LNK, ord("2"): SYM,
                 ord("3"): CHR, ord("4"): BLK, ord("5"): DIR, ord("6"): FIFO,
                 ord("D"): DIR, ord("S"): REG}
_XATTR_SCHILY: Final = b"SCHILY.xattr."
_XATTR_LIBARCHIVE: Final = b"LIBARCHIVE.xattr."
_GLOBAL_SKIP: Final = frozenset({b"path", b"linkpath", b"size"})
_HDR: Final = struct.Struct("100s8s8s8s12x12s8x1x100s6s")
"""name, mode, uid, gid, (size), mtime, (chksum, typeflag), linkname, magic."""


@dataclass(slots=True)
class TarEntry:
    """One archive member with every extended header already applied."""

    name: bytes
    kind: int
    mode: int
    uid: int
    gid: int
    size: int
    """Bytes of member data in the archive (after any in-data sparse map)."""
    mtime_ns: int
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    atime_ns: int | None = None
    xattrs: dict[bytes, bytes] | None = None
    sparse: list[tuple[int, int]] | None = None
    """(offset, length) data segments of a sparse file, in archive order."""
    realsize: int = 0
    """Logical size of a sparse file."""


def _num(field: bytes) -> int:
    """Parse a numeric header field: octal (NUL/space padded) or GNU base-256."""
    if field and field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    try:  # fast path: "0000644\0", "00000001234 ", all NULs
        return int(field.rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        pass
    s = field.split(b"\0", 1)[0].strip()
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise CorruptLayer(f"read tar: bad numeric field {field!r}") from None


def _checksum_ok(blk: bytes) -> bool:
    """Verify a header's checksum (unsigned, or the signed sum old tars wrote)."""
    try:
        stored = _num(blk[148:156])
    except CorruptLayer:
        return False
    # Fast path: adler32's low half is 1 + sum(bytes) mod 65521, and a header's byte
    # sum is below 2 * 65521, so this differs from the plain sum only on a 1/65521
    # coincidence that still needs a well-formed numeric checksum field.
    if (stored + sum(blk[148:156]) - 8 * 32 + 1) % 65521 == zlib.adler32(blk) & 0xFFFF:
        return True
    signed = sum(b - 256 if b > 127 else b for b in blk)
    signed -= sum(b - 256 if b > 127 else b for b in blk[148:156]) - 8 * 32
    return stored == signed


def _str(field: bytes) -> bytes:
    i = field.find(b"\0")
    return field if i < 0 else field[:i]


def _pax_time(value: bytes) -> int:
    """PAX decimal seconds (maybe negative, maybe fractional) → ns."""
    v = value.strip()
    neg = v.startswith(b"-")
    if neg:
        v = v[1:]
    whole, _, frac = v.partition(b".")
    try:
        ns = int(whole or b"0") * 1_000_000_000 + int((frac[:9] or b"0").ljust(9, b"0"))
    except ValueError:
        raise CorruptLayer(f"read tar: bad PAX time {value!r}") from None
    return -ns if neg else ns


def _pax_int(key: bytes, value: bytes) -> int:
    try:
        n = int(value)
    except ValueError:
        raise CorruptLayer(f"read tar: bad PAX {key.decode(errors='replace')}") from None
    if n < 0:
        raise CorruptLayer(f"read tar: negative PAX {key.decode(errors='replace')}")
    return n


def _pax_id(key: bytes, value: bytes) -> int:
    n = _pax_int(key, value)
    if n >= _ID_LIMIT:
        raise CorruptLayer(f"read tar: PAX {key.decode()} {n} out of range")
    return n


def parse_pax(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split PAX extended header records ``"LEN KEY=VALUE\\n"`` (values may be binary)."""
    out: list[tuple[bytes, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding after the last record
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise CorruptLayer("read tar: malformed PAX record length")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise CorruptLayer("read tar: malformed PAX record length") from None
        rec_end = pos + length
        if length <= sp - pos + 1 or rec_end > end or data[rec_end - 1] != 0x0A:
            raise CorruptLayer("read tar: malformed PAX record")
        key, eq, value = data[sp + 1:rec_end - 1].partition(b"=")
        if not eq or not key:
            raise CorruptLayer("read tar: malformed PAX record (no key)")
        out.append((key, value))
        pos = rec_end
    return out


def _sparse_pairs(nums: list[int]) -> list[tuple[int, int]]:
    if len(nums) % 2 or len(nums) // 2 > _MAX_SPARSE:
        raise CorruptLayer("read tar: malformed sparse map")
    pairs = list(zip(nums[::2], nums[1::2], strict=True))
    if any(o < 0 or n < 0 for o, n in pairs):
        raise CorruptLayer("read tar: malformed sparse map")
    return pairs


class TarReader:
    """Iterate over a tar stream's entries with large buffered reads.

    Call ``next()`` for each entry; the caller may consume the entry's data with
    one of ``copy_to_fd``/``write_sparse``/``read_data``; whatever it leaves is
    skipped by the next ``next()``.
    """

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._buf = b""
        self._pos = 0
        self._left = 0  # data bytes of the current entry not yet consumed
        self._pad = 0  # padding after the current entry's data
        self._global: list[tuple[bytes, bytes]] = []
        self.ended_cleanly = False
        """True once the end-of-archive zero block has been seen."""
        self.entries = 0

    # -- buffer ------------------------------------------------------------------
    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes available at ``_pos``; False if the stream ends first."""
        avail = len(self._buf) - self._pos
        if avail >= need:
            return True
        parts = [self._buf[self._pos:]] if avail else []
        while avail < need:
            data = self._src.read(max(_READ, need - avail))
            if not data:
                self._buf, self._pos = b"".join(parts), 0
                return False
            parts.append(data)
            avail += len(data)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos = 0
        return True

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise CorruptLayer(f"read tar: stream truncated in {what}")
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def _spans(self, n: int) -> Iterator[tuple[int, int]]:
        """Consume the next N bytes of entry data: (start, length) spans of the buffer,
        each valid until the next step (which may refill the buffer)."""
        while n:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._fill(1):
                    raise CorruptLayer("read tar: stream truncated in entry data")
                continue
            k = min(avail, n)
            start = self._pos
            self._pos += k
            n -= k
            yield start, k

    def _skip(self, n: int) -> None:
        for _span in self._spans(n):
            pass

    def _finish_entry(self) -> None:
        n = self._left + self._pad
        if n:
            if len(self._buf) - self._pos >= n:
                self._pos += n
            else:
                self._skip(n)
            self._left = self._pad = 0

    # -- data --------------------------------------------------------------------
    def read_data(self, limit: int = _MAX_META) -> bytes:
        """Return the rest of the current entry's data (at most ``limit`` bytes)."""
        if self._left > limit:
            raise CorruptLayer(f"read tar: entry data larger than {limit} bytes")
        out = self._take(self._left, "entry data")
        self._left = 0
        return out

    def copy_to_fd(self, fd: int, n: int | None = None) -> None:
        """Write the next ``n`` (default: all remaining) data bytes to ``fd``."""
        n = self._left if n is None else n
        if n > self._left:
            raise CorruptLayer("read tar: sparse map exceeds entry data")
        self._left -= n
        write = os.write
        for start, k in self._spans(n):
            view = memoryview(self._buf)[start:start + k]
            while view:
                w = write(fd, view)
                view = view[w:]

    def write_sparse(self, fd: int, entry: TarEntry) -> None:
        """Write a sparse member's segments at their offsets; holes stay holes."""
        assert entry.sparse is not None
        os.ftruncate(fd, entry.realsize)
        for offset, length in entry.sparse:
            if offset + length > entry.realsize:
                raise CorruptLayer("read tar: sparse segment beyond the file size")
            if length:
                os.lseek(fd, offset, os.SEEK_SET)
                self.copy_to_fd(fd, length)

    # -- headers -----------------------------------------------------------------
    def _header_block(self) -> bytes | None:
        """Return the next header block, or None at the end of the archive."""
        if not self._fill(BLOCK):
            if len(self._buf) - self._pos:
                raise CorruptLayer("read tar: stream truncated in a header")
            return None  # tolerated: stream ends without end-of-archive blocks
        blk = self._buf[self._pos:self._pos + BLOCK]
        self._pos += BLOCK
        if blk[0] == 0 and blk.count(0) == BLOCK:
            self.ended_cleanly = True
            return None
        if not _checksum_ok(blk):
            what = "not a tar archive" if self.entries == 0 else "bad header checksum"
            raise CorruptLayer(f"read tar: {what} (at entry {self.entries + 1})")
        return blk

    def next(self) -> TarEntry | None:
        """Return the next real entry (extended headers applied), or None at the end."""
        self._finish_entry()
        long_name: bytes | None = None
        long_link: bytes | None = None
        pax: list[tuple[bytes, bytes]] = []
        blk: bytes | None
        while True:
            pos = self._pos
            if len(self._buf) - pos >= BLOCK and self._buf[pos]:
                # fast path: a whole header in the buffer, not a zero block
                blk = self._buf[pos:pos + BLOCK]
                self._pos = pos + BLOCK
                if not _checksum_ok(blk):
                    what = "not a tar archive" if self.entries == 0 else "bad header checksum"
                    raise CorruptLayer(f"read tar: {what} (at entry {self.entries + 1})")
            else:
                blk = self._header_block()
            if blk is None:
                if long_name is not None or long_link is not None or pax:
                    raise CorruptLayer("read tar: extended header without an entry")
                return None
            tf = blk[156]
            size = _num(blk[124:136])
            if size < 0:
                raise CorruptLayer("read tar: negative entry size")
            self._left, self._pad = size, -size % BLOCK
            if tf in (0x4C, 0x4B):  # 'L' / 'K': GNU long name / link name
                data = _str(self.read_data())
                if tf == 0x4C:
                    long_name = data
                else:
                    long_link = data
                self._finish_entry()
                continue
            if tf in (0x78, 0x58):  # 'x' (and Solaris 'X'): PAX for the next entry
                pax.extend(parse_pax(self.read_data()))
                self._finish_entry()
                continue
            if tf == 0x67:  # 'g': PAX global header, applies to all later entries
                self._global.extend(kv for kv in parse_pax(self.read_data())
                                    if kv[0] not in _GLOBAL_SKIP)
                self._finish_entry()
                continue
            if tf == 0x56:  # 'V': volume label
                self._finish_entry()
                continue
            self.entries += 1
            return self._entry(blk, tf, size, long_name, long_link, pax)

    def _entry(self, blk: bytes, tf: int, size: int, long_name: bytes | None,
               long_link: bytes | None, pax: list[tuple[bytes, bytes]]) -> TarEntry:
        kind = _KINDS.get(tf)
        if kind is None:
            raise CorruptLayer(f"read tar: unsupported entry type {chr(tf)!r}")
        (name, mode, uid, gid, mtime, linkname, magic) = _HDR.unpack_from(blk)
        i = name.find(b"\0")
        if i >= 0:
            name = name[:i]
        if magic == b"ustar\0":
            prefix = _str(blk[345:476] if blk[508:512] == b"tar\0" else blk[345:500])
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        if tf == 0 and name.endswith(b"/"):
            kind = DIR  # v7 archives mark dirs by a trailing slash
        e = TarEntry(name, kind, _num(mode) & 0o7777, _num(uid), _num(gid), size,
                     _num(mtime) * 1_000_000_000,
                     long_link if long_link is not None else _str(linkname))
        if not (0 <= e.uid < _ID_LIMIT and 0 <= e.gid < _ID_LIMIT):
            raise CorruptLayer(f"read tar: {name!r}: uid/gid out of range")
        if kind in (CHR, BLK):
            e.devmajor, e.devminor = _num(blk[329:337]), _num(blk[337:345])
        if tf == 0x53:  # 'S': old GNU sparse
            self._gnu_sparse(blk, e)
        if self._global or pax:
            self._apply_pax(e, self._global + pax if self._global else pax)
        # Dirs, links, fifos and devices may still record data (GNU dumpdir 'D'
        # does): the caller ignores it and the next ``next()`` skips it.
        return e

    def _gnu_sparse(self, blk: bytes, e: TarEntry) -> None:
        nums: list[int] = []
        area, ext = blk[386:482], blk[482]
        e.realsize = _num(blk[483:495])
        while True:
            for i in range(0, len(area), 24):
                off, n = area[i:i + 12], area[i + 12:i + 24]
                if off.strip(b"\0") or n.strip(b"\0"):
                    nums += (_num(off), _num(n))
            if not ext:
                break
            if len(nums) > 2 * _MAX_SPARSE:
                raise CorruptLayer("read tar: sparse map too large")
            more = self._take(BLOCK, "a sparse header")
            area, ext = more[:504], more[504]
        e.sparse = _sparse_pairs(nums)

    def _apply_pax(self, e: TarEntry, records: list[tuple[bytes, bytes]]) -> None:
        sparse_nums: list[int] = []
        sparse_major = -1
        sparse_name: bytes | None = None
        for key, value in records:
            if key == b"mtime":
                e.mtime_ns = _pax_time(value)
            elif key == b"atime":
                e.atime_ns = _pax_time(value)
            elif key == b"ctime":
                continue  # cannot be set; GNU tar writes it for every entry
            elif key == b"path":
                e.name = value
            elif key == b"linkpath":
                e.linkname = value
            elif key == b"size":
                e.size = _pax_int(key, value)
                self._left, self._pad = e.size, -e.size % BLOCK
            elif key == b"uid":
                e.uid = _pax_id(key, value)
            elif key == b"gid":
                e.gid = _pax_id(key, value)
            elif key.startswith(_XATTR_SCHILY):
                if e.xattrs is None:
                    e.xattrs = {}
                e.xattrs[key[len(_XATTR_SCHILY):]] = value
            elif key.startswith(_XATTR_LIBARCHIVE):
                if e.xattrs is None:
                    e.xattrs = {}
                xname = urllib.parse.unquote_to_bytes(key[len(_XATTR_LIBARCHIVE):])
                try:
                    e.xattrs.setdefault(xname, base64.b64decode(value + b"=="))
                except ValueError:
                    raise CorruptLayer("read tar: bad LIBARCHIVE.xattr value") from None
            elif key.startswith(b"GNU.sparse."):
                sub = key[11:]
                if sub in (b"offset", b"numbytes"):  # 0.0: repeated pairs, in order
                    sparse_nums.append(_pax_int(key, value))
                    sparse_major = max(sparse_major, 0)
                elif sub == b"map":  # 0.1
                    try:
                        sparse_nums = [int(x) for x in value.split(b",")] if value else []
                    except ValueError:
                        raise CorruptLayer("read tar: bad GNU.sparse.map") from None
                    sparse_major = max(sparse_major, 0)
                elif sub in (b"size", b"realsize"):
                    e.realsize = _pax_int(key, value)
                elif sub == b"name":
                    sparse_name = value
                elif sub == b"major":
                    sparse_major = _pax_int(key, value)
        if sparse_name is not None:  # wins over `path` (the GNUSparseFile.N/ alias)
            e.name = sparse_name
        if sparse_major == 0:
            e.sparse = _sparse_pairs(sparse_nums)
        elif sparse_major == 1:
            e.sparse = self._sparse_map_in_data()
            e.size = self._left

    def _sparse_map_in_data(self) -> list[tuple[int, int]]:
        """PAX sparse 1.0: decimal map lines at the start of the data, block padded."""
        nums: list[int] = []
        count = -1
        used = 0
        line = b""
        while count < 0 or len(nums) < 2 * count:
            if self._left - used < BLOCK:
                raise CorruptLayer("read tar: truncated sparse 1.0 map")
            blk = self._take(BLOCK, "a sparse map")
            used += BLOCK
            for part in (line + blk).split(b"\n")[:-1] if b"\n" in blk else []:
                try:
                    v = int(part)
                except ValueError:
                    raise CorruptLayer("read tar: bad sparse 1.0 map") from None
                if count < 0:
                    count = v
                    if count > _MAX_SPARSE:
                        raise CorruptLayer("read tar: sparse map too large")
                else:
                    nums.append(v)
                if count >= 0 and len(nums) >= 2 * count:
                    break
            line = (line + blk).rsplit(b"\n", 1)[-1]
        self._left -= used
        return _sparse_pairs(nums[:2 * count])
