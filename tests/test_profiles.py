"""Per-model profiles: values a pipeline does not give come from its model family's profile;
the pipeline's own values win; bad profiles are refused naming the file and field."""

from __future__ import annotations

import pytest
import yaml

import orchestra.profiles as P
from orchestra.backends.scripted import ScriptedBackend
from orchestra.cli.main import main
from orchestra.config import load_config, load_config_text
from orchestra.errors import ConfigError
from orchestra.pipeline import Pipeline


def write(path, data) -> str:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def build(cfg):
    return Pipeline.from_config(cfg, backend=ScriptedBackend(context_window=4096))


def test_builtin_profiles_load_and_pick_by_model_name():
    assert {"smollm2", "generic"} <= set(P.builtin_names())
    for name in P.builtin_names():
        assert P.load_profile(name).family == name
    assert P.family_for_model("embedded") == "smollm2"
    assert P.family_for_model("HuggingFaceTB/SmolLM2-360M-Instruct") == "smollm2"
    assert P.family_for_model("meta-llama/Llama-3.1-8B-Instruct") == "generic"
    assert P.family_of_backend(ScriptedBackend()) == "generic"


def test_a_named_profile_fills_what_the_pipeline_leaves_out(tmp_path):
    write(tmp_path / "mine.yaml", {
        "family": "mine",
        "strategies": {"rag": {"reorder": "score_last", "top_k_tokens": 512,
                               "max_tokens": 24}},
        "retrievers": {"bm25": {"chunk_tokens": 64, "overlap": 0}}})
    pipe = write(tmp_path / "pipe.yaml", {
        "profile": "mine.yaml",  # relative to the pipeline file
        "strategies": {"rag": {"type": "rag", "retriever": "bm25", "top_k_tokens": 1024}}})
    cfg, _ = load_config(pipe)
    assert cfg.profile == "mine.yaml"
    rag = build(cfg).strategies["rag"]
    assert rag.reorder == "score_last" and rag.max_tokens == 24
    assert rag.top_k_tokens == 1024  # the pipeline's own value wins
    # A retriever named by its bare type is defined with the profile's values for that type.
    assert rag.retriever.chunk_tokens == 64 and rag.retriever.overlap == 0
    assert main(["validate", pipe]) == 0


def test_the_backend_family_picks_the_default_profile(tmp_path, monkeypatch):
    """With no `profile:`, the model name picks one (profiles read from a test folder, since
    the built-in SmolLM2 values change as they are tuned)."""
    write(tmp_path / "smollm2.yaml", {"family": "smollm2", "match": ["smollm2", "^embedded$"],
                                      "strategies": {"rag": {"reorder": "edges_last"}}})
    write(tmp_path / "generic.yaml", {"family": "generic"})
    monkeypatch.setattr(P, "HERE", tmp_path)
    P._load_stamped.cache_clear()
    try:
        text = "strategies: {rag: {type: rag, retriever: bm25}}\n"
        small, _ = load_config_text(text)  # no backend section: the embedded model
        assert build(small).strategies["rag"].reorder == "edges_last"
        other, _ = load_config_text(text + "backend: {type: openai, model: gpt-4o-mini}\n")
        assert build(other).strategies["rag"].reorder == "document_order"
        named, _ = load_config_text(text + "profile: generic\n")
        assert build(named).strategies["rag"].reorder == "document_order"
    finally:
        P._load_stamped.cache_clear()


def test_bad_profiles_are_refused_naming_file_and_field(tmp_path, capsys):
    write(tmp_path / "bad.yaml", {"family": "x", "strategies": {"rag": {"reorderr": "edges"}}})
    pipe = write(tmp_path / "pipe.yaml", {"profile": "bad.yaml",
                                          "strategies": {"rag": {"type": "rag"}}})
    assert main(["validate", pipe]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:4" in err and "strategies.rag.reorderr: unknown option" in err
    assert err.count("\n") == 1
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_config_text("strategies: {rag: {type: rag}}\nprofile: nope\n")
    with pytest.raises(ConfigError, match="unknown field"):
        P.load_profile(write(tmp_path / "extra.yaml", {"family": "x", "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown strategy type 'ragg'"):
        P.load_profile(write(tmp_path / "t.yaml", {"family": "x", "strategies": {"ragg": {}}}))
    with pytest.raises(ConfigError, match="no such file"):
        load_config_text("strategies: {rag: {type: rag}}\nprofile: missing.yaml\n")


def test_the_embedded_default_reads_its_values_from_the_smollm2_profile():
    from pathlib import Path

    from orchestra.pipeline import DEFAULT_PIPELINE

    example = Path(__file__).parent.parent / "examples" / "pipelines" / "embedded.yaml"
    cfg, _ = load_config(example)
    smollm2 = P.load_profile("smollm2").strategies
    assert "reorder" not in DEFAULT_PIPELINE["strategies"]["rag"]
    for name, comp in cfg.strategies.items():
        for opt, value in smollm2.get(comp.type, {}).items():
            given = DEFAULT_PIPELINE["strategies"][name].get(opt)
            assert comp.options[opt] == (value if given is None else given)


def test_a_tuned_hybrid_choice_reaches_pipelines_that_fuse_their_own_retrievers(tmp_path):
    """profile.yaml from a tune that chose hybrid retrieval with 96-token structure chunks:
    the default pipeline (which fuses its own dense and bm25) reads with that chunking."""
    from orchestra.tune.space import plan, profile_values

    base = {"retrievers": {"dense": {"type": "dense"}, "bm25": {"type": "bm25"}},
            "strategies": {"rag": {"type": "rag", "retriever": ["dense", "bm25"]}}}
    p = plan(base, params=["retriever", "chunk_tokens", "chunking", "dense_weight"],
             target="rag")
    sections, notes = profile_values(base, p, {
        "rag.retriever": "hybrid", "rag.chunk_tokens": "96", "rag.chunking": "structure",
        "rag.dense_weight": "0.75"})
    assert sections["retrievers"]["hybrid"]["weights"] == [0.75, 0.25]
    assert any("names its retriever" in n for n in notes)
    write(tmp_path / "tuned.yaml", {"family": "tuned", **sections})
    pipe = write(tmp_path / "pipe.yaml", {**base, "profile": "tuned.yaml"})
    rag = build(load_config(pipe)[0]).strategies["rag"]
    members = rag.retriever.retrievers
    assert [m.chunk_tokens for m in members] == [96, 96]
    assert [m.chunking for m in members] == ["structure", "structure"]
