from django.apps import AppConfig


class OpenledgerWebConfig(AppConfig):
    name = "openledger_web"
    verbose_name = "Platform"

    def ready(self) -> None:
        from inference import hooks as inference_hooks

        from . import health, lookups, signals  # noqa: F401  (signals connects the worker heartbeat)

        lookups.register()
        # inference routes runs over the inference workers these heartbeats say are alive
        inference_hooks.live_workers_register(health.live_workers)
