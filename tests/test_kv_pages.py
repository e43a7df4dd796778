"""KV-page retrieval: exactness against ordinary attention, handles, bad input, a 16k needle."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from orchestra.errors import ConfigError, InputError
from orchestra.kv.config import PageConfig
from orchestra.kv.engine import PagedEngine
from orchestra.kv.handle import PrefilledDocument, model_fingerprint




@pytest.fixture(scope="module")
def tiny():
    return tiny_llama()


def _reference(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


# -- exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [50, 128, 160])
def test_all_pages_selected_equals_full_attention(tiny, chunk):
    ids = torch.randint(0, 101, (300,), generator=torch.Generator().manual_seed(1)).tolist()
    doc, q = ids[:260], ids[260:]
    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=40, sink=2, local=16, chunk=chunk))
    kv = eng.prefill(doc)
    ours = eng.logits(kv, q)
    ref = _reference(tiny, ids)[260:]
    assert ref.abs().max() > 1.0
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_fewer_pages_differs_but_stays_inside_window(tiny):
    ids = torch.randint(0, 101, (420,), generator=torch.Generator().manual_seed(2)).tolist()
    doc, q = ids[:400], ids[400:]
    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=4, sink=2, local=16, chunk=64,
                                       prompt_step=0))
    kv = eng.prefill(doc)
    out = eng.generate(kv, q, 6, eos_ids=set(), watch_pages=[10])
    m = kv.candidates(400)
    assert m == (400 - 16 - 2) // 8
    # Each of 6 steps (the question, then 5 of the 6 tokens fed back) x 3 layers x 2 KV heads reads 4 of m pages.
    assert out.stats.pages_read == 6 * 3 * 2 * 4
    assert out.stats.pages_total == 6 * 3 * 2 * m
    assert 0.0 <= out.stats.hit_rate() <= 1.0
    assert not torch.allclose(eng.logits(kv, q), _reference(tiny, ids)[400:], atol=1e-3)


def test_selection_scorers_pick_a_planted_page(tiny):
    """A page whose keys align with the query must win under each scorer."""
    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=2, sink=2, local=16, chunk=64))
    ids = torch.randint(0, 101, (200,), generator=torch.Generator().manual_seed(3)).tolist()
    kv = eng.prefill(ids)
    q = torch.zeros(1, 4, 1, 16)
    q[..., 0] = 1.0
    with torch.inference_mode():
        kv.keys[0] *= 0.01
        kv.keys[0, :, 2 + 5 * 8: 2 + 6 * 8, 0] = 50.0  # page 5
        kv.summarize(0, 200, 0)
    for scorer in ("max", "quest", "mean"):
        eng.cfg = PageConfig(page_size=8, top_pages=2, sink=2, local=16, chunk=64, scorer=scorer)
        eng.score_distance = 0
        pages = eng._select(0, q, kv, kv.candidates(200), 2)
        assert (pages == 5).any(dim=-1).all(), scorer


def _plant(kv, page, layers, page_size=8, sink=2):
    """Make ``page`` win every layer's and head's score whatever the queries' signs."""
    a = sink + page * page_size
    with torch.inference_mode():
        for li in range(layers):
            kv.keys[li] *= 0.01
            kv.keys[li, :, a:a + page_size // 2] = 50.0
            kv.keys[li, :, a + page_size // 2:a + page_size] = -50.0


def test_question_selection_reads_one_set_with_the_page_after(tiny):
    from dataclasses import replace

    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=2, sink=2, local=16, chunk=64))
    ids = torch.randint(0, 101, (200,), generator=torch.Generator().manual_seed(4)).tolist()
    kv = eng.prefill(ids)
    _plant(kv, 5, eng.n_layers)
    question = [7, 8, 9, 10]
    pages = eng.question_pages(kv, question)
    assert pages.tolist() == [5, 6]  # the winner and its follower
    out = eng.generate(kv, question, 4, eos_ids=set(), pages=pages)
    # Every layer and KV head read the same two pages at every step.
    steps = out.stats.steps
    assert out.stats.page_reads == {5: steps * eng.n_layers * eng.n_kv,
                                    6: steps * eng.n_layers * eng.n_kv}
    eng.cfg = replace(eng.cfg, follow=0)
    assert 5 in eng.question_pages(kv, question).tolist()
    assert 6 not in eng.question_pages(kv, question).tolist()
    # Per-step selection (no page set given) lets each layer and head choose: the planted
    # page, not a set.
    out = eng.generate(kv, question, 4, eos_ids=set())
    assert 5 in out.stats.page_reads and 6 not in out.stats.page_reads
    assert len(out.stats.page_reads) > 2


