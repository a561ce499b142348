import gzip
import os
import re
import struct
import tempfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_image, rotation_direction
from hypothesis import given, settings
from hypothesis import strategies as st

from BrainTumorSegLib.errors import InputError
from BrainTumorSegLib.read import images as read_images
from BrainTumorSegLib.write import images as write_images

EXTS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]


@pytest.mark.parametrize("ext", EXTS)
def test_round_trip_keeps_geometry(tmp_path, ext):
    arr = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32) + 1
    img = make_image(arr, spacing=(0.9, 1.1, 3.0), origin=(-10.5, 20.25, 3.0),
                     direction=rotation_direction(20, axis=2))
    path = write_images.write_image(img, tmp_path / f"img{ext}")
    back = read_images.read_image(path)
    assert back.GetSize() == img.GetSize()
    assert np.allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-5)
    assert np.allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
    assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(back), arr)
    assert [f for f in os.listdir(tmp_path) if f.startswith(".")] == []  # no temporary left


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_write_labels_uint8_on_reference_grid(tmp_path, ext):
    ref = make_image(np.ones((4, 5, 6), np.float32), spacing=(1, 2, 3), origin=(1, 2, 3),
                     direction=rotation_direction(90, axis=0))
    labels = np.zeros((4, 5, 6), np.int64)
    labels[1, 2, 3] = 4
    out = write_images.write_labels(labels, ref, tmp_path / f"seg{ext}")
    back = sitk.ReadImage(out)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert read_images.same_grid(back, ref)
    assert np.array_equal(sitk.GetArrayFromImage(back), labels)


def test_write_labels_rejects_wrong_shape(tmp_path):
    ref = make_image(np.ones((4, 5, 6), np.float32))
    with pytest.raises(ValueError):
        write_images.write_labels(np.zeros((6, 5, 4)), ref, tmp_path / "x.nii.gz")


def test_refuses_to_overwrite_input(tmp_path):
    img = make_image(np.ones((3, 3, 3), np.float32))
    p = write_images.write_image(img, tmp_path / "in.nii.gz")
    before = open(p, "rb").read()
    with pytest.raises(InputError, match="is an input file"):
        write_images.write_image(img * 2, p, inputs=[str(tmp_path / "." / "in.nii.gz")])
    assert open(p, "rb").read() == before


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    img = make_image(np.ones((3, 3, 3), np.float32))
    real_write = sitk.WriteImage

    def crash(image, path, *a):
        real_write(image, path, *a)  # the temporary file exists, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(sitk, "WriteImage", crash)
    for ext in (".nii.gz", ".nhdr"):
        with pytest.raises(KeyboardInterrupt):
            write_images.write_image(img, tmp_path / f"out{ext}")
    assert os.listdir(tmp_path) == []


def test_writes_together_appear_all_at_once_or_not_at_all(tmp_path):
    """A case's files (labels, a detached-header image, a JSON report) stay temporary until the last
    is written; a failure or Ctrl-C among them leaves none, nor any temporary file."""
    from BrainTumorSegLib.write.atomic import together, write_json

    img = make_image(np.ones((3, 3, 3), np.float32))
    for fail in (KeyboardInterrupt, OSError):
        with pytest.raises(fail):
            with together():
                write_images.write_image(img, tmp_path / "labels.nii.gz")
                write_images.write_image(img, tmp_path / "mask.nhdr")
                assert os.listdir(tmp_path) != [] and not (tmp_path / "labels.nii.gz").exists()
                raise fail()
        assert os.listdir(tmp_path) == []
    with together():
        write_images.write_image(img, tmp_path / "labels.nii.gz")
        write_images.write_image(img, tmp_path / "mask.nhdr")
        write_json(tmp_path / "report.json", {"ok": 1})
        assert not (tmp_path / "report.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["labels.nii.gz", "mask.nhdr", "mask.raw.gz", "report.json"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nhdr"))), np.ones((3, 3, 3)))


