"""The search space of `orchestra tune`: one declarative table of reading options.

Each ``Entry`` names a constructor option (``reorder``), a key of a strategy's ``prompts``
mapping (``prompts.reader``) or an option of the retriever a strategy reads with
(``retriever.chunk_tokens``), and the values to try. Whether an entry applies to a component is
read from the component's constructor signature (``orchestra.spec.parameters``), so an
option a strategy does not (yet) accept is skipped with a note instead of producing a pipeline
that does not validate. Value lists that grow with the code (reorder policies, prompt template
libraries) are read when the space is planned.

``plan(data)`` says which entries apply to which component of a pipeline; ``suggest(trial,
plan)`` draws one configuration from an Optuna trial; ``apply(data, plan, values)`` writes it into
a copy of the pipeline's data, which validates like any pipeline file.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from orchestra.spec import parameters
from orchestra.errors import ConfigError
from orchestra.registry import resolve

DEFAULT = "keep"  # the choice label that leaves an option as the pipeline has it


class _Keep:
    """The value of the DEFAULT label: write nothing (None would be written as null)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()

# Agent prompt candidates beside the defaults in orchestra/agents/prompts.py. The reader's
# templates and system prompts come from orchestra.prompts' libraries (READER_TEMPLATES,
# READER_SYSTEMS, ...), read when the space is planned, so a template added there is searched.
WORKER_PROMPTS = {
    DEFAULT: KEEP,
    "quote": ("{notes}Text:\n{chunk}\n\nQuestion: {question}\n"
              "Quote the sentence from the text that contains the answer, word for word. "
              "If no sentence does, reply exactly: NO RELEVANT INFORMATION"),
}
MANAGER_PROMPTS = {
    DEFAULT: KEEP,
    "short": ("Notes taken from a long document:\n{notes}\n\n"
              "Answer the question using the notes above. Reply with the answer only.\n"
              "Question: {question}\nAnswer:"),
}


def _library(module: str, attrs: tuple[str, ...]) -> Any:
    """The first of ``module.<attrs>`` that exists (libraries have been renamed before)."""
    import importlib

    mod = importlib.import_module(module)
    for attr in attrs:
        lib = getattr(mod, attr, None)
        if lib:
            return lib
    return ()


def _names(module: str, *attrs: str) -> Callable[[], dict[str, Any]]:
    """Choices ``{name: name}`` for every key of the library (a dict or a sequence)."""
    def read() -> dict[str, Any]:
        return {DEFAULT: KEEP, **{str(k): str(k) for k in _library(module, attrs)}}
    return read


def _texts(module: str, *attrs: str) -> Callable[[], dict[str, Any]]:
    """Choices ``{name: text}`` from a library of templates (a dict)."""
    def read() -> dict[str, Any]:
        lib = _library(module, attrs)
        items = lib.items() if isinstance(lib, dict) else ()
        return {DEFAULT: KEEP, **{str(k): v for k, v in items if isinstance(v, str)}}
    return read


