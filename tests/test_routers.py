"""Control flow of the routers (scripted backend, stand-in strategies; no model).

The acceptance tests with the real model on real data are in test_routers_integration.py.
"""

from __future__ import annotations

import json
import random

import pytest

from orchestra.backends.base import KV_PAGES
from orchestra.backends.scripted import ScriptedBackend
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError, InputError
from orchestra.retrievers.base import ScoredChunk, score_shape
from orchestra.strategies.base import AGENTS, PAGES, RAG, Fit, Strategy
from orchestra.strategies.full_context import FullContext
from orchestra.types import Answer, Trace
from orchestra.routers import features as F
from orchestra.eval.results import read_results
from orchestra.routers.learned import LearnedRouter
from orchestra.routers.tree import TreeModel, train
from orchestra.routers.llm import LLMRouter, parse_choice
from orchestra.routers.rules import RulesRouter
from orchestra.routers.self_route import SelfRouter
from orchestra.corpus import Document

MAY_DECLINE_MARK = "If the text does not contain the answer"


class StandInRAG(Strategy):
    """Retrieves by word overlap; reads its top chunks with the real prompt helpers."""

    name = "stand_in_rag"
    kind = RAG
    can_decline = True

    def __init__(self, backend, scores=None, **kw):
        super().__init__(backend, **kw)
        self.scores = scores  # fixed scores to return, when a test wants a given score shape
        self.retrieve_calls = 0

    def retrieve(self, question, corpus):
        self.retrieve_calls += 1
        chunks = corpus.chunks
        if self.scores is not None:
            return list(zip(chunks, self.scores))
        q = set(question.lower().split())
        return sorted(((c, float(len(q & set(c.text.lower().split())))) for c in chunks),
                      key=lambda t: -t[1])[:5]

    def signals(self, question, corpus):
        return score_shape([s for _, s in self.retrieve(question, corpus)])

    def _answer(self, question, corpus, may_decline=False):
        hits = self.retrieve(question, corpus)[:2]
        chunks = [c for c, _ in hits]
        return self.read("\n".join(c.text for c in chunks), question, chunks, Trace(),
                         may_decline=may_decline)


class StandInAgents(Strategy):
    name = "chain_of_agents"
    kind = AGENTS

    def _answer(self, question, corpus):
        return self.read(corpus.chunks[0].text, question, corpus.chunks[:1], Trace())


class StandInPages(Strategy):
    name = "kv_pages"
    kind = PAGES
    requires = frozenset({KV_PAGES})

    def _answer(self, question, corpus):
        return self.read(corpus.chunks[0].text, question, corpus.chunks[:1], Trace())


def reply_by_prompt(request):
    """'unanswerable' to a may-decline prompt whose passages lack 'zebra'; else an answer."""
    prompt = request.messages[-1].content
    if "Options:" in prompt:
        return "B"
    if MAY_DECLINE_MARK in prompt and "zebra" not in prompt.split("Question:")[0]:
        return "unanswerable"
    return "forty two"


def words(n: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "paper", "light"]
    return " ".join(rnd.choice(vocab) for _ in range(n))


def corpus_of(backend, *texts) -> Corpus:
    return Corpus([Document(id=f"d{i}", text=t) for i, t in enumerate(texts)],
                  backend.tokenizer)


@pytest.fixture
def backend():
    return ScriptedBackend(reply_by_prompt, context_window=2048)


@pytest.fixture
def pages_backend():
    return ScriptedBackend(reply_by_prompt, context_window=2048,
                           capabilities=("batching", KV_PAGES))


def all_strategies(backend, rag_scores=None):
    return {"full": FullContext(backend), "retrieval": StandInRAG(backend, scores=rag_scores),
            "pages": StandInPages(backend) if KV_PAGES in backend.capabilities else None,
            "agents": StandInAgents(backend)}


