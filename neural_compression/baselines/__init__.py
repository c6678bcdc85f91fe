"""The paper's non-neural baselines behind the Compressor interface: GZip, Bytes, SentencePiece."""
