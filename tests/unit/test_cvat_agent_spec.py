"""The CVAT agent function's spec (backend.cvat_agent) through the real cvat-cli: ``function create-native`` with
``--function-module adaptiveclick.backend.cvat_agent`` registers an interactor that takes positive and negative
points and an optional box, and the agent's compatibility checks accept the function CVAT stores for it; a
registration the function cannot serve is refused by the same checks. (Prompts through the agent's driver and
worker process: tests/integration/test_cvat_agent.py.)"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import attrs
import pytest
from cvat_cli._internal.agent import _Agent, get_function_driver_class
from cvat_cli._internal.agent_driver_interaction import AgentInteractionFunctionDriver
from cvat_cli._internal.commands_functions import FunctionCreateNative
from cvat_cli._internal.common import CriticalError, FunctionLoader

MODULE = "adaptiveclick.backend.cvat_agent"


class FakeServer:
    """CVAT's ``POST /api/functions``: keeps what create-native sends and answers with the stored function (the
    fields the request left out at the server's defaults: no negative points, no box)."""

    def __init__(self) -> None:
        self.functions: list[dict] = []

    def call_api(self, path, method, body=None, **kwargs):
        assert (path, method) == ("/api/functions", "POST")
        stored = {"id": 1 + len(self.functions), "min_neg_points": -1, "startswith_box": False,
                  "startswith_box_optional": False, **body}  # fmt: skip
        self.functions.append(stored)
        return None, SimpleNamespace(data=json.dumps(stored).encode())


def create_native(name: str = "AdaptiveClick") -> dict:
    """What ``cvat-cli function create-native NAME --function-module adaptiveclick.backend.cvat_agent`` makes the
    server store."""
    server = FakeServer()
    client = SimpleNamespace(api_client=server, logger=logging.getLogger("cvat-cli"))
    FunctionCreateNative().execute(
        client, name=name, visibility="private", function_loader=FunctionLoader(MODULE, None, {})
    )
    (stored,) = server.functions
    return stored


def check_compatible(remote: dict, **spec_changes) -> None:
    """The check ``cvat-cli function run-agent`` makes at start (CriticalError when it refuses), for the module's
    spec (or the spec with ``spec_changes``)."""
    spec = attrs.evolve(FunctionLoader(MODULE, None, {}).load().spec, **spec_changes)
    agent = SimpleNamespace(_function_driver=get_function_driver_class(spec)(None, None, spec))
    _Agent._validate_function_compatibility(agent, remote)


def test_create_native_registers_points_and_an_optional_box():
    stored = create_native()
    assert stored["provider"] == "native" and stored["kind"] == "interactor" and stored["name"] == "AdaptiveClick"
    assert stored["min_pos_points"] == 0 and stored["min_neg_points"] == 0
    assert stored["startswith_box_optional"] is True and stored["startswith_box"] is False


def test_the_agent_accepts_the_function_created_with_the_spec():
    function = FunctionLoader(MODULE, None, {}).load()
    assert get_function_driver_class(function.spec) is AgentInteractionFunctionDriver
    check_compatible(create_native())
    check_compatible({**create_native(), "startswith_box": True, "startswith_box_optional": False})  # box required


@pytest.mark.parametrize(
    "change, spec_changes, refusal",
    [
        ({"kind": "detector"}, {}, "kind is 'detector'"),
        ({"provider": "nuclio"}, {}, "provider 'nuclio'"),
        ({}, {"min_bounding_boxes": None}, "allows prompts with bounding boxes, but the function object does not"),
        ({}, {"min_neg_points": None}, "allows prompts with negative points, but the function object does not"),
    ],
)
def test_the_compatibility_check_is_the_agents_own(change, spec_changes, refusal):
    """The same check refuses what a function cannot serve (a spec without boxes or negative points could not
    serve what CVAT stored for ours), so the acceptance above means something."""
    with pytest.raises(CriticalError, match=refusal):
        check_compatible({**create_native(), **change}, **spec_changes)
