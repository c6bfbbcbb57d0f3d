from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"

    def ready(self) -> None:
        # the outbox's kinds register their specs when their modules load; a chain reset (ledger.deployments) must
        # find every kind registered in any process, the web process included
        from . import governance, rewards_services, services  # noqa: F401
