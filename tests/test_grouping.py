"""GroupSorted: Beam's shuffle and spill files give the same sorted groups; spill files are
checked frame by frame."""
import pathlib
import random
import struct

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that
from apache_beam.testing.util import equal_to

from beam_pipeline import grouping


def _keyed_values(count: int, seed: int) -> list:
  """(key, (sort_key, value)) with repeated sort keys, values of varied size (bytes under
  'train' keys, str under 'validation' keys: one key's values must compare)."""
  rng = random.Random(seed)
  out = []
  for i in range(count):
    key = ("train" if i % 3 else "validation", rng.randrange(5))
    sort_key = rng.randbytes(rng.choice([1, 2, 8]))  # short keys: many ties
    value = rng.randbytes(rng.randrange(0, 3000)) if i % 3 else "é" * rng.randrange(50)
    out.append((key, (sort_key, value)))
  return out


def _grouped(elements, transform, runner_args=()):
  with test_pipeline.TestPipeline(argv=list(runner_args)) as p:
    groups = (p | beam.Create(elements) | transform
              | beam.MapTuple(lambda key, values: (key, list(values))))
    expected = {}
    for key, item in elements:
      expected.setdefault(key, []).append(item)
    assert_that(groups, equal_to([(k, sorted(v)) for k, v in expected.items()]))


@pytest.mark.parametrize("buffer_bytes", [1, 5000, grouping.DEFAULT_BUFFER_BYTES])
def test_spill_files_give_the_groups_beam_gives_each_sorted(tmp_path, buffer_bytes):
  elements = _keyed_values(400, seed=buffer_bytes)
  _grouped(elements, grouping.GroupSorted("files", str(tmp_path / "spill"), buffer_bytes))
  _grouped(elements, grouping.GroupSorted("beam"))
  spilled = list((tmp_path / "spill").glob("*.spill"))
  # buffer 1 byte: one file per value; the default: one file per bundle.
  assert len(spilled) >= (400 if buffer_bytes == 1 else 1)


def test_spill_files_with_two_worker_processes(tmp_path):
  elements = _keyed_values(200, seed=3)
  _grouped(elements, grouping.GroupSorted("files", str(tmp_path / "spill"), 2000),
           ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])


class _KeyEveryOther(beam.DoFn):
  """A keying DoFn as the job's: some elements make no pair, others two; counts its bundles."""

  def setup(self):
    self.bundles = self.finished = 0

  def start_bundle(self):
    self.bundles += 1

  def process(self, element):
    i, payload = element
    if i % 3 == 0:
      return
    yield ("k", i % 4), (payload[:2], payload)
    if i % 5 == 0:
      yield ("twice", 0), (payload[:1], payload + b"!")

  def finish_bundle(self):
    self.finished += 1


@pytest.mark.parametrize("shuffle", ["beam", "files"])
def test_keyed_by_groups_what_the_keying_dofn_makes(tmp_path, shuffle):
  rng = random.Random(5)
  elements = [(i, rng.randbytes(rng.randrange(1, 40))) for i in range(300)]
  keying = _KeyEveryOther()
  keyed = [kv for element in elements for kv in (keying.process(element) or ())]
  assert len(keyed) > 200 and len({k for k, _ in keyed}) == 5
  with test_pipeline.TestPipeline() as p:
    groups = (p | beam.Create(elements)
              | grouping.GroupSorted(shuffle, str(tmp_path / "spill"), 500).keyed_by(keying)
              | beam.MapTuple(lambda key, values: (key, list(values))))
    expected = {}
    for key, item in keyed:
      expected.setdefault(key, []).append(item)
    assert_that(groups, equal_to([(k, sorted(v)) for k, v in expected.items()]))


def test_a_fused_keying_dofn_lives_and_dies_with_the_spill_step(tmp_path):
  keying = _KeyEveryOther()
  fn = grouping._SpillFn(str(tmp_path), 1 << 20, keying)  # pylint: disable=protected-access
  fn.setup()
  for _ in range(2):
    fn.start_bundle()
    out = [kv for i in range(10) for kv in fn.process((i, b"abc"))]
    out += [wv.value for wv in fn.finish_bundle()]
    assert {key for key, _ in out} == {("k", 1), ("k", 2), ("k", 0), ("k", 3), ("twice", 0)}
  assert (keying.bundles, keying.finished) == (2, 2)


