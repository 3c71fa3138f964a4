"""The publication gate: a fine-tuned candidate goes live only if it beats the weights currently served.

Both are validated by NoC@85/90 on the fine-tune's validation split with the evaluation module's protocol; the
candidate is *better* when its NoC@90 is lower, or equal with a lower NoC@85 (fewer clicks to a good mask is the
whole promise). ``force`` publishes regardless (the decision still records both results). When the registry has
no current version yet the candidate is compared with the weights the fine-tune started from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from adaptiveclick.storage.registry import Registry, VersionInfo

log = logging.getLogger(__name__)

Evaluate = Callable[..., dict]  # (predictor, samples, n_clicks=...) -> {"noc85", "noc90", ...}
TOLERANCE = 1e-9


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    candidate: dict
    current: dict | None
    current_name: str | None
    forced: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def is_better(candidate: dict, current: dict) -> bool:
    """Lower NoC@90 wins; on a tie, lower NoC@85."""
    if abs(candidate["noc90"] - current["noc90"]) > TOLERANCE:
        return candidate["noc90"] < current["noc90"]
    return candidate["noc85"] < current["noc85"] - TOLERANCE


def _default_evaluate(predictor, samples, n_clicks: int = 20) -> dict:
    from .validation import noc_metrics

    return noc_metrics(predictor, samples, n_clicks)


def gate(
    candidate,
    current,
    samples: Sequence,
    n_clicks: int = 20,
    force: bool = False,
    current_name: str | None = None,
    evaluate: Evaluate | None = None,
) -> GateDecision:
    """Validate ``candidate`` and ``current`` (predictors; ``current`` may be None) and decide.

    Args:
        samples: validation samples (:class:`evaluation.Sample`).
        evaluate: the NoC evaluation, by default the evaluation module's protocol (tests may pass another).
    """
    if not samples:
        raise ValueError(
            "the gate needs validation samples: the validation split is empty (use a larger project "
            "or --val-fraction), or pass --force to publish without comparison"
        )
    evaluate = evaluate or _default_evaluate
    candidate_metrics = evaluate(candidate, samples, n_clicks=n_clicks)
    current_metrics = evaluate(current, samples, n_clicks=n_clicks) if current is not None else None
    if current_metrics is None:
        publish, reason = True, "nothing to compare with"
    elif is_better(candidate_metrics, current_metrics):
        publish, reason = (
            True,
            (
                f"candidate is better: NoC@90 {candidate_metrics['noc90']:.3f} vs "
                f"{current_metrics['noc90']:.3f}, NoC@85 {candidate_metrics['noc85']:.3f} vs "
                f"{current_metrics['noc85']:.3f}"
            ),
        )
    else:
        publish, reason = (
            False,
            (
                f"candidate is not better: NoC@90 {candidate_metrics['noc90']:.3f} vs "
                f"{current_metrics['noc90']:.3f}, NoC@85 {candidate_metrics['noc85']:.3f} vs "
                f"{current_metrics['noc85']:.3f}"
            ),
        )
    if force and not publish:
        publish, reason = True, f"forced ({reason})"
    decision = GateDecision(publish, reason, candidate_metrics, current_metrics, current_name, force)
    log.info("gate decision", extra={"publish": publish, "reason": reason})
    return decision


def publish_candidate(
    registry: Registry,
    weights,
    decision: GateDecision,
    config: dict | None = None,
    extra_metrics: dict | None = None,
    version: str | None = None,
    parent: str | None = None,
    parent_line: str | None = None,
) -> VersionInfo | None:
    """Publish ``weights`` as a new current version when the decision says so (None otherwise)."""
    if not decision.publish:
        return None
    summary = {k: v for k, v in decision.candidate.items() if k != "miou_per_click"}
    metrics = {
        **summary,
        "gate": {
            "reason": decision.reason,
            "forced": decision.forced,
            "compared_with": decision.current_name,
            "current": decision.current,
        },
        **(extra_metrics or {}),
    }
    info = registry.publish(
        weights, version=version, config=config, metrics=metrics, parent=parent, parent_line=parent_line
    )
    log.info("published", extra={"version": info.version, "registry": registry.uri, "sha256": info.sha256})
    return info
