"""backend.access: the two credentials, what anonymous callers get, failed-auth rate limiting; the bounded
per-project tables; the fixed /metrics label sets; the new settings."""

from __future__ import annotations

import pytest

from adaptiveclick.backend.access import (
    AccessPolicy,
    Caller,
    FailedAuthLimiter,
    Forbidden,
    Need,
    TooManyFailures,
    Unauthorized,
)
from adaptiveclick.backend.metrics import method_label, status_class
from adaptiveclick.backend.projects import KnownProjects, ProjectTable
from adaptiveclick.backend.settings import Settings, SettingsError

TOKEN = "t" * 32
ANONYMOUS = Caller()
LABEL_STUDIO = Caller(connection=True)


def policy(basic=("ls", "pw"), token: str | None = TOKEN, grants=()) -> AccessPolicy:
    return AccessPolicy(basic, token, grants)


def test_credentials_prove_who_calls():
    access = policy()
    assert access.authenticate(None, None, "c") == ANONYMOUS
    assert access.authenticate("basic", ("ls", "pw"), "c") == LABEL_STUDIO
    operator = access.authenticate("bearer", TOKEN, "c")
    assert operator.operator and operator.connection
    for scheme, credentials in (("basic", ("ls", "nope")), ("basic", ("x", "pw")), ("bearer", "t" * 31), ("x", None)):
        with pytest.raises(Unauthorized) as caught:
            access.authenticate(scheme, credentials, "c")
        assert caught.value.status_code == 401 and caught.value.headers["WWW-Authenticate"]
    # a credential of a kind this backend has none of configured proves nothing: anonymous, not refused
    assert policy(token=None).authenticate("bearer", TOKEN, "c") == ANONYMOUS
    assert policy(basic=None).authenticate("basic", ("ls", "pw"), "c") == ANONYMOUS


def test_what_each_caller_may_do_with_the_connection_credential_set():
    access = policy()
    for need in (Need.READ, Need.CHANGE):
        access.check(LABEL_STUDIO, need, "x")
        with pytest.raises(Unauthorized, match="BASIC_AUTH_USER"):
            access.check(ANONYMOUS, need, "x")
    with pytest.raises(Unauthorized, match="operator token") as caught:
        access.check(LABEL_STUDIO, Need.OPERATOR, "POST /versions/1")
    assert "Bearer" in caught.value.headers["WWW-Authenticate"]
    access.check(Caller(connection=True, operator=True), Need.OPERATOR, "x")
    assert access.may_use_backend_credentials(LABEL_STUDIO) and not access.may_use_backend_credentials(ANONYMOUS)


def test_anonymous_means_read_only_without_a_connection_credential():
    access = policy(basic=None, token=None)
    access.check(ANONYMOUS, Need.READ, "a click")
    with pytest.raises(Forbidden, match="BASIC_AUTH_USER and BASIC_AUTH_PASS") as caught:
        access.check(ANONYMOUS, Need.CHANGE, "pinning a model version")
    assert "pinning a model version" in caught.value.message and caught.value.status_code == 403
    with pytest.raises(Forbidden, match="operator routes are off: set ADAPTIVECLICK_ADMIN_TOKEN"):
        access.check(ANONYMOUS, Need.OPERATOR, "POST /jobs/1/annotate")
    assert not access.may_use_backend_credentials(ANONYMOUS)
    # the unsafe laptop setting opens what it names, and never the operator routes
    laptop = policy(basic=None, token=None, grants=("changes", "media"))
    laptop.check(ANONYMOUS, Need.CHANGE, "x")
    assert laptop.may_use_backend_credentials(ANONYMOUS)
    with pytest.raises(Forbidden):
        laptop.check(ANONYMOUS, Need.OPERATOR, "x")
    # ... and nothing where a connection credential is set
    assert policy(grants=("changes", "media")).anonymous_grants == ()


