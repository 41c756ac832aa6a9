"""Retrieval for grounded suggestions: what a suggestion may draw on besides the model's weights.

- `exemplars`: the agent messages of the training logs with their actions and context vectors; the nearest past
  messages for (history, action), a suggestion source of their own and a baseline every LM evaluation prints;
- `knowledge`: knowledge files (JSON Lines passages with their source), read and searched by the recent turns.
"""