def test_an_extension_in_upper_case_is_refused_where_itk_cannot_write_it(tmp_path):
    """ITK writes MetaImage and detached NRRD by lower-case extension: ``X.MHD`` was written as
    ``X.mhd`` beside it with an error naming a temporary folder, ``X.MHA`` as a header and a data
    file. NIfTI and attached NRRD are written by a rename and read by content: allowed."""
    img = make_image(np.arange(64, dtype=np.float32).reshape(4, 4, 4))
    for name in ("A.MHD", "a.Mha", "b.NHDR"):
        with pytest.raises(InputError, match=rf"{re.escape(name)}: has its extension in upper case, .* end it with "
                                             rf"{re.escape(name.lower()[1:])}$"):
            write_images.write_image(img, tmp_path / name)
    assert os.listdir(tmp_path) == []
    for name in ("B.NII.GZ", "c.NRRD"):
        write_images.write_image(img, tmp_path / name)
        assert np.array_equal(sitk.GetArrayFromImage(read_images.read_image(tmp_path / name)), sitk.GetArrayFromImage(img))
    assert sorted(os.listdir(tmp_path)) == ["B.NII.GZ", "c.NRRD"]


def test_damaged_gzip_nrrd_and_a_nan_origin_are_refused_naming_the_file(tmp_path):
    """Both were read with exit 0 before: gzip-encoded NRRD voxels with bytes zeroed in the middle
    (attached or in a detached data file) as garbage; a MetaImage's NaN origin was read as 0 and
    another sequence blamed ("does not overlap"), an Inf spacing said to be 0."""
    img = make_image(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32))
    for name, data in (("a.nrrd", "a.nrrd"), ("b.nhdr", "b.raw.gz")):
        sitk.WriteImage(img, str(tmp_path / name), True)
        assert read_images.read_image(tmp_path / name).GetSize() == (40, 40, 40)
        damaged = bytearray((tmp_path / data).read_bytes())
        middle = len(damaged) // 2
        damaged[middle:middle + 64] = bytes(64)
        (tmp_path / data).write_bytes(bytes(damaged))
        with pytest.raises(InputError, match=rf"{re.escape(data)}: is truncated or corrupt \(its gzip-compressed"):
            read_images.read_image(tmp_path / name)
    # valid layouts the check leaves alone: CRLF header lines, a byte after the gzip stream, a
    # detached header whose data files are numbered (checked by ITK itself)
    sitk.WriteImage(img, str(tmp_path / "ok.nrrd"), True)
    data = (tmp_path / "ok.nrrd").read_bytes()
    end = data.index(b"\n\n")
    (tmp_path / "crlf.nrrd").write_bytes(data[:end].replace(b"\n", b"\r\n") + b"\r\n\r\n" + data[end + 2:] + b"\n")
    assert read_images.read_image(tmp_path / "crlf.nrrd").GetSize() == (40, 40, 40)
    sitk.WriteImage(img, str(tmp_path / "d.nhdr"), True)
    (tmp_path / "d.raw.gz").rename(tmp_path / "d01.raw.gz")
    header = (tmp_path / "d.nhdr").read_text().replace("data file: d.raw.gz", "data file: d%02d.raw.gz 1 1 1 3")
    (tmp_path / "d.nhdr").write_text(header)
    assert read_images.read_image(tmp_path / "d.nhdr").GetSize() == (40, 40, 40)
    sitk.WriteImage(img, str(tmp_path / "c.mha"))
    for field, bad in ((b"Offset = 0 0 0", b"Offset = nan 0 0"), (b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 inf 1")):
        sitk.WriteImage(img, str(tmp_path / "c.mha"))  # MetaIO reads NaN and Inf as 0
        (tmp_path / "c.mha").write_bytes((tmp_path / "c.mha").read_bytes().replace(field, bad))
        with pytest.raises(InputError, match=rf"c\.mha: has an invalid {bad.split()[0].decode()} in its header "
                                             rf"\({bad.split(b'= ')[1].decode()}\); the volume cannot be placed"):
            read_images.read_image(tmp_path / "c.mha")


def test_output_folder_must_exist(tmp_path):
    img = make_image(np.ones((3, 3, 3), np.float32))
    with pytest.raises(InputError, match="output folder does not exist"):
        write_images.write_image(img, tmp_path / "nope" / "x.nii.gz")
    with pytest.raises(InputError, match="unsupported output type"):
        write_images.write_image(img, tmp_path / "x.png")


def test_grid_differences_are_written_as_a_reader_reads_geometry():
    a = make_image(np.zeros((155, 240, 240), np.uint8), (1.0, 1.0, 1.0), (0.0, -239.0, 0.0))
    b = make_image(np.zeros((3, 3, 3), np.uint8), (1.0, 1.0, 2.5), (100.0, -139.0, 70.0))
    assert read_images.grid_difference(a, b) == ("size 240x240x155 vs 3x3x3; spacing 1x1x1 vs 1x1x2.5; "
                                                 "origin (0, -239, 0) vs (100, -139, 70)")
    assert read_images.grid_difference(a, a) == "sub-tolerance differences"


# --- bad input: each gets a one-line message naming the file -------------------------------

def _write(tmp_path, name, arr, **kw):
    p = str(tmp_path / name)
    sitk.WriteImage(make_image(arr, **kw) if isinstance(arr, np.ndarray) else arr, p)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.nii\.gz: file not found"):
        read_images.read_image(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file(tmp_path, ext):
    # SimpleITK alone reads a truncated NIfTI without complaint, filling it with garbage.
    p = _write(tmp_path, f"t{ext}", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"t{re.escape(ext)}: (cannot be read|is truncated)"):
        read_images.read_image(p)


def test_garbage_file(tmp_path):
    p = tmp_path / "g.nrrd"
    p.write_bytes(b"this is not an image\n" * 10)
    with pytest.raises(InputError, match=r"g\.nrrd: cannot be read"):
        read_images.read_image(p)


def test_2d_and_4d_images(tmp_path):
    p2 = str(tmp_path / "two.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 5), np.float32)), p2)
    with pytest.raises(InputError, match=r"two\.nii\.gz: is a 2D image .* a 3D volume is expected"):
        read_images.read_image(p2)
    p4 = str(tmp_path / "four.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32))] * 2), p4)
    with pytest.raises(InputError, match=r"four\.nii\.gz: is a 4D image"):
        read_images.read_image(p4)
    p1 = _write(tmp_path, "slice.nii.gz", np.ones((1, 5, 5), np.float32))
    with pytest.raises(InputError, match=r"slice\.nii\.gz: spans only 5x5x1 mm \(5x5x1 voxels of 1x1x1 mm\); at least "
                                         r"4 voxels and 4 mm along every axis"):
        read_images.read_image(p1)


def test_one_value_everywhere_or_a_field_of_view_no_head_has_is_refused(tmp_path):
    """Not an image of a head: one value in every voxel (registration would divide by its range),
    a field of view longer than a head scan's (a slice thickness written wrongly: its 1 mm working
    grid would not fit in memory), a single slice; files and images handed in alike."""
    const = _write(tmp_path, "const.nii.gz", np.full((8, 8, 8), 5, np.int16))
    with pytest.raises(InputError, match=r"const\.nii\.gz: has the same value \(5\) in every voxel"):
        read_images.read_image(const)
    rng = np.random.default_rng(0)
    head = rng.random((8, 8, 8)).astype(np.float32)
    assert read_images.checked_volume(make_image(head, (1.0, 1.0, 45.0)), "t2").GetSize() == (8, 8, 8)  # 360 mm
    long = _write(tmp_path, "long.nii.gz", head, spacing=(1.0, 1.0, 60.0))
    with pytest.raises(InputError, match=r"long\.nii\.gz: spans 480 mm \(8x8x8 voxels of 1x1x60 mm\), more "
                                         r"than a head scan's 400 mm: check the voxel spacing in its header"):
        read_images.read_image(long)
    with pytest.raises(InputError, match=r"t1ce: spans only 8x1x8 mm \(8x1x8 voxels of 1x1x1 mm\); at least 4 voxels"):
        read_images.checked_volume(make_image(rng.random((8, 1, 8)).astype(np.float32)), "t1ce")
    with pytest.raises(InputError, match=r"flair: has the same value \(0\.5\) in every voxel"):
        read_images.checked_volume(make_image(np.full((8, 8, 8), 0.5, np.float32)), "flair")


def test_vector_image(tmp_path):
    p = str(tmp_path / "rgb.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4, 5, 3), np.float32), isVector=True), p)
    with pytest.raises(InputError, match="3 components per voxel"):
        read_images.read_image(p)


def test_all_zero_and_nonfinite(tmp_path):
    z = _write(tmp_path, "zero.nii.gz", np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError, match=r"zero\.nii\.gz: is all zero"):
        read_images.read_image(z)
    assert read_images.read_image(z, "label").GetSize() == (4, 4, 4)  # an empty seg is fine
    # ITK's NIfTI reader silently turns NaN/Inf into 0: files written by other tools must be caught.
    for bad, ext in [(np.nan, ".nii.gz"), (np.inf, ".nii"), (-np.inf, ".nrrd"), (np.nan, ".mha")]:
        a = np.ones((4, 4, 4), np.float32)
        a[1, 1, 1] = bad
        p = str(tmp_path / f"bad{ext}")
        if ext.startswith(".nii"):
            nib.save(nib.Nifti1Image(a, np.eye(4)), p)
        else:
            sitk.WriteImage(sitk.GetImageFromArray(a), p)
        with pytest.raises(InputError, match=rf"bad{re.escape(ext)}: contains NaN or Inf"):
            read_images.read_image(p)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_payload_checked_in_either_byte_order(tmp_path, order, ext):
    a = np.arange(120, dtype=order + "f4").reshape(4, 5, 6) + 1
    p = str(tmp_path / f"ok{ext}")
    nib.save(nib.Nifti1Image(a, np.eye(4)), p)
    assert read_images.read_image(p).GetSize() == (4, 5, 6)
    a[3, 4, 5] = np.inf  # the last voxel: the whole payload is looked at
    nib.save(nib.Nifti1Image(a, np.eye(4)), p)
    with pytest.raises(InputError, match=rf"ok{re.escape(ext)}: contains NaN or Inf"):
        read_images.read_image(p)
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), order + "i2"), np.eye(4)), p)
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-6])  # the last three voxels gone
    with pytest.raises(InputError, match=rf"ok{re.escape(ext)}: (is truncated|cannot be read)"):
        read_images.read_image(p)


