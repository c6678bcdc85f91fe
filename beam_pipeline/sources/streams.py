"""Byte streams: decompression with truncation detection, and line splitting (see the package doc)."""
from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Iterable
from typing import Iterator

from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from isal import isal_zlib

from beam_pipeline.sources.common import READ_CHUNK_BYTES


class CorruptStreamError(Exception):
  """The compressed stream of a file is damaged or truncated."""


def new_decompressor(compression_type: str):
  """Returns a fresh streaming decompressor, with `decompress`, `eof`, `unused_data`.

  gzip and deflate go through ISA-L (isal_zlib: zlib's interface and the same bytes out, 2.6x
  faster at inflating C4's shards here, a setup.py pin, so every worker reads alike).
  """
  if compression_type == CompressionTypes.GZIP:
    return isal_zlib.decompressobj(zlib.MAX_WBITS | 16)  # gzip header and trailer.
  if compression_type == CompressionTypes.DEFLATE:
    return isal_zlib.decompressobj()  # zlib-wrapped deflate, as Beam writes it.
  if compression_type == CompressionTypes.BZIP2:
    return bz2.BZ2Decompressor()
  if compression_type == CompressionTypes.LZMA:
    return lzma.LZMADecompressor()
  if compression_type == CompressionTypes.ZSTD:
    import zstandard  # pylint: disable=g-import-not-at-top  # Optional, as in Beam.
    # Same window cap as Beam's CompressedFile, for the same memory reason.
    return zstandard.ZstdDecompressor(
        max_window_size=2147483648).decompressobj()
  raise ValueError(f"unsupported compression type {compression_type!r}")


# Compressed bytes inflated per call: 256 KiB in (about 1 MiB out) inflates 1.5x faster here
# than the 1 MiB reads (4 MiB out), whose output no longer fits the caches the line splitter
# reads it from.
INFLATE_PIECE_BYTES = 256 << 10


class _RawPieces:
  """The raw stream read READ_CHUNK_BYTES at a time, handed out in pieces of INFLATE_PIECE_BYTES
  at fixed offsets of the stream, whatever sizes its reads return: on a corrupt stream, what
  inflates before the damage is found depends on where the pieces end, and so depends on the
  file alone."""

  def __init__(self, raw):
    self._raw = raw
    self._buffer = b""
    self._view = memoryview(self._buffer)
    self._offset = 0
    self._at_end = False

  def read(self) -> memoryview:
    """The next piece: INFLATE_PIECE_BYTES bytes, fewer only at the end; empty after it."""
    if len(self._buffer) - self._offset < INFLATE_PIECE_BYTES and not self._at_end:
      parts = [self._buffer[self._offset:]]
      held = len(parts[0])
      while held < INFLATE_PIECE_BYTES:
        data = self._raw.read(READ_CHUNK_BYTES)
        if not data:
          self._at_end = True
          break
        parts.append(data)
        held += len(data)
      self._buffer = b"".join(parts)
      self._view = memoryview(self._buffer)
      self._offset = 0
    piece = self._view[self._offset:self._offset + INFLATE_PIECE_BYTES]
    self._offset += len(piece)
    return piece


def iter_decompressed(raw, compression_type: str) -> Iterator[bytes]:
  """Yields the decompressed content of the raw stream `raw`, chunk by chunk.

  Raises:
    CorruptStreamError: the stream fails to decompress, or ends before the
      end-of-stream marker of its last member. Everything decompressed before
      that has been yielded.
  """
  if compression_type == CompressionTypes.UNCOMPRESSED:
    while chunk := raw.read(READ_CHUNK_BYTES):
      yield chunk
    return
  decompressor = new_decompressor(compression_type)
  pieces = _RawPieces(raw)
  consumed_any = False
  while True:
    if decompressor.eof:
      # A member ended; what follows, if anything, is another member.
      buf = decompressor.unused_data or pieces.read()
      if not buf:
        return
      decompressor = new_decompressor(compression_type)
    else:
      buf = pieces.read()
      if not buf:
        if not consumed_any:
          # Python's gzip reads a zero-byte file as empty, but no compressor writes one (an
          # empty gzip stream is 20 bytes): it is a file truncated to nothing.
          raise CorruptStreamError(
              f"zero-byte {compression_type} file: not a valid compressed stream "
              "(truncated to nothing)")
        raise CorruptStreamError(
            "compressed stream ended before its end-of-stream marker "
            "(truncated file)")
    consumed_any = True
    try:
      out = decompressor.decompress(buf)
    except MemoryError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # zlib.error, OSError (bz2), LZMAError, ZstdError, EOFError: all mean
      # the bytes are not a valid stream. Filesystem I/O errors are raised by
      # raw.read above, outside this try, so they still reach the runner.
      raise CorruptStreamError(f"{type(e).__name__}: {e}") from e
    if out:
      yield out