# -- the table ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One searched setting.

    ``option``: a constructor option (``reorder``), ``prompts.KEY`` (a prompt of the strategy)
    or ``retriever.OPTION`` (an option of the retriever the strategy reads with).
    ``choices``: label -> value (or a function returning that, read at plan time); the label is
    what Optuna sees, ``DEFAULT`` leaves the pipeline's own value. ``requires``: other options
    the component must accept for the entry to make sense (agents' note budgets). ``when``: a
    condition on the values already drawn for the same component.
    """

    name: str
    kind: str  # "strategy" or "router"
    option: str
    choices: dict[str, Any] | Callable[[], dict[str, Any]]
    requires: tuple[str, ...] = ()
    when: Callable[[dict[str, Any]], bool] | None = None
    group: str = ""
    quiet: bool = False  # an alternative name for a setting another entry covers: no note

    def values(self) -> dict[str, Any]:
        return self.choices() if callable(self.choices) else dict(self.choices)

    def narrowed(self, cls) -> "Entry":
        """This entry with only the values ``cls``'s annotation for the option accepts (an
        option typed ``int`` cannot take the ``None`` another version of it took)."""
        from pydantic import TypeAdapter

        from orchestra.config import option_types

        hint = option_types(cls).get(self.option) if "." not in self.option else None
        if hint is None:
            return self
        try:
            adapter = TypeAdapter(hint)
        except Exception:  # an annotation pydantic cannot read: keep every value
            return self
        values = self.values()
        kept = {}
        for label, v in values.items():
            try:
                if v is KEEP or adapter.validate_python(v) is not None or v is None:
                    kept[label] = v
            except Exception:  # the value does not fit the annotation
                continue
        if len(kept) == len(values):
            return self
        return dataclasses.replace(self, choices=kept)


def _hybrid(v: dict) -> bool:
    return v.get("retriever") == "hybrid"


def _ints(*xs: int) -> dict[str, int]:
    return {str(x): x for x in xs}


SPACE: list[Entry] = [
    # chunking (options of the retriever a strategy reads with)
    Entry("retriever", "strategy", "retriever",
          {"dense": "dense", "bm25": "bm25", "hybrid": "hybrid"}, group="retrieval"),
    Entry("chunk_tokens", "strategy", "retriever.chunk_tokens", _ints(64, 96, 128, 192, 256),
          group="chunking"),
    Entry("overlap", "strategy", "retriever.overlap", _ints(0, 16, 32), group="chunking"),
    Entry("chunking", "strategy", "retriever.chunking",
          _names("orchestra.corpus", "CHUNK_BOUNDARIES"), group="chunking"),
    Entry("dense_weight", "strategy", "retriever.weights",
          {"0.25": [0.25, 0.75], "0.5": [0.5, 0.5], "0.75": [0.75, 0.25]},
          when=_hybrid, group="retrieval"),
    # retrieval (options of the strategy)
    Entry("top_k_tokens", "strategy", "top_k_tokens", _ints(384, 512, 768, 1024, 1280),
          group="retrieval"),
    # the number of chunks (whichever name the strategy takes)
    Entry("top_k", "strategy", "top_k", {"all": None, **_ints(3, 4, 6, 8)}, group="retrieval"),
    Entry("max_chunks", "strategy", "max_chunks", {"all": None, **_ints(3, 4, 6, 8)},
          group="retrieval", quiet=True),
    Entry("reorder", "strategy", "reorder", _names("orchestra.retrievers.reorder", "POLICIES"),
          group="retrieval"),
    Entry("dedup_threshold", "strategy", "dedup_threshold",
          {"0.6": 0.6, "0.8": 0.8, "1.0": 1.0}, group="retrieval"),
    # query-aware compression of the retrieved chunks (a switch and a budget)
    Entry("compress", "strategy", "compress", {"off": False, "on": True}, group="retrieval"),
    Entry("compress_tokens", "strategy", "compress_tokens",
          {"off": None, **_ints(192, 256, 384, 512)},
          when=lambda v: v.get("compress") is not False, group="retrieval"),
    # the reader
    Entry("reader_system", "strategy", "reader_system",
          _names("orchestra.prompts", "SYSTEM_PROMPTS", "READER_SYSTEMS"), group="reader"),
    Entry("reader_template", "strategy", "reader_template",
          _names("orchestra.prompts", "READER_TEMPLATES"), group="reader"),
    Entry("passage_format", "strategy", "passage_format",
          _names("orchestra.prompts", "PASSAGE_FORMATS"), group="reader"),
    Entry("max_tokens", "strategy", "max_tokens", _ints(16, 32, 64), group="reader"),
    Entry("repetition_penalty", "strategy", "repetition_penalty",
          {"1.0": 1.0, "1.1": 1.1, "1.2": 1.2, "1.3": 1.3}, group="reader"),
    Entry("no_repeat_ngram_size", "strategy", "no_repeat_ngram_size", _ints(0, 3, 4),
          group="reader"),
    # Self-Route: the first strategy's decline template (the reader template brings its own
    # by default) and the router's decline detector
    Entry("decline", "strategy", "decline", _names("orchestra.prompts", "DECLINE_MODES"),
          group="self_route"),
    Entry("decline_template", "strategy", "prompts.reader_may_decline",
          _texts("orchestra.prompts", "DECLINE_TEMPLATES", "READER_MAY_DECLINE_TEMPLATES"),
          # only beside an explicit decline drawn here: a profile may read implicitly
          when=lambda v: v.get("decline") == "explicit", group="self_route"),
    Entry("decline_detector", "router", "decline_detector",
          _names("orchestra.routers.self_route", "DECLINE_DETECTORS"), group="self_route"),
    # agents (chain-of-agents, map-reduce)
    Entry("worker_prompt", "strategy", "prompts.worker", WORKER_PROMPTS, group="agents"),
    Entry("manager_prompt", "strategy", "prompts.manager", MANAGER_PROMPTS, group="agents"),
    Entry("align_notes", "strategy", "align_notes", {"off": False, "on": True},
          group="agents"),
    Entry("note_tokens", "strategy", "note_tokens", _ints(128, 256, 384), group="agents"),
    Entry("worker_max_tokens", "strategy", "worker_max_tokens", _ints(32, 48, 96),
          group="agents"),
    Entry("agent_chunk_tokens", "strategy", "chunk_tokens", _ints(500, 1000, 1500),
          requires=("note_tokens",), group="agents"),
]

RETRIEVER_TYPES = ("dense", "bm25", "hybrid")


# -- planning -----------------------------------------------------------------------------
@dataclass
class Planned:
    """The entries that apply to one component."""

    kind: str  # "strategy" or "router"
    name: str  # the component's name in the pipeline ("rag"); "router" for the router
    type: str
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Plan:
    components: list[Planned]
    notes: list[str]  # entries skipped, one line each, saying why

    @property
    def size(self) -> int:
        return sum(len(c.entries) for c in self.components)

    def signature(self) -> dict[str, list[str]]:
        """Every searched parameter and its choice labels (a resumed study must match)."""
        return {param_name(c, e): list(e.values()) for c in self.components for e in c.entries}

    def describe(self) -> list[str]:
        return [f"{c.name} ({c.type}): {', '.join(e.name for e in c.entries)}"
                for c in self.components]


def _prompt_keys(cls) -> set[str]:
    """The prompt names a strategy class's ``prompts`` mapping takes."""
    from orchestra.prompts import DEFAULTS as READER

    from orchestra.agents.prompts import DEFAULTS as AGENT
    from orchestra.strategies.agents import AgentStrategy

    keys = set(READER)
    if isinstance(cls, type) and issubclass(cls, AgentStrategy):
        keys |= set(AGENT)
    return keys