def test_failed_attempts_are_rate_limited_per_address_without_locking_out_label_studio():
    now = [0.0]
    limiter = FailedAuthLimiter(limit=3, window_s=60, max_clients=100, clock=lambda: now[0])
    access = AccessPolicy(("ls", "pw"), None, limiter=limiter)
    access.authenticate("basic", ("ls", "pw"), "10.0.0.2")  # Label Studio's address authenticated once
    for client in ("10.0.0.9", "10.0.0.2"):
        for _ in range(3):
            with pytest.raises(Unauthorized):
                access.authenticate("basic", ("ls", "guess"), client)
    with pytest.raises(TooManyFailures) as caught:  # not even checked: the right password gets 429 too
        access.authenticate("basic", ("ls", "pw"), "10.0.0.9")
    assert caught.value.status_code == 429 and int(caught.value.headers["Retry-After"]) > 0
    assert access.authenticate("basic", ("ls", "pw"), "10.0.0.2") == LABEL_STUDIO  # never locked out
    now[0] = 61.0
    assert access.authenticate("basic", ("ls", "pw"), "10.0.0.9") == LABEL_STUDIO
    for k in range(500):  # made-up addresses cannot grow it
        limiter.failed(f"192.0.2.{k}")
    assert len(limiter._failures) <= 100


def test_project_tables_are_bounded_and_known_projects_are_set_up_or_have_a_line():
    table: ProjectTable[int] = ProjectTable(3)
    for project in range(10):
        table.put(project, project * 10)
    assert table.snapshot() == {7: 70, 8: 80, 9: 90}
    assert table.get(7, None) == 70 and table.get(1, None) is None
    table.put(11, 0)  # 7 was used last: 8 goes
    assert set(table.snapshot()) == {7, 9, 11}
    lines = {42}
    known = KnownProjects(2, lambda: lines)
    assert 42 in known and 1 not in known and None not in known
    for project in (1, 2, 3):
        known.saw_setup(project)
    assert 1 not in known and 2 in known and 3 in known


def test_metrics_labels_come_from_fixed_sets():
    assert [method_label(m) for m in ("GET", "POST", "BREW", "get", "X" * 300)] == [
        "GET",
        "POST",
        "other",
        "other",
        "other",
    ]
    assert [status_class(s) for s in (200, 201, 404, 503, 999, 42)] == ["2xx", "2xx", "4xx", "5xx", "other", "other"]


def test_new_settings_are_read_and_checked():
    s = Settings.from_env(
        {
            "ADAPTIVECLICK_ADMIN_TOKEN": TOKEN,
            "ADAPTIVECLICK_UNSAFE_ANONYMOUS": "Media, changes",
            "ADAPTIVECLICK_MAX_FINETUNES": "2",
            "ADAPTIVECLICK_MAX_ANNOTATE_JOBS": "3",
            "ADAPTIVECLICK_MAX_PROJECTS": "50",
            "ADAPTIVECLICK_S3_BUCKETS": "images, other-bucket",
        }
    )
    assert s.admin_token == TOKEN and s.unsafe_anonymous == ("changes", "media")
    assert (s.max_finetunes, s.max_annotate_jobs, s.max_projects) == (2, 3, 50)
    assert s.label_studio.s3_buckets == ("images", "other-bucket") and TOKEN in s.secrets
    assert Settings.from_env({"ADAPTIVECLICK_UNSAFE_ANONYMOUS": "all"}).unsafe_anonymous == ("changes", "media")
    defaults = Settings()
    assert (defaults.admin_token, defaults.unsafe_anonymous, defaults.max_finetunes) == (None, (), 1)
    for env, message in (
        ({"ADAPTIVECLICK_ADMIN_TOKEN": "short"}, "at least 24 characters"),
        ({"ADAPTIVECLICK_UNSAFE_ANONYMOUS": "everything"}, "media or all|changes, media or all"),
        (
            {"ADAPTIVECLICK_UNSAFE_ANONYMOUS": "media", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "p"},
            "only to a backend without BASIC_AUTH",
        ),
        ({"ADAPTIVECLICK_MAX_FINETUNES": "0"}, "ADAPTIVECLICK_MAX_FINETUNES must be at least 1"),
        ({"ADAPTIVECLICK_S3_BUCKETS": "Bad_Bucket"}, "ADAPTIVECLICK_S3_BUCKETS"),
    ):
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(env)