@settings(max_examples=300, deadline=None)
@given(order=st.sampled_from("<>"), dims=st.lists(st.integers(-5, 40), min_size=8, max_size=8),
       code=st.sampled_from([0, 2, 4, 8, 16, 64, 128, 511, 1536, 2048, 32767]),
       offset=st.one_of(st.floats(width=32), st.integers(0, 2000).map(float)),
       payload=st.binary(max_size=600), gzipped=st.booleans(), cut=st.integers(0, 1400))
def test_any_nifti_header_gives_a_verdict_or_one_line_error(order, dims, code, offset, payload, gzipped, cut):
    # the payload check parses headers itself: whatever a header or file holds, no other exception
    header = bytearray(348)
    struct.pack_into(order + "i", header, 0, 348)
    struct.pack_into(order + "8h", header, 40, *dims)
    struct.pack_into(order + "hh", header, 70, code, 32)
    struct.pack_into(order + "f", header, 108, offset)
    header[344:348] = b"n+1\0"
    data = (bytes(header) + bytes(4) + payload)[:cut or None]
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "h.nii.gz" if gzipped else "h.nii")
        open(p, "wb").write(gzip.compress(data) if gzipped else data)
        try:
            read_images._check_nifti_payload(p)
        except InputError as exc:
            assert str(exc).startswith(p + ": ") and "\n" not in str(exc)


