"""The options of a segmentation, declared once: :class:`SegmentOptions`.

Each field carries its default, its kind, its range or choices and its help text
(``dataclasses.field(metadata={"spec": Spec(...)})``). From this one declaration come:

* the check of every value, once, when options are made (:meth:`SegmentOptions.__post_init__`):
  a value of the wrong type, out of range, not among the choices, or contradicting another is one
  :class:`InputError` naming the option (as its command-line flag), the value and what is allowed;
* the ``segment`` command's arguments (:func:`add_arguments`), options from parsed arguments
  (:meth:`SegmentOptions.from_args`) and back (:meth:`SegmentOptions.to_argv`: the Slicer module
  builds its command line with it, and its choice lists and defaults from :func:`specs`).

``None``, where a field allows it, means "the model's own" (its manifest's label scheme or
postprocessing). Pure Python (no numpy, no torch): the command line refuses a bad value before
torch is imported, and the Slicer module imports this in Slicer's own Python.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from .errors import InputError

MODES = ("auto", "always", "never")
LABEL_SCHEMES = ("brats2021", "brats2023")   # the names of labels.SCHEMES (a test keeps them equal)
PRECISIONS = ("auto", "fp32", "bf16")
BACKENDS = ("auto", "torch", "openvino")
WINDOWS = ("auto", "patch", "whole")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# every postprocessing step off, whatever the model's manifest says (its keys: the postprocessing options)
NO_POSTPROCESSING: Dict[str, Any] = {"min_et_voxels": 0, "min_component_voxels": 0, "fill_core_holes": False}


@dataclass(frozen=True)
class Spec:
    """What one option is. ``kind``: ``flag`` (bool, off unless given), ``switch`` (bool or None:
    ``--x`` / ``--no-x``), ``int``, ``float``, ``choice``, ``spacing`` (auto, off or mm),
    ``device``. ``output``: on the command line the option is an output path (``--x PATH``)."""

    kind: str
    help: str
    choices: Tuple[str, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    const: Any = None                 # the value of the flag given without one (nargs="?")
    nullable: bool = False            # None allowed: the model's own
    output: bool = False

    def allowed(self) -> str:
        """What is allowed, in words (for help texts and errors)."""
        if self.kind in ("int", "float", "spacing"):
            span = f"from {_number(self.low)} to {_number(self.high)}"
            text = {"int": f"an integer {span}", "float": f"a number {span}",
                    "spacing": f"auto, off or a spacing in mm {span}"}[self.kind]
        else:
            text = {"choice": "one of " + ", ".join(self.choices),
                    "device": "auto, cpu, cuda, cuda:N or mps"}.get(self.kind, "true or false")
        return text

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is of the right type and within range or choices."""
        if value is None:
            return self.nullable
        if self.kind in ("flag", "switch"):
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "device":
            return isinstance(value, str) and DEVICE_PATTERN.fullmatch(value) is not None
        if self.kind == "spacing" and value in ("auto", "off"):
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind == "int" and not isinstance(value, int)):
            return False
        return math.isfinite(value) and self.low <= value <= self.high  # type: ignore[operator]


def option(default: Any, kind: str, help: str, **spec: Any) -> Any:
    """A field of :class:`SegmentOptions` with its :class:`Spec`."""
    return field(default=default, metadata={"spec": Spec(kind, help, **spec)})


