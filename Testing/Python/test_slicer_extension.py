"""The Slicer extension's build files list exactly the files that exist, and the layers keep to
their rules (the logic imports no Qt, the library never imports Slicer)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE = os.path.join(ROOT, "BrainTumorSeg")


def cmake_list(text: str, var: str) -> list:
    body = re.search(rf"set\({var}\n(.*?)\n\s*\)", text, re.S).group(1)
    return [ln.strip().replace("${MODULE_NAME}", "BrainTumorSeg") for ln in body.splitlines() if ln.strip()]


def files_under(root: str, sub: str, suffix: str = "") -> set:
    out = set()
    for d, dirs, names in os.walk(os.path.join(root, sub)):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        out |= {os.path.relpath(os.path.join(d, n), root) for n in names if n.endswith(suffix)}
    return out


def test_module_cmake_lists_every_file_and_only_existing_files():
    text = open(os.path.join(MODULE, "CMakeLists.txt")).read()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert all(os.path.isfile(os.path.join(MODULE, f)) for f in scripts + resources)
    assert set(scripts) == {"BrainTumorSeg.py"} | files_under(MODULE, "BrainTumorSegModuleLib", ".py") | \
        files_under(MODULE, "BrainTumorSegWidgetLib", ".py")
    assert set(resources) == files_under(MODULE, "Resources")
    lib = cmake_list(text, "LIBRARY_PYTHON_SCRIPTS")
    lib_res = cmake_list(text, "LIBRARY_PYTHON_RESOURCES")
    assert all(os.path.isfile(os.path.join(ROOT, f)) for f in lib + lib_res)
    assert set(lib) == files_under(ROOT, "BrainTumorSegLib", ".py")
    assert set(lib_res) == {f for f in files_under(ROOT, "BrainTumorSegLib/models") if not f.endswith(".py")}
    assert "WITH_GENERIC_TESTS" in text


def test_top_level_cmake_is_an_extension_that_adds_the_module():
    text = open(os.path.join(ROOT, "CMakeLists.txt")).read()
    for needed in ("find_package(Slicer REQUIRED)", "add_subdirectory(BrainTumorSeg)", 'EXTENSION_CATEGORY "Segmentation"',
                   "EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                   "EXTENSION_SCREENSHOTURLS", 'EXTENSION_DEPENDS "PyTorch"', "Slicer_EXTENSION_GENERATE_CONFIG",
                   "Slicer_EXTENSION_CPACK"):
        assert needed in text, needed


def imports(path: str) -> set:
    text = open(path).read()
    return set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", text, re.M))


def test_logic_imports_no_qt_and_library_never_imports_slicer():
    for f in files_under(MODULE, "BrainTumorSegModuleLib", ".py"):
        assert not imports(os.path.join(MODULE, f)) & {"qt", "ctk", "PythonQt", "slicer.qt"}, f
    for f in files_under(ROOT, "BrainTumorSegLib", ".py"):
        assert not imports(os.path.join(ROOT, f)) & {"slicer", "qt", "vtk", "ctk"}, f
    assert "qt" in imports(os.path.join(MODULE, "BrainTumorSeg.py"))  # the widget and its panels are where Qt lives
    assert "qt" in imports(os.path.join(MODULE, "BrainTumorSegWidgetLib", "model_panel.py"))


def test_ui_names_every_widget_the_module_uses():
    ui = open(os.path.join(MODULE, "Resources", "UI", "BrainTumorSeg.ui")).read()
    names = set(re.findall(r'name="(\w+)"', ui))
    sources = ["BrainTumorSeg.py"] + sorted(files_under(MODULE, "BrainTumorSegWidgetLib", ".py"))
    used = set()
    for f in sources:
        used |= set(re.findall(r"self\.ui\.(\w+)", open(os.path.join(MODULE, f)).read()))
    assert used and used <= names, used - names
