"""Target profiles: declarative TOML files in ``targets/``, validated strictly (unknown keys, bad values)."""
import tomllib
from dataclasses import dataclass
from pathlib import Path

from featherface.data.shifts import SHIFTS
from featherface.errors import ArtifactError, ConfigError
from toolchain.runtime.featherface_runtime import version_tuple  # the one version parser, device side too

TARGETS_DIR = Path(__file__).resolve().parents[2] / "targets"
RUNTIMES = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
LOWERINGS = ("native", "decomposed")
ARCHITECTURES = ("x86_64", "aarch64")  # what an ONNX Runtime target can name in 'checked_on'
PLATFORMS = ("any", "jetson", "x86_64")  # where an engine for the target can be built: only on the target itself
EXPORT_MIN_OPSET = 18  # what the exporter writes; lower target opsets are reached by the opset stage
INT8_MODES = ("qdq", "calibrator")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Int8Settings:
    """How INT8 is produced: ``qdq`` puts explicit Q/DQ nodes in the ONNX (every runtime; the only way in
    TensorRT 11); ``calibrator`` builds from the FP32 ONNX with a TensorRT calibration cache (TensorRT ≤ 10)."""

    mode: str = "qdq"
    method: str = "entropy"
    activations: str = "s8"  # s8: symmetric (TensorRT's layout); u8: asymmetric (ONNX Runtime on x86)
    images: int | None = None  # calibration images (None: the whole folder)
    noise_threshold_db: float = 25.0  # convolutions next to activations noisier than this stay FP32
    # Camera shifts the INT8 graph is built for (featherface.data.shifts): its noise rounds judge every layer on
    # shifted copies of the calibration images too (ranges stay those of the originals: shifted copies in the
    # ranges cost accuracy everywhere, benchmarks/shift_int8.py), and it is refused at build time when it misses
    # the budget on one of them.
    shifts: tuple[str, ...] = ()
    # ONNX Runtime targets: the architectures where the INT8 graph, run by each one's own integer kernels, kept the
    # ΔAP budget (None: the target's 'checked_on'). Kernels differ in their requantisation, not only in their sums.
    checked_on: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Profile:
    """Optimisation profile as (batch, height, width) triples."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtime: str
    min_runtime_version: str
    precisions: tuple[str, ...]
    default_precision: str
    opset: int
    dcn_lowering: str
    workspace_mb: int
    profile: Profile
    platform: str = "any"
    lean: bool = False  # ONNX Runtime targets: ship the lean FP32 graph (toolchain/stages/lean.py)
    dla_core: int | None = None
    gpu_fallback: bool = False
    int8: Int8Settings = Int8Settings()
    checked_on: tuple[str, ...] = ()  # CPU architectures its bundles were run on (ONNX Runtime targets)
    path: Path | None = None

    def checked_on_for(self, precision: str) -> tuple[str, ...]:
        """The architectures a bundle of this precision was checked on (recorded in its manifest)."""
        return self.int8.checked_on if precision == "int8" and self.int8.checked_on is not None else self.checked_on

    @property
    def is_tensorrt(self) -> bool:
        return self.runtime == "tensorrt"

    @property
    def export_opset(self) -> int:
        """The opset the exporter writes for this target; below 18 the opset stage converts it down."""
        return max(self.opset, EXPORT_MIN_OPSET)

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise ArtifactError(f"{self.path}: precision '{precision}' is not offered by target '{self.name}' "
                                f"({', '.join(self.precisions)})")


_TOP = {"name": str, "description": str, "runtime": str, "min_runtime_version": str, "precisions": list,
        "default_precision": str, "opset": int, "dcn_lowering": str, "workspace_mb": int, "profile": dict,
        "dla": dict, "int8": dict, "platform": str, "alias": str, "lean": bool, "checked_on": list}
_REQUIRED = set(_TOP) - {"dla", "int8", "platform", "alias", "lean", "checked_on"}
_DLA = {"core": int, "gpu_fallback": bool}
_INT8 = {"mode": str, "method": str, "activations": str, "images": int, "noise_threshold_db": float,
         "shifts": list, "checked_on": list}


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _typed(path: Path, table: dict, schema: dict, where: str) -> None:
    for key, value in table.items():
        if key not in schema:
            raise _fail(path, f"unknown key '{where}{key}' (allowed: {', '.join(sorted(schema))})")
        expected = schema[key]
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise _fail(path, f"'{where}{key}' must be {expected.__name__}, got {type(value).__name__}")


def _shape(path: Path, profile: dict, key: str) -> tuple[int, int, int]:
    value = profile.get(key)
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, int) and v > 0 for v in value)):
        raise _fail(path, f"'profile.{key}' must be [batch, height, width] of positive integers")
    if value[1] % 32 or value[2] % 32:
        raise _fail(path, f"'profile.{key}' height and width must be multiples of 32 (the largest stride)")
    return tuple(value)


def parse_target(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise _fail(path, f"cannot read ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise _fail(path, f"invalid TOML ({exc})") from None
    _typed(path, data, _TOP, "")
    if "alias" in data:
        return _alias(path, data)
    missing = sorted(_REQUIRED - set(data))
    if missing:
        raise _fail(path, f"missing key(s): {', '.join(missing)}")
    if data["runtime"] not in RUNTIMES:
        raise _fail(path, f"'runtime' must be one of {', '.join(RUNTIMES)}, got '{data['runtime']}'")
    bad = [p for p in data["precisions"] if p not in PRECISIONS]
    if bad or not data["precisions"]:
        raise _fail(path, f"'precisions' must be a non-empty subset of {', '.join(PRECISIONS)}")
    if data["default_precision"] not in data["precisions"]:
        raise _fail(path, f"'default_precision' {data['default_precision']!r} is not in 'precisions'")
    if data["dcn_lowering"] not in LOWERINGS:
        raise _fail(path, f"'dcn_lowering' must be one of {', '.join(LOWERINGS)}")
    if not 13 <= data["opset"] <= 23:
        raise _fail(path, f"'opset' {data['opset']} is out of range 13–23 (the exporter writes 18–23; "
                          "13–17 are reached by converting down)")
    platform = data.get("platform", "any")
    if platform not in PLATFORMS:
        raise _fail(path, f"'platform' must be one of {', '.join(PLATFORMS)}, got '{platform}'")
    if data.get("lean") and data["runtime"] != "onnxruntime":
        raise _fail(path, "'lean' is for ONNX Runtime targets (TensorRT fuses the same patterns itself)")
    if data["runtime"] == "tensorrt" and platform == "any":
        raise _fail(path, "a TensorRT target must name its 'platform' (jetson or x86_64): engines are not portable")
    if data["dcn_lowering"] == "native" and data["opset"] < 19:
        raise _fail(path, "'dcn_lowering = \"native\"' needs opset ≥ 19 (ONNX DeformConv)")
    if data["workspace_mb"] <= 0:
        raise _fail(path, "'workspace_mb' must be positive")
    _typed(path, data["profile"], {"min": list, "opt": list, "max": list}, "profile.")
    lo, opt, hi = (_shape(path, data["profile"], k) for k in ("min", "opt", "max"))
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise _fail(path, "profile must satisfy min ≤ opt ≤ max in every dimension")
    dla = data.get("dla", {})
    _typed(path, dla, _DLA, "dla.")
    if "core" in dla and dla["core"] < 0:
        raise _fail(path, "'dla.core' must be ≥ 0")
    if "core" in dla and not lo == opt == hi:
        raise _fail(path, "DLA has no dynamic dimensions: 'profile' min, opt and max must be equal")
    checked_on = tuple(data.get("checked_on", ()))
    if any(arch not in ARCHITECTURES for arch in checked_on) or checked_on and data["runtime"] != "onnxruntime":
        raise _fail(path, f"'checked_on' lists CPU architectures ({', '.join(ARCHITECTURES)}) of an ONNX Runtime "
                          "target (TensorRT engines are tied to their 'platform')")
    int8 = _int8(path, data.get("int8", {}), data["runtime"], data["min_runtime_version"])
    if int8.checked_on is not None and not set(int8.checked_on) <= set(checked_on):
        raise _fail(path, "'int8.checked_on' must be a subset of 'checked_on' (an architecture the target was run on)")
    return Target(data["name"], data["description"], data["runtime"], data["min_runtime_version"],
                  tuple(data["precisions"]), data["default_precision"], data["opset"], data["dcn_lowering"],
                  data["workspace_mb"], Profile(lo, opt, hi), platform, data.get("lean", False), dla.get("core"),
                  dla.get("gpu_fallback", False), int8, checked_on, path)


def _alias(path: Path, data: dict) -> Target:
    """A file holding only ``alias`` (and a description) names another profile, e.g. ``jetson``."""
    extra = sorted(set(data) - {"alias", "description"})
    if extra:
        raise _fail(path, f"an alias takes only 'alias' and 'description' (found {', '.join(extra)})")
    aliased = TARGETS_DIR / f"{data['alias']}.toml"
    if not aliased.is_file() or "alias" in tomllib.loads(aliased.read_text()):
        raise _fail(path, f"'alias' must name a target profile that is not itself an alias, got '{data['alias']}'")
    return parse_target(aliased)


def _int8(path: Path, table: dict, runtime: str, min_version: str) -> Int8Settings:
    _typed(path, table, _INT8, "int8.")
    checked = table.get("checked_on")
    settings = Int8Settings(**{**table, "shifts": tuple(table.get("shifts", ())),
                               "checked_on": None if checked is None else tuple(checked)})
    unknown = [s for s in settings.shifts if s not in SHIFTS]
    if unknown:
        raise _fail(path, f"'int8.shifts' names unknown shift(s) {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(SHIFTS)})")
    if settings.shifts and settings.mode != "qdq":
        raise _fail(path, "'int8.shifts' needs mode \"qdq\": only an explicit INT8 graph can be measured here")
    if settings.mode not in INT8_MODES:
        raise _fail(path, f"'int8.mode' must be one of {', '.join(INT8_MODES)}")
    if settings.method not in CALIBRATION_METHODS:
        raise _fail(path, f"'int8.method' must be one of {', '.join(CALIBRATION_METHODS)}")
    if settings.activations not in ("s8", "u8"):
        raise _fail(path, "'int8.activations' must be 's8' or 'u8'")
    if runtime == "tensorrt" and settings.activations != "s8":
        raise _fail(path, "TensorRT takes only symmetric INT8: 'int8.activations' must be 's8'")
    if settings.mode == "calibrator" and (runtime != "tensorrt" or version_tuple(min_version) >= (11,)):
        raise _fail(path, "'int8.mode = \"calibrator\"' needs TensorRT ≤ 10 (TensorRT 11 removed calibrators)")
    if settings.images is not None and settings.images < 1:
        raise _fail(path, "'int8.images' must be ≥ 1")
    return settings


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def describe_targets() -> str:
    """One line per profile for --help: an alias shows what it stands for."""
    lines = []
    for name in list_targets():
        data = tomllib.loads((TARGETS_DIR / f"{name}.toml").read_text())
        lines.append(f"{name} (= {data['alias']})" if "alias" in data else name)
    return ", ".join(lines)


def load_target(name_or_path: str | Path) -> Target:
    """A target by name (``targets/<name>.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise ConfigError(f"{path}: unknown target '{name_or_path}' (available: {', '.join(list_targets())})")
    return parse_target(path)
