"""A whole fine-tune job: gather the data, train (possibly under torchrun), gate, publish.

The output folder holds everything a job needs to be resumed and inspected::

    OUT/train_config.json     the training configuration, the network configuration, the starting point
    OUT/records.json          the training and validation images (dataset images or imported Label Studio tasks)
    OUT/data/                 imported Label Studio images, masks and import report (manifest.json)
    OUT/checkpoints/last.pt   the latest training state
    OUT/metrics.jsonl, metrics.png, status.json
    OUT/model.pth             the fine-tuned weights
    OUT/gate.json             the gate's decision and the published version, if any
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import TrainConfig
from .data import dataset_records, records_from_json, records_to_json, split_records, validation_samples
from .distributed import gather_objects, init_distributed, shutdown
from .metrics_log import write_json_atomic, write_status
from .trainer import CONFIG_FILE, WEIGHTS_FILE, Trainer, checkpoint_path, load_config, save_config

log = logging.getLogger(__name__)

RECORDS_FILE = "records.json"
GATE_FILE = "gate.json"


@dataclass
class JobOptions:
    """What ``adaptiveclick finetune`` was asked to do (see finetune.cli for the meaning of each option)."""

    output: Path
    train: TrainConfig = field(default_factory=TrainConfig)
    steps: int | None = None
    epochs: float | None = None
    resume: bool = False
    init: str = ""
    size: str | None = None
    datasets: list[str] = field(default_factory=list)
    data_root: Path | None = None
    ls_exports: list[Path] = field(default_factory=list)
    ls_files_root: Path | None = None  # local files of export tasks (default: the first export's folder)
    ls_project: str | None = None
    ls_url: str | None = None
    ls_api_key: str | None = None
    ls_image_key: str | None = None
    ls_labels: list[str] | None = None
    val_fraction: float = 0.2
    val_max_images: int = 0
    device: str = "auto"
    workers: int = 2
    progress: bool = True
    registry: str | None = None
    project: int | None = None  # the model line published to: the project's (default: --ls-project), else base
    force: bool = False
    publish: bool = True
    version: str | None = None


class JobError(RuntimeError):
    """The job cannot start or go on (bad data, nothing to train on, an output folder in use...)."""


def gather_records(opts: JobOptions, context) -> list:
    """Image records of every requested source. Label Studio is read and imported by the main process; the
    others read the import's manifest."""
    from adaptiveclick.labelstudio.api import fetch_tasks, load_export
    from adaptiveclick.labelstudio.settings import LabelStudioSettings

    from .labelstudio import image_fetcher, import_tasks, read_manifest

    records = []
    for spec in opts.datasets:
        name, _, root = spec.partition("=")
        records += dataset_records(name.strip(), opts.data_root, root.strip() or None)
    if not (opts.ls_exports or opts.ls_project):
        return records
    data_dir = opts.output / "data"
    imported, error = [], None
    if context.is_main:
        try:
            # the same checked settings as the backend's, with --ls-url/--ls-api-key over the environment
            settings = LabelStudioSettings.from_env().with_connection(opts.ls_url, opts.ls_api_key)
            tasks = [task for path in opts.ls_exports for task in load_export(path)]
            if opts.ls_project:
                tasks += fetch_tasks(settings.url, settings.api_key, opts.ls_project)
            # local files only for the operator's own exports (a job from Label Studio reads none), in one folder
            local_root = opts.ls_files_root or (opts.ls_exports[0].parent if opts.ls_exports else None)
            fetch = image_fetcher(settings, project=_project_id(opts.ls_project), local_root=local_root)
            imported, report = import_tasks(tasks, fetch, data_dir, opts.ls_image_key, opts.ls_labels)
            log.info(
                "Label Studio import",
                extra={
                    "tasks": report.tasks,
                    "tasks_used": report.tasks_used,
                    "objects": report.objects,
                    "skipped": report.reasons(),
                },
            )
        except Exception as exc:
            if not context.enabled:
                raise
            error = f"{type(exc).__name__}: {exc}"
    main_error = gather_objects(error, context)[0]  # the other processes wait here, and learn of a failure
    if main_error:
        raise JobError(f"Label Studio import failed: {main_error}")
    return records + (imported if context.is_main else read_manifest(data_dir)[0])


