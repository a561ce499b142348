"""Preprocess: the inputs of a case onto the network's working grid and back (``transform.preprocess``),
with registration, skull stripping, coverage checks and normalisation."""
