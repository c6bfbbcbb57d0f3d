from django.apps import AppConfig


class RewardsConfig(AppConfig):
    name = "rewards"

    def ready(self) -> None:
        # rewards sits above attribution: it subscribes to attribution's hooks, attribution never imports it
        from attribution import hooks as attribution_hooks

        from . import api, receivers, views

        attribution_hooks.fee_split_register(receivers.FEE_SPLIT)
        attribution_hooks.panel_section_register(views.run_rewards_section)
        attribution_hooks.attribution_extra_register("rewards", api.run_rewards_data)
