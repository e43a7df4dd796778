"""Worker and manager agents for the chain_of_agents and map_reduce strategies.

Agents build requests and read replies; the strategies (orchestra/strategies/agents.py) send
them through the one shared backend. Prompts: agents/prompts.py.
"""
