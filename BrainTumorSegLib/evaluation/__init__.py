"""Evaluation: BraTS metrics, scoring of label files (``braintumorseg evaluate``), and the grades and
folds of the shared real cases with per-grade summaries."""
