from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "governance"

    def ready(self) -> None:
        from accounts import hooks as accounts_hooks

        from . import views

        accounts_hooks.profile_section_register(views.profile_section)
