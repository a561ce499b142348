"""Recipes: reproducible training of the shipped models (``demo``: the synthetic demo model;
``brats_glioma``: the real-data models, cross-validated folds included, with their variants in
``brats_glioma_variants``)."""