def strategies_for(backend, rag_scores=None, drop=()):
    s = all_strategies(backend, rag_scores)
    return {k: v for k, v in s.items() if v is not None and k not in drop}


# -- features ------------------------------------------------------------------------------------
@pytest.mark.parametrize("question,kind", [
    ("What is the special magic number mentioned in the essays?", "lookup"),
    ("When did the Normans conquer England?", "lookup"),
    ("Summarize the meeting.", "aggregation"),
    ("What are the main ideas of the essay?", "aggregation"),
    ("What is this document mainly about?", "aggregation"),
    ("How many times does the author mention startups?", "aggregation"),
    ("List all the people who spoke.", "aggregation"),
    ("How many interactions are all of the universal forces responsible for?", "lookup"),
    ("How many people live in Warsaw?", "lookup"),
    ("Were both Scott Derrickson and Ed Wood American?", "multi_hop"),
    ("Who was born first, Ada Lovelace or Charles Babbage?", "multi_hop"),
    ("What is the nationality of the director of the film Jaws?", "multi_hop"),
    ("What is the difference between a fund and a firm?", "multi_hop"),
    # A relation asked of a named thing's relation: the possessive is found first.
    ("What is the special magic number for Yangon's partner city?", "multi_hop"),
    ("What was the name of Bohemond's nephew?", "multi_hop"),
    # A thing named only by a clause about it (HotpotQA's bridge questions).
    ("What government position was held by the woman who portrayed Corliss Archer?",
     "multi_hop"),
    ("The Oberoi family is part of a hotel company that has a head office in what city?",
     "multi_hop"),
    # ... but a describing clause in a one-fact question is not a hop.
    ("What is the name of the region that is not defined by the county definitions?", "lookup"),
    ("Who wrote the essay?", "lookup"),
    # A possessive alone, or one after a lowercase word, is one fact.
    ("What is Lima's population?", "lookup"),
    ("What was one of the company's major exports?", "lookup"),
    # Every value of one thing (RULER's multi-value phrasing), not an aggregation.
    ("What are all the special magic numbers for Seattle mentioned in the provided text?",
     "multi_value"),
    ("Which were all of the cities he lived in?", "multi_value"),
    ("What country are all the counties in?", "lookup"),
])
def test_question_kind_rules(question, kind):
    assert F.question_kind(question)[0] == kind


def test_rows_written_by_older_rules_get_todays_kind():
    old = {"question_kind": "lookup", "question_kind_rule": "default", "kind_lookup": 1,
           "kind_aggregation": 0, "kind_multi_hop": 0, "corpus_tokens": 4000}
    new = F.with_todays_kind(old, "What is the special magic number for Oslo's partner city?")
    assert new["question_kind"] == "multi_hop" and new["question_kind_rule"] == \
        "relation of a relation"
    assert new["kind_multi_hop"] == 1 and new["kind_lookup"] == 0 and \
        new["kind_multi_value"] == 0 and new["corpus_tokens"] == 4000
    assert old["question_kind"] == "lookup"  # the row itself is left as it was


def test_score_shape_of_scores_or_scored_chunks(backend):
    chunks = corpus_of(backend, words(600)).chunks
    for hits in ([4.0, 2.0, 2.0], [ScoredChunk(c, s) for c, s in zip(chunks, (2.0, 4.0, 2.0))]):
        p = score_shape(hits, "bm25")
        assert p["retrieval_top"] == 4.0 and p["retrieval_margin"] == 2.0
        assert p["retrieval_rel_margin"] == 0.5 and p["retrieval_lead"] == pytest.approx(1 / 3)
        assert p["retrieval_hits"] == 3 and p["retrieval_score_kind"] == "bm25"
    assert score_shape([]) == {}