def test_a_keying_dofn_that_outputs_at_finish_bundle_is_refused(tmp_path):
  class Leaky(_KeyEveryOther):
    def finish_bundle(self):
      yield "lost"
  fn = grouping._SpillFn(str(tmp_path), 1 << 20, Leaky())  # pylint: disable=protected-access
  fn.setup()
  fn.start_bundle()
  with pytest.raises(ValueError, match="finish_bundle must output nothing"):
    list(fn.finish_bundle())


def _spill(tmp_path, items, buffer_bytes=1 << 20):
  """Runs the spill DoFn by hand on one bundle; returns its (key, Segment)s."""
  fn = grouping._SpillFn(str(tmp_path), buffer_bytes)  # pylint: disable=protected-access
  fn.setup()
  fn.start_bundle()
  out = [kv for item in items for kv in fn.process(item)]
  return out + [wv.value for wv in fn.finish_bundle()]


def test_a_segment_reads_back_sorted_in_any_chunk_size(tmp_path):
  items = [("k", (bytes([i % 7]), b"x" * i)) for i in range(60)]
  [(key, segment)] = _spill(tmp_path, items)
  for chunk in (1, 7, 100, 1 << 20):
    assert list(grouping.read_segment(segment, chunk)) == sorted(v for _, v in items), chunk
  assert segment.count == 60 and segment.length == pathlib.Path(segment.path).stat().st_size


@pytest.mark.parametrize("damage", ["flip_payload_byte", "flip_length_byte", "truncate",
                                    "count_too_high", "count_too_low"])
