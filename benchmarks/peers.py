"""The tools users have today, side by side with orchestra, on the same samples and backend.

- LlamaIndex's ordinary RAG: ``VectorStoreIndex.from_documents`` with the same MiniLM embedder,
  its default node parser (SentenceSplitter, 1024-token chunks, 200 overlap), default response
  synthesis (compact) and default ``similarity_top_k=2``.
- LlamaIndex with chunks its embedder can read (``llamaindex_small``): SentenceSplitter at 200
  tokens (MiniLM reads 256 word pieces; 1024-token nodes are embedded from their first quarter
  only), 20 overlap, top 5 (about the prompt size of LangChain's top 6).
- LangChain: ``RecursiveCharacterTextSplitter`` (1000 characters, 200 overlap, the tutorial
  setting), the same embedder in an ``InMemoryVectorStore``, top-6, ``LongContextReorder``, and a
  stuffed prompt: the tutorial's (``langchain``) or RULER's QA template with the instruction
  before and after the documents and no system message, so the model's own default applies
  (``langchain_ruler``, the strongest plain pipeline measured in issue 12).
Both drive OUR backend through orchestra.integrations (``OrchestraLLM``,
``OrchestraChatModel``), so only the orchestration differs. Each peer is wrapped as a strategy
(``answer(question, corpus) -> Answer`` with evidence spans and a measured Cost), so the
evaluation runner scores all systems the same way and the run resumes after a crash.

One difference from a stock install: LlamaIndex counts tokens with tiktoken, which downloads its
vocabulary at first use; offline, we give it the backend's own tokenizer instead
(``Settings.tokenizer``), so its 1024-token chunks are 1024 SmolLM2 tokens.

    python benchmarks/peers.py --dataset niah --lengths 4000 --limit 5 --out /tmp/peers-niah
    python benchmarks/peers.py --dataset ruler_qa --lengths 4000,16000 --limit 5 --out ...

It prints one table: system x task x length -> quality, evidence recall, prompt tokens,
seconds (means per question). Every system, peers included, is scored the same way: orchestra's
``orchestra.eval.metrics.score`` on the reply text (the task's headline metric, RULER's
``contains`` for QA), and ``--report-only`` rescores every stored row from its reply text, so
rows scored by an older rule are compared on today's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from orchestra.backends.base import Backend, GenerationRequest, GenerationResult  # noqa: E402
from orchestra.corpus import Corpus  # noqa: E402
from orchestra.types import Answer, Cost, Evidence, Trace  # noqa: E402

READER_MAX_TOKENS = 32  # as in benchmarks/pipelines/eval_all.yaml
LANGCHAIN_PROMPT = (
    "Answer the question based only on the following context:\n\n{context}\n\n"
    "Question: {question}"
)
# RULER's QA template (scripts/data/synthetic/constants.py), answer prefix included.
RULER_PROMPT = (
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nThe following are given documents.\n\n{context}\n\n"
    "Answer the question based on the given documents. Only give me the answer and do not "
    "output any other words.\n\nQuestion: {question} Answer:"
)


class CountingBackend(Backend):
    """Our backend, counting what a peer framework asks of it (Cost is measured, not guessed)."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.results: list[GenerationResult] = []

    context_window = property(lambda self: self.inner.context_window)
    capabilities = property(lambda self: self.inner.capabilities)
    tokenizer = property(lambda self: self.inner.tokenizer)

    def count_prompt_tokens(self, messages):
        return self.inner.count_prompt_tokens(messages)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        out = self.inner.generate(requests)
        self.results.extend(out)
        return out

    def take_cost(self) -> Cost:
        cost = Cost()
        for r in self.results:
            cost.add_generation(r)
        self.results = []
        return cost


def _span(doc_text: str, piece: str, start: int | None) -> tuple[int, int] | None:
    """Where a retrieved piece sits in its document (frameworks may strip whitespace)."""
    if start is not None and doc_text[start:start + len(piece)] == piece:
        return start, start + len(piece)
    i = doc_text.find(piece)
    if i < 0:
        i = doc_text.find(piece.strip())
        piece = piece.strip()
    return (i, i + len(piece)) if i >= 0 else None


