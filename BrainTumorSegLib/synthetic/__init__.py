"""Synthetic cases: BraTS-like phantoms and clinical-like cases made from them (tests and the demo model)."""