def test_compute_features_measures_sizes_and_adds_retrieval_only_with_rag(backend):
    corpus = corpus_of(backend, words(300), words(100, 1))
    feats = F.compute_features("Where is the stone?", corpus, backend)
    assert feats["corpus_tokens"] == 400 and feats["n_documents"] == 2
    assert feats["max_doc_tokens"] == 300
    assert feats["effective_window"] == 256 and feats["fits_window"] and not feats["fits_effective"]
    assert feats["question_tokens"] == 5 and feats["kind_lookup"] == 1
    assert not any(k.startswith("retrieval_") for k in feats)
    json.dumps(feats)  # stored in results rows
    with_rag = F.compute_features("which stone by the river", corpus, backend,
                                  strategies_for(backend))
    assert with_rag["retrieval_hits"] == len(corpus.chunks) == 3 and with_rag["retrieval_top"] >= 1


# -- rules ---------------------------------------------------------------------------------------
def test_rules_short_corpus_reads_it_all(backend):
    r = RulesRouter(strategies_for(backend)).route("Where is the stone?",
                                                   corpus_of(backend, words(150)), backend)
    assert r.strategy == "full" and r.router == "rules"
    assert "within the effective window of 256" in r.reason and r.signals["situation"] == "short"


def test_rules_long_lookup_goes_to_rag_when_retrieval_is_peaked(backend):
    strategies = strategies_for(backend, rag_scores=[9.0, 2.0, 1.5, 1.0, 1.0])
    r = RulesRouter(strategies).route("Where is the stone?", corpus_of(backend, words(5000)),
                                      backend)
    assert r.strategy == "retrieval"
    assert "peaked" in r.reason and r.signals["retrieval_lead"] > 0.5
    assert strategies["retrieval"].retrieve_calls == 1


def test_rules_flat_retrieval_prefers_pages_then_agents(backend, pages_backend):
    flat = [1.0, 1.0, 1.0, 0.99, 0.99]
    long = corpus_of(backend, words(1500))
    r = RulesRouter(strategies_for(pages_backend, flat)).route("Where is the stone?", long,
                                                               pages_backend)
    assert r.strategy == "pages" and "flat" in r.reason
    # A strategy that says it cannot take the corpus is passed over.
    small_pages = strategies_for(pages_backend, flat)
    small_pages["pages"].fits = lambda corpus, question: Fit(False, corpus.n_tokens, 1000)
    r = RulesRouter(small_pages).route("Where is the stone?", long, pages_backend)
    assert r.strategy == "agents" and "pages cannot take 1500 tokens" in r.reason
    # Without the kv_pages capability the pages strategy cannot even be built: agents read.
    r = RulesRouter(strategies_for(backend, flat)).route("Where is the stone?", long, backend)
    assert r.strategy == "agents"


def test_rules_aggregation_over_long_corpus_goes_to_agents_and_skips_retrieval(backend):
    strategies = strategies_for(backend)
    r = RulesRouter(strategies).route("Summarize the essays.", corpus_of(backend, words(5000)),
                                      backend)
    assert r.strategy == "agents" and "aggregation question (summary)" in r.reason
    assert strategies["retrieval"].retrieve_calls == 0


def test_rules_degrade_when_strategies_are_missing(backend):
    long = corpus_of(backend, words(5000))
    # No agents: aggregation falls through full context (cannot take 5000 tokens) to RAG.
    r = RulesRouter(strategies_for(backend, drop=("agents",))).route("Summarize it.", long,
                                                                     backend)
    assert r.strategy == "retrieval" and "cannot take 5000 tokens" in r.reason
    # Only full context, over the window: nothing usable, it says so.
    r = RulesRouter({"full": FullContext(backend)}).route("Where?", long, backend)
    assert r.strategy == "full" and "none of" in r.reason


