"""model.engine: the OpenVINO engine of a tiny AdaptiveClick against torch fp32 (export, custom op, IR cache, flip,
recipes), its errors (openvino missing, a precision this CPU lacks), the spec option and the default variant."""

from __future__ import annotations

import builtins
import logging

import numpy as np
import pytest
import torch

from adaptiveclick.model import AdaptiveClickPredictor, build_adaptiveclick, load_predictor, parse_spec
from adaptiveclick.model.build import TINY_CONFIG
from adaptiveclick.model.engine import EngineUnavailableError, export, ir_cache, load, openvino_support, recipes
from adaptiveclick.model.engine.calibration import record_network_inputs
from adaptiveclick.model.fast import default_variant, defaults, variant_support
from adaptiveclick.model.fast.optimize import VARIANTS_WITH_PARITY
from adaptiveclick.model.predictor import StepInput

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install '.[openvino]')")


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory):
    """One IR cache for the module (each tiny export takes ~10-20 s on the 2-core machine)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ir_cache.CACHE_ENV, str(tmp_path_factory.mktemp("openvino")))
        yield


@pytest.fixture(scope="module")
def tiny_net():
    torch.manual_seed(0)
    net = build_adaptiveclick(TINY_CONFIG)
    for m in net.modules():  # non-zero offsets: sampling locations that depend on the input, as when trained
        if type(m).__name__ == "MSDeformAttn":
            torch.nn.init.normal_(m.sampling_offsets.weight, std=0.05)
            torch.nn.init.normal_(m.attention_weights.weight, std=0.05)
    return net.eval()


def network_inputs(net, seed: int, batch: int = 1):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, 28 * 28, net.backbone.embed_dim, generator=gen)
    maps = torch.zeros(batch, 3, 448, 448)
    maps[:, 0] = torch.rand(batch, 448, 448, generator=gen)
    maps[:, 1, 200:210, 150:160] = 1.0
    maps[:, 2, 50:60, 300:310] = 1.0
    return tokens, maps


@pytest.fixture(scope="module")
def fp32_engine(engine_cache, tiny_net):
    return load.load_openvino_engine(tiny_net, ir_cache.state_dict_key(tiny_net), "fp32", threads=2)


def test_fp32_engine_matches_torch_to_float_rounding(fp32_engine, tiny_net):
    assert fp32_engine.facts["msda"] == "custom-op" and fp32_engine.facts["inference_precision"] == "f32"
    assert "MSDeformAttn" in {
        op.get_type_name() for op in load.core(None).read_model(fp32_engine.facts["ir"]).get_ops()
    }
    for seed in (0, 1):
        tokens, maps = network_inputs(tiny_net, seed)
        with torch.no_grad():
            expected = tiny_net.forward_tokens(tokens, maps)["instances"]
        out = fp32_engine(tokens, maps)
        assert out.shape == (1, 1, 448, 448) and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)
    with pytest.raises(ValueError, match="compiled for tokens"):
        fp32_engine(torch.zeros(1, 10, 96), maps)


def test_a_second_load_reuses_the_cached_ir(fp32_engine, tiny_net):
    exports = export.export_count
    again = load.load_openvino_engine(tiny_net, ir_cache.state_dict_key(tiny_net), "fp32", threads=2)
    assert export.export_count == exports and again.facts["exported"] is False
    assert again.facts["ir"] == fp32_engine.facts["ir"]
    tokens, maps = network_inputs(tiny_net, 2)
    torch.testing.assert_close(again(tokens, maps), fp32_engine(tokens, maps), atol=0, rtol=0)
    # other weights are another entry of the cache
    other = ir_cache.ir_folder("0" * 64, "k")
    assert other.parent != ir_cache.ir_folder(ir_cache.state_dict_key(tiny_net), "k").parent


def test_the_predictor_with_the_engine_and_flip(fp32_engine, tiny_net):
    image = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    for flip in (False, True):
        torch_pred = AdaptiveClickPredictor(tiny_net, "t", with_flip=flip)
        ov_pred = AdaptiveClickPredictor(tiny_net, "t", with_flip=flip, engine=fp32_engine)
        assert ov_pred.runs_as.startswith("openvino fp32") and torch_pred.runs_as == "torch fp32"
        prev = None
        for clicks in ([(150, 200, True)], [(150, 200, True), (20, 30, False)]):
            torch_pred.set_image(image)
            ov_pred.set_image(image)
            a = torch_pred.step(clicks, prev)
            b = ov_pred.step(clicks, prev)
            assert a.roi == b.roi
            np.testing.assert_allclose(b.probs, a.probs, atol=1e-4)
            prev = a.probs
        # boxes batched per click index (step_many) go through the engine too, one region at a time on the CPU
        boxes = [StepInput([(150, 200, True)]), StepInput([(60, 80, True), (20, 30, False)])]
        for got, want in zip(ov_pred.step_many(boxes), torch_pred.step_many(boxes), strict=True):
            np.testing.assert_allclose(got.probs, want.probs, atol=1e-4)
    # the model pool counts the engine's own copy of the weights beside the torch network
    weights = fp32_engine.memory_bytes()
    assert weights > 0 and ov_pred.memory_bytes() == torch_pred.memory_bytes() + weights


def test_grid_sample_form_when_the_custom_op_is_unavailable(engine_cache, tiny_net, monkeypatch):
    monkeypatch.setattr(load, "_extension_state", {"path": None})
    engine = load.load_openvino_engine(tiny_net, ir_cache.state_dict_key(tiny_net), "fp32", threads=2)
    assert engine.facts["msda"] == "grid_sample" and engine.facts["exported"]
    tokens, maps = network_inputs(tiny_net, 3)
    with torch.no_grad():
        expected = tiny_net.forward_tokens(tokens, maps)["instances"]
    torch.testing.assert_close(engine(tokens, maps), expected, atol=1e-4 * float(expected.abs().max()), rtol=1e-4)


@pytest.mark.skipif(openvino_support("int8") is not None, reason=f"{openvino_support('int8')}")
def test_int8_recipe_compresses_only_the_vit(fp32_engine, tiny_net):
    engine = load.load_openvino_engine(tiny_net, ir_cache.state_dict_key(tiny_net), "int8", threads=2)
    assert engine.facts["transformed"] and not engine.facts["exported"]  # from the cached f32 IR
    model = load.core(None).read_model(engine.facts["ir"])
    int8 = [
        op
        for op in model.get_ops()
        if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() in ("u8", "i8")
    ]
    users = {_weight_user(op) for op in int8}  # the layers whose weights are int8 (weights and zero points)
    assert len(users) == 4 * TINY_CONFIG.depth, users  # qkv, proj, fc1, fc2 of every block
    assert all(name.startswith("backbone.blocks.") for name in users), users
    tokens, maps = network_inputs(tiny_net, 4)
    with torch.no_grad():
        expected = tiny_net.forward_tokens(tokens, maps)["instances"]
    error = float((engine(tokens, maps) - expected).abs().mean() / expected.std())
    assert 1e-5 < error < 0.1, error


def _weight_user(constant) -> str:
    """The layer an int8 constant feeds, through the decompression ops (Convert, Subtract, Multiply, Reshape)."""
    node = constant
    while node.get_type_name() not in ("MatMul", "Convolution"):
        node = next(iter(node.output(0).get_target_inputs())).get_node()
    return node.get_friendly_name()


@pytest.mark.skipif(openvino_support("int8-static") is not None, reason=f"{openvino_support('int8-static')}")
def test_int8_static_needs_calibration_and_calibrates_on_recorded_clicks(fp32_engine, tiny_net):
    key = ir_cache.state_dict_key(tiny_net)
    with pytest.raises(EngineUnavailableError, match="openvino-prepare"):
        load.load_openvino_engine(tiny_net, key, "int8-static", calibration_recipe={"test": 1})
    predictor = AdaptiveClickPredictor(tiny_net, "t")
    image = np.random.default_rng(1).integers(0, 255, (200, 260, 3), dtype=np.uint8)
    with record_network_inputs(tiny_net) as records:
        predictor.set_image(image)
        first = predictor.step([(100, 120, True)])
        predictor.step([(100, 120, True), (10, 10, False)], first.probs, first.roi)
    assert len(records) == 2 and records[0][0].shape == (1, 784, 96) and records[0][1].shape == (1, 3, 448, 448)
    assert "forward_tokens" not in vars(tiny_net)  # the recording is undone
    engine = load.load_openvino_engine(
        tiny_net, key, "int8-static", calibration=lambda: records, calibration_recipe={"test": 1}
    )
    assert engine.facts["transformed"]
    model = load.core(None).read_model(engine.facts["ir"])
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert torch.isfinite(engine(*records[1])).all()


def test_precisions_this_cpu_lacks_are_refused_with_the_reason(monkeypatch):
    assert "avx512_bf16" in openvino_support("bf16", flags=frozenset({"avx2"}))
    int8 = openvino_support("int8", flags=frozenset({"avx2"}))
    assert "avx512_vnni" in int8 and recipes.AVX2_INT8_MEASURED in int8  # the measured figures say why
    assert "saturating" in openvino_support("int8-static", flags=frozenset({"avx2"}))
    assert openvino_support("fp32", flags=frozenset()) is None
    with pytest.raises(ValueError, match="unknown precision"):
        openvino_support("fp16")
    monkeypatch.setattr(recipes, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(ValueError, match="engine=openvino,precision=bf16 is not available: instruction set missing"):
        load_predictor("random:tiny#engine=openvino,precision=bf16")
    assert recipes.activation_precision(recipes.RECIPES["int8"]) == "f32"  # int8 without bf16: f32 elsewhere
    assert "runs on the CPU" in variant_support("openvino", "fp32", torch.device("cuda"))


def test_missing_openvino_is_a_clear_error_and_the_default_falls_back(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    reason = openvino_support("fp32")
    assert "pip install '.[openvino]'" in reason
    with pytest.raises(ValueError, match=r"pip install '\.\[openvino\]'"):
        load_predictor("random:tiny#engine=openvino")
    with pytest.raises(EngineUnavailableError, match="openvino"):
        recipes.import_openvino()
    from adaptiveclick.model.fast import optimize

    monkeypatch.setattr(optimize, "_fallback_logged", set())
    with caplog.at_level(logging.WARNING, logger="adaptiveclick.model.fast.optimize"):
        assert default_variant("cpu", "base") == ("torch", "fp32")
        assert default_variant("cpu", "base") == ("torch", "fp32")
    entry = defaults.entry_for(defaults.isa_class())
    openvino_first = entry is not None and defaults.choose(entry, optimize.VARIANTS_WITH_PARITY)[0] == "openvino"
    # logged once where this CPU's class would default to OpenVINO
    assert len([r for r in caplog.records if "cannot run here" in r.message]) == int(openvino_first)


def test_default_variant():
    entry = defaults.entry_for(defaults.isa_class())  # measured faster at acceptable cost on this class, with parity
    expected = ("torch", "fp32") if entry is None else defaults.choose(entry, VARIANTS_WITH_PARITY)
    assert default_variant("cpu", "base") == expected
    assert default_variant("cpu", "tiny") == ("torch", "fp32")  # not measured: the reference
    assert default_variant("cuda", "base") == ("torch", "fp32")
    assert default_variant("cpu", "base", with_parity=(("torch", "fp32"),)) == ("torch", "fp32")


def test_spec_option_engine():
    spec = parse_spec("random:base#engine=openvino,precision=int8-static,threads=2")
    assert spec.option("engine") == "openvino" and spec.option("precision") == "int8-static"
    for bad, message in [
        ("random:base#engine=onnx", "engine='onnx'"),
        ("random:base#precision=int8-static", "int8-static needs engine=openvino"),
        ("random:base#engine=torch,precision=int8-static", "int8-static needs engine=openvino"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_spec(bad)


def test_load_predictor_builds_the_engine_predictor(engine_cache):
    predictor = load_predictor("random:tiny#engine=openvino,threads=2,flip=1")
    assert predictor.engine.precision == "fp32" and predictor.engine.facts["threads"] == 2 and predictor.with_flip
    torch_predictor = load_predictor("random:tiny")  # no engine named: tiny was not measured, torch fp32
    assert torch_predictor.engine is None and torch_predictor.runs_as == "torch fp32"


def test_ir_cache_writes_whole_folders_or_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(ir_cache.CACHE_ENV, str(tmp_path))
    folder = ir_cache.ir_folder("ab" * 32, ir_cache.engine_key({"x": 1}))
    assert folder.parent.name == "ab" * 16 and ir_cache.engine_key({"x": 2}) != folder.name

    def failing(tmp):
        (tmp / "model.xml").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ir_cache.write_ir(folder, failing)
    assert not folder.exists() and list(folder.parent.iterdir()) == []

    def good(tmp):
        (tmp / "model.xml").write_text("<net/>")
        (tmp / "model.bin").write_bytes(b"")
        return {"made": "here"}

    assert ir_cache.write_ir(folder, good) == folder / "model.xml"
    assert ir_cache.cached_ir(folder) == folder / "model.xml" and ir_cache.read_info(folder)["made"] == "here"
    assert ir_cache.read_info(folder)["sha256"] == ir_cache.ir_digests(folder)  # recorded at export
    assert ir_cache.write_ir(folder, good) == folder / "model.xml"  # a second writer: the first copy stays