def test_baseline_votes_demote_pages_every_question_attends(tiny):
    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=2, sink=2, local=16, chunk=64,
                                       follow=0))
    ids = torch.randint(0, 101, (200,), generator=torch.Generator().manual_seed(5)).tolist()
    kv = eng.prefill(ids)
    _plant(kv, 5, eng.n_layers)
    question = [7, 8, 9, 10]
    votes = eng.page_votes(kv, question)
    assert votes.shape == (kv.candidates(200),) and int(votes.argmax()) == 5
    runner_up = int(votes.argsort(descending=True)[1])
    # A baseline that gives page 5 as much attention as the question does: no longer chosen.
    baseline = torch.zeros_like(votes)
    baseline[5] = votes[5]
    pages = eng.question_pages(kv, question, baseline).tolist()
    assert 5 not in pages and runner_up in pages


def test_the_engine_keeps_no_state_of_a_call_so_threads_can_share_it(tiny):
    """Selections and votes are arguments and results: answers, votes and page sets computed
    at the same time in several threads equal those computed one by one."""
    from concurrent.futures import ThreadPoolExecutor

    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=2, sink=2, local=16, chunk=64))
    kv = eng.prefill(torch.randint(0, 101, (200,), generator=torch.Generator().manual_seed(6))
                     .tolist())
    _plant(kv, 5, eng.n_layers)
    before = set(vars(eng))
    questions = [[7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23, 24]]
    pages = {i: eng.question_pages(kv, q) for i, q in enumerate(questions)}
    pinned = {i: eng.generate(kv, q, 5, set(), pages=pages[i]).tokens
              for i, q in enumerate(questions)}
    free = {i: eng.generate(kv, q, 5, set()).tokens for i, q in enumerate(questions)}
    votes = {i: eng.page_votes(kv, q) for i, q in enumerate(questions)}
    jobs = [(kind, i) for i in range(len(questions)) for kind in ("pinned", "free", "votes")] * 3
    with ThreadPoolExecutor(6) as ex:
        results = list(ex.map(lambda job: (job, {
            "pinned": lambda i: eng.generate(kv, questions[i], 5, set(), pages=pages[i]).tokens,
            "free": lambda i: eng.generate(kv, questions[i], 5, set()).tokens,
            "votes": lambda i: eng.page_votes(kv, questions[i])}[job[0]](job[1])), jobs))
    for (kind, i), got in results:
        want = {"pinned": pinned, "free": free, "votes": votes}[kind][i]
        if kind == "votes":
            torch.testing.assert_close(got, want)
        else:
            assert got == want, (kind, i)
    assert set(vars(eng)) == before


# -- handles ----------------------------------------------------------------------------------
def test_handle_round_trip_and_refusals(tiny, tmp_path):
    ids = list(range(1, 90))
    eng = PagedEngine(tiny, PageConfig(page_size=8, top_pages=4, sink=2, local=16, chunk=32))
    fp = model_fingerprint(tiny)
    h = PrefilledDocument(kv=eng.prefill(ids), token_ids=ids, fingerprint=fp, key="k")
    path = h.save(tmp_path / "doc.pt")
    back = PrefilledDocument.load(path, fp, eng.cfg)
    assert back.token_ids == ids and back.n_tokens == 89
    torch.testing.assert_close(eng.logits(back.kv, [5, 6, 7]), eng.logits(h.kv, [5, 6, 7]))

    other = model_fingerprint(tiny_llama(seed=1))
    assert other != fp
    with pytest.raises(InputError, match="another model"):
        PrefilledDocument.load(path, other)
    with pytest.raises(InputError, match="page_size 16"):
        PrefilledDocument.load(path, fp, PageConfig(page_size=16, top_pages=4, sink=2, local=16))
    blob = torch.load(path, weights_only=True)
    blob["version"] = 999
    torch.save(blob, tmp_path / "old.pt")
    with pytest.raises(InputError, match="version 999"):
        PrefilledDocument.load(tmp_path / "old.pt", fp)
    (tmp_path / "junk.pt").write_bytes(b"not a handle")
    with pytest.raises(InputError, match="not a readable"):
        PrefilledDocument.load(tmp_path / "junk.pt", fp)
    with pytest.raises(InputError, match="no saved"):
        PrefilledDocument.load(tmp_path / "missing.pt", fp)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"page_size": 0}, "page_size must be a positive"),
    ({"page_size": 600}, "larger than the model's window"),
    ({"top_pages": 100}, "exceeds the model's window"),
    ({"local": -1}, "local must be a non-negative"),
    ({"scorer": "magic"}, "scorer must be one of"),
    ({"selection": "sometimes"}, "selection must be one of"),
    ({"follow": -1}, "follow must be a non-negative"),
    ({"lead": 1.5}, "lead must be a non-negative"),
])
def test_bad_settings(tiny, kw, match):
    base = dict(page_size=8, top_pages=4, sink=2, local=16, chunk=32)
    with pytest.raises(ConfigError, match=match):
        PagedEngine(tiny, PageConfig(**{**base, **kw}))


