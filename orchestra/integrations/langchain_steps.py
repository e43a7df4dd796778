"""A pipeline's steps as LangChain child runs (needs only ``langchain-core``).

``LangChainSteps`` is an ``orchestra.observe`` listener: while a ``PipelineRunnable`` runs, each
Trace step becomes a child run of the Runnable's own run, typed by the step's kind, so
``astream_events``, callbacks and LangSmith show what happened inside:

- route -> a chain run named ``route`` (outputs: strategy, router, reason, signals);
- retrieval -> a retriever run (its documents: the passages found, with scores);
- model -> an LLM run (the step's name, e.g. ``read`` or ``worker``; token usage and seconds);
- prefill and other steps -> chain runs named after the step.

Steps that start inside a step (a chain run) become its children.
"""

from __future__ import annotations

from typing import Any

from langchain_core.documents import Document as LCDocument
from langchain_core.outputs import Generation, LLMResult

from orchestra import observe

_TAGS = ["orchestra"]


def _plain(value: Any) -> Any:
    """JSON-able copy of step details (tracers serialise inputs and outputs)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class LangChainSteps:
    """Turns the steps of one pipeline run into child runs of ``parent`` (a
    ``CallbackManagerForChainRun``). ``corpus`` gives retrieval documents their text."""

    def __init__(self, parent: Any, corpus: Any = None, question: str = ""):
        self.parent = parent
        self.corpus = corpus
        self.question = question
        self._stack: list[Any] = []  # open chain runs: later steps are their children
        self._llm: list[Any] = []  # open LLM runs: the answer's tokens go to the latest

    def _manager(self):
        top = self._stack[-1] if self._stack else self.parent
        return top.get_child()

    def step_started(self, step: Any) -> Any:
        cm = self._manager()
        cm.add_tags([*_TAGS, f"orchestra:{step.kind}"], inherit=False)
        cm.add_metadata({"orchestra_step": step.name, "orchestra_kind": step.kind},
                        inherit=False)
        if step.kind == observe.RETRIEVAL:
            return ("retriever", cm.on_retriever_start({"name": step.name}, self.question,
                                                       name=step.name))
        if step.kind == observe.MODEL:
            [run] = cm.on_llm_start({"name": step.name},
                                    [f"{step.name}: {_plain(step.detail)}"],
                                    name=step.name, invocation_params=_plain(step.detail))
            self._llm.append(run)
            return ("llm", run)
        run = cm.on_chain_start({"name": step.name}, _plain(step.detail) or {"step": step.name},
                                name=step.name)
        self._stack.append(run)
        return ("chain", run)

    def step_ended(self, step: Any, token: Any, error: BaseException | None) -> None:
        kind, run = token
        if kind == "chain" and self._stack and self._stack[-1] is run:
            self._stack.pop()
        if kind == "llm" and run in self._llm:
            self._llm.remove(run)
        if error is not None:
            getattr(run, f"on_{kind}_error")(error)
            return
        detail = _plain({**step.detail, "seconds": step.seconds})
        if kind == "retriever":
            run.on_retriever_end(self._documents(step.detail.get("hits") or []))
        elif kind == "llm":
            usage = {"prompt_tokens": step.detail.get("prompt_tokens", 0),
                     "completion_tokens": step.detail.get("generated_tokens", 0)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            run.on_llm_end(LLMResult(generations=[[Generation(text="", generation_info=detail)]],
                                     llm_output={"token_usage": usage, "step": detail}))
        else:
            run.on_chain_end(detail)

    def step_token(self, text: str) -> None:
        """A piece of the answer as the model writes it (orchestra.observe.token, on the
        reading thread, inside the model step): ``on_llm_new_token`` of that step's run."""
        if self._llm:
            self._llm[-1].on_llm_new_token(text)

    def _documents(self, hits: list[dict]) -> list[LCDocument]:
        docs = []
        for h in hits:
            text = ""
            if self.corpus is not None:
                try:
                    text = self.corpus.document(h["doc_id"]).text[h["start"]:h["end"]]
                except (KeyError, TypeError):
                    text = ""
            docs.append(LCDocument(page_content=text, id=h.get("chunk_id"), metadata=dict(h)))
        return docs