@dataclass(frozen=True)
class Contradiction:
    """Two option values that cannot go together; ``example`` is one such pair (for the tests)."""

    option: str
    when: Callable[["SegmentOptions"], bool]
    problem: str
    example: Mapping[str, Any]


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment: every option of ``braintumorseg segment`` but the inputs, outputs and model."""

    device: str = option("auto", "device", "where to run: auto = CUDA, then MPS, then the CPU")
    tta: bool = option(False, "flag", "mirror test-time augmentation: the 8 flips averaged (8 times the time)")
    overlap: float = option(0.5, "float", "sliding-window overlap; the windows per case grow about as "
                                          "(1 / (1 - overlap))^3", low=0.0, high=0.9)
    window: str = option("auto", "choice", "where each network runs: patch = sliding windows of its training patch, "
                                           "whole = one pass over the whole working volume (fewer voxels: faster on "
                                           "a CPU, more memory), auto = the model's own choice", choices=WINDOWS)
    batch_size: int = option(1, "int", "windows per forward pass", low=1, high=64)
    label_scheme: Optional[str] = option(None, "choice", "label values written: brats2021 (ET 4) or brats2023 (ET 3)",
                                         choices=LABEL_SCHEMES, nullable=True)
    min_et_voxels: Optional[int] = option(None, "int", "relabel enhancing tumor as necrosis when it has fewer "
                                                       "voxels of 1 mm^3 than this, on any grid (0: never)", low=0,
                                          high=10 ** 6, nullable=True)
    min_component_voxels: Optional[int] = option(None, "int", "remove whole-tumor components of fewer voxels of 1 "
                                                              "mm^3 than this, on any grid (0: none)", low=0,
                                                 high=10 ** 6, nullable=True)
    fill_core_holes: Optional[bool] = option(None, "switch", "fill holes enclosed by the tumor core with necrosis",
                                             nullable=True)
    isotropic: Union[str, float] = option(
        "auto", "spacing", "working spacing for models without their own: auto = 1 mm when the T1ce is not about "
        "1 mm, off = the T1ce's grid, or a spacing in mm (the flag alone: 1)", low=0.5, high=5.0, const=1.0)
    register: str = option("auto", "choice", "rigid registration of the other sequences to the T1ce: auto = when "
                                             "their grids differ or they look misaligned (the flag alone: always)",
                           choices=MODES, const="always")
    skull_strip: str = option("auto", "choice", "HD-BET skull stripping (the clinical extra): auto = when an input "
                                                "does not look skull-stripped", choices=MODES)
    bias_field: bool = option(False, "flag", "N4 bias-field correction inside the brain")
    precision: str = option("auto", "choice", "CPU arithmetic: auto = bf16 autocast where the CPU runs bf16 natively "
                                              "(AMX, AVX512-BF16), else fp32; CUDA always uses fp16 autocast",
                            choices=PRECISIONS)
    backend: str = option("auto", "choice", "CPU inference backend: auto = OpenVINO where installed (the openvino "
                                            "extra) and measured faster for the model on this CPU, else torch",
                          choices=BACKENDS)
    uncertainty: bool = option(False, "flag", "also make a voxel-wise uncertainty map (entropy, 0..1)", output=True)
    brain_mask: bool = option(False, "flag", "also make the brain mask (HD-BET's when stripped) on the T1ce grid",
                              output=True)

    def __post_init__(self) -> None:
        for name, spec in specs().items():
            value = getattr(self, name)
            if not spec.accepts(value):
                none = ", or unset (None) for the model's own" if spec.nullable else ""
                raise InputError(flag(name), f"{value!r} is not allowed; use {spec.allowed()}{none}")
        for c in CONTRADICTIONS:
            if c.when(self):
                raise InputError(flag(c.option), f"{getattr(self, c.option)!r} {c.problem}")

    def extras_needed(self) -> List[str]:
        """The pip extras these options cannot run without (``auto`` uses an extra only where it is
        installed, or where a case needs it), to be checked before any case or model is read."""
        return [extra for extra, asked in (("openvino", self.backend == "openvino"),
                                           ("clinical", self.skull_strip == "always")) if asked]

    def postprocessing(self, model_defaults: Mapping[str, Any]) -> Dict[str, Any]:
        """The model's postprocessing (its manifest's) with the steps these options set."""
        return {**model_defaults, **{k: getattr(self, k) for k in NO_POSTPROCESSING if getattr(self, k) is not None}}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SegmentOptions":
        """The options from arguments parsed by a parser :func:`add_arguments` filled (checked)."""
        values = {name: getattr(args, name) for name in specs()}
        values.update({name: values[name] is not None for name, spec in specs().items() if spec.output})
        return cls(**values)

    def to_argv(self, paths: Optional[Mapping[str, str]] = None) -> List[str]:
        """Command-line arguments that give these options (defaults left out); ``paths``: where each
        output option that is on (``uncertainty``, ``brain_mask``) is to be written."""
        argv: List[str] = []
        for name, spec in specs().items():
            value = getattr(self, name)
            if value == defaults()[name]:
                continue
            if spec.output:
                if name not in (paths or {}):
                    raise ValueError(f"{name} is on: give the path to write it to")
                argv += [flag(name), (paths or {})[name]]
            elif spec.kind in ("flag", "switch"):
                argv.append(flag(name) if value else "--no-" + flag(name)[2:])
            else:
                argv += [flag(name), str(value)]
        return argv


CONTRADICTIONS = (
    Contradiction("backend", lambda o: o.backend == "openvino" and o.device not in ("auto", "cpu"),
                  "runs on the CPU only; use --device cpu or --backend torch", {"backend": "openvino", "device": "cuda"}),
    Contradiction("precision", lambda o: o.backend == "openvino" and o.precision == "bf16",
                  "is not available with --backend openvino, which computes in fp32; use --precision auto or fp32",
                  {"backend": "openvino", "precision": "bf16"}),
    Contradiction("backend", lambda o: o.backend == "openvino" and o.window == "whole",
                  "runs windows of one fixed shape; use --window patch or --backend torch",
                  {"backend": "openvino", "window": "whole"}),
    Contradiction("precision", lambda o: o.precision != "auto" and o.device not in ("auto", "cpu"),
                  "sets the CPU's arithmetic; on a GPU it has no effect (CUDA uses fp16 autocast): use --precision auto",
                  {"precision": "fp32", "device": "cuda:0"}),
)


def flag(name: str) -> str:
    """The command-line flag of an option: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def specs() -> Dict[str, Spec]:
    """Each option's :class:`Spec`, in declaration order."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(SegmentOptions)}


def defaults() -> Dict[str, Any]:
    """Each option's default."""
    return {f.name: f.default for f in dataclasses.fields(SegmentOptions)}


