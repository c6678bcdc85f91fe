"""The shard writer's TFRecord framing: Beam's (and TensorFlow's) bytes, hashed as written."""
import hashlib
import io
import random

import pytest
from apache_beam.io import tfrecordio

from beam_pipeline import write


class _BeamFile:
  """A file that Beam's own write_record writes to, hashed."""

  def __init__(self):
    self.f = io.BytesIO()
    self.sha256 = hashlib.sha256()

  def write(self, data):
    self.f.write(data)
    self.sha256.update(data)


@pytest.mark.parametrize("seed", range(3))
def test_records_are_framed_as_beams_tfrecord_writer_frames_them(seed):
  rng = random.Random(seed)
  # Empty and one-byte records, lengths around varint and batch edges, records bigger than a
  # batch (1 MiB) and a run of small ones that fills several batches.
  records = [b"", b"\x00", rng.randbytes(127), rng.randbytes(128), rng.randbytes(1 << 20),
             rng.randbytes((1 << 20) + 1)] + [rng.randbytes(rng.randrange(0, 9000))
                                              for _ in range(400)]
  # Records of one length, as a job's are (its writer keeps each length's header).
  records += [rng.randbytes(n) for n in (5, 5, 300, 300, 300, 127)]
  rng.shuffle(records)
  beam_file = _BeamFile()
  for record in records:
    tfrecordio._TFRecordUtil.write_record(beam_file, record)  # pylint: disable=protected-access
  ours = io.BytesIO()
  writer = write._TFRecordWriter(ours)  # pylint: disable=protected-access
  for record in records:
    writer.write(record)
  writer.flush()
  assert ours.getvalue() == beam_file.f.getvalue()
  assert writer.bytes == len(ours.getvalue())
  assert writer.sha256.hexdigest() == beam_file.sha256.hexdigest()


def test_tensorflow_reads_back_every_record(tmp_path):
  import tensorflow as tf
  rng = random.Random(5)
  records = [rng.randbytes(rng.randrange(0, 5000)) for _ in range(300)]
  path = tmp_path / "shard.tfrecord"
  with open(path, "wb") as f:
    writer = write._TFRecordWriter(f)  # pylint: disable=protected-access
    for record in records:
      writer.write(record)
    writer.flush()
  read = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
  assert read == records
  assert writer.sha256.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
