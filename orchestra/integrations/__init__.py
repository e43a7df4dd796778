"""Adapters to and from LangChain and LlamaIndex.

``orchestra.integrations.langchain`` needs only ``langchain-core``;
``orchestra.integrations.llama_index`` needs only ``llama-index-core``. Neither is imported
by orchestra itself, so users of one never pay for the other.
"""
