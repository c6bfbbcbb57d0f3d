from django.apps import AppConfig


class AttributionConfig(AppConfig):
    name = "attribution"

    def ready(self) -> None:
        # attribution sits above modelfactory and inference: it subscribes to their hooks, they never import it
        from datanets import hooks as datanet_hooks
        from inference import hooks as inference_hooks
        from modelfactory import hooks as modelfactory_hooks

        from . import api, panel_views, receivers, revocation

        modelfactory_hooks.version_indexer_register(receivers.INDEXER)
        modelfactory_hooks.version_trained_connect(receivers.version_selfcheck)
        modelfactory_hooks.version_section_register(panel_views.version_index_section)
        inference_hooks.run_finished_connect(receivers.run_finished)
        inference_hooks.run_extra_register("attribution", api.run_attribution_data)
        inference_hooks.run_section_register(panel_views.run_panel_slot)
        datanet_hooks.records_revoked_connect(revocation.records_revoked)