def _project_id(ls_project: str | None) -> int | None:
    return int(ls_project) if ls_project is not None and str(ls_project).isdigit() else None


def steps_for(opts: JobOptions, config: TrainConfig, train_images: int, world_size: int) -> int:
    if opts.steps is not None:
        return opts.steps
    if opts.epochs is not None:
        per_step = config.batch_size * config.accumulation * world_size
        return max(1, math.ceil(opts.epochs * train_images / per_step))
    return config.steps


def prepare(opts: JobOptions, context) -> tuple[TrainConfig, dict, list, list]:
    """``(train config, saved run description, train records, val records)`` for a new or resumed run."""
    out = opts.output
    if opts.resume and (out / CONFIG_FILE).is_file():
        saved = load_config(out)
        config = TrainConfig.from_dict(saved["train"])
        records = json.loads((out / RECORDS_FILE).read_text())
        train, val = records_from_json(records["train"]), records_from_json(records["val"])
        config.steps = steps_for(opts, config, len(train), context.world_size)  # a resume may change the length
        return config, saved, train, val
    if opts.resume and not (opts.datasets or opts.ls_exports or opts.ls_project):
        raise JobError(f"--resume: {out} holds no fine-tune run to resume (it has no {CONFIG_FILE})")
    if not opts.resume and (checkpoint_path(out).exists() or (out / CONFIG_FILE).exists()):
        raise JobError(f"{out} already holds a fine-tune run: pass --resume to continue it, or choose another --output")
    if not (opts.datasets or opts.ls_exports or opts.ls_project):
        raise JobError("no training data: pass --dataset, --ls-export or --ls-project")
    if not opts.init:
        raise JobError("no starting point: pass --init CHECKPOINT|mae:PATH|random[:SIZE]|registry")
    out.mkdir(parents=True, exist_ok=True)
    if context.is_main:
        write_status(out, "preparing")
    records = gather_records(opts, context)
    train, val = split_records(records, opts.val_fraction, opts.train.seed)
    if not train:
        raise JobError(
            f"no usable training images among {len(records)} (see {out / 'data' / 'manifest.json'} "
            "for the reasons annotations were skipped)"
        )
    config = opts.train
    config.steps = steps_for(opts, config, len(train), context.world_size)
    saved = {
        "init": opts.init,
        "size": opts.size,
        "val_fraction": opts.val_fraction,
        "val_max_images": opts.val_max_images,
        "images": {"train": len(train), "val": len(val)},
    }
    if context.is_main:
        write_json_atomic(out / RECORDS_FILE, {"train": records_to_json(train), "val": records_to_json(val)})
    return config, saved, train, val


def starting_network(opts: JobOptions, saved: dict):
    """``(network, description, resolved --init)``; ``--init registry`` resolves to the current version's
    weights (hash-pinned), so that the run records exactly what it started from."""
    from adaptiveclick.model.spec import pinned_spec
    from adaptiveclick.storage.registry import open_registry

    from .network import build_adaptiveclick_from, build_initial_network

    if "model_config" in saved:  # resuming: weights come from the checkpoint
        return build_adaptiveclick_from(saved["model_config"]), saved["init_description"], saved["init"]
    init = opts.init
    if init == "registry":
        if not opts.registry:
            raise JobError("--init registry needs --registry")
        current = served_version(open_registry(opts.registry), opts.project)
        if current is None:
            raise JobError(
                f"--init registry: {opts.registry} has no current version yet (neither the project's line "
                "nor the base line)"
            )
        init = str(pinned_spec(current.weights_uri, current.sha256))
    net, description = build_initial_network(init, opts.size, opts.train.seed)
    return net, description, init


