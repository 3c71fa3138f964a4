"""AdaptiveClick through CVAT's agent (backend.cvat_agent), with the real cvat-cli doing what ``function run-agent``
does for each annotation request: its worker process (spawned, the function loaded by ``--function-module``), its
interaction driver (the spec's prompt checks, the driver's own prompt type, the preprocessed-frame cache) and its
request handling (the result or the failure it posts to CVAT). Only the CVAT server is replaced: the frames come
from GrabCut, and the posts are recorded.

The NoC annotator clicks on the agent's masks; the same clicks through the Label Studio path (``/predict``) give
IoUs with the ground truth within 0.02 of the agent's. Refused prompts end as the agent's "Invalid annotation
request" and the agent goes on."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
from types import SimpleNamespace

import attrs
import numpy as np
import pytest
from cvat_cli._internal.agent import (
    RecoverableExecutor,
    _Agent,
    _default_tracking_state_id_generator,
    _worker_init,
    _worker_job_get_function_spec,
)
from cvat_cli._internal.agent_driver_interaction import AgentInteractionFunctionDriver
from cvat_cli._internal.common import FunctionLoader
from cvat_sdk.masks import decode_mask
from PIL import Image

from adaptiveclick.backend.app import create_app
from adaptiveclick.backend.interactor import InteractorPrompt, clicks_for
from adaptiveclick.backend.settings import Settings
from adaptiveclick.evaluation import Clicker
from adaptiveclick.evaluation.datasets import GrabCutDataset
from adaptiveclick.labelstudio.label_config import recommended_config
from adaptiveclick.labelstudio.rle import decode_rle
from adaptiveclick.model import GrabCutPredictor
from adaptiveclick.model.zoom_in import mask_bbox

MODULE = "adaptiveclick.backend.cvat_agent"
CLICKS = 5
OBJECTS = range(0, 50, 5)  # every fifth of GrabCut's 50 objects


class LocalFrames(AgentInteractionFunctionDriver):
    """cvat-cli's interaction driver with the frames of ``frames`` instead of a CVAT task's (the one method that
    asks the server)."""

    frames: dict[int, np.ndarray] = {}

    def _get_sample_from_ar_params(self, ar_params):
        image = Image.fromarray(self.frames[ar_params["frame"]])
        return SimpleNamespace(media=SimpleNamespace(load_image=lambda: image)), []


class RecordingServer:
    """The CVAT server's side of an annotation request: what the agent posts (complete or fail)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []

    def call_api(self, path, method, path_params=None, body=None, **kwargs):
        self.posts.append((path.rsplit("/", 1)[-1], body))
        return None, SimpleNamespace(data=b"{}")


@attrs.define
class Agent:
    """One agent (``_Agent`` as ``run-agent`` builds it, less its polling) over a worker process."""

    agent: _Agent
    server: RecordingServer
    requests: int = 0

    def ask(self, frame: int, positives=(), negatives=(), box=None, **extra) -> tuple[list[dict] | None, str | None]:
        """``(shapes, None)`` for a completed request, ``(None, message)`` for a failed one."""
        self.requests += 1
        params = {
            "type": "interact",
            "task": 1,
            "frame": frame,
            "pos_points": [list(p) for p in positives],
            "neg_points": [list(p) for p in negatives],
            "obj_bbox": [] if box is None else [list(box[0]), list(box[1])],
            **extra,
        }
        self.agent._process_ar({"ar_id": f"ar-{self.requests}", "ar_params": params})
        outcome, body = self.server.posts[-1]
        if outcome == "complete":
            return body["shapes"], None
        assert outcome == "fail", outcome
        return None, body["exc_info"]


@pytest.fixture(scope="module")
def samples(data_root):
    dataset = GrabCutDataset(data_root / "GrabCut")
    return [dataset[i] for i in OBJECTS]


