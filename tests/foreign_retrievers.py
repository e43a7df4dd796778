"""Factories a pipeline file names by import path in the tests (allowed modules only)."""


def summary_retriever(nodes):
    """LlamaIndex's SummaryIndex retriever: every node, in order (needs no embedder)."""
    from llama_index.core import SummaryIndex

    return SummaryIndex(nodes).as_retriever()