class PeerStrategy:
    """A peer framework as a strategy: fresh index per corpus, one query, measured cost."""

    name = "peer"
    kind = None  # routers reach a peer only by its name
    requires = frozenset()

    def __init__(self, backend: Backend):
        self.backend = CountingBackend(backend)

    def answer(self, question: str, corpus: Corpus) -> Answer:
        self.backend.take_cost()
        t0 = time.perf_counter()
        text, pieces = self._query(question, corpus)
        cost = self.backend.take_cost()
        cost.wall_seconds = time.perf_counter() - t0
        evidence = []
        for doc_id, piece, start in pieces:
            span = _span(corpus.document(doc_id).text, piece, start)
            if span:
                evidence.append(Evidence(chunk_id=f"{doc_id}:{span[0]}", doc_id=doc_id,
                                         start=span[0], end=span[1]))
        return Answer(question=question, text=text, strategy=self.name, evidence=evidence,
                      cost=cost, trace=Trace())

    def _query(self, question: str, corpus: Corpus) -> tuple[str, list[tuple[str, str, Any]]]:
        raise NotImplementedError


class LlamaIndexDefault(PeerStrategy):
    name = "llamaindex"

    def __init__(self, backend: Backend, chunk_size: int | None = None,
                 chunk_overlap: int | None = None, top_k: int | None = None):
        super().__init__(backend)
        from llama_index.core import Settings

        from orchestra.integrations.llama_index import MiniLMEmbedding, OrchestraLLM

        # LlamaIndex only takes len() of what its tokenizer returns: token offsets will do.
        Settings.tokenizer = backend.tokenizer.offsets
        self.llm = OrchestraLLM(backend=self.backend, max_tokens=READER_MAX_TOKENS)
        self.embed = MiniLMEmbedding()
        self.chunk_size, self.chunk_overlap, self.top_k = chunk_size, chunk_overlap, top_k

    def _query(self, question, corpus):
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.core.node_parser import SentenceSplitter

        docs = [Document(text=d.text, id_=d.id) for d in corpus.documents]
        kw: dict[str, Any] = {}
        if self.chunk_size:
            kw["transformations"] = [SentenceSplitter(chunk_size=self.chunk_size,
                                                      chunk_overlap=self.chunk_overlap or 0)]
        index = VectorStoreIndex.from_documents(docs, embed_model=self.embed, **kw)
        qkw = {"similarity_top_k": self.top_k} if self.top_k else {}
        response = index.as_query_engine(llm=self.llm, **qkw).query(question)
        pieces = [(n.node.ref_doc_id, n.node.get_content(), n.node.start_char_idx)
                  for n in response.source_nodes]
        return str(response), pieces


class LlamaIndexSmallChunks(LlamaIndexDefault):
    name = "llamaindex_small"

    def __init__(self, backend: Backend):
        super().__init__(backend, chunk_size=200, chunk_overlap=20, top_k=5)


class LangChainReorder(PeerStrategy):
    name = "langchain"
    prompt = LANGCHAIN_PROMPT

    def __init__(self, backend: Backend, k: int = 6):
        super().__init__(backend)
        from orchestra.integrations.langchain import MiniLMEmbeddings, OrchestraChatModel

        self.k = k
        self.llm = OrchestraChatModel(backend=self.backend, max_tokens=READER_MAX_TOKENS)
        self.embed = MiniLMEmbeddings()

    def _query(self, question, corpus):
        from langchain_community.document_transformers import LongContextReorder
        from langchain_core.documents import Document
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200,
                                                  add_start_index=True)
        chunks = splitter.split_documents(
            [Document(page_content=d.text, metadata={"doc_id": d.id}) for d in corpus.documents])
        store = InMemoryVectorStore.from_documents(chunks, self.embed)
        hits = store.as_retriever(search_kwargs={"k": self.k}).invoke(question)
        hits = LongContextReorder().transform_documents(hits)
        context = "\n\n".join(h.page_content for h in hits)
        # One human message: no system message, so the model's chat template adds its own.
        chain = ChatPromptTemplate.from_template(self.prompt) | self.llm | StrOutputParser()
        text = chain.invoke({"context": context, "question": question})
        pieces = [(h.metadata["doc_id"], h.page_content, h.metadata.get("start_index"))
                  for h in hits]
        return text, pieces


class LangChainRuler(LangChainReorder):
    name = "langchain_ruler"
    prompt = RULER_PROMPT


PEERS = {"llamaindex": LlamaIndexDefault, "llamaindex_small": LlamaIndexSmallChunks,
         "langchain": LangChainReorder, "langchain_ruler": LangChainRuler}