def test_a_damaged_spill_file_is_refused_never_read_as_values(tmp_path, damage):
  import dataclasses
  [(_, segment)] = _spill(tmp_path, [("k", (b"%03d" % i, b"v" * 40)) for i in range(20)])
  path = pathlib.Path(segment.path)
  data = bytearray(path.read_bytes())
  if damage == "flip_payload_byte":
    data[len(data) // 2] ^= 0x10
  elif damage == "flip_length_byte":
    data[2] ^= 0x01  # the first frame's length field
  elif damage == "truncate":
    data = data[:-5]
  path.write_bytes(bytes(data))
  if damage == "count_too_high":
    segment = dataclasses.replace(segment, count=segment.count + 1)
  elif damage == "count_too_low":
    segment = dataclasses.replace(segment, count=segment.count - 1)
  with pytest.raises(grouping.SpillCorruptError):
    list(grouping.read_segment(segment, 64))


def test_merged_segments_stream_in_order_and_pickle_as_their_segments(tmp_path):
  import pickle
  rng = random.Random(5)
  segments = []
  for bundle in range(4):
    items = [("k", (rng.randbytes(4), b"%d" % bundle)) for _ in range(50)]
    segments += [s for _, s in _spill(tmp_path / str(bundle), items, buffer_bytes=400)]
  merged = grouping.MergedSegments(segments, buffer_bytes=1000)
  values = list(merged)
  assert len(values) == 200 and values == sorted(values)
  assert list(pickle.loads(pickle.dumps(merged))) == values  # re-iterable after pickling


def test_a_key_with_more_segments_than_the_fan_in_merges_in_passes(tmp_path, monkeypatch):
  import heapq
  rng = random.Random(9)
  items = [("k", (rng.randbytes(3), rng.randbytes(rng.randrange(1, 40)))) for _ in range(300)]
  segments = [s for _, s in _spill(tmp_path, items, buffer_bytes=300)]
  arities = []
  real_merge = heapq.merge
  monkeypatch.setattr(grouping.heapq, "merge",
                      lambda *its, **kw: arities.append(len(its)) or real_merge(*its, **kw))
  merged = grouping.MergedSegments(segments, buffer_bytes=3 * (64 << 10))
  assert merged.fan_in == 3 and len(segments) > 3 ** 3  # at least four passes
  values = list(merged)
  assert values == sorted(v for _, v in items)
  assert max(arities) == 3  # never more segments read ahead at once than the fan-in
  assert list(tmp_path.glob("*.merged.spill"))  # the passes wrote beside the spill files
  assert list(merged) == values  # re-iterable


def test_a_damaged_segment_is_refused_inside_a_merge_pass(tmp_path):
  items = [("k", (b"%03d" % i, b"v" * 40)) for i in range(40)]
  segments = [s for _, s in _spill(tmp_path, items, buffer_bytes=200)]
  path = pathlib.Path(segments[-1].path)
  data = bytearray(path.read_bytes())
  data[-3] ^= 0x01
  path.write_bytes(bytes(data))
  with pytest.raises(grouping.SpillCorruptError):
    list(grouping.MergedSegments(segments, buffer_bytes=1))


@pytest.mark.parametrize("runner, endpoint, resolved", [
    (None, None, "files"), ("DirectRunner", None, "files"),
    ("apache_beam.runners.direct.direct_runner.DirectRunner", None, "files"),
    ("PortableRunner", "embed", "files"), ("PortableRunner", "localhost:8099", "beam"),
    ("DataflowRunner", None, "beam"), ("FlinkRunner", None, "beam"), ("SparkRunner", None, "beam"),
])
def test_auto_spills_only_on_the_local_runners(runner, endpoint, resolved):
  assert grouping.resolve_shuffle("auto", runner, endpoint) == resolved
  assert grouping.resolve_shuffle("beam", runner, endpoint) == "beam"
  with pytest.raises(ValueError, match="--shuffle"):
    grouping.resolve_shuffle("disk", runner, endpoint)


def test_files_mode_keeps_apart_the_keys_group_by_key_keeps_apart(tmp_path):
  # 1, 1.0 and True are == in Python but three keys to Beam (their encodings differ); so are
  # the job's kind of key, tuples, holding them (the spill keys tuples of str, int and bytes by
  # themselves, any other key by its pickle), nested or not. Every key comes twice.
  elements = [(1, (b"a", b"x")), (1.0, (b"b", b"y")), (True, (b"c", b"z")),
              (("k", 1), (b"d", b"x")), (("k", 1.0), (b"e", b"y")), (("k", True), (b"f", b"z")),
              (("k", (1,)), (b"g", b"x")), (("k", (True,)), (b"h", b"y")),
              (("k", b"1"), (b"i", b"x")), (("k", "1"), (b"j", b"y")), ((), (b"k", b"z"))]
  elements += [(key, (sort_key + b"2", value)) for key, (sort_key, value) in elements]
  expected = {}
  for key, item in elements:
    expected.setdefault(repr(key), []).append(item)
  for transform in (grouping.GroupSorted("beam"),
                    grouping.GroupSorted("files", str(tmp_path / "spill"))):
    with test_pipeline.TestPipeline() as p:
      groups = (p | beam.Create(elements) | transform
                | beam.MapTuple(lambda key, values: (repr(key), list(values))))
      assert_that(groups, equal_to([(k, sorted(v)) for k, v in expected.items()]))


class _Bytes(bytes):
  """A bytes subclass: must come back as itself, so it takes the pickled payload."""


_ITEMS = [
    (b"", b""), (b"\x00\xff" * 40, b"doc" * 1000), ("", b""), ("train-000001/00000", b"\x0a\x00"),
    ("\udcff lone surrogate \u00e9", b"x"), ("line", bytearray(b"not bytes")), (3, b"int key"),
    ((b"a", 1), {"dict": "value"}), (_Bytes(b"subclass"), b"v"), (b"k", _Bytes(b"subclass"))]


@pytest.mark.parametrize("item", _ITEMS)
def test_spill_payloads_give_back_exactly_what_was_spilled(item):
  payload = b"".join(grouping.payload_parts(*item))
  for form in (payload, memoryview(b"pad" + payload)[3:]):
    back = grouping.decode_payload(form)
    assert back == item and [type(x) for x in back] == [type(x) for x in item]
  raw = type(item[1]) is bytes and type(item[0]) in (bytes, str)
  assert payload[:1] == ((b"B" if type(item[0]) is bytes else b"S") if raw else b"P")


def _frames_file(tmp_path, payloads) -> grouping.Segment:
  """A spill file of one frame per payload (valid CRCs), as one segment."""
  from isal import isal_zlib
  data = b"".join(struct.pack(">II", len(p), isal_zlib.crc32(p)) + p for p in payloads)
  path = tmp_path / "frames.spill"
  path.write_bytes(data)
  return grouping.Segment(str(path), 0, len(data), len(payloads))


def test_a_segment_reads_back_exactly_what_was_spilled(tmp_path):
  # read_segment decodes raw payloads itself (decode_payload the rest): same items, same types.
  segment = _frames_file(tmp_path, [b"".join(grouping.payload_parts(*item)) for item in _ITEMS])
  for chunk in (1, 64, 1 << 20):
    back = list(grouping.read_segment(segment, chunk))
    assert back == _ITEMS
    assert [[type(x) for x in item] for item in back] == [[type(x) for x in i] for i in _ITEMS]


_BAD_PAYLOADS = [b"X" + b"\x00" * 8, b"B\x00\x00\x00\x09short", b"S\x00\x00\x00\x09short",
                 b"B\x00\x00", b"S", b"B\xff\xff\xff\xffx"]


@pytest.mark.parametrize("payload", _BAD_PAYLOADS)
def test_a_payload_that_cannot_be_what_was_written_is_refused(payload, tmp_path):
  with pytest.raises(grouping.SpillCorruptError):
    grouping.decode_payload(payload)
  with pytest.raises(grouping.SpillCorruptError):  # in a frame whose CRC holds
    list(grouping.read_segment(_frames_file(tmp_path, [payload])))


def test_short_writes_resume_where_the_kernel_stopped(tmp_path, monkeypatch):
  # os.writev may write part of what it is given (a signal, a nearly full disk): the frames
  # must still land whole and in order, whatever the kernel takes per call.
  import os
  real_writev = os.writev
  calls = []

  def short_writev(fd, parts):
    budget = 1 + len(calls) % 37  # 1 to 37 bytes per call, cutting headers and values alike
    taken = []
    for part in parts:
      part = bytes(part)[:budget - sum(map(len, taken))]
      taken.append(part)
      if sum(map(len, taken)) >= budget:
        break
    calls.append(sum(map(len, taken)))
    return real_writev(fd, taken)

  monkeypatch.setattr(grouping.os, "writev", short_writev)
  items = [("k", (b"%03d" % i, bytes([i]) * (i * 7))) for i in range(50)]
  items.append(("k", (b"p", ["pickled"])))
  [(_, segment)] = _spill(tmp_path, items)
  assert len(calls) > 100 and max(calls) <= 37  # the writes really were short
  assert list(grouping.read_segment(segment, 64)) == sorted(item for _, item in items)
  assert segment.length == pathlib.Path(segment.path).stat().st_size


def test_frames_to_a_file_without_a_descriptor_are_joined_into_writes(tmp_path):
  # Remote filesystems (gs://) give a file object with no descriptor: the parts are joined.
  import io
  items = [(b"%02d" % i, b"x" * i) for i in range(30)]
  buffer = io.BytesIO()
  segment = grouping._write_segment(  # pylint: disable=protected-access
      buffer, "mem", 0, items)
  path = tmp_path / "spill"
  path.write_bytes(buffer.getvalue())
  segment = grouping.Segment(str(path), 0, segment.length, segment.count)
  assert list(grouping.read_segment(segment, 7)) == items


def test_a_zeroed_frame_is_refused_as_corrupt(tmp_path):
  # Zeroed blocks (a crash) read as frames of 0 bytes whose CRC-32 (of nothing) is 0.
  [(_, segment)] = _spill(tmp_path, [("k", (b"k", b"v"))])
  with open(segment.path, "ab") as f:
    f.write(b"\0" * 8)
  import dataclasses
  damaged = dataclasses.replace(segment, length=segment.length + 8, count=2)
  for chunk in (1, 64):
    with pytest.raises(grouping.SpillCorruptError, match="empty"):
      list(grouping.read_segment(damaged, chunk))
  with pytest.raises(grouping.SpillCorruptError):
    grouping.decode_payload(b"")


def test_a_merge_pass_writes_big_values_as_it_goes(tmp_path, monkeypatch):
  # The values a merge pass writes are copies: they are written once about a MiB is held, not
  # gathered by hundreds (a pass over 1 MiB values would have held 340 of them).
  import os
  held = []
  real_writev = os.writev
  monkeypatch.setattr(grouping.os, "writev",
                      lambda fd, parts: held.append(sum(map(len, parts))) or real_writev(fd, parts))
  items = [("k", (b"%03d" % i, bytes([i]) * (300 << 10))) for i in range(24)]
  segments = [s for _, s in _spill(tmp_path, items, buffer_bytes=1)]
  held.clear()
  merged = grouping.MergedSegments(segments, buffer_bytes=2 * (64 << 10))  # fan-in 2: passes
  assert [v for _, v in merged] == [v for _, (_, v) in items]
  assert held and max(held) <= (1 << 20) + (300 << 10) + 100


def test_items_sort_as_sorted_sorts_them_ties_included():
  from hypothesis import given, settings, strategies as st

  @settings(max_examples=300, deadline=None)
  @given(st.lists(st.tuples(st.one_of(st.binary(max_size=2), st.sampled_from([1, 1.0, True, 0])),
                            st.binary(max_size=3)), max_size=40))
  def check(items):
    items = [item for item in items if type(item[0]) is bytes] or [
        item for item in items if type(item[0]) is not bytes]  # keys that compare
    got = list(items)
    grouping._sort_items(got)  # pylint: disable=protected-access
    assert got == sorted(items) and [type(k) for k, _ in got] == [type(k) for k, _ in sorted(items)]

  check()