def test_document_shorter_than_a_page(tiny):
    eng = PagedEngine(tiny, PageConfig(page_size=64, top_pages=2, sink=2, local=16, chunk=32))
    with pytest.raises(InputError, match="fewer than one page"):
        eng.prefill(list(range(10)))


# -- the strategy (tiny real backend) ---------------------------------------------------------------
def test_strategy_prefills_once_and_reports_cost(tiny_backend):
    from orchestra.corpus import Corpus
    from orchestra.registry import resolve
    from orchestra.strategies.kv_pages import KVPages

    assert resolve("strategy", "kv_pages") is KVPages
    s = KVPages(tiny_backend, page_size=16, top_pages=4, sink=4, local=32, chunk=64, max_tokens=4)
    assert s.spec()["top_pages"] == 4
    text = " ".join(f"Sentence {i} talks about topic {i % 7}." for i in range(120))
    corpus = Corpus.from_texts([text], tiny_backend.tokenizer)
    a1 = s.answer("What is topic 3?", corpus)
    a2 = s.answer("What is topic 5?", corpus)
    assert a1.cost.prefill_seconds > 0 and a2.cost.prefill_seconds == 0
    assert a2.trace.steps[0].detail["reused"] is True
    handle, _ = s.prefill(corpus)
    assert len(handle.baselines) == 1  # the baseline question was read once, at prefill
    for a in (a1, a2):
        assert 0 < a.cost.kv_pages_read < a.cost.kv_pages_total
        assert a.cost.decode_seconds > 0 and a.cost.generated_tokens >= 1
        assert a.evidence and all(e.doc_id == corpus.documents[0].id for e in a.evidence)
        # Evidence is what the reader saw: the pages it read and the local window at the end.
        assert max(e.end for e in a.evidence) == len(text)
        assert sum(e.end - e.start for e in a.evidence) < len(text)
    with pytest.raises(InputError, match="fewer than one page"):
        s.answer("q?", Corpus.from_texts(["tiny doc"], tiny_backend.tokenizer))


def test_strategy_bad_options(tiny_backend):
    from orchestra.strategies.kv_pages import KVPages

    with pytest.raises(ConfigError, match="page_size must be a positive"):
        KVPages(tiny_backend, page_size=0)
    with pytest.raises(ConfigError, match="larger than the model's window"):
        KVPages(tiny_backend, page_size=4096)
    with pytest.raises(ConfigError, match="baseline_question"):
        KVPages(tiny_backend, page_size=16, top_pages=4, local=32, baseline_question=" ")
    with pytest.raises(ConfigError, match="kv_dtype"):
        KVPages(tiny_backend, kv_dtype="int3")
    with pytest.raises(ConfigError, match="before"):
        KVPages(tiny_backend, page_size=16, top_pages=4, local=32, chunk=64,
                prompts={"reader": "Q: {question}\n{context}"})