def _accepts(cls, option: str) -> bool | None:
    """Whether ``cls(...)`` takes ``option`` (None: it takes any keyword, so we cannot tell)."""
    names, open_kw = parameters(cls)
    if option in names:
        return True
    return None if open_kw else False


def _applies(entry: Entry, cls, comp_type: str, router_type: str) -> tuple[bool, str]:
    """(applies, why not)."""
    head, _, rest = entry.option.partition(".")
    if len(entry.values()) < 2:
        return False, "there is nothing to choose from (yet)"
    for req in entry.requires:
        if not _accepts(cls, req):
            return False, f"{comp_type} takes no {req!r} option"
    if head == "prompts" and rest:
        if not _accepts(cls, "prompts"):
            return False, f"{comp_type} takes no prompts"
        if rest not in _prompt_keys(cls):
            return False, f"{comp_type} has no prompt {rest!r}"
        if entry.group == "self_route" and router_type != "self_route":
            return False, "the router is not self_route"
        return True, ""
    if head == "retriever" and rest:
        if not _accepts(cls, "retriever"):
            return False, f"{comp_type} takes no retriever"
        takers = [t for t in RETRIEVER_TYPES
                  if _accepts(resolve("retriever", t), rest)]
        if not takers:
            return False, f"no retriever ({', '.join(RETRIEVER_TYPES)}) takes {rest!r} (yet)"
        return True, ""
    ok = _accepts(cls, entry.option)
    if ok is None:
        return False, (f"{comp_type} takes any keyword, so whether it reads {entry.option!r} "
                       "cannot be told from its signature")
    if not ok:
        return False, f"{comp_type} takes no {entry.option!r} option (yet)"
    return True, ""


def _declines_first(cls, name: str, router: dict) -> bool:
    """Whether this strategy is the one Self-Route asks first (with may_decline)."""
    if router.get("type") != "self_route":
        return False
    first = router.get("first")
    return name == first if first is not None else bool(getattr(cls, "can_decline", False))