def test_rules_options_rebuild_the_same_router(backend):
    s = strategies_for(backend)
    r1 = RulesRouter(s, effective_fraction=0.5, orders={"short": ["rag", "full_context"]})
    r2 = RulesRouter(s, **json.loads(json.dumps(r1.spec())))
    c = corpus_of(backend, words(300))
    assert r1.route("Where?", c, backend).strategy == r2.route("Where?", c, backend).strategy \
        == "retrieval"
    with pytest.raises(ConfigError, match="effective_fraction"):
        RulesRouter(s, effective_fraction=0)
    with pytest.raises(ConfigError, match="unknown order"):
        RulesRouter(s, orders={"shrot": ["rag"]})


# -- self_route ----------------------------------------------------------------------------------
def test_self_route_accepts_an_answer_without_escalating(backend):
    corpus = corpus_of(backend, words(300) + " the zebra sleeps " + words(300, 2))
    ans = SelfRouter(strategies_for(backend)).route_and_answer("Where is the zebra?", corpus,
                                                               backend)
    assert ans.text == "forty two" and ans.route.strategy == "retrieval"
    assert not ans.route.signals["declined"] and ans.route.cost.model_calls == 0
    assert ans.cost.model_calls == 1 and len(backend.requests) == 1


def test_self_route_escalates_to_full_context_and_counts_the_failed_attempt(backend):
    corpus = corpus_of(backend, words(800))
    ans = SelfRouter(strategies_for(backend)).route_and_answer("Where is the zebra?", corpus,
                                                               backend)
    assert ans.route.strategy == "full" and ans.route.signals["declined"]
    assert "declined" in ans.route.reason and "fits the window" in ans.route.reason
    first, second = backend.requests
    assert MAY_DECLINE_MARK in first.messages[-1].content
    assert MAY_DECLINE_MARK not in second.messages[-1].content
    assert ans.route.cost.model_calls == 1
    assert ans.cost.model_calls == 2
    assert ans.cost.prompt_tokens == sum(backend.count_prompt_tokens(r.messages)
                                         for r in backend.requests)
    assert any(s.name.startswith("self_route.retrieval.") for s in ans.trace.steps)


def test_self_route_escalates_past_the_window_to_pages_or_agents(backend, pages_backend):
    big = words(3000)
    ans = SelfRouter(strategies_for(backend)).route_and_answer(
        "Where is the zebra?", corpus_of(backend, big), backend)
    assert ans.route.strategy == "agents" and "exceeds the window" in ans.route.reason
    ans = SelfRouter(strategies_for(pages_backend)).route_and_answer(
        "Where is the zebra?", corpus_of(pages_backend, big), pages_backend)
    assert ans.route.strategy == "pages"
    # A configured order wins over the default one.
    ans = SelfRouter(strategies_for(pages_backend), fallback=["agents", "pages"]) \
        .route_and_answer("Where is the zebra?", corpus_of(pages_backend, big), pages_backend)
    assert ans.route.strategy == "agents"


def test_self_route_without_rag_reads_directly_and_without_fallback_keeps_the_reply(backend):
    router = SelfRouter({"full": FullContext(backend)})
    r = router.route("Where?", corpus_of(backend, words(100)), backend)
    assert r.strategy == "full" and "no strategy that may decline" in r.reason
    ans = SelfRouter({"rag": StandInRAG(backend)}).route_and_answer(
        "Where is the zebra?", corpus_of(backend, words(400)), backend)
    assert ans.unanswerable and "no fallback can read" in ans.route.reason
    with pytest.raises(ConfigError, match="fallback 'nope'"):
        SelfRouter({"rag": StandInRAG(backend)}, fallback=["nope"])


@pytest.mark.parametrize("text,expected", [
    ("unanswerable", True), ("Unanswerable.", True), ("The text does not mention Atlantis.", True),
    ("The passages do not contain the answer", True), ("There is no information about it.", True),
    ("The special magic number for Seattle is 879274.", False),
    ("The text says the answer is 42; it does not mention more.", False),
    # replies of the embedded reader on ruler_qa:test (4k) under RULER's template
    ('The answer to the question is: "unanswerable"', True),
    ("The answer to this question is: The text does not mention the area.", True),
    ('The answer to the question is: "The area of the modern city is 517 km2"', False),
    # an empty reply (a model that generated nothing readable) is never an answer
    ("", True), ("  \n ", True),
])
def test_declines_are_recognised_in_plain_words(text, expected):
    from orchestra.routers.self_route import declined

    assert declined(Answer(question="q", text=text, strategy="rag")) is expected


