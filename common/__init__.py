"""Project-wide helpers that belong to no app: the API foundation (``common.api``) and the guarded JSON reader
(``common.jsonguard``). The bottom layer: it imports Django, DRF and the standard library, never a project app."""
