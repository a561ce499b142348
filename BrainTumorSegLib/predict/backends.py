"""Inference backends for a network's windows on the CPU: torch, or OpenVINO (optional extra).

OpenVINO runs the same network, exported once per weights (sha256), network code, window and batch
size, as an OpenVINO IR (``.xml`` graph and ``.bin`` weights: data, no code) in a cache folder
(``$BRAINTUMORSEG_CACHE`` or ``~/.braintumorseg/cache``), compiled for the CPU in fp32. ``auto``
uses OpenVINO only on the CPU, only when it is installed, and only when it was measured faster
than torch for that model, window, CPU and thread count, counting its start-up (reading and
compiling the IR) against the windows of the case at hand: the first use times one window with
each, and the start-up, and records them beside the IR, so later runs just read them.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import platform
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from .. import extras
from ..errors import InputError
from ..models.bundles import sha256_of
from ..segment_options import BACKENDS
from ..write.atomic import write_json

Forward = Callable[[torch.Tensor], torch.Tensor]


def openvino_available() -> bool:
    return extras.available("openvino")


def cache_root() -> str:
    return os.environ.get("BRAINTUMORSEG_CACHE") or os.path.join(os.path.expanduser("~"), ".braintumorseg", "cache")


def _code_digest(net: torch.nn.Module) -> str:
    """The sha256 of each source file of this package's classes that ``net`` is made of: an exported
    graph is the code's as much as the weights' (a cascade whose forward changed keeps its weights)."""
    package = __name__.split(".")[0]
    classes = {cls for m in net.modules() for cls in type(m).__mro__ if cls.__module__.split(".")[0] == package}
    files = sorted({f for f in map(inspect.getsourcefile, classes) if f})
    return ",".join(_file_digest(f, (st := os.stat(f)).st_mtime_ns, st.st_size) for f in files)


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    """A source file's sha256, read again only when its time or size changed (an ensemble asks per member)."""
    return sha256_of(path)


def _key(net: torch.nn.Module, weights_sha256: str, shape: Sequence[int]) -> str:
    import openvino

    text = f"{weights_sha256}|{_code_digest(net)}|{'x'.join(map(str, shape))}|openvino {openvino.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _export(net: torch.nn.Module, shape: Tuple[int, ...], xml: str) -> None:
    """Trace ``net`` on a window of ``shape`` and write the IR atomically (weights first, the graph last)."""
    import warnings

    import openvino as ov

    with torch.inference_mode(), warnings.catch_warnings():
        # tracing turns the network's shape checks into constants: right for this fixed window shape
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        model = ov.convert_model(net.eval(), example_input=torch.zeros(shape), input=[shape])
    tmp_dir = os.path.dirname(xml)
    stem = os.path.join(tmp_dir, f".export-{os.getpid()}")
    ov.save_model(model, stem + ".xml", compress_to_fp16=False)
    os.replace(stem + ".bin", xml[:-4] + ".bin")
    os.replace(stem + ".xml", xml)


def openvino_forward(net: torch.nn.Module, weights_sha256: str, shape: Tuple[int, ...]) -> Forward:
    """A callable running ``net`` through OpenVINO (fp32, CPU) on inputs of exactly ``shape``."""
    import openvino as ov

    folder = os.path.join(cache_root(), "openvino")
    os.makedirs(folder, exist_ok=True)
    xml = os.path.join(folder, f"{_key(net, weights_sha256, shape)}.xml")
    if not (os.path.exists(xml) and os.path.exists(xml[:-4] + ".bin")):
        _export(net, shape, xml)
    core = ov.Core()
    core.set_property({"CACHE_DIR": os.path.join(folder, "compiled")})  # compiled blobs: later starts are quick
    compiled = core.compile_model(core.read_model(xml), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()})

    def forward(x: torch.Tensor) -> torch.Tensor:
        """Windows one by one (the model is compiled for a batch of ``shape[0]``)."""
        n = shape[0]
        if tuple(x.shape[1:]) != shape[1:] or x.shape[0] % n:
            raise ValueError(f"OpenVINO model compiled for {shape}, got {tuple(x.shape)}")
        arr = x.detach().cpu().float().numpy()
        outs = [torch.from_numpy(compiled(arr[i:i + n])[0]) for i in range(0, arr.shape[0], n)]
        return torch.cat(outs, 0).to(x.device)

    return forward


def _decision_file(net: torch.nn.Module, weights_sha256: str, shape: Sequence[int]) -> str:
    cpu = platform.processor() or platform.machine()
    text = f"{_key(net, weights_sha256, shape)}|{cpu}|{torch.get_num_threads()} threads|torch {torch.__version__}"
    name = hashlib.sha256(text.encode()).hexdigest()[:24]
    return os.path.join(cache_root(), "openvino", f"{name}.decision.json")


def _time(fn: Forward, x: torch.Tensor) -> float:
    fn(x)  # warm-up
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def choose(backend: str, device: torch.device, net: torch.nn.Module, weights_sha256: str,
           shape: Tuple[int, ...], torch_forward: Forward, windows: int = 1) -> Tuple[str, Optional[Forward]]:
    """(backend used, its forward or None for torch) for ``windows`` windows of ``shape``."""
    if backend not in BACKENDS:
        raise InputError(None, f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch" or (backend == "auto" and (device.type != "cpu" or not openvino_available())):
        return "torch", None
    if device.type != "cpu":
        raise InputError(None, f"the openvino backend runs on the CPU, not on {device}")
    extras.require("openvino")
    if backend == "openvino":
        return "openvino", openvino_forward(net, weights_sha256, shape)
    decision = _decision_file(net, weights_sha256, shape)
    measured: Dict = {}
    if os.path.exists(decision):
        with open(decision, encoding="utf-8") as f:
            measured = json.load(f)
    ov_forward: Optional[Forward] = None
    if "openvino_setup_s" not in measured:
        openvino_forward(net, weights_sha256, shape)  # export and compile once, so start-up is timed warm
        t0 = time.perf_counter()
        ov_forward = openvino_forward(net, weights_sha256, shape)
        setup = time.perf_counter() - t0
        x = torch.randn(shape)
        measured = {"torch_s": _time(torch_forward, x), "openvino_s": _time(ov_forward, x),
                    "openvino_setup_s": setup, "shape": list(shape)}
        write_json(decision, measured)
    if measured["openvino_setup_s"] + windows * measured["openvino_s"] >= windows * measured["torch_s"]:
        return "torch", None
    return "openvino", ov_forward or openvino_forward(net, weights_sha256, shape)


__all__ = ["BACKENDS", "choose", "openvino_available", "openvino_forward", "cache_root"]