# -- learned -------------------------------------------------------------------------------------
TYPES = {"full": "full_context", "rag": "rag", "agents": "chain_of_agents"}


def synthetic_rows(n_questions: int, seed: int = 0, noise: float = 0.1) -> list[dict]:
    """Results rows where the truly best strategy depends on size and kind, with label noise."""
    rnd = random.Random(seed)
    rows = []
    for q in range(n_questions):
        tokens = rnd.choice([300, 600, 900, 3000, 8000, 20000, 40000])
        kind = rnd.choice(F.QUESTION_KINDS)
        best = ("full" if tokens <= 1024 else "agents" if kind == "aggregation" else "rag")
        if rnd.random() < noise:
            best = rnd.choice(["full", "rag", "agents"])
        feats = {"corpus_tokens": tokens, "context_window": 8192, "effective_window": 1024,
                 "effective_ratio": tokens / 1024, "window_ratio": tokens / 8192,
                 "question_words": rnd.randint(4, 20), "question_kind": kind,
                 **{f"kind_{k}": int(k == kind) for k in F.QUESTION_KINDS}}
        for strat, prompt in (("full", min(tokens, 8192)), ("rag", 1200), ("agents", 3 * tokens)):
            rows.append({"sample_id": f"q{q}", "question": f"question {q}", "strategy": strat,
                         "strategy_type": TYPES[strat],
                         "scores": {"contains": float(strat == best), "f1": 0.0},
                         "cost": {"prompt_tokens": prompt, "model_calls": 1},
                         "route": {"strategy": strat, "router": "fixed", "reason": "eval"},
                         "features": feats})
    return rows


def test_learned_beats_the_majority_on_held_out_questions():
    model = train(synthetic_rows(120), holdout=0.3, refit=False)
    m = model.meta
    assert m["holdout_questions"] >= 20 and m["metric"] == "contains"
    assert m["holdout_accuracy"] > m["holdout_majority_accuracy"] + 0.15
    # Independent check on fresh questions from the same process.
    fresh = synthetic_rows(60, seed=1, noise=0.0)
    feats = {r["sample_id"]: r["features"] for r in fresh}
    best = {r["sample_id"]: r["strategy_type"] for r in fresh if r["scores"]["contains"]}
    agree = sum(model.predict(feats[k]) == best[k] for k in feats) / len(feats)
    majority = max(list(best.values()).count(s) for s in set(best.values())) / len(best)
    assert agree > majority


def test_learned_labels_cheapest_correct_strategy():
    rows = synthetic_rows(1, noise=0.0)
    for r in rows:
        r["scores"]["contains"] = 1.0  # all correct: the cheapest wins
    from orchestra.routers.labels import labelled_questions

    _, labels, _, _ = labelled_questions(rows)
    cheapest = min(rows, key=lambda r: r["cost"]["prompt_tokens"])["strategy_type"]
    assert labels == [cheapest]


def test_learned_router_file_round_trip_and_mapping(tmp_path, backend):
    path = tmp_path / "router.json"
    train(synthetic_rows(80)).save(path)
    data = json.loads(path.read_text())
    assert data["format"] == "orchestra-learned-router" and data["version"] == 1
    # Pipeline names differ from the training names: classes map by kind.
    router = LearnedRouter(strategies_for(backend), model=str(path))
    short = router.route("Where is the stone?", corpus_of(backend, words(200)), backend)
    assert short.strategy == "full" and short.reason.startswith("learned tree:")
    long = router.route("Summarize the essays.", corpus_of(backend, words(5000)), backend)
    assert long.strategy == "agents"
    look = router.route("Where is the stone?", corpus_of(backend, words(5000)), backend)
    assert look.strategy == "retrieval" and "rag is retrieval here" in look.reason
    assert LearnedRouter(strategies_for(backend), **router.spec()).model.tree == \
        router.model.tree