@pytest.fixture(scope="module")
def agent(samples):
    LocalFrames.frames = {i: s.image for i, s in enumerate(samples)}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ADAPTIVECLICK_PREDICTOR", "baseline")  # what the worker process reads at import
        env.setenv("ADAPTIVECLICK_MAX_PROMPTS", "20")
        executor = RecoverableExecutor(
            initializer=_worker_init,
            initargs=[FunctionLoader(MODULE, None, {}), _default_tracking_state_id_generator],
        )
        spec = executor.result(executor.submit(_worker_job_get_function_spec))  # starts the worker
    server = RecordingServer()
    agent = object.__new__(_Agent)  # what _Agent.__init__ sets, but the queue watcher
    agent._client = SimpleNamespace(api_client=server, logger=logging.getLogger("cvat-agent"))
    agent._function_id, agent._agent_id = 1, "test-agent"
    agent._function_driver = LocalFrames(agent._client, executor, spec)
    agent._task_cache_limiter = SimpleNamespace(using_cache_for_task=lambda task: contextlib.nullcontext())
    with executor:
        yield Agent(agent, server)


def mask_of(shapes: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """The one mask shape's bitmap (all False when the agent answered no shape)."""
    if not shapes:
        return np.zeros(shape, bool)
    (only,) = shapes
    assert only["type"] == "mask" and 0 < float(only["attributes"][0]["value"]) <= 1
    return decode_mask(only["points"], image_width=shape[1], image_height=shape[0])


def iou(mask: np.ndarray, sample) -> float:
    valid = ~sample.ignore
    return float((mask & sample.mask & valid).sum() / max(1, ((mask | sample.mask) & valid).sum()))


def label_studio(ls_client, sample, clicks, box=None) -> np.ndarray:
    """The Label Studio path's mask for the same prompts (``/predict`` on the baseline, clicks at pixel centres in
    percent, the box as a rectangle), in the annotator's order."""
    h, w = sample.mask.shape
    buffer = io.BytesIO()
    Image.fromarray(sample.image).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    regions = []
    if box is not None:  # the pixels the interactor reads from CVAT's corners, as percent of pixel centres
        _, (top, bottom, left, right) = clicks_for(InteractorPrompt((), (), box), h, w)
        value = {
            "x": (left + 0.5) * 100 / w,
            "y": (top + 0.5) * 100 / h,
            "width": (right - left) * 100 / w,
            "height": (bottom - top) * 100 / h,
        }
        regions.append({"type": "rectanglelabels", "from_name": "box", "to_name": "image",
                        "value": {**value, "rotation": 0, "rectanglelabels": ["Object"]}})  # fmt: skip
    for y, x, positive in clicks:
        value = {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "keypointlabels": ["Object"]}
        regions.append({"type": "keypointlabels", "from_name": "click", "to_name": "image",
                        "is_positive": positive, "value": value})  # fmt: skip
    body = {
        "tasks": [{"id": 1, "data": {"image": url}}],
        "project": "1.1",
        "label_config": recommended_config(),
        "params": {"context": {"result": regions}},
    }
    reply = ls_client.post("/predict", json=body)
    assert reply.status_code == 200, reply.json
    brush = next(r for r in reply.json["results"][0]["result"] if r["type"] == "brushlabels")
    return decode_rle(brush["value"]["rle"], h, w)


@pytest.fixture(scope="module")
def ls_client(tmp_path_factory):
    """The Label Studio backend on the baseline (its registry in a fresh folder: the configured predictor)."""
    settings = Settings(model_dir=tmp_path_factory.mktemp("models"))
    return create_app(settings, predictor=GrabCutPredictor()).test_client()


def session(agent: Agent, ls_client, frame: int, sample, with_box: bool) -> tuple[list[float], list[float]]:
    """The NoC annotator's session on the agent (its clicks placed on the agent's masks), optionally after the
    object's box; ``(agent IoUs, Label Studio IoUs)`` after each prompt."""
    h, w = sample.mask.shape
    box = None
    if with_box:
        top, bottom, left, right = mask_bbox(sample.mask)
        box = ((left, top), (right + 1, bottom + 1))  # CVAT's corners: the far edge of the last pixel
    clicker, clicks = Clicker(sample.gt), []
    agent_ious, ls_ious = [], []
    pred = np.zeros((h, w), bool)
    if box is not None:
        shapes, error = agent.ask(frame, box=box)
        assert error is None, error
        pred = mask_of(shapes, (h, w))
        agent_ious.append(iou(pred, sample))
        ls_ious.append(iou(label_studio(ls_client, sample, [], box), sample))
    for _ in range(CLICKS if box is None else 2):
        clicks.append(clicker.make_next_click(pred))
        positives = [(x, y) for y, x, p in clicks if p]
        negatives = [(x, y) for y, x, p in clicks if not p]
        shapes, error = agent.ask(frame, positives, negatives, box)
        assert error is None, error
        pred = mask_of(shapes, (h, w))
        agent_ious.append(iou(pred, sample))
        ls_ious.append(iou(label_studio(ls_client, sample, clicks, box), sample))
    return agent_ious, ls_ious


def matching_curves(agent, ls_client, samples, with_box: bool, title: str) -> np.ndarray:
    """Every sample's session on both paths: the mean IoU curves, printed under ``title`` and within 0.02 of each
    other; the agent's curve is returned."""
    agent_ious, ls_ious = zip(*(session(agent, ls_client, i, s, with_box=with_box) for i, s in enumerate(samples)))
    agent_curve, ls_curve = np.mean(agent_ious, axis=0), np.mean(ls_ious, axis=0)
    print(f"\nmIoU {title} on {len(samples)} GrabCut objects, baseline:")
    print("  CVAT agent  ", " ".join(f"{v:.3f}" for v in agent_curve))
    print("  Label Studio", " ".join(f"{v:.3f}" for v in ls_curve))
    assert np.all(np.abs(agent_curve - ls_curve) <= 0.02), (agent_curve, ls_curve)
    return agent_curve


def test_noc_sessions_match_the_label_studio_path(agent, ls_client, samples):
    agent_curve = matching_curves(agent, ls_client, samples, False, f"after 1..{CLICKS} clicks")
    assert agent_curve[-1] > 0.8  # the clicks do find the objects


def test_box_sessions_match_the_label_studio_path(agent, ls_client, samples):
    """CVAT's optional box: the baseline starts GrabCut from the rectangle, on either path."""
    matching_curves(agent, ls_client, samples, True, "of the box, then 1..2 clicks")


def test_the_frame_is_decoded_once_and_clicks_are_cached(agent, samples):
    """The driver keeps the preprocessed frame per task, frame and region: a later click sends no image, and the
    session cache answers the clicks it saw (the same mask for the same prompt)."""
    h, w = samples[0].mask.shape
    first, _ = agent.ask(0, [(w // 2, h // 2)])
    again, _ = agent.ask(0, [(w // 2, h // 2)])
    assert np.array_equal(mask_of(first, (h, w)), mask_of(again, (h, w)))
    LocalFrames.frames, frames = {}, LocalFrames.frames  # asked for the frame again, the request would fail
    try:
        shapes, error = agent.ask(0, [(w // 2, h // 2)], [(3, 3)])
    finally:
        LocalFrames.frames = frames
    assert error is None and mask_of(shapes, (h, w)).any()


@pytest.mark.parametrize(
    "prompt, message",
    [
        ({"positives": [(5, 5)] * 21}, "too many points (21 points and box; at most 20, ADAPTIVECLICK_MAX_PROMPTS)"),
        ({"negatives": [(5, 5)]}, "at least one positive point (or a box) is needed"),
        ({"positives": [(5000, 5)]}, "positive point x=5000 lies outside the"),
        ({"box": ((1, 1), (9000, 9))}, "box x lies outside the"),
    ],
)
def test_a_refused_prompt_is_an_invalid_request_and_the_agent_goes_on(agent, samples, prompt, message):
    shapes, error = agent.ask(1, **prompt)
    assert shapes is None and error.startswith("Invalid annotation request: ") and message in error, error
    h, w = samples[1].mask.shape
    shapes, error = agent.ask(1, [(w // 2, h // 2)])  # the worker process is still there
    assert error is None and mask_of(shapes, (h, w)).any()


def test_a_box_where_the_spec_allows_none_is_refused_by_the_driver(agent, samples):
    """What the spec does not allow never reaches the function: the driver refuses it with the same error (here
    for a spec without boxes; ours takes an optional box)."""
    driver = agent.agent._function_driver
    no_box = attrs.evolve(driver._function_spec, min_bounding_boxes=None)
    agent.agent._function_driver = LocalFrames(driver._client, driver._executor, no_box)
    try:
        shapes, error = agent.ask(1, [(5, 5)], box=((1, 1), (9, 9)))
    finally:
        agent.agent._function_driver = driver
    assert shapes is None and error == "Invalid annotation request: bounding boxes are not supported"