def _relevant(entry: Entry, cls, name: str, router: dict) -> bool:
    """Whether a skipped entry is worth a note for this strategy: its group is one the
    strategy belongs to, and it is not an alternative name of an entry that applied."""
    if entry.quiet:
        return False
    takes = parameters(cls)[0]
    if entry.group in ("retrieval", "chunking"):
        return "retriever" in takes
    if entry.group == "agents":
        return "note_tokens" in takes
    if entry.group == "self_route":
        return _declines_first(cls, name, router)
    return True


def entry_names() -> list[str]:
    return [e.name for e in SPACE]


def plan(data: dict, params: list[str] | None = None, target: str = "router",
         allow_modules=()) -> Plan:
    """Which entries of ``SPACE`` apply to which components of the pipeline ``data``.

    ``params``: only these entry names (None: all). ``target``: ``router`` tunes every strategy
    and the router; a strategy name tunes that strategy alone.
    """
    if params is not None:
        unknown = [p for p in params if p not in entry_names()]
        if unknown:
            raise ConfigError(f"--params: unknown setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(entry_names())}")
    entries = [e for e in SPACE if params is None or e.name in params]
    strategies = data.get("strategies") or {}
    router = data.get("router") or {"type": "fixed"}
    if target != "router" and target not in strategies:
        raise ConfigError(f"--target: the pipeline has no strategy {target!r}; it has "
                          f"{', '.join(strategies)} (or 'router')")
    components: list[Planned] = []
    notes: list[str] = []
    for name in (list(strategies) if target == "router" else [target]):
        p = _plan_strategy(name, strategies[name] or {}, entries, router, params, allow_modules,
                           notes)
        if p.entries:
            components.append(p)
    if target == "router":
        p = _plan_router(router.get("type", "fixed"), entries, allow_modules, notes)
        if p.entries:
            components.append(p)
    return Plan(components, notes)


def _plan_strategy(name: str, comp: dict, entries: list[Entry], router: dict,
                   params: list[str] | None, allow_modules, notes: list[str]) -> Planned:
    """The entries that apply to strategy ``name``; a note for each relevant one skipped."""
    cls = resolve("strategy", comp.get("type", ""), allow_modules)
    router_type = router.get("type", "fixed")
    p = Planned("strategy", name, comp.get("type", ""))
    for e in entries:
        if e.kind != "strategy":
            continue
        e = e.narrowed(cls)
        ok, why = _applies(e, cls, p.type, router_type)
        if ok and e.group == "self_route" and not _declines_first(cls, name, router):
            continue  # only Self-Route's first strategy reads with its decline template
        if ok:
            p.entries.append(e)
        elif params is not None or _relevant(e, cls, name, router):
            # Asked for by name, or a setting of this kind of strategy it does not take
            # (yet): say so. (Retrieval settings of a strategy that does not retrieve are
            # not news.)
            notes.append(f"{name}: {e.name} skipped: {why}")
    # A strategy with a retriever option only tunes chunking when it tunes the retriever
    # (chunking lives on the retriever it reads with).
    if not any(e.name == "retriever" for e in p.entries):
        dropped = [e for e in p.entries if e.option.startswith("retriever.")]
        if dropped:
            notes.append(f"{name}: {', '.join(e.name for e in dropped)} skipped: the "
                         "retriever itself is not searched (add 'retriever' to --params)")
        p.entries = [e for e in p.entries if not e.option.startswith("retriever.")]
    return p


def _plan_router(router_type: str, entries: list[Entry], allow_modules,
                 notes: list[str]) -> Planned:
    cls = resolve("router", router_type, allow_modules)
    p = Planned("router", "router", router_type)
    for e in entries:
        if e.kind == "router":
            ok, why = _applies(e, cls, router_type, router_type)
            if ok:
                p.entries.append(e)
            else:
                notes.append(f"router: {e.name} skipped: {why}")
    return p


# -- drawing and applying -----------------------------------------------------------------
def param_name(comp: Planned, entry: Entry) -> str:
    return f"{comp.name}.{entry.name}"


