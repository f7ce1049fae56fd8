"""The PIG model: ViP video backbone, ITS, pseudo-query generator, fusioner (METHOD.md sections 1-4)."""