# The most bytes of whole lines LineSplitter.iter_blocks hands on at once (unless one line is
# longer): what a scanner allocates per block grows with its lines (72 bytes each).
BLOCK_BYTES = 256 << 10


class LineSplitter:
  """Splits byte chunks into lines; remembers where it is for error reports.

  Attributes:
    line_no: 1-based number of the last line yielded (0 before the first).
  """

  def __init__(self):
    self.line_no = 0
    self._pending: list[bytes] = []

  def pending_bytes(self) -> bytes:
    """Bytes of the current, not yet terminated, line."""
    return b"".join(self._pending)

  def _finish(self, line: bytes) -> tuple[int, bytes]:
    self.line_no += 1
    if line.endswith(b"\r"):
      line = line[:-1]
    return self.line_no, line

  def iter_lines(self, chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Yields (1-based line number, line bytes without terminator)."""
    for chunk in chunks:
      if not chunk:
        continue  # no bytes, no line (a pending b"" would read as one)
      if b"\n" not in chunk:
        # Keep partial lines as a list, so a long line costs O(n), not O(n^2).
        self._pending.append(chunk)
        continue
      parts = chunk.split(b"\n")
      self._pending.append(parts[0])
      first = b"".join(self._pending)
      self._pending = [parts[-1]] if parts[-1] else []
      yield self._finish(first)
      for part in parts[1:-1]:
        yield self._finish(part)
    if self._pending:
      last = b"".join(self._pending)
      self._pending = []
      yield self._finish(last)

  def iter_blocks(self, chunks: Iterable[bytes],
                  block_bytes: int = BLOCK_BYTES) -> Iterator[bytes | memoryview]:
    """Yields the chunks' bytes as blocks of whole lines: each block ends with b"\\n" but for
    the last line of the stream, which may have none; no line is split between two blocks, and
    a block holds more than `block_bytes` only when one line does (a chunk can inflate to
    hundreds of MB). The caller numbers the lines: it adds each block's lines to `line_no`, so
    that `pending_bytes` and `line_no` describe the first line not yet read in full when the
    chunks fail."""
    for chunk in chunks:
      if not chunk:
        continue
      cut = chunk.rfind(b"\n") + 1
      if not cut:
        self._pending.append(chunk)
        continue
      start = 0
      if self._pending:  # the line begun in earlier chunks, alone: it may be long
        start = chunk.find(b"\n") + 1
        self._pending.append(memoryview(chunk)[:start])
        yield b"".join(self._pending)
      view = memoryview(chunk)
      while start < cut:
        end = cut
        if end - start > block_bytes:
          end = chunk.rfind(b"\n", start, start + block_bytes) + 1
          if end <= start:  # one line longer than a block
            end = chunk.find(b"\n", start) + 1
        yield view[start:end] if end - start < len(chunk) else chunk
        start = end
      self._pending = [chunk[cut:]] if cut < len(chunk) else []
    if self._pending:
      last = b"".join(self._pending)
      self._pending = []
      yield last


def open_raw(readable_file: fileio.ReadableFile):
  # UNCOMPRESSED: we want the raw bytes and decompress them ourselves.
  return readable_file.open(mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED)