def _number(x: Optional[float]) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else f"{x}"


def help_text(name: str) -> str:
    """An option's help with what is allowed and its default (the command line's, the Slicer module's tooltips)."""
    spec, default = specs()[name], defaults()[name]
    if spec.kind in ("flag", "switch"):
        return spec.help + (" (default: the model's own)" if default is None else "")
    said = "the model's own" if default is None else default
    return f"{spec.help}; {spec.allowed()} (default: {said})"


def _spacing(text: str) -> Union[str, float]:
    """``--isotropic``'s value: auto, off or a number (its range is the options' own check)."""
    if text in ("auto", "off"):
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use auto, off or a spacing in mm") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per option, generated from the declaration (types here; ranges in the options' check)."""
    for name, spec in specs().items():
        kw: Dict[str, Any] = {"help": help_text(name).replace("%", "%%"), "default": defaults()[name]}
        if spec.output:
            kw.update(metavar="PATH", default=None, help=f"{spec.help}, written here")
        elif spec.kind == "flag":
            kw["action"] = "store_true"
        elif spec.kind == "switch":
            kw.update(action="store_const", const=True)
        elif spec.kind in ("int", "float"):
            kw.update(type=int if spec.kind == "int" else float, metavar="N" if spec.kind == "int" else "X")
        elif spec.kind == "choice":
            kw["choices"] = spec.choices
        elif spec.kind == "spacing":
            kw.update(type=_spacing, metavar="auto|off|MM")
        if spec.const is not None:
            kw.update(nargs="?", const=spec.const)
        parser.add_argument(flag(name), **kw)
        if spec.kind == "switch":
            parser.add_argument("--no-" + flag(name)[2:], dest=name, action="store_const", const=False,
                                help=f"the opposite of {flag(name)}")
