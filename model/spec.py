"""Predictor specs: one string that says which predictor to run and how. Parsing imports no torch.

``SOURCE[#option=value,option=value...]`` where SOURCE is

* ``baseline``: the embedded GrabCut predictor (no weights needed);
* a checkpoint path, an ``http(s)://`` URL or an ``s3://bucket/key`` URI (AdaptiveClick weights);
* ``random:base`` / ``random:huge`` / ``random:tiny``: an untrained, randomly initialised AdaptiveClick, for
  benchmarks, tests and smoke runs only (``tiny`` is a small network of the same architecture); its model version
  says it is untrained.

Options (all optional): ``device`` (``cpu``, ``cuda``, ``cuda:1``, ``auto``), ``mode`` (``cvpr``/``plain``),
``flip`` (``0``/``1``), ``size`` (``base``/``huge``), ``sha256`` (expected hash of the weights file),
``version`` (model version to report instead of the derived one), ``engine`` (``torch``, or ``openvino``: the
per-click network compiled by OpenVINO for the CPU, see :mod:`model.engine`; needs ``pip install
'.[openvino]'``), ``precision`` (``fp32``, ``bf16``, ``int8``: the arithmetic of the heavy layers, see
:mod:`model.fast` and :mod:`model.engine.recipes`; ``int8-static`` with ``engine=openvino`` only), ``threads``
(CPU threads for torch and OpenVINO, default: one per core). Without ``engine`` and ``precision`` the CPU runs the
fastest variant that runs natively here and has shown parity with torch fp32
(``model.fast.optimize.default_variant``; fp32 torch on GPUs); a ``precision`` alone keeps ``engine=torch``. The
fragment separator ``#`` never reaches a server, so URLs stay intact. :func:`model.load_predictor` builds what a
spec names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE = "baseline"
RANDOM_PREFIX = "random:"
RANDOM_SIZES = ("base", "huge", "tiny")
EVAL_MODES = ("cvpr", "plain")
PRECISIONS = ("fp32", "bf16", "int8")
ENGINES = ("torch", "openvino")
#: the precisions each engine offers (``int8-static``: NNCF static int8, calibrated on NoC clicks)
ENGINE_PRECISIONS = {"torch": PRECISIONS, "openvino": PRECISIONS + ("int8-static",)}
KNOWN_OPTIONS = ("device", "mode", "flip", "size", "sha256", "version", "engine", "precision", "threads")
#: options that describe the weights rather than how to run them (a new version of the weights replaces them)
WEIGHT_OPTIONS = ("sha256", "version", "size")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class PredictorSpec:
    source: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        return self.source == BASELINE

    @property
    def is_random(self) -> bool:
        return self.source.startswith(RANDOM_PREFIX)

    @property
    def random_size(self) -> str:
        """``base`` for ``random:base`` (ValueError for other sources)."""
        if not self.is_random:
            raise ValueError(f"{self.source!r} is not a random:SIZE spec")
        return self.source[len(RANDOM_PREFIX) :]

    @property
    def is_checkpoint(self) -> bool:
        """Names a weights file (path, URL or s3 URI), not the baseline or random weights."""
        return not (self.is_baseline or self.is_random)

    def option(self, name: str, default: str | None = None) -> str | None:
        return self.options.get(name, default)

    def flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name)
        if value is None:
            return default
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ValueError(f"predictor option {name}={value!r} must be 0 or 1")

    def with_options(self, **options: str | None) -> PredictorSpec:
        """A checked copy with ``options`` set (a None value removes the option)."""
        merged = {**self.options, **{k: v for k, v in options.items() if v is not None}}
        for name in (k for k, v in options.items() if v is None):
            merged.pop(name, None)
        return parse_spec(PredictorSpec(self.source, merged))

    def run_options(self) -> dict[str, str]:
        """The options that say how to run the weights (device, mode, flip, precision, ...), not which."""
        return {k: v for k, v in self.options.items() if k not in WEIGHT_OPTIONS}

    def __str__(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.source}#{opts}" if opts else self.source

    @property
    def public(self) -> str:
        """The spec as it may be shown to anyone: a URL source without its user info and query (a presigned URL's
        signature, a token), which name no other weights than the path does."""
        source = self.source
        if "://" in source:
            scheme, _, rest = source.partition("://")
            host, slash, path = rest.partition("/")
            source = f"{scheme}://{host.rpartition('@')[2]}{slash}{path.split('?', 1)[0]}"
        opts = ",".join(f"{k}={v}" for k, v in self.options.items())
        return f"{source}#{opts}" if opts else source


def pinned_spec(
    weights: str, sha256: str, version: str | None = None, run_like: PredictorSpec | None = None
) -> PredictorSpec:
    """The spec of exact weights (hash-checked), reporting ``version``, run like ``run_like`` (device, mode,
    precision, ... of the served spec)."""
    options = dict(run_like.run_options()) if run_like is not None else {}
    options["sha256"] = sha256
    if version:
        options["version"] = version
    return parse_spec(PredictorSpec(weights, options))


def parse_options(text: str) -> dict[str, str]:
    """``"precision=int8,threads=2"`` -> ``{"precision": "int8", "threads": "2"}`` (names checked by parse_spec)."""
    options = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not value.strip():
            raise ValueError(f"predictor option {item!r} must look like name=value")
        options[key.strip().lower()] = value.strip()
    return options


def parse_spec(spec: str | PredictorSpec) -> PredictorSpec:
    """Parse and validate a spec (a string, or a :class:`PredictorSpec` to check); see the module docstring."""
    if isinstance(spec, PredictorSpec):
        source, options = spec.source, dict(spec.options)
    else:
        text = (spec or "").strip()
        if not text:
            raise ValueError("empty predictor spec: use 'baseline' or a checkpoint path/URL/s3 URI")
        source, _, fragment = text.partition("#")
        options = parse_options(fragment)
    parsed = PredictorSpec(source.strip(), options)
    if not parsed.source:
        raise ValueError("empty predictor source: use 'baseline' or a checkpoint path/URL/s3 URI")
    for key in options:
        if key not in KNOWN_OPTIONS:
            raise ValueError(f"unknown predictor option {key!r}; known: {', '.join(KNOWN_OPTIONS)}")
    mode = parsed.option("mode", "cvpr")
    if mode not in EVAL_MODES:
        raise ValueError(f"predictor option mode={mode!r}: expected one of {', '.join(EVAL_MODES)}")
    if parsed.is_random and parsed.random_size not in RANDOM_SIZES:
        raise ValueError(f"{parsed.source!r}: expected one of " + ", ".join(RANDOM_PREFIX + s for s in RANDOM_SIZES))
    engine = parsed.option("engine", "torch")
    if engine not in ENGINES:
        raise ValueError(f"predictor option engine={engine!r}: expected one of {', '.join(ENGINES)}")
    precisions = ENGINE_PRECISIONS[engine or "torch"]
    if parsed.option("precision", "fp32") not in precisions:
        raise ValueError(
            f"predictor option precision={parsed.option('precision')!r}: expected one of {', '.join(precisions)}"
            + (" (int8-static needs engine=openvino)" if parsed.option("precision") == "int8-static" else "")
        )
    threads = parsed.option("threads", "1") or "1"
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"predictor option threads={threads!r}: expected a whole number >= 1")
    parsed.flag("flip", False)  # a bad flag value is a spec error, not a later load error
    return parsed