def run_job(opts: JobOptions) -> dict:
    """Run the job; returns a summary (training, gate, published version). Raises JobError on bad input."""
    context = init_distributed(opts.device)
    out = opts.output
    owns_output = False  # a refused start must not mark somebody else's run as failed
    try:
        config, saved, train, val = prepare(opts, context)
        owns_output = True
        net, description, init = starting_network(opts, saved)
        if context.is_main and "model_config" not in saved:
            saved.update(init=init, model_config=asdict(net.config), init_description=description)
            save_config(out, config, saved)
        limit = saved.get("val_max_images", opts.val_max_images) or None
        samples = validation_samples(val[:limit]) if val else []
        trainer = Trainer(config, net, train, out, context, samples, workers=opts.workers, progress=opts.progress)
        if opts.resume and checkpoint_path(out).exists():
            trainer.load_checkpoint(checkpoint_path(out))
        summary = {"training": trainer.run(), "init": description, "images": saved["images"]}
        if context.is_main:
            summary["gate"] = gate_and_publish(opts, net, samples, config, summary, context)
            write_status(out, "finished", step=trainer.step, steps=config.steps, summary=summary)
        return summary
    except BaseException as exc:
        if context.is_main and owns_output:
            write_status(out, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        shutdown(context)


def gate_and_publish(opts: JobOptions, net, samples, config: TrainConfig, summary: dict, context) -> dict | None:
    """Compare with the served weights (or the starting weights when nothing is served yet) and publish to the
    registry. Main process only, after training."""
    from adaptiveclick.model.spec import pinned_spec
    from adaptiveclick.storage.registry import BASE_LINE, open_registry, project_line

    from .gate import GateDecision, gate, publish_candidate
    from .network import build_initial_network, load_network
    from .validation import network_predictor

    if not opts.registry:
        return None
    if (opts.output / GATE_FILE).is_file():  # a resumed run that had already been through the gate
        return json.loads((opts.output / GATE_FILE).read_text())
    registry = open_registry(opts.registry)
    line = registry.line(BASE_LINE if opts.project is None else project_line(opts.project))
    current_info = served_version(registry, opts.project)  # the candidate must beat what the project gets today
    if current_info is not None:
        current_net = load_network(registry.line(current_info.line).fetch_weights(current_info.version))
        current_name = f"{current_info.line}/{current_info.version}"
    else:
        saved = load_config(opts.output)
        current_name = f"starting weights: {saved['init_description']}"
        current_net = build_initial_network(saved["init"], saved.get("size"), config.seed)[0]
    if samples:
        candidate = network_predictor(net.eval(), "candidate", context.device, config.crop_size)
        current = network_predictor(current_net.eval(), current_name, context.device, config.crop_size)
        decision = gate(candidate, current, samples, config.val_clicks, opts.force, current_name)
    else:
        decision = GateDecision(
            opts.force,
            "no validation samples" + (": forced" if opts.force else ": not published (use --force)"),
            {},
            None,
            current_name,
            opts.force,
        )
    info = (
        publish_candidate(
            line,
            opts.output / WEIGHTS_FILE,
            decision,
            _config_record(config),
            {"training": summary["training"], "images": summary["images"]},
            opts.version,
            current_info.version if current_info else None,
            current_info.line if current_info else None,
        )
        if opts.publish
        else None
    )
    result = {
        **decision.to_json(),
        "registry": registry.uri,
        "line": line.line_name,
        "published": info.version if info else None,
        "predictor_spec": str(pinned_spec(info.weights_uri, info.sha256, info.version)) if info else None,
    }
    write_json_atomic(opts.output / GATE_FILE, result)
    return result


def served_version(registry, project: int | None):
    """The registry version ``project`` is served today: its pin, its own line's current version, else the base
    line's (None when the registry has none). ``--init registry`` starts from it; the gate compares with it."""
    from adaptiveclick.storage.lines import read_state

    served, _ = read_state(registry).served_for(project)
    return registry.line(served.line).read_version(served.version) if served else None


def _config_record(config: TrainConfig) -> dict:
    return {"train": asdict(config)}