def test_non_integer_labels(tmp_path):
    p = _write(tmp_path, "s.nii.gz", np.full((4, 4, 4), 1.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        read_images.read_image(p, "label")


def test_unsupported_extension_and_folder(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match="unsupported file type"):
        read_images.read_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="holds no DICOM series"):  # a folder is read as a DICOM series
        read_images.read_image(tmp_path)
    with pytest.raises(InputError, match="is a folder"):
        read_images.read_image(tmp_path, "label")


def test_a_metaimage_header_with_impossible_geometry_or_missing_data_is_one_line(tmp_path):
    """NIfTI's reader refuses a negative spacing or sheared axes itself; MetaImage's passes them on
    (the result would be wrong without a word), and prints lines of its own for voxel data that end
    early or a data file that is missing."""
    img = make_image(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32) + 1)
    good = str(tmp_path / "good.mha")
    sitk.WriteImage(img, good, False)
    header = open(good, "rb").read()
    bad = {"neg.mha": (b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 1 -1"),
           "shear.mha": (b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 0.3 1 0 0 0 1")}
    for name, (old, new) in bad.items():
        assert old in header
        open(tmp_path / name, "wb").write(header.replace(old, new))
    with pytest.raises(InputError, match=r"neg\.mha: has voxel spacing 1x1x-1 mm in its header; every spacing must be positive"):
        read_images.read_image(tmp_path / "neg.mha")
    with pytest.raises(InputError, match=r"shear\.mha: has a direction matrix that is not orthonormal"):
        read_images.read_image(tmp_path / "shear.mha")
    open(tmp_path / "cut.mha", "wb").write(header[:-40])
    with pytest.raises(InputError, match=r"cut\.mha: is truncated: 1304 bytes of voxel data of the 1344"):
        read_images.read_image(tmp_path / "cut.mha")
    sitk.WriteImage(img, str(tmp_path / "zipped.mha"), True)
    zipped = open(tmp_path / "zipped.mha", "rb").read()
    open(tmp_path / "zipped.mha", "wb").write(zipped[:-20])
    with pytest.raises(InputError, match=r"zipped\.mha: is truncated or corrupt"):
        read_images.read_image(tmp_path / "zipped.mha")
    sitk.WriteImage(img, str(tmp_path / "detached.mhd"), False)
    os.remove(tmp_path / "detached.raw")
    with pytest.raises(InputError, match=r"detached\.mhd: its voxel data file detached\.raw is missing"):
        read_images.read_image(tmp_path / "detached.mhd")
    assert read_images.read_image(good).GetSize() == (8, 7, 6)


def test_zscore_keeps_intensities_of_any_scale():
    """Scanners and converters write intensities in any unit: values near 1e30 (whose float32 sums
    overflow) or near 1e-10 give the same normalised volume as the same scan in ordinary units."""
    from BrainTumorSegLib.preprocess.normalise import zscore

    rng = np.random.default_rng(0)
    vol = (rng.random((20, 20, 20)) * 800 + 100).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[2:18, 2:18, 2:18] = True
    plain = zscore(vol, mask)
    assert abs(plain[mask].mean()) < 1e-4 and abs(plain[mask].std() - 1) < 1e-3
    for scale in (1e30, 1e-10):
        assert np.allclose(zscore((vol.astype(np.float64) * scale).astype(np.float32), mask), plain, atol=1e-3)


def test_a_nifti2_file_is_named_as_such(tmp_path):
    """ITK reads NIfTI-1 only; a NIfTI-2 file (nibabel, some converters) is told apart from a damaged one."""
    for name in ("v2.nii", "v2.nii.gz"):
        nib.save(nib.Nifti2Image(np.ones((5, 5, 5), np.float32), np.eye(4)), str(tmp_path / name))
        with pytest.raises(InputError, match=r"v2\.nii(\.gz)?: is a NIfTI-2 file, which ITK does not read"):
            read_images.read_image(tmp_path / name)
