"""Write: every output, atomically and never over an input: label volumes, DICOM SEG, QC pictures,
the batch summary and page."""
