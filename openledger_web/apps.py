from django.apps import AppConfig


class OpenledgerWebConfig(AppConfig):
    name = "openledger_web"
    verbose_name = "Platform"

    def ready(self) -> None:
        from . import lookups, signals  # noqa: F401  (signals connects the worker heartbeat)

        lookups.register()