@pytest.mark.parametrize("change,message", [
    ({"version": 99}, "version 99 is not supported"),
    ({"format": "pickle"}, "not a learned-router file"),
    ({"features": ["corpus_tokens", "shoe_size"]}, "shoe_size are unknown"),
])
def test_learned_refuses_incompatible_files(tmp_path, backend, change, message):
    data = train(synthetic_rows(30)).to_json()
    data.update(change)
    path = tmp_path / "router.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        LearnedRouter(strategies_for(backend), model=str(path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not a JSON"):
        LearnedRouter(strategies_for(backend), model=str(tmp_path / "bad.json"))


def test_results_reading_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text('{"a": 1}\n{broken\n')
    with pytest.raises(InputError, match=r"results.jsonl:2: malformed results line"):
        read_results(p)
    rows = synthetic_rows(3)
    del rows[4]["cost"]
    with pytest.raises(InputError, match="row 5 lacks the field 'cost'"):
        train(rows)
    with pytest.raises(InputError, match="has no score 'rouge'"):
        train(synthetic_rows(3), metric="rouge")


def test_results_formats_and_skipped_rows(tmp_path):
    rows = synthetic_rows(20)
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"results": rows}))
    assert read_results(tmp_path / "list.json") == read_results(tmp_path / "wrapped.json") == rows
    # A failed strategy (score 0, no cost) must not become the "cheapest" label.
    failed = dict(rows[0], strategy="full", cost={"prompt_tokens": 0}, error="ContextOverflow",
                  scores={"contains": 0.0})
    routed = dict(rows[0], strategy="router", cost={"prompt_tokens": 0})
    model = train([failed, routed] + rows)
    assert model.meta["rows_skipped"] == 2
    with pytest.raises(InputError, match="no rows with scores"):
        train([failed])


