"""Settings from the environment: names, defaults, parsing and the errors for bad values."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from adaptiveclick.backend.settings import Settings, SettingsError
from adaptiveclick.labelstudio.polygons import DEFAULT_TOLERANCE


def test_defaults():
    s = Settings.from_env({})
    assert s.predictor == "baseline" and s.device == "auto" and s.label_studio.url is None
    assert s.basic_auth is None and s.log_level == "INFO" and s.cache_bytes == 2048 << 20
    assert s.threads == 16 and s.model_dir == Path("models")
    assert (s.label_studio.polygons.tolerance, s.label_studio.polygons.holes) == (DEFAULT_TOLERANCE, "seam")
    assert s.replica_name == socket.gethostname() and s.training_runner == "local"
    assert s.training_job_template == Path("/etc/adaptiveclick/finetune-job.yaml")


def test_reads_the_conventional_names(tmp_path):
    s = Settings.from_env(
        {
            "ADAPTIVECLICK_PREDICTOR": "random:base#device=cpu",
            "DEVICE": "cpu",
            "LABEL_STUDIO_URL": "http://ls.local:8080/",
            "LABEL_STUDIO_API_KEY": " key ",
            "MODEL_DIR": str(tmp_path),
            "BASIC_AUTH_USER": "u",
            "BASIC_AUTH_PASS": "p",
            "LOG_LEVEL": "debug",
            "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
            "ADAPTIVECLICK_CACHE_MB": "16",
            "ADAPTIVECLICK_MAX_IMAGE_MB": "2",
            "ADAPTIVECLICK_MAX_IMAGE_PIXELS": "1000",
            "ADAPTIVECLICK_FETCH_TIMEOUT": "2.5",
            "ADAPTIVECLICK_THREADS": "8",
            "ADAPTIVECLICK_THRESHOLD": "0.6",
            "ADAPTIVECLICK_POLYGON_TOLERANCE": "0",
            "ADAPTIVECLICK_POLYGON_HOLES": " Fill ",
            "ADAPTIVECLICK_REPLICA_NAME": "adaptiveclick-7d9f-x2",
            "ADAPTIVECLICK_TRAINING_RUNNER": "kubernetes",
            "ADAPTIVECLICK_TRAINING_JOB_TEMPLATE": str(tmp_path / "job.yaml"),
        }
    )
    assert s.predictor == "random:base#device=cpu" and s.device == "cpu"
    ls = s.label_studio
    assert ls.url == "http://ls.local:8080" and ls.api_key == "key" and ls.connected
    assert s.model_dir == tmp_path and s.basic_auth == ("u", "p") and s.log_level == "DEBUG"
    assert ls.local_files_document_root == tmp_path.resolve()
    assert (s.cache_bytes, ls.limits.max_bytes, ls.limits.max_pixels) == (16 << 20, 2 << 20, 1000)
    assert (ls.fetch_timeout, s.threads, s.threshold) == (2.5, 8, 0.6)
    assert (ls.polygons.tolerance, ls.polygons.holes) == (0.0, "fill")
    assert (s.replica_name, s.training_runner) == ("adaptiveclick-7d9f-x2", "kubernetes")
    assert s.training_job_template == tmp_path / "job.yaml"


def test_overrides_win():
    s = Settings.from_env({"ADAPTIVECLICK_PREDICTOR": "random:huge"}, predictor="baseline", threads=None)
    assert s.predictor == "baseline" and s.threads == 16
    with pytest.raises(TypeError, match="unknown settings"):
        Settings.from_env({}, colour="red")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ADAPTIVECLICK_PREDICTOR": "random:gigantic"}, "ADAPTIVECLICK_PREDICTOR"),
        ({"LABEL_STUDIO_URL": "ls.local:8080"}, "LABEL_STUDIO_URL"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"),
        ({"LOCAL_FILES_DOCUMENT_ROOT": "/"}, "filesystem root"),
        ({"ADAPTIVECLICK_CACHE_MB": "lots"}, "ADAPTIVECLICK_CACHE_MB must be a int"),
        ({"ADAPTIVECLICK_THREADS": "2"}, "ADAPTIVECLICK_THREADS must be more than 2"),
        ({"ADAPTIVECLICK_MAX_IMAGE_MB": "0"}, "ADAPTIVECLICK_MAX_IMAGE_MB must be positive"),
        ({"ADAPTIVECLICK_THRESHOLD": "1.5"}, "THRESHOLD"),
        ({"ADAPTIVECLICK_FETCH_TIMEOUT": "-1"}, "FETCH_TIMEOUT"),
        ({"ADAPTIVECLICK_POLYGON_TOLERANCE": "-0.5"}, "ADAPTIVECLICK_POLYGON_TOLERANCE must be a number of pixels"),
        ({"ADAPTIVECLICK_POLYGON_TOLERANCE": "nan"}, "ADAPTIVECLICK_POLYGON_TOLERANCE must be a number of pixels"),
        ({"ADAPTIVECLICK_POLYGON_TOLERANCE": "fine"}, "ADAPTIVECLICK_POLYGON_TOLERANCE must be a float"),
        ({"ADAPTIVECLICK_POLYGON_HOLES": "separate"}, "ADAPTIVECLICK_POLYGON_HOLES must be seam .* or fill"),
        ({"ADAPTIVECLICK_TRAINING_RUNNER": "slurm"}, "ADAPTIVECLICK_TRAINING_RUNNER must be one of local, kubernetes"),
        ({"ADAPTIVECLICK_REPLICA_NAME": "a\tb"}, "ADAPTIVECLICK_REPLICA_NAME must be 1 to 253 printable"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