def suggest(trial: Any, the_plan: Plan) -> dict[str, str]:
    """One configuration: ``{param name: choice label}`` (labels are what Optuna stores)."""
    out: dict[str, str] = {}
    for comp in the_plan.components:
        drawn: dict[str, Any] = {}
        for e in comp.entries:
            values = e.values()
            if e.when is not None and not e.when(drawn):
                continue
            if e.option.startswith("retriever.") and e.name != "retriever":
                rtype = drawn.get("retriever")
                if rtype and not _accepts(resolve("retriever", rtype),
                                          e.option.split(".", 1)[1]):
                    continue
            label = trial.suggest_categorical(param_name(comp, e), list(values))
            out[param_name(comp, e)] = label
            drawn[e.name] = values[label]
    return out


def chosen(comp, labels: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The values drawn for one component: its own options (custom prompts under "prompts")
    and, when a retriever was drawn, that retriever's type and settings. KEEP (the choice that
    leaves the pipeline's value alone) is left out."""
    mine: dict[str, Any] = {}
    retr: dict[str, Any] | None = None
    for e in comp.entries:
        label = labels.get(param_name(comp, e))
        if label is None:
            continue
        value = e.values()[label]
        head, _, rest = e.option.partition(".")
        if e.name == "retriever":
            retr = {"type": value}
        elif head == "retriever" and rest:
            if retr is not None and value is not KEEP:
                retr[rest] = value
        elif value is KEEP:
            continue
        elif head == "prompts" and rest:
            mine.setdefault("prompts", {})[rest] = value
        else:
            mine[e.option] = value
    return mine, retr


def apply(data: dict, the_plan: Plan, labels: dict[str, str]) -> dict:
    """A copy of the pipeline ``data`` with the chosen values written in."""
    data = copy.deepcopy(data)
    for comp in the_plan.components:
        section = data["router"] if comp.kind == "router" else data["strategies"][comp.name]
        mine, retr = chosen(comp, labels)
        if "prompts" in mine:
            section.setdefault("prompts", {}).update(mine.pop("prompts"))
        section.update(mine)
        if retr is not None:
            rname = f"{comp.name}_retriever"
            if retr["type"] == "hybrid":
                retr = {"type": "hybrid", "retrievers": ["dense", "bm25"], **{
                    k: v for k, v in retr.items() if k != "type"}}
            data.setdefault("retrievers", {})
            data["retrievers"] = {**(data["retrievers"] or {}), rname: retr}
            section["retriever"] = rname
    return data


def profile_values(data: dict, the_plan: Plan, labels: dict[str, str]) -> tuple[dict, list[str]]:
    """The chosen values as a profile's sections (by strategy and retriever type), so a tune's
    result can become a model family's defaults; and notes on what a profile cannot hold."""
    strategies: dict[str, dict[str, Any]] = {}
    retrievers: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for comp in the_plan.components:
        if comp.kind != "strategy":
            notes.append(f"{comp.name}: router settings are not part of a profile")
            continue
        mine, retr = chosen(comp, labels)
        if retr is not None:
            rtype = retr.pop("type")
            if rtype == "hybrid":
                # The members' chunking also goes to their own types, so a pipeline that
                # defines dense and bm25 retrievers (and fuses them) reads with it too.
                for member in ("dense", "bm25"):
                    retrievers.setdefault(member, {k: v for k, v in retr.items()
                                                   if k != "weights"})
                retr = {"retrievers": ["dense", "bm25"], **retr}
            mine["retriever"] = rtype
            given = (data.get("strategies") or {}).get(comp.name, {}).get("retriever")
            if given is not None:
                notes.append(f"{comp.name}: the pipeline names its retriever ({given!r}), which "
                             f"wins over the profile's choice ({rtype!r}); the profile's chunking "
                             "applies to retrievers of the same types")
            if rtype in retrievers and retrievers[rtype] != retr:
                notes.append(f"{comp.name}: its {rtype} settings differ from another "
                             "strategy's; the profile keeps the first")
            retrievers.setdefault(rtype, retr)
        if comp.type in strategies and strategies[comp.type] != mine:
            notes.append(f"{comp.name}: another {comp.type} strategy got other values; the "
                         "profile keeps the first")
        strategies.setdefault(comp.type, mine)
    return {"strategies": strategies, "retrievers": retrievers}, notes
