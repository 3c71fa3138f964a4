"""AdaptiveClick as a CVAT interaction function, for CVAT Online and Enterprise: CVAT's agent (``cvat-cli function
run-agent``, PyPI ``cvat-cli``) asks the CVAT server for the annotators' clicks and answers them on the team's own
machine, which only needs to reach the server (HTTPS out; nothing connects to it)::

    cvat-cli --server-host https://app.cvat.ai --auth USER function create-native "AdaptiveClick" \\
        --function-module adaptiveclick.backend.cvat_agent                   # prints the function's id
    cvat-cli --server-host https://app.cvat.ai --auth USER function run-agent ID \\
        --function-module adaptiveclick.backend.cvat_agent

The module is the function (``cvat_sdk.auto_annotation.InteractionFunction``):

* :data:`spec`: positive and negative points and an optional box; no minimum of either, since a box alone is a
  prompt (:func:`backend.interactor.Interactor.check` refuses a prompt with no positive point and no box).
* :func:`preprocess_image`: the frame decoded once (EXIF orientation, ``ADAPTIVECLICK_MAX_IMAGE_PIXELS``) into a
  :class:`~backend.interactor.Frame`, which the agent keeps per task, frame and region for 10 minutes; its key
  names the frame's cached clicks, and the predictor keeps its per-image state while clicks stay on the frame.
* :func:`detect`: the prompt answered by :class:`~backend.interactor.Interactor`, as the nuclio function answers
  it (the same click replay, session cache, ``ADAPTIVECLICK_MAX_PROMPTS`` and ``ADAPTIVECLICK_REQUEST_DEADLINE``);
  one mask shape holding every part of the object, its confidence (the mean probability over the mask) as an
  attribute, or no shape when the mask is empty.

The predictor is the backend's: ``ADAPTIVECLICK_PREDICTOR``, ``DEVICE``, ``ADAPTIVECLICK_THRESHOLD``, ... read by
:class:`backend.settings.Settings` when the module is imported (a bad setting stops ``create-native`` and the
agent at once), loaded at the first frame. A prompt the function cannot answer (too many points, a point outside
the frame, no positive point and no box, too large a frame, the deadline) raises the agent's own ``BadArError``,
which the agent reports to CVAT as "Invalid annotation request: <why>" before it takes the next request; a prompt
the spec does not allow is refused by the agent before it reaches the function.
"""

from __future__ import annotations

import threading

import cvat_sdk.auto_annotation as cvataa
import PIL.Image
from cvat_sdk.masks import encode_mask
from cvat_sdk.models import AttributeValRequest

from adaptiveclick.labelstudio.decode import image_rgb
from adaptiveclick.labelstudio.errors import RequestError

from .interactor import Frame, Interactor, InteractorPrompt
from .settings import Settings

try:  # the agent's own error for a request it cannot answer (the agent reports its message to CVAT)
    from cvat_cli._internal.agent_driver import BadArError
except ImportError as exc:  # pragma: no cover - the cvat extra pins a cvat-cli that has it
    raise ImportError(
        "adaptiveclick.backend.cvat_agent runs under CVAT's agent: pip install 'adaptiveclick-backend[cvat]' "
        f"(cvat-cli 2.80 or later) ({exc})"
    ) from exc

CONFIDENCE = cvataa.InteractionResultAttributes.CONFIDENCE

#: points of either kind and an optional box, none required: a box alone is a prompt
spec = cvataa.InteractionFunctionSpec(min_pos_points=0, min_neg_points=0, min_bounding_boxes=0)

SETTINGS = Settings.from_env()
_interactor: Interactor | None = None
_lock = threading.Lock()


def interactor() -> Interactor:
    """The interactor of :data:`SETTINGS`, built at the first call."""
    global _interactor
    with _lock:
        if _interactor is None:
            _interactor = Interactor.from_settings(SETTINGS)
        return _interactor


def preprocess_image(context: cvataa.InteractionFunctionContext, image: PIL.Image.Image) -> Frame:
    """The frame as the predictor takes it (see the module docstring); ``BadArError`` for a frame beyond the
    image limits or one PIL cannot decode."""
    try:
        return Frame.of(image_rgb(image, SETTINGS.label_studio.limits, source="frame"))
    except RequestError as exc:
        raise BadArError(exc.message) from None


def detect(
    context: cvataa.InteractionFunctionContext, pp_image: Frame, prompts: cvataa.InteractionPrompts
) -> list[cvataa.InteractionResultShape]:
    """One mask shape for ``prompts`` on the frame (none when the mask is empty); ``BadArError`` for a prompt the
    interactor cannot answer."""
    box = prompts.bounding_box
    prompt = InteractorPrompt(
        tuple((float(x), float(y)) for x, y in prompts.pos_points),
        tuple((float(x), float(y)) for x, y in prompts.neg_points),
        None if box is None else ((float(box[0][0]), float(box[0][1])), (float(box[1][0]), float(box[1][1]))),
    )
    try:
        result = interactor().segment(pp_image, prompt)
    except RequestError as exc:
        raise BadArError(exc.message) from None
    if not result.mask.any():
        return []
    confidence = AttributeValRequest(spec_id=int(CONFIDENCE), value=f"{result.score:g}")
    return [cvataa.InteractionResultShape(type="mask", points=encode_mask(result.mask), attributes=[confidence])]
