"""Property-based tests (Hypothesis) for the two readers of user files: the pipeline-file loader
(orchestra/config.py over orchestra/yaml_lines.py) and the eval dataset reader
(orchestra/eval/datasets.py). Whatever the input, the result is a valid pipeline or dataset, or
one OrchestraError whose message names the file; never another exception, and never slow (each
example has a deadline)."""

from __future__ import annotations

import json
import string
from datetime import timedelta

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra.backends.scripted import RegexTokenizer
from orchestra.config import PipelineConfig, check, load_config, load_config_text
from orchestra.errors import OrchestraError
from orchestra.eval.datasets import Dataset, user_jsonl

# database=None: no example store written into the working tree; each run draws afresh.
SETTINGS = settings(max_examples=150, deadline=timedelta(seconds=2), database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# -- pipeline files ---------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                    st.sampled_from(["rag", "full_context", "kv_pages", "chain_of_agents",
                                     "map_reduce", "bm25", "dense", "hybrid", "graph", "fixed",
                                     "rules", "self_route", "llm", "openai", "transformers",
                                     "head", "middle-out", "${HOME}", "${NOPE_UNSET}",
                                     "os:system", "file:///etc/passwd", "{context}"]))
plain = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20)
OPTIONS = ["type", "max_tokens", "truncation", "retriever", "top_k_tokens", "reorder",
           "dedup_threshold", "prompts", "strategy", "first", "fallback", "chunk_tokens",
           "overlap", "base_url", "timeout", "model", "device", "note_tokens", "page_size"]
component = st.dictionaries(st.sampled_from(OPTIONS), plain, max_size=5)
pipeline_like = st.fixed_dictionaries({}, optional={
    "version": st.one_of(st.just(1), scalars),
    "backend": st.one_of(component, scalars),
    "corpus": st.one_of(st.dictionaries(st.sampled_from(["chunk_tokens", "overlap", "x"]),
                                        scalars, max_size=2), scalars),
    "retrievers": st.dictionaries(st.text(max_size=6), component, max_size=3),
    "strategies": st.one_of(st.dictionaries(st.text(max_size=6), component, max_size=3),
                            scalars),
    "router": st.one_of(component, scalars),
})
# Text made of YAML's own syntax: anchors, aliases, tags, flow and block collections.
yaml_soup = st.text(alphabet=string.ascii_letters[:6] + "&*!:-[]{}#|>'\"\n %@`,?<$=" + " " * 4,
                    max_size=300)


def _load(text: str) -> None:
    try:
        cfg, located = load_config_text(text, source="p.yaml")
    except OrchestraError as e:
        assert str(e).startswith("p.yaml"), e
        return
    assert isinstance(cfg, PipelineConfig) and cfg.strategies
    try:
        check(cfg, located)
    except OrchestraError as e:
        assert str(e).startswith("p.yaml"), e


@SETTINGS
@given(pipeline_like)
def test_pipeline_files_from_data_load_or_fail_clearly(data):
    _load(yaml.safe_dump(data, sort_keys=False))


@SETTINGS
@given(yaml_soup)
def test_pipeline_files_of_yaml_syntax_load_or_fail_clearly(text):
    _load(text)


@SETTINGS
@given(st.text(max_size=400))
def test_pipeline_files_of_any_text_load_or_fail_clearly(text):
    _load(text)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from([b"", b"strategies: {a: {type: rag}}\n"]))
def test_pipeline_files_of_any_bytes_load_or_fail_clearly(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_bytes(prefix + data)
    try:
        cfg, located = load_config(path)
        check(cfg, located)
    except OrchestraError as e:
        assert str(e).startswith(str(path)), e


# -- eval datasets ----------------------------------------------------------------------------
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30)),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=12)
text_or_junk = st.one_of(st.text(max_size=60), json_values)
sample_like = st.fixed_dictionaries({}, optional={
    "context": text_or_junk, "documents": st.one_of(st.lists(text_or_junk, max_size=3),
                                                    text_or_junk),
    "question": text_or_junk, "answers": st.one_of(st.lists(text_or_junk, max_size=3),
                                                   text_or_junk),
    "answer": text_or_junk, "task": st.one_of(st.sampled_from(["qa", "niah", "options",
                                                               "exact", "nope"]), json_values),
    "id": json_values,
})
line = st.one_of(
    sample_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=80).filter(lambda b: b"\n" not in b),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # nesting the parser may refuse
    st.just(b'{"context": "caf\xe9", "question": "q?", "answers": ["a"]}'),
)


@SETTINGS
@given(st.lists(line, max_size=8), st.lists(st.integers(1, 500), max_size=3),
       st.integers(1, 5))
def test_jsonl_datasets_read_or_fail_clearly(tmp_path_factory, lines, lengths, limit):
    path = tmp_path_factory.mktemp("d") / "data.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    try:
        ds = user_jsonl(path, RegexTokenizer(), lengths, limit)
    except OrchestraError as e:
        assert str(e).startswith(str(path)), e
        return
    assert isinstance(ds, Dataset) and 1 <= len(ds.samples) <= limit
    for s in ds.samples:
        assert s.question.strip() and s.documents and all(d.text.strip() for d in s.documents)
        assert s.answers and all(isinstance(a, str) for a in s.answers)
    for p in ds.problems:
        assert p.startswith(str(path))