class PeersPipeline:
    """Our pipeline's strategies and router plus the peers, for the evaluation runner."""

    def __init__(self, pipeline, peers: dict[str, PeerStrategy]):
        self.pipeline = pipeline
        self.backend = pipeline.backend
        self.strategies = {**pipeline.strategies, **peers}
        self.chunk_tokens = pipeline.chunk_tokens
        self.overlap = pipeline.overlap

    def run(self, question, corpus):
        return self.pipeline.run(question, corpus)

    def to_config(self, full: bool = False):
        # Row keys hash this (full): our strategies' settings as the pipeline has them,
        # profile values included (a changed setting answers again).
        return self.pipeline.to_config(full=full)


class ReadMemo:
    """Reads already made in this run, reused for the same reader input (the same messages and
    decoding settings, so the same token ids; greedy, so the same reply). The default router's
    first RAG read is, token for token, LangChain-RULER's read (tests/test_parity.py), so it is
    computed once. A reused read's recorded seconds are added back to the reusing row's wall
    seconds (``reused_seconds`` in the row), so every system's seconds stay what its reads cost.
    """

    def __init__(self, backend: Backend):
        self.backend, self._generate = backend, backend.generate
        self.results: dict[tuple, GenerationResult] = {}
        self.reused_seconds = 0.0
        backend.generate = self.generate

    @staticmethod
    def key(r: GenerationRequest) -> tuple:
        return (tuple((m.role, m.content) for m in r.messages), r.max_tokens, r.temperature,
                tuple(r.stop), r.seed, r.repetition_penalty, r.no_repeat_ngram_size)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        keys = [self.key(r) for r in requests]
        todo = [i for i, k in enumerate(keys) if k not in self.results]
        if todo:
            for i, res in zip(todo, self._generate([requests[i] for i in todo])):
                self.results[keys[i]] = res
        hits = set(range(len(requests))) - set(todo)
        self.reused_seconds += sum(self.results[keys[i]].seconds for i in hits)
        return [self.results[k].model_copy() for k in keys]


def peers_runner(pipeline: PeersPipeline, out: str, systems: list[str], seed: int, info: dict,
                 memo: ReadMemo | None = None):
    """The evaluation runner, with a peer's rows keyed by the peer and the model alone: its
    settings are fixed in this file, so a pipeline whose own settings change (a new profile)
    reuses the peers' finished answers on the same samples instead of recomputing them."""
    from orchestra.eval.runner import Runner

    class PeersRunner(Runner):
        def spec(self, name: str) -> dict:
            if name in PEERS:
                return {"peer": name, "model": getattr(pipeline.backend, "model_name", None)}
            return super().spec(name)

        def evaluate(self, sample, name):
            if memo is None:
                return super().evaluate(sample, name)
            memo.reused_seconds = 0.0
            row = super().evaluate(sample, name)
            row["cost"]["wall_seconds"] += memo.reused_seconds
            row["reused_seconds"] = memo.reused_seconds
            return row

    return PeersRunner(pipeline, out, systems, seed=seed, run_info=info)


def rescore(rows: list[dict]) -> list[dict]:
    """Every row scored again from its reply text with orchestra's metrics
    (``orchestra.eval.metrics.score``, the task's headline as ``quality``), peers and ours
    alike: a row stored under an older or other scoring (a more lenient ``contains``) is
    compared on the same terms as the rest. A row without its reply, gold answers or task
    cannot be rescored and is left out (with a warning), not compared on its stored score."""
    from orchestra.eval import metrics

    out, dropped = [], 0
    for r in rows:
        if not isinstance(r.get("answer"), str) or "gold" not in r or "task" not in r:
            dropped += 1
            continue
        scores = metrics.score(r["task"], r["answer"], r["gold"], r.get("question"))
        out.append({**r, "scores": scores, "quality": scores[metrics.headline(r["task"])]})
    if dropped:
        print(f"peers: warning: {dropped} row(s) without reply, gold or task left out "
              "(they cannot be rescored)", file=sys.stderr)
    return out


