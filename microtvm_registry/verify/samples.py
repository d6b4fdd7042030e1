"""The inputs a verification runs: seeded ones of the model's dtypes and shapes, or the user's
.npy files (float ones quantized with the input's own scale and zero point on request)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from ..errors import MicrotvmError


def seeded_samples(inputs: Sequence[Mapping[str, Any]], count: int, seed: int = 0) -> List[List[Any]]:
    """``count`` samples: integers over their whole range (each input's first two values its
    extremes, so every clamp is reached), floats standard normal."""
    import numpy as np

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = []
        for fact in inputs:
            dtype, shape = np.dtype(str(fact["dtype"])), tuple(int(d) for d in fact["shape"])
            if dtype.kind in "iu":
                info = np.iinfo(dtype)
                lo, hi = max(int(info.min), -(1 << 15)), min(int(info.max), (1 << 15) - 1)
                values = rng.integers(lo, hi + 1, shape).astype(dtype)
                values.reshape(-1)[: min(2, values.size)] = (lo, hi)[: min(2, values.size)]
            else:
                values = rng.standard_normal(shape).astype(dtype)
            sample.append(values)
        samples.append(sample)
    return samples


def quantize(values: Any, fact: Mapping[str, Any], what: str) -> Any:
    """Float ``values`` as the quantized input ``fact`` takes them: round(x / scale) + zero
    point (half away from zero, as TFLite rounds), clamped to the dtype."""
    import numpy as np

    if fact.get("scale") is None:
        raise MicrotvmError(f"{what}: input {fact['name']!r} is not quantized ({fact['dtype']}); leave out --quantize-inputs")
    dtype = np.dtype(str(fact["dtype"]))
    scaled = np.asarray(values, np.float64) / float(fact["scale"])
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5) + int(fact["zero_point"])
    info = np.iinfo(dtype)
    return np.clip(rounded, info.min, info.max).astype(dtype)


def fit_input(values: Any, fact: Mapping[str, Any], what: str, quantize_floats: bool) -> Any:
    """``values`` checked against the input ``fact`` (its shape and dtype), quantized first when
    asked and it is float data for an integer input."""
    import numpy as np

    if quantize_floats and values.dtype.kind == "f" and np.dtype(str(fact["dtype"])).kind in "iu":
        values = quantize(values, fact, what)
    shape = tuple(int(d) for d in fact["shape"])
    if tuple(values.shape) != shape or str(values.dtype) != str(fact["dtype"]):
        hint = " (float data for a quantized input: add --quantize-inputs)" if values.dtype.kind == "f" and fact.get("scale") is not None else ""
        raise MicrotvmError(f"{what} holds {values.dtype} {tuple(values.shape)}; input {fact['name']!r} takes "
                            f"{fact['dtype']} {shape}{hint}")
    return values


def read_samples(folder: Path, inputs: Sequence[Mapping[str, Any]], quantize_floats: bool) -> List[List[Any]]:
    """The samples in ``folder``: for a model of one input, every .npy file in it (by name); for
    several, every subfolder, holding one NAME.npy per input (the model's name or the C name)."""
    import numpy as np

    folder = Path(folder)
    if not folder.is_dir():
        raise MicrotvmError(f"--inputs {folder} is not a folder; give a folder of .npy files")

    def load(path: Path) -> Any:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise MicrotvmError(f"{path} is not a .npy array ({err}); save inputs with numpy.save") from None

    samples: List[List[Any]] = []
    if len(inputs) == 1:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
        if not files:
            raise MicrotvmError(f"--inputs {folder} holds no .npy files; save each sample with numpy.save")
        for path in files:
            samples.append([fit_input(load(path), inputs[0], str(path), quantize_floats)])
        return samples
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subfolders:
        names = ", ".join(str(f["name"]) for f in inputs)
        raise MicrotvmError(f"--inputs {folder}: the model has {len(inputs)} inputs ({names}); give one subfolder per sample, "
                            "each with one NAME.npy per input")
    for sub in subfolders:
        found: Dict[str, Path] = {p.stem: p for p in sub.iterdir() if p.suffix == ".npy"}
        sample = []
        for fact in inputs:
            given = found.get(str(fact["name"])) or found.get(str(fact.get("c_name")))
            if given is None:
                raise MicrotvmError(f"{sub} has no {fact['name']}.npy; each sample folder holds one .npy per input")
            sample.append(fit_input(load(given), fact, str(given), quantize_floats))
        samples.append(sample)
    return samples
