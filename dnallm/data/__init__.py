"""Records, DNA windows and chat prompts. Imports nothing from later stages."""
