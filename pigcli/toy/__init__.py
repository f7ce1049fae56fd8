"""The built-in toy corpora (`pig toy make`) and the video writer they and the tests use."""
