"""The compiled loop behind examples.run_symbols (kept apart so that importing examples, e.g. for
the job's flags, does not import numba)."""
from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def widen_documents(joined, lengths, out, eos) -> None:
  """Writes documents (their bytes back to back in `joined`, `lengths[d]` bytes each) into `out`
  as symbols, each document followed by `eos`; `out` holds sum(lengths) + len(lengths) symbols."""
  position = 0
  source = 0
  for d in range(len(lengths)):
    n = lengths[d]
    # Views and a loop from 0: indexing at offsets checks every index for wraparound (4x slower).
    document = joined[source:source + n]
    target = out[position:position + n]
    for i in range(n):
      target[i] = document[i]
    out[position + n] = eos
    position += n + 1
    source += n
