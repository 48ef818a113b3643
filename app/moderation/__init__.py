"""Moderation: who judges prompts, inputs and results (the `Moderator` and its
providers), what happens to what is refused (decisions, strikes, suspension), and the
human side (reports, appeals, the review queue). See docs/moderation.md."""
