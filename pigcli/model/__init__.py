"""The PIG model: ViP video backbone, ITS, pseudo-query generator, fusioner (docs/method.md sections 1-4)."""
