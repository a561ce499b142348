"""Read: volumes (NIfTI, NRRD, MetaImage) and DICOM series, and the files of a case found by role."""
