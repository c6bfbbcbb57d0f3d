"""The format readers: ``lines`` reads any file as lines; ``jsonl``, ``csvfile`` and ``text`` (.txt and .md) turn
those lines into records through the parser."""
