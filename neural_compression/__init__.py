"""Runner-independent core of neural text compression (Lester et al., 2024).

Framework-free pieces shared by the Beam job (`beam_pipeline`) and the SeqIO vocabularies
(`seqio_tasks`): the symbol alphabet, the default corpus, the arithmetic coder, equal-info windows,
bit tokens, the baselines and M1 inference. Neither consumer imports the other.
"""
