"""A Pipeline: one backend, named retrievers and strategies, and a router.

``run(question, documents)`` builds a Corpus (chunked by the backend's tokenizer), lets the
router choose a strategy and returns the Answer with its Route. ``run_batch`` builds and
indexes the corpus once for many questions.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import yaml

from orchestra.backends import Backend, load_backend
from orchestra.backends.base import GenerationSettings
from orchestra.config import RETRIEVER_REFS, PipelineConfig, check, parse
from orchestra.corpus import Corpus, Document
from orchestra.errors import ConfigError, InputError
from orchestra.registry import resolve
from orchestra.spec import entry
from orchestra.strategies.base import check_question, given
from orchestra.types import Answer, Route
from orchestra.yaml_lines import Located, load_file, load_located

if TYPE_CHECKING:
    from orchestra.streaming import StreamEvent

# The pipeline `orchestra ask` uses when no file is given; its strategies are named by their
# types, so routes, `--strategy` and the registry use one set of names.
# examples/pipelines/embedded.yaml holds the same (a test keeps them equal).
DEFAULT_PIPELINE = {
    "backend": {"type": "transformers", "model": "embedded", "device": "auto"},
    "retrievers": {"dense": {"type": "dense"}},
    "strategies": {
        # Reading options (reorder, templates, ...) come from the model family's profile
        # (orchestra/profiles/smollm2.yaml for the embedded reader).
        "rag": {"type": "rag", "retriever": "dense"},
        "full_context": {"type": "full_context"},
        "kv_pages": {"type": "kv_pages", "page_size": 64, "top_pages": 16},
        "chain_of_agents": {"type": "chain_of_agents"},
        "map_reduce": {"type": "map_reduce"},
    },
    "router": {"type": "self_route", "first": "rag",
               "fallback": ["full_context", "kv_pages", "chain_of_agents"]},
}

# Corpora a pipeline keeps for reuse (Pipeline.corpus); a server's registered corpora are held
# by the server itself.
KEEP_CORPORA = 16


class Pipeline:
    def __init__(self, backend: Backend, strategies: dict[str, Any], router: Any = None,
                 retrievers: dict[str, Any] | None = None, chunk_tokens: int = 200,
                 overlap: int = 20):
        if not strategies:
            raise ConfigError("a pipeline needs at least one strategy")
        self.backend = backend
        self.strategies = dict(strategies)
        self.retrievers = dict(retrievers or {})
        if router is None:
            from orchestra.routers.fixed import FixedRouter

            router = FixedRouter(self.strategies, strategy=next(iter(self.strategies)))
        self.router = router
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self._corpora: dict[str, Corpus] = {}
        self._source: dict | None = None  # the file's data, uninterpolated, for to_yaml

    # -- building -------------------------------------------------------------------------
    # One way in: every constructor below reads its settings as a Located (data with the line
    # of each field) and hands it to from_located, which parses, checks and builds.
    @classmethod
    def from_located(cls, located: Located, allow_modules: Iterable[str] = (),
                     backend: Backend | None = None) -> "Pipeline":
        """The pipeline ``located`` describes: the model profile's values filled in, every
        type, option and reference checked (errors name the source, line and field), then
        built. ``backend``: use this one instead of building the file's (its model family's
        profile applies when the data names none). ``to_yaml`` writes the source back."""
        cfg = parse(located)
        check(cfg, located, allow_modules)
        pipe = cls.from_config(cfg, allow_modules, backend)
        if backend is None:  # the source names the backend that ran; a given one it does not
            pipe._source = located.data
        return pipe

    @classmethod
    def from_yaml(cls, path: str | Path, allow_modules: Iterable[str] = ()) -> "Pipeline":
        return cls.from_located(load_file(path), allow_modules)

    @classmethod
    def from_yaml_text(cls, text: str, allow_modules: Iterable[str] = (),
                       source: str = "<string>") -> "Pipeline":
        return cls.from_located(load_located(text, source), allow_modules)

    @classmethod
    def from_dict(cls, data: dict, allow_modules: Iterable[str] = (),
                  backend: Backend | None = None) -> "Pipeline":
        """A pipeline file's data given as a dict (no line numbers: errors name ``<dict>``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a pipeline is a mapping, not a {type(data).__name__}")
        return cls.from_located(Located(copy.deepcopy(data), {}, "<dict>"), allow_modules,
                                backend)

    @classmethod
    def default(cls, backend: Backend | None = None, **strategy_options: Any) -> "Pipeline":
        """The embedded default pipeline; ``strategy_options`` apply to every strategy."""
        data = copy.deepcopy(DEFAULT_PIPELINE)
        data["strategies"] = {n: {**s, **_applicable(s["type"], strategy_options)}
                              for n, s in data["strategies"].items()}
        if backend is not None:
            # The backend's model family picks the profile (a file picks it by name or by
            # its backend's model).
            from orchestra.profiles import family_of_backend

            data["profile"] = family_of_backend(backend)
        return cls.from_dict(data, backend=backend)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, allow_modules: Iterable[str] = (),
                    backend: Backend | None = None) -> "Pipeline":
        """The components of a parsed config (orchestra.config.parse; the caller checked it)."""
        from orchestra.registry import allowing

        # Options that name code by import path (a foreign retriever's factory) resolve only
        # in the modules allowed here.
        with allowing(allow_modules):
            return cls._from_config(cfg, tuple(allow_modules), backend)

    @classmethod
    def _from_config(cls, cfg: PipelineConfig, allow_modules: tuple[str, ...],
                     backend: Backend | None) -> "Pipeline":
        allow = allow_modules
        if backend is None:
            backend = load_backend(cfg.backend.type, allow_modules=allow, **cfg.backend.options)
        retrievers: dict[str, Any] = {}

        def build_retriever(name: str, stack: tuple = ()) -> Any:
            if name in retrievers:
                return retrievers[name]
            if name not in cfg.retrievers:
                return name  # a registered retriever type; the strategy builds it
            if name in stack:
                raise ConfigError(f"retrievers refer to each other in a cycle: "
                                  f"{' -> '.join(stack + (name,))}")
            comp = cfg.retrievers[name]
            opts = _resolve_refs(comp.options, RETRIEVER_REFS,
                                 lambda n: build_retriever(n, stack + (name,)))
            retrievers[name] = _construct(resolve("retriever", comp.type, allow),
                                          f"retriever {name!r}", backend=backend, **opts)
            return retrievers[name]

        for name in cfg.retrievers:
            build_retriever(name)
        strategies = {}
        for name, comp in cfg.strategies.items():
            opts = _resolve_refs(comp.options, RETRIEVER_REFS, build_retriever)
            strategies[name] = _construct(resolve("strategy", comp.type, allow),
                                          f"strategy {name!r}", backend, **opts)
        router = _construct(resolve("router", cfg.router.type, allow), "the router",
                            strategies, **cfg.router.options)
        return cls(backend, strategies, router, retrievers,
                   chunk_tokens=cfg.corpus.chunk_tokens, overlap=cfg.corpus.overlap)

    # -- running --------------------------------------------------------------------------
    def corpus(self, documents: Corpus | Iterable[str | Path | Document] | str | Path) -> Corpus:
        if isinstance(documents, Corpus):
            return documents
        if isinstance(documents, (str, Path, Document)):
            documents = [documents]
        corpus = Corpus.from_inputs(documents, self.backend.tokenizer,
                                    chunk_tokens=self.chunk_tokens, overlap=self.overlap)
        # Reuse the same Corpus object for the same texts so chunkings and indexes are shared;
        # the KEEP_CORPORA most recent are kept (a long-lived pipeline, as orchestra.ask's
        # default, must not hold every corpus it ever read).
        corpus = self._corpora.pop(corpus.hash, corpus)
        self._corpora[corpus.hash] = corpus
        while len(self._corpora) > KEEP_CORPORA:
            self._corpora.pop(next(iter(self._corpora)))
        return corpus

    def forget(self, corpus: Corpus) -> None:
        """Drop ``corpus`` from the reuse table ``corpus()`` keeps (a server forgets documents
        sent with one request once answered)."""
        self._corpora.pop(corpus.hash, None)

    def run(self, question: str, documents, strategy: str | None = None, *,
            generation: GenerationSettings | None = None) -> Answer:
        """The Answer; ``strategy`` (a name in this pipeline) reads that way, skipping the
        router. ``generation``: reply settings (max_tokens, temperature, seed, stop) for the
        final read, passed through the router to the strategy, which sizes its prompt for
        that max_tokens; fields left None keep the strategy's own."""
        t0 = time.perf_counter()
        question = check_question(question)
        corpus = self.corpus(documents)
        extra = given(generation)
        if strategy is None:
            answer = self.router.route_and_answer(question, corpus, self.backend, **extra)
        else:
            route = self.chosen_route(strategy)
            answer = self.strategies[strategy].answer(question, corpus, **extra)
            answer.route = route
        answer.cost.wall_seconds = time.perf_counter() - t0
        return finish_answer(answer, corpus)

    def chosen_route(self, strategy: str) -> Route:
        """The Route of a strategy the caller named (refused when this pipeline lacks it)."""
        if strategy not in self.strategies:
            raise InputError(f"strategy {strategy!r} is not in this pipeline; its strategies: "
                             f"{', '.join(self.strategies)}")
        return Route(strategy=strategy, reason="chosen by the caller", router="fixed")

    def stream(self, question: str, documents, strategy: str | None = None, *,
               generation: GenerationSettings | None = None) -> Iterator[StreamEvent]:
        """Answer while streaming: yields a RouteEvent, an EvidenceEvent, TokenEvents (pieces
        of the answer's text as the model writes them), then one AnswerEvent with the final
        Answer (route with its reason, exact evidence, cost), as ``run`` returns it. Every
        event is a pydantic model with a ``type`` field ("route", "evidence", "token",
        "answer"); see orchestra/streaming.py. Only the final read streams (a read that may
        still decline is held back); closing the iterator early abandons the answer at its
        next token. ``generation`` as for ``run``."""
        from orchestra.routers.base import Router
        from orchestra.streaming import run_streaming

        t0 = time.perf_counter()
        question = check_question(question)
        corpus = self.corpus(documents)
        route = None
        extra = given(generation)
        if strategy is not None:
            route = self.chosen_route(strategy)
        elif type(self.router).route_and_answer is Router.route_and_answer:
            # The router decides before reading: its decision goes out first.
            route = self.router.route(question, corpus, self.backend, **extra)
            if not route.cost.wall_seconds:
                route.cost.wall_seconds = time.perf_counter() - t0

        def work(_sink) -> Answer:
            if route is None:
                answer = self.router.route_and_answer(question, corpus, self.backend, **extra)
            else:
                answer = self.strategies[route.strategy].answer(question, corpus, **extra)
                answer.route = route
                answer.cost = answer.cost + route.cost
            answer.cost.wall_seconds = time.perf_counter() - t0
            return finish_answer(answer, corpus)

        names = {id(s): n for n, s in self.strategies.items()}
        router = getattr(self.router, "name", type(self.router).__name__)
        yield from run_streaming(work, names, router, route, corpus=corpus)

    def run_batch(self, questions: Sequence[str], documents) -> list[Answer]:
        # Every question is checked before any is answered: a bad last one must not cost
        # (or discard) the answers to the others.
        checked = []
        for n, q in enumerate(questions, 1):
            try:
                checked.append(check_question(q))
            except InputError as e:
                raise InputError(f"question {n} of {len(questions)}: {e}") from None
        corpus = self.corpus(documents)
        return [self.run(q, corpus) for q in checked]

    # -- serialising ----------------------------------------------------------------------
    def to_config(self, full: bool = False) -> dict:
        """The pipeline as a file holds it: the file it was read from (its ``${VAR}``
        references kept), else every component's spec (orchestra/spec.py) with the options
        that differ from the defaults. ``full``: always from the components, every option
        (the eval report's record of what ran)."""
        if self._source is not None and not full:
            return self._source
        retrievers, names = self._named_retrievers()
        return {
            "version": 1,
            "backend": entry(self.backend, full=full),
            "corpus": {"chunk_tokens": self.chunk_tokens, "overlap": self.overlap},
            "retrievers": {n: entry(r, names, full) for n, r in retrievers.items()},
            "strategies": {n: entry(s, names, full) for n, s in self.strategies.items()},
            "router": entry(self.router, names, full),
        }

    def _named_retrievers(self) -> tuple[dict[str, Any], dict[int, str]]:
        """The pipeline's retrievers plus those its components were given unnamed (a RAG built
        with ``retriever=BM25Retriever(...)``), each named after its owner and option (a file
        names every retriever), and id -> name of every named component."""
        from orchestra.retrievers.base import Retriever

        retrievers = dict(self.retrievers)
        names = {id(v): k for k, v in {**retrievers, **self.strategies}.items()}

        def hoist(owner: str, comp: Any) -> None:
            for arg, value in getattr(comp, "_spec_args", {}).items():
                many = isinstance(value, (list, tuple))
                for i, v in enumerate(value if many else [value]):
                    if isinstance(v, Retriever) and id(v) not in names:
                        name = f"{owner}_{arg}" + (f"_{i}" if many else "")
                        while name in retrievers or name in self.strategies:
                            name += "_"
                        retrievers[name], names[id(v)] = v, name
                        hoist(name, v)

        for n, c in [*self.retrievers.items(), *self.strategies.items()]:
            hoist(n, c)
        return retrievers, names

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_config(), sort_keys=False)

    def __repr__(self) -> str:
        return (f"Pipeline(backend={self.backend.name}, strategies={list(self.strategies)}, "
                f"router={getattr(self.router, 'name', type(self.router).__name__)})")


def finish_answer(answer: Answer, corpus: Corpus) -> Answer:
    """The route decision as the trace's first step (shown to step listeners if the router did
    not already), and each evidence span's file, lines and snippet."""
    from orchestra import observe
    from orchestra.citations import cite

    if answer.route is not None and not any(s.kind == "route" for s in answer.trace.steps):
        step = answer.route.as_step()
        observe.emit(step)
        answer.trace.steps.insert(0, step)
    return cite(answer, corpus)


def _construct(cls, what: str, *args, **kwargs):
    try:
        return cls(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {e}") from None


def _resolve_refs(options: dict, fields: set[str], build) -> dict:
    out = {}
    for k, v in options.items():
        if k in fields and v is not None:
            out[k] = [build(n) for n in v] if isinstance(v, list) else build(v)
        else:
            out[k] = v
    return out


def _applicable(type_name: str, options: dict) -> dict:
    from orchestra.spec import parameters

    names, open_kw = parameters(resolve("strategy", type_name))
    return {k: v for k, v in options.items() if open_kw or k in names}