def test_strategy_reads_only_through_the_paged_reader(tiny_backend):
    """A backend that offers a PagedReader and nothing of a transformers model (no .model,
    .hf_tokenizer, .lock, .eos_ids) serves kv_pages: the same answer, pages and evidence."""
    from orchestra.backends.base import KV_PAGES
    from orchestra.backends.scripted import ScriptedBackend
    from orchestra.corpus import Corpus, Document
    from orchestra.strategies.kv_pages import KVPages

    class ReaderOnly(ScriptedBackend):
        def __init__(self, inner):
            super().__init__(["never generated"], context_window=inner.context_window,
                             capabilities=(KV_PAGES,))
            self._inner = inner

        def paged_reader(self, config, kv_dtype=None):
            return self._inner.paged_reader(config, kv_dtype)

    other = ReaderOnly(tiny_backend)
    assert not any(hasattr(other, a) for a in ("model", "hf_tokenizer", "lock", "eos_ids"))
    kw = dict(page_size=16, top_pages=4, sink=4, local=32, chunk=64, max_tokens=4)
    text = " ".join(f"Line {i} names colour {i % 5}." for i in range(150))
    want = KVPages(tiny_backend, **kw).answer(
        "Which colour?", Corpus([Document("d", text)], tiny_backend.tokenizer))
    got = KVPages(other, **kw).answer("Which colour?", Corpus([Document("d", text)],
                                                             tiny_backend.tokenizer))
    assert got.text == want.text and got.cost.kv_pages_read == want.cost.kv_pages_read
    assert [(e.start, e.end) for e in got.evidence] == [(e.start, e.end) for e in want.evidence]
    assert other.requests == []  # no ordinary generation: every model call was the reader's
    with pytest.raises(Exception, match="cannot read KV pages"):
        ScriptedBackend(capabilities=(KV_PAGES,)).paged_reader(None)


def test_strategy_persists_handles(tiny_backend, tmp_path, monkeypatch):
    from orchestra.corpus import Corpus
    from orchestra.strategies.kv_pages import KVPages

    monkeypatch.setenv("ORCHESTRA_CACHE", str(tmp_path))
    kw = dict(page_size=16, top_pages=4, sink=4, local=32, chunk=64, max_tokens=3, persist=True)
    corpus = Corpus.from_texts([" ".join(["word"] * 300)], tiny_backend.tokenizer)
    first = KVPages(tiny_backend, **kw).answer("Which word?", corpus)
    assert list((tmp_path / "kv_pages").glob("*.pt"))
    second = KVPages(tiny_backend, **kw).answer("Which word?", corpus)  # a new instance: disk
    assert first.cost.prefill_seconds > 0 and second.cost.prefill_seconds == 0
    assert second.text == first.text


# -- the embedded model ---------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_model_exactness(embedded, essays_dir):
    text = sorted(essays_dir.glob("*.txt"))[0].read_text()[:2500]
    ids = embedded.hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    doc, q = ids[:-16], ids[-16:]
    eng = PagedEngine(embedded.model, PageConfig(page_size=16, top_pages=64, sink=4, local=64,
                                                 chunk=128))
    with embedded.lock:
        ours = eng.logits(eng.prefill(doc), q)
        ref = _reference(embedded.model, ids)[-16:]
    torch.testing.assert_close(ours, ref, atol=2e-3, rtol=1e-4)
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.slow
def test_needle_at_16k(embedded, essays_dir):
    """One 16k-token needle (twice the window): found while reading under 10% of pages."""
    from orchestra.corpus import Corpus
    from orchestra.eval.needles import essays_text, make_needle
    from orchestra.strategies.kv_pages import KVPages

    # 10% depth: the case per-step selection missed (benchmarks/README.md, KV pages).
    # Hanoi: the needle of the measurements in benchmarks/README.md. Seed 0 draws its city from
    # the one city list (orchestra/eval/needles.py) since the builders were merged, and draws
    # Mumbai, whose number the 135M reader misreads ("... is 1984") though its page is read.
    nd = make_needle(embedded.tokenizer, essays_text(essays_dir), 16000, 0.1, city="Hanoi")
    assert nd.text[nd.needle_start:nd.needle_end].endswith(f"is {nd.answer}.")
    corpus = Corpus.from_texts([nd.text], embedded.tokenizer)
    assert corpus.n_tokens > 2 * embedded.context_window - 500
    s = KVPages(embedded, page_size=64, top_pages=24, max_tokens=24)
    ans = s.answer(nd.question, corpus)
    assert nd.answer in ans.text
    assert ans.cost.pages_read_fraction <= 0.10
    assert ans.cost.prefill_seconds > 0 and ans.cost.decode_seconds > 0
