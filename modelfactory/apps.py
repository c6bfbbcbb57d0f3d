from django.apps import AppConfig


class ModelfactoryConfig(AppConfig):
    name = "modelfactory"

    def ready(self) -> None:
        from datanets.hooks import records_revoked_connect

        from .revocations import records_revoked_receiver

        # a revocation flags every version trained on its records and tells their owners (modelfactory.revocations)
        records_revoked_connect(records_revoked_receiver)
