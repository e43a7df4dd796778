"""Pipeline files: validation errors name file, line and field; round trips; safety."""

import textwrap
from pathlib import Path

import pytest

from orchestra.config import check, load_config
from orchestra.errors import ConfigError
from orchestra.pipeline import Pipeline
from orchestra.registry import register
from orchestra.corpus import Document

REPO = Path(__file__).resolve().parent.parent
register("backend", "scripted", "orchestra.backends.scripted:ScriptedBackend")

GOOD = """\
backend: {type: scripted, replies: ["one", "two"], context_window: 4096}
strategies:
  full: {type: full_context, max_tokens: 32}
router: {type: fixed, strategy: full}
"""


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def validate(path, allow=()):
    cfg, located = load_config(path)
    check(cfg, located, allow)
    return cfg


def test_good_file_builds_and_runs(tmp_path):
    pipe = Pipeline.from_yaml(write(tmp_path, GOOD))
    a = pipe.run("What?", [Document("d", "some text")])
    assert a.text == "one" and a.route.strategy == "full" and a.route.router == "fixed"
    assert a.cost.model_calls == 1 and a.cost.wall_seconds > 0


@pytest.mark.parametrize("text, line, field, words", [
    ("backend: {type: scripted}\nstrategies:\n  full: {type: full_context, max_tokns: 3}\n",
     3, "strategies.full.max_tokns", "unknown option"),
    ("backend: {type: scripted}\nstrategis:\n  full: {type: full_context}\n",
     2, "strategis", "unknown field"),
    ("backend: {type: scripted}\nstrategies:\n  full:\n    type: full_context\n    max_tokens: lots\n",
     5, "strategies.full.max_tokens", "valid integer"),
    ("backend: {type: scripted}\nstrategies:\n  full: {type: fool_context}\n",
     3, "strategies.full.type", "unknown strategy type 'fool_context'"),
    ("backend: {type: scripted}\nstrategies:\n  full: {type: full_context}\nrouter:\n  type: fixed\n  strategy: fulll\n",
     6, "router.strategy", "'fulll' is not a defined strategy"),
    ("backend: {type: scripted}\nstrategies:\n  full: {type: 'os:system'}\n",
     3, "strategies.full.type", "import path"),
    ("backend: {type: scripted}\nstrategies: {}\n", 2, "strategies", "at least 1"),
])
def test_bad_files_name_file_line_and_field(tmp_path, text, line, field, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        validate(path)
    msg = str(e.value)
    assert f"{path}:{line}:" in msg and f"field {field}" in msg and words in msg


def test_dotted_path_allowed_only_when_caller_allows_it(tmp_path):
    text = ("backend: {type: scripted, replies: [x]}\nstrategies:\n"
            "  full: {type: 'orchestra.strategies.full_context:FullContext'}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="allow_modules"):
        Pipeline.from_yaml(path)
    pipe = Pipeline.from_yaml(path, allow_modules=["orchestra.strategies"])
    assert pipe.run("q?", [Document("d", "t")]).text == "x"


def test_environment_interpolation(tmp_path, monkeypatch):
    text = ('backend: {type: scripted, replies: ["${ORCH_TEST_REPLY}"]}\n'
            "strategies:\n  full: {type: full_context}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=r":1: environment variable ORCH_TEST_REPLY is not set"):
        Pipeline.from_yaml(path)
    monkeypatch.setenv("ORCH_TEST_REPLY", "secret")
    pipe = Pipeline.from_yaml(path)
    assert pipe.run("q?", [Document("d", "t")]).text == "secret"
    assert "${ORCH_TEST_REPLY}" in pipe.to_yaml()  # secrets are not written back out


def test_to_yaml_round_trips(tmp_path):
    pipe = Pipeline.from_yaml(write(tmp_path, GOOD))
    again = Pipeline.from_yaml(write(tmp_path, pipe.to_yaml(), "again.yaml"))
    assert again.to_yaml() == pipe.to_yaml()
    # a pipeline built in Python serialises from its components' options
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.strategies.full_context import FullContext

    b = ScriptedBackend(["z"])
    py = Pipeline(b, {"full": FullContext(b, truncation="head", max_tokens=20)})
    data = py.to_config()
    assert data["strategies"]["full"] == {"type": "full_context", "max_tokens": 20,
                                          "truncation": "head"}
    assert data["router"] == {"type": "fixed", "strategy": "full"}


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"p.yaml:2: not valid YAML"):
        validate(write(tmp_path, "strategies:\n  full: {type: x]\nrouter: {}\n"))
    with pytest.raises(ConfigError, match="no such file"):
        validate(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "pipelines").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_pipeline_validates(path):
    validate(path)


def test_default_pipeline_is_the_embedded_example():
    import yaml

    from orchestra.pipeline import DEFAULT_PIPELINE

    example = yaml.safe_load((REPO / "examples" / "pipelines" / "embedded.yaml").read_text())
    assert example == DEFAULT_PIPELINE
