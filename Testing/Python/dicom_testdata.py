"""DICOM series for the tests, written by SimpleITK (GDCM) from volumes: MR Image Storage, one file
per slice, with Image Position and Orientation (Patient), Study, Series, Frame of Reference and SOP
Instance UIDs; patient and study fields removed afterwards with pydicom, as de-identification
would leave them."""
from __future__ import annotations

import os
import uuid
from typing import List, Optional

import numpy as np
import pydicom
import SimpleITK as sitk

DEIDENTIFIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "AccessionNumber", "ReferringPhysicianName", "StudyID")


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def write_series(img: sitk.Image, folder: str, description: str, study_uid: str, frame_uid: str,
                 series_number: int = 1, series_uid: Optional[str] = None, prefix: str = "IM") -> List[str]:
    """``img`` (integer valued) as one DICOM series in ``folder``; its files in slice order."""
    os.makedirs(folder, exist_ok=True)
    img = sitk.Cast(img, sitk.sitkInt16)
    series_uid = series_uid or new_uid()
    d = img.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        tags = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0008|0018": new_uid(),
                "0020|000d": study_uid, "0020|000e": series_uid, "0020|0052": frame_uid,
                "0008|103e": description, "0020|0011": str(series_number), "0020|0013": str(k + 1),
                "0020|0037": "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
                "0020|0032": "\\".join(f"{v:.10g}" for v in img.TransformIndexToPhysicalPoint((0, 0, k))),
                "0018|0050": f"{img.GetSpacing()[2]:g}", "0018|0088": f"{img.GetSpacing()[2]:g}"}
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        path = os.path.join(folder, f"{prefix}{k:04d}.dcm")
        writer.SetFileName(path)
        writer.Execute(s)
        ds = pydicom.dcmread(path)
        for keyword in DEIDENTIFIED:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
        files.append(path)
    return files


def small_sample(sample_dir: str, case_id: str) -> dict:
    """The sample case cut to its head's box and taken to 2 mm by keeping every second voxel (values
    and geometry exact): role -> image."""
    images = {r: sitk.ReadImage(os.path.join(sample_dir, f"{case_id}_{r}.nii.gz"))
              for r in ("t1", "t1ce", "t2", "flair", "seg")}
    nonzero = np.any([sitk.GetArrayViewFromImage(images[r]) != 0 for r in ("t1", "t1ce", "t2", "flair")], axis=0)
    lo = [max(int(i.min()) - 6, 0) for i in np.nonzero(nonzero)]
    hi = [int(i.max()) + 7 for i in np.nonzero(nonzero)]
    out = {}
    for role, img in images.items():
        arr = sitk.GetArrayFromImage(img)[lo[0]:hi[0]:2, lo[1]:hi[1]:2, lo[2]:hi[2]:2]
        small = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        small.SetSpacing([2.0 * s for s in img.GetSpacing()])
        small.SetOrigin(img.TransformIndexToPhysicalPoint((lo[2], lo[1], lo[0])))
        small.SetDirection(img.GetDirection())
        out[role] = small
    return out