def table(rows: list[dict]) -> str:
    from orchestra.eval.report import fmt, group_rows, summarize

    lines = ["| system | task | tokens | n | quality | evidence recall | prompt tokens | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for (dataset, length), rs in group_rows(rows).items():
        for s in summarize(rs):
            if s["strategy"] == "oracle":
                continue
            lines.append(f"| {s['strategy']} | {dataset} | {length} | {s['n']} | "
                         f"{s['quality']:.2f} | {fmt(s['evidence_recall'])} | "
                         f"{s['prompt_tokens']:.0f} | {s['seconds']:.1f} |")
    return "\n".join(lines)


def head_to_head(rows: list[dict], reference: str = "langchain_ruler",
                 ours: Sequence[str] = ("rag", "router")) -> str:
    """Per question, on the samples both answered: where the reference is right and ours is
    wrong, and the reverse (RULER's contains, the qa headline), with the exact two-sided sign
    test's p on those discordant pairs (scipy's binomtest; McNemar's exact test)."""
    from scipy.stats import binomtest

    lines = []
    for (dataset, length), rs in group_rows_(rows).items():
        by = {(r["sample_id"], r["strategy"]): r["quality"] for r in rs}
        for name in ours:
            both = [sid for sid, n in by if n == reference and (sid, name) in by]
            if not both:
                continue
            ref_only = sum(by[(sid, reference)] > by[(sid, name)] for sid in both)
            ours_only = sum(by[(sid, name)] > by[(sid, reference)] for sid in both)
            p = binomtest(ours_only, ref_only + ours_only).pvalue if ref_only + ours_only else 1.0
            lines.append(f"- {dataset} {length}: {reference} right where {name} is wrong on "
                         f"{ref_only} of {len(both)}, the reverse on {ours_only} "
                         f"(exact sign test p = {p:.3g})")
    return "\n".join(lines)


def pairs(rows: list[dict], systems: Sequence[str]) -> str:
    """Every system against LangChain-RULER, and the router against each other peer."""
    out = [head_to_head(rows, ours=[s for s in systems if s != "langchain_ruler"])]
    if "router" in systems:
        out += [head_to_head(rows, reference=p, ours=["router"]) for p in systems
                if p in PEERS and p != "langchain_ruler"]
    return "\n".join(o for o in out if o)


def group_rows_(rows):
    from orchestra.eval.report import group_rows

    return group_rows(rows)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", default=str(Path(__file__).parent / "pipelines" /
                                              "eval_all.yaml"))
    ap.add_argument("--dataset", default="niah")
    ap.add_argument("--lengths", default="4000")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--systems",
                    default="llamaindex,llamaindex_small,langchain,langchain_ruler,rag,router",
                    help=f"peers ({', '.join(PEERS)}) and our strategies / router")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reuse-reads", action="store_true",
                    help="compute a read once when two systems give the model the same input "
                         "(the router's first read is LangChain-RULER's); its seconds are "
                         "counted for both")
    ap.add_argument("--report-only", action="store_true",
                    help="answer nothing: print the table from the rows already in --out, "
                         "every row rescored from its reply text")
    return ap


def stored_rows(out: str | Path, systems: Sequence[str]) -> list[dict]:
    """The rows already in ``out`` for ``systems``, the last per (sample, system), rescored
    from their reply text, on the questions every system answered (a run stopped early
    compares like with like)."""
    from orchestra.eval.runner import RESULTS, read_results

    rows = rescore(_latest([r for r in read_results(Path(out) / RESULTS, repair=False)
                            if r["strategy"] in systems]))
    done: dict[str, set] = {}
    for r in rows:
        done.setdefault(r["sample_id"], set()).add(r["strategy"])
    return [r for r in rows if done[r["sample_id"]] >= set(systems)]


def _answer(args, systems: list[str]) -> list[dict]:
    """Run every system on the dataset (resuming from --out); its rows, rescored."""
    from orchestra.eval.datasets import load_dataset, parse_lengths
    from orchestra.pipeline import Pipeline

    pipe = Pipeline.from_yaml(args.pipeline)
    memo = ReadMemo(pipe.backend) if args.reuse_reads else None
    peers = {name: cls(pipe.backend) for name, cls in PEERS.items() if name in systems}
    ds = load_dataset(args.dataset, pipe.backend.tokenizer, parse_lengths(args.lengths),
                      args.limit, args.seed)
    runner = peers_runner(PeersPipeline(pipe, peers), args.out, systems, args.seed,
                          {"dataset": args.dataset, "seed": args.seed}, memo)
    rows = runner.run(ds)
    wanted = {s.sample_id for s in ds.samples}
    # Rows resumed from an earlier run were scored then: score them all as of now.
    return rescore([r for r in rows if r["sample_id"] in wanted and r["strategy"] in systems])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from orchestra.errors import OrchestraError

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    try:
        rows = stored_rows(args.out, systems) if args.report_only else _answer(args, systems)
    except OrchestraError as e:
        print(f"peers: error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    print(pairs(rows, systems))
    return 0


def _latest(rows: list[dict]) -> list[dict]:
    """The last row per (sample, system): a rerun with other settings appends, never edits."""
    return list({(r["sample_id"], r["strategy"]): r for r in rows}.values())


if __name__ == "__main__":
    sys.exit(main())
