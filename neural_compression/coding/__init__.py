"""Model-agnostic exact coding.

  arithmetic_coder    the reference arithmetic coder over integer CDFs (readable; the test oracle)
  equal_info_windows  equal-info windows and their closing rules, on the reference coder
  cdf_models          CdfModel, the interface a model declares, and integer CDF helpers
  bit_tokens          bitstreams <-> N-bit tokens
  compiled_coder      the reference's compiled twin (numba): the same codes, bit for bit
  batch_coder         drivers of the compiled coder for many rows at once, under any model
"""
