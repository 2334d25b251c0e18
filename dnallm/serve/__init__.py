"""Talk to a trained model: terminal chat, OpenAI-compatible HTTP server, browser page."""