def test_train_router_cli(tmp_path, capsys):
    from orchestra.cli.main import main

    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in synthetic_rows(60)))
    out = tmp_path / "router.json"
    assert main(["train-router", str(results), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held out" in printed and f"wrote {out}" in printed
    # Labels are the strategies' types, which any pipeline's router finds by type or kind.
    assert TreeModel.load(out).classes == ["chain_of_agents", "full_context", "rag"]
    assert main(["train-router", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 2
    assert "no such results file" in capsys.readouterr().err


# -- llm -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply,expected", [
    ("B", "retrieval"), ("b)", "retrieval"), ("Option C.", "agents"),
    ("I would use retrieval here.", "retrieval"), ("A good choice is agents", "agents"),
    ("full context", "full"), ("no idea", None), ("Z", None),
])
def test_parse_choice(reply, expected):
    assert parse_choice(reply, ["full", "retrieval", "agents"]) == expected


def test_llm_router_uses_the_reply_and_counts_its_call(backend):
    long = corpus_of(backend, words(5000))
    r = LLMRouter(strategies_for(backend, rag_scores=[9.0, 1.0])).route(
        "Where is the stone?", long, backend)
    prompt = backend.requests[0].messages[-1].content
    # Full context cannot take 5000 tokens into 2048, so it is not offered; the rules' choice
    # (retrieval, its score shape is peaked) is listed first.
    assert "full:" not in prompt and "A) retrieval" in prompt and "5000 tokens" in prompt
    assert r.strategy == "agents" and r.cost.model_calls == 1 and r.signals["reply"] == "B"
    assert "the rules would pick retrieval" in r.reason
    b2 = ScriptedBackend(["B"], context_window=2048)
    LLMRouter(strategies_for(b2), order_by_rules=False).route("Summarize it.",
                                                              corpus_of(b2, words(5000)), b2)
    assert "A) retrieval" in b2.requests[0].messages[-1].content


def test_llm_router_falls_back_when_the_reply_does_not_parse():
    b = ScriptedBackend(["hmm, hard to say"], context_window=2048)
    r = LLMRouter(strategies_for(b)).route("Summarize it.", corpus_of(b, words(5000)), b)
    assert r.strategy == "agents" and "names no option" in r.reason and "rules:" in r.reason
    assert r.cost.model_calls == 1
    b = ScriptedBackend(["???"], context_window=2048)
    router = LLMRouter(strategies_for(b), fallback="retrieval")
    r = router.route("Where?", corpus_of(b, words(300)), b)
    assert r.strategy == "retrieval" and "fallback retrieval" in r.reason
    assert LLMRouter(strategies_for(b), **router.spec()).spec() == router.spec()
    with pytest.raises(ConfigError, match="fallback"):
        LLMRouter(strategies_for(b), fallback="oracle")


# -- with the Pipeline ---------------------------------------------------------------------------
@pytest.mark.parametrize("router_cls,options", [
    (RulesRouter, {"effective_fraction": 0.25}), (SelfRouter, {"fallback": ["full", "agents"]}),
    (LLMRouter, {"max_tokens": 4}),
])
def test_routers_run_inside_a_pipeline_and_rebuild_from_their_options(backend, router_cls,
                                                                     options):
    from orchestra.pipeline import Pipeline

    strategies = strategies_for(backend)
    router = router_cls(strategies, **options)
    again = router_cls(strategies, **json.loads(json.dumps(router.spec())))
    assert again.spec() == router.spec()
    ans = Pipeline(backend, strategies, router).run("Where is the zebra?", [Document("d", words(400))])
    assert ans.route is not None and ans.route.router == router_cls.name
    assert ans.route.strategy in strategies and ans.route.reason
    assert ans.cost.model_calls >= 1


def test_a_question_is_checked_once_where_it_enters(backend, monkeypatch):
    """Pipeline.run checks the question; the router and the strategies it calls (including
    Self-Route's declined attempt and the fallback) take the checked Question as it is."""
    from orchestra.pipeline import Pipeline
    from orchestra.strategies import base

    made = []
    original = base.Question.__new__
    monkeypatch.setattr(base.Question, "__new__",
                        lambda cls, value: made.append(value) or original(cls, value))
    strategies = strategies_for(backend)
    ans = Pipeline(backend, strategies, SelfRouter(strategies)).run(
        "  Where is the zebra?  ", [Document("d", words(400))])
    assert ans.route.signals["declined"] and ans.route.strategy == "full"  # two strategies read
    assert made == ["Where is the zebra?"]
    with pytest.raises(InputError, match="question is empty"):
        Pipeline(backend, strategies).run("   ", [Document("d", words(40))])


def test_routers_find_strategies_by_their_declared_kind_not_their_names(backend):
    from orchestra.strategies.base import FULL

    class Reader(Strategy):  # a type name no alias table could know
        name = "my_reader"
        kind = FULL

        def _answer(self, question, corpus):
            return self.read(corpus.chunks[0].text, question, corpus.chunks[:1], Trace())

    class Misnamed(Strategy):  # named like full context, but declares no kind
        name = "full_context"

        def _answer(self, question, corpus):  # pragma: no cover - never chosen
            raise AssertionError

    strategies = {"full": Misnamed(backend), "mine": Reader(backend)}
    r = RulesRouter(strategies).route("Where is the stone?", corpus_of(backend, words(150)),
                                      backend)
    assert r.strategy == "mine" and r.signals["situation"] == "short"
    ans = SelfRouter({"mine": Reader(backend)}).route_and_answer(
        "Where is the stone?", corpus_of(backend, words(150)), backend)
    assert ans.route.strategy == "mine" and "no strategy that may decline" in ans.route.reason
