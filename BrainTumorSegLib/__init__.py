"""BrainTumorSegLib: brain tumor segmentation from T1, T1ce, T2 and FLAIR MRI.

Pure Python and PyTorch; never imports Slicer. Modules, one job each:

* ``imageio``: reading and atomic writing of NIfTI, NRRD and MetaImage volumes
* ``cases``: finding the files of a case by role (BraTS 2021 and 2023 names)
* ``labels``: label schemes and the WT/TC/ET regions
* ``preprocessing``: the reversible transform to the network grid and back
* ``postprocessing``: switchable clean-up of predicted labels
* ``metrics`` and ``evaluation``: BraTS metrics and ``braintumorseg evaluate``
* ``phantom``: synthetic BraTS-like cases
"""
__version__ = "0.1.0"
