"""Redis passwords never reach logs or error messages, however QUEUE_URL is written.

Every path that shows a URL (the bot's queue start-up, `tessera worker`, the worker's own
log, a rejected setting) goes through `engine.redact.redact_url`; these tests drive those
paths with a real loopback redis-server (one with a password) and unreachable ports, and
check the captured logs, errors and console output for the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import RedisError

from bot.cli import main as cli_main
from bot.config import ConfigError, load_settings
from engine.jobs.redis_queue import RedisQueue, RedisUnavailable
from engine.jobs.worker import Worker
from engine.redact import redact_url
from storage.api import Storage
from tests.fixtures.redis_server import RedisServer, free_port, redis_server
from tests.queue_helpers import FakeExecutor

SECRET = "s3cret"
UNENCODED = "P@ss/w#rd?x"

# Every way of writing the credential that Redis clients accept, or that operators type.
FORMS = [
    "redis://host:6379/0?password={pw}",
    "redis://:{pw}@host/0",
    "redis://user:{pw}@host:6379/0",
    "rediss://host/0?db=1&password={pw}",
    "redis://host/0?db=1&password={pw}&ssl_cert_reqs=none",
    "redis://host/0?token={pw}",
    "redis://host/0?auth={pw}",
    "redis://host/0?pwd={pw}",
    "unix:///run/redis.sock?db=0&password={pw}",
    "redis://{pw}@host/0",  # some clients read a bare userinfo as the password
    "redis:/:{pw}@host/0",  # a typo: not a URL at all
    "{pw}",
]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("secret", [SECRET, UNENCODED, "pa&ss=wo rd", "p%40ss", "hunter2:x"])
def test_redact_url_hides_every_form_of_the_password(form: str, secret: str) -> None:
    shown = redact_url(form.format(pw=secret))
    assert secret not in shown
    assert "***" in shown


def test_redact_url_keeps_what_helps_the_operator() -> None:
    assert redact_url("redis://host:6379/0?password=s3cret") == "redis://host:6379/0?password=***"
    assert redact_url("redis://:s3cret@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert redact_url("redis://user:P@ss/w#rd?x@host") == "redis://***@host"
    assert redact_url("redis://host/0?db=1&password=a&b=c") == "redis://host/0?db=1&password=***&***"
    assert redact_url("redis://[::1]:6379/2?db=2") == "redis://[::1]:6379/2?db=2"
    assert redact_url("redis://h/0?x=<script>") == "redis://***"  # not a plain URL: the scheme only
    assert redact_url("not a url s3cret") == "***"


_SECRET_CHARS = st.characters(codec="utf-8", exclude_characters="*", exclude_categories=("Cs",))


@settings(max_examples=300, deadline=None)
@given(secret=st.text(_SECRET_CHARS, min_size=4, max_size=40), form=st.sampled_from(FORMS))
def test_no_generated_password_survives_redaction(secret: str, form: str) -> None:
    """Whatever the password holds (@ / # ? & = : %, spaces, non-ASCII), it is not shown.

    A secret that is a piece of the URL around it (e.g. "host") cannot be told apart from
    it, so those are left out; so is "*", the mask itself.
    """
    skeleton = form.format(pw="")
    if secret.strip() in skeleton or not secret.strip():
        return
    assert secret.strip() not in redact_url(form.format(pw=secret))


# ----- through the product's own entry points ------------------------------------------------
@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis-auth"), password=SECRET) as running:
        yield running


@pytest.mark.parametrize("form", ["redis://127.0.0.1:{port}/0?password={pw}", "redis://:{pw}@127.0.0.1:{port}/0"])
async def test_the_bot_logs_its_queue_url_without_the_password(locked_server: RedisServer, data_dir: Path, form: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    storage = await Storage.open(data_dir)
    queue = RedisQueue(storage, form.format(port=locked_server.port, pw=SECRET), namespace="redact")
    try:
        with caplog.at_level(logging.INFO):
            await queue.start()  # the password is right: it connects and logs where
            await queue.stop()
    finally:
        await storage.close()
    assert any("Redis queue at redis://" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("form", ["redis://127.0.0.1:{port}/0?password={pw}", "redis://:{pw}@127.0.0.1:{port}/0",
                                  "redis://user:{pw}@127.0.0.1:{port}/0"])
@pytest.mark.parametrize("secret", [SECRET, UNENCODED])
async def test_an_unreachable_queue_is_reported_without_the_password(data_dir: Path, form: str, secret: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    storage = await Storage.open(data_dir)
    try:
        queue = RedisQueue(storage, form.format(port=free_port(), pw=secret))
        with caplog.at_level(logging.DEBUG), pytest.raises(RedisUnavailable) as info:
            await queue.start()
    finally:
        await storage.close()
    assert "Cannot reach Redis at QUEUE_URL=redis://" in str(info.value)
    assert secret not in str(info.value) and secret not in caplog.text


@pytest.mark.parametrize("secret", [SECRET, UNENCODED])
async def test_a_worker_logs_its_queue_url_without_the_password(secret: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password={secret}"
    worker = Worker(url, FakeExecutor(), model_ref="tiny")
    with caplog.at_level(logging.DEBUG), pytest.raises((RedisError, OSError)) as info:
        await worker.run()
    assert "connecting to Redis at redis://" in caplog.text
    assert secret not in caplog.text and secret not in str(info.value)


def test_tessera_worker_prints_its_queue_url_without_the_password(tiny_models: dict[str, Path],
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tiny_models["sd15"].parent)  # no stray .env
    url = f"redis://user:{UNENCODED}@127.0.0.1:{free_port()}/0?password={SECRET}"
    with caplog.at_level(logging.DEBUG):
        code = cli_main(["worker", "--queue", url, "--model", str(tiny_models["sd15"]), "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 1 and "cannot use Redis at redis://" in out.err
    for secret in (SECRET, UNENCODED, "P@ss"):
        assert secret not in out.err + out.out + caplog.text


@pytest.mark.parametrize("value", ["http://:s3cret@host:6379/0", "redis:/:s3cret@host/0", "s3cret",
                                   "redis//user:s3cret@host", "tcp://host/0?password=s3cret"])
def test_an_invalid_queue_url_setting_is_refused_without_the_password(value: str,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    with pytest.raises(ConfigError, match="invalid setting QUEUE_URL=") as info:
        load_settings(queue_url=value)
    assert SECRET not in str(info.value)
